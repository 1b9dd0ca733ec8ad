"""Ingest workers: processes that validate, deduplicate, append durably and answer, and do nothing else.

`cdp ingest` (started by `cdp up`, or on its own on other machines in front of
PostgreSQL) serves the Segment-compatible ingest routes of ingest/http.py on
`CDP_INGEST_PORT` with `CDP_INGEST_WORKERS` processes sharing the socket
(uvicorn's workers). Each worker holds only what the acknowledgement needs:
the workspaces and keys (domain/directory.py), the intake (ingest/intake.py), a
group committer appending to the intake log, and the dead-letter store. No
identity graph, no ClickHouse, no Kafka: the core process resolves identity
from the intake log afterwards (streams/resolver.py), so a worker's cost per
event is validation and one share of a transaction.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from contextlib import asynccontextmanager
from typing import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from uvicorn.supervisors import Multiprocess

from api.auth import check_metrics_key
from api.errors import install_error_handlers
from domain.directory import REFRESH_S, Directory
from domain.regulations import suppressed_call
from infra.config import Settings, load_settings
from infra.eventstore import eventsourcing_env, open_intake_log, open_keyring, opening_stores, prepare_event_store
from ingest import http as ingest_http
from ingest.committer import GroupCommitter
from ingest.dead_letters import DeadLetterStore
from ingest.intake import Intake
from services import IngestServices
from infra.keys import configured_platform_key
from services.access import Access
from services.rate_limit import RateLimit
from services.settings import SettingsService

log = logging.getLogger(__name__)


class IngestWorker:
    """One worker's parts; `services` is what the ingest routes use (api/auth.py finds it on app.state)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: IngestServices | None = None
        self._stopping = threading.Event()

    def start(self) -> "IngestWorker":
        s = self.settings
        env = eventsourcing_env(s)
        with opening_stores(s):  # other workers and machines open the same PostgreSQL schema at the same time
            prepare_event_store(s, env)
            self.directory = Directory(env, sealer=open_keyring(s))
            self.intake_log = open_intake_log(s)
            dead_letters = DeadLetterStore(self.directory.recorder, self.directory.sealer)
        self.committer = GroupCommitter(self.intake_log.append)
        self.committer.start()
        directory = self.directory
        intake = Intake(
            self.committer.submit, self.committer.record_now, dead_letters, s.max_event_bytes,
            suppressed=lambda ws, call: suppressed_call(directory.suppressions, directory.sealer.subject_hash, ws, call),
        )  # fmt: skip
        self.services = IngestServices(
            access=Access(self.directory, configured_platform_key(s), RateLimit(s.rate_limit, s.rate_burst)),
            settings=SettingsService(self.directory, None), intake=intake,
            max_event_bytes=s.max_event_bytes, max_batch_bytes=s.max_batch_bytes,
        )  # fmt: skip
        threading.Thread(target=self._refresh, name="directory", daemon=True).start()
        return self

    def _refresh(self) -> None:
        """New keys and allowed origins from the log, once a second."""
        while not self._stopping.wait(REFRESH_S):
            try:
                self.directory.refresh()
            except Exception:  # the store is away for a moment: the next round tries again
                log.warning("refreshing workspaces and keys from the event store failed", exc_info=True)

    def stop(self) -> None:
        self._stopping.set()
        if self.services is not None:
            self.committer.stop()  # answers everything queued first


def _stop_with_supervisor() -> None:
    """In a worker process of `cdp ingest`: stop when it is gone (`kill -9`), rather than hold the port for ever.

    uvicorn's workers do not watch their supervisor; one left behind would keep the port from the `cdp ingest`
    that `cdp up` starts in its place. A single worker runs in `cdp ingest` itself: nothing to watch."""
    supervisor = multiprocessing.parent_process()
    if supervisor is None:
        return

    def watch() -> None:
        supervisor.join()  # returns when the supervisor's process has ended, however it ended
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful stop: requests in flight are answered

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def create_ingest_app(settings: Settings | None = None) -> FastAPI:
    """The app of one ingest worker (a factory: uvicorn calls it in each worker process)."""
    worker = IngestWorker(settings or load_settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        _stop_with_supervisor()
        worker.start()
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(title="cdp ingest", summary="Segment-compatible ingest: validated, deduplicated, durably appended.",
                  version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)  # fmt: skip
    app.state.platform = worker
    install_error_handlers(app)
    app.include_router(ingest_http.router)

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "role": "ingest"}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics of this worker (the platform key)")
    def metrics(request: Request) -> Response:
        check_metrics_key(request, worker.services, worker.settings.metrics_open)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app



class _Supervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, remembering whether a signal stopped it.

    It also returns, without saying so to its caller, when a worker failed to start (it then stops the others):
    `serve` tells the two apart, so that `cdp ingest` exits 1 and `cdp up` starts it again.

    uvicorn keeps the worker's end of each health-check pipe open in the supervisor too, so a worker that dies
    while it is being pinged is noticed only when the ping times out (CDP's 60 s, for slow starts), and no other
    dead worker is replaced meanwhile. Closing that end once the worker has its own copy makes its death an end
    of file the ping sees at once."""

    asked_to_stop = False

    def keep_subprocess_alive(self) -> None:
        for process in self.processes:  # all started: uvicorn starts each as it makes it
            if not process.child_conn.closed:
                process.child_conn.close()
        super().keep_subprocess_alive()

    def handle_int(self) -> None:
        self.asked_to_stop = True
        super().handle_int()

    def handle_term(self) -> None:
        self.asked_to_stop = True
        super().handle_term()


def serve(config: uvicorn.Config) -> bool:
    """Run the ingest workers of `config` until stopped: True when a signal stopped them, False when they failed."""
    if config.workers <= 1:
        server = uvicorn.Server(config)
        server.run()
        return server.started
    supervisor = _Supervisor(config, sockets=[config.bind_socket()])
    supervisor.run()
    return supervisor.asked_to_stop
