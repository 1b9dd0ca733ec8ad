"""The consent state logic (domain/consent.py), the purpose in the rule language (domain/tags.py) and at ingest
(domain/crm.py), and the causes the tag engine gives consent changes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from domain.consent import (
    BUILT_IN, Change, ConsentError, Defaults, change_of, defaults_as_of, document, latest, parse_defaults,
)  # fmt: skip
from domain.crm import ValidationError, validate_properties
from domain.tags import (
    AndNode, ConsentCondition, Definitions, RuleDefinition, RuleError, consent_purposes, parse_definition, parse_rule,
    purpose_of, split_purpose,
)  # fmt: skip
from streams.tags import TagDef, _entered, _exited

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def change(purpose: str, granted: bool, hours: float, position: int) -> Change:
    made = change_of(purpose, granted, at(hours), position, f"e{position}")
    assert made is not None
    return made


# The decision in force ------------------------------------------------------------------------------


def test_the_latest_decision_by_event_time_is_in_force_whatever_order_it_arrived_in() -> None:
    grant = change("marketing", True, 0, 1)
    withdraw = change("marketing", False, 5, 2)
    late_grant = change("marketing", True, 3, 3)  # recorded last, decided before the withdrawal
    state = latest([grant, withdraw, late_grant])
    assert state["marketing"].granted is False and state["marketing"].position == 2
    assert latest([late_grant, withdraw, grant]) == state


def test_decisions_at_the_same_time_are_ordered_by_log_position() -> None:
    first, second = change("analytics", False, 1, 7), change("analytics", True, 1, 9)
    assert latest([second, first])["analytics"].granted is True


def test_each_purpose_has_its_own_state() -> None:
    state = latest([change("marketing", True, 0, 1), change("analytics", False, 1, 2)])
    assert {p: c.granted for p, c in state.items()} == {"marketing": True, "analytics": False}


def test_stored_values_that_are_no_decision_are_left_out_and_purposes_compare_in_lower_case() -> None:
    assert change_of(" Marketing", True, T0, 1, "e").purpose == "marketing"  # type: ignore[union-attr]
    assert change_of("marketing", "yes", T0, 1, "e") is None
    assert change_of("not a purpose", True, T0, 1, "e") is None
    assert change_of(None, True, T0, 1, "e") is None


def test_a_change_as_json_names_when_and_from_which_event() -> None:
    c = change_of("marketing", False, at(1), 4, "ev-1", "preference-centre", at(2))
    assert c is not None and c.to_json() == {
        "purpose": "marketing", "granted": False, "at": "2026-03-01T01:00:00.000Z",
        "received_at": "2026-03-01T02:00:00.000Z", "event_id": "ev-1", "position": 4, "channel": "preference-centre",
    }  # fmt: skip


# Defaults ----------------------------------------------------------------------------------------------


def test_the_built_in_defaults_are_opt_in_but_for_analytics() -> None:
    built_in = Defaults(BUILT_IN)
    assert built_in.granted("analytics") is True
    assert not any(built_in.granted(p) for p in ("marketing", "personalisation", "surveys"))


def test_defaults_fill_other_purposes_with_denied_and_name_each_bad_entry() -> None:
    defaults = parse_defaults({"Marketing": "granted"})
    assert defaults.to_json() == {"*": "denied", "marketing": "granted"} and not defaults.granted("analytics")
    assert parse_defaults({"*": "granted"}).granted("anything") is True
    with pytest.raises(ConsentError) as caught:
        parse_defaults({"marketing": "yes", "two words": "granted", "analytics": "granted"})
    assert caught.value.code == "invalid_consent_defaults"
    assert [e["field"] for e in caught.value.errors] == ["defaults.marketing", "defaults.two words"]
    for empty in ({}, None, ["marketing"]):
        with pytest.raises(ConsentError):
            parse_defaults(empty)


def test_the_document_shows_each_named_purpose_with_its_source() -> None:
    explicit = {"marketing": change("marketing", True, 1, 3).to_json(), "surveys": change("surveys", False, 2, 4).to_json()}
    doc = document(explicit, Defaults(BUILT_IN))
    assert list(doc) == ["analytics", "marketing", "personalisation", "surveys"]
    assert doc["analytics"] == {"granted": True, "source": "default", "at": None, "event_id": None}
    assert doc["marketing"] == {"granted": True, "source": "event", "at": "2026-03-01T01:00:00.000Z", "event_id": "e3"}
    assert doc["surveys"]["granted"] is False and doc["surveys"]["source"] == "event"


def test_defaults_as_of_a_time_are_the_version_recorded_by_then() -> None:
    definitions = Definitions()
    assert defaults_as_of(definitions, "ws") == Defaults(BUILT_IN)
    policy = RuleDefinition("ws", "consent", "defaults", "consent defaults", "", {"defaults": {"*": "denied"}})
    policy.change("ws", "consent", "defaults", 2, "consent defaults", "",
                  {"defaults": {"*": "denied", "marketing": "granted"}})  # fmt: skip
    events = policy.collect_events()
    for e in events:
        definitions.apply(e)
    assert defaults_as_of(definitions, "ws").version == 2 and defaults_as_of(definitions, "ws").granted("marketing")
    first = defaults_as_of(definitions, "ws", events[0].timestamp)
    assert first.version == 1 and not first.granted("marketing")
    assert defaults_as_of(definitions, "ws", events[0].timestamp - timedelta(seconds=1)) == Defaults(BUILT_IN)
    assert defaults_as_of(definitions, "other") == Defaults(BUILT_IN)


# The purpose in the rule language and at ingest --------------------------------------------------------


def test_a_purpose_is_stored_as_the_rules_first_condition_and_reads_back() -> None:
    d = parse_definition({"id": "mail-vips", "purpose": "marketing", "rule": {"tag": "vip"}})
    stored = d.stored_rule()
    assert stored == {"and": [{"consent": "marketing"}, {"tag": "vip"}]}
    assert split_purpose(stored) == ("marketing", {"tag": "vip"})
    assert purpose_of(parse_rule(stored)) == "marketing" and consent_purposes(parse_rule(stored)) == {"marketing"}
    plain = parse_definition({"id": "vips", "rule": {"and": [{"tag": "vip"}, {"consent": "marketing"}]}})
    assert split_purpose(plain.stored_rule()) == (None, plain.stored_rule())  # consent, but not first: no purpose
    assert purpose_of(parse_rule(plain.stored_rule())) is None


def test_consent_is_a_condition_of_its_own() -> None:
    rule = parse_rule({"or": [{"consent": "surveys"}, {"not": {"consent": "marketing"}}]})
    assert consent_purposes(rule) == {"surveys", "marketing"}
    assert isinstance(parse_rule({"and": [{"consent": "a"}, {"consent": "b"}]}), AndNode)
    assert ConsentCondition(consent="x").consent == "x"


@pytest.mark.parametrize("data, path", [
    ({"id": "t", "purpose": "Mail Me", "rule": {"tag": "vip"}}, "purpose"),
    ({"id": "t", "rule": {"consent": "no spaces"}}, "rule.consent"),
    ({"id": "t", "rule": {"and": [{"consent": 3}]}}, "rule.and[0].consent"),
])  # fmt: skip
def test_a_bad_purpose_is_refused_with_its_path(data: dict[str, object], path: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_definition(data)
    assert caught.value.errors[0][0] == path


def test_ingest_stores_the_purpose_in_lower_case_and_refuses_what_is_not_one() -> None:
    assert validate_properties("Consent Changed", {"purpose": "Marketing ", "granted": False}) == {
        "purpose": "marketing", "granted": False}  # fmt: skip
    for bad in ({"purpose": "e-mail marketing!", "granted": True}, {"purpose": 1, "granted": True},
                {"purpose": "marketing", "granted": "yes"}, {"granted": True}):  # fmt: skip
        with pytest.raises(ValidationError):
            validate_properties("Consent Changed", bad)


# The causes the engine gives -----------------------------------------------------------------------------


def test_consent_names_the_cause_of_changes_it_makes() -> None:
    mail = TagDef("mail", "Mail", 1, parse_rule({"and": [{"consent": "marketing"}, {"tag": "vip"}]}))
    plain = TagDef("vip", "VIP", 1, parse_rule({"tag": "vip"}))
    assert _exited(mail, {"marketing": "event"}, "event", consented=False) == (
        "consent", "consent for marketing withdrawn")  # fmt: skip
    assert _exited(mail, {"marketing": "default"}, "consent", consented=False) == (
        "consent", "workspace default for marketing: denied")  # fmt: skip
    assert _exited(mail, {}, "merge", consented=False) == ("consent", "no consent for marketing")
    assert _exited(mail, {}, "time", consented=True) == ("time", "")  # the rule stopped holding
    assert _exited(mail, {}, "rule", consented=False) == ("rule", "")  # a changed rule names its version
    assert _exited(plain, {"marketing": "event"}, "event", consented=True) == ("event", "")
    assert _entered(mail, {"marketing": "event"}, "event") == ("consent", "consent for marketing granted")
    assert _entered(mail, {"marketing": "default"}, "consent") == ("consent", "workspace default for marketing: granted")
    assert _entered(mail, {}, "event") == ("event", "")
    assert _entered(mail, {"marketing": "event"}, "rule") == ("rule", "")
