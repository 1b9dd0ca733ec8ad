"""Regulations through the HTTP API on the embedded stack: a delete erases a person from the log (their keys
destroyed), from every projection and from KPIs, says `deleted` and `exited` on the real Kafka topics, and a
rebuild brings nothing back; a suppression drops the person's later calls at ingest until it is lifted."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import jsonschema_rs
import orjson
import pytest

from fastapi.testclient import TestClient

from infra.bootstrap import Platform, verify_rebuild
from infra.config import Settings
from infra.server import create_app
from projections.erasure import KPI_TABLES, PREDICTION_TABLES, PROFILE_TABLES, TAG_TABLES
from streams.log_follower import read_messages
from streams.messages import ErasureMessage, encode
from tests.conftest import Running, read_topic

EMAIL = "ottoline.vandersnoot@example.net"
PHONE = "+15557654321"


@pytest.fixture(params=["sqlite", "postgres"])
def running(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Running]:
    """The platform on the embedded default, and with the PostgreSQL event store (its key store there too)."""
    if request.param == "postgres":
        settings = replace(settings, event_store=request.getfixturevalue("postgres_url"))
    platform = Platform(settings)
    with TestClient(create_app(platform)) as client:
        yield Running(platform, client)


def schema(topic: str) -> Any:
    return jsonschema_rs.validator_for(orjson.loads((Path(__file__).parents[2] / f"docs/schemas/{topic}.schema.json").read_bytes()))


def write(r: Running) -> dict[str, str]:
    return {"Authorization": f"Bearer {r.write_key}"}


def admin(r: Running) -> dict[str, str]:
    return r.admin_headers


def send(r: Running, *calls: dict[str, Any]) -> dict[str, Any]:
    batch = [{"messageId": uuid.uuid4().hex, **c} for c in calls]
    response = r.send("/v1/batch", {"batch": batch})
    assert response.status_code == 200, response.text
    r.settle()
    return dict(response.json())


def regulate(r: Running, kind: str, *identifiers: str) -> dict[str, Any]:
    response = r.http.post("/v1/regulations", json={"type": kind, "identifiers": list(identifiers)},
                           headers=r.admin_headers)  # fmt: skip
    assert response.status_code == 202, response.text
    assert response.json()["status"] in ("erasing", "done")  # answered once recorded (and the keys destroyed)
    r.settle()
    return dict(r.http.get(f"/v1/regulations/{response.json()['id']}", headers=r.admin_headers).json())


def revenue(r: Running) -> float:
    window = {"from": "2026-03-01T00:00:00Z", "to": "2026-03-20T00:00:00Z"}
    series = r.http.get("/v1/kpis/revenue", params=window, headers=r.read_headers).json()["series"]
    return float(sum(row["value"] for row in series))


def rows_of(r: Running, profile_ids: list[str]) -> dict[str, int]:
    """Rows of these profiles in every table of the database that has a profile_id column."""
    store = r.platform.store
    tables = [t for (t,) in store.client.query(
        "SELECT DISTINCT table FROM system.columns WHERE database = {db:String} AND name = 'profile_id'",
        parameters={"db": store.db}).result_rows]  # fmt: skip
    assert set(PROFILE_TABLES + KPI_TABLES + TAG_TABLES + PREDICTION_TABLES) == set(tables)  # every such table is erased by someone
    found = {}
    for table in tables:
        (n,) = store.client.query(
            f"SELECT count() FROM {store.db}.{table} WHERE toString(profile_id) IN {{ids:Array(String)}}",
            parameters={"ids": profile_ids}).result_rows[0]  # fmt: skip
        if n:
            found[table] = n
    return found


def test_delete_erases_a_person_everywhere_and_a_rebuild_brings_nothing_back(running: Running) -> None:
    r = running
    tag = {"name": "Buyers", "rule": {"event": "Order Completed", "measure": "exists"}}
    assert r.http.put("/v1/tags/reg-buyers", json=tag, headers=admin(r)).status_code == 200
    send(r, {"type": "identify", "anonymousId": "dev-otto", "traits": {"email": EMAIL}})  # two profiles ...
    send(r, {"type": "identify", "userId": "otto-1", "traits": {"phone": PHONE, "name": "Otto"}})
    send(r, {"type": "track", "userId": "otto-1", "anonymousId": "dev-otto", "event": "Order Completed",
             "timestamp": "2026-03-10T12:00:00Z", "properties": {"revenue": 70, "currency": "EUR"}},  # ... merged
         {"type": "track", "userId": "keep-1", "event": "Order Completed", "timestamp": "2026-03-10T13:00:00Z",
          "properties": {"revenue": 30, "currency": "EUR"}})  # fmt: skip
    otto = r.profile(f"email:{EMAIL}").json()["profile_id"]
    keep = r.profile("user_id:keep-1").json()["profile_id"]
    assert rows_of(r, [otto])
    assert revenue(r) == 100.0

    done = regulate(r, "delete", "user_id:otto-1")
    assert done["type"] == "delete" and done["status"] == "done" and done["keys_destroyed"] >= 4, done
    assert EMAIL not in str(done) and "otto-1" not in str(done)  # the regulation keeps no identifier
    for ident in (f"email:{EMAIL}", "user_id:otto-1", "anonymous_id:dev-otto", f"phone:{PHONE}", otto):
        assert r.profile(ident).status_code == 404, ident
    assert rows_of(r, [otto]) == {}
    assert r.profile("user_id:keep-1").json()["profile_id"] == keep  # nobody else is touched
    sql = r.http.post("/v1/sql", json={"query": "SELECT count() AS n FROM events WHERE user_id = 'otto-1'"},
                      headers=r.read_headers)  # fmt: skip
    assert sql.status_code == 200 and sql.json()["rows"][0][0] in (0, "0"), sql.text
    assert revenue(r) == 30.0  # KPIs no longer count them

    changes = read_topic(r.platform.settings.bootstrap_servers, "cdp.profile-changes",
                         lambda got: any(v.get("reason") == "erased" and v["profile_id"] == otto for v in got))  # fmt: skip
    assert any(v["change"] == "deleted" and v["profile_id"] == otto for _, v in changes)
    tags = read_topic(r.platform.settings.bootstrap_servers, "cdp.tag-changes",
                      lambda got: any(v["profile_id"] == otto and v["change"] == "exited" for v in got))  # fmt: skip
    exited = [v for _, v in tags if v["profile_id"] == otto and v["change"] == "exited"]
    assert exited and exited[0]["cause"] == "erasure" and exited[0]["tag_id"] == "reg-buyers"

    deleted = [v for _, v in changes if v.get("reason") == "erased"]
    assert deleted[0]["regulation_id"] == done["id"]
    for name, value in (("cdp.profile-changes", deleted[0]), ("cdp.tag-changes", exited[0])):
        assert schema(name).is_valid(value), value

    # The log still holds the entries, unreadable: every reader skips them; the erasure names profiles only.
    messages = read_messages(r.platform.app, 0, 100_000)[0]
    erasures = [m for m in messages if isinstance(m, ErasureMessage)]
    assert len(erasures) == 1 and erasures[0].profile_ids[0] == otto
    assert len(erasures[0].profile_ids) == 2  # and the anonymous profile merged into it
    assert rows_of(r, list(erasures[0].profile_ids)) == {}
    assert schema("cdp.events").is_valid(orjson.loads(encode(erasures[0])))
    calls = [m for m in messages if getattr(m, "call", None)]
    assert len(calls) == 1 and not any("otto-1" in str(m.call) or EMAIL in str(m.call) for m in calls)
    status = r.http.get(f"/v1/regulations/{done['id']}", headers=r.admin_headers).json()
    assert status["status"] == "done" and status["projections_behind"] == []

    # After the delete the same identifiers start afresh: a new person, not the erased one.
    send(r, {"type": "identify", "userId": "otto-1", "traits": {"plan": "new"}})
    fresh = r.profile("user_id:otto-1").json()
    assert fresh["profile_id"] != otto and "name" not in fresh["traits"] and fresh["event_count"] == 1


def test_a_rebuild_after_a_delete_gives_the_same_answers(running: Running) -> None:
    r = running
    tag = {"name": "Buyers", "rule": {"event": "Order Completed", "measure": "exists"}}  # tag steps recorded
    assert r.http.put("/v1/tags/rb-buyers", json=tag, headers=admin(r)).status_code == 200
    send(r, {"type": "identify", "userId": "rb-gone", "traits": {"email": "rb.gone@example.org"}},
         {"type": "track", "userId": "rb-gone", "event": "Order Completed", "properties": {"revenue": 5, "currency": "EUR"}},
         {"type": "identify", "userId": "rb-stays", "traits": {"email": "rb.stays@example.org"}})  # fmt: skip
    send(r, {"type": "identify", "userId": "rb-stays", "traits": {"plan": "pro"}})  # a page after the erased ones
    regulate(r, "delete", "email:RB.Gone@example.org")  # as the person wrote it: normalised like ingest does
    assert r.profile("user_id:rb-gone").status_code == 404
    send(r, {"type": "track", "userId": "rb-stays", "event": "Order Completed",
             "properties": {"revenue": 1, "currency": "EUR"}})  # fmt: skip
    p: Platform = r.platform
    assert verify_rebuild(p.app, p.store.client, p.settings.clickhouse_database) == []


def test_suppress_drops_later_calls_and_unsuppress_lets_them_in_again(running: Running) -> None:
    r = running
    send(r, {"type": "identify", "userId": "sup-1", "anonymousId": "dev-sup", "traits": {"email": "sup@example.org"}})
    regulate(r, "suppress", "email:sup@example.org")
    before = r.stored_event_count()
    letters = r.http.get("/v1/dead-letters", headers=r.admin_headers).json()["dead_letters"]
    answer = send(r, {"type": "track", "userId": "sup-1", "event": "Clicked"},
                  {"type": "track", "anonymousId": "dev-sup", "event": "Viewed"},
                  {"type": "track", "userId": "other-1", "event": "Clicked"})  # fmt: skip
    assert (answer["accepted"], answer["stored"], answer["suppressed"]) == (3, 1, 2)
    assert r.stored_event_count() == before + 1
    assert r.http.get("/v1/dead-letters", headers=r.admin_headers).json()["dead_letters"] == letters
    assert r.profile("user_id:sup-1").json()["event_count"] == 1  # still there: suppression erases nothing

    regulate(r, "unsuppress", "user_id:sup-1")  # any of the person's identifiers lifts it
    answer = send(r, {"type": "track", "userId": "sup-1", "event": "Clicked"})
    assert answer["stored"] == 1 and "suppressed" not in answer


def test_suppress_with_delete_erases_and_keeps_the_person_out(running: Running) -> None:
    r = running
    send(r, {"type": "identify", "userId": "swd-1", "traits": {"email": "swd@example.org"}})
    done = regulate(r, "suppress_with_delete", "user_id:swd-1")
    assert done["status"] == "done" and r.profile("user_id:swd-1").status_code == 404
    answer = send(r, {"type": "identify", "userId": "swd-1", "traits": {"email": "swd@example.org"}})
    assert answer["suppressed"] == 1 and r.profile("user_id:swd-1").status_code == 404


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        ({"type": "forget", "identifiers": ["user_id:x"]}, "bad_request", 400),
        ({"type": "delete", "identifiers": []}, "bad_request", 400),
        ({"type": "delete", "identifiers": "user_id:x"}, "bad_request", 400),
        ({"type": "delete", "identifiers": ["user_id:x"], "why": "x"}, "bad_request", 400),
        ([1, 2], "bad_request", 400),
    ],
)
def test_bad_regulations_are_refused_with_a_code(running: Running, body: Any, code: str, status: int) -> None:
    response = running.http.post("/v1/regulations", json=body, headers=running.admin_headers)
    assert response.status_code == status and response.json()["code"] == code, response.text


def test_regulations_need_the_admin_key_never_the_public_write_key(running: Running) -> None:
    body = {"type": "delete", "identifiers": ["user_id:x"]}
    assert running.http.post("/v1/regulations", json=body).status_code == 401
    for other in (write(running), running.read_headers):  # the write key is public; a read key erases nobody
        refused = running.http.post("/v1/regulations", json=body, headers=other)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), refused.text
        assert running.http.get(f"/v1/regulations/{uuid.uuid4()}", headers=other).status_code == 403
    missing = running.http.get(f"/v1/regulations/{uuid.uuid4()}", headers=running.admin_headers)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_a_delete_is_refused_while_encryption_is_off(settings: Settings) -> None:
    """Plain data cannot be erased by destroying keys: the delete says so rather than pretend."""
    platform = Platform(replace(settings, encryption=False))
    with TestClient(create_app(platform)) as client:
        r = Running(platform, client)
        send(r, {"type": "identify", "userId": "plain-1", "traits": {"email": "plain@example.org"}})
        refused = r.http.post("/v1/regulations", json={"type": "delete", "identifiers": ["user_id:plain-1"]},
                              headers=r.admin_headers)  # fmt: skip
        assert refused.status_code == 409 and refused.json()["code"] == "encryption_off", refused.text
        assert "CDP_ENCRYPTION" in refused.json()["message"]
        assert r.profile("user_id:plain-1").status_code == 200  # nothing half-done
        suppressed = r.http.post("/v1/regulations", json={"type": "suppress", "identifiers": ["user_id:plain-1"]},
                                 headers=r.admin_headers)  # fmt: skip
        assert suppressed.status_code == 202  # a suppression needs no key to destroy
