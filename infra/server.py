"""The HTTP server: the adapters' routers assembled on one FastAPI app whose lifespan runs the platform."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric

from api.audit import AuditMiddleware
from api.auth import check_metrics_key, described
from api.errors import install_error_handlers
from api.openapi import document_keys
from infra.bootstrap import Platform
from ingest import dead_letters_http, http as ingest_http, webhooks_http
from queries import access, dashboard, http as profiles_http, kpis, live, predictions, quarantine, regulations, sql, tags

# The HTTP adapters; the app is their composition.
ROUTERS = (
    ingest_http.router, ingest_http.settings_router, dead_letters_http.router, profiles_http.router, tags.router,
    kpis.router, sql.router, quarantine.router, webhooks_http.router, regulations.router, access.router,
    predictions.router, live.router,
)


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


def create_app(
    platform: Platform,
    on_started: Callable[[Platform], None] | None = None,
    on_stopping: Callable[[], None] | None = None,
) -> FastAPI:
    """The core's app; `on_started` runs once the platform serves, `on_stopping` before it stops."""
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
            if on_stopping is not None:
                await asyncio.to_thread(on_stopping)
            await platform.stop_async()
            await asyncio.to_thread(platform.stop)

    app = FastAPIOffline(  # /docs and /redoc with their scripts and styles served by the app, not a CDN
        title="cdp",
        summary="Event-sourced customer data platform: Segment-compatible ingest, unified profiles, projections.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.platform = platform  # the routers' dependencies find its services here (api/auth.py)
    install_error_handlers(app)  # one error shape, {"code", "message", "errors"}, for every route
    for router in ROUTERS:
        app.include_router(router)
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:  # each operation says which key it needs
        if app.openapi_schema is None:
            document_keys(base_openapi(), [route for router in ROUTERS for route in router.routes], described)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    dashboard.mount(app)  # the browser's view of the same API, at /dashboard
    # Admin actions and reads of personal data, recorded once answered (services/audit.py).
    app.add_middleware(AuditMiddleware, recorder=lambda: _audit_record(platform))

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics (the platform key, unless CDP_METRICS_OPEN)")
    def metrics(request: Request) -> Response:
        check_metrics_key(request, getattr(platform, "services", None), platform.settings.metrics_open)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


def _audit_record(platform: Platform) -> Callable[..., None] | None:
    services = getattr(platform, "services", None)
    return services.audit.record if services is not None else None


class ThreadedServer:
    """The platform's app served by uvicorn on a thread of this process (benchmarks, tests over real HTTP)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        s = platform.settings
        self.url = f"{s.http_scheme}://{s.http_host}:{s.http_port}"
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(platform), host=s.http_host, port=s.http_port, log_level="warning",
                           ssl_certfile=s.tls_certfile or None, ssl_keyfile=s.tls_keyfile or None)  # fmt: skip
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
