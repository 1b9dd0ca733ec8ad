"""Log entries → messages → projection rows and profile changes, with a fake projection writer (no ClickHouse)."""

from __future__ import annotations

import copy
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from uuid import UUID, uuid5

import orjson
import pytest

from domain.application import CustomerData
from domain.identity import IdentityRules
from domain.model import CustomerEvent, Profile, Workspace, workspace_id_for
from domain.segment import call_adapter, normalise
from projections.store import ProfileView
from streams.log_follower import read_messages
from streams.messages import EventMessage, Message, Outgoing, decode, encode, to_message
from streams.processors import ProfileProcessor, event_row, source_of

WS = str(workspace_id_for("acme"))  # the id of Workspace("acme"), so its rules messages concern WS
RECEIVED = datetime(2026, 1, 2, tzinfo=timezone.utc)


class FakeWriter:
    """The processor's writer protocol over in-memory tables, with the projection store's semantics:
    events are keyed by event id, an identifier row with a higher position replaces a lower one, a profile's
    events are those anchored on its identifiers or its own id, and trait precedence follows `trait_sources`."""

    def __init__(self, rules: dict[str, dict[str, Any]] | None = None) -> None:
        self.events: dict[UUID, list[Any]] = {}
        self.history: list[list[Any]] = []
        self.identifier_rows: list[list[Any]] = []
        self.owned: dict[tuple[str, str, str], tuple[int, int]] = {}  # (ws, profile, identifier) → (position, deleted)
        self.changes: list[list[Any]] = []
        self.rules: list[list[Any]] = [[ws, 1, orjson.dumps(r).decode(), 0] for ws, r in (rules or {}).items()]
        self.profiles: dict[tuple[str, str], ProfileView] = {}
        self.tombstones: list[tuple[str, str, int]] = []
        self.computed: list[tuple[str, set[str], Any]] = []

    def insert_events(self, rows: list[list[Any]]) -> None:
        for row in rows:
            self.events[row[1]] = row

    def insert_identity_history(self, rows: list[list[Any]]) -> None:
        self.history += rows

    def insert_profile_identifiers(self, rows: list[list[Any]]) -> None:
        self.identifier_rows += rows
        for ws, pid, ident, position, deleted in rows:
            key = (ws, str(pid), ident)
            if key not in self.owned or position >= self.owned[key][0]:
                self.owned[key] = (position, deleted)

    def insert_changes(self, rows: list[list[Any]]) -> None:
        self.changes += rows

    def insert_rules(self, rows: list[list[Any]]) -> None:
        self.rules += rows

    def latest_rules(self) -> dict[str, dict[str, Any]]:
        latest: dict[str, tuple[int, str]] = {}
        for ws, version, rules, _ in self.rules:
            if ws not in latest or version > latest[ws][0]:
                latest[ws] = (version, rules)
        return {ws: orjson.loads(rules) for ws, (_, rules) in latest.items()}

    def identifiers(self, workspace_id: str, profile_id: str) -> list[str]:
        return sorted(i for (ws, p, i), (_, deleted) in self.owned.items() if (ws, p) == (workspace_id, profile_id)
                      and not deleted)  # fmt: skip

    def profile_ids(self, workspace_id: str) -> list[str]:
        return sorted({p for (ws, p, _), (_, deleted) in self.owned.items() if ws == workspace_id and not deleted})

    def read_profiles(self, workspace_id: str, profile_ids: Iterable[str]) -> dict[str, Any]:
        return {p: copy.deepcopy(self.profiles[(workspace_id, p)]) for p in profile_ids
                if (workspace_id, p) in self.profiles}  # fmt: skip

    def compute_profiles(
        self, workspace_id: str, profile_ids: Iterable[str], as_of: Any = None, trait_sources: Any = None
    ) -> dict[str, Any]:
        ids = set(profile_ids)
        self.computed.append((workspace_id, ids, trait_sources))
        views = {p: ProfileView(profile_id=p, identifiers=self.identifiers(workspace_id, p)) for p in ids}
        owner = {f"profile_id:{p}": p for p in views} | {i: p for p, v in views.items() for i in v.identifiers}
        candidates: dict[tuple[str, str], list[tuple[str, datetime, int, Any]]] = defaultdict(list)
        for row in self.events.values():
            if row[0] != workspace_id or row[3] not in owner:
                continue
            view = views[owner[row[3]]]
            kind, at, position = row[6], row[15], row[5]
            view.event_count += 1
            view.counts[kind] = view.counts.get(kind, 0) + 1
            if kind == "track":
                view.track_counts[row[7]] = view.track_counts.get(row[7], 0) + 1
            view.first_seen = at if view.first_seen is None else min(view.first_seen, at)
            view.last_seen = at if view.last_seen is None else max(view.last_seen, at)
            view.position = max(view.position, position)
            if kind == "identify":
                for key, value in orjson.loads(row[20]).items():
                    candidates[(view.profile_id, key)].append((row[9], at, position, value))
        precedence = trait_sources or {}
        for (pid, key), options in candidates.items():
            order = precedence.get(key) or precedence.get("*") or []
            rank = {source: i for i, source in enumerate(order)}
            source, at, _, value = min(options, key=lambda o: (rank.get(o[0], len(order)), -o[1].timestamp(), -o[2]))
            views[pid].traits[key] = value
            views[pid].trait_times[key] = at
            views[pid].trait_sources[key] = source
        return views

    def write_profiles(self, workspace_id: str, views: Iterable[Any], gone: Iterable[str], top: int) -> None:
        for view in views:
            self.profiles[(workspace_id, view.profile_id)] = view
        for pid in gone:
            self.profiles.pop((workspace_id, pid), None)
            self.tombstones.append((workspace_id, pid, top))

    def view(self, workspace_id: str, profile_id: str) -> ProfileView:
        return self.profiles[(workspace_id, profile_id)]


class Publisher:
    def __init__(self) -> None:
        self.batches: list[list[Outgoing]] = []

    def __call__(self, messages: list[Outgoing]) -> None:
        self.batches.append(messages)

    def take(self) -> list[Outgoing]:
        out = [m for batch in self.batches for m in batch]
        self.batches.clear()
        return out


class Log:
    """Domain events of aggregates, numbered as the notification log numbers them."""

    def __init__(self) -> None:
        self.position = 0
        self.pending: list[Message] = []

    def add(self, *aggregates: Any) -> list[Message]:
        added = []
        for aggregate in aggregates:
            for domain_event in aggregate.collect_events():
                self.position += 1
                message = to_message(domain_event, self.position)
                if message is not None:
                    added.append(message)
        self.pending += added
        return added

    def take(self) -> list[Message]:
        out, self.pending = self.pending, []
        return out


def _call(**raw: Any) -> dict[str, Any]:
    raw.setdefault("timestamp", "2026-01-01T00:00:00Z")
    return normalise(call_adapter.validate_python(raw), RECEIVED)


def event(profile: Any, anchor: str, message_id: str, **raw: Any) -> CustomerEvent:
    return CustomerEvent(WS, message_id, str(profile.id), anchor, _call(messageId=message_id, **raw))


# Messages -------------------------------------------------------------------------------------


def test_event_message_carries_the_anchor_and_makes_an_events_row() -> None:
    call = _call(type="identify", userId="u1", traits={"email": " Ann@X.com ", "plan": "pro"}, messageId="m1",
                 context={"library": {"name": "analytics.js"}})  # fmt: skip
    pid = "6fbd8143-d2d2-531d-9509-4e63f2e4d41c"
    recorded = CustomerEvent(WS, "m1", pid, "user_id:u1", call)
    message = to_message(recorded.collect_events()[0], 7)
    assert message is not None
    assert decode(encode(message)) == message
    shown = orjson.loads(encode(message))
    assert {k: shown[k] for k in ("kind", "position", "event_id", "workspace_id", "profile_id", "anchor",
                                  "message_id", "type")} == {
        "kind": "event", "position": 7, "event_id": str(recorded.id), "workspace_id": WS, "profile_id": pid,
        "anchor": "user_id:u1", "message_id": "m1", "type": "identify",
    }  # fmt: skip
    assert shown["call"] == call and shown["recorded_at"].endswith("Z")

    assert isinstance(message, EventMessage)
    row = event_row(message, IdentityRules())
    assert row[:10] == [WS, recorded.id, "m1", "user_id:u1", UUID(pid), 7, "identify", "", "", "analytics.js"]
    assert row[10:15] == ["u1", "", "ann@x.com", "", ""]  # the email column is normalised
    assert row[15] == row[16] == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert row[17] is None and row[18] == RECEIVED
    assert orjson.loads(row[20]) == {"email": " Ann@X.com ", "plan": "pro"}
    assert orjson.loads(row[19]) == {}


def test_an_event_without_usable_identifiers_is_anchored_on_its_profile() -> None:
    call = _call(type="track", anonymousId="undefined", event="Viewed", messageId="m2",
                 traits={"email": "test@test.com"})  # fmt: skip
    pid = "6fbd8143-d2d2-531d-9509-4e63f2e4d41c"
    message = to_message(CustomerEvent(WS, "m2", pid, f"profile_id:{pid}", call).collect_events()[0], 3)
    assert isinstance(message, EventMessage) and message.anchor == f"profile_id:{pid}"
    row = event_row(message, IdentityRules())
    assert (row[3], row[7], row[11], row[12]) == (f"profile_id:{pid}", "Viewed", "undefined", "")


def test_source_of_an_event() -> None:
    assert source_of({"context": {"source": "crm", "library": {"name": "analytics.js"}}}) == "crm"
    assert source_of({"context": {"library": {"name": "analytics-python"}}}) == "analytics-python"
    assert source_of({"context": {"source": "", "library": "not a dict"}}) == ""
    assert source_of({}) == ""


def identity_log() -> tuple[dict[str, Profile], list[Message]]:
    """One profile of each identity change, in log order."""
    a = Profile(WS, ["user_id:u1"], "e1")
    a.link(WS, ["email:a@x.io"], "e2")
    b = Profile(WS, ["anonymous_id:x"], "e3")
    a.absorb(WS, str(b.id), ["anonymous_id:x"], "e4", "one event carried user_id:u1, anonymous_id:x")
    b.merge_into(WS, str(a.id), "e4", "one event carried user_id:u1, anonymous_id:x")
    a.refuse_merge(WS, ["user_id:u2"], None, "e5", "user_id is unique per profile: u1, u2 would share one")
    c = Profile(WS, ["anonymous_id:x"], f"split:{a.id}:4")
    a.split_apart(WS, str(c.id), ["anonymous_id:x"], "shared laptop")
    log = Log()
    log.add(a, b, c)
    return {"a": a, "b": b, "c": c}, log.take()


def test_identity_messages_for_each_change() -> None:
    profiles, typed = identity_log()
    for m in typed:
        assert decode(encode(m)) == m
    messages = [orjson.loads(encode(m)) for m in typed]
    a, b, c = (str(profiles[k].id) for k in "abc")
    assert [(m["change"], m["profile_id"]) for m in messages] == [
        ("created", a), ("linked", a), ("absorbed", a), ("merge_refused", a), ("split_apart", a),
        ("created", b), ("merged_into", b), ("created", c),
    ]  # fmt: skip
    common = {"kind", "position", "event_id", "workspace_id", "profile_id", "change", "recorded_at"}
    specific = {
        "created": {"identifiers", "cause_event_id"},
        "linked": {"identifiers", "cause_event_id"},
        "absorbed": {"absorbed_id", "identifiers", "cause_event_id", "reason"},
        "merged_into": {"survivor_id", "cause_event_id", "reason"},
        "merge_refused": {"identifiers", "other_profile_id", "cause_event_id", "reason"},
        "split_apart": {"new_profile_id", "identifiers", "reason"},
    }
    for m in messages:
        assert set(m) == common | specific[m["change"]], m["change"]
        assert m["kind"] == "identity" and m["workspace_id"] == WS and m["recorded_at"].endswith("Z")
    by_change = {m["change"]: m for m in messages}
    assert by_change["linked"]["identifiers"] == ["email:a@x.io"]
    assert (by_change["absorbed"]["absorbed_id"], by_change["absorbed"]["identifiers"]) == (b, ["anonymous_id:x"])
    assert (by_change["merged_into"]["survivor_id"], by_change["merged_into"]["cause_event_id"]) == (a, "e4")
    assert by_change["merge_refused"]["other_profile_id"] is None
    assert by_change["merge_refused"]["reason"].startswith("user_id is unique")
    assert (by_change["split_apart"]["new_profile_id"], by_change["split_apart"]["reason"]) == (c, "shared laptop")
    assert [m["position"] for m in messages] == list(range(1, 9))
    # Event ids are deterministic per aggregate version, so a redelivery carries the same one.
    assert len({m["event_id"] for m in messages}) == 8
    assert messages[0]["event_id"] == str(uuid5(UUID(a), "1"))


def test_rules_message_and_internal_workspace_entries() -> None:
    workspace = Workspace("acme")
    workspace.issue_key("write", "hash")
    rules = IdentityRules(trait_sources={"plan": ["crm", "web"]}).model_dump(mode="json")
    workspace.change_rules(1, rules)
    created, key, changed = workspace.collect_events()
    assert to_message(created, 1) is None and to_message(key, 2) is None  # workspaces and keys stay internal
    message = to_message(changed, 3)
    assert message is not None and decode(encode(message)) == message
    shown = orjson.loads(encode(message))
    assert shown.pop("recorded_at").endswith("Z")
    assert shown == {
        "kind": "rules", "position": 3, "event_id": str(uuid5(workspace.id, "3")), "workspace_id": WS,
        "profile_id": "", "version": 1, "rules": rules,
    }  # fmt: skip


def test_messages_of_a_recorded_log(tmp_path: Path) -> None:
    app = CustomerData(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "e.db")})
    ws = app.ensure_workspace("acme")
    app.set_rules(ws, IdentityRules(trait_sources={"plan": ["crm"]}))
    app.record([(ws, [
        _call(type="track", anonymousId="a1", event="Viewed", messageId="m1", timestamp="2026-01-01T00:00:01Z"),
        _call(type="identify", userId="u1", messageId="m2", timestamp="2026-01-01T00:00:02Z"),
        _call(type="identify", userId="u1", anonymousId="a1", messageId="m3", timestamp="2026-01-01T00:00:03Z"),
    ])])  # fmt: skip
    messages, last = read_messages(app, 0, 100)
    assert last == app.last_position()
    assert [getattr(m, "change", m.kind) for m in messages] == [
        "rules", "created", "event", "created", "event", "absorbed", "merged_into", "event",
    ]  # fmt: skip
    events = [m for m in messages if isinstance(m, EventMessage)]
    assert [(m.message_id, m.anchor) for m in events] == [("m1", "anonymous_id:a1"), ("m2", "user_id:u1"),
                                                          ("m3", "user_id:u1")]  # fmt: skip
    absorbed = next(m for m in messages if getattr(m, "change", None) == "absorbed")
    assert absorbed.profile_id == events[0].profile_id == events[2].profile_id
    assert absorbed.absorbed_id == events[1].profile_id
    assert absorbed.cause_event_id == events[2].event_id
    app.close()


# The processor --------------------------------------------------------------------------------


def test_processor_writes_identity_rows_for_created_and_linked_profiles() -> None:
    log = Log()
    a = Profile(WS, ["user_id:u1", "anonymous_id:a1"], "e1")
    log.add(a, event(a, "user_id:u1", "m1", type="track", userId="u1", anonymousId="a1", event="Viewed"))
    a.link(WS, ["email:a@x.io"], "e2")
    log.add(a)
    writer = FakeWriter()
    assert ProfileProcessor(writer).process(log.take()) == 3
    pid = UUID(str(a.id))
    assert [r[:4] for r in writer.history] == [[WS, "user_id:u1", pid, 1], [WS, "anonymous_id:a1", pid, 1],
                                               [WS, "email:a@x.io", pid, 3]]  # fmt: skip
    assert all(isinstance(r[4], datetime) for r in writer.history)
    assert writer.identifier_rows == [[WS, pid, "user_id:u1", 1, 0], [WS, pid, "anonymous_id:a1", 1, 0],
                                      [WS, pid, "email:a@x.io", 3, 0]]  # fmt: skip
    assert [(r[1], r[2], r[3], r[4], r[5]) for r in writer.changes] == [
        (pid, 1, "created", "", ["user_id:u1", "anonymous_id:a1"]), (pid, 3, "linked", "", ["email:a@x.io"]),
    ]  # fmt: skip
    assert len(writer.events) == 1
    view = writer.view(WS, str(a.id))
    assert view.identifiers == ["anonymous_id:a1", "email:a@x.io", "user_id:u1"] and view.event_count == 1
    assert ProfileProcessor(writer).process([]) == 0


def two_profiles_then_merge() -> tuple[Profile, Profile, list[Message], list[Message]]:
    log = Log()
    a = Profile(WS, ["user_id:u1"], "e1")
    log.add(a, event(a, "user_id:u1", "m1", type="identify", userId="u1", traits={"plan": "pro"}))
    b = Profile(WS, ["anonymous_id:x"], "e2")
    log.add(b, event(b, "anonymous_id:x", "m2", type="track", anonymousId="x", event="Viewed"))
    first = log.take()
    cause = event(a, "user_id:u1", "m3", type="track", userId="u1", anonymousId="x", event="Signed In")
    reason = "one event carried user_id:u1, anonymous_id:x"
    a.absorb(WS, str(b.id), ["anonymous_id:x"], str(cause.id), reason)
    b.merge_into(WS, str(a.id), str(cause.id), reason)
    log.add(a, b, cause)
    return a, b, first, log.take()


def test_processor_merge_moves_rows_publishes_the_merge_and_tombstones_the_absorbed() -> None:
    a, b, first, merge = two_profiles_then_merge()
    a_id, b_id = str(a.id), str(b.id)
    writer, published = FakeWriter(), Publisher()
    processor = ProfileProcessor(writer, published)
    assert processor.process(first) == 4
    created = published.take()
    assert sorted((m["profile_id"], m["change"]) for m in created) == sorted([(a_id, "created"), (b_id, "created")])
    assert all(m["position"] == 4 for m in created)

    assert processor.process(merge) == 7
    absorbed_position = merge[0].position
    [moved] = [r for r in writer.history if r[3] == absorbed_position]
    assert moved[:4] == [WS, "anonymous_id:x", UUID(a_id), absorbed_position] and isinstance(moved[4], datetime)
    assert [r for r in writer.identifier_rows if r[3] == absorbed_position] == [
        [WS, UUID(a_id), "anonymous_id:x", absorbed_position, 0],  # the receiver gets the identifier
        [WS, UUID(b_id), "anonymous_id:x", absorbed_position, 1],  # the giver loses it
    ]  # fmt: skip
    assert [(str(r[1]), r[3], r[4]) for r in writer.changes[-2:]] == [(a_id, "absorbed", b_id),
                                                                      (b_id, "merged_into", a_id)]  # fmt: skip
    assert writer.view(WS, a_id).identifiers == ["anonymous_id:x", "user_id:u1"]
    assert writer.view(WS, a_id).event_count == 3  # b's event follows its anchor
    assert (WS, b_id) not in writer.profiles and writer.tombstones == [(WS, b_id, 7)]

    out = published.take()
    assert out[0] == {
        "workspace_id": WS, "profile_id": a_id, "change": "merged", "position": absorbed_position,
        "identifiers": ["anonymous_id:x"], "reason": "one event carried user_id:u1, anonymous_id:x",
        "merged_profile_id": b_id, "cause_event_id": merge[0].cause_event_id,
    }  # fmt: skip
    [updated] = [m for m in out if m["change"] == "updated"]
    assert updated["profile_id"] == a_id and updated["position"] == 7
    assert updated["identifiers"] == {"old": ["user_id:u1"], "new": ["anonymous_id:x", "user_id:u1"]}
    assert updated["computed_traits"]["event_count"] == {"old": 1, "new": 3}
    assert updated["traits"] == {}
    assert [m for m in out if m["change"] == "deleted"] == [
        {"workspace_id": WS, "profile_id": b_id, "change": "deleted", "position": 7},
    ]  # fmt: skip
    assert len(out) == 3


def test_processor_split_moves_rows_the_other_way_and_publishes_the_split() -> None:
    a, b, first, merge = two_profiles_then_merge()
    writer, published = FakeWriter(), Publisher()
    processor = ProfileProcessor(writer, published)
    processor.process(first + merge)
    published.take()

    log = Log()
    log.position = merge[-1].position
    c = Profile(WS, ["anonymous_id:x"], f"split:{a.id}:{a.version}")
    a.split_apart(WS, str(c.id), ["anonymous_id:x"], "shared laptop")
    log.add(a, c)
    a_id, c_id = str(a.id), str(c.id)
    split = log.take()
    assert processor.process(split) == 9
    assert [r for r in writer.identifier_rows if r[3] == 8] == [
        [WS, UUID(c_id), "anonymous_id:x", 8, 0],  # the new profile receives
        [WS, UUID(a_id), "anonymous_id:x", 8, 1],  # the split profile gives
    ]  # fmt: skip
    assert [r[:4] for r in writer.history if r[3] >= 8] == [[WS, "anonymous_id:x", UUID(c_id), 8],
                                                            [WS, "anonymous_id:x", UUID(c_id), 9]]  # fmt: skip
    assert writer.view(WS, a_id).identifiers == ["user_id:u1"]
    assert writer.view(WS, c_id).identifiers == ["anonymous_id:x"]
    assert writer.view(WS, c_id).event_count == 1  # m2, anchored on anonymous_id:x
    assert writer.view(WS, a_id).event_count == 2  # m1 and m3, anchored on user_id:u1

    out = published.take()
    assert out[0] == {
        "workspace_id": WS, "profile_id": a_id, "change": "split", "position": 8, "identifiers": ["anonymous_id:x"],
        "reason": "shared laptop", "new_profile_id": c_id,
    }  # fmt: skip
    assert sorted((m["profile_id"], m["change"]) for m in out[1:]) == sorted([(a_id, "updated"), (c_id, "created")])


def test_processor_publishes_a_refused_merge() -> None:
    log = Log()
    a = Profile(WS, ["user_id:mum", "anonymous_id:tablet"], "e1")
    log.add(a)
    kid = Profile(WS, ["user_id:kid"], "e2")
    reason = "user_id is unique per profile: kid, mum would share one"
    kid.refuse_merge(WS, ["anonymous_id:tablet"], str(a.id), "e2", reason)
    log.add(kid, event(kid, "user_id:kid", "m1", type="track", userId="kid", anonymousId="tablet", event="Viewed"))
    writer, published = FakeWriter(), Publisher()
    ProfileProcessor(writer, published).process(log.take())
    out = published.take()
    assert out[0] == {
        "workspace_id": WS, "profile_id": str(kid.id), "change": "merge_refused", "position": 3,
        "identifiers": ["anonymous_id:tablet"], "reason": reason, "other_profile_id": str(a.id),
        "cause_event_id": "e2",
    }  # fmt: skip
    assert [(r[3], r[4], r[5]) for r in writer.changes if r[3] == "merge_refused"] == [
        ("merge_refused", str(a.id), ["anonymous_id:tablet"]),
    ]  # fmt: skip
    assert writer.view(WS, str(a.id)).identifiers == ["anonymous_id:tablet", "user_id:mum"]  # nothing moved
    assert writer.view(WS, str(kid.id)).identifiers == ["user_id:kid"]


def test_processor_tombstones_profiles_that_are_not_alive() -> None:
    log = Log()
    lone = Profile(WS, [], "e1")  # no identifiers and, so far, no events
    kept = Profile(WS, [], "e2")
    log.add(lone, kept, event(kept, f"profile_id:{kept.id}", "m1", type="track", anonymousId="undefined", event="E"))
    writer, published = FakeWriter(), Publisher()
    assert ProfileProcessor(writer, published).process(log.take()) == 3
    assert writer.tombstones == [(WS, str(lone.id), 3)]
    assert writer.view(WS, str(kept.id)).event_count == 1  # its events are anchored on its own id
    # Nothing was published about the lone profile: it was never live.
    assert [(m["profile_id"], m["change"]) for m in published.take()] == [(str(kept.id), "created")]


def test_processing_a_batch_again_changes_nothing_and_publishes_no_profile_update() -> None:
    a, b, first, merge = two_profiles_then_merge()
    writer, published = FakeWriter(), Publisher()
    processor = ProfileProcessor(writer, published)
    processor.process(first + merge)
    profiles, owned = copy.deepcopy(writer.profiles), dict(writer.owned)
    published.take()
    assert processor.process(first + merge) == 7
    assert writer.profiles == profiles and writer.owned == owned
    assert [m for m in published.take() if m["change"] in ("created", "updated", "deleted")] == []


def test_a_redelivered_batch_republishes_identity_changes_under_the_same_keys() -> None:
    """Delivery is at least once: a retried batch announces its merge again, with the same key."""
    a, b, first, merge = two_profiles_then_merge()
    published = Publisher()
    processor = ProfileProcessor(FakeWriter(), published)
    processor.process(first + merge)
    once = [m for m in published.take() if m["change"] == "merged"]
    processor.process(merge)
    again = [m for m in published.take() if m["change"] == "merged"]
    key = lambda m: (m["profile_id"], m["position"], m["change"])  # noqa: E731
    assert once and [key(m) for m in again] == [key(m) for m in once]
    assert all(m["change"] != "updated" for m in published.take())  # nothing changed: no update


# Trait precedence and rules -------------------------------------------------------------------


def crm_and_web_log() -> tuple[Profile, Profile, Log]:
    """Two profiles whose `plan` came from the CRM first and the web later."""
    log = Log()
    profiles = []
    for user in ("u1", "u2"):
        p = Profile(WS, [f"user_id:{user}"], f"e-{user}")
        log.add(
            p,
            event(p, f"user_id:{user}", f"{user}-crm", type="identify", userId=user, traits={"plan": "enterprise"},
                  context={"source": "crm"}, timestamp="2026-01-01T00:00:01Z"),
            event(p, f"user_id:{user}", f"{user}-web", type="identify", userId=user, traits={"plan": "free"},
                  context={"source": "web"}, timestamp="2026-01-01T00:00:02Z"),
        )  # fmt: skip
        profiles.append(p)
    return profiles[0], profiles[1], log


def rules_message(log: Log, workspace: Workspace, version: int, rules: IdentityRules) -> list[Message]:
    workspace.change_rules(version, rules.model_dump(mode="json"))
    return [m for m in log.add(workspace) if m.kind == "rules"]


def test_a_rules_message_that_changes_trait_sources_recomputes_every_profile_of_the_workspace() -> None:
    u1, u2, log = crm_and_web_log()
    writer, published = FakeWriter(), Publisher()
    processor = ProfileProcessor(writer, published)
    processor.process(log.take())
    assert writer.view(WS, str(u1.id)).traits == {"plan": "free"}  # the latest wins by default
    published.take()

    workspace = Workspace("acme")
    workspace.collect_events()
    crm_first = IdentityRules(trait_sources={"plan": ["crm", "web"]})
    [rules] = rules_message(log, workspace, 1, crm_first)
    writer.computed.clear()
    assert processor.process(log.take()) == rules.position
    assert writer.rules == [[WS, 1, orjson.dumps(crm_first.model_dump(mode="json")).decode(), rules.position]]
    assert writer.computed == [(WS, {str(u1.id), str(u2.id)}, {"plan": ["crm", "web"]})]
    for p in (u1, u2):
        view = writer.view(WS, str(p.id))
        assert (view.traits, view.trait_sources) == ({"plan": "enterprise"}, {"plan": "crm"})
    assert sorted((m["profile_id"], m["traits"]["plan"]["new"]) for m in published.take()) == sorted(
        [(str(u1.id), "enterprise"), (str(u2.id), "enterprise")]
    )

    # The same precedence again (a redelivery, or another rule changed): nobody is recomputed.
    writer.computed.clear()
    [same] = rules_message(log, workspace, 2, crm_first.model_copy(update={"shared_value_limit": 3}))
    processor.process([same])
    assert writer.computed == [] and published.take() == []

    # A new processor reads the precedence the log last recorded, and later events follow it.
    restarted = ProfileProcessor(writer)
    assert restarted.rules == {WS: crm_first.model_copy(update={"shared_value_limit": 3})}
    log.add(event(u1, "user_id:u1", "u1-web-2", type="identify", userId="u1", traits={"plan": "pro"},
                  context={"source": "web"}, timestamp="2026-01-01T00:00:03Z"))  # fmt: skip
    restarted.process(log.take())
    assert writer.view(WS, str(u1.id)).traits == {"plan": "enterprise"}


def test_trait_sources_of_one_workspace_leave_the_others_alone() -> None:
    u1, _, log = crm_and_web_log()
    other = Profile("other", ["user_id:u1"], "e-other")
    log.add(other)
    writer = FakeWriter()
    processor = ProfileProcessor(writer)
    processor.process(log.take())
    workspace = Workspace("acme")
    workspace.collect_events()
    [rules] = rules_message(log, workspace, 1, IdentityRules(trait_sources={"*": ["crm"]}))
    writer.computed.clear()
    processor.process([rules])
    assert [ws for ws, _, _ in writer.computed] == [WS]
    assert {ws: r.trait_sources for ws, r in processor.rules.items()} == {WS: {"*": ["crm"]}}
    assert writer.view(WS, str(u1.id)).traits == {"plan": "enterprise"}  # '*' applies to every trait


def test_the_processor_starts_from_the_latest_recorded_rules() -> None:
    writer = FakeWriter(rules={WS: {"trait_sources": {"plan": ["web"]}}, "other": {}})
    assert ProfileProcessor(writer).rules == {WS: IdentityRules(trait_sources={"plan": ["web"]}), "other": IdentityRules()}


def test_the_events_email_follows_the_workspace_rules_not_the_defaults() -> None:
    """A value the workspace blocks is no email in its events; the defaults keep it, and so do other workspaces."""
    log = Log()
    ann = Profile(WS, ["user_id:u1"], "e1")
    other = Profile("other", ["user_id:u1"], "e2")
    traits = {"email": "Ann@X.com"}
    log.add(ann, event(ann, "user_id:u1", "m1", type="identify", userId="u1", traits=traits))
    log.add(other, CustomerEvent("other", "m1", str(other.id), "user_id:u1",
                                 _call(type="identify", userId="u1", traits=traits, messageId="m1")))  # fmt: skip
    writer = FakeWriter()
    processor = ProfileProcessor(writer)
    processor.process(log.take())
    assert sorted(row[12] for row in writer.events.values()) == ["ann@x.com", "ann@x.com"]  # the defaults

    workspace = Workspace("acme")
    workspace.collect_events()
    strict = IdentityRules(blocked_values=[*IdentityRules().blocked_values, "ann@x.com"])
    rules_message(log, workspace, 1, strict)
    log.add(event(ann, "user_id:u1", "m2", type="identify", userId="u1", traits=traits))
    processor.process(log.take())
    emails = {(row[0], row[2]): row[12] for row in writer.events.values()}
    assert emails == {(WS, "m1"): "ann@x.com", (WS, "m2"): "", ("other", "m1"): "ann@x.com"}

    # A processor that starts later reads the rules the log last recorded.
    log.add(event(ann, "user_id:u1", "m3", type="identify", userId="u1", traits=traits))
    later = FakeWriter(rules={WS: strict.model_dump(mode="json")})
    ProfileProcessor(later).process(log.take())
    assert [row[12] for row in later.events.values()] == [""]


# From the write model to the projections ------------------------------------------------------


def test_a_recorded_merge_and_split_project_as_the_write_model_says(tmp_path: Path) -> None:
    app = CustomerData(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "e.db")})
    ws = app.ensure_workspace("acme")
    writer, published = FakeWriter(), Publisher()
    processor = ProfileProcessor(writer, published)
    position = 0

    def project() -> None:
        nonlocal position
        while True:
            messages, last = read_messages(app, position, 3)  # small pages: a merge spans batches
            if last == position:
                return
            processor.process(messages)
            position = last

    def at(second: int) -> str:
        return f"2026-01-01T00:00:{second:02d}Z"

    [[device, _, user, login]] = app.record([(ws, [
        _call(type="track", anonymousId="a1", event="Viewed", messageId="m1", timestamp=at(1)),
        _call(type="track", anonymousId="a1", event="Viewed", messageId="m2", timestamp=at(2)),
        _call(type="identify", userId="u1", traits={"plan": "pro"}, messageId="m3", timestamp=at(3)),
        _call(type="identify", userId="u1", anonymousId="a1", messageId="m4", timestamp=at(4)),
    ])])  # fmt: skip
    project()
    assert device.profile_id == login.profile_id != user.profile_id
    survivor = writer.view(ws, device.profile_id)
    assert survivor.identifiers == ["anonymous_id:a1", "user_id:u1"]
    assert (survivor.event_count, survivor.traits) == (4, {"plan": "pro"})
    assert (ws, user.profile_id) not in writer.profiles
    assert "merged" in [m["change"] for m in published.take()]

    split_off = app.split(ws, device.profile_id, ["anonymous_id:a1"], reason="shared device")
    project()
    assert writer.view(ws, device.profile_id).identifiers == ["user_id:u1"]
    assert writer.view(ws, device.profile_id).event_count == 2  # m3 and m4, anchored on user_id:u1
    assert writer.view(ws, split_off).identifiers == ["anonymous_id:a1"]
    assert writer.view(ws, split_off).event_count == 2  # m1 and m2 follow their anchor
    [split] = [m for m in published.take() if m["change"] == "split"]
    assert (split["profile_id"], split["new_profile_id"], split["reason"]) == (
        device.profile_id, split_off, "shared device",
    )  # fmt: skip
    # Projected ownership agrees with the write model's graph.
    projected = {i: p for (w, p, i), (_, deleted) in writer.owned.items() if w == ws and not deleted}
    assert projected == {i: p for (w, i), p in app.graph.owner.items() if w == ws}
    app.close()
