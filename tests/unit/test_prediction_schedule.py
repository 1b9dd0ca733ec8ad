"""When the scheduled prediction runs happen: a workspace never run, or run longer ago than the interval."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from infra.prediction_schedule import PredictionSchedule

NOW = datetime(2026, 12, 3, 12, tzinfo=timezone.utc)


class _Runs:
    """The two calls the schedule makes of the prediction service, recorded."""

    def __init__(self, last: dict[str, datetime]) -> None:
        self.last, self.ran = last, threading.Event()
        self.runs: list[str] = []

    def models(self, workspace_id: str) -> dict[str, Any]:
        if workspace_id not in self.last:
            return {"models": [{"model": "churn_risk", "status": "never_trained"}]}
        return {"models": [{"model": "churn_risk", "trained_at": self.last[workspace_id].isoformat()}]}

    def run(self, q: Any) -> dict[str, Any]:
        self.runs.append(q.workspace_id)
        self.ran.set()
        if q.workspace_id == "broken":
            raise RuntimeError("the store is away")
        return {"models": [{"model": "churn_risk", "status": "trained"}]}


def test_due_when_never_run_or_older_than_the_interval() -> None:
    runs = _Runs({"fresh": NOW - timedelta(hours=2), "stale": NOW - timedelta(hours=25)})
    schedule = PredictionSchedule(runs, lambda: [], lambda: NOW, every_h=24)  # type: ignore[arg-type]
    assert schedule.due("new") and schedule.due("stale") and not schedule.due("fresh")


def test_the_loop_runs_the_due_workspaces_and_survives_a_failed_run() -> None:
    runs = _Runs({"fresh": NOW})
    schedule = PredictionSchedule(runs, lambda: ["broken", "fresh", "new"], lambda: NOW, every_h=24,  # type: ignore[arg-type]
                                  first_delay_s=0.01).start()  # fmt: skip
    try:
        deadline = datetime.now() + timedelta(seconds=10)
        while "new" not in runs.runs:
            assert datetime.now() < deadline, runs.runs
            runs.ran.wait(0.05)
    finally:
        schedule.stop()
    assert runs.runs[:2] == ["broken", "new"]  # "fresh" ran an hour ago; "broken" failed and "new" still ran


def test_an_interval_of_zero_schedules_nothing() -> None:
    schedule = PredictionSchedule(_Runs({}), lambda: ["new"], lambda: NOW, every_h=0).start()  # type: ignore[arg-type]
    assert not schedule.scheduled
    schedule.stop()
