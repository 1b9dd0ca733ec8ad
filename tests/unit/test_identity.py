"""Identity rules, the identity graph and computed traits (pure, no fixtures)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from domain.identity import (
    DEFAULT_BLOCKED,
    IdentityGraph,
    IdentityRules,
    LifecycleThresholds,
    Resolution,
    normalise_email,
    normalise_phone,
    parse_identifier,
    split_identifier,
)
from domain.traits import lifecycle_stage, quintile, rfm, rfm_tier

WS = "ws-1"
rules = IdentityRules()


class World:
    """An identity graph driven as the write model drives it: resolve, then apply the resolution."""

    def __init__(self, rules_: IdentityRules = rules) -> None:
        self.graph = IdentityGraph()
        self.rules = rules_
        self.clock = 0.0
        self.count = 0

    def resolve(self, idents: list[str], workspace: str = WS) -> Resolution:
        return self.graph.resolve(workspace, idents, self.rules)

    def record(self, idents: list[str], workspace: str = WS) -> str:
        """Apply one event's identifiers (strongest first); returns the profile the event lands on."""
        resolution = self.resolve(idents, workspace)
        if resolution.profile_id is None:
            self.count += 1
            self.clock += 1.0
            profile_id = f"p{self.count}"
            self.graph.created(workspace, profile_id, resolution.new_identifiers, self.clock)
        else:
            profile_id = resolution.profile_id
            for absorbed in resolution.absorbed:
                self.graph.merged(workspace, profile_id, absorbed)
            if resolution.new_identifiers:
                self.graph.linked(workspace, profile_id, resolution.new_identifiers)
        for refusal in resolution.refusals:
            self.graph.refused(workspace, profile_id, refusal.identifiers)
        return profile_id

    def call(self, call: dict[str, Any], workspace: str = WS) -> str:
        return self.record(self.rules.identifiers_of(call), workspace)

    def owners(self, workspace: str = WS) -> dict[str, str]:
        return {ident: p for (ws, ident), p in self.graph.owner.items() if ws == workspace}


# Rules ----------------------------------------------------------------------------------------


def test_default_rules() -> None:
    assert rules.unique_types == ["user_id"]
    assert rules.caps == {"user_id": 1, "email": 5, "phone": 5, "anonymous_id": 100}
    assert rules.default_cap == 5
    assert rules.shared_value_limit is None  # opt-in
    assert rules.external_id_types == []
    assert rules.priority == ["user_id", "email", "phone", "anonymous_id"]
    assert rules.trait_sources == {}
    assert rules.lifecycle == LifecycleThresholds(repeat_orders=2, at_risk_days=60, churned_days=180)
    assert set(rules.blocked_values) == set(DEFAULT_BLOCKED)
    assert {"test@test.com", "undefined", "0"} <= set(rules.blocked_values)
    assert rules.types == ["user_id", "email", "phone", "anonymous_id"]


def test_caps_fall_back_to_the_default_cap_for_declared_external_types() -> None:
    custom = IdentityRules(external_id_types=["crm_id"], default_cap=2, caps={"email": 1})
    assert custom.cap("email") == 1
    assert custom.cap("crm_id") == 2
    assert custom.cap("user_id") == 2  # caps replace the defaults as a whole
    assert custom.types == ["user_id", "email", "phone", "anonymous_id", "crm_id"]


def test_rules_round_trip_through_json() -> None:
    custom = IdentityRules(
        external_id_types=["crm_id"],
        shared_value_limit=3,
        trait_sources={"plan": ["crm", "web"]},
        lifecycle=LifecycleThresholds(repeat_orders=3, at_risk_days=30, churned_days=90),
    )
    assert IdentityRules.model_validate(custom.model_dump(mode="json")) == custom
    assert IdentityRules.model_validate({}) == rules


def test_rules_are_frozen() -> None:
    with pytest.raises(ValidationError):
        rules.default_cap = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", ["crm-id", "CRM_ID", "Crm", "crm id", "crm.id", "", "email", "user_id", "phone",
                                  "anonymous_id"])  # fmt: skip
def test_bad_external_id_type_names_are_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match="external id types are lower_snake_case"):
        IdentityRules(external_id_types=[name])


@pytest.mark.parametrize("name", ["crm_id", "stripe_customer", "hubspot2"])
def test_lower_snake_case_external_id_type_names_are_accepted(name: str) -> None:
    assert IdentityRules(external_id_types=[name]).external_id_types == [name]


def test_profile_id_is_not_a_valid_external_id_type() -> None:
    with pytest.raises(ValidationError):
        IdentityRules(external_id_types=["profile_id"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"caps": {"email": 0}}, "caps.email must be at least 1"),
        ({"caps": {"user_id": 1, "phone": -2}}, "caps.phone must be at least 1"),
        ({"default_cap": 0}, "default_cap"),
        ({"shared_value_limit": 0}, "shared_value_limit"),
        ({"lifecycle": {"repeat_orders": 1}}, "repeat_orders"),
        ({"lifecycle": {"at_risk_days": 0}}, "at_risk_days"),
        ({"unknown_rule": True}, "unknown_rule"),
        ({"lifecycle": {"dormant_days": 3}}, "dormant_days"),
    ],
)
def test_invalid_rules_are_rejected(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IdentityRules.model_validate(fields)


# Reading identifiers off calls ----------------------------------------------------------------


def test_identifiers_strongest_first() -> None:
    call = {"anonymousId": "a1", "userId": "u1", "traits": {"phone": "+49 151 23456789", "email": "ann@example.com"}}
    assert rules.identifiers_of(call) == [
        "user_id:u1", "email:ann@example.com", "phone:+4915123456789", "anonymous_id:a1",
    ]  # fmt: skip
    assert rules.identifiers_of({"anonymousId": "a1", "traits": {"email": "ann@example.com"}}) == [
        "email:ann@example.com", "anonymous_id:a1",
    ]  # fmt: skip


def test_a_custom_priority_reorders_identifiers() -> None:
    custom = IdentityRules(priority=["email", "user_id", "anonymous_id", "phone"])
    call = {"anonymousId": "a1", "userId": "u1", "traits": {"phone": "+1 650-253-0000", "email": "a@x.io"}}
    assert custom.identifiers_of(call) == ["email:a@x.io", "user_id:u1", "anonymous_id:a1", "phone:+16502530000"]


def test_types_missing_from_the_priority_rank_last() -> None:
    custom = IdentityRules(priority=["anonymous_id", "user_id"])
    call = {"anonymousId": "a1", "userId": "u1", "traits": {"phone": "+1 650-253-0000", "email": "a@x.io"}}
    assert custom.identifiers_of(call) == ["anonymous_id:a1", "user_id:u1", "email:a@x.io", "phone:+16502530000"]


def test_email_from_context_traits_trimmed_and_lower_cased() -> None:
    call = {"anonymousId": "a1", "context": {"traits": {"email": "  Ann@Example.COM "}}}
    assert rules.identifiers_of(call) == ["email:ann@example.com", "anonymous_id:a1"]
    assert normalise_email(" Ann@Example.COM\t") == "ann@example.com"


def test_traits_email_wins_over_context_traits_email() -> None:
    call = {"userId": "u1", "traits": {"email": "a@x.io"}, "context": {"traits": {"email": "b@x.io"}}}
    assert rules.identifiers_of(call) == ["user_id:u1", "email:a@x.io"]


def test_ids_are_trimmed() -> None:
    assert rules.identifiers_of({"userId": " u1 ", "anonymousId": "\ta1"}) == ["user_id:u1", "anonymous_id:a1"]


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+49 151 23456789", "+4915123456789"),
        (" +49 (0)151 2345 6789 ", "+4915123456789"),
        ("+1 650-253-0000", "+16502530000"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_phone_is_normalised_to_e164(raw: str, e164: str) -> None:
    assert normalise_phone(raw) == e164
    assert rules.identifiers_of({"userId": "u1", "traits": {"phone": raw}}) == ["user_id:u1", f"phone:{e164}"]
    assert rules.identifiers_of({"anonymousId": "a1", "context": {"traits": {"phone": raw}}}) == [
        f"phone:{e164}", "anonymous_id:a1",
    ]  # fmt: skip


@pytest.mark.parametrize("raw", ["12345", "+49 1", "not a phone", "015123456789", "+999 123"])
def test_an_invalid_phone_is_ignored(raw: str) -> None:
    assert normalise_phone(raw) is None
    assert rules.identifiers_of({"userId": "u1", "traits": {"phone": raw}}) == ["user_id:u1"]


def test_the_same_phone_written_differently_is_one_identifier() -> None:
    call = {"userId": "u1", "traits": {"phone": "+49 151 23456789"}, "context": {"traits": {"phone": "+4915123456789"}}}
    assert rules.identifiers_of(call) == ["user_id:u1", "phone:+4915123456789"]
    world = World()
    first = world.call({"anonymousId": "a1", "traits": {"phone": "+49 151 23456789"}})
    assert world.call({"anonymousId": "a2", "traits": {"phone": "+49 (0)151 2345-6789"}}) == first


@pytest.mark.parametrize(
    "blocked", ["", "  ", "undefined", "null", "NULL", "None", "nil", "0", "-1", "anonymous", " Anonymous ", "guest",
                "unknown", "n/a", "test"],
)  # fmt: skip
def test_blocked_values_are_ignored(blocked: str) -> None:
    call = {"userId": blocked, "anonymousId": blocked, "traits": {"email": blocked, "phone": blocked}}
    assert rules.identifiers_of(call) == []


@pytest.mark.parametrize("email", ["test@test.com", " TEST@Test.com ", "test@example.com", "noreply@example.com"])
def test_blocked_emails_are_ignored(email: str) -> None:
    assert rules.identifiers_of({"userId": "u1", "traits": {"email": email}}) == ["user_id:u1"]


def test_blocked_values_are_configurable() -> None:
    custom = IdentityRules(blocked_values=[*DEFAULT_BLOCKED, "Shared-Kiosk", "info@acme.com"])
    call = {"anonymousId": "shared-kiosk", "userId": "u1", "traits": {"email": "INFO@acme.com"}}
    assert custom.identifiers_of(call) == ["user_id:u1"]
    assert not custom.usable(" SHARED-KIOSK ")
    # Replacing the list replaces the defaults.
    assert IdentityRules(blocked_values=["x"]).identifiers_of({"userId": "undefined"}) == ["user_id:undefined"]


def test_numbers_are_identifiers_but_other_non_strings_are_not() -> None:
    assert rules.identifiers_of({"userId": 42, "anonymousId": 7.5}) == ["user_id:42", "anonymous_id:7.5"]
    assert rules.identifiers_of({"userId": 0}) == []  # 0 is blocked as a number too
    call = {"userId": True, "anonymousId": None, "traits": {"email": ["a@x.io"], "phone": {"n": 1}}, "context": None}
    assert rules.identifiers_of(call) == []
    assert rules.identifiers_of({"traits": "not a dict", "context": ["nor", "this"]}) == []


def test_external_ids_count_only_when_declared() -> None:
    call = {
        "userId": "u1",
        "anonymousId": "a1",
        "traits": {"crm_id": "C-7", "email": "a@x.io"},
        "context": {"externalIds": [{"id": "cus_9", "type": "stripe_id", "collection": "users", "encoding": "none"}]},
    }
    assert rules.identifiers_of(call) == ["user_id:u1", "email:a@x.io", "anonymous_id:a1"]
    crm = IdentityRules(external_id_types=["crm_id"])
    assert crm.identifiers_of(call) == ["user_id:u1", "crm_id:C-7", "email:a@x.io", "anonymous_id:a1"]


def test_external_ids_from_traits_context_traits_and_context_external_ids() -> None:
    crm = IdentityRules(external_id_types=["crm_id"])
    segment = {"id": "C-9", "type": "crm_id", "collection": "users", "encoding": "none"}
    assert crm.identifiers_of({"anonymousId": "a1", "context": {"externalIds": [segment]}}) == [
        "crm_id:C-9", "anonymous_id:a1",
    ]  # fmt: skip
    assert crm.identifiers_of({"anonymousId": "a1", "context": {"traits": {"crm_id": " C-8 "}}}) == [
        "crm_id:C-8", "anonymous_id:a1",
    ]  # fmt: skip
    both = {"traits": {"crm_id": "C-7"}, "context": {"externalIds": [segment, {**segment, "id": "C-7"}]}}
    assert crm.identifiers_of(both) == ["crm_id:C-7", "crm_id:C-9"]
    numeric = {"context": {"externalIds": [{"id": 1234, "type": "crm_id", "collection": "users", "encoding": "none"}]}}
    assert crm.identifiers_of(numeric) == ["crm_id:1234"]


def test_unusable_external_ids_are_ignored() -> None:
    crm = IdentityRules(external_id_types=["crm_id"])
    external_ids: list[Any] = [
        {"id": "undefined", "type": "crm_id"},
        {"type": "crm_id"},
        {"id": "C-1", "type": "other_id"},
        {"id": "C-2"},
        "crm_id:C-3",
        None,
    ]
    call = {"userId": "u1", "traits": {"crm_id": "null"}, "context": {"externalIds": external_ids}}
    assert crm.identifiers_of(call) == ["user_id:u1"]
    assert crm.identifiers_of({"userId": "u1", "context": {"externalIds": "C-4"}}) == ["user_id:u1"]
    assert crm.identifiers_of({"userId": "u1", "context": {"externalIds": None}}) == ["user_id:u1"]


def test_declared_external_ids_rank_after_user_id_or_where_the_priority_puts_them() -> None:
    crm = IdentityRules(external_id_types=["crm_id"])
    call = {"anonymousId": "a1", "userId": "u1", "traits": {"crm_id": "C-7", "email": "a@x.io"}}
    assert crm.identifiers_of(call) == ["user_id:u1", "crm_id:C-7", "email:a@x.io", "anonymous_id:a1"]
    assert crm.rank("user_id") < crm.rank("crm_id") < crm.rank("email")
    assert crm.rank("not_declared_id") == len(crm.priority) + 1
    placed = IdentityRules(
        external_id_types=["crm_id"], priority=["user_id", "email", "phone", "crm_id", "anonymous_id"]
    )
    assert placed.identifiers_of(call) == ["user_id:u1", "email:a@x.io", "crm_id:C-7", "anonymous_id:a1"]


def test_several_external_id_types_rank_in_declaration_order() -> None:
    two = IdentityRules(external_id_types=["crm_id", "stripe_id"])
    call = {"userId": "u1", "traits": {"crm_id": "C-7", "stripe_id": "cus_9"}}
    assert two.identifiers_of(call) == ["user_id:u1", "crm_id:C-7", "stripe_id:cus_9"]


def test_external_ids_rank_after_user_id_even_when_user_id_is_not_first() -> None:
    custom = IdentityRules(external_id_types=["crm_id"], priority=["email", "user_id", "phone", "anonymous_id"])
    call = {"userId": "u1", "traits": {"crm_id": "C-7", "email": "a@x.io"}}
    assert custom.identifiers_of(call) == ["email:a@x.io", "user_id:u1", "crm_id:C-7"]


def test_split_identifier() -> None:
    assert split_identifier("email:a:b@x.io") == ("email", "a:b@x.io")
    assert split_identifier("user_id:42") == ("user_id", "42")
    assert split_identifier("crm_id:C-7") == ("crm_id", "C-7")  # any *_id type
    assert split_identifier("crm:42") == ("profile_id", "crm:42")
    assert split_identifier("crm:42", types=["crm"]) == ("crm", "42")
    assert split_identifier("6fbd8143-d2d2-531d-9509-4e63f2e4d41c") == (
        "profile_id", "6fbd8143-d2d2-531d-9509-4e63f2e4d41c",
    )  # fmt: skip


def test_parse_identifier_gives_the_stored_form() -> None:
    assert parse_identifier("email: Ann@X.com ") == ("email", "ann@x.com")
    assert parse_identifier("phone:+49 151 23456789") == ("phone", "+4915123456789")
    assert parse_identifier("user_id:\uff14\uff12") == ("user_id", "42")  # NFKC: full-width digits
    assert parse_identifier("crm:C-7", types=["crm"]) == ("crm", "C-7")
    assert parse_identifier("6fbd8143-d2d2-531d-9509-4e63f2e4d41c") == (
        "profile_id", "6fbd8143-d2d2-531d-9509-4e63f2e4d41c",
    )  # fmt: skip


# Resolving identifiers to profiles ------------------------------------------------------------


def test_no_identifiers_resolve_to_nothing() -> None:
    assert World().resolve([]) == Resolution(anchor=None, profile_id=None, new_identifiers=[])


def test_unknown_identifiers_make_a_new_profile() -> None:
    resolution = World().resolve(["user_id:u1", "anonymous_id:a1"])
    assert resolution.anchor == "user_id:u1"
    assert resolution.profile_id is None
    assert resolution.new_identifiers == ["user_id:u1", "anonymous_id:a1"]
    assert resolution.absorbed == [] and resolution.refusals == [] and resolution.reason == ""


def test_a_known_identifier_resolves_to_its_profile_and_links_new_ones() -> None:
    world = World()
    first = world.record(["anonymous_id:a1"])
    resolution = world.resolve(["user_id:u1", "anonymous_id:a1"])
    assert resolution.anchor == "user_id:u1"
    assert (resolution.profile_id, resolution.new_identifiers, resolution.absorbed) == (first, ["user_id:u1"], [])
    assert world.record(["user_id:u1", "anonymous_id:a1"]) == first
    assert world.record(["user_id:u1"]) == first
    assert world.graph.identifiers[first] == ["anonymous_id:a1", "user_id:u1"]
    assert world.resolve(["anonymous_id:a1"]) == Resolution("anonymous_id:a1", first, [])


def test_anonymous_on_two_devices_then_login_joins_all_three() -> None:
    world = World()
    phone = world.call({"anonymousId": "a1"})
    laptop = world.call({"anonymousId": "a2"})
    assert phone != laptop
    assert world.call({"userId": "u1", "anonymousId": "a1"}) == phone  # login on the phone

    resolution = world.resolve(rules.identifiers_of({"userId": "u1", "anonymousId": "a2"}))  # login on the laptop
    assert (resolution.anchor, resolution.profile_id, resolution.absorbed) == ("user_id:u1", phone, [laptop])
    assert resolution.new_identifiers == [] and resolution.refusals == []
    assert "user_id:u1" in resolution.reason and "anonymous_id:a2" in resolution.reason

    assert world.call({"userId": "u1", "anonymousId": "a2"}) == phone
    assert world.owners() == {"anonymous_id:a1": phone, "anonymous_id:a2": phone, "user_id:u1": phone}
    assert set(world.graph.identifiers) == {phone}
    assert sorted(world.graph.identifiers[phone]) == ["anonymous_id:a1", "anonymous_id:a2", "user_id:u1"]
    assert laptop not in world.graph.age


def test_a_shared_family_device_never_merges_two_users() -> None:
    world = World()
    mum = world.call({"userId": "mum", "anonymousId": "tablet"})

    resolution = world.resolve(rules.identifiers_of({"userId": "kid", "anonymousId": "tablet"}))
    assert (resolution.anchor, resolution.profile_id, resolution.absorbed) == ("user_id:kid", None, [])
    assert resolution.new_identifiers == ["user_id:kid"]
    [refusal] = resolution.refusals
    assert (refusal.identifiers, refusal.profile_id) == (["anonymous_id:tablet"], mum)
    assert "user_id is unique per profile" in refusal.reason
    assert "kid" in refusal.reason and "mum" in refusal.reason

    kid = world.call({"userId": "kid", "anonymousId": "tablet"})
    assert kid != mum
    assert world.owners() == {"user_id:mum": mum, "anonymous_id:tablet": mum, "user_id:kid": kid}
    assert world.graph.carriers(WS, "anonymous_id:tablet") == 2  # seen on mum's and the kid's profile
    # Later events keep them apart, whichever identifiers they carry.
    assert world.call({"userId": "kid"}) == kid
    assert world.call({"userId": "mum", "anonymousId": "tablet"}) == mum
    assert world.call({"anonymousId": "tablet"}) == mum
    assert world.call({"userId": "kid", "anonymousId": "tablet"}) == kid
    both = world.resolve(["user_id:mum", "user_id:kid"])
    assert both.profile_id == mum and both.absorbed == []
    assert [(r.identifiers, r.profile_id) for r in both.refusals] == [(["user_id:kid"], kid)]
    assert len(world.graph.identifiers) == 2


def test_a_second_user_id_is_refused_even_when_new() -> None:
    world = World()
    p1 = world.record(["user_id:u1", "anonymous_id:a1"])
    resolution = world.resolve(["anonymous_id:a1", "user_id:u2"])
    assert resolution.profile_id == p1 and resolution.new_identifiers == []
    [refusal] = resolution.refusals
    assert refusal.identifiers == ["user_id:u2"] and refusal.profile_id is None
    assert "user_id is unique per profile: u1, u2 would share one" == refusal.reason
    world.record(["anonymous_id:a1", "user_id:u2"])
    assert world.graph.profile_of(WS, "user_id:u2") is None
    assert world.graph.carriers(WS, "user_id:u2") == 0  # never owned, so nobody carries it


def test_without_unique_types_two_user_ids_may_share_a_profile() -> None:
    world = World(IdentityRules(unique_types=[], caps={"user_id": 2}))
    p1 = world.record(["user_id:old", "anonymous_id:a1"])
    assert world.record(["user_id:new", "anonymous_id:a1"]) == p1
    assert world.graph.identifiers[p1] == ["user_id:old", "anonymous_id:a1", "user_id:new"]
    third = world.resolve(["user_id:third", "anonymous_id:a1"])
    assert [r.reason for r in third.refusals] == ["a profile holds at most 2 user_id values"]


def test_a_cap_breach_when_linking_is_refused_and_says_why() -> None:
    world = World(IdentityRules(caps={"user_id": 1, "email": 2}))
    p1 = world.call({"userId": "u1", "traits": {"email": "a@x.io"}})
    assert world.call({"userId": "u1", "traits": {"email": "b@x.io"}}) == p1

    resolution = world.resolve(["user_id:u1", "email:c@x.io"])
    assert (resolution.profile_id, resolution.new_identifiers) == (p1, [])
    [refusal] = resolution.refusals
    assert (refusal.identifiers, refusal.profile_id) == (["email:c@x.io"], None)
    assert refusal.reason == "a profile holds at most 2 email values"

    assert world.call({"userId": "u1", "traits": {"email": "c@x.io"}}) == p1
    assert world.graph.identifiers[p1] == ["user_id:u1", "email:a@x.io", "email:b@x.io"]
    assert world.graph.profile_of(WS, "email:c@x.io") is None


def test_a_cap_breach_when_merging_is_refused_and_says_why() -> None:
    world = World(IdentityRules(caps={"user_id": 1, "email": 2}))
    p1 = world.record(["user_id:u1", "email:a@x.io"])
    p2 = world.record(["email:b@x.io", "email:c@x.io", "anonymous_id:a2"])
    resolution = world.resolve(["user_id:u1", "anonymous_id:a2"])
    assert (resolution.profile_id, resolution.absorbed, resolution.reason) == (p1, [], "")
    [refusal] = resolution.refusals
    assert (refusal.identifiers, refusal.profile_id) == (["anonymous_id:a2"], p2)
    assert refusal.reason == "a profile holds at most 2 email values"
    assert world.record(["user_id:u1", "anonymous_id:a2"]) == p1
    assert world.graph.profile_of(WS, "anonymous_id:a2") == p2


def test_declared_external_ids_are_capped_by_the_default_cap() -> None:
    crm = IdentityRules(external_id_types=["crm_id"], default_cap=1)
    world = World(crm)
    p1 = world.call({"userId": "u1", "traits": {"crm_id": "C-1"}})
    resolution = world.resolve(crm.identifiers_of({"userId": "u1", "traits": {"crm_id": "C-2"}}))
    assert resolution.profile_id == p1
    assert [(r.identifiers, r.reason) for r in resolution.refusals] == [
        (["crm_id:C-2"], "a profile holds at most 1 crm_id values"),
    ]  # fmt: skip


def test_a_blocked_email_merges_nothing() -> None:
    world = World()
    p1 = world.call({"anonymousId": "a1", "traits": {"email": "test@test.com"}})
    p2 = world.call({"anonymousId": "a2", "traits": {"email": "Test@Test.com"}})
    assert p1 != p2
    assert world.owners() == {"anonymous_id:a1": p1, "anonymous_id:a2": p2}
    assert world.resolve(rules.identifiers_of({"traits": {"email": "test@test.com"}})).anchor is None


def test_shared_value_limit_stops_a_value_seen_on_that_many_profiles_from_linking() -> None:
    world = World(IdentityRules(shared_value_limit=2))
    mum = world.call({"userId": "mum", "anonymousId": "tablet"})
    kid = world.call({"userId": "kid", "anonymousId": "tablet"})  # refused: user_id is unique
    assert kid != mum
    assert world.graph.carriers(WS, "anonymous_id:tablet") == 2

    grandma = world.call({"anonymousId": "phone", "traits": {"email": "grandma@x.io"}})
    idents = rules.identifiers_of({"anonymousId": "tablet", "traits": {"email": "grandma@x.io"}})
    assert idents == ["email:grandma@x.io", "anonymous_id:tablet"]
    resolution = world.resolve(idents)
    assert (resolution.profile_id, resolution.absorbed) == (grandma, [])
    [refusal] = resolution.refusals
    assert (refusal.identifiers, refusal.profile_id) == (["anonymous_id:tablet"], mum)
    assert refusal.reason == "anonymous_id:tablet was already seen on 2 profiles (shared_value_limit)"
    assert world.record(idents) == grandma
    assert world.graph.carriers(WS, "anonymous_id:tablet") == 3
    # The owner keeps receiving events by the shared value alone.
    assert world.resolve(["anonymous_id:tablet"]).profile_id == mum

    # Without the opt-in, the same history merges grandma's profile and mum's.
    unlimited = World()
    mum = unlimited.call({"userId": "mum", "anonymousId": "tablet"})
    unlimited.call({"userId": "kid", "anonymousId": "tablet"})
    grandma = unlimited.call({"anonymousId": "phone", "traits": {"email": "grandma@x.io"}})
    assert unlimited.resolve(idents).absorbed == [grandma]


def test_shared_value_limit_also_stops_a_shared_value_that_is_the_strongest_identifier() -> None:
    world = World(IdentityRules(shared_value_limit=2))
    ann = world.call({"userId": "ann", "traits": {"email": "family@x.io"}})
    world.call({"userId": "bob", "traits": {"email": "family@x.io"}})  # refused: user_id is unique
    assert world.graph.carriers(WS, "email:family@x.io") == 2
    device = world.call({"anonymousId": "a3"})
    resolution = world.resolve(rules.identifiers_of({"anonymousId": "a3", "traits": {"email": "family@x.io"}}))
    # The shared email decides nothing: the event stays with its device, and the link is refused.
    assert resolution.profile_id == device and resolution.anchor == "anonymous_id:a3"
    assert resolution.absorbed == [] and resolution.refusals[0].profile_id == ann
    assert "shared_value_limit" in resolution.refusals[0].reason


def test_shared_value_limit_below_the_limit_still_links() -> None:
    world = World(IdentityRules(shared_value_limit=3))
    ann = world.record(["user_id:ann", "email:family@x.io"])
    world.record(["user_id:bob", "email:family@x.io"])
    device = world.record(["anonymous_id:a3"])
    resolution = world.resolve(["anonymous_id:a3", "email:family@x.io"])
    assert (resolution.profile_id, resolution.absorbed, resolution.refusals) == (ann, [device], [])


def test_the_oldest_profile_survives_regardless_of_argument_order() -> None:
    graph = IdentityGraph()
    graph.created(WS, "late", ["user_id:u1"], created=200.0)
    graph.created(WS, "early", ["anonymous_id:a1"], created=100.0)
    for idents in (["user_id:u1", "anonymous_id:a1"], ["anonymous_id:a1", "user_id:u1"]):
        resolution = graph.resolve(WS, idents, rules)
        assert (resolution.profile_id, resolution.absorbed) == ("early", ["late"])
        assert resolution.anchor == idents[0]


def test_equal_creation_times_fall_back_to_the_profile_id() -> None:
    graph = IdentityGraph()
    graph.created(WS, "b", ["anonymous_id:a2"], created=100.0)
    graph.created(WS, "a", ["anonymous_id:a1"], created=100.0)
    assert graph.resolve(WS, ["anonymous_id:a2", "anonymous_id:a1"], rules).profile_id == "a"


def test_one_event_can_absorb_several_profiles() -> None:
    world = World()
    p1, p2, p3 = (world.record([f"anonymous_id:a{i}"]) for i in (1, 2, 3))
    resolution = world.resolve(["anonymous_id:a3", "anonymous_id:a2", "anonymous_id:a1", "anonymous_id:a4"])
    assert resolution.profile_id == p1
    assert sorted(resolution.absorbed) == sorted([p2, p3])
    assert resolution.new_identifiers == ["anonymous_id:a4"]
    assert world.record(["anonymous_id:a3", "anonymous_id:a2", "anonymous_id:a1", "anonymous_id:a4"]) == p1
    assert set(world.owners().values()) == {p1}
    assert set(world.graph.identifiers) == {p1}


def test_transitive_merges_end_on_the_oldest() -> None:
    world = World()
    p1 = world.record(["anonymous_id:a1"])
    p2 = world.record(["anonymous_id:a2"])
    p3 = world.record(["anonymous_id:a3"])
    assert world.record(["user_id:u3", "anonymous_id:a2"]) == p2
    assert world.record(["user_id:u3", "anonymous_id:a3"]) == p2  # p3 folds into p2
    assert world.record(["user_id:u3", "anonymous_id:a1"]) == p1  # p2 (with p3) folds into p1
    assert set(world.owners().values()) == {p1}
    assert set(world.graph.identifiers) == set(world.graph.age) == {p1}
    assert sorted(world.graph.identifiers[p1]) == [
        "anonymous_id:a1", "anonymous_id:a2", "anonymous_id:a3", "user_id:u3",
    ]  # fmt: skip
    assert world.graph.profile_of(WS, "anonymous_id:a3") == p1
    assert {p2, p3}.isdisjoint(world.graph.identifiers)


def test_workspaces_are_isolated() -> None:
    world = World()
    in_one = world.record(["user_id:u1", "anonymous_id:shared"], workspace="ws-1")
    in_two = world.record(["user_id:u1"], workspace="ws-2")
    assert in_one != in_two
    assert world.graph.profile_of("ws-1", "user_id:u1") == in_one
    assert world.graph.profile_of("ws-2", "user_id:u1") == in_two
    assert world.graph.profile_of("ws-3", "user_id:u1") is None
    resolution = world.resolve(["user_id:u1", "anonymous_id:a1"], workspace="ws-2")
    assert (resolution.profile_id, resolution.absorbed, resolution.refusals) == (in_two, [], [])
    # A refusal in one workspace does not count as a carrier in another.
    world.record(["user_id:u2", "anonymous_id:shared"], workspace="ws-1")
    assert world.graph.carriers("ws-1", "anonymous_id:shared") == 2
    assert world.graph.carriers("ws-2", "anonymous_id:shared") == 0


def test_a_profile_over_a_tightened_cap_still_receives_its_events() -> None:
    graph = IdentityGraph()
    graph.created(WS, "p1", ["user_id:u1", "email:a@x.io", "email:b@x.io", "email:c@x.io"], created=1.0)
    tightened = IdentityRules(caps={"user_id": 1, "email": 2})
    resolution = graph.resolve(WS, ["user_id:u1"], tightened)
    assert (resolution.profile_id, resolution.refusals) == ("p1", [])


def test_a_profile_keeps_its_events_when_a_type_it_holds_twice_becomes_unique() -> None:
    graph = IdentityGraph()
    graph.created(WS, "p1", ["email:a@x.io", "email:b@x.io", "anonymous_id:a1"], created=1.0)
    tightened = IdentityRules(unique_types=["user_id", "email"])
    assert graph.resolve(WS, ["email:a@x.io", "anonymous_id:a1"], tightened).profile_id == "p1"


def test_graph_split_moves_identifiers_to_a_new_profile() -> None:
    world = World()
    p1 = world.record(["user_id:u1", "anonymous_id:a1", "anonymous_id:a2"])
    world.graph.split(WS, p1, "p9", ["anonymous_id:a2"], created=50.0)
    assert world.graph.identifiers == {p1: ["user_id:u1", "anonymous_id:a1"], "p9": ["anonymous_id:a2"]}
    assert world.graph.profile_of(WS, "anonymous_id:a2") == "p9"
    assert world.graph.age["p9"] == (50.0, "p9")


# Computed traits ------------------------------------------------------------------------------

BOUNDARIES = [10.0, 20.0, 30.0, 40.0]


@pytest.mark.parametrize(
    ("value", "score"), [(0, 1), (10, 1), (10.5, 2), (20, 2), (25, 3), (30, 3), (40, 4), (40.01, 5), (1e9, 5)]
)
def test_quintile_higher_is_better(value: float, score: int) -> None:
    assert quintile(value, BOUNDARIES) == score


@pytest.mark.parametrize(("value", "score"), [(0, 5), (10, 5), (11, 4), (30, 3), (31, 2), (40, 2), (41, 1)])
def test_quintile_lower_is_better(value: float, score: int) -> None:
    assert quintile(value, BOUNDARIES, higher_is_better=False) == score


def test_quintile_without_or_with_few_boundaries() -> None:
    assert quintile(100, []) == 1
    assert quintile(100, [], higher_is_better=False) == 5
    assert quintile(100, [1, 2, 3, 4, 5, 6]) == 5  # clamped to 1..5
    assert quintile(0, [1, 2, 3, 4, 5, 6], higher_is_better=False) == 5
    assert quintile(100, [1, 2, 3, 4, 5, 6], higher_is_better=False) == 1


@pytest.mark.parametrize(
    ("r", "f", "m", "tier"),
    [
        (5, 5, 5, "champion"),
        (4, 4, 4, "champion"),
        (4, 4, 3, "loyal"),
        (3, 3, 1, "loyal"),
        (5, 2, 5, "new"),
        (4, 1, 1, "new"),
        (2, 3, 5, "at_risk"),
        (1, 5, 5, "at_risk"),
        (2, 2, 5, "hibernating"),
        (1, 1, 1, "hibernating"),
        (3, 2, 3, "needs_attention"),
        (3, 1, 5, "needs_attention"),
    ],
)
def test_rfm_tier(r: int, f: int, m: int, tier: str) -> None:
    assert rfm_tier(r, f, m) == tier


def test_rfm() -> None:
    boundaries = {"recency": [7.0, 30.0, 90.0, 180.0], "frequency": [1.0, 2.0, 4.0, 8.0],
                  "monetary": {"EUR": [50.0, 100.0, 500.0, 1000.0], "JPY": [5e3, 1e4, 5e4, 1e5]}}  # fmt: skip
    assert rfm(3, 10, {"EUR": 2000.0}, boundaries) == {"recency": 5, "frequency": 5, "monetary": 5, "tier": "champion"}
    assert rfm(200, 1, {"EUR": 10.0}, boundaries) == {"recency": 1, "frequency": 1, "monetary": 1, "tier": "hibernating"}
    assert rfm(30, 3, {"EUR": 100.0}, boundaries) == {"recency": 4, "frequency": 3, "monetary": 2, "tier": "loyal"}
    assert rfm(None, 3, {"EUR": 100.0}, boundaries) is None
    assert rfm(3, 0, {}, boundaries) is None
    assert rfm(3, 1, {"EUR": 10.0}, {}) == {"recency": 5, "frequency": 1, "monetary": 1, "tier": "new"}


def test_rfm_scores_money_within_its_currency() -> None:
    boundaries = {"monetary": {"EUR": [50.0, 100.0, 500.0, 1000.0], "JPY": [5e3, 1e4, 5e4, 1e5]}}
    # 2000 JPY is little in yen, 2000 EUR a lot in euros: the best of its currencies counts, never their sum.
    assert rfm(3, 1, {"JPY": 2000}, boundaries)["monetary"] == 1  # type: ignore[index]
    assert rfm(3, 1, {"JPY": 2000, "EUR": 2000}, boundaries)["monetary"] == 5  # type: ignore[index]


NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
THRESHOLDS = LifecycleThresholds()


def stage(
    types: set[str],
    orders: int = 0,
    days_ago: float | None = None,
    tracks: dict[str, int] | None = None,
    thresholds: LifecycleThresholds = THRESHOLDS,
) -> str:
    last = None if days_ago is None else NOW - timedelta(days=days_ago)
    return lifecycle_stage(types, orders, last, tracks or {}, NOW, thresholds)


def test_lifecycle_before_the_first_order() -> None:
    assert stage(set()) == "visitor"
    assert stage({"anonymous_id"}) == "visitor"
    assert stage({"anonymous_id", "crm_id"}) == "visitor"
    for contact in ("user_id", "email", "phone"):
        assert stage({"anonymous_id", contact}) == "lead"
    for intent in ("Checkout Started", "Product Added", "Lead Created", "Opportunity Stage Changed"):
        assert stage({"anonymous_id"}, tracks={intent: 1}) == "prospect"
    assert stage({"email"}, tracks={"Checkout Started": 0, "Viewed": 9}) == "lead"
    assert stage({"email"}, orders=2) == "lead"  # orders without an order time do not make a customer


def test_lifecycle_after_orders_with_default_thresholds() -> None:
    assert stage({"email"}, orders=1, days_ago=0) == "customer"
    assert stage({"email"}, orders=1, days_ago=59.9) == "customer"
    assert stage({"email"}, orders=2, days_ago=1) == "repeat_customer"
    assert stage({"email"}, orders=5, days_ago=59.9) == "repeat_customer"
    assert stage({"email"}, orders=1, days_ago=60) == "at_risk"
    assert stage({"email"}, orders=7, days_ago=179.9) == "at_risk"
    assert stage({"email"}, orders=1, days_ago=180) == "churned"
    assert stage(set(), orders=3, days_ago=400, tracks={"Checkout Started": 1}) == "churned"


def test_lifecycle_thresholds_are_configurable() -> None:
    custom = LifecycleThresholds(repeat_orders=3, at_risk_days=10, churned_days=20)
    assert stage({"email"}, orders=2, days_ago=1, thresholds=custom) == "customer"
    assert stage({"email"}, orders=3, days_ago=1, thresholds=custom) == "repeat_customer"
    assert stage({"email"}, orders=3, days_ago=10, thresholds=custom) == "at_risk"
    assert stage({"email"}, orders=3, days_ago=20, thresholds=custom) == "churned"
