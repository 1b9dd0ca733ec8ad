"""The Segment tracking spec calls (identify, track, page, screen, group, alias).

These models validate what channel adapters send. They know nothing about HTTP
or storage: ingest/ turns validation errors into responses, the write model
stores the normalised call.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, model_validator

from domain.identifiers import clean_identifier
from domain.limits import MAX_DEPTH, OutOfRange, check_clock, check_event_time, clock_ok, depth
from domain.times import stored, utc


def _id_to_str(value: Any) -> Any:
    # SDKs in typed languages send numeric ids; Segment stores them as strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _clean_id(value: Any) -> Any:
    """userId, anonymousId, groupId, previousId as stored: numbers as strings, NFKC, trimmed.

    They anchor the event, so an id with a control, invisible, bidirectional or
    unassigned character (domain/identifiers.py) refuses the event with the reason,
    and so does one that is only whitespace, like an empty one.
    """
    value = _id_to_str(value)
    if not isinstance(value, str) or not value:
        return value  # pydantic says what is wrong with it
    cleaned = clean_identifier(value)
    if not cleaned:
        raise ValueError("the id is only whitespace; send the id, or leave the field out")
    return cleaned


Id = Annotated[str, BeforeValidator(_clean_id), Field(min_length=1, max_length=1024)]


def _shallow(value: dict[str, Any]) -> dict[str, Any]:
    if depth(value) > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels; flatten the object")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_shallow)]


class _Call(BaseModel):
    """Common fields of every call."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    messageId: Annotated[str, BeforeValidator(_id_to_str), Field(min_length=1, max_length=256)] | None = None
    anonymousId: Id | None = None
    userId: Id | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    receivedAt: datetime | None = None
    context: JsonObject = Field(default_factory=dict)
    integrations: JsonObject = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_an_identity(self) -> "_Call":
        if self.userId is None and self.anonymousId is None:
            raise ValueError("either userId or anonymousId is required")
        return self


class Identify(_Call):
    type: Literal["identify"]
    traits: JsonObject = Field(default_factory=dict)


class Track(_Call):
    type: Literal["track"]
    event: Annotated[str, Field(min_length=1, max_length=512)]
    properties: JsonObject = Field(default_factory=dict)


class Page(_Call):
    type: Literal["page"]
    name: str | None = None
    category: str | None = None
    properties: JsonObject = Field(default_factory=dict)


class Screen(_Call):
    type: Literal["screen"]
    name: str | None = None
    category: str | None = None
    properties: JsonObject = Field(default_factory=dict)


class Group(_Call):
    type: Literal["group"]
    groupId: Id
    traits: JsonObject = Field(default_factory=dict)


class Alias(_Call):
    type: Literal["alias"]
    previousId: Id
    userId: Id  # required for alias: the id the previous one becomes


SegmentCall = Annotated[Union[Identify, Track, Page, Screen, Group, Alias], Field(discriminator="type")]
CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")
call_adapter: TypeAdapter[SegmentCall] = TypeAdapter(SegmentCall)


def normalise(call: _Call, received_at: datetime, batch_sent_at: datetime | None = None) -> dict[str, Any]:
    """The call as stored: server `receivedAt`, a `messageId`, and event time corrected for clock skew.

    As Segment does: `originalTimestamp` is the client's time of the call; when the
    client says when it sent the call (`sentAt`), `timestamp` is shifted by
    `receivedAt - sentAt`, which cancels a client clock that runs fast or slow.
    A `timestamp` the client sets explicitly is its event time and is kept as is
    when there is no `sentAt` to correct it with.

    Raises `OutOfRange` (field and reason) for a time the projections could not
    hold (domain/limits.py): the event time, after the correction, must fall
    between 1970-01-01 and a day after `received_at`.
    """
    received_at = utc(received_at)
    client_field = "originalTimestamp" if call.originalTimestamp else "timestamp"
    client_time = call.originalTimestamp or call.timestamp
    sent_at = call.sentAt or batch_sent_at
    try:
        original = utc(client_time) if client_time is not None else received_at
        if client_time is not None and not clock_ok(original):
            check_event_time(original, received_at, client_field)  # no clock says that: refused as an event time
        if sent_at is not None:
            sent_at = utc(sent_at)
            check_clock(sent_at, "sentAt")
        corrected = original
        if sent_at is not None and client_time is not None:  # a server-side time needs no correction
            corrected = original + (received_at - sent_at)
    except OverflowError:  # an offset that leaves every date, or a correction beyond them
        raise OutOfRange(client_field, "the time, in UTC and corrected for clock skew, is outside any date") from None
    check_event_time(corrected, received_at, client_field, corrected=corrected is not original)
    data = call.model_dump(mode="json", exclude_none=True)
    data["messageId"] = call.messageId or str(uuid.uuid4())
    data["receivedAt"] = stored(received_at)
    data["originalTimestamp"] = stored(original)
    data["timestamp"] = stored(corrected)
    if sent_at is not None:
        data["sentAt"] = stored(sent_at)
    return data


def source_of(call: dict[str, Any]) -> str:
    """Which channel a stored call came from: `context.source` if set, else the SDK's library name."""
    context = call.get("context") or {}
    source = context.get("source")
    if isinstance(source, str) and source:
        return source
    library = context.get("library") or {}
    return str(library.get("name") or "") if isinstance(library, dict) else ""
