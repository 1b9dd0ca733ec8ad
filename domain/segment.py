"""The Segment tracking spec calls (identify, track, page, screen, group, alias).

These models validate what channel adapters send. They know nothing about HTTP
or storage: ingest/ turns validation errors into responses, the write model
stores the normalised call.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, model_validator


def _id_to_str(value: Any) -> Any:
    # SDKs in typed languages send numeric ids; Segment stores them as strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return value


Id = Annotated[str, BeforeValidator(_id_to_str), Field(min_length=1, max_length=1024)]
JsonObject = dict[str, Any]


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


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _iso(value: datetime) -> str:
    return _utc(value).isoformat(timespec="microseconds").replace("+00:00", "Z")


def normalise(call: _Call, received_at: datetime, batch_sent_at: datetime | None = None) -> dict[str, Any]:
    """The call as stored: server `receivedAt`, a `messageId`, and event time corrected for clock skew.

    As Segment does: `originalTimestamp` is the client's time of the call; when the
    client says when it sent the call (`sentAt`), `timestamp` is shifted by
    `receivedAt - sentAt`, which cancels a client clock that runs fast or slow.
    A `timestamp` the client sets explicitly is its event time and is kept as is
    when there is no `sentAt` to correct it with.
    """
    received_at = _utc(received_at)
    client_time = call.originalTimestamp or call.timestamp
    original = client_time or received_at
    sent_at = call.sentAt or batch_sent_at
    corrected = _utc(original)
    if sent_at is not None and client_time is not None:  # a server-side time needs no correction
        corrected = corrected + (received_at - _utc(sent_at))
    data = call.model_dump(mode="json", exclude_none=True)
    data["messageId"] = call.messageId or str(uuid.uuid4())
    data["receivedAt"] = _iso(received_at)
    data["originalTimestamp"] = _iso(original)
    data["timestamp"] = _iso(corrected)
    if sent_at is not None:
        data["sentAt"] = _iso(sent_at)
    return data


def parse_time(value: str) -> datetime:
    """Parse an ISO time written by `normalise` back into an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))

