"""Webhook mappings (domain/webhooks.py): the document, the path language, and payloads turned into calls.

Pure: the shipped mappings applied to the real payloads in tests/fixtures/webhooks,
and the calls they make checked by the intake's own validation (Segment spec and
the reserved CRM event schemas), so they reach the KPIs.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from domain.webhooks import (
    Mapping,
    MappingError,
    PayloadError,
    Unmapped,
    apply,
    load_document,
    mapping_json,
    parse_mapping,
    parse_path,
    resolve,
)
from ingest.intake import prepare

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "webhooks"
MAPPINGS = ROOT / "infra" / "webhook_mappings"
RECEIVED = datetime(2026, 3, 1, tzinfo=timezone.utc)


def shipped(source: str) -> Mapping:
    document, _ = load_document((MAPPINGS / f"{source}.yaml").read_bytes(), "application/yaml")
    return parse_mapping(document, source)


def fixture(source: str, name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / source / f"{name}.json").read_text())


def mapping(text: str) -> Mapping:
    document, _ = load_document(text.encode(), "application/yaml")
    return parse_mapping(document)


def refused(text: str, content_type: str = "application/yaml") -> MappingError:
    with pytest.raises(MappingError) as caught:
        document, _ = load_document(text.encode(), content_type)
        parse_mapping(document, "shop")
    return caught.value


def valid(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls as the intake stores them; fails with the intake's reasons if any is refused."""
    prepared = prepare(calls, RECEIVED, None, 32 * 1024)
    assert prepared.rejections == [], prepared.rejections
    return prepared.calls


# The shipped mappings on real payloads ----------------------------------------------------------


def test_a_stripe_charge_is_an_order_completed_in_units_with_an_upper_case_currency() -> None:
    mapped = apply(shipped("stripe"), fixture("stripe", "charge.succeeded"), "stripe")
    assert mapped.event_type == "charge.succeeded" and mapped.event_id == "evt_000000000000000000000000"
    [call] = valid(mapped.calls)
    assert call["type"] == "track" and call["event"] == "Order Completed"
    assert call["messageId"] == "stripe:evt_000000000000000000000000:Order Completed"
    assert call["properties"]["revenue"] == 20 and call["properties"]["currency"] == "USD"
    assert call["properties"]["order_id"] == "ch_000000000000000000000000"
    assert call["anonymousId"] == "stripe:ch_000000000000000000000000"  # a guest charge: no Stripe customer
    assert call["timestamp"] == "2022-03-26T18:40:32.000000Z"  # the event's `created`, unix seconds
    assert call["context"]["source"] == "stripe"
    assert call["context"]["webhook"] == {"source": "stripe", "event_id": "evt_000000000000000000000000",
                                          "event_type": "charge.succeeded"}  # fmt: skip


def test_a_stripe_refund_is_the_amount_of_this_refund_not_the_running_total() -> None:
    payload = fixture("stripe", "charge.refunded")
    [call] = valid(apply(shipped("stripe"), payload, "stripe").calls)
    assert call["event"] == "Order Refunded" and call["properties"]["order_id"] == "ch_000000000000000000000000"
    assert call["properties"]["revenue"] == 1 and call["properties"]["currency"] == "USD"
    second = copy.deepcopy(payload)  # a second partial refund: 100 refunded before, 250 now
    second["data"]["object"]["amount_refunded"] = 250
    second["data"]["previous_attributes"]["amount_refunded"] = 100
    assert apply(shipped("stripe"), second, "stripe").calls[0]["properties"]["revenue"] == 1.5


def test_a_zero_decimal_currency_is_not_divided() -> None:
    payload = fixture("stripe", "charge.succeeded")
    payload["data"]["object"] |= {"amount": 1500, "currency": "jpy"}
    [call] = valid(apply(shipped("stripe"), payload, "stripe").calls)
    assert call["properties"]["revenue"] == 1500 and call["properties"]["currency"] == "JPY"


def test_a_checkout_session_identifies_the_stripe_customer_by_email() -> None:
    [call] = valid(apply(shipped("stripe"), fixture("stripe", "checkout.session.completed"), "stripe").calls)
    assert call["type"] == "identify" and call["messageId"] == "stripe:evt_00000000000000:identify"
    assert call["anonymousId"] == "stripe:cus_00000000000000"
    assert call["traits"] == {"email": "example@example.com"}  # name, phone, address are null: left out


def test_a_customer_event_shares_its_anchor_with_the_customers_charges() -> None:
    [call] = valid(apply(shipped("stripe"), fixture("stripe", "customer.created"), "stripe").calls)
    assert call["type"] == "identify" and call["anonymousId"] == "stripe:cus_00000000000000"
    charge = fixture("stripe", "charge.succeeded")
    charge["data"]["object"] |= {"customer": "cus_00000000000000", "receipt_email": "Ann@Example.com"}
    [order] = valid(apply(shipped("stripe"), charge, "stripe").calls)
    assert order["anonymousId"] == "stripe:cus_00000000000000"
    assert order["context"]["traits"] == {"email": "Ann@Example.com"}  # identity lower-cases it (domain/identity.py)


def test_an_event_type_the_stripe_mapping_does_not_list_is_unmapped() -> None:
    with pytest.raises(Unmapped) as caught:
        apply(shipped("stripe"), fixture("stripe", "balance.available"), "stripe")
    assert caught.value.event_type == "balance.available"
    assert "'balance.available' is not in the stripe mapping" in caught.value.reason
    assert "charge.succeeded" in caught.value.reason  # says what it does map


def test_a_charge_without_its_currency_is_a_payload_error_naming_the_field() -> None:
    payload = fixture("stripe", "charge.succeeded")
    del payload["data"]["object"]["currency"]
    with pytest.raises(PayloadError) as caught:
        apply(shipped("stripe"), payload, "stripe")
    assert caught.value.field == "data.object.currency"
    assert "minor_units needs the currency" in caught.value.reason and "properties.revenue" in caught.value.reason


def test_a_typeform_response_is_an_identify_and_a_feedback_submitted_with_csat() -> None:
    mapped = apply(shipped("typeform"), fixture("typeform", "form_response"), "typeform")
    identify, feedback = valid(mapped.calls)
    assert identify["type"] == "identify" and identify["userId"] == "abc123456"
    assert identify["traits"] == {"email": "laura@example.com"}
    assert feedback["event"] == "Feedback Submitted"
    assert feedback["messageId"] == "typeform:LtWXD3crgy:Feedback Submitted"
    assert feedback["properties"]["csat"] == 3 and "nps" not in feedback["properties"]  # the form has no NPS question
    assert feedback["properties"]["comment"].startswith("It's cold right now!")
    assert feedback["context"]["traits"] == {"email": "laura@example.com"}
    assert feedback["timestamp"] == "2018-01-18T18:17:02.000000Z"


def test_a_typeform_nps_answer_becomes_nps_and_a_form_without_feedback_makes_no_track() -> None:
    payload = fixture("typeform", "form_response")
    payload["form_response"]["answers"].append({"type": "number", "number": 9, "field": {"id": "x", "type": "nps"}})
    feedback = valid(apply(shipped("typeform"), payload, "typeform").calls)[1]
    assert feedback["properties"]["nps"] == 9
    plain = fixture("typeform", "form_response")
    plain["form_response"]["answers"] = [a for a in plain["form_response"]["answers"] if a["type"] == "email"]
    [identify] = apply(shipped("typeform"), plain, "typeform").calls
    assert identify["type"] == "identify"


def test_a_redelivery_makes_the_same_message_ids() -> None:
    payload = fixture("typeform", "form_response")
    first = apply(shipped("typeform"), payload, "typeform").calls
    again = apply(shipped("typeform"), json.loads(json.dumps(payload)), "typeform").calls
    assert [c["messageId"] for c in first] == [c["messageId"] for c in again]


def test_a_payload_without_an_event_id_is_named_by_its_content() -> None:
    m = mapping("events: {'*': {event: Signed Up, anonymous_id: id}}")
    one = apply(m, {"id": "a1", "plan": "pro"}, "shop").calls[0]["messageId"]
    assert one == apply(m, {"plan": "pro", "id": "a1"}, "shop").calls[0]["messageId"]  # key order does not matter
    assert one != apply(m, {"id": "a1", "plan": "free"}, "shop").calls[0]["messageId"]
    assert one.startswith("shop:sha256:")


# The path language --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data.object.id", "ch_1"),
        ("data.items[1].sku", "B"),
        ("data.items.0.sku", "A"),
        ("data.items[-1].sku", "B"),
        ('data.metadata["Order ID"]', "ORD-7"),
        ("answers[type=email].email", "ann@example.com"),
        ("answers[field.ref=nps].number", 9),
        ("answers[field.ref=missing].number", None),
        ("data.object.nothing", None),
        ("data.object.id.deeper", None),
    ],
)
def test_paths_reach_keys_indexes_quoted_keys_and_filtered_elements(path: str, expected: Any) -> None:
    payload = {
        "data": {"object": {"id": "ch_1"}, "items": [{"sku": "A"}, {"sku": "B"}], "metadata": {"Order ID": "ORD-7"}},
        "answers": [{"type": "text", "text": "hi"}, {"type": "email", "email": "ann@example.com"},
                    {"type": "number", "number": 9, "field": {"ref": "nps"}}],
    }  # fmt: skip
    found = resolve(payload, parse_path(path))
    assert (None if found is resolve({}, parse_path("x")) else found) == expected


@pytest.mark.parametrize(
    ("path", "reason"),
    [("a..b", "empty key"), ("a.", "ends with '.'"), ("a[0", "is not closed"), ("a]b", "closes nothing"),
     ("a[x y]", "neither an index"), ("", "cannot be empty")],
)  # fmt: skip
def test_a_malformed_path_says_what_is_wrong(path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace(".", r"\.")):
        parse_path(path)


# Options ------------------------------------------------------------------------------------------


def test_conversions_lookup_prefix_default_and_constants() -> None:
    m = mapping("""
event_type: kind
events:
  "*":
    event: {path: kind, lookup: {charge.refunded: Order Refunded, charge.succeeded: Order Completed}}
    user_id: {path: who, prefix: "crm:", convert: trim}
    timestamp: {path: at_ms, convert: unix_ms}
    properties:
      order_id: {path: id, convert: string}
      revenue: {path: cents, convert: cents}
      currency: {path: cur, convert: upper}
      quantity: {path: qty, convert: integer}
      paid: {path: paid, convert: boolean}
      tier: {path: tier, lookup: {g: gold}, default: standard}
      channel: {value: crm}
      placed: {path: placed, convert: iso}
      fixed: 3
""")
    payload = {"kind": "charge.succeeded", "who": " 42 ", "at_ms": 1767225600000, "id": 7, "cents": "1999",
               "cur": "eur", "qty": "2", "paid": "yes", "tier": "x", "placed": "2026-01-01T01:00:00+01:00"}  # fmt: skip
    [call] = apply(m, payload, "crm").calls
    valid([call])
    assert call["event"] == "Order Completed" and call["userId"] == "crm:42"
    assert call["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert call["properties"] == {"order_id": "7", "revenue": 19.99, "currency": "EUR", "quantity": 2, "paid": True,
                                  "tier": "standard", "channel": "crm", "placed": "2026-01-01T00:00:00.000Z",
                                  "fixed": 3}  # fmt: skip
    with pytest.raises(Unmapped, match="lookup table"):  # a kind the lookup does not know: no call
        apply(m, payload | {"kind": "charge.pending"}, "crm")


def test_when_conditions_pick_the_calls_and_several_paths_take_the_first_present() -> None:
    m = mapping("""
event_type: type
identity: {user_id: [customer.id, customer_id]}
events:
  ticket.updated:
    - event: Ticket Resolved
      when: {path: status, in: [solved, closed]}
      properties: {ticket_id: {path: id, convert: string}}
    - event: Ticket Assigned
      when: [{path: assignee, exists: true}, {path: status, not_equals: solved}]
      properties: {ticket_id: {path: id, convert: string}, assignee: assignee}
    - type: identify
      when: {any: [{path: email, exists: true}, {path: phone, exists: true}]}
      email: email
""")
    solved = apply(m, {"type": "ticket.updated", "id": 5, "status": "solved", "customer_id": "u1"}, "desk").calls
    assert [c["event"] for c in solved] == ["Ticket Resolved"] and solved[0]["userId"] == "u1"
    both = apply(m, {"type": "ticket.updated", "id": 5, "status": "open", "assignee": "bo",
                     "customer": {"id": "u2"}, "email": "u2@example.com"}, "desk").calls  # fmt: skip
    assert [c.get("event", c["type"]) for c in both] == ["Ticket Assigned", "identify"]
    assert both[1]["traits"] == {"email": "u2@example.com"} and both[0]["userId"] == "u2"
    with pytest.raises(Unmapped, match="no call of 'ticket.updated' applies"):
        apply(m, {"type": "ticket.updated", "id": 5, "status": "pending"}, "desk")


def test_a_required_field_and_a_value_that_does_not_convert_are_payload_errors() -> None:
    m = mapping("events: {'*': {event: Paid, anonymous_id: id, properties: {revenue: {path: amount, convert: cents, "
                "required: true}}}}")  # fmt: skip
    with pytest.raises(PayloadError) as missing:
        apply(m, {"id": "a"}, "shop")
    assert missing.value.field == "amount" and "requires it" in missing.value.reason
    with pytest.raises(PayloadError) as wrong:
        apply(m, {"id": "a", "amount": "ten"}, "shop")
    assert wrong.value.field == "amount" and "'ten' is not a number" in wrong.value.reason
    with pytest.raises(PayloadError, match="a webhook payload is a JSON object"):
        apply(m, ["not", "an", "object"], "shop")


def test_a_numeric_timestamp_without_a_conversion_is_refused_with_the_fix() -> None:
    m = mapping("timestamp: created\nevents: {'*': {event: Paid, anonymous_id: id}}")
    with pytest.raises(PayloadError, match="add convert: unix"):
        apply(m, {"id": "a", "created": 1648320032}, "shop")


def test_identify_group_and_alias_calls_put_traits_where_the_spec_wants_them() -> None:
    m = mapping("""
events:
  "*":
    - {type: identify, user_id: uid, email: mail, traits: {plan: plan, address.city: city}}
    - {type: group, user_id: uid, email: mail, group_id: org, traits: {name: org_name}}
    - {type: alias, user_id: uid, previous_id: old}
    - {type: page, anonymous_id: uid, name: Pricing, properties: {path: page}}
""")
    payload = {"uid": "u1", "mail": "a@example.com", "plan": "pro", "city": "Oslo", "org": "o1", "org_name": "Acme",
               "old": "anon-1", "page": "/pricing"}  # fmt: skip
    identify, group, alias, page = valid(apply(m, payload, "crm").calls)
    assert identify["traits"] == {"email": "a@example.com", "plan": "pro", "address": {"city": "Oslo"}}
    assert group["traits"] == {"name": "Acme"} and group["context"]["traits"] == {"email": "a@example.com"}
    assert group["groupId"] == "o1" and alias["previousId"] == "anon-1" and alias["userId"] == "u1"
    assert page["name"] == "Pricing" and page["properties"] == {"path": "/pricing"}
    assert len({c["messageId"] for c in (identify, group, alias, page)}) == 4


def test_the_stored_form_validates_again_and_yaml_keeps_yes_no_and_dates_as_text() -> None:
    m = mapping("""
event_type: kind
events:
  yes: {event: Consent Changed, anonymous_id: id, properties: {answer: {value: no}, on: {value: 2026-01-01}}}
""")
    assert set(m.events) == {"yes"}
    again = Mapping.model_validate(mapping_json(m))
    assert again == m
    [call] = apply(again, {"kind": "yes", "id": "a"}, "x").calls
    assert call["properties"] == {"answer": "no", "on": "2026-01-01"}


# Refused mappings ---------------------------------------------------------------------------------


def test_invalid_yaml_is_unreadable_with_line_and_column() -> None:
    error = refused("events:\n  charge.succeeded:\n    event: [Order Completed\n")
    assert error.code == "unreadable_mapping"
    [(path, reason)] = error.errors
    assert path == "(body)" and "neither JSON nor YAML" in reason and "line 4" in reason


def test_invalid_json_with_a_json_content_type_says_so() -> None:
    error = refused('{"events": }', "application/json")
    assert error.code == "unreadable_mapping" and "not JSON" in error.errors[0][1]


def test_a_duplicate_key_is_refused_instead_of_silently_replacing_the_first() -> None:
    error = refused("event_type: type\nevents:\n  a: {event: A, anonymous_id: id}\n  a: {event: B, anonymous_id: id}\n")
    assert error.code == "unreadable_mapping" and "duplicate key 'a'" in error.errors[0][1]


def test_an_unknown_option_is_named_with_its_path_and_a_suggestion() -> None:
    error = refused("""
event_type: type
events:
  charge.succeeded:
    event: Order Completed
    anonymous_id: data.object.customer
    properties:
      revenue: {path: data.object.amount, convrt: cents}
""")
    assert error.code == "invalid_mapping"
    [(path, reason)] = error.errors
    assert path == 'events["charge.succeeded"][0].properties.revenue'
    assert "unknown option 'convrt' (did you mean 'convert'?)" in reason


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ("event_type: type\nevents: {a: {event: A, properties: {x: {path: a, convert: cent}}}}",
         "events.a[0].properties.x.convert", "unknown conversion 'cent' (did you mean 'cents'?)"),
        ("event_type: type\nevents: {a: {event: A, properties: {x: {path: a, convert: minor_units}}}}",
         "events.a[0].properties.x", "minor_units needs currency"),
        ("event_type: type\nevents: {a: {type: track}}", "events.a[0]", "a track call needs event"),
        ("event_type: type\nevents: {a: {type: identify, properties: {x: y}}}", "events.a[0]", "(use traits)"),
        ("event_type: type\nevents: {a: {type: tracks, event: A}}", "events.a[0].type", "Input should be"),
        ("event_type: type\nevents: {a: {event: A, user_id: 'a..b'}}", "events.a[0].user_id.path", "empty key"),
        ("event_type: type\nevents: {a: {event: A, when: {path: s}}}", "events.a[0].when[0]", "one test"),
        ("events: {a: {event: A}}", "(mapping)", "say where the type is"),
        ("event_type: type\nevents: {}", "events", "at least one event type"),
        ("event_type: type", "events", "required"),
        ("source: other\nevents: {'*': {event: A}}", "source", "the URL says 'shop'"),
        ("- a\n- b", "(mapping)", "a mapping is an object"),
    ],
)  # fmt: skip
def test_an_invalid_mapping_lists_the_path_and_reason(text: str, path: str, reason: str) -> None:
    error = refused(text)
    assert error.code == "invalid_mapping"
    assert any(p == path and reason in r for p, r in error.errors), error.errors
