"""Request parameters every adapter reads alike: ISO 8601 times inside the window that can be queried,
and the opaque cursors of paginated answers."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import Query

from api.errors import ApiError
from domain.tags import TIME_WINDOW, time_window_error
from domain.times import parse_instant, shown

QUERY_TIME = {"format": "date-time"}  # documents an ISO time parameter; parse_query_time reads it
QUERY_TIME_HELP = f"ISO 8601 time from {TIME_WINDOW}"
# A series' range, as the KPI and the tag history routes take it (both default to the 30 days up to now).
RangeFrom = Annotated[str | None, Query(alias="from", description=f"default 30 days before 'to'; {QUERY_TIME_HELP}",
                                        json_schema_extra=QUERY_TIME)]  # fmt: skip
RangeTo = Annotated[str | None, Query(alias="to", description=f"exclusive; default now; {QUERY_TIME_HELP}",
                                      json_schema_extra=QUERY_TIME)]  # fmt: skip


def parse_query_time(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 time parameter (UTC when it has no offset); 400 unless inside the window that can be queried."""
    if value is None:
        return None
    try:
        parsed = parse_instant(value)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name}={value!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z") from None
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00: no UTC time
        raise ApiError(400, "bad_request", f"{name}={value!r}: {value} is outside the times that can be queried: "
                                           f"{TIME_WINDOW}") from None  # fmt: skip
    reason = time_window_error(parsed)
    if reason is not None:
        raise ApiError(400, "bad_request", f"{name}={value!r}: {reason}")
    return parsed


def encode_cursor(timestamp: datetime, event_id: str) -> str:
    return base64.urlsafe_b64encode(f"{shown(timestamp)}|{event_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(timestamp, event id) of a cursor `encode_cursor` made; 400 for any other text."""
    try:
        stamp, _, event_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        at = parse_instant(stamp)
        if time_window_error(at) is not None:
            raise ValueError("not a time this API returns")
        return at, str(UUID(event_id))
    except (binascii.Error, UnicodeError, ValueError, OverflowError):
        raise ApiError(400, "bad_request", "cursor is not one this API returned; pass next_cursor unchanged") from None
