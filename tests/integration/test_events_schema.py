"""Every kind of message the platform puts on cdp.events matches the published JSON Schema.

The messages are made by real API calls (ingest, identity commands, tags, segments, manual tags) and read
back twice: from the log as the relay encodes them, and from the bundled broker as consumers receive them.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson

from streams.log_follower import read_messages
from streams.messages import encode
from tests.conftest import Running, read_topic

SCHEMA = json.loads((Path(__file__).parents[2] / "docs/schemas/cdp.events.schema.json").read_text())
KINDS = {"event", "identity", "rules", "definition", "manual_tag", "prediction"}


def _admin(r: Running) -> dict[str, str]:
    return r.admin_headers


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _make_every_kind(r: Running) -> None:
    calls = [
        {"type": "identify", "anonymousId": "anon-1", "traits": {"email": "Ann@Example.com", "plan": "pro"}},
        {"type": "track", "userId": "42", "event": "Order Completed", "properties": {"revenue": 10, "currency": "EUR"}},
        {"type": "identify", "userId": "42", "traits": {"phone": "+4915123456789"}},  # links a phone to 42
        {"type": "page", "anonymousId": "anon-1", "name": "Home"},
        {"type": "screen", "userId": "42", "name": "Cart"},
        {"type": "group", "userId": "42", "groupId": "acme", "traits": {"size": 5}},
        {"type": "alias", "userId": "42", "previousId": "anon-1"},  # merges ann's visitor profile into 42's
        {"type": "identify", "userId": "mum", "anonymousId": "tablet"},
        {"type": "identify", "userId": "son", "anonymousId": "tablet"},  # user_id is unique: merge refused
    ]
    for call in calls:
        _ok(r.send("/v1/batch", {"batch": [{"messageId": uuid.uuid4().hex, "timestamp": "2026-11-24T04:32:31Z", **call}]}))
    r.wait_caught_up()  # identifiers are resolved to profiles through the projections
    _ok(r.http.post("/v1/profiles/user_id:42/split", json={"identifiers": ["anonymous_id:anon-1"], "reason": "shared"},
                    headers=_admin(r)), 201)  # fmt: skip
    rules = _ok(r.http.get("/v1/identity/rules", headers=r.read_headers))["rules"]
    _ok(r.http.put("/v1/identity/rules", json={**rules, "external_id_types": ["crm_id"]}, headers=_admin(r)))
    _ok(r.http.put("/v1/tags/pros", json={"rule": {"trait": "plan", "op": "=", "value": "pro"}}, headers=_admin(r)))
    _ok(r.http.put("/v1/tags/pros", json={"name": "Pro plan", "description": "on pro",
                                          "rule": {"trait": "plan", "op": "in", "value": ["pro", "team"]}},
                   headers=_admin(r)))  # fmt: skip
    _ok(r.http.delete("/v1/tags/pros", headers=_admin(r)))
    _ok(r.http.post("/v1/segments", json={"id": "buyers", "rule": {"event": "Order Completed"}}, headers=_admin(r)),
        201)  # fmt: skip
    _ok(r.http.post("/v1/profiles/user_id:42/tags", json={"tag": "beta-tester", "reason": "asked"},
                    headers=_admin(r)), 201)  # fmt: skip
    r.wait_caught_up()
    _ok(r.http.delete("/v1/profiles/user_id:42/tags/beta-tester", params={"reason": "done"}, headers=_admin(r)))
    # A run with too little history records each model's `trained` entry, with why it scored nobody (a run
    # that scores: tests/integration/test_predictions.py).
    _ok(r.http.post("/v1/predictions/run", headers=_admin(r)))
    r.wait_caught_up()


def _invalid(validator: Any, message: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(message)]


def test_every_message_kind_on_cdp_events_matches_the_schema(running: Running) -> None:
    validator = jsonschema_rs.validator_for(SCHEMA)
    _make_every_kind(running)

    messages, _ = read_messages(running.platform.app, 0, 100_000)
    from_log = [orjson.loads(encode(m)) for m in messages]
    assert {m["kind"] for m in from_log} == KINDS
    assert {m["change"] for m in from_log if m["kind"] == "identity"} == {
        "created", "linked", "absorbed", "merged_into", "merge_refused", "split_apart"}  # fmt: skip
    assert {(m["definition_kind"], m["deleted"]) for m in from_log if m["kind"] == "definition"} == {
        ("tag", False), ("tag", True), ("segment", False)}  # fmt: skip
    assert {m["action"] for m in from_log if m["kind"] == "manual_tag"} == {"added", "removed"}
    assert {(m["change"], m["status"]) for m in from_log if m["kind"] == "prediction"} == {("trained", "not_enough_data")}
    refused = {m["position"]: _invalid(validator, m) for m in from_log}
    assert not any(refused.values()), {p: e for p, e in refused.items() if e}

    published = read_topic(running.platform.settings.bootstrap_servers, "cdp.events",
                           lambda values: len(values) >= len(from_log))  # fmt: skip
    assert sorted(v["position"] for _, v in published) == [m["position"] for m in from_log]
    for record, value in published:
        assert not _invalid(validator, value), (value, _invalid(validator, value))
        assert record.key.decode() == (value["profile_id"] or value["workspace_id"])


def test_the_schema_refuses_what_no_kind_carries(running: Running) -> None:
    """The schema is closed: a field a message kind does not carry, or a kind of its own, is refused."""
    validator = jsonschema_rs.validator_for(SCHEMA)
    _ok(running.http.put("/v1/tags/pros", json={"rule": {"trait": "plan", "op": "exists"}}, headers=_admin(running)))
    messages, _ = read_messages(running.platform.app, 0, 100_000)
    definition = next(orjson.loads(encode(m)) for m in messages if m.kind == "definition")
    assert validator.is_valid(definition)
    assert not validator.is_valid({**definition, "extra": 1})
    assert not validator.is_valid({**definition, "kind": "tag"})
    assert not validator.is_valid({**definition, "rule": None})  # only a deleted definition has no rule
