"""Identifier hygiene through HTTP: refused top-level ids say why, and look-alike ids are one profile."""

from __future__ import annotations

from typing import Any

from tests.conftest import Running


def _batch(running: Running, *calls: dict[str, Any]) -> None:
    response = running.send("/v1/batch", {"batch": list(calls)})
    assert response.status_code == 200, response.text


def _profile(running: Running, identifier: str) -> dict[str, Any]:
    response = running.profile(identifier)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_user_id_with_a_zero_width_space_is_refused_with_the_field_and_the_reason(running: Running) -> None:
    good = {"type": "track", "event": "Clicked", "userId": "u1", "messageId": "ok-1"}
    bad = {"type": "track", "event": "Clicked", "userId": "x@example.com\u200b", "messageId": "zw-1"}
    response = running.send("/v1/batch", {"batch": [good, bad]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stored"] == 1  # the good call is stored; the bad one is refused and kept as a dead letter
    (error,) = body["rejected"]
    assert (error["index"], error["field"]) == (1, "userId")
    assert "U+200B (ZERO WIDTH SPACE)" in error["reason"]
    assert "remove it" in error["reason"]
    assert running.stored_event_count() == 1

    single = running.send("/v1/track", {"event": "Clicked", "anonymousId": "a\u202e1", "messageId": "bidi-1"})
    assert single.status_code == 200 and single.json()["stored"] == 0, single.text
    (error,) = single.json()["rejected"]
    assert error["field"] == "anonymousId" and "U+202E (RIGHT-TO-LEFT OVERRIDE)" in error["reason"]
    assert running.stored_event_count() == 1
    assert len(running.platform.dead_letters.list(running.platform.workspace_id)) == 2


def test_a_full_width_user_id_is_the_same_profile_as_its_plain_form(running: Running) -> None:
    _batch(running,
           {"type": "identify", "userId": "ｕｓｅｒ４２", "anonymousId": "phone-1", "messageId": "i1",
            "traits": {"plan": "pro", "email": "Ａｎｎ@Example.com"}, "timestamp": "2026-03-01T10:00:00Z"},
           {"type": "identify", "userId": "user42", "anonymousId": "laptop-1", "messageId": "i2",
            "traits": {"city": "Berlin"}, "timestamp": "2026-03-02T10:00:00Z"})  # fmt: skip
    running.wait_caught_up()
    profile = _profile(running, "user_id:user42")
    assert profile["identifiers"] == {
        "user_id": ["user42"], "email": ["ann@example.com"], "anonymous_id": ["laptop-1", "phone-1"],
    }  # fmt: skip
    assert profile["counts"] == {"identify": 2}
    # A lookup is normalised as ingest stores: the full-width forms find the same profile.
    for identifier in ("user_id:ｕｓｅｒ４２", "email:ａｎｎ@example.com", "anonymous_id:phone-1"):
        assert _profile(running, identifier)["profile_id"] == profile["profile_id"]


def test_an_email_trait_that_is_not_an_email_is_kept_as_a_trait_but_links_nobody(running: Running) -> None:
    _batch(running,
           {"type": "identify", "anonymousId": "d1", "traits": {"email": "not an email"}, "messageId": "n1"},
           {"type": "identify", "anonymousId": "d2", "traits": {"email": "not an email"}, "messageId": "n2"},
           {"type": "identify", "anonymousId": "d3", "traits": {"email": "x@example.com\u200b"}, "messageId": "n3"},
           {"type": "identify", "anonymousId": "d4", "traits": {"email": "x@example.com"}, "messageId": "n4"},
           )  # fmt: skip
    running.wait_caught_up()
    one, two = _profile(running, "anonymous_id:d1"), _profile(running, "anonymous_id:d2")
    assert one["profile_id"] != two["profile_id"]
    assert "email" not in one["identifiers"] and one["traits"]["email"] == "not an email"
    three, four = _profile(running, "anonymous_id:d3"), _profile(running, "anonymous_id:d4")
    assert three["profile_id"] != four["profile_id"]
    assert "email" not in three["identifiers"] and four["identifiers"]["email"] == ["x@example.com"]
    missing = running.http.get("/v1/profiles/email:not an email", headers=running.read_headers)
    assert missing.status_code == 404
