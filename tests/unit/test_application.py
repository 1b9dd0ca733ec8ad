"""The write model (`CustomerData`) on a real SQLite event store."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.utils import get_topic

from domain.application import CustomerData, hash_key
from domain.model import CustomerEvent, Profile


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "e.db")}


@pytest.fixture
def app(env: dict[str, str]) -> CustomerData:
    return CustomerData(env=env)


@pytest.fixture
def ws(app: CustomerData) -> str:
    return app.ensure_workspace("acme")


def call(message_id: str | None, call_type: str = "track", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": call_type, **fields}
    if call_type == "track":
        body.setdefault("event", "Clicked")
    if message_id is not None:
        body["messageId"] = message_id
    return body


def stored_events(app: CustomerData) -> list[CustomerEvent.Recorded]:
    topic = get_topic(CustomerEvent.Recorded)
    return [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(1, 10_000, topics=[topic])]


def profile_events(app: CustomerData, profile_id: str) -> list[Any]:
    return [app.mapper.to_domain_event(e) for e in app.recorder.select_events(UUID(profile_id))]


def test_a_retried_message_id_is_stored_once(app: CustomerData, ws: str) -> None:
    [[first]] = app.record([(ws, [call("m1", userId="u1")])])
    [[again]] = app.record([(ws, [call("m1", userId="u2")])])
    assert first.stored and not again.stored
    assert again.event_id == first.event_id
    assert [(e.message_id, e.profile_id) for e in stored_events(app)] == [("m1", first.profile_id)]
    assert app.graph.profile_of(ws, "user_id:u2") is None  # a retry resolves no identity


def test_a_retry_inside_one_batch_and_across_batches_of_a_group_is_stored_once(app: CustomerData, ws: str) -> None:
    results = app.record([(ws, [call("m1", userId="u1"), call("m1", userId="u1")]), (ws, [call("m1", userId="u1")])])
    assert [[r.stored for r in batch] for batch in results] == [[True, False], [False]]
    assert len({r.event_id for batch in results for r in batch}) == 1
    assert len({r.profile_id for batch in results for r in batch}) == 1
    assert len(stored_events(app)) == 1


def test_identify_then_alias_stitches_anonymous_and_known_user(app: CustomerData, ws: str) -> None:
    [[anon]] = app.record([(ws, [call("m1", "identify", anonymousId="a1", traits={"email": "Ann@X.io"})])])
    [[alias]] = app.record([(ws, [call("m2", "alias", previousId="a1", userId="u1")])])
    [[later]] = app.record([(ws, [call("m3", userId="u1")])])
    assert anon.profile_id == alias.profile_id == later.profile_id
    assert app.graph.identifiers[anon.profile_id] == ["anonymous_id:a1", "email:ann@x.io", "user_id:u1"]
    assert app.repository.get(UUID(anon.profile_id)).identifiers == app.graph.identifiers[anon.profile_id]


def test_alias_of_a_known_user_id_links_the_new_user_id(app: CustomerData, ws: str) -> None:
    [[old]] = app.record([(ws, [call("m1", "identify", userId="old-id")])])
    app.record([(ws, [call("m2", "alias", previousId="old-id", userId="new-id")])])
    assert app.graph.profile_of(ws, "user_id:new-id") == old.profile_id
    assert app.graph.profile_of(ws, "anonymous_id:old-id") is None


def test_merge_records_survivor_absorbed_and_reason(app: CustomerData, ws: str) -> None:
    [[older]] = app.record([(ws, [call("m1", anonymousId="a1")])])
    [[newer]] = app.record([(ws, [call("m2", "identify", userId="u1")])])
    [[linking]] = app.record([(ws, [call("m3", "identify", userId="u1", anonymousId="a1")])])
    assert older.profile_id != newer.profile_id
    assert linking.profile_id == older.profile_id

    [absorbed] = [e for e in profile_events(app, older.profile_id) if isinstance(e, Profile.Absorbed)]
    assert absorbed.absorbed_id == newer.profile_id
    assert absorbed.fragments == [newer.profile_id]
    assert absorbed.identifiers == ["user_id:u1"]
    assert absorbed.cause_event_id == linking.event_id
    assert "user_id:u1" in absorbed.reason and "belonged to another profile" in absorbed.reason

    [merged] = [e for e in profile_events(app, newer.profile_id) if isinstance(e, Profile.MergedInto)]
    assert (merged.survivor_id, merged.reason) == (older.profile_id, absorbed.reason)
    assert app.repository.get(UUID(newer.profile_id)).merged_into == older.profile_id


def test_events_with_only_blocked_identifiers_get_a_profile_each(app: CustomerData, ws: str) -> None:
    results = app.record([(ws, [call("m1", userId="0"), call("m2", anonymousId="undefined")])])
    assert results[0][0].profile_id != results[0][1].profile_id
    assert app.graph.owner == {}


def test_restart_rebuilds_identity_graph_and_keys_from_the_log(env: dict[str, str], app: CustomerData, ws: str) -> None:
    app.grant_key(ws, "write", "wk-1")
    app.grant_key(ws, "read", "rk-1")
    app.record([(ws, [call("m1", anonymousId="a1"), call("m2", "identify", userId="u1")])])
    [[merged]] = app.record([(ws, [call("m3", "identify", userId="u1", anonymousId="a1", traits={"email": "a@x.io"})])])

    restarted = CustomerData(env=env)
    assert restarted.graph == app.graph
    assert restarted.keys == app.keys
    assert restarted.ensure_workspace("acme") == ws
    assert restarted.authorise("wk-1", "write") == ws and restarted.authorise("rk-1", "read") == ws
    [[retry]] = restarted.record([(ws, [call("m3", userId="u1")])])
    assert (retry.stored, retry.event_id) == (False, merged.event_id)
    [[next_one]] = restarted.record([(ws, [call("m4", context={"traits": {"email": "A@x.io"}}, anonymousId="b")])])
    assert next_one.profile_id == merged.profile_id


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (call(None, userId="u2"), KeyError),  # no messageId
        (call("m3", userId="u2", properties={"at": object()}), TypeError),  # the store cannot encode it
    ],
    ids=["no-message-id", "fails-at-save"],
)
def test_a_failing_group_stores_nothing_and_leaves_the_graph_consistent(
    env: dict[str, str], app: CustomerData, ws: str, bad: dict[str, Any], error: type[Exception]
) -> None:
    app.record([(ws, [call("m0", userId="u0")])])
    graph_before = copy.deepcopy(app.graph)
    position_before = app.last_position()

    valid = [call("m1", userId="u1"), call("m2", anonymousId="a0", userId="u0")]  # a new profile and a link
    with pytest.raises(error):
        app.record([(ws, valid), (ws, [bad])])

    assert app.last_position() == position_before
    assert [e.message_id for e in stored_events(app)] == ["m0"]
    assert app.graph == graph_before == CustomerData(env=env).graph
    assert app.graph.profile_of(ws, "user_id:u1") is None

    [[m1]] = app.record([(ws, [call("m1", userId="u1")])])
    assert m1.stored
    assert app.graph.profile_of(ws, "user_id:u1") == m1.profile_id
    assert [e.message_id for e in stored_events(app)] == ["m0", "m1"]


def test_keys_authorise_only_their_kind(app: CustomerData, ws: str) -> None:
    app.grant_key(ws, "write", "wk-1")
    app.grant_key(ws, "read", "rk-1")
    assert app.authorise("wk-1", "write") == ws
    assert app.authorise("rk-1", "read") == ws
    assert app.authorise("wk-1", "read") is None
    assert app.authorise("rk-1", "write") is None
    assert app.authorise("unknown", "write") is None


def test_granting_keys(app: CustomerData, ws: str) -> None:
    app.grant_key(ws, "write", "wk-1")
    position = app.last_position()
    app.grant_key(ws, "write", "wk-1")  # granting the same key again is a no-op
    assert app.last_position() == position
    with pytest.raises(ValueError, match="already granted"):
        app.grant_key(ws, "read", "wk-1")
    with pytest.raises(ValueError, match="'write' or 'read'"):
        app.grant_key(ws, "admin", "ak-1")
    log = str(app.recorder.select_notifications(1, 100))
    assert hash_key("wk-1") in log and "wk-1" not in log  # keys are stored hashed, never in clear


def test_message_ids_are_scoped_to_their_workspace(app: CustomerData, ws: str) -> None:
    other = app.ensure_workspace("globex")
    app.grant_key(other, "write", "wk-globex")
    results = app.record([(ws, [call("m1", userId="u1")]), (other, [call("m1", userId="u1")])])
    [[in_ws], [in_other]] = results
    assert in_ws.stored and in_other.stored
    assert in_ws.event_id != in_other.event_id and in_ws.profile_id != in_other.profile_id
    assert sorted(e.workspace_id for e in stored_events(app)) == sorted([ws, other])
    assert app.authorise("wk-globex", "write") == other
