"""HTTP adapter of the live feed (services/live.py): one server-sent event stream per open dashboard."""

from __future__ import annotations

from typing import AsyncIterator

from fastapi import APIRouter, Depends
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.auth import Requires, services
from services import Services
from services.live import LiveFeed

router = APIRouter(tags=["operations"])

live_read = Requires("read", "following the live feed", audit=False)


def feed(built: Services = Depends(services)) -> LiveFeed:
    return built.live


@router.get(
    "/v1/live", response_class=EventSourceResponse,
    summary="Server-sent events: a `status` each second (events per second, profiles, lags) and every `kpi` update",
    description="What the dashboard shows moving, pushed rather than polled. `status` carries this workspace's "
    "events per second (over the last 5 s), its profile count and each part's lag; `kpi` is the message of "
    "`cdp.kpi-updates` (docs/streams.md) for this workspace, at most once a second per KPI. Send the read key "
    "as Bearer; a browser reads the stream with `fetch`, since `EventSource` cannot send it.",
)  # fmt: skip
async def live(workspace_id: str = Depends(live_read), live_feed: LiveFeed = Depends(feed)) -> AsyncIterator[ServerSentEvent]:
    async for message in live_feed.stream(workspace_id):
        yield ServerSentEvent(event=message["type"], data=message)
