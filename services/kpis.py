"""KPIs: the catalogue, a KPI's series, funnels and retention cohorts, answered by the KPI projection.

Errors are `domain.errors` kinds (the projection's KpiQueryError is one): an unknown KPI is NotFound,
a question it cannot answer as asked Invalid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from domain.errors import Invalid
from domain.kpis import CATALOGUE
from projections.kpis import GRANULARITIES, KpiQuery, KpiStore

MAX_RANGE_DAYS = 3660


@dataclass(frozen=True)
class Period:
    """[start, end): at most MAX_RANGE_DAYS, end after start."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise Invalid("'to' must be after 'from'", code="bad_request")
        if self.end - self.start > timedelta(days=MAX_RANGE_DAYS):
            raise Invalid(f"the range is above {MAX_RANGE_DAYS} days; narrow 'from' and 'to'", code="bad_request")


@dataclass(frozen=True)
class GetSeries:
    workspace_id: str
    name: str
    period: Period
    granularity: str = "day"
    by: str | None = None
    filters: dict[str, str] = field(default_factory=dict)
    within_days: float = 7.0


@dataclass(frozen=True)
class FunnelStep:
    event: str | None = None
    type: str | None = None
    where: dict[str, Any] = field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True)
class GetFunnel:
    workspace_id: str
    steps: tuple[FunnelStep, ...]
    within_seconds: int
    start: datetime
    end: datetime  # exclusive


@dataclass(frozen=True)
class GetCohorts:
    workspace_id: str
    period: Period


class KpiService:
    def __init__(self, kpis: KpiStore) -> None:
        self.kpis = kpis

    def catalogue(self) -> list[dict[str, Any]]:
        return [
            {"name": k.name, "title": k.title, "definition": k.definition, "unit": k.unit, "group": k.group,
             "dimensions": list(k.dimensions), "shape": k.shape}
            for k in CATALOGUE.values()
        ]  # fmt: skip

    def series(self, q: GetSeries) -> dict[str, Any]:
        p = q.period
        if q.granularity not in GRANULARITIES:
            raise Invalid(f"granularity must be one of {', '.join(GRANULARITIES)}", code="bad_request")
        rows = self.kpis.kpi(q.name, KpiQuery(q.workspace_id, p.start, p.end, q.granularity, q.by, q.filters, q.within_days))
        kpi = CATALOGUE[q.name]
        return {
            "kpi": q.name, "unit": kpi.unit, "definition": kpi.definition, "from": p.start.isoformat(),
            "to": p.end.isoformat(), "granularity": q.granularity, "by": q.by, "filters": q.filters, "series": rows,
        }  # fmt: skip

    def funnel(self, q: GetFunnel) -> dict[str, Any]:
        steps = [{"event": s.event, "type": s.type, "where": s.where, "name": s.name} for s in q.steps]
        reached = self.kpis.funnel(q.workspace_id, steps, q.within_seconds, q.start, q.end)
        out = []
        for i, (step, n) in enumerate(zip(q.steps, reached)):
            out.append({
                "step": i + 1, "name": step.name or step.event or step.type, "people": n,
                "conversion_from_previous": None if i == 0 else (n / reached[i - 1] if reached[i - 1] else None),
                "conversion_from_first": n / reached[0] if reached[0] else None,
            })  # fmt: skip
        return {
            "from": q.start.isoformat(), "to": q.end.isoformat(), "within_seconds": q.within_seconds,
            "entered": reached[0], "converted": reached[-1],
            "conversion_rate": reached[-1] / reached[0] if reached[0] else None, "steps": out,
        }  # fmt: skip

    def cohorts(self, q: GetCohorts) -> dict[str, Any]:
        p = q.period
        return {"from": p.start.isoformat(), "to": p.end.isoformat(),
                "cohorts": self.kpis.retention_cohorts(q.workspace_id, p.start, p.end)}  # fmt: skip
