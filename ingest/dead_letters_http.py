"""HTTP adapter of the dead-letter service (services/dead_letters.py): list refused events with their
reasons, and replay them after a fix."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Requires, services
from api.errors import ApiError
from api.responses import json_response
from domain.times import parse_instant
from services import Services
from services.dead_letters import DeadLetterService, ListDeadLetters, ReplayDeadLetters

MAX_PAGE = 1000

router = APIRouter(tags=["ingest"])
letters_admin = Requires("admin", "the dead-letter store (it holds refused events as sent)")


def dead_letters(built: Services = Depends(services)) -> DeadLetterService:
    return built.dead_letters


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
        return parse_instant(value)
    except (ValueError, OverflowError):  # not a time, or an offset that leaves every date
        raise ApiError(400, "invalid_time", f"{name}={value!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z",
                       [{"field": name, "reason": "ISO 8601 date-time"}]) from None  # fmt: skip


@router.get("/v1/dead-letters", summary="Refused events with their reasons, oldest first")
def list_dead_letters(
    code: str | None = Query(None, description="reason code, e.g. invalid_event, out_of_range, invalid_json"),
    source: str | None = Query(None, description="http, browser, import, kafka:<topic>, webhook:<source>"),
    since: str | None = Query(None, alias="from", description="received at or after (ISO 8601)"),
    until: str | None = Query(None, alias="to", description="received before (ISO 8601)"),
    include_replayed: bool = False,
    after: int = Query(0, ge=0, le=2**62, description="the last id of the previous page"),
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    workspace_id: str = Depends(letters_admin),
    service: DeadLetterService = Depends(dead_letters),
) -> Response:
    query = ListDeadLetters(workspace_id, code, source, _time("from", since), _time("to", until), include_replayed,
                            after, limit)  # fmt: skip
    return json_response(service.page(query))


@router.post("/v1/dead-letters/replay", summary="Submit dead letters again, after the sender or schema was fixed")
async def replay(
    payload: ReplayRequest, workspace_id: str = Depends(letters_admin), service: DeadLetterService = Depends(dead_letters)
) -> Response:
    ids = tuple(payload.ids) if payload.ids is not None else None
    return json_response(await service.replay(ReplayDeadLetters(workspace_id, ids, payload.code, payload.source, payload.limit)))
