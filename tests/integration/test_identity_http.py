"""Identity scenarios through the HTTP API, with the changes visible on Kafka."""

from __future__ import annotations

import time
from typing import Any


from tests.conftest import Running, read_topic


def _batch(running: Running, *calls: dict[str, Any]) -> None:
    response = running.send("/v1/batch", {"batch": list(calls)})
    assert response.status_code == 200, response.text


def _profile(running: Running, identifier: str, **params: str) -> dict[str, Any]:
    response = running.http.get(f"/v1/profiles/{identifier}", headers=running.read_headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _admin_headers(running: Running) -> dict[str, str]:
    return running.admin_headers


def _changes_on_kafka(running: Running, wanted: int, timeout: float = 10) -> list[dict[str, Any]]:
    bootstrap = running.platform.settings.bootstrap_servers
    return [m for _, m in read_topic(bootstrap, "cdp.profile-changes", lambda got: len(got) >= wanted, timeout)]


def test_two_devices_then_login_join_into_one_profile(running: Running) -> None:
    _batch(running, {"type": "page", "anonymousId": "phone-1", "name": "Home", "messageId": "p1",
                     "timestamp": "2026-03-01T10:00:00Z"})  # fmt: skip
    _batch(running, {"type": "page", "anonymousId": "laptop-1", "name": "Pricing", "messageId": "p2",
                     "timestamp": "2026-03-02T10:00:00Z"})  # fmt: skip
    _batch(running, {"type": "identify", "userId": "ann", "anonymousId": "phone-1", "messageId": "i1",
                     "traits": {"email": "Ann@Example.com"}, "timestamp": "2026-03-03T10:00:00Z"})  # fmt: skip
    _batch(running, {"type": "identify", "userId": "ann", "anonymousId": "laptop-1", "messageId": "i2",
                     "timestamp": "2026-03-04T10:00:00Z"})  # fmt: skip
    running.wait_caught_up()
    profile = _profile(running, "anonymous_id:laptop-1")
    assert profile["identifiers"] == {
        "user_id": ["ann"], "email": ["ann@example.com"], "anonymous_id": ["laptop-1", "phone-1"],
    }  # fmt: skip
    assert profile["counts"] == {"identify": 2, "page": 2}
    assert profile["first_seen"] == "2026-03-01T10:00:00.000Z"
    for identifier in ("user_id:ann", "email:ANN@example.com", "anonymous_id:phone-1", *profile["merged_profiles"]):
        assert _profile(running, identifier)["profile_id"] == profile["profile_id"]
    history = profile["merge_history"]
    absorbed = [c for c in history if c["change"] == "absorbed"]
    assert len(absorbed) == 1 and absorbed[0]["cause_event_id"] and "anonymous_id:laptop-1" in absorbed[0]["identifiers"]
    merges = running.http.get("/v1/profiles/user_id:ann/merges", headers=running.read_headers).json()["changes"]
    assert {"created", "linked", "absorbed", "merged_into"} <= {c["change"] for c in merges}

    changes = _changes_on_kafka(running, wanted=1)
    merged = [c for c in changes if c["change"] == "merged"]
    assert merged and merged[0]["profile_id"] == profile["profile_id"]
    assert merged[0]["merged_profile_id"] in profile["merged_profiles"]
    assert any(c["change"] in ("created", "updated") and "traits" in c for c in changes)


def test_a_shared_family_device_never_merges_two_users(running: Running) -> None:
    _batch(running,
           {"type": "identify", "userId": "mum", "anonymousId": "family-tablet", "messageId": "a",
            "timestamp": "2026-03-01T10:00:00Z"},
           {"type": "identify", "userId": "son", "anonymousId": "family-tablet", "messageId": "b",
            "timestamp": "2026-03-01T11:00:00Z"})  # fmt: skip
    running.wait_caught_up()
    mum, son = _profile(running, "user_id:mum"), _profile(running, "user_id:son")
    assert mum["profile_id"] != son["profile_id"]
    assert mum["identifiers"] == {"user_id": ["mum"], "anonymous_id": ["family-tablet"]}
    assert son["identifiers"] == {"user_id": ["son"]}
    refused = [c for c in son["merge_history"] if c["change"] == "merge_refused"]
    assert refused and "user_id is unique per profile" in refused[0]["reason"]
    assert refused[0]["other_profile_id"] == mum["profile_id"]
    assert any(c["change"] == "merge_refused" for c in _changes_on_kafka(running, wanted=1))


def test_a_blocked_email_merges_nothing(running: Running) -> None:
    _batch(running,
           {"type": "identify", "anonymousId": "x1", "traits": {"email": "test@test.com"}, "messageId": "a"},
           {"type": "identify", "anonymousId": "x2", "traits": {"email": " TEST@test.com "}, "messageId": "b"})
    running.wait_caught_up()
    one, two = _profile(running, "anonymous_id:x1"), _profile(running, "anonymous_id:x2")
    assert one["profile_id"] != two["profile_id"]
    assert "email" not in one["identifiers"]
    assert running.http.get("/v1/profiles/email:test@test.com", headers=running.read_headers).status_code == 404


def test_a_cap_breach_is_refused_and_says_why(running: Running) -> None:
    rules = running.http.get("/v1/identity/rules", headers=running.read_headers).json()
    assert rules["version"] == 0 and rules["rules"]["caps"]["email"] == 5
    rules["rules"]["caps"]["email"] = 1
    changed = running.http.put("/v1/identity/rules", json=rules["rules"], headers=_admin_headers(running))
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 1
    _batch(running,
           {"type": "identify", "userId": "u1", "traits": {"email": "one@example.com"}, "messageId": "a",
            "timestamp": "2026-03-01T10:00:00Z"},
           {"type": "identify", "userId": "u1", "traits": {"email": "two@example.com"}, "messageId": "b",
            "timestamp": "2026-03-01T11:00:00Z"})  # fmt: skip
    running.wait_caught_up()
    profile = _profile(running, "user_id:u1")
    assert profile["identifiers"]["email"] == ["one@example.com"]
    refused = [c for c in profile["merge_history"] if c["change"] == "merge_refused"]
    assert refused[0]["identifiers"] == ["email:two@example.com"]
    assert refused[0]["reason"] == "a profile holds at most 1 email values"


def test_rules_are_validated_versioned_and_need_the_admin_key(running: Running) -> None:
    bad = running.http.put("/v1/identity/rules", json={"caps": {"email": 0}, "external_id_types": ["Bad Name"]},
                           headers=_admin_headers(running))  # fmt: skip
    assert bad.status_code == 400
    fields = {e["field"] for e in bad.json()["errors"]}
    assert {"caps", "external_id_types"} <= fields
    unknown = running.http.put("/v1/identity/rules", json={"colour": "red"}, headers=_admin_headers(running))
    assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "colour"
    for other in (running.read_headers, {"Authorization": f"Bearer {running.write_key}"}):  # neither changes rules
        refused = running.http.put("/v1/identity/rules", json={}, headers=other)
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), refused.text
    assert running.http.get("/v1/identity/rules", headers=running.read_headers).json()["version"] == 0
    ok = running.http.put("/v1/identity/rules", json={"external_id_types": ["crm_id"]}, headers=_admin_headers(running))
    assert ok.json()["version"] == 1
    _batch(running,
           {"type": "identify", "userId": "u7", "traits": {"crm_id": "C-7"}, "messageId": "a"},
           {"type": "track", "anonymousId": "web-7", "event": "Viewed", "messageId": "b",
            "context": {"externalIds": [{"id": "C-7", "type": "crm_id", "collection": "users", "encoding": "none"}]}})
    running.wait_caught_up()
    assert _profile(running, "crm_id:C-7")["identifiers"] == {
        "user_id": ["u7"], "crm_id": ["C-7"], "anonymous_id": ["web-7"],
    }  # fmt: skip


def test_a_late_identify_does_not_overwrite_newer_traits(running: Running) -> None:
    _batch(running, {"type": "identify", "userId": "u1", "traits": {"plan": "pro", "city": "Berlin"},
                     "messageId": "new", "timestamp": "2026-03-02T10:00:00Z"})  # fmt: skip
    running.wait_caught_up()
    _batch(running, {"type": "identify", "userId": "u1", "traits": {"plan": "free", "age": 41},
                     "messageId": "late", "timestamp": "2026-03-01T10:00:00Z"})  # fmt: skip
    running.wait_caught_up()
    assert _profile(running, "user_id:u1")["traits"] == {"plan": "pro", "city": "Berlin", "age": 41}


def test_source_precedence_lets_the_crm_win(running: Running) -> None:
    rules = {"trait_sources": {"plan": ["crm", "web"]}}
    assert running.http.put("/v1/identity/rules", json=rules, headers=_admin_headers(running)).status_code == 200
    _batch(running,
           {"type": "identify", "userId": "u1", "traits": {"plan": "gold"}, "context": {"source": "crm"},
            "messageId": "a", "timestamp": "2026-03-01T10:00:00Z"},
           {"type": "identify", "userId": "u1", "traits": {"plan": "free", "name": "Ann"},
            "context": {"source": "web"}, "messageId": "b", "timestamp": "2026-03-05T10:00:00Z"})  # fmt: skip
    running.wait_caught_up()
    profile = _profile(running, "user_id:u1")
    assert profile["traits"] == {"plan": "gold", "name": "Ann"}
    assert profile["trait_sources"] == {"plan": "crm", "name": "web"}


def test_split_restores_the_profiles_as_if_never_merged(running: Running) -> None:
    _batch(running,
           {"type": "page", "anonymousId": "kiosk", "name": "Home", "messageId": "k1", "timestamp": "2026-03-01T10:00:00Z"},
           {"type": "identify", "anonymousId": "kiosk", "traits": {"lang": "de"}, "messageId": "k2",
            "timestamp": "2026-03-01T10:01:00Z"},
           {"type": "track", "userId": "bob", "event": "Order Completed", "messageId": "b1",
            "properties": {"revenue": 30, "currency": "EUR"}, "timestamp": "2026-03-01T09:00:00Z"})  # fmt: skip
    running.wait_caught_up()
    kiosk_before, bob_before = _profile(running, "anonymous_id:kiosk"), _profile(running, "user_id:bob")
    _batch(running, {"type": "alias", "previousId": "kiosk", "userId": "bob", "messageId": "m",
                     "timestamp": "2026-03-01T12:00:00Z"})  # fmt: skip
    running.wait_caught_up()
    merged = _profile(running, "anonymous_id:kiosk")
    assert merged["profile_id"] == bob_before["profile_id"] and merged["event_count"] == 4

    split = running.http.post(f"/v1/profiles/{merged['profile_id']}/split",
                              json={"identifiers": ["anonymous_id:kiosk"], "reason": "shared kiosk"},
                              headers=_admin_headers(running))  # fmt: skip
    assert split.status_code == 201, split.text
    new_id = split.json()["new_profile_id"]
    running.wait_caught_up()
    kiosk, bob = _profile(running, "anonymous_id:kiosk"), _profile(running, "user_id:bob")
    assert kiosk["profile_id"] == new_id

    def comparable(p: dict[str, Any]) -> dict[str, Any]:
        return {k: p[k] for k in ("identifiers", "traits", "counts", "event_count", "first_seen", "last_seen")}

    assert comparable(kiosk) == comparable(kiosk_before)
    assert bob["counts"] == {"track": 1, "alias": 1}  # the alias names bob first: it stays with him
    assert bob["computed_traits"]["revenue"] == {"EUR": 30.0}
    assert [c["change"] for c in bob["merge_history"]].count("split_apart") == 1
    assert any(c["change"] == "split" and c["new_profile_id"] == new_id for c in _changes_on_kafka(running, 1))

    refused = running.http.post(f"/v1/profiles/{bob['profile_id']}/split", json={"identifiers": ["user_id:bob"]},
                                headers=_admin_headers(running))  # fmt: skip
    assert refused.status_code == 409 and "at least one identifier" in refused.json()["message"]
    missing = running.http.post(f"/v1/profiles/{bob['profile_id']}/split", json={"identifiers": ["email:x@y.z"]},
                                headers=_admin_headers(running))  # fmt: skip
    assert missing.status_code == 409 and "not on it: email:x@y.z" in missing.json()["message"]


def test_time_travel_answers_as_the_profile_stood_then(running: Running) -> None:
    _batch(running, {"type": "track", "anonymousId": "d1", "event": "Viewed", "messageId": "a"})
    running.wait_caught_up()
    between = time.time()
    time.sleep(0.01)  # distinct recording times on either side of `between`
    _batch(running, {"type": "identify", "userId": "carl", "anonymousId": "d1", "messageId": "b"})
    running.wait_caught_up()
    from datetime import datetime, timezone

    as_of = datetime.fromtimestamp(between, timezone.utc).isoformat()
    then = _profile(running, "anonymous_id:d1", as_of=as_of)
    now = _profile(running, "anonymous_id:d1")
    assert then["identifiers"] == {"anonymous_id": ["d1"]} and then["event_count"] == 1
    assert now["identifiers"] == {"user_id": ["carl"], "anonymous_id": ["d1"]} and now["event_count"] == 2
    assert running.http.get("/v1/profiles/user_id:carl", params={"as_of": as_of},
                            headers=running.read_headers).status_code == 404  # fmt: skip
    assert running.http.get("/v1/profiles/user_id:carl", params={"as_of": "yesterday"},
                            headers=running.read_headers).status_code == 400  # fmt: skip


def test_computed_traits_and_lifecycle(running: Running) -> None:
    _batch(running,
           {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "o1",
            "properties": {"order_id": "A", "revenue": 100, "currency": "eur"}, "timestamp": "2026-03-01T10:00:00Z"},
           {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "o2",
            "properties": {"order_id": "B", "revenue": 50, "currency": "EUR"}, "timestamp": "2026-03-02T10:00:00Z"},
           {"type": "track", "userId": "u1", "event": "Order Refunded", "messageId": "o3",
            "properties": {"order_id": "B", "revenue": 50, "currency": "EUR"}, "timestamp": "2026-03-03T10:00:00Z"},
           {"type": "track", "userId": "u1", "event": "Ticket Opened", "messageId": "t1",
            "properties": {"ticket_id": "T1"}, "timestamp": "2026-03-03T10:00:00Z"},
           {"type": "track", "userId": "u1", "event": "Ticket Opened", "messageId": "t2",
            "properties": {"ticket_id": "T2"}, "timestamp": "2026-03-03T11:00:00Z"},
           {"type": "track", "userId": "u1", "event": "Ticket Resolved", "messageId": "t3",
            "properties": {"ticket_id": "T1"}, "timestamp": "2026-03-04T11:00:00Z"},
           {"type": "track", "userId": "u1", "event": "Feedback Submitted", "messageId": "f1",
            "properties": {"csat": 4}, "timestamp": "2026-03-04T12:00:00Z"},
           {"type": "track", "userId": "u1", "event": "Feedback Submitted", "messageId": "f2",
            "properties": {"csat": 5}, "timestamp": "2026-03-04T13:00:00Z"},
           {"type": "identify", "userId": "u2", "traits": {"email": "u2@example.com"}, "messageId": "l1"})  # fmt: skip
    running.wait_caught_up()
    computed = _profile(running, "user_id:u1")["computed_traits"]
    assert computed["orders_count"] == 2
    assert computed["revenue"] == {"EUR": 100.0}
    assert computed["average_order_value"] == {"EUR": 75.0}  # before refunds, per order, as the KPI
    assert computed["last_order_at"] == "2026-03-02T10:00:00.000Z"
    assert computed["open_tickets"] == 1
    assert computed["average_csat"] == 4.5
    assert computed["rfm"]["frequency"] in range(1, 6) and computed["rfm"]["tier"]
    assert computed["lifecycle_stage"] in ("repeat_customer", "at_risk", "churned")
    assert _profile(running, "user_id:u2")["computed_traits"]["lifecycle_stage"] == "lead"


def test_find_profiles_by_trait_paginated(running: Running) -> None:
    _batch(running, *[
        {"type": "identify", "userId": f"u{i}", "traits": {"plan": "pro" if i % 2 else "free", "seats": i},
         "messageId": f"m{i}"} for i in range(7)
    ])  # fmt: skip
    running.wait_caught_up()
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"trait.plan": "pro", "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = running.http.get("/v1/profiles", params=params, headers=running.read_headers).json()
        seen += [p["identifiers"]["user_id"][0] for p in page["profiles"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == ["u1", "u3", "u5"]
    numbers = running.http.get("/v1/profiles", params={"trait.seats": "4"}, headers=running.read_headers).json()
    assert [p["identifiers"]["user_id"] for p in numbers["profiles"]] == [["u4"]]
    unknown = running.http.get("/v1/profiles", params={"plan": "pro"}, headers=running.read_headers)
    assert unknown.status_code == 400 and unknown.json()["code"] == "bad_request"


def test_list_every_profile_paginated(running: Running) -> None:
    """Without a trait filter every profile is listed, by profile id, `limit` at a time (at most 1000)."""
    _batch(running, *[{"type": "identify", "userId": f"u{i}", "messageId": f"m{i}"} for i in range(5)])
    running.wait_caught_up()
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        answer = running.http.get("/v1/profiles", params=params, headers=running.read_headers)
        assert answer.status_code == 200, answer.text
        pages.append([p["profile_id"] for p in answer.json()["profiles"]])
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
    ids = [i for page in pages for i in page]
    assert [len(page) for page in pages] == [2, 2, 1] and ids == sorted(ids) and len(set(ids)) == 5
    everyone = running.http.get("/v1/profiles", params={"limit": 1000}, headers=running.read_headers).json()
    assert sorted(p["identifiers"]["user_id"][0] for p in everyone["profiles"]) == [f"u{i}" for i in range(5)]
    assert everyone["next_cursor"] is None
    too_many = running.http.get("/v1/profiles", params={"limit": 1001}, headers=running.read_headers)
    assert too_many.status_code == 422


def test_timeline_filters_by_type_and_time(running: Running) -> None:
    _batch(running, *[
        {"type": "track", "userId": "u1", "event": name, "messageId": f"m{i}", "timestamp": f"2026-03-0{i + 1}T10:00:00Z"}
        for i, name in enumerate(["Viewed", "Order Completed", "Viewed", "Signed Up"])
    ])  # fmt: skip
    running.wait_caught_up()

    def events(**params: Any) -> list[str]:
        body = running.http.get("/v1/profiles/user_id:u1/events", params=params, headers=running.read_headers).json()
        return [e["message_id"] for e in body["events"]]

    assert events(type="Viewed") == ["m2", "m0"]
    assert events(**{"from": "2026-03-02T00:00:00Z", "to": "2026-03-04T00:00:00Z"}) == ["m2", "m1"]
    assert events(type=["Signed Up", "Order Completed"]) == ["m3", "m1"]


def test_group_traits_identify_no_one_and_split_input_is_normalised(running: Running) -> None:
    _batch(running,
           {"type": "identify", "userId": "eve", "traits": {"email": "Eve@Example.com"}, "messageId": "a",
            "timestamp": "2026-03-01T10:00:00Z"},
           {"type": "identify", "userId": "eve", "anonymousId": "eve-laptop", "messageId": "b",
            "timestamp": "2026-03-01T11:00:00Z"},
           {"type": "group", "userId": "eve", "groupId": "acme", "traits": {"email": "billing@acme.com"},
            "messageId": "c", "timestamp": "2026-03-01T12:00:00Z"})  # fmt: skip
    running.wait_caught_up()
    eve = _profile(running, "user_id:eve")
    assert eve["identifiers"]["email"] == ["eve@example.com"]  # the company's email did not become hers
    split = running.http.post(f"/v1/profiles/{eve['profile_id']}/split",
                              json={"identifiers": ["Anonymous_ID: eve-laptop"]},
                              headers=_admin_headers(running))  # fmt: skip
    assert split.status_code == 201, split.text
    assert split.json()["identifiers"] == ["anonymous_id:eve-laptop"]
