"""The write model (`CustomerData`) on a real SQLite event store."""

from __future__ import annotations

import copy
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from uuid import UUID

import pytest
from eventsourcing.utils import get_topic

from domain.application import CustomerData, IdentityError, hash_key, own_identifier
from domain.identity import IdentityRules
from domain.model import CustomerEvent, Profile, Workspace, customer_event_id_for

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def env_for(path: Path) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return env_for(tmp_path / "e.db")


@pytest.fixture
def app(env: dict[str, str]) -> Iterator[CustomerData]:
    application = CustomerData(env=env)
    yield application
    application.close()


@pytest.fixture
def ws(app: CustomerData) -> str:
    return app.ensure_workspace("acme")


def call(message_id: str | None, call_type: str = "track", at: float = 0, **fields: Any) -> dict[str, Any]:
    """A normalised call `at` seconds after T0."""
    when = (T0 + timedelta(seconds=at)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body: dict[str, Any] = {"type": call_type, "timestamp": when, "originalTimestamp": when, "receivedAt": when}
    if call_type == "track":
        body["event"] = "Clicked"
    body.update(fields)
    if message_id is not None:
        body["messageId"] = message_id
    return body


def stored_events(app: CustomerData) -> list[CustomerEvent.Recorded]:
    topic = get_topic(CustomerEvent.Recorded)
    return [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(1, 10_000, topics=[topic])]


def profile_events(app: CustomerData, profile_id: str) -> list[Any]:
    return [app.mapper.to_domain_event(e) for e in app.recorder.select_events(UUID(profile_id))]


def of_type(app: CustomerData, profile_id: str, kind: type) -> list[Any]:
    return [e for e in profile_events(app, profile_id) if isinstance(e, kind)]


def owners(app: CustomerData, ws: str) -> dict[str, str]:
    return {ident: p for (w, ident), p in app.graph.owner.items() if w == ws}


# Retries --------------------------------------------------------------------------------------


def test_a_retried_message_id_is_stored_once(app: CustomerData, ws: str) -> None:
    [[first]] = app.record([(ws, [call("m1", userId="u1")])])
    [[again]] = app.record([(ws, [call("m1", userId="u2")])])
    assert first.stored and not again.stored
    assert again.event_id == first.event_id == str(customer_event_id_for(ws, "m1"))
    assert again.profile_id is None  # stored by an earlier group
    assert [(e.message_id, e.profile_id) for e in stored_events(app)] == [("m1", first.profile_id)]
    assert app.graph.profile_of(ws, "user_id:u2") is None  # a retry resolves no identity


def test_a_retry_inside_one_batch_and_across_batches_of_a_group_is_stored_once(app: CustomerData, ws: str) -> None:
    results = app.record([(ws, [call("m1", userId="u1"), call("m1", userId="u1")]), (ws, [call("m1", userId="u1")])])
    assert [[r.stored for r in batch] for batch in results] == [[True, False], [False]]
    assert len({r.event_id for batch in results for r in batch}) == 1
    assert len({r.profile_id for batch in results for r in batch}) == 1  # retries in the group know the profile
    assert len(stored_events(app)) == 1


def test_a_retry_across_groups_and_after_a_restart_is_stored_once(
    env: dict[str, str], app: CustomerData, ws: str
) -> None:
    [[first]] = app.record([(ws, [call("m1", anonymousId="a1")])])
    [[second], [third]] = app.record([(ws, [call("m1", anonymousId="a1")]), (ws, [call("m2", anonymousId="a1")])])
    assert (first.stored, second.stored, third.stored) == (True, False, True)
    restarted = CustomerData(env=env)
    [[fourth, fifth]] = restarted.record([(ws, [call("m1", anonymousId="a1"), call("m2", anonymousId="a1")])])
    assert not fourth.stored and not fifth.stored
    assert (fourth.event_id, fifth.event_id) == (first.event_id, third.event_id)
    assert [e.message_id for e in stored_events(restarted)] == ["m1", "m2"]


def test_existing_ids_are_asked_once_per_group(env: dict[str, str], ws: str, app: CustomerData) -> None:
    asked: list[list[UUID]] = []

    def existing_ids(ids: list[UUID]) -> set[UUID]:
        asked.append(list(ids))
        return {i for i in ids if app.recorder.select_events(i, limit=1)}

    app.record([(ws, [call("m1", userId="u1")])])
    counted = CustomerData(env=env, existing_ids=existing_ids)
    results = counted.record([(ws, [call("m1", userId="u1"), call("m2", userId="u1")]), (ws, [call("m3")])])
    assert [[r.stored for r in batch] for batch in results] == [[False, True], [True]]
    assert asked == [[customer_event_id_for(ws, m) for m in ("m1", "m2", "m3")]]


# Order ----------------------------------------------------------------------------------------


def test_a_batch_is_resolved_in_event_time_order_and_answered_in_arrival_order(app: CustomerData, ws: str) -> None:
    batch = [
        call("m3", "identify", at=3, userId="u1", anonymousId="a1"),
        call("m1", at=1, anonymousId="a1"),
        call("m2", "identify", at=2, userId="u1"),
    ]
    [results] = app.record([(ws, batch)])
    assert [r.event_id for r in results] == [str(customer_event_id_for(ws, c["messageId"])) for c in batch]
    login, device, user = results
    # a1 (at 1) and u1 (at 2) were separate profiles until the login (at 3) merged them into the older.
    assert device.profile_id == login.profile_id != user.profile_id
    assert [e.message_id for e in stored_events(app)] == ["m1", "m2", "m3"]
    [absorbed] = of_type(app, device.profile_id, Profile.Absorbed)
    assert absorbed.absorbed_id == user.profile_id


def test_equal_times_are_ordered_by_message_id(app: CustomerData, ws: str) -> None:
    [results] = app.record([(ws, [call("b", anonymousId="a1", userId="u2"), call("a", anonymousId="a1", userId="u1")])])
    # "a" comes first: a1 goes with u1, and u2 is refused the shared device.
    assert app.graph.profile_of(ws, "anonymous_id:a1") == results[1].profile_id
    assert app.graph.profile_of(ws, "user_id:u2") == results[0].profile_id != results[1].profile_id


ORDER_CALLS = [
    call("m01", at=1, anonymousId="a1"),
    call("m02", at=2, anonymousId="a2"),
    call("m03", "identify", at=3, userId="u1", anonymousId="a1"),
    call("m04", "identify", at=4, userId="u1", anonymousId="a2", traits={"email": "Ann@X.io"}),
    call("m05", at=5, userId="u2", anonymousId="a1"),  # the family device: refused
    call("m06", at=5, anonymousId="a3", traits={"email": "ann@x.io"}),  # same time, ordered by messageId
    call("m07", at=6, anonymousId="undefined"),  # nothing usable: its own profile
    call("m08", at=7, anonymousId="a4", traits={"phone": "+49 151 23456789"}),
    call("m09", at=8, userId="u3", traits={"phone": "+4915123456789"}),
    call("m10", "alias", at=9, previousId="a5", userId="u3"),
]


def test_the_same_batch_in_any_order_yields_the_same_profiles(tmp_path: Path) -> None:
    orders = [list(ORDER_CALLS), list(reversed(ORDER_CALLS))]
    shuffler = random.Random(7)
    for _ in range(4):
        orders.append(shuffler.sample(ORDER_CALLS, len(ORDER_CALLS)))
    outcomes = []
    for i, calls in enumerate(orders):
        app = CustomerData(env=env_for(tmp_path / f"order-{i}.db"))
        ws = app.ensure_workspace("acme")
        [results] = app.record([(ws, calls)])
        by_message = {c["messageId"]: r.profile_id for c, r in zip(calls, results)}
        anchors = {e.message_id: e.anchor for e in stored_events(app)}
        outcomes.append((app.graph.owner, app.graph.identifiers, app.graph.refused_with, by_message, anchors))
        app.close()
    first = outcomes[0]
    for other in outcomes[1:]:
        assert other == first
    groups: dict[str, set[str]] = {}
    for (_, ident), profile in first[0].items():
        groups.setdefault(profile, set()).add(ident)
    assert sorted(map(sorted, groups.values())) == [
        ["anonymous_id:a1", "anonymous_id:a2", "anonymous_id:a3", "email:ann@x.io", "user_id:u1"],
        ["anonymous_id:a4", "anonymous_id:a5", "phone:+4915123456789", "user_id:u3"],
        ["user_id:u2"],
    ]
    assert first[4]["m07"] == f"profile_id:{first[3]['m07']}"


# Merges, refusals and anchors -----------------------------------------------------------------


def test_merge_records_survivor_absorbed_and_reason(app: CustomerData, ws: str) -> None:
    [[older]] = app.record([(ws, [call("m1", at=1, anonymousId="a1")])])
    [[newer]] = app.record([(ws, [call("m2", "identify", at=2, userId="u1", traits={"email": "u1@x.io"})])])
    [[linking]] = app.record([(ws, [call("m3", "identify", at=3, userId="u1", anonymousId="a1")])])
    assert older.profile_id != newer.profile_id
    assert linking.profile_id == older.profile_id

    [absorbed] = of_type(app, older.profile_id, Profile.Absorbed)
    assert absorbed.absorbed_id == newer.profile_id
    assert absorbed.identifiers == ["user_id:u1", "email:u1@x.io"]
    assert absorbed.cause_event_id == linking.event_id
    assert absorbed.reason == "one event carried user_id:u1, anonymous_id:a1"

    [merged] = of_type(app, newer.profile_id, Profile.MergedInto)
    assert (merged.survivor_id, merged.cause_event_id, merged.reason) == (
        older.profile_id, linking.event_id, absorbed.reason,
    )  # fmt: skip
    assert app.repository.get(UUID(newer.profile_id)).merged_into == older.profile_id
    assert app.repository.get(UUID(newer.profile_id)).identifiers == []
    survivor = app.repository.get(UUID(older.profile_id))
    assert survivor.identifiers == app.graph.identifiers[older.profile_id]
    assert sorted(survivor.identifiers) == ["anonymous_id:a1", "email:u1@x.io", "user_id:u1"]
    assert newer.profile_id not in app.graph.identifiers
    assert set(owners(app, ws).values()) == {older.profile_id}


def test_two_devices_then_login_join_into_one_profile(app: CustomerData, ws: str) -> None:
    [[phone], [laptop]] = app.record([(ws, [call("m1", at=1, anonymousId="a1")]),
                                      (ws, [call("m2", at=2, anonymousId="a2")])])  # fmt: skip
    [[first_login]] = app.record([(ws, [call("m3", "identify", at=3, userId="u1", anonymousId="a1")])])
    [[second_login]] = app.record([(ws, [call("m4", "identify", at=4, userId="u1", anonymousId="a2")])])
    assert first_login.profile_id == second_login.profile_id == phone.profile_id != laptop.profile_id
    assert owners(app, ws) == dict.fromkeys(["anonymous_id:a1", "anonymous_id:a2", "user_id:u1"], phone.profile_id)
    assert [e.anchor for e in stored_events(app)] == ["anonymous_id:a1", "anonymous_id:a2", "user_id:u1", "user_id:u1"]
    [linked] = of_type(app, phone.profile_id, Profile.IdentifiersLinked)
    assert (linked.identifiers, linked.cause_event_id) == (["user_id:u1"], first_login.event_id)


def test_a_refused_merge_is_recorded_on_the_profile_the_event_landed_on(app: CustomerData, ws: str) -> None:
    [[mum]] = app.record([(ws, [call("m1", "identify", at=1, userId="mum", anonymousId="tablet")])])
    [[kid]] = app.record([(ws, [call("m2", "identify", at=2, userId="kid", anonymousId="tablet")])])
    assert kid.profile_id != mum.profile_id
    [refused] = of_type(app, kid.profile_id, Profile.MergeRefused)
    assert refused.identifiers == ["anonymous_id:tablet"]
    assert refused.other_profile_id == mum.profile_id
    assert refused.cause_event_id == kid.event_id
    assert "user_id is unique per profile" in refused.reason
    assert of_type(app, mum.profile_id, Profile.MergeRefused) == []
    assert [e.identifiers for e in of_type(app, kid.profile_id, Profile.Created)] == [["user_id:kid"]]
    assert owners(app, ws) == {"user_id:mum": mum.profile_id, "anonymous_id:tablet": mum.profile_id,
                               "user_id:kid": kid.profile_id}  # fmt: skip
    assert stored_events(app)[-1].anchor == "user_id:kid"
    assert app.graph.carriers(ws, "anonymous_id:tablet") == 2


def test_a_cap_breach_is_refused_and_recorded(app: CustomerData, ws: str) -> None:
    app.set_rules(ws, IdentityRules(caps={"user_id": 1, "email": 2}))
    emails = ["a@x.io", "b@x.io", "c@x.io"]
    results = app.record([(ws, [call(f"m{i}", "identify", at=i, userId="u1", traits={"email": e})
                                for i, e in enumerate(emails)])])  # fmt: skip
    assert len({r.profile_id for r in results[0]}) == 1
    pid = results[0][0].profile_id
    assert app.graph.identifiers[pid] == ["user_id:u1", "email:a@x.io", "email:b@x.io"]
    [refused] = of_type(app, pid, Profile.MergeRefused)
    assert (refused.identifiers, refused.other_profile_id) == (["email:c@x.io"], None)
    assert refused.reason == "a profile holds at most 2 email values"
    assert refused.cause_event_id == results[0][2].event_id


def test_a_blocked_email_merges_nothing(app: CustomerData, ws: str) -> None:
    blocked = {"email": "test@test.com"}
    [[one, two]] = app.record([(ws, [call("m1", "identify", at=1, anonymousId="a1", traits=blocked),
                                     call("m2", "identify", at=2, anonymousId="a2", traits=blocked)])])  # fmt: skip
    assert one.profile_id != two.profile_id
    assert owners(app, ws) == {"anonymous_id:a1": one.profile_id, "anonymous_id:a2": two.profile_id}


def test_events_with_only_blocked_identifiers_get_a_profile_each(app: CustomerData, ws: str) -> None:
    [[one, two, again]] = app.record([(ws, [call("m1", userId="0"), call("m2", anonymousId="undefined"),
                                            call("m2", anonymousId="undefined")])])  # fmt: skip
    assert one.profile_id != two.profile_id
    assert again.profile_id == two.profile_id and not again.stored
    assert app.graph.owner == {}
    assert app.graph.identifiers == {one.profile_id: [], two.profile_id: []}
    anchors = {e.message_id: (e.profile_id, e.anchor) for e in stored_events(app)}
    assert anchors == {
        "m1": (one.profile_id, own_identifier(one.profile_id)),
        "m2": (two.profile_id, f"profile_id:{two.profile_id}"),
    }
    for result in (one, two):
        [created] = of_type(app, result.profile_id, Profile.Created)
        assert created.identifiers == [] and created.cause_event_id == result.event_id


def test_the_anchor_is_the_strongest_identifier(app: CustomerData, ws: str) -> None:
    app.set_rules(ws, IdentityRules(external_id_types=["crm_id"]))
    app.record([(ws, [
        call("m1", anonymousId="a1", traits={"phone": "+49 151 23456789", "email": "A@x.io"}),
        call("m2", anonymousId="a1", context={"externalIds": [{"id": "C-7", "type": "crm_id", "collection": "users",
                                                              "encoding": "none"}]}),
        call("m3", anonymousId="a1", userId="u1", traits={"crm_id": "C-7"}),
        call("m4", anonymousId="a1"),
    ])])  # fmt: skip
    anchors = [e.anchor for e in sorted(stored_events(app), key=lambda e: e.message_id)]
    assert anchors == ["email:a@x.io", "crm_id:C-7", "user_id:u1", "anonymous_id:a1"]
    assert len(set(owners(app, ws).values())) == 1


def test_identify_then_alias_stitches_anonymous_and_known_user(app: CustomerData, ws: str) -> None:
    [[anon]] = app.record([(ws, [call("m1", "identify", at=1, anonymousId="a1", traits={"email": "Ann@X.io"})])])
    [[alias]] = app.record([(ws, [call("m2", "alias", at=2, previousId="a1", userId="u1")])])
    [[later]] = app.record([(ws, [call("m3", at=3, userId="u1")])])
    assert anon.profile_id == alias.profile_id == later.profile_id
    assert app.graph.identifiers[anon.profile_id] == ["email:ann@x.io", "anonymous_id:a1", "user_id:u1"]
    assert app.repository.get(UUID(anon.profile_id)).identifiers == app.graph.identifiers[anon.profile_id]
    assert stored_events(app)[1].anchor == "user_id:u1"


def test_alias_of_a_known_user_id_to_another_is_refused_while_user_id_is_unique(app: CustomerData, ws: str) -> None:
    [[old]] = app.record([(ws, [call("m1", "identify", at=1, userId="old-id")])])
    [[alias]] = app.record([(ws, [call("m2", "alias", at=2, previousId="old-id", userId="new-id")])])
    assert alias.profile_id != old.profile_id
    assert app.graph.profile_of(ws, "user_id:new-id") == alias.profile_id
    assert app.graph.profile_of(ws, "anonymous_id:old-id") is None  # a known user id is read as one
    [refused] = of_type(app, alias.profile_id, Profile.MergeRefused)
    assert (refused.identifiers, refused.other_profile_id) == (["user_id:old-id"], old.profile_id)
    assert "user_id is unique per profile" in refused.reason


def test_alias_of_a_known_user_id_links_when_user_ids_may_share_a_profile(app: CustomerData, ws: str) -> None:
    app.set_rules(ws, IdentityRules(unique_types=[], caps={"user_id": 2}))
    [[old]] = app.record([(ws, [call("m1", "identify", at=1, userId="old-id")])])
    [[alias]] = app.record([(ws, [call("m2", "alias", at=2, previousId="old-id", userId="new-id")])])
    assert alias.profile_id == old.profile_id
    assert app.graph.identifiers[old.profile_id] == ["user_id:old-id", "user_id:new-id"]


def test_shared_value_limit_applies_once_set(app: CustomerData, ws: str) -> None:
    family = [
        call("m1", "identify", at=1, userId="mum", anonymousId="tablet"),
        call("m2", "identify", at=2, userId="kid", anonymousId="tablet"),  # refused: user_id is unique
        call("m3", "identify", at=3, anonymousId="phone", traits={"email": "grandma@x.io"}),
    ]
    [[mum, kid, grandma]] = app.record([(ws, family)])
    app.set_rules(ws, IdentityRules(shared_value_limit=2))
    [[joined]] = app.record([(ws, [call("m4", at=4, anonymousId="tablet", traits={"email": "grandma@x.io"})])])
    assert len({mum.profile_id, kid.profile_id, grandma.profile_id}) == 3
    assert joined.profile_id == grandma.profile_id  # the anchor (the email) is grandma's
    [refused] = of_type(app, grandma.profile_id, Profile.MergeRefused)
    assert refused.identifiers == ["anonymous_id:tablet"] and refused.other_profile_id == mum.profile_id
    assert refused.reason == "anonymous_id:tablet was already seen on 2 profiles (shared_value_limit)"
    assert app.graph.profile_of(ws, "anonymous_id:tablet") == mum.profile_id
    assert app.graph.carriers(ws, "anonymous_id:tablet") == 3


def test_events_of_a_profile_over_a_tightened_cap_still_land_on_it(app: CustomerData, ws: str) -> None:
    [[first, _, _]] = app.record([(ws, [call(f"m{i}", "identify", at=i, userId="u1", traits={"email": e})
                                        for i, e in enumerate(["a@x.io", "b@x.io", "c@x.io"])])])  # fmt: skip
    app.set_rules(ws, IdentityRules(caps={"user_id": 1, "email": 2}))
    [[later]] = app.record([(ws, [call("m9", at=9, userId="u1")])])
    event = stored_events(app)[-1]
    assert app.graph.profile_of(ws, event.anchor) == event.profile_id  # an event belongs to its anchor's owner
    assert later.profile_id == first.profile_id


def test_workspaces_are_isolated(app: CustomerData, ws: str) -> None:
    other = app.ensure_workspace("globex")
    app.grant_key(other, "write", "wk-globex")
    app.set_rules(other, IdentityRules(external_id_types=["crm_id"]))
    results = app.record([(ws, [call("m1", userId="u1", traits={"crm_id": "C-1"})]),
                          (other, [call("m1", userId="u1", traits={"crm_id": "C-1"})])])  # fmt: skip
    [[in_ws], [in_other]] = results
    assert in_ws.stored and in_other.stored
    assert in_ws.event_id != in_other.event_id and in_ws.profile_id != in_other.profile_id
    assert sorted(e.workspace_id for e in stored_events(app)) == sorted([ws, other])
    assert app.graph.identifiers[in_ws.profile_id] == ["user_id:u1"]
    assert app.graph.identifiers[in_other.profile_id] == ["user_id:u1", "crm_id:C-1"]
    assert app.authorise("wk-globex").workspace_id == other
    assert app.rules_for(ws) == IdentityRules()


# Splits ---------------------------------------------------------------------------------------


def merged_profile(app: CustomerData, ws: str) -> str:
    """One profile holding u1, a1 and a2 (a2 joined by a merge)."""
    app.record([(ws, [call("m1", at=1, anonymousId="a1"), call("m2", at=2, anonymousId="a2")])])
    [[login, _]] = app.record([(ws, [call("m3", "identify", at=3, userId="u1", anonymousId="a1"),
                                     call("m4", at=4, userId="u1", anonymousId="a2")])])  # fmt: skip
    return login.profile_id


def test_split_moves_identifiers_to_a_new_profile(app: CustomerData, ws: str) -> None:
    pid = merged_profile(app, ws)
    assert sorted(app.graph.identifiers[pid]) == ["anonymous_id:a1", "anonymous_id:a2", "user_id:u1"]
    position = app.last_position()

    new = app.split(ws, pid, ["anonymous_id:a2", "anonymous_id:a2"], reason="shared laptop")
    assert new != pid
    assert owners(app, ws) == {"user_id:u1": pid, "anonymous_id:a1": pid, "anonymous_id:a2": new}
    assert app.graph.identifiers[pid] == ["anonymous_id:a1", "user_id:u1"]
    assert app.graph.identifiers[new] == ["anonymous_id:a2"]
    assert app.last_position() == position + 2  # SplitApart and Created, in one save

    [split] = of_type(app, pid, Profile.SplitApart)
    assert (split.new_profile_id, split.identifiers, split.reason) == (new, ["anonymous_id:a2"], "shared laptop")
    [created] = profile_events(app, new)
    assert isinstance(created, Profile.Created)
    assert (created.workspace_id, created.identifiers) == (ws, ["anonymous_id:a2"])
    assert app.repository.get(UUID(pid)).identifiers == ["anonymous_id:a1", "user_id:u1"]
    assert app.repository.get(UUID(new)).identifiers == ["anonymous_id:a2"]

    # Later events follow the identifiers; the split-off profile may be split again, and gets a fresh id.
    [[after]] = app.record([(ws, [call("m5", at=5, anonymousId="a2")])])
    assert after.profile_id == new
    assert app.split(ws, pid, ["anonymous_id:a1"]) not in (pid, new)
    [_, default] = of_type(app, pid, Profile.SplitApart)
    assert default.reason == "split requested through the API"


@pytest.mark.parametrize(
    ("target", "identifiers", "message"),
    [
        ("unknown", ["anonymous_id:a2"], "no profile"),
        ("profile", ["anonymous_id:zz"], "not on it: anonymous_id:zz"),
        ("profile", ["anonymous_id:a2", "email:nobody@x.io"], "not on it: email:nobody@x.io"),
        ("profile", [], "not on it: none given"),
        ("profile", ["user_id:u1", "anonymous_id:a1", "anonymous_id:a2"], "at least one identifier"),
        ("merged", ["user_id:u1"], "was merged into"),
        ("other-workspace", ["anonymous_id:a2"], "no profile"),
    ],
)
def test_split_rejects_bad_requests(
    app: CustomerData, ws: str, target: str, identifiers: list[str], message: str
) -> None:
    pid = merged_profile(app, ws)
    [absorbed] = of_type(app, pid, Profile.Absorbed)
    other = app.ensure_workspace("globex")
    profile_id, workspace = {
        "unknown": ("00000000-0000-0000-0000-000000000000", ws),
        "profile": (pid, ws),
        "merged": (absorbed.absorbed_id, ws),
        "other-workspace": (pid, other),
    }[target]
    graph_before, position = copy.deepcopy(app.graph), app.last_position()
    with pytest.raises(IdentityError, match=message):
        app.split(workspace, profile_id, identifiers)
    assert app.graph == graph_before and app.last_position() == position


# Rules ----------------------------------------------------------------------------------------


def test_rules_are_versioned_per_workspace(app: CustomerData, ws: str) -> None:
    other = app.ensure_workspace("globex")
    assert app.rules_for(ws) == IdentityRules() and app.rules_version(ws) == 0
    crm = IdentityRules(external_id_types=["crm_id"], trait_sources={"plan": ["crm", "web"]})
    assert app.set_rules(ws, crm) == 1
    stricter = crm.model_copy(update={"shared_value_limit": 3})
    assert app.set_rules(ws, stricter) == 2
    assert app.rules_for(ws) == stricter and app.rules_version(ws) == 2
    assert app.rules_for(other) == IdentityRules() and app.rules_version(other) == 0
    assert app.set_rules(other, crm) == 1
    changes = [app.mapper.to_domain_event(e) for e in app.recorder.select_events(UUID(ws))]
    changes = [e for e in changes if isinstance(e, Workspace.RulesChanged)]
    assert [(e.version, e.rules) for e in changes] == [(1, crm.model_dump(mode="json")),
                                                       (2, stricter.model_dump(mode="json"))]  # fmt: skip


def test_new_rules_apply_to_later_events_only(app: CustomerData, ws: str) -> None:
    [[before]] = app.record([(ws, [call("m1", at=1, userId="u1", traits={"crm_id": "C-1"})])])
    app.set_rules(ws, IdentityRules(external_id_types=["crm_id"]))
    [[after]] = app.record([(ws, [call("m2", at=2, userId="u1", traits={"crm_id": "C-1"})])])
    assert before.profile_id == after.profile_id
    assert app.graph.identifiers[before.profile_id] == ["user_id:u1", "crm_id:C-1"]
    [linked] = of_type(app, before.profile_id, Profile.IdentifiersLinked)
    assert linked.identifiers == ["crm_id:C-1"] and linked.cause_event_id == after.event_id


def test_rules_survive_a_reload(env: dict[str, str], app: CustomerData, ws: str) -> None:
    rules = IdentityRules(external_id_types=["crm_id"], caps={"user_id": 1, "email": 2}, blocked_values=["x"])
    app.set_rules(ws, IdentityRules())
    app.set_rules(ws, rules)
    restarted = CustomerData(env=env)
    assert restarted.rules_for(ws) == rules
    assert restarted.rules_version(ws) == 2
    assert restarted.set_rules(ws, IdentityRules()) == 3
    assert CustomerData(env=env).rules_for(ws) == IdentityRules()


# Restart and failures -------------------------------------------------------------------------


def test_restart_rebuilds_graph_keys_rules_and_splits_from_the_log(
    env: dict[str, str], app: CustomerData, ws: str
) -> None:
    app.grant_key(ws, "write", "wk-1")
    app.grant_key(ws, "read", "rk-1")
    app.set_rules(ws, IdentityRules(shared_value_limit=5, caps={"user_id": 1, "email": 1}))
    pid = merged_profile(app, ws)
    app.record([(ws, [call("m5", "identify", at=5, userId="kid", anonymousId="a1"),  # refused
                      call("m6", "identify", at=6, userId="u1", traits={"email": "a@x.io"}),
                      call("m7", "identify", at=7, userId="u1", traits={"email": "b@x.io"}),  # refused: cap
                      call("m8", anonymousId="undefined")])])  # fmt: skip
    new = app.split(ws, pid, ["anonymous_id:a2"])
    [[merged]] = app.record([(ws, [call("m9", at=9, anonymousId="a2")])])

    restarted = CustomerData(env=env)
    assert restarted.graph == app.graph
    assert restarted.graph.refused_with == app.graph.refused_with != {}
    def grants(a: CustomerData) -> dict[str, tuple[str, str, str]]:
        return {h: (g.workspace_id, g.kind, g.key_id) for h, g in a.keys.by_hash.items()}

    assert grants(restarted) == grants(app)
    assert {h: g[1] for h, g in grants(app).items()} == {hash_key("wk-1"): "write", hash_key("rk-1"): "read"}
    assert restarted.rules_for(ws) == app.rules_for(ws) and restarted.rules_version(ws) == 1
    assert {p: (x.identifiers, x.merged_into, x.version) for p, x in restarted.profiles.items()} == {
        p: (x.identifiers, x.merged_into, x.version) for p, x in app.profiles.items()
    }
    assert restarted.graph.profile_of(ws, "anonymous_id:a2") == new == merged.profile_id
    assert restarted.ensure_workspace("acme") == ws
    assert restarted.authorise("wk-1").workspace_id == ws and restarted.authorise("rk-1").workspace_id == ws

    [[retry]] = restarted.record([(ws, [call("m9", userId="u1")])])
    assert (retry.stored, retry.event_id) == (False, merged.event_id)
    [[next_one]] = restarted.record([(ws, [call("m10", at=10, anonymousId="a2", traits={"email": "Z@x.io"})])])
    assert next_one.profile_id == new
    assert restarted.split(ws, pid, ["anonymous_id:a1"]) not in (pid, new)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (call(None, userId="u2"), KeyError),  # no messageId
        ({"type": "track", "event": "E", "messageId": "m3", "userId": "u2"}, KeyError),  # no timestamp
        (call("m3", userId="u2", properties={"at": object()}), TypeError),  # the store cannot encode it
    ],
    ids=["no-message-id", "no-timestamp", "fails-at-save"],
)
def test_a_failing_group_stores_nothing_and_leaves_the_graph_consistent(
    env: dict[str, str], app: CustomerData, ws: str, bad: dict[str, Any], error: type[Exception]
) -> None:
    app.record([(ws, [call("m0", at=0, userId="u0"), call("mx", at=0, anonymousId="ax")])])
    graph_before = copy.deepcopy(app.graph)
    profiles_before = {p: (list(x.identifiers), x.version) for p, x in app.profiles.items()}
    position_before = app.last_position()

    valid = [
        call("m1", at=1, userId="u1"),  # a new profile
        call("m2", at=2, anonymousId="a0", userId="u0"),  # a link
        call("m4", at=3, anonymousId="ax", userId="u0"),  # a merge
        call("m5", at=4, anonymousId="ax", userId="u5"),  # a refusal
    ]
    with pytest.raises(error):
        app.record([(ws, valid), (ws, [bad])])

    assert app.last_position() == position_before
    assert [e.message_id for e in stored_events(app)] == ["m0", "mx"]
    assert app.graph == graph_before == CustomerData(env=env).graph
    assert {p: (x.identifiers, x.version) for p, x in app.profiles.items()} == profiles_before
    assert app.graph.profile_of(ws, "user_id:u1") is None

    results = app.record([(ws, valid)])
    assert all(r.stored for r in results[0])
    assert app.graph.profile_of(ws, "user_id:u1") == results[0][0].profile_id
    assert app.graph.profile_of(ws, "anonymous_id:ax") == app.graph.profile_of(ws, "user_id:u0")
    assert [e.message_id for e in stored_events(app)] == ["m0", "mx", "m1", "m2", "m4", "m5"]
    assert app.graph == CustomerData(env=env).graph


# Keys -----------------------------------------------------------------------------------------


def test_keys_authorise_only_their_kind(app: CustomerData, ws: str) -> None:
    app.grant_key(ws, "write", "wk-1")
    app.grant_key(ws, "read", "rk-1")
    write, read = app.authorise("wk-1"), app.authorise("rk-1")
    assert write is not None and read is not None
    assert (write.workspace_id, write.kind, read.workspace_id, read.kind) == (ws, "write", ws, "read")
    assert write.allows("write") and not write.allows("read") and not write.allows("admin")
    assert read.allows("read:profiles") and not read.allows("write") and not read.allows("admin")
    assert app.authorise("unknown") is None


def test_granting_keys(app: CustomerData, ws: str) -> None:
    app.grant_key(ws, "write", "wk-1")
    position = app.last_position()
    app.grant_key(ws, "write", "wk-1")  # granting the same key again is a no-op
    assert app.last_position() == position
    other = app.ensure_workspace("globex")
    with pytest.raises(ValueError, match="already granted"):
        app.grant_key(ws, "read", "wk-1")
    with pytest.raises(ValueError, match="already granted"):
        app.grant_key(other, "write", "wk-1")
    with pytest.raises(ValueError, match="key kind must be one of write, read, admin"):
        app.grant_key(ws, "owner", "ok-1")
    log = str(app.recorder.select_notifications(1, 100))
    assert hash_key("wk-1") in log and "wk-1" not in log  # keys are stored hashed, never in clear


def test_ensure_workspace_is_idempotent(app: CustomerData) -> None:
    first = app.ensure_workspace("acme")
    position = app.last_position()
    assert app.ensure_workspace("acme") == first
    assert app.last_position() == position
    assert app.ensure_workspace("globex") != first
