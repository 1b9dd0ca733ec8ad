"""Backfill equals live, over random histories, on the real write model (SQLite) and projections (chDB).

Live: the tags exist from the start; the history arrives batch by batch (with merges
and splits) while a test clock moves forward and timers fire. Backfill: copies of the
same rules are defined at the end and evaluated over everything at once. Both must
hold exactly the same profiles.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.application import CustomerData
from domain.segment import call_adapter, normalise
from domain.tags import parse_definition, save_definition
from infra.bootstrap import build_pipeline
from infra.clickhouse import clickhouse_client
from infra.config import Settings
from projections.migrate import migrate
from projections.store import ProjectionStore
from projections.tags import TagStore
from streams.log_follower import read_messages
from streams.tags import ManualClock, TagEngine

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
USERS, DEVICES = ["u0", "u1", "u2"], ["d0", "d1", "d2", "d3"]
RULES: dict[str, dict[str, Any]] = {
    "vip": {"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 10, "within": "30d"},
    "complainers": {"event": "Ticket Opened", "where": [{"property": "category", "op": "=", "value": "complaint"}],
                    "op": ">=", "value": 2, "within": "10d"},  # fmt: skip
    "dormant": {"last_seen": {"older_than": "20d"}},
    "pro-no-order": {"and": [{"trait": "plan", "op": "=", "value": "pro"},
                             {"not": {"event": "Order Completed", "measure": "exists", "within": "15d"}}]},  # fmt: skip
    "either": {"or": [{"tag": "vip"}, {"tag": "complainers"}]},
}


@st.composite
def call(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(["identify", "order", "ticket", "page", "alias"]))
    days_ago = draw(st.integers(0, 40))  # event time before the clock at the moment it is sent
    c: dict[str, Any] = {"days_ago": days_ago}
    if kind == "alias":
        return c | {"type": "alias", "previousId": draw(st.sampled_from(DEVICES)), "userId": draw(st.sampled_from(USERS))}
    who = draw(st.sampled_from([("userId", u) for u in USERS] + [("anonymousId", d) for d in DEVICES]))
    c[who[0]] = who[1]
    if kind == "identify":
        return c | {"type": "identify", "traits": {"plan": draw(st.sampled_from(["free", "pro"]))}}
    if kind == "order":
        return c | {"type": "track", "event": "Order Completed", "properties": {"revenue": draw(st.integers(1, 12)), "currency": "EUR"}}
    if kind == "ticket":
        category = draw(st.sampled_from(["complaint", "question"]))
        return c | {"type": "track", "event": "Ticket Opened", "properties": {"category": category, "ticket_id": f"t{draw(st.integers(0, 10**9))}"}}
    return c | {"type": "page", "name": "Home"}


# A history: batches, each sent after the clock moved forward by some days; sometimes a split after it.
histories = st.lists(
    st.tuples(st.lists(call(), min_size=1, max_size=5), st.integers(0, 12), st.booleans()), min_size=1, max_size=5
)


class World:
    def __init__(self, store: ProjectionStore) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.app = CustomerData(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                     "SQLITE_DBNAME": str(Path(self.dir.name) / "e.db")})  # fmt: skip
        self.ws = self.app.ensure_workspace(f"ws-{uuid.uuid4().hex}")
        self.clock = ManualClock(T0)
        self.tags = TagEngine(TagStore(store.client, store.db), self.clock)
        self.pipeline = build_pipeline(store, applied={}, tags=self.tags)  # the processors the platform runs
        self.position = 0
        self.messages = 0

    def define(self, slug: str, rule: dict[str, Any]) -> None:
        save_definition(self.app, self.ws, "tag", parse_definition({"id": slug, "rule": rule}))
        self.apply()

    def send(self, calls: list[dict[str, Any]]) -> None:
        received = self.clock.now()
        normalised = []
        for c in calls:
            when = (received - timedelta(days=c["days_ago"])).isoformat()
            raw = {k: v for k, v in c.items() if k != "days_ago"} | {"timestamp": when, "messageId": f"m{self.messages}"}
            self.messages += 1
            normalised.append(normalise(call_adapter.validate_python(raw), received))
        self.app.record([(self.ws, normalised)])
        self.apply()

    def split_one(self) -> None:
        for pid, idents in sorted(self.app.graph.identifiers.items()):
            if self.app.profiles[pid].workspace_id == self.ws and len(idents) >= 2:
                self.app.split(self.ws, pid, [sorted(idents)[0]], "test")
                self.apply()
                return

    def apply(self) -> None:
        messages, last = read_messages(self.app, self.position, 10_000)
        if messages:
            self.pipeline.process(messages)
        self.position = last


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, chdb_url: str) -> Iterator[ProjectionStore]:
    """One database for every example: each example is a workspace of its own."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    settings_ = Settings(data_dir=tmp_path_factory.mktemp("props"), clickhouse_url=chdb_url, clickhouse_database=database)
    client = clickhouse_client(settings_)
    migrate(client, database)
    yield ProjectionStore(client, database)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories)
def test_backfill_equals_live(store: ProjectionStore, history: list[tuple[list[dict[str, Any]], int, bool]]) -> None:
    world = World(store)
    for slug, rule in RULES.items():
        world.define(slug, rule)
    for calls, days, split in history:
        world.clock.advance(timedelta(days=days))
        world.tags.tick()  # timers fall due while no event arrives
        world.send(calls)
        if split:
            world.split_one()
    world.clock.advance(timedelta(days=7))
    world.tags.tick()
    for slug, rule in RULES.items():  # the same rules, defined now: evaluated over the whole history at once
        copy = {"or": [{"tag": f"b-{r['tag']}"} for r in rule["or"]]} if slug == "either" else rule
        world.define(f"b-{slug}", copy)
    tags = TagStore(store.client, store.db)
    for slug in RULES:
        live, backfilled = tags.members_of_tag(world.ws, slug), tags.members_of_tag(world.ws, f"b-{slug}")
        assert sorted(live) == sorted(backfilled), slug
