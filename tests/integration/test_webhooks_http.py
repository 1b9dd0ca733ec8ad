"""Webhook sources end to end: the shipped Stripe and Typeform mappings installed over HTTP, their real
payloads posted, profiles and KPIs read back; redeliveries stored once; every refused delivery in the
dead-letter store with its reason; bad mappings refused with a precise 400.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from infra.cli import app as cli
from tests.conftest import Running

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "webhooks"
MAPPINGS = ROOT / "infra" / "webhook_mappings"


def payload(source: str, name: str) -> bytes:
    return (FIXTURES / source / f"{name}.json").read_bytes()


def bearer(r: Running) -> dict[str, str]:
    return {"Authorization": f"Bearer {r.write_key}"}


def admin(r: Running) -> dict[str, str]:
    return r.admin_headers


def install(r: Running, source: str) -> Any:
    return r.http.put(f"/v1/webhooks/{source}/mapping", content=(MAPPINGS / f"{source}.yaml").read_bytes(),
                      headers=admin(r) | {"Content-Type": "application/yaml"})  # fmt: skip


def deliver(r: Running, source: str, body: bytes, how: str = "query", **headers: str) -> Any:
    """POST a payload as a tool would: the key as ?key=, as HTTP Basic username or as Bearer."""
    headers = {"Content-Type": "application/json", **headers}
    if how == "query":
        return r.http.post(f"/v1/webhooks/{source}", params={"key": r.write_key}, content=body, headers=headers)
    if how == "basic":
        return r.http.post(f"/v1/webhooks/{source}", content=body, headers=headers, auth=(r.write_key, ""))
    return r.http.post(f"/v1/webhooks/{source}", content=body, headers=headers | bearer(r))


def letters(r: Running, **filters: Any) -> list[Any]:
    return r.platform.dead_letters.list(r.platform.workspace_id, **filters)


def kpi(r: Running, name: str, start: str, end: str) -> list[dict[str, Any]]:
    response = r.http.get(f"/v1/kpis/{name}", params={"from": start, "to": end}, headers=r.read_headers)
    assert response.status_code == 200, response.text
    return response.json()["series"]  # type: ignore[no-any-return]


def test_stripe_and_typeform_payloads_become_profiles_and_kpis_and_redeliveries_store_nothing(
    running: Running,
) -> None:
    for source in ("stripe", "typeform"):
        created = install(running, source)
        assert created.status_code == 201, created.text
        assert created.json()["version"] == 1 and created.json()["changed"] is True
    again = install(running, "stripe")  # `cdp webhooks apply` run twice: no new version
    assert again.status_code == 200 and (again.json()["version"], again.json()["changed"]) == (1, False)
    assert again.json()["event_types"] == ["charge.refunded", "charge.succeeded", "checkout.session.completed",
                                           "customer.created", "customer.updated"]  # fmt: skip

    deliveries = [
        ("stripe", "charge.succeeded", "basic", 1),
        ("stripe", "charge.refunded", "bearer", 1),
        ("stripe", "checkout.session.completed", "query", 1),
        ("typeform", "form_response", "query", 2),
    ]
    for source, name, how, calls in deliveries:
        response = deliver(running, source, payload(source, name), how)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True and body["stored"] == calls and body["duplicates"] == 0, body
        assert body["event_types"] == [name] and body["dead_lettered"] == 0
    running.wait_caught_up()
    stored = running.stored_event_count()
    assert stored == 5

    # The Checkout session's customer, by email; the guest charge and its refund on one profile.
    customer = running.profile("email:example@example.com")
    assert customer.status_code == 200, customer.text
    assert customer.json()["identifiers"]["anonymous_id"] == ["stripe:cus_00000000000000"]
    assert customer.json()["traits"]["email"] == "example@example.com"
    guest = running.profile("anonymous_id:stripe:ch_000000000000000000000000").json()
    assert guest["counts"]["track"] == 2 and guest["computed_traits"]["orders_count"] == 1
    # The survey answer, by email, stitched to the user id passed as a hidden field.
    laura = running.profile("email:laura@example.com").json()
    assert laura["identifiers"]["user_id"] == ["abc123456"]
    assert laura["identifiers"]["anonymous_id"] == ["typeform:a3a12ec67a1365927098a606107fac15"]

    # 20.00 USD charged and 1.00 refunded on 2022-03-26 (the events' `created`); CSAT 3 on 2018-01-18.
    [revenue] = kpi(running, "revenue", "2022-03-26T00:00:00Z", "2022-03-27T00:00:00Z")
    assert (revenue["period"], revenue["currency"], revenue["value"]) == ("2022-03-26", "USD", 19.0)
    assert (revenue["gross"], revenue["refunds"]) == (20.0, 1.0)
    [csat] = kpi(running, "csat", "2018-01-18T00:00:00Z", "2018-01-19T00:00:00Z")
    assert (csat["period"], csat["answers"], csat["mean"], csat["value"]) == ("2018-01-18", 1, 3.0, 0.0)

    # Tools redeliver until they see a 2xx, with the same event id: nothing is stored twice.
    for source, name, how, calls in deliveries:
        response = deliver(running, source, payload(source, name), how)
        assert response.status_code == 200, response.text
        assert (response.json()["stored"], response.json()["duplicates"]) == (0, calls)
    running.wait_caught_up()
    assert running.stored_event_count() == stored
    assert kpi(running, "revenue", "2022-03-26T00:00:00Z", "2022-03-27T00:00:00Z") == [revenue]
    assert letters(running) == []


def test_refused_deliveries_are_dead_lettered_with_their_reason_and_replayed_after_a_fix(running: Running) -> None:
    assert install(running, "stripe").status_code == 201
    charge = payload("stripe", "charge.succeeded")

    # No key, or not a write key: 401, and nothing kept anywhere.
    for response in (
        running.http.post("/v1/webhooks/stripe", content=charge),
        running.http.post("/v1/webhooks/stripe", params={"key": "wk_nope"}, content=charge),
        running.http.post("/v1/webhooks/stripe", params={"key": running.read_key}, content=charge),
        running.http.post("/v1/webhooks/stripe", content=charge, headers={"Authorization": "Basic !!"}),
    ):
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "unauthorized" and response.json()["message"]
    assert letters(running) == []

    # A source without a mapping: 404 unknown_source, the payload kept as it came.
    form = payload("typeform", "form_response")
    unknown = deliver(running, "typeform", form)
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_source"
    assert "install one" in unknown.json()["message"] and unknown.json()["dead_lettered"] == 1

    # An event type the mapping does not list (a real Stripe balance.available): webhook_unmapped.
    unmapped = deliver(running, "stripe", payload("stripe", "balance.available"), "basic")
    assert unmapped.status_code == 422 and unmapped.json()["code"] == "webhook_unmapped"
    assert "'balance.available' is not in the stripe mapping" in unmapped.json()["message"]

    # Not JSON at all: webhook_unreadable.
    garbled = deliver(running, "stripe", b'{"id": "evt_1", "type": "charge.succ', "bearer")
    assert garbled.status_code == 400 and garbled.json()["code"] == "webhook_unreadable"

    # A charge without its currency: the mapping requires it (webhook_invalid).
    no_currency = json.loads(charge)
    del no_currency["data"]["object"]["currency"]
    invalid = deliver(running, "stripe", json.dumps(no_currency).encode())
    assert invalid.status_code == 422 and invalid.json()["code"] == "webhook_invalid"
    assert invalid.json()["errors"][0]["field"] == "data.object.currency"

    # A negative amount maps, but the Order Completed schema refuses the call: invalid_event, the call kept.
    negative = json.loads(charge)
    negative["id"] = "evt_negative"
    negative["data"]["object"]["amount"] = -500
    refused_call = deliver(running, "stripe", json.dumps(negative).encode())
    assert refused_call.status_code == 422 and refused_call.json()["code"] == "invalid_event"
    assert refused_call.json()["rejected"][0]["field"] == "properties.revenue"

    assert running.stored_event_count() == 0
    kept = {x.code: x for x in letters(running)}
    assert set(kept) == {"unknown_source", "webhook_unmapped", "webhook_unreadable", "webhook_invalid",
                         "invalid_event"}  # fmt: skip
    assert kept["unknown_source"].source == "webhook:typeform" and kept["unknown_source"].body == form
    assert kept["webhook_unmapped"].body == payload("stripe", "balance.available")
    assert kept["webhook_unreadable"].reason.startswith("not JSON")
    assert kept["webhook_invalid"].reason.startswith("data.object.currency: missing")
    assert kept["invalid_event"].message_id == "stripe:evt_negative:Order Completed"
    assert all(x.source.startswith("webhook:") for x in kept.values())

    # The Typeform mapping installed, the dead-lettered response is replayed through it and stored.
    assert install(running, "typeform").status_code == 201
    replayed = running.http.post("/v1/webhooks/typeform/replay", headers=admin(running))
    assert replayed.status_code == 200, replayed.text
    assert (replayed.json()["replayed"], replayed.json()["stored"]) == (1, 2)
    running.wait_caught_up()
    assert running.stored_event_count() == 2
    assert running.profile("email:laura@example.com").status_code == 200
    assert "unknown_source" not in {x.code for x in letters(running)}
    assert [x.replay_outcome for x in letters(running, include_replayed=True, code="unknown_source")] == ["stored"]
    # The Stripe letters still cannot be mapped: replaying them keeps them, with the reason.
    again = running.http.post("/v1/webhooks/stripe/replay", headers=admin(running)).json()
    assert again["replayed"] == 0 and again["refused"] == 3
    assert {r["code"] for r in again["results"]} == {"webhook_unmapped", "webhook_unreadable", "webhook_invalid"}


def test_bad_mappings_are_refused_with_a_precise_400_and_mappings_are_managed_like_tags(running: Running) -> None:
    def put(source: str, text: str, content_type: str = "application/yaml") -> Any:
        return running.http.put(f"/v1/webhooks/{source}/mapping", content=text.encode(),
                                headers=admin(running) | {"Content-Type": content_type})  # fmt: skip

    unreadable = put("shop", "event_type: type\nevents:\n  order.paid: {event: [Order Completed\n")
    assert unreadable.status_code == 400 and unreadable.json()["code"] == "unreadable_mapping"
    assert "line 4" in unreadable.json()["message"] and unreadable.json()["errors"][0]["field"] == "(body)"

    unknown_option = put("shop", "event_type: type\nevents:\n  order.paid:\n    event: Order Completed\n"
                                 "    anonymous_id: customer\n    propertys: {revenue: total}\n")  # fmt: skip
    assert unknown_option.status_code == 400 and unknown_option.json()["code"] == "invalid_mapping"
    [error] = unknown_option.json()["errors"]
    assert error["field"] == 'events["order.paid"][0]'
    assert "unknown option 'propertys' (did you mean 'properties'?)" in error["reason"]

    not_json = put("shop", '{"events": ', "application/json")
    assert not_json.status_code == 400 and not_json.json()["code"] == "unreadable_mapping"
    mismatch = put("shop", "source: stripe\nevents: {'*': {event: A, anonymous_id: id}}")
    assert mismatch.status_code == 400 and "the URL says 'shop'" in mismatch.json()["message"]
    bad_name = put("Shop!", "events: {'*': {event: A, anonymous_id: id}}")
    assert bad_name.status_code == 400 and bad_name.json()["code"] == "invalid_source"
    no_key = running.http.put("/v1/webhooks/shop/mapping", content=b"events: {}")
    assert no_key.status_code == 401 and no_key.json()["code"] == "unauthorized"
    for other in (running.read_headers, bearer(running)):  # mappings are configuration: neither key opens them
        refused = running.http.get("/v1/webhooks/shop/mapping", headers=other)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), refused.text
        assert running.http.put("/v1/webhooks/shop/mapping", content=b"events: {}", headers=other).status_code == 403
    assert running.http.get("/v1/webhooks/shop/mapping", headers=admin(running)).json()["code"] == "unknown_source"

    # Versions, the document as written, the list, and deletion.
    text = ("# orders from the shop\nevent_type: type\n"
            "events:\n  order.paid: {event: Order Completed, anonymous_id: id}\n")
    assert put("shop", text).json()["version"] == 1
    changed = put("shop", text.replace("anonymous_id: id", "user_id: customer"))
    assert changed.status_code == 200 and changed.json()["version"] == 2 and changed.json()["changed"] is True
    as_written = running.http.get("/v1/webhooks/shop/mapping", headers=admin(running) | {"Accept": "application/yaml"})
    assert as_written.text.startswith("# orders from the shop") and as_written.headers["X-Mapping-Version"] == "2"
    shown = running.http.get("/v1/webhooks/shop/mapping", headers=admin(running)).json()
    assert shown["mapping"]["events"]["order.paid"][0]["user_id"] == {"path": ["customer"]}
    listed = running.http.get("/v1/webhooks", headers=admin(running)).json()["webhooks"]
    assert [(w["source"], w["version"]) for w in listed] == [("shop", 2)]
    deleted = running.http.delete("/v1/webhooks/shop/mapping", headers=admin(running))
    assert deleted.json() == {"source": "shop", "version": 3, "deleted": True}
    assert running.http.delete("/v1/webhooks/shop/mapping", headers=admin(running)).status_code == 404
    gone = deliver(running, "shop", b'{"type": "order.paid", "id": "o1"}')
    assert gone.status_code == 404 and gone.json()["code"] == "unknown_source"

    # Mappings are events in the log: a restarted write model knows them.
    put("shop", text)
    running.platform.app.load()
    assert running.platform.app.webhook_mappings.get(running.platform.workspace_id, "shop").mapping_version == 4


def test_cdp_webhooks_apply_installs_a_shipped_mapping_by_name_or_file(live: Running, tmp_path: Path) -> None:
    s = live.platform.settings
    env = {"CDP_HTTP_HOST": s.http_host, "CDP_HTTP_PORT": str(s.http_port), "CDP_DATA_DIR": str(s.data_dir),
           "CDP_WRITE_KEY": live.write_key, "CDP_READ_KEY": live.read_key, "CDP_ADMIN_KEY": live.admin_key}  # fmt: skip
    result = CliRunner().invoke(cli, ["webhooks", "apply", "stripe"], env=env)
    assert result.exit_code == 0, result.output
    assert "stripe mapping is at version 1" in result.output and "/v1/webhooks/stripe?key=" in result.output
    unchanged = CliRunner().invoke(cli, ["webhooks", "apply", str(MAPPINGS / "stripe.yaml")], env=env)
    assert unchanged.exit_code == 0 and "unchanged" in unchanged.output
    bad = tmp_path / "shop.yaml"
    bad.write_text("event_type: type\nevents: {order.paid: {event: Order Completed, properties: {x: {path: a, "
                   "convert: cent}}}}\n")  # fmt: skip
    refused = CliRunner().invoke(cli, ["webhooks", "apply", str(bad)], env=env)
    assert refused.exit_code == 1
    assert "unknown conversion 'cent'" in refused.output and "properties.x.convert" in refused.output
    listed = CliRunner().invoke(cli, ["webhooks", "list"], env=env)
    assert listed.exit_code == 0 and "stripe" in listed.output
    response = deliver(live, "stripe", payload("stripe", "charge.succeeded"))
    assert response.status_code == 200 and response.json()["stored"] == 1
