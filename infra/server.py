"""The HTTP server: ingest and query routers on one FastAPI app whose lifespan runs the platform."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, Iterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric

from infra.bootstrap import Platform
from infra.http_errors import install_error_handlers
from infra.tags import TagService
from ingest.dead_letters_http import build_dead_letters_router
from ingest.http import build_ingest_router
from ingest.webhooks_http import build_webhooks_router
from queries.http import build_query_router
from queries.kpis import build_kpi_router
from queries.quarantine import build_quarantine_router
from queries.sql import build_sql_router
from queries.tags import build_tags_router


class _PositionsCollector:
    """Log, relay and projection positions, read at scrape time from the serving platform."""

    platform: Platform | None = None

    def collect(self) -> Iterator[Metric]:
        platform = self.platform
        if platform is None or not hasattr(platform, "app"):
            return
        status = platform.status()
        yield GaugeMetricFamily("cdp_log_position", "Last position of the event log", value=status["log_position"])
        yield GaugeMetricFamily(
            "cdp_relay_position", "Last log position published to Kafka", value=status["relay"]["position"]
        )
        lag = GaugeMetricFamily("cdp_projection_lag", "Log entries not yet applied", labels=["projection"])
        for name, projection in status["projections"].items():
            lag.add_metric([name], projection["lag"])
        yield lag


_positions = _PositionsCollector()
REGISTRY.register(_positions)  # type: ignore[arg-type]


def create_app(platform: Platform, on_started: Callable[[Platform], None] | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await asyncio.to_thread(platform.start)
        except Exception as exc:
            platform.start_error = exc  # `cdp up` says why in plain words
            raise
        try:
            await platform.start_async()
            _positions.platform = platform
            if on_started is not None:
                on_started(platform)
            yield
        finally:
            await platform.stop_async()
            await asyncio.to_thread(platform.stop)

    app = FastAPIOffline(  # /docs and /redoc with their scripts and styles served by the app, not a CDN
        title="cdp",
        summary="Event-sourced customer data platform: Segment-compatible ingest, unified profiles, projections.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)  # one error shape, {"code", "message", "errors"}, for every route
    app.include_router(build_ingest_router(platform))
    app.include_router(build_dead_letters_router(platform))
    tags = TagService(platform)
    app.include_router(build_query_router(platform, profile_extras=tags.profile_extras))
    app.include_router(build_tags_router(tags))
    app.include_router(build_kpi_router(platform))
    app.include_router(build_sql_router(platform))
    app.include_router(build_quarantine_router(platform))
    app.include_router(build_webhooks_router(platform))

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


class ThreadedServer:
    """The platform's app served by uvicorn on a thread of this process (benchmarks, tests over real HTTP)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        s = platform.settings
        self.url = f"http://{s.http_host}:{s.http_port}"
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(platform), host=s.http_host, port=s.http_port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 60) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start; see the log above")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
