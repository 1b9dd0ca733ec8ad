"""Property-based identity tests on the real write model (SQLite) and projections (chDB)."""

from __future__ import annotations

import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.application import CustomerData
from domain.segment import call_adapter, normalise
from infra.clickhouse import clickhouse_client
from infra.config import Settings
from projections.migrate import migrate
from projections.store import ProfileView, ProjectionStore
from projections.verify import differences
from streams.log_follower import read_messages
from streams.processors import ProfileProcessor

USERS = ["u0", "u1", "u2"]
DEVICES = ["a0", "a1", "a2", "a3"]
EMAILS = ["e0@example.com", "e1@example.com"]
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def calls(draw: Any, users: list[str] = USERS, devices: list[str] = DEVICES, emails: list[str] = EMAILS) -> dict:
    kind = draw(st.sampled_from(["identify", "track", "page", "alias"] if users and devices else ["identify", "track"]))
    when = (T0 + timedelta(minutes=draw(st.integers(0, 50)))).isoformat()
    call: dict[str, Any] = {"type": kind, "timestamp": when}
    if kind == "alias":
        call |= {"previousId": draw(st.sampled_from(devices)), "userId": draw(st.sampled_from(users))}
        return call
    if users and draw(st.booleans()):
        call["userId"] = draw(st.sampled_from(users))
    if devices and ("userId" not in call or draw(st.booleans())):
        call["anonymousId"] = draw(st.sampled_from(devices))
    if "userId" not in call and "anonymousId" not in call:
        call["userId"] = draw(st.sampled_from(users))
    if kind == "identify":
        call["traits"] = {"plan": draw(st.sampled_from(["free", "pro"]))}
        if emails and draw(st.booleans()):
            call["traits"]["email"] = draw(st.sampled_from(emails))
    elif kind == "track":
        call |= {"event": draw(st.sampled_from(["Viewed", "Order Completed"])), "properties": {"revenue": 5, "currency": "EUR"}}
    else:
        call["name"] = "Home"
    return call


def _normalised(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    received = datetime(2026, 3, 2, tzinfo=timezone.utc)
    out = []
    for i, call in enumerate(raw):
        call = {**call, "messageId": f"m{i}"}
        out.append(normalise(call_adapter.validate_python(call), received))
    return out


class World:
    """A write model on a fresh SQLite file and a projection database in the session's chDB."""

    def __init__(self, settings_: Settings, database: str) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.app = CustomerData(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                     "SQLITE_DBNAME": str(Path(self.dir.name) / "e.db")})  # fmt: skip
        self.ws = self.app.ensure_workspace(f"ws-{uuid.uuid4().hex}")
        client = clickhouse_client(settings_)
        migrate(client, database)
        self.store = ProjectionStore(client, database)
        self.processor = ProfileProcessor(self.store)
        self.position = 0

    def record(self, calls_: list[dict[str, Any]], batch: bool = False) -> None:
        if batch:
            self.app.record([(self.ws, calls_)])
        else:
            for call in calls_:
                self.app.record([(self.ws, [call])])
        self.project()

    def project(self, page: int = 10_000) -> None:
        while True:
            messages, last = read_messages(self.app, self.position, page)
            if last == self.position:
                return
            self.processor.process(messages)
            self.position = last

    def view(self, identifier: str) -> ProfileView:
        owner = self.store.owner_of(self.ws, identifier)
        assert owner is not None, identifier
        view = self.store.read_profile(self.ws, owner)
        assert view is not None
        return view

    def partition(self) -> set[tuple[frozenset[str], int, tuple[tuple[str, int], ...]]]:
        """Who is who, with each profile's counts: comparable across stores (profile ids aside)."""
        result = set()
        for pid in self.store.profile_ids(self.ws):
            view = self.store.read_profile(self.ws, pid)
            if view is not None:
                result.add((frozenset(view.identifiers), view.event_count, tuple(sorted(view.counts.items()))))
        return result

    def close(self) -> None:
        self.app.close()
        self.dir.cleanup()


def _comparable(view: ProfileView) -> dict[str, Any]:
    return {
        "identifiers": sorted(view.identifiers), "traits": view.traits, "counts": view.counts,
        "event_count": view.event_count, "first_seen": view.first_seen, "last_seen": view.last_seen,
        "orders": view.orders_count, "revenue": view.revenue,
    }  # fmt: skip


@SETTINGS
@given(raw=st.lists(calls(), min_size=1, max_size=25), page=st.integers(1, 7))
def test_live_projection_in_any_page_size_equals_a_rebuild(settings: Settings, raw: list[dict], page: int) -> None:
    live = World(settings, settings.clickhouse_database + "_live")
    try:
        live.record(_normalised(raw))
        rebuilt_store = ProjectionStore(live.store.client, settings.clickhouse_database + "_rebuilt")
        migrate(rebuilt_store.client, rebuilt_store.db)
        # The live side saw the log in pages of `page` entries, redelivering each page twice.
        live_store = ProjectionStore(live.store.client, settings.clickhouse_database + "_paged")
        migrate(live_store.client, live_store.db)
        paged = ProfileProcessor(live_store)
        position = 0
        while True:
            messages, last = read_messages(live.app, position, page)
            if last == position:
                break
            paged.process(messages)
            paged.process(messages)
            position = last
        everything, _ = read_messages(live.app, 0, 100_000)
        ProfileProcessor(rebuilt_store).process(everything)
        assert differences(live_store, rebuilt_store) == []
    finally:
        live.close()


@SETTINGS
@given(
    device_calls=st.lists(calls(users=[], devices=["a0"], emails=["e0@example.com"]), min_size=1, max_size=8),
    user_calls=st.lists(calls(users=["u0"], devices=[], emails=[]), min_size=1, max_size=8),
)
def test_merge_then_split_restores_the_pre_merge_profiles(
    settings: Settings, device_calls: list[dict], user_calls: list[dict]
) -> None:
    world = World(settings, settings.clickhouse_database)
    try:
        world.record(_normalised(device_calls + user_calls))
        device_before, user_before = _comparable(world.view("anonymous_id:a0")), _comparable(world.view("user_id:u0"))
        merge = normalise(call_adapter.validate_python(
            {"type": "alias", "previousId": "a0", "userId": "u0", "messageId": "merge",
             "timestamp": (T0 + timedelta(hours=5)).isoformat()}), datetime(2026, 3, 2, tzinfo=timezone.utc))  # fmt: skip
        world.record([merge])
        merged = world.view("anonymous_id:a0")
        assert merged.profile_id == world.view("user_id:u0").profile_id
        assert merged.event_count == device_before["event_count"] + user_before["event_count"] + 1

        device_identifiers = device_before["identifiers"]
        world.app.split(world.ws, merged.profile_id, device_identifiers)
        world.project()
        assert _comparable(world.view("anonymous_id:a0")) == device_before
        user_after = _comparable(world.view("user_id:u0"))
        assert user_after["counts"] == user_before["counts"] | {"alias": 1}
        assert {k: user_after[k] for k in ("identifiers", "traits", "orders", "revenue", "first_seen")} == {
            k: user_before[k] for k in ("identifiers", "traits", "orders", "revenue", "first_seen")
        }
    finally:
        world.close()


@SETTINGS
@given(raw=st.lists(calls(), min_size=2, max_size=20), data=st.data())
def test_resolution_does_not_depend_on_arrival_order_within_a_batch(
    settings: Settings, raw: list[dict], data: st.DataObject
) -> None:
    calls_ = _normalised(raw)
    shuffled = data.draw(st.permutations(calls_))
    one, two = World(settings, settings.clickhouse_database), World(settings, settings.clickhouse_database)
    try:
        one.record(calls_, batch=True)
        two.record(list(shuffled), batch=True)
        assert one.partition() == two.partition()
    finally:
        one.close()
        two.close()
