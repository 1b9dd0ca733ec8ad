"""The dead-letter store over HTTP: list refused events with their reasons, and replay them after a fix."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from infra.http_errors import ApiError, json_response
from ingest.dead_letters import DeadLetterStore
from ingest.intake import Intake

MAX_PAGE = 1000


class DeadLetterService(Protocol):
    dead_letters: DeadLetterStore
    intake: Intake

    def authorise_read(self, key: str) -> str | None: ...
    def authorise_write(self, key: str) -> str | None: ...


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(
        None, max_length=MAX_PAGE, description="the dead letters to replay"
    )
    code: str | None = Field(None, description="or: every open dead letter with this reason code")
    source: str | None = Field(None, description="and/or: from this source (http, browser, import, kafka:..., webhook:...)")
    limit: int = Field(MAX_PAGE, ge=1, le=MAX_PAGE)


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        parsed = parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # not a time, or an offset that leaves every date
        raise ApiError(400, "invalid_time", f"{name}={value!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z",
                       [{"field": name, "reason": "ISO 8601 date-time"}]) from None  # fmt: skip
    return parsed


def _key(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def build_dead_letters_router(service: DeadLetterService) -> APIRouter:
    router = APIRouter(tags=["ingest"])

    def reader(request: Request) -> str:
        workspace_id = service.authorise_read(_key(request))
        if workspace_id is None:
            raise ApiError(401, "unauthorized", "dead letters are read with the workspace's read key (Bearer)")
        return workspace_id

    def writer(request: Request) -> str:
        workspace_id = service.authorise_write(_key(request))
        if workspace_id is None:
            raise ApiError(401, "unauthorized", "replaying dead letters needs the workspace's write key (Bearer)")
        return workspace_id

    @router.get("/v1/dead-letters", summary="Refused events with their reasons, oldest first")
    def list_dead_letters(
        request: Request,
        code: str | None = Query(None, description="reason code, e.g. invalid_event, out_of_range, invalid_json"),
        source: str | None = Query(None, description="http, browser, import, kafka:<topic>, webhook:<source>"),
        since: str | None = Query(None, alias="from", description="received at or after (ISO 8601)"),
        until: str | None = Query(None, alias="to", description="received before (ISO 8601)"),
        include_replayed: bool = False,
        after: int = Query(0, ge=0, le=2**62, description="the last id of the previous page"),
        limit: int = Query(100, ge=1, le=MAX_PAGE),
    ) -> Response:
        workspace_id = reader(request)
        letters = service.dead_letters.list(
            workspace_id, code=code, source=source, since=_time("from", since), until=_time("to", until),
            include_replayed=include_replayed, after_id=after, limit=limit,
        )  # fmt: skip
        next_after = letters[-1].id if len(letters) == limit else None
        return json_response({"dead_letters": [x.to_json() for x in letters], "next_after": next_after,
                              "open": service.dead_letters.counts(workspace_id)})  # fmt: skip

    @router.post("/v1/dead-letters/replay", summary="Submit dead letters again, after the sender or schema was fixed")
    async def replay(payload: ReplayRequest, request: Request) -> Response:
        workspace_id = writer(request)
        if payload.ids is None and payload.code is None and payload.source is None:
            raise ApiError(400, "invalid_request", "say which dead letters to replay: ids, code or source",
                           [{"field": "ids", "reason": "give ids, a code or a source"}])  # fmt: skip
        letters = service.dead_letters.list(
            workspace_id, code=payload.code, source=payload.source, ids=payload.ids, limit=payload.limit
        )
        return json_response(await service.intake.replay(workspace_id, letters))

    return router
