"""The messages handed over in memory after a commit equal those read back from the log."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from bench.workload import workload
from domain.application import CustomerData
from domain.identity import IdentityRules
from domain.segment import call_adapter, normalise
from streams.log_follower import read_messages
from streams.tail import CommittedTail


def test_tail_messages_equal_the_decoded_log(tmp_path: Path) -> None:
    app = CustomerData(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "e.db")})
    tail = CommittedTail()
    app.on_saved.append(tail.committed)
    ws = app.ensure_workspace("acme")  # recorded before anything follows: held too, from position 1
    received = datetime(2026, 3, 1, tzinfo=timezone.utc)
    calls = [normalise(call_adapter.validate_python(raw), received) for raw in workload(600)]
    for start in range(0, len(calls), 100):
        app.record([(ws, calls[start : start + 100])])
    app.set_rules(ws, IdentityRules.model_validate({"trait_sources": {"*": ["crm"]}}))
    profile_id = next(p for p, ids in app.graph.identifiers.items() if len(ids) > 1)
    app.split(ws, profile_id, app.graph.identifiers[profile_id][-1:], "test")

    last = app.last_position()
    held, covered = tail.after(0, last)
    assert covered == last
    assert held == read_messages(app, 0, last)[0]
    assert {m.kind for m in held} == {"event", "identity", "rules"}
    page, covered = tail.after(10, 5)
    assert covered == 15 and page == read_messages(app, 10, 5)[0]
    assert tail.after(last, 10) is None  # nothing newer is held: the follower reads the log
    app.close()


def test_only_consecutive_positions_are_held() -> None:
    tail = CommittedTail(capacity=4)
    tail.append([(1, {"position": 1}), (2, None), (3, {"position": 3})])
    assert tail.after(0, 10) == ([{"position": 1}, {"position": 3}], 3)
    tail.append([(5, {"position": 5})])  # 4 skipped: a new run from 5
    assert tail.after(0, 10) is None and tail.after(3, 10) is None
    assert tail.after(4, 10) == ([{"position": 5}], 5)
    tail.append([(6, None), (7, None), (8, None), (9, {"position": 9})])  # over capacity: oldest dropped
    assert tail.after(4, 10) is None
    assert tail.after(5, 10) == ([{"position": 9}], 9)
