"""KPIs: the catalogue, a KPI's series, funnels and retention cohorts, answered by the KPI projection.

Errors are `domain.errors` kinds (the projection's KpiQueryError is one): an unknown KPI is NotFound,
a question it cannot answer as asked Invalid.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Hashable

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
    compare: bool = False  # also the period of the same length just before (`previous`)


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


MEMO_SIZE = 1024


class KpiService:
    """`version` tells what the KPI tables hold (KpiStore.generation, moved by every write): an answer for a range
    with both ends given is kept until it moves, so a dashboard opened again, or by a second viewer, costs
    no query; ranges ending "now" and snapshots (RFM tiers, lifecycle stages: as of the clock) are asked afresh."""

    def __init__(self, kpis: KpiStore, version: Callable[[], Hashable] | None = None) -> None:
        self.kpis = kpis
        self.version = version
        self._memo: OrderedDict[Hashable, tuple[Hashable, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def catalogue(self) -> list[dict[str, Any]]:
        return [
            {"name": k.name, "title": k.title, "definition": k.definition, "unit": k.unit, "group": k.group,
             "dimensions": list(k.dimensions), "shape": k.shape}
            for k in CATALOGUE.values()
        ]  # fmt: skip

    def series(self, q: GetSeries, pinned: bool = False) -> dict[str, Any]:
        """A KPI's answer; `pinned`: both ends of the range were given (the answer may come from the memo)."""
        kpi = CATALOGUE.get(q.name)
        if not pinned or self.version is None or kpi is None or kpi.shape == "snapshot":  # snapshots: as of now
            return self._series(q)
        key = (q.workspace_id, q.name, q.period, q.granularity, q.by, tuple(sorted(q.filters.items())),
               q.within_days, q.compare)  # fmt: skip
        version = self.version()  # read before computing: a write during the query makes the next one miss
        with self._lock:
            held = self._memo.get(key)
            if held is not None and held[0] == version:
                self._memo.move_to_end(key)
                return held[1]
        answer = self._series(q)
        with self._lock:
            self._memo[key] = (version, answer)
            self._memo.move_to_end(key)
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        return answer

    def _series(self, q: GetSeries) -> dict[str, Any]:
        p = q.period
        if q.granularity not in GRANULARITIES:
            raise Invalid(f"granularity must be one of {', '.join(GRANULARITIES)}", code="bad_request")
        kpi = CATALOGUE.get(q.name)
        before = Period(p.start - (p.end - p.start), p.start) if q.compare else None
        previous: list[dict[str, Any]] = []
        if before is not None and self._in_one_query(q, before):
            # A total of both periods in one query of two periods: a headline card's numbers for the cost of one.
            both = self.kpis.kpi(q.name, KpiQuery(q.workspace_id, before.start, p.end, "total", q.by, q.filters,
                                                  q.within_days, split=p.start))  # fmt: skip
            now = p.start.date().isoformat()
            rows = [row for row in both if row["period"] == now]
            previous = [row for row in both if row["period"] != now]
        else:
            rows = self.kpis.kpi(q.name, KpiQuery(q.workspace_id, p.start, p.end, q.granularity, q.by, q.filters,
                                                  q.within_days))  # fmt: skip
            if before is not None:
                previous = self.kpis.kpi(q.name, KpiQuery(q.workspace_id, before.start, before.end, q.granularity,
                                                          q.by, q.filters, q.within_days))  # fmt: skip
        assert kpi is not None  # the store refused an unknown name
        answer = {
            "kpi": q.name, "unit": kpi.unit, "definition": kpi.definition, "from": p.start.isoformat(),
            "to": p.end.isoformat(), "granularity": q.granularity, "by": q.by, "filters": q.filters, "series": rows,
        }  # fmt: skip
        if before is not None:
            answer["previous"] = {"from": before.start.isoformat(), "to": before.end.isoformat(), "series": previous}
        return answer

    @staticmethod
    def _in_one_query(q: GetSeries, before: Period) -> bool:
        kpi = CATALOGUE.get(q.name)
        return (q.granularity == "total" and kpi is not None and kpi.shape == "series"
                and before.start.date() < q.period.start.date())  # fmt: skip

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
