"""HTTP adapter of the KPI service (services/kpis.py): the catalogue, KPI series, funnels and retention
cohorts (read key as Bearer)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.auth import Requires, services
from api.errors import ApiError
from api.params import QUERY_TIME, QUERY_TIME_HELP, RangeFrom, RangeTo, parse_query_time
from api.responses import json_response
from domain.kpis import FACT_DIMENSIONS
from domain.tags import TIME_WINDOW, time_window_error
from domain.times import utc
from services import Services
from services.documents import json_problems
from services.kpis import MAX_RANGE_DAYS, FunnelStep as Step, GetCohorts, GetFunnel, GetSeries, KpiService, Period

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

router = APIRouter(tags=["kpis"])


kpis_read = Requires("read:kpis", "reading KPIs")


def kpis(built: Services = Depends(services)) -> KpiService:
    return built.kpis


def parse_duration(value: str) -> int:
    """Seconds of a duration such as 30m, 12h, 7d, 2w; at most MAX_RANGE_DAYS."""
    match = _DURATION.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a duration such as 30m, 12h, 7d or 2w")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not seconds <= MAX_RANGE_DAYS * 86400:  # also refuses inf, from a number of 309 digits
        raise ValueError(f"{value!r} is longer than the longest window, {MAX_RANGE_DAYS}d")
    return int(seconds)


def _query_time(value: datetime) -> datetime:
    """A body's time in UTC; ValueError (a 422 naming the field) outside the window that can be queried."""
    try:
        value = utc(value)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00: no UTC time
        raise ValueError(f"the time is outside the times that can be queried: {TIME_WINDOW}") from None
    reason = time_window_error(value)
    if reason is not None:
        raise ValueError(reason)
    return value


class FunnelStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: str | None = Field(None, description="a track event name, e.g. Order Completed")
    type: Literal["track", "page", "screen", "identify", "group", "alias"] | None = None
    where: dict[str, str | int | float | bool] = Field(default_factory=dict, description="property equalities")
    name: str | None = Field(None, description="label in the answer")

    @field_validator("event", "name", "where")
    @classmethod
    def _sendable(cls, value: Any) -> Any:
        # What Python's JSON parser lets through but a ClickHouse query cannot carry: lone
        # surrogates, integers beyond 64 bits, NaN and infinities.
        problems = json_problems(value)
        if problems:
            raise ValueError("; ".join(reason if path == "(body)" else f"{path}: {reason}" for path, reason in problems))
        return value

    @model_validator(mode="after")
    def _something_to_match(self) -> "FunnelStep":
        if not self.event and not self.type:
            raise ValueError("a step needs an event name or a type")
        return self


class FunnelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    steps: list[FunnelStep] = Field(min_length=2, max_length=10)
    within: str = Field("7d", description=f"conversion window from the first step: 30m, 12h, 7d, 2w; at most "
                                          f"{MAX_RANGE_DAYS}d", json_schema_extra={"pattern": _DURATION.pattern})  # fmt: skip
    start: datetime = Field(alias="from", description=QUERY_TIME_HELP)
    end: datetime = Field(alias="to", description=f"exclusive; {QUERY_TIME_HELP}")

    @field_validator("within")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _query_time(value)

    @model_validator(mode="after")
    def _ordered(self) -> "FunnelRequest":
        if self.end <= self.start:
            raise ValueError("'to' must be after 'from'")
        return self


FUNNEL_EXAMPLE = {"steps": [{"type": "page", "name": "Visited"}, {"event": "Order Completed"}], "within": "7d",
                  "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}  # fmt: skip


def _period(start: str | None, end: str | None) -> Period:
    """`from` and `to` parameters: by default the 30 days up to now."""
    to = parse_query_time("to", end) or datetime.now(timezone.utc)
    return Period(parse_query_time("from", start) or to - timedelta(days=30), to)


@router.get("/v1/kpis", summary="The KPIs with their definitions")
def catalogue(_: str = Depends(kpis_read), service: KpiService = Depends(kpis)) -> Response:
    return json_response({"kpis": service.catalogue()})


@router.get("/v1/kpis/{name}", summary="A KPI series by day, week or month, optionally by a dimension")
def series(
    name: str,
    request: Request,
    workspace_id: str = Depends(kpis_read),
    start: RangeFrom = None,
    end: RangeTo = None,
    granularity: str = "day",
    by: str | None = None,
    within_days: Annotated[float, Query(gt=0, le=365)] = 7.0,
    compare: Annotated[Literal["previous"] | None, Query(
        description="`previous`: also the period of the same length just before, as `previous`")] = None,
    service: KpiService = Depends(kpis),
) -> Response:
    period = _period(start, end)
    filters = {k: v for k, v in request.query_params.items() if k in FACT_DIMENSIONS}
    unknown = set(request.query_params) - {"from", "to", "granularity", "by", "within_days", "compare", *FACT_DIMENSIONS}
    if unknown:
        raise ApiError(400, "bad_request", f"unknown parameters {sorted(unknown)}; filters are dimensions: "
                                           f"{', '.join(FACT_DIMENSIONS)}")  # fmt: skip
    query = GetSeries(workspace_id, name, period, granularity, by or None, filters, within_days, compare == "previous")
    return json_response(service.series(query, pinned=start is not None and end is not None))


@router.post("/v1/funnels", summary="Conversion through ordered steps within a window")
def funnel(
    body: Annotated[FunnelRequest, Body(examples=[FUNNEL_EXAMPLE])], workspace_id: str = Depends(kpis_read),
    service: KpiService = Depends(kpis),
) -> Response:  # fmt: skip
    steps = tuple(Step(s.event, s.type, s.where, s.name) for s in body.steps)
    within = parse_duration(body.within)
    return json_response(service.funnel(GetFunnel(workspace_id, steps, within, body.start, body.end)))


@router.get("/v1/cohorts/retention", summary="Monthly retention cohorts by first-seen month")
def cohorts(
    workspace_id: str = Depends(kpis_read),
    start: Annotated[str | None, Query(alias="from", description=QUERY_TIME_HELP, json_schema_extra=QUERY_TIME)] = None,
    end: Annotated[str | None, Query(alias="to", description=QUERY_TIME_HELP, json_schema_extra=QUERY_TIME)] = None,
    service: KpiService = Depends(kpis),
) -> Response:
    return json_response(service.cohorts(GetCohorts(workspace_id, _period(start, end))))
