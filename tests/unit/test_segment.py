"""The tracking spec calls: validation and normalisation (pure, no fixtures)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from domain.segment import Alias, Group, Identify, Page, Screen, Track, call_adapter, normalise
from domain.times import parse_instant

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def iso(value: datetime) -> str:
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


def validate(**fields: Any) -> Any:
    return call_adapter.validate_python(fields)


def error_fields(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [err["loc"] for err in exc.value.errors()]


@pytest.mark.parametrize(
    ("fields", "model"),
    [
        ({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}, Identify),
        ({"type": "track", "anonymousId": "a1", "event": "Signed Up"}, Track),
        ({"type": "page", "userId": "u1", "name": "Home"}, Page),
        ({"type": "screen", "userId": "u1", "name": "Settings"}, Screen),
        ({"type": "group", "userId": "u1", "groupId": "g1"}, Group),
        ({"type": "alias", "previousId": "a1", "userId": "u1"}, Alias),
    ],
)
def test_each_call_type_validates_to_its_model(fields: dict[str, Any], model: type) -> None:
    call = validate(**fields)
    assert type(call) is model
    assert call.type == fields["type"]


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({"type": "track", "userId": "u1"}, "event"),
        ({"type": "track", "userId": "u1", "event": ""}, "event"),
        ({"type": "group", "userId": "u1"}, "groupId"),
        ({"type": "alias", "userId": "u1"}, "previousId"),
        ({"type": "alias", "previousId": "a1", "anonymousId": "a2"}, "userId"),
    ],
)
def test_required_fields_of_a_call_type(fields: dict[str, Any], missing: str) -> None:
    with pytest.raises(ValidationError) as exc:
        validate(**fields)
    assert error_fields(exc) == [(fields["type"], missing)]


@pytest.mark.parametrize("call_type", ["identify", "track", "page", "screen", "group"])
def test_every_call_needs_user_id_or_anonymous_id(call_type: str) -> None:
    with pytest.raises(ValidationError, match="either userId or anonymousId is required"):
        validate(type=call_type, event="E", groupId="g1")
    assert validate(type=call_type, event="E", groupId="g1", anonymousId="a1").anonymousId == "a1"


def test_unknown_or_missing_type_is_rejected() -> None:
    for fields in ({"type": "purchase", "userId": "u1"}, {"userId": "u1"}):
        with pytest.raises(ValidationError) as exc:
            validate(**fields)
        assert exc.value.errors()[0]["type"] in ("union_tag_invalid", "union_tag_not_found")


def test_numeric_ids_become_strings_and_booleans_are_rejected() -> None:
    call = validate(type="group", userId=42, anonymousId=7.5, groupId=1001, messageId=99)
    assert (call.userId, call.anonymousId, call.groupId, call.messageId) == ("42", "7.5", "1001", "99")
    with pytest.raises(ValidationError) as exc:
        validate(type="identify", userId=True)
    assert error_fields(exc) == [("identify", "userId")]


def test_normalise_sets_server_fields_and_keeps_a_given_message_id() -> None:
    data = normalise(validate(type="track", userId="u1", event="E", messageId="m1"), RECEIVED)
    assert data["messageId"] == "m1"
    assert data["receivedAt"] == iso(RECEIVED)
    assert data["type"] == "track" and data["event"] == "E"


def test_normalise_generates_a_message_id_when_missing() -> None:
    call = validate(type="track", userId="u1", event="E")
    first, second = normalise(call, RECEIVED), normalise(call, RECEIVED)
    assert uuid.UUID(first["messageId"]) != uuid.UUID(second["messageId"])


def test_receivedat_is_the_servers_not_the_clients() -> None:
    call = validate(type="track", userId="u1", event="E", receivedAt="2000-01-01T00:00:00Z")
    assert normalise(call, RECEIVED)["receivedAt"] == iso(RECEIVED)


def test_client_clock_one_hour_fast_is_corrected_back() -> None:
    client_time = RECEIVED + HOUR - timedelta(seconds=5)  # the event happened 5 s before it was sent
    call = validate(type="track", userId="u1", event="E", timestamp=iso(client_time), sentAt=iso(RECEIVED + HOUR))
    data = normalise(call, RECEIVED)
    assert data["originalTimestamp"] == iso(client_time)
    assert data["timestamp"] == iso(RECEIVED - timedelta(seconds=5))
    assert data["sentAt"] == iso(RECEIVED + HOUR)


def test_batch_sent_at_is_used_when_the_call_has_none() -> None:
    call = validate(type="track", userId="u1", event="E", timestamp=iso(RECEIVED - HOUR))
    data = normalise(call, RECEIVED, batch_sent_at=RECEIVED - HOUR)  # client clock one hour slow
    assert data["timestamp"] == iso(RECEIVED)
    assert data["sentAt"] == iso(RECEIVED - HOUR)


def test_call_sent_at_wins_over_batch_sent_at() -> None:
    call = validate(type="track", userId="u1", event="E", timestamp=iso(RECEIVED), sentAt=iso(RECEIVED))
    assert normalise(call, RECEIVED, batch_sent_at=RECEIVED - HOUR)["timestamp"] == iso(RECEIVED)


def test_without_sent_at_the_client_timestamp_is_kept() -> None:
    event_time = RECEIVED - timedelta(days=3)
    data = normalise(validate(type="track", userId="u1", event="E", timestamp=iso(event_time)), RECEIVED)
    assert data["timestamp"] == data["originalTimestamp"] == iso(event_time)
    assert "sentAt" not in data


def test_naive_client_times_are_read_as_utc() -> None:
    call = validate(type="track", userId="u1", event="E", timestamp="2024-05-01T10:00:00")
    assert normalise(call, RECEIVED)["timestamp"] == "2024-05-01T10:00:00.000000Z"


def test_missing_timestamp_becomes_received_at() -> None:
    data = normalise(validate(type="track", userId="u1", event="E"), RECEIVED)
    assert data["timestamp"] == data["originalTimestamp"] == iso(RECEIVED)
    assert parse_instant(data["timestamp"]) == RECEIVED


def test_missing_timestamp_becomes_received_at_even_with_sent_at() -> None:
    call = validate(type="track", userId="u1", event="E", sentAt=iso(RECEIVED + HOUR))
    assert normalise(call, RECEIVED)["timestamp"] == iso(RECEIVED)
