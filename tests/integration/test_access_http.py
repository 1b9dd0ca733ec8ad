"""Keys with kinds and scopes, workspaces, the audit log and rate limits, through the HTTP API on the embedded
stack (SQLite log, chDB, the bundled Kafka broker): what each key opens, made, rotated, revoked and expired;
the audit log of reads and admin actions on the API and on Kafka `cdp.audit`; 429 with Retry-After."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from infra.bootstrap import Platform
from infra.config import Settings
from infra.keys import load_or_create_keys
from infra.server import create_app
from tests.conftest import Running, read_topic

EMAIL = "philippa.quennell@example.org"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def send(r: Running, key: str, *calls: dict[str, Any]) -> None:
    batch = [{"messageId": uuid.uuid4().hex, **c} for c in calls]
    response = r.http.post("/v1/batch", json={"batch": batch}, auth=(key, ""))
    assert response.status_code == 200, response.text
    r.settle()


def make_key(r: Running, **body: Any) -> dict[str, Any]:
    response = r.http.post("/v1/keys", json=body, headers=r.admin_headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_the_write_key_opens_ingest_only(running: Running) -> None:
    r = running
    send(r, r.write_key, {"type": "identify", "userId": "u1", "traits": {"email": EMAIL}})
    write = bearer(r.write_key)
    refused = [
        r.http.get("/v1/profiles/user_id:u1", headers=write),
        r.http.put("/v1/identity/rules", json={}, headers=write),
        r.http.post("/v1/profiles/user_id:u1/split", json={"identifiers": [f"email:{EMAIL}"]}, headers=write),
        r.http.put("/v1/tags/vip", json={"name": "VIP", "rule": {"trait": "plan", "eq": "pro"}}, headers=write),
        r.http.post("/v1/regulations", json={"type": "delete", "identifiers": ["user_id:u1"]}, headers=write),
        r.http.get("/v1/dead-letters", headers=write),
        r.http.post("/v1/keys", json={"kind": "admin"}, headers=write),
        r.http.get("/v1/audit", headers=write),
    ]
    assert [x.status_code for x in refused] == [403] * len(refused), [x.text for x in refused]
    assert all(x.json()["code"] == "forbidden" and "write key" in x.json()["message"] for x in refused)
    # The read key reads, and changes nothing.
    assert r.http.get("/v1/profiles/user_id:u1", headers=r.read_headers).status_code == 200
    assert r.http.put("/v1/identity/rules", json={}, headers=r.read_headers).status_code == 403
    assert r.http.get("/v1/profiles/user_id:u1", headers=r.admin_headers).status_code == 200  # admin reads too
    assert r.http.post("/v1/batch", json={"batch": [{"type": "track", "userId": "u1", "event": "E"}]},
                       auth=(r.admin_key, "")).status_code == 401  # fmt: skip  # and never ingests
    assert r.http.get("/v1/profiles/user_id:u1", headers=bearer("rk_nope")).json()["code"] == "unauthorized"


def test_a_partner_key_sees_only_kpis_until_revoked(running: Running) -> None:
    r = running
    send(r, r.write_key, {"type": "identify", "userId": "u1", "traits": {"email": EMAIL}},
         {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 20, "currency": "EUR"}})
    made = make_key(r, kind="read", scopes=["kpis"], name="partner")
    assert made["key"].startswith("rk_") and made["scopes"] == ["kpis"] and made["kind"] == "read"
    partner = bearer(made["key"])
    assert r.http.get("/v1/kpis/revenue", headers=partner).status_code == 200
    for path in ("/v1/profiles/user_id:u1", "/v1/profiles/user_id:u1/events", "/v1/tags", "/v1/profiles"):
        answer = r.http.get(path, headers=partner)
        assert answer.status_code == 403 and "scope" in answer.json()["message"], (path, answer.text)
    assert r.http.post("/v1/sql", json={"query": "SELECT 1"}, headers=partner).status_code == 403
    listed = r.http.get("/v1/keys", headers=r.admin_headers).json()["keys"]
    assert {k["kind"] for k in listed} == {"write", "read", "admin"} and made["id"] in {k["id"] for k in listed}
    assert made["key"] not in str(listed) and r.read_key not in str(listed)  # keys are shown once, when made
    assert r.http.delete(f"/v1/keys/{made['id']}", headers=r.admin_headers).status_code == 204
    assert r.http.get("/v1/kpis/revenue", headers=partner).status_code == 401  # at once
    assert r.http.delete(f"/v1/keys/{made['id']}", headers=r.admin_headers).json()["code"] == "unknown_key"


def test_rotation_and_expiry(running: Running) -> None:
    r = running
    made = make_key(r, kind="read", scopes=["kpis", "profiles"], name="reporting")
    rotated = r.http.post(f"/v1/keys/{made['id']}/rotate", headers=r.admin_headers)
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert (new["scopes"], new["name"]) == (["kpis", "profiles"], "reporting") and new["id"] != made["id"]
    assert r.http.get("/v1/kpis/revenue", headers=bearer(made["key"])).status_code == 401
    assert r.http.get("/v1/kpis/revenue", headers=bearer(new["key"])).status_code == 200
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    refused = r.http.post("/v1/keys", json={"kind": "read", "expires_at": past}, headers=r.admin_headers)
    assert refused.status_code == 400 and "past" in refused.json()["message"]
    later = datetime.now(timezone.utc) + timedelta(days=30)
    expiring = make_key(r, kind="admin", expires_at=later.isoformat())
    assert expiring["expires_at"] == pytest.approx(later.timestamp(), abs=1)
    assert r.http.get("/v1/keys", headers=bearer(expiring["key"])).status_code == 200
    for bad in ({"kind": "owner"}, {"kind": "read", "scopes": ["everything"]}, {"kind": "write", "scopes": ["kpis"]},
                {"kind": "read", "colour": "red"}, ["read"]):  # fmt: skip
        answer = r.http.post("/v1/keys", json=bad, headers=r.admin_headers)
        assert answer.status_code == 400 and answer.json()["message"], (bad, answer.text)


def test_a_key_past_its_expiry_is_refused(running: Running) -> None:
    r = running
    made = make_key(r, kind="read", expires_at=(datetime.now(timezone.utc) + timedelta(days=1)).isoformat())
    grant = r.platform.app.keys.by_hash[next(h for h, g in r.platform.app.keys.by_hash.items() if g.key_id == made["id"])]
    assert not grant.expired(grant.expires_at - 1) and grant.expired(grant.expires_at)  # type: ignore[operator]
    object.__setattr__(grant, "expires_at", datetime.now(timezone.utc).timestamp() - 1)  # its time has come
    answer = r.http.get("/v1/kpis/revenue", headers=bearer(made["key"]))
    assert answer.status_code == 401 and "expired" in answer.json()["message"]


def test_workspaces_are_made_listed_and_renamed_with_the_platform_key(running: Running) -> None:
    r = running
    platform = bearer(r.platform_key)
    assert r.http.post("/v1/workspaces", json={"name": "eu-shop"}, headers=r.admin_headers).status_code == 401
    made = r.http.post("/v1/workspaces", json={"name": "eu-shop"}, headers=platform)
    assert made.status_code == 201, made.text
    shop = made.json()
    keys = {k["kind"]: k["key"] for k in shop["keys"]}
    assert set(keys) == {"admin", "write", "read"}
    assert r.http.post("/v1/workspaces", json={"name": "eu-shop"}, headers=platform).json()["code"] == "workspace_exists"
    # The same user id in both workspaces: two people, each seen only by its own keys.
    send(r, r.write_key, {"type": "identify", "userId": "u1", "traits": {"plan": "default-plan"}})
    send(r, keys["write"], {"type": "identify", "userId": "u1", "traits": {"plan": "shop-plan"}})
    mine = r.http.get("/v1/profiles/user_id:u1", headers=bearer(keys["read"])).json()
    theirs = r.http.get("/v1/profiles/user_id:u1", headers=r.read_headers).json()
    assert mine["traits"]["plan"] == "shop-plan" and theirs["traits"]["plan"] == "default-plan"
    assert r.http.get(f"/v1/profiles/{mine['profile_id']}", headers=r.read_headers).status_code == 404
    assert r.http.get("/v1/keys", headers=bearer(keys["admin"])).json()["keys"][0]["kind"] in ("admin", "write", "read")
    renamed = r.http.patch(f"/v1/workspaces/{shop['id']}", json={"name": "eu-store"}, headers=platform)
    assert renamed.status_code == 200 and renamed.json()["name"] == "eu-store"
    listed = r.http.get("/v1/workspaces", headers=platform).json()["workspaces"]
    assert {w["name"] for w in listed} == {"default", "eu-store"}
    assert r.http.patch("/v1/workspaces/nope", json={"name": "x"}, headers=platform).status_code == 404
    assert r.http.post("/v1/workspaces", json={"name": ""}, headers=platform).status_code == 400


def test_the_audit_log_says_who_read_which_profile_without_the_pii(running: Running) -> None:
    r = running
    send(r, r.write_key, {"type": "identify", "userId": "u1", "traits": {"email": EMAIL}})
    profile = r.http.get(f"/v1/profiles/email:{EMAIL}", headers=r.read_headers).json()
    assert r.http.get("/v1/profiles/email:nobody@example.org", headers=r.read_headers).status_code == 404
    assert r.http.get("/v1/kpis/revenue", headers=r.read_headers).status_code == 200  # no personal data: not audited
    assert r.http.put("/v1/identity/rules", json={}, headers=r.admin_headers).status_code == 200
    assert r.http.put("/v1/identity/rules", json={}, headers=r.read_headers).status_code == 403
    answer = r.http.get("/v1/audit", headers=r.admin_headers)
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entries"]
    read_key_id = next(k["id"] for k in r.http.get("/v1/keys", headers=r.admin_headers).json()["keys"]
                       if k["kind"] == "read")  # fmt: skip
    seen = [(e["method"], e["endpoint"], e["key_id"], e["action"], e["target"], e["status"]) for e in entries]
    assert seen[:4] == [
        ("GET", "/v1/profiles/{identifier}", read_key_id, "read", profile["profile_id"], 200),
        ("GET", "/v1/profiles/{identifier}", read_key_id, "read", None, 404),
        ("PUT", "/v1/identity/rules", seen[2][2], "admin", None, 200),
        ("PUT", "/v1/identity/rules", read_key_id, "admin", None, 403),
    ]
    assert all(e["address"] and e["at"].endswith("Z") for e in entries)
    assert EMAIL not in answer.text and "nobody@example.org" not in answer.text
    only_reads = r.http.get("/v1/audit", params={"action": "read", "target": profile["profile_id"]},
                            headers=r.admin_headers).json()["entries"]  # fmt: skip
    assert [e["status"] for e in only_reads] == [200]
    assert r.http.get("/v1/audit", headers=r.read_headers).status_code == 403
    # Exported to Kafka, keyed by workspace, without the PII either.
    records = read_topic(r.platform.settings.bootstrap_servers, "cdp.audit", lambda vs: len(vs) >= 4, timeout=20)
    assert [v["endpoint"] for _, v in records][:4] == [e["endpoint"] for e in entries[:4]]
    assert all(record.key.decode() == r.platform.workspace_id for record, _ in records)
    assert EMAIL not in str([v for _, v in records])


@pytest.fixture
def limited(settings: Settings) -> Iterator[Running]:
    platform = Platform(replace(settings, rate_limit=1, rate_burst=3))
    with TestClient(create_app(platform)) as client:
        yield Running(platform, client)


def test_a_key_over_its_rate_gets_429_with_retry_after_and_the_others_go_on(limited: Running) -> None:
    r = limited
    answers = [r.http.get("/v1/kpis", headers=r.read_headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[-1].json()["code"] == "rate_limited" and int(answers[-1].headers["Retry-After"]) >= 1
    assert r.http.get("/v1/kpis", headers=r.admin_headers).status_code == 200  # another key's own bucket
    batch = {"batch": [{"type": "track", "userId": "u1", "event": "E"}]}
    sent = [r.http.post("/v1/batch", json=batch, auth=(r.write_key, "")).status_code for _ in range(4)]
    assert sent == [200, 200, 200, 429]


def test_metrics_need_the_platform_key(running: Running) -> None:
    r = running
    assert r.http.get("/metrics").status_code == 401
    assert r.http.get("/metrics", headers=r.admin_headers).status_code == 401
    answer = r.http.get("/metrics", headers=bearer(r.platform_key))
    assert answer.status_code == 200 and "cdp_log_position" in answer.text
    assert r.http.get("/healthz").status_code == 200  # liveness stays open


def test_start_keys_no_longer_configured_stop_working(settings: Settings) -> None:
    first = replace(settings, read_key="rk_first", write_key="wk_first")
    with TestClient(create_app(Platform(first))) as client:
        assert client.get("/v1/kpis", headers=bearer("rk_first")).status_code == 200
    again = replace(settings, read_key="rk_second", write_key="wk_first")
    with TestClient(create_app(Platform(again))) as client:
        assert client.get("/v1/kpis", headers=bearer("rk_first")).status_code == 401
        assert client.get("/v1/kpis", headers=bearer("rk_second")).status_code == 200
        admin = bearer(load_or_create_keys(again).admin_key)
        kinds = [k["kind"] for k in client.get("/v1/keys", headers=admin).json()["keys"]]
        assert sorted(kinds) == ["admin", "read", "write"]


def test_the_openapi_document_says_which_key_each_route_needs(running: Running) -> None:
    schema = running.http.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"key", "writeKey"}  # /docs gets an Authorize button
    open_routes = {("get", "/healthz"), ("get", "/metrics"), ("get", "/v1/schemas/events")}
    missing = [(m, p) for p, ops in schema["paths"].items() for m, op in ops.items()
               if (m, p) not in open_routes and not (op.get("security") and op.get("x-cdp-key"))]  # fmt: skip
    assert missing == []
    kpi = schema["paths"]["/v1/kpis/{name}"]["get"]
    assert kpi["description"].startswith("**Key:** a read key with the `kpis` scope, or an admin key.")
    assert schema["paths"]["/v1/regulations"]["post"]["x-cdp-key"] == "an admin key"


def test_a_revoked_start_key_is_never_made_live_again(settings: Settings) -> None:
    with TestClient(create_app(Platform(settings))) as client:
        keys = load_or_create_keys(settings)
        admin = bearer(keys.admin_key)
        read_id = next(k["id"] for k in client.get("/v1/keys", headers=admin).json()["keys"] if k["kind"] == "read")
        assert client.delete(f"/v1/keys/{read_id}", headers=admin).status_code == 204
    with TestClient(create_app(Platform(settings))) as client:  # the revoked one is in keys.json: a new one made
        renewed = load_or_create_keys(settings)
        assert renewed.read_key != keys.read_key
        assert client.get("/v1/kpis", headers=bearer(keys.read_key)).status_code == 401
        assert client.get("/v1/kpis", headers=bearer(renewed.read_key)).status_code == 200
    configured = replace(settings, read_key=keys.read_key)  # set again through CDP_READ_KEY: refused, named
    platform = Platform(configured)
    with pytest.raises(Exception, match="CDP_READ_KEY was revoked"):
        with TestClient(create_app(platform)):
            pass
