"""The HTTP server: ingest and query routers on one FastAPI app whose lifespan runs the platform."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from fastapi import FastAPI

from infra.bootstrap import Platform
from ingest.http import build_ingest_router
from queries.http import build_query_router


def create_app(platform: Platform, on_started: Callable[[Platform], None] | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(platform.start)
        try:
            await platform.start_async()
            if on_started is not None:
                on_started(platform)
            yield
        finally:
            await platform.stop_async()
            await asyncio.to_thread(platform.stop)

    app = FastAPI(
        title="cdp",
        summary="Event-sourced customer data platform: Segment-compatible ingest, unified profiles, projections.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(build_ingest_router(platform))
    app.include_router(build_query_router(platform))

    @app.get("/healthz", tags=["operations"], summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
