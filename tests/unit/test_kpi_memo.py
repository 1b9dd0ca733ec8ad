"""KpiService's memo: an answer for a pinned range is kept until the projections move; nothing else is kept."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from services.kpis import MEMO_SIZE, GetSeries, KpiService, Period


class CountingStore:
    """What KpiService asks of the KPI projection, counting the questions."""

    def __init__(self) -> None:
        self.asked = 0

    def kpi(self, name: str, q: Any) -> list[dict[str, Any]]:
        self.asked += 1
        return [{"period": q.start.date().isoformat(), "value": self.asked}]


PERIOD = Period(datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 2, 1, tzinfo=timezone.utc))


def service(version: list[int]) -> tuple[KpiService, CountingStore]:
    store = CountingStore()
    return KpiService(store, lambda: version[0]), store  # type: ignore[arg-type]


def test_a_pinned_answer_is_kept_until_the_projections_move() -> None:
    version = [1]
    kpis, store = service(version)
    q = GetSeries("ws", "revenue", PERIOD, "total")
    first = kpis.series(q, pinned=True)
    assert kpis.series(q, pinned=True) == first and store.asked == 1
    version[0] = 2  # an event applied
    assert kpis.series(q, pinned=True) != first and store.asked == 2


def test_open_ended_ranges_snapshots_and_other_questions_are_asked_afresh() -> None:
    kpis, store = service([1])
    q = GetSeries("ws", "revenue", PERIOD, "total")
    kpis.series(q, pinned=False)
    kpis.series(q, pinned=False)
    assert store.asked == 2
    kpis.series(GetSeries("ws", "rfm_tiers", PERIOD), pinned=True)
    kpis.series(GetSeries("ws", "rfm_tiers", PERIOD), pinned=True)
    assert store.asked == 4  # as of the clock
    kpis.series(q, pinned=True)
    kpis.series(GetSeries("ws", "revenue", PERIOD, "total", filters={"channel": "web"}), pinned=True)
    kpis.series(GetSeries("other", "revenue", PERIOD, "total"), pinned=True)
    assert store.asked == 7


def test_the_memo_is_bounded() -> None:
    kpis, store = service([1])
    for i in range(MEMO_SIZE + 5):
        kpis.series(GetSeries(f"ws{i}", "revenue", PERIOD), pinned=True)
    assert len(kpis._memo) == MEMO_SIZE
    kpis.series(GetSeries("ws0", "revenue", PERIOD), pinned=True)  # the oldest went first
    assert store.asked == MEMO_SIZE + 6
