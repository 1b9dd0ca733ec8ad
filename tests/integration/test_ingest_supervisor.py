"""`cdp ingest`'s supervisor of worker processes: a worker that cannot start is told from a stop on request.

uvicorn's supervisor returns in both cases without saying which; `serve` does, so that `cdp ingest` exits 1
(and `cdp up` starts it again) rather than 0. Real worker processes, a real socket.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import httpx
import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors.multiprocess import SIGNALS

from infra.broker import free_port
from infra.ingest_server import _Supervisor, serve


def failing_app() -> FastAPI:
    """An app whose start fails in every worker, as a worker's does when it cannot open the store."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("the store cannot be opened")
        yield

    return FastAPI(lifespan=lifespan)


def working_app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _config(app: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(f"tests.integration.test_ingest_supervisor:{app}", factory=True, host="127.0.0.1",
                          port=port, workers=2, log_level="critical", timeout_worker_healthcheck=2)  # fmt: skip


def _until_serving(port: int, timeout: float = 60) -> None:
    """Until a worker answers /healthz on `port` (or `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)


def test_workers_that_cannot_start_are_a_failure() -> None:
    assert serve(_config("failing_app", free_port())) is False


def test_workers_stopped_by_a_signal_are_a_clean_stop() -> None:
    port = free_port()

    def stop_when_serving() -> None:
        _until_serving(port)
        os.kill(os.getpid(), signal.SIGTERM)  # as `cdp up` or an operator stops `cdp ingest`

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}  # the supervisor puts its own handlers in
    threading.Thread(target=stop_when_serving, daemon=True).start()
    try:
        assert serve(_config("working_app", port)) is True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_worker_killed_while_it_is_pinged_is_noticed_at_once() -> None:
    """The supervisor pings each worker every half second and waits up to `timeout_worker_healthcheck` (60 s
    here, as cdp ingest sets it) for the answer: a worker killed just then must not cost that minute."""
    port = free_port()
    config = _config("working_app", port)
    config.timeout_worker_healthcheck = 60
    supervisor = _Supervisor(config, sockets=[config.bind_socket()])
    took: list[float] = []

    def kill_one_and_ping_it() -> None:
        _until_serving(port)
        time.sleep(1)  # the supervisor's loop has run: its end of the pipes is closed
        worker = supervisor.processes[0]
        os.kill(worker.pid, signal.SIGKILL)
        worker.process.join(10)
        began = time.monotonic()
        answered = worker.ping(timeout=60)  # as the supervisor's own check does, had it begun just before
        took.append(time.monotonic() - began if not answered else -1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    threading.Thread(target=kill_one_and_ping_it, daemon=True).start()
    try:
        supervisor.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert took and 0 <= took[0] < 5, f"the ping of a dead worker waited {took}"
