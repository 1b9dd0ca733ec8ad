"""Segment-compatible HTTP ingest on a running platform: every outcome, and what gets stored."""

from __future__ import annotations

import base64
import gzip
import zlib
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import orjson
import pytest

from tests.conftest import Running

KB = 1024


def iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def track(message_id: str, user_id: str = "u1", **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Clicked", "userId": user_id, "messageId": message_id, **fields}


def assert_refused(
    running: Running,
    response: Any,
    status: int,
    code: str,
    message: str,
    errors: list[tuple[int | None, str, str]] | None = None,
    dead_letters: int = 0,
) -> None:
    """A request refused as a whole: one error shape; nothing in the log; `dead_letters` kept with the reason."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and message in body["message"], body
    got = body.get("errors", [])
    assert [(e["index"], e["field"]) for e in got] == [(i, f) for i, f, _ in errors or []]
    for entry, (_, _, reason) in zip(got, errors or []):
        assert entry["reason"] and reason in entry["reason"]
    if status == 401:
        assert response.headers["www-authenticate"] == 'Basic realm="cdp"'
    assert running.stored_event_count() == 0
    assert len(running.platform.dead_letters.list(running.platform.workspace_id)) == dead_letters


def assert_partial(
    running: Running, response: Any, stored: int, rejected: list[tuple[int, str, str]], code: str = "invalid_event"
) -> None:
    """200: the valid events are stored, each invalid one is reported and kept as a dead letter."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["accepted"] == stored and body["stored"] == stored
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [(i, f) for i, f, _ in rejected]
    for entry, (_, _, reason) in zip(body["rejected"], rejected):
        assert entry["reason"] and reason in entry["reason"] and entry["code"]
    assert running.stored_event_count() == stored
    letters = running.platform.dead_letters.list(running.platform.workspace_id)
    assert len(letters) == len({i for i, _, _ in rejected})
    assert all(letter.source == "http" and letter.reason and letter.body for letter in letters)


# 401 ----------------------------------------------------------------------------------------


def test_no_authorization_and_no_write_key(running: Running) -> None:
    response = running.http.post("/v1/batch", json={"batch": [track("m1")]})
    assert_refused(running, response, 401, "missing_key", "missing write key")


def test_unknown_write_key(running: Running) -> None:
    response = running.http.post("/v1/batch", json={"batch": [track("m1")]}, auth=("wk_nope", ""))
    assert_refused(running, response, 401, "unknown_key", "unknown write key")


def test_unknown_write_key_in_the_body(running: Running) -> None:
    response = running.http.post("/v1/batch", json={"writeKey": "wk_nope", "batch": [track("m1")]})
    assert_refused(running, response, 401, "unknown_key", "unknown write key")


@pytest.mark.parametrize("token", ["!!not-base64!!", base64.b64encode(b"\xff\xfe:").decode()])
def test_malformed_basic_header(running: Running, token: str) -> None:
    body = {"writeKey": running.write_key, "batch": [track("m1")]}  # a bad header is not overridden by the body
    response = running.http.post("/v1/batch", json=body, headers={"Authorization": f"Basic {token}"})
    assert_refused(running, response, 401, "invalid_credentials", "not valid HTTP Basic credentials")


def test_read_key_is_not_a_write_key(running: Running) -> None:
    response = running.http.post("/v1/batch", json={"batch": [track("m1")]}, auth=(running.read_key, ""))
    assert_refused(running, response, 401, "unknown_key", "unknown write key")


def test_write_key_in_the_json_body(running: Running) -> None:
    response = running.http.post("/v1/track", json={"writeKey": running.write_key, **track("m1")})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 1, "stored": 1, "duplicates": 0, "rejected": []}
    assert running.stored_event_count() == 1


# Requests that cannot be read ---------------------------------------------------------------


def test_body_not_json(running: Running) -> None:
    response = running.http.post("/v1/batch", content=b'{"batch": [', auth=(running.write_key, ""))
    assert_refused(running, response, 400, "invalid_json", "not valid JSON", dead_letters=1)
    [letter] = running.platform.dead_letters.list(running.platform.workspace_id)
    assert letter.body == b'{"batch": [' and letter.code == "invalid_json"


def test_body_not_json_without_a_known_key_is_not_kept(running: Running) -> None:
    response = running.http.post("/v1/batch", content=b'{"writeKey": "x", "batch": [')
    assert_refused(running, response, 400, "invalid_json", "not valid JSON", dead_letters=0)


def test_body_a_json_array(running: Running) -> None:
    assert_refused(running, running.send("/v1/batch", [track("m1")]), 400, "invalid_json", "must be a JSON object",
                   dead_letters=1)  # fmt: skip


@pytest.mark.parametrize("body", [{}, {"batch": []}, {"batch": {"0": track("m1")}}, {"batch": "m1"}])
def test_batch_missing_empty_or_not_a_list(running: Running, body: dict[str, Any]) -> None:
    response = running.send("/v1/batch", body)
    assert_refused(running, response, 400, "invalid_batch", "non-empty array", [(None, "batch", "non-empty array")],
                   dead_letters=1)  # fmt: skip


def test_bad_batch_sent_at(running: Running) -> None:
    response = running.send("/v1/batch", {"sentAt": "not a time", "batch": [track("m0")]})
    assert_refused(running, response, 400, "invalid_request", "sentAt", [(None, "sentAt", "ISO 8601")], dead_letters=1)


# Hostile bodies: each gets an answer that says what is wrong, never a 5xx ------------------


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    "depth",
    [255, 300, 1000],
)
def test_properties_nested_deeper_than_json_encoders_take_are_refused_alone(running: Running, depth: int) -> None:
    """The body parses (orjson reads 1024 levels) but writes at most 254: the event is refused, not the request."""
    content = f'{{"batch": [{orjson.dumps(track("m0")).decode()}, {{"type": "track", "userId": "u1", "event": "E", ' \
              f'"properties": {nested(depth)}}}]}}'  # fmt: skip
    response = running.http.post("/v1/batch", content=content.encode(), auth=(running.write_key, ""))
    assert_partial(running, response, 1, [(1, "(event)", "nested too deeply")])


def test_a_body_nested_deeper_than_the_parser_reads_is_400(running: Running) -> None:
    content = '{"batch": [' + "[" * 2000 + "]" * 2000 + "]}"
    response = running.http.post("/v1/batch", content=content.encode(), auth=(running.write_key, ""))
    assert_refused(running, response, 400, "invalid_json", "depth limit exceeded", dead_letters=1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"userId": "u1", "event": "E", "properties": {"n": NaN}}', "not valid JSON"),
        (b'{"userId": "u1", "event": "E", "properties": {"n": Infinity}}', "not valid JSON"),
        (b'{"userId": "u1", "event": "E", "properties": {"n": 1e400}}', "infinity"),
        (b'{"userId": "u1\xff", "event": "E"}', "not valid UTF-8"),
        (b'{"userId": "\\ud800", "event": "E"}', "surrogate"),
        (b"", "empty"),
        (b"userId=u1&event=E", "not valid JSON"),
    ],
)
def test_a_body_that_is_not_json_is_400(running: Running, content: bytes, message: str) -> None:
    for content_type in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
        response = running.http.post(
            "/v1/track", content=content, headers={"Content-Type": content_type}, auth=(running.write_key, "")
        )
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_json" and message in response.json()["message"], response.text
    assert running.stored_event_count() == 0


def test_integers_beyond_64_bits_are_stored_as_numbers(running: Running) -> None:
    content = b'{"userId": "u1", "event": "E", "properties": {"big": 123456789012345678901234567890, "neg": -18446744073709551617}}'
    response = running.http.post("/v1/track", content=content, auth=(running.write_key, ""))
    assert response.status_code == 200 and response.json()["stored"] == 1, response.text
    running.wait_caught_up()
    [event] = running.http.get("/v1/profiles/user_id:u1/events", headers=running.read_headers).json()["events"]
    assert event["properties"] == {"big": 1.2345678901234568e29, "neg": -1.8446744073709552e19}


@pytest.mark.parametrize(
    ("sent_at", "timestamp"),
    [
        ("0001-01-01T00:00:00+05:00", "2026-01-01T00:00:00Z"),  # sentAt has no UTC time
        ("9999-12-31T23:59:59-05:00", "2026-01-01T00:00:00Z"),
        ("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z"),  # the correction leaves every date
    ],
)
def test_a_sent_at_that_cannot_be_combined_refuses_the_event_with_the_reason(
    running: Running, sent_at: str, timestamp: str
) -> None:
    response = running.send("/v1/batch", {"sentAt": sent_at, "batch": [track("m0", timestamp=timestamp)]})
    assert_partial(running, response, 0, [(0, "timestamp", "")], code="out_of_range")
    assert response.json()["rejected"][0]["code"] == "out_of_range"


# Invalid events beside valid ones -----------------------------------------------------------


def test_valid_events_are_stored_and_every_bad_one_reported_and_kept(running: Running) -> None:
    batch = [track("m0"), {"type": "track", "userId": "u1", "messageId": "bad1"}, {"type": "track", "event": "E"}]
    response = running.send("/v1/batch", {"batch": batch})
    assert_partial(running, response, 1, [(1, "event", "required"), (2, "(event)", "either userId or anonymousId")])
    assert response.json()["rejected"][0]["messageId"] == "bad1"
    letters = running.platform.dead_letters.list(running.platform.workspace_id)
    assert orjson.loads(letters[0].body) == batch[1] and letters[0].field == "event"


def test_a_strict_request_is_all_or_nothing(running: Running) -> None:
    batch = [track("m0"), {"type": "track", "userId": "u1"}]
    for how in ({"params": {"strict": "true"}}, {"headers": {"X-CDP-Strict": "true"}}):
        response = running.send("/v1/batch", {"batch": batch}, **how)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_events"
        assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [(1, "event")]
    assert running.stored_event_count() == 0
    letters = running.platform.dead_letters.list(running.platform.workspace_id)
    assert sorted(letter.code for letter in letters) == ["invalid_event", "invalid_event", "strict_request", "strict_request"]
    assert running.send("/v1/batch", {"batch": [track("m0")]}, params={"strict": "true"}).status_code == 200


@pytest.mark.parametrize("item", [{"type": "purchase", "userId": "u1"}, {"userId": "u1", "event": "E"}])
def test_unknown_or_missing_type(running: Running, item: dict[str, Any]) -> None:
    response = running.send("/v1/batch", {"batch": [track("m0"), item]})
    assert_partial(running, response, 1, [(1, "type", "type must be one of identify, track")])


def test_an_item_that_is_not_an_object(running: Running) -> None:
    response = running.send("/v1/batch", {"batch": [track("m0"), "m1"]})
    assert_partial(running, response, 1, [(1, "(event)", "dictionary")])


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (track("m0", properties=["not", "an", "object"]), "properties"),
        (track("m0", context="web"), "context"),
        ({"type": "identify", "userId": "u1", "traits": 5}, "traits"),
        (track("m0", timestamp="yesterday"), "timestamp"),
        ({"type": "group", "userId": "u1", "groupId": True}, "groupId"),
    ],
)
def test_field_errors_name_the_field(running: Running, item: dict[str, Any], field: str) -> None:
    response = running.send("/v1/batch", {"batch": [item]})
    assert_partial(running, response, 0, [(0, field, "")])


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/track", {"userId": "u1"}, "event"),
        ("/v1/group", {"userId": "u1"}, "groupId"),
        ("/v1/alias", {"userId": "u1"}, "previousId"),
        ("/v1/identify", {"traits": {"email": "a@x.io"}}, "(event)"),
    ],
)
def test_single_call_endpoint_validation(running: Running, path: str, body: dict[str, Any], field: str) -> None:
    assert_partial(running, running.send(path, body), 0, [(0, field, "")])


# Size limits --------------------------------------------------------------------------------


def test_one_event_above_32_kb_in_a_batch_is_refused_alone(running: Running) -> None:
    big = track("m1", properties={"blob": "x" * (33 * KB)})
    response = running.send("/v1/batch", {"batch": [track("m0"), big, track("m2")]})
    assert_partial(running, response, 2, [(1, "(event)", "above the 32768 byte limit")])
    assert response.json()["rejected"][0]["code"] == "too_large"


def _chunks(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 64 * KB):
        yield body[start : start + 64 * KB]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_a_request_body_above_500_kb(running: Running, streamed: bool) -> None:
    batch = [track(f"m{i}", properties={"blob": "x" * (30 * KB)}) for i in range(20)]  # each event fits
    raw = orjson.dumps({"batch": batch})
    assert len(raw) > 500 * KB
    content: Any = _chunks(raw) if streamed else raw
    headers = {"Content-Type": "application/json"}
    response = running.http.post("/v1/batch", content=content, headers=headers, auth=(running.write_key, ""))
    assert_refused(running, response, 413, "too_large", "above the 512000 byte limit")


def test_a_single_track_body_above_32_kb(running: Running) -> None:
    response = running.send("/v1/track", track("m1", properties={"blob": "x" * (33 * KB)}))
    assert_refused(running, response, 413, "too_large", "above the 32768 byte limit")


# Compressed bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_bodies_are_read(running: Running, encoding: str) -> None:
    raw = orjson.dumps({"batch": [track("m0"), track("m1")]})
    if encoding == "gzip":
        body = gzip.compress(raw)
    elif encoding == "deflate":
        body = zlib.compress(raw)
    else:
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = packer.compress(raw) + packer.flush()
    header = "gzip" if encoding == "gzip" else "deflate"
    response = running.http.post("/v1/batch", content=body, headers={"Content-Encoding": header},
                                 auth=(running.write_key, ""))  # fmt: skip
    assert response.status_code == 200, response.text
    assert running.stored_event_count() == 2


def test_a_gzip_bomb_is_refused_before_it_is_inflated(running: Running) -> None:
    bomb = gzip.compress(b"{" + b" " * (200 * 1024 * 1024))  # 200 MB of spaces, about 200 KB compressed
    assert len(bomb) < 500 * KB
    response = running.http.post("/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"},
                                 auth=(running.write_key, ""))  # fmt: skip
    assert_refused(running, response, 413, "too_large", "above the 512000 byte limit")


@pytest.mark.parametrize("content", [b"not gzip at all", gzip.compress(b'{"batch": []}')[:-12]])
def test_a_broken_gzip_body_is_400(running: Running, content: bytes) -> None:
    response = running.http.post("/v1/batch", content=content, headers={"Content-Encoding": "gzip"},
                                 auth=(running.write_key, ""))  # fmt: skip
    assert_refused(running, response, 400, "invalid_encoding", "gzip")


def test_an_unknown_content_encoding_is_415(running: Running) -> None:
    response = running.http.post("/v1/batch", content=b"{}", headers={"Content-Encoding": "br"},
                                 auth=(running.write_key, ""))  # fmt: skip
    assert_refused(running, response, 415, "unsupported_encoding", "br")


# Deduplication ------------------------------------------------------------------------------


def test_the_same_batch_posted_twice_is_stored_once(running: Running) -> None:
    body = {"batch": [track("m1"), track("m2", event="Bought")]}
    for _ in range(2):
        response = running.send("/v1/batch", body)
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 2
    assert running.stored_event_count() == 2
    running.wait_caught_up()
    assert running.profile("user_id:u1").json()["counts"] == {"track": 2}


def test_the_same_message_id_twice_in_one_batch_is_stored_once(running: Running) -> None:
    response = running.send("/v1/batch", {"batch": [track("m1"), track("m1")]})
    assert response.status_code == 200, response.text
    assert running.stored_event_count() == 1
    running.wait_caught_up()
    assert running.profile("user_id:u1").json()["event_count"] == 1


# Single-call endpoints ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call_type", "body", "identifier"),
    [
        ("identify", {"userId": "u1", "traits": {"plan": "pro"}}, "user_id:u1"),
        ("track", {"anonymousId": "a1", "event": "Signed Up"}, "anonymous_id:a1"),
        ("page", {"userId": "u1", "name": "Home"}, "user_id:u1"),
        ("screen", {"userId": 42, "name": "Settings"}, "user_id:42"),
        ("group", {"userId": "u1", "groupId": "g1"}, "user_id:u1"),
        ("alias", {"previousId": "a1", "userId": "u1"}, "anonymous_id:a1"),
    ],
)
def test_each_single_call_endpoint(running: Running, call_type: str, body: dict[str, Any], identifier: str) -> None:
    response = running.send(f"/v1/{call_type}", body)
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1
    running.wait_caught_up()
    profile = running.profile(identifier)
    assert profile.status_code == 200, profile.text
    assert profile.json()["counts"] == {call_type: 1}


def test_the_endpoint_sets_the_type(running: Running) -> None:
    response = running.send("/v1/track", {"type": "identify", "userId": "u1", "event": "Clicked", "messageId": "m1"})
    assert response.status_code == 200, response.text
    running.wait_caught_up()
    [event] = running.http.get("/v1/profiles/user_id:u1/events", headers=running.read_headers).json()["events"]
    assert (event["type"], event["event"], event["message_id"]) == ("track", "Clicked", "m1")


# Clock skew ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batched", [False, True], ids=["call-sentAt", "batch-sentAt"])
def test_a_client_clock_one_hour_fast_is_corrected(running: Running, batched: bool) -> None:
    ahead = iso(datetime.now(timezone.utc) + timedelta(hours=1))
    call = track("m1", timestamp=ahead)
    if batched:
        response = running.send("/v1/batch", {"sentAt": ahead, "batch": [call]})
    else:
        response = running.send("/v1/track", {**call, "sentAt": ahead})
    assert response.status_code == 200, response.text
    running.wait_caught_up()
    [event] = running.http.get("/v1/profiles/user_id:u1/events", headers=running.read_headers).json()["events"]
    stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert abs(stamp - datetime.now(timezone.utc)) < timedelta(seconds=5)


def test_a_call_without_timestamp_is_timed_at_receipt_even_with_sent_at(running: Running) -> None:
    ahead = iso(datetime.now(timezone.utc) + timedelta(hours=1))
    assert running.send("/v1/track", {**track("m1"), "sentAt": ahead}).status_code == 200
    running.wait_caught_up()
    [event] = running.http.get("/v1/profiles/user_id:u1/events", headers=running.read_headers).json()["events"]
    stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert abs(stamp - datetime.now(timezone.utc)) < timedelta(seconds=5)


# Query auth and identifiers -----------------------------------------------------------------


def test_profile_query_needs_the_read_key(running: Running) -> None:
    assert running.send("/v1/track", track("m1")).status_code == 200
    running.wait_caught_up()
    no_key = running.http.get("/v1/profiles/user_id:u1")
    assert (no_key.status_code, no_key.json()["code"]) == (401, "unauthorized")
    assert no_key.json()["message"].startswith("missing key: reading profiles needs a read key with the profiles scope")
    unknown = running.http.get("/v1/profiles/user_id:u1", headers={"Authorization": "Bearer rk_not-a-key"})
    assert (unknown.status_code, unknown.json()["code"]) == (401, "unauthorized")
    assert unknown.json()["message"].startswith("unknown, revoked or expired key")
    write_key = running.http.get("/v1/profiles/user_id:u1", headers={"Authorization": f"Bearer {running.write_key}"})
    assert (write_key.status_code, write_key.json()["code"]) == (403, "forbidden")  # the write key is public
    said = write_key.json()["message"]
    assert "this write key" in said and "a read key with the profiles scope, or an admin key" in said
    assert running.profile("user_id:u1").status_code == 200


def test_unknown_identifier_is_404(running: Running) -> None:
    response = running.profile("user_id:nobody")
    assert response.status_code == 404
    assert "no profile has the identifier 'user_id:nobody'" in response.json()["message"]


@pytest.mark.parametrize("identifier", ["nobody", "color:blue", "not-a-uuid-0000"])
def test_bad_identifier_is_400(running: Running, identifier: str) -> None:
    response = running.profile(identifier)
    assert response.status_code == 400
    assert "neither a profile id nor type:value" in response.json()["message"]


# Timeline pagination ------------------------------------------------------------------------


def _pages(running: Running, identifier: str, limit: int) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = running.http.get(f"/v1/profiles/{identifier}/events", params=params, headers=running.read_headers)
        assert response.status_code == 200, response.text
        pages.append(response.json()["events"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 10, "pagination does not end"


def test_timeline_pages_newest_first_without_duplicates(running: Running) -> None:
    start = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    batch = [track(f"m{i}", timestamp=iso(start + timedelta(minutes=i))) for i in range(5)]
    assert running.send("/v1/batch", {"batch": batch}).status_code == 200
    running.wait_caught_up()
    pages = _pages(running, "user_id:u1", limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [e["message_id"] for page in pages for e in page] == ["m4", "m3", "m2", "m1", "m0"]


def test_timeline_pages_events_with_equal_timestamps(running: Running) -> None:
    same = iso(datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc))
    assert running.send("/v1/batch", {"batch": [track(f"m{i}", timestamp=same) for i in range(5)]}).status_code == 200
    running.wait_caught_up()
    pages = _pages(running, "user_id:u1", limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert sorted(e["message_id"] for page in pages for e in page) == [f"m{i}" for i in range(5)]


@pytest.mark.parametrize("cursor", ["garbage", "!!!", base64.urlsafe_b64encode(b"2024-05-01T12:00:00Z|nope").decode()])
def test_a_garbage_cursor_is_400(running: Running, cursor: str) -> None:
    assert running.send("/v1/track", track("m1")).status_code == 200
    running.wait_caught_up()
    response = running.http.get(
        "/v1/profiles/user_id:u1/events", params={"cursor": cursor}, headers=running.read_headers
    )
    assert response.status_code == 400
    assert "cursor is not one this API returned" in response.json()["message"]


def test_a_client_may_name_its_source_for_the_dead_letters(running: Running) -> None:
    response = running.send("/v1/batch", {"batch": [track("m0"), {"type": "track"}]}, headers={"X-CDP-Source": "import"})
    assert response.json()["stored"] == 1
    odd = running.send("/v1/batch", {"batch": [{"type": "track"}]}, headers={"X-CDP-Source": "Not A Source!"})
    assert odd.status_code == 200
    letters = running.platform.dead_letters.list(running.platform.workspace_id)
    assert [letter.source for letter in letters] == ["import", "http"]
