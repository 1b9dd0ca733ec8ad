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
from infra.ingest_server import serve


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


def test_workers_that_cannot_start_are_a_failure() -> None:
    assert serve(_config("failing_app", free_port())) is False


def test_workers_stopped_by_a_signal_are_a_clean_stop() -> None:
    port = free_port()

    def stop_when_serving() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)  # as `cdp up` or an operator stops `cdp ingest`

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}  # the supervisor puts its own handlers in
    threading.Thread(target=stop_when_serving, daemon=True).start()
    try:
        assert serve(_config("working_app", port)) is True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
