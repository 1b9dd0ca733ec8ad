"""Query-side inputs that used to get a 500: each now gets an answer or a 4xx that says what is allowed.

Times anywhere in the read API must fall in 1900-01-01T00:00:00Z to
2299-12-31T23:59:59.999Z (the range of ClickHouse DateTime64); bodies parsed by
Python's JSON parser may hold integers beyond 64 bits, NaN and lone surrogates,
which neither the log nor a ClickHouse query can carry; YAML rule documents
may nest too deeply or hold values that are not JSON.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from domain.tags import Definition, save_definition
from api.responses import json_response
from tests.conftest import Running

WINDOW = "1900-01-01T00:00:00Z to 2299-12-31T23:59:59.999Z"
OUTSIDE = [
    "0999-01-01T00:00:00Z",  # before year 1000: ClickHouse could not parse the parameter
    "0001-01-01",
    "0001-01-01T00:00:00+05:00",  # no UTC time at all
    "9999-12-31T23:59:59-05:00",
    "1899-12-31T23:59:59Z",
    "2300-01-01T00:00:00Z",
]
JSON = {"Content-Type": "application/json"}
YAML = {"Content-Type": "application/yaml"}


@pytest.fixture
def crm(running: Running) -> Running:
    batch = [
        {"type": "identify", "userId": "u1", "traits": {"email": "ada@example.com", "plan": "pro"}},
        {"type": "track", "userId": "u1", "event": "Order Completed",
         "properties": {"order_id": "o1", "revenue": 10, "currency": "EUR"}},
    ]  # fmt: skip
    assert running.send("/v1/batch", {"batch": batch}).status_code == 200
    running.wait_caught_up()
    return running


def read(running: Running, path: str, **params: Any) -> Any:
    return running.http.get(path, params=params, headers=running.read_headers)


def post_read(running: Running, path: str, body: Any = None, content: bytes | None = None, **kw: Any) -> Any:
    if content is not None:
        return running.http.post(path, content=content, headers={**running.read_headers, **kw.pop("headers", JSON)})
    return running.http.post(path, json=body, headers=running.read_headers)


def admin(running: Running, method: str, path: str, content: bytes, headers: dict[str, str] = JSON) -> Any:
    return running.http.request(method, path, content=content, headers={**running.admin_headers, **headers})


def assert_refused(response: Any, status: int, *phrases: str) -> None:
    """`status`, and every phrase somewhere in the error body (its message or a field's reason)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert not body.get("success") and "profile_id" not in body
    for phrase in phrases:
        assert phrase in response.text, (phrase, body)


# Time parameters ----------------------------------------------------------------------------


def test_a_time_parameter_outside_the_window_is_400(crm: Running) -> None:
    for path, name in [
        ("/v1/profiles/user_id:u1", "as_of"),
        ("/v1/profiles/user_id:u1/events", "as_of"),
        ("/v1/profiles/user_id:u1/events", "from"),
        ("/v1/profiles/user_id:u1/events", "to"),
        ("/v1/kpis/revenue", "from"),
        ("/v1/kpis/revenue", "to"),
        ("/v1/cohorts/retention", "to"),
    ]:
        for value in OUTSIDE:
            assert_refused(read(crm, path, **{name: value}), 400, f"{name}={value!r}", WINDOW)


def test_the_edges_of_the_window_are_answered(crm: Running) -> None:
    for value in ["1900-01-01T00:00:00Z", "2299-12-31T23:59:59.999Z", "2299-12-31T18:00:00-05:00"]:
        assert read(crm, "/v1/profiles/user_id:u1/events", **{"from": value}).status_code == 200
        assert read(crm, "/v1/profiles/user_id:u1/events", to=value).status_code == 200
        assert read(crm, "/v1/profiles/user_id:u1", as_of=value).status_code in (200, 404)  # 404: not yet born in 1900
        assert read(crm, "/v1/kpis/revenue", to=value).status_code == 200
    assert read(crm, "/v1/profiles/user_id:u1", as_of="2299-12-31T23:59:59Z").json()["traits"]["plan"] == "pro"


def test_a_cursor_with_a_time_outside_the_window_is_400(crm: Running) -> None:
    for stamp in ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "0999-01-01T00:00:00Z", "2300-01-01"]:
        cursor = base64.urlsafe_b64encode(f"{stamp}|00000000-0000-0000-0000-000000000000".encode()).decode()
        response = read(crm, "/v1/profiles/user_id:u1/events", cursor=cursor)
        assert_refused(response, 400, "cursor is not one this API returned")


# Funnels ------------------------------------------------------------------------------------


def funnel(**fields: Any) -> dict[str, Any]:
    return {"steps": [{"event": "Order Completed"}, {"event": "Order Refunded"}], "within": "7d",
            "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", **fields}  # fmt: skip


def test_a_funnel_time_outside_the_window_is_422_naming_the_field(crm: Running) -> None:
    for value in OUTSIDE:
        for field, body in [("from", funnel(**{"from": value})), ("to", funnel(**{"from": "1900-01-01", "to": value}))]:
            response = post_read(crm, "/v1/funnels", body)
            assert_refused(response, 422, WINDOW)
            assert [e["field"] for e in response.json()["errors"]] == [field], response.text


def test_a_funnel_window_longer_than_3660_days_is_422(crm: Running) -> None:
    for within in ["99999999999999999999w", "1" + "0" * 400 + "d", "3661d", "9223372036854775808s"]:
        response = post_read(crm, "/v1/funnels", funnel(within=within))
        assert_refused(response, 422, "within", f"{within!r} is longer than the longest window, 3660d")


def test_a_funnel_at_the_edges_is_answered(crm: Running) -> None:
    body = funnel(**{"from": "1900-01-01T00:00:00Z", "to": "2299-12-31T23:59:59Z", "within": "3660d"})
    response = post_read(crm, "/v1/funnels", body)
    assert response.status_code == 200, response.text
    assert response.json()["entered"] == 1


def test_a_funnel_step_a_query_cannot_carry_is_422(crm: Running) -> None:
    for raw, field, reason in [
        (b'"where": {"n": 123456789012345678901234567890}', "where", "n: the integer is outside"),
        (b'"where": {"n": -9223372036854775809}', "where", "n: the integer is outside"),
        (b'"where": {"n": 18446744073709551616}', "where", "n: the integer is outside"),
        (b'"where": {"n": NaN}', "where", "n: nan is not a number JSON can carry"),
        (b'"where": {"n": -Infinity}', "where", "n: -inf is not a number JSON can carry"),
        (b'"where": {"\\ud800": "x"}', "where", "lone surrogate"),
        (b'"where": {"n": "\\udfff"}', "where", "n: not valid Unicode text (a lone surrogate)"),
        (b'"event": "\\ud800"', "event", "not valid Unicode text (a lone surrogate)"),
    ]:
        content = (b'{"steps": [{"type": "track", ' + raw + b'}, {"event": "b"}], '
                   b'"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}')  # fmt: skip
        response = post_read(crm, "/v1/funnels", content=content)
        assert_refused(response, 422, reason)
        assert [e["field"] for e in response.json()["errors"]] == [f"steps.0.{field}"], response.text


def test_the_largest_integers_ingest_keeps_are_compared(crm: Running) -> None:
    for n in (-(2**63), 2**64 - 1):
        body = {**funnel(), "steps": [{"event": "Order Completed", "where": {"n": n}}, {"event": "b"}]}
        assert post_read(crm, "/v1/funnels", body).status_code == 200


# Segment rules ------------------------------------------------------------------------------


EARLY = [v for v in OUTSIDE if v < "1900"]
LATE = [v for v in OUTSIDE if v > "2299"]


RULES_OUTSIDE = [
    *[({"event": "Order Completed", "between": [v, "2299-12-31T23:59:59Z"]}, "rule.between") for v in EARLY],
    *[({"not": {"event": "Order Completed", "between": ["1900-01-01T00:00:00Z", v]}}, "rule.not.between")
      for v in LATE],
    *[({"computed": "last_seen", "op": ">", "value": v}, "rule") for v in OUTSIDE],
    *[({"or": [{"tag": "x"}, {"computed": "first_seen", "op": "between", "value": ["1900-01-01", v]}]}, "rule.or[1]")
      for v in LATE],
]  # fmt: skip


def test_segment_rule_times_outside_the_window_are_400_with_their_path(crm: Running) -> None:
    for rule, path in RULES_OUTSIDE:
        response = post_read(crm, "/v1/segments/query", {"rule": rule})
        assert_refused(response, 400, "invalid segment query", WINDOW)
        assert all(e["path"].startswith(path) for e in response.json()["errors"]), response.text


def test_a_tag_with_a_time_outside_the_window_is_refused_and_not_recorded(crm: Running) -> None:
    body = b'{"id": "old", "rule": {"event": "Order Completed", "between": ["0999-01-01T00:00:00Z", "2026-01-01"]}}'
    assert_refused(admin(crm, "POST", "/v1/tags", body), 400, "invalid tag", "rule.between[0]", WINDOW)
    assert_refused(admin(crm, "PUT", "/v1/segments/old", body), 400, "invalid segment", "rule.between[0]", WINDOW)
    assert read(crm, "/v1/tags/old").status_code == 404


def test_a_rule_recorded_before_the_window_was_checked_still_compiles(crm: Running) -> None:
    """Rules are read back from the log: one with a year-999 bound must not stop the tag processor or a read."""
    platform = crm.platform
    definition = Definition.model_validate(
        {"id": "legacy", "rule": {"event": "Order Completed", "between": ["0999-01-01T00:00:00Z", "2300-01-01"]}}
    )
    assert crm.http.portal is not None
    crm.http.portal.call(
        platform.resolver.run, lambda: save_definition(platform.app, platform.workspace_id, "tag", definition)
    )
    crm.wait_caught_up()
    deadline = time.monotonic() + 30
    while (tag := read(crm, "/v1/tags/legacy").json())["backfill"]["state"] != "done" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tag["backfill"]["state"] == "done" and tag["members"] == 1, tag
    members = post_read(crm, "/v1/segments/query", {"rule": {"tag": "legacy"}})
    assert members.status_code == 200 and members.json()["count"] == 1, members.text
    status = platform.status()["projections"]["tags"]
    assert not status.get("error") and not status.get("quarantined"), status


def test_a_duration_beyond_any_window_is_400(crm: Running) -> None:
    for within in ["99999999999999999999d", "1000000000w"]:
        response = post_read(crm, "/v1/segments/query", {"rule": {"event": "Order Completed", "within": within}})
        assert_refused(response, 400, "rule.within", "longer than any window; write at most 999999999d")
        response = post_read(crm, "/v1/segments/query", {"rule": {"last_seen": {"older_than": within}}})
        assert_refused(response, 400, "rule.last_seen.older_than", "longer than any window")
    assert post_read(crm, "/v1/segments/query", {"rule": {"last_seen": {"within": "999999999d"}}}).status_code == 200


NOT_JSON_DATA = [
        ("rule: " + "[" * 5000 + "]" * 5000, "(body)", "nested too deeply"),
        ("rule: {trait: plan, op: '=', value: 2026-13-01}", "(body)", "neither JSON nor YAML"),
        ('rule: {trait: plan, op: "=", value: "\\ud800"}', "rule.value", "lone surrogate"),
        ("rule: {trait: n, op: '>', value: .nan}", "rule.value", "not a number JSON can carry"),
        ("rule: {computed: revenue, op: '>', value: -.inf}", "rule.value", "not a number JSON can carry"),
        ("rule: {trait: n, op: '>', value: 123456789012345678901234567890}", "rule.value", "the integer is outside"),
        ("rule: {trait: n, op: '=', value: !!binary AAAA}", "rule.value", "is not a JSON value"),
        ("{1: 2, rule: {tag: x}}", "(body)", "is not a string"),
        ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
         "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
         "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nrule: {tag: x}", "(body)", "more than 100000 values"),
]  # fmt: skip


def test_a_document_that_is_not_json_data_is_400(crm: Running) -> None:
    for content, path, reason in NOT_JSON_DATA:
        response = post_read(crm, "/v1/segments/query", content=content.encode(), headers=YAML)
        assert_refused(response, 400, "invalid segment query", reason)
        assert any(e["path"] == path for e in response.json()["errors"]), response.text
        as_tag = "{id: bad, " + content[1:] if content.startswith("{") else "id: bad\n" + content
        assert_refused(admin(crm, "POST", "/v1/tags", as_tag.encode(), YAML), 400, "invalid tag", reason)
    assert read(crm, "/v1/tags/bad").status_code == 404


def test_yaml_dates_are_read_as_the_iso_text_written(crm: Running) -> None:
    content = b"rule: {event: Order Completed, between: [1900-01-01, 2299-12-31T00:00:00Z]}"
    response = post_read(crm, "/v1/segments/query", content=content, headers=YAML)
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 1


# Identity commands --------------------------------------------------------------------------


RULES_THE_LOG_CANNOT_CARRY = [
    (b'{"caps": {"email": 123456789012345678901234567890}}', "caps.email", "the integer is outside"),
    (b'{"shared_value_limit": 18446744073709551616}', "shared_value_limit", "the integer is outside"),
    (b'{"default_cap": Infinity}', "default_cap", "not a number JSON can carry"),
    (b'{"blocked_values": ["\\ud800"]}', "blocked_values[0]", "lone surrogate"),
    (b'{"trait_sources": {"\\ud800": ["crm"]}}', "trait_sources", "lone surrogate"),
]


def test_rules_the_log_cannot_carry_are_400_and_the_rules_stay_readable(crm: Running) -> None:
    before = read(crm, "/v1/identity/rules").json()
    for content, field, reason in RULES_THE_LOG_CANNOT_CARRY:
        response = admin(crm, "PUT", "/v1/identity/rules", content)
        assert_refused(response, 400, "invalid rules; nothing changed", reason)
        assert [e["field"] for e in response.json()["errors"]] == [field]
    rules = read(crm, "/v1/identity/rules")
    assert rules.status_code == 200 and rules.json() == before


def test_a_split_the_log_cannot_carry_is_400(crm: Running) -> None:
    for content, where in [(b'{"identifiers": ["email:ada@example.com"], "reason": "\\ud800"}', "reason"),
                           (b'{"identifiers": ["email:\\udfff"]}', "identifiers[0]")]:  # fmt: skip
        response = admin(crm, "POST", "/v1/profiles/user_id:u1/split", content)
        assert_refused(response, 400, f"{where}: not valid Unicode text (a lone surrogate)")
    assert read(crm, "/v1/profiles/user_id:u1").json()["identifiers"]["email"] == ["ada@example.com"]


# Analyst SQL --------------------------------------------------------------------------------


def test_maps_keyed_by_tuples_and_integers_beyond_64_bits_are_answered(crm: Running) -> None:
    big, low = "115792089237316195423570985008687907853269984665640564039457584007913129639935", str(-(2**127))
    query = f"SELECT map((1, 2), [3]) AS m, toUInt256('{big}') AS big, map(toInt128('{low}'), 1) AS k"
    response = post_read(crm, "/v1/sql", {"query": query})
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [[{"[1,2]": [3]}, big, {low: 1}]]


def test_sql_with_a_lone_surrogate_is_400(crm: Running) -> None:
    response = post_read(crm, "/v1/sql", content=b'{"query": "SELECT \'\\ud800\'"}')
    assert_refused(response, 400, "not valid Unicode text")
    assert response.json()["reason"] == "encoding"


def test_answers_with_values_orjson_cannot_write_are_still_json() -> None:
    """A value recorded before it was refused (an integer beyond 64 bits, a lone surrogate) is still shown."""
    response = json_response({"n": 2**70, "s": "\ud800", "f": float("nan"), "ok": [1, "a"]})
    assert response.status_code == 200
    assert response.body == b'{"n":1180591620717411303424,"s":"\\ud800","f":null,"ok":[1,"a"]}'
