"""Identity rules and the identity graph (pure, no fixtures)."""

from __future__ import annotations

from typing import Any

import pytest

from domain.identity import IdentityGraph, IdentityRules, split_identifier

WS = "ws-1"
rules = IdentityRules()


def record(graph: IdentityGraph, call: dict[str, Any], workspace: str = WS) -> str:
    """Apply one event to the graph as the write model does; returns the surviving profile."""
    resolution = graph.resolve(workspace, rules.identifiers_of(call))
    if resolution.profile_id is None:
        profile_id = f"p{len(graph.age) + 1}"
        graph.created(workspace, profile_id, resolution.new_identifiers, float(len(graph.age)))
        return profile_id
    for absorbed in resolution.absorbed:
        graph.merged(resolution.profile_id, absorbed)
    if resolution.new_identifiers:
        graph.linked(workspace, resolution.profile_id, resolution.new_identifiers)
    return resolution.profile_id


def test_identifiers_in_stable_order() -> None:
    call = {"anonymousId": "a1", "userId": "u1", "traits": {"email": "ann@example.com"}}
    assert rules.identifiers_of(call) == ["user_id:u1", "anonymous_id:a1", "email:ann@example.com"]


def test_email_from_context_traits_trimmed_and_lower_cased() -> None:
    call = {"anonymousId": "a1", "context": {"traits": {"email": "  Ann@Example.COM "}}}
    assert rules.identifiers_of(call) == ["anonymous_id:a1", "email:ann@example.com"]


def test_traits_email_wins_over_context_traits_email() -> None:
    call = {"userId": "u1", "traits": {"email": "a@x.io"}, "context": {"traits": {"email": "b@x.io"}}}
    assert rules.identifiers_of(call) == ["user_id:u1", "email:a@x.io"]


@pytest.mark.parametrize(
    "blocked", ["", "  ", "undefined", "null", "NULL", "None", "nil", "0", "anonymous", " Anonymous "]
)
def test_blocked_values_are_ignored(blocked: str) -> None:
    call = {"userId": blocked, "anonymousId": blocked, "traits": {"email": blocked}}
    assert rules.identifiers_of(call) == []


def test_non_string_values_are_not_identifiers() -> None:
    assert rules.identifiers_of({"userId": 42, "traits": {"email": ["a@x.io"]}, "context": None}) == []


def test_split_identifier() -> None:
    assert split_identifier("email:a:b@x.io") == ("email", "a:b@x.io")
    assert split_identifier("crm:42") == ("profile_id", "crm:42")


def test_unknown_identifiers_make_a_new_profile() -> None:
    graph = IdentityGraph()
    resolution = graph.resolve(WS, ["user_id:u1", "anonymous_id:a1"])
    assert resolution.profile_id is None
    assert resolution.new_identifiers == ["user_id:u1", "anonymous_id:a1"]
    assert resolution.absorbed == [] and resolution.reason == ""


def test_a_shared_identifier_resolves_to_the_same_profile_and_links_new_ones() -> None:
    graph = IdentityGraph()
    first = record(graph, {"anonymousId": "a1"})
    resolution = graph.resolve(WS, ["anonymous_id:a1", "user_id:u1"])
    assert (resolution.profile_id, resolution.new_identifiers, resolution.absorbed) == (first, ["user_id:u1"], [])
    assert record(graph, {"anonymousId": "a1", "userId": "u1"}) == first
    assert record(graph, {"userId": "u1"}) == first
    assert graph.identifiers[first] == ["anonymous_id:a1", "user_id:u1"]


def test_an_event_linking_two_profiles_merges_them_into_the_oldest() -> None:
    graph = IdentityGraph()
    older = record(graph, {"anonymousId": "a1"})
    newer = record(graph, {"userId": "u1", "traits": {"email": "u1@x.io"}})
    resolution = graph.resolve(WS, ["user_id:u1", "anonymous_id:a1"])
    assert resolution.profile_id == older
    assert resolution.absorbed == [newer]
    assert "user_id:u1" in resolution.reason and "anonymous_id:a1" in resolution.reason

    assert record(graph, {"userId": "u1", "anonymousId": "a1"}) == older
    assert newer not in graph.members and newer not in graph.identifiers
    assert graph.members[older] == {older, newer}
    assert graph.canonical[newer] == older
    assert sorted(graph.identifiers[older]) == ["anonymous_id:a1", "email:u1@x.io", "user_id:u1"]
    for ident in ("anonymous_id:a1", "user_id:u1", "email:u1@x.io"):
        assert graph.profile_of(WS, ident) == older


def test_age_not_argument_order_picks_the_survivor() -> None:
    graph = IdentityGraph()
    graph.created(WS, "late", ["user_id:u1"], created=200.0)
    graph.created(WS, "early", ["anonymous_id:a1"], created=100.0)
    assert graph.resolve(WS, ["user_id:u1", "anonymous_id:a1"]).profile_id == "early"


def test_transitive_merges_keep_canonical_flat() -> None:
    graph = IdentityGraph()
    p1 = record(graph, {"anonymousId": "a1"})
    p2 = record(graph, {"anonymousId": "a2"})
    p3 = record(graph, {"anonymousId": "a3"})
    assert record(graph, {"anonymousId": "a2", "userId": "u3"}) == p2
    assert record(graph, {"anonymousId": "a3", "userId": "u3"}) == p2  # p3 folds into p2
    assert record(graph, {"anonymousId": "a1", "userId": "u3"}) == p1  # p2 (with p3) folds into p1
    assert graph.canonical == {p1: p1, p2: p1, p3: p1}
    assert graph.members == {p1: {p1, p2, p3}}
    assert graph.profile_of(WS, "anonymous_id:a3") == p1
    assert set(graph.identifiers) == {p1}


def test_one_event_can_absorb_several_profiles() -> None:
    graph = IdentityGraph()
    p1, p2, p3 = (record(graph, {"anonymousId": f"a{i}"}) for i in (1, 2, 3))
    resolution = graph.resolve(WS, ["anonymous_id:a3", "anonymous_id:a2", "anonymous_id:a1"])
    assert resolution.profile_id == p1
    assert sorted(resolution.absorbed) == sorted([p2, p3])


def test_workspaces_are_isolated() -> None:
    graph = IdentityGraph()
    in_one = record(graph, {"userId": "u1"}, workspace="ws-1")
    in_two = record(graph, {"userId": "u1"}, workspace="ws-2")
    assert in_one != in_two
    assert graph.profile_of("ws-1", "user_id:u1") == in_one
    assert graph.profile_of("ws-2", "user_id:u1") == in_two
    assert graph.profile_of("ws-3", "user_id:u1") is None
    assert graph.resolve("ws-2", ["user_id:u1", "anonymous_id:a1"]).absorbed == []
