"""Time as the platform reads and writes it: ISO 8601, always UTC.

One module so that every layer parses and prints instants the same way:
a trailing `Z` is UTC, an offset is converted to UTC, a value without an
offset is UTC. The log keeps microseconds (`stored`); the API shows
milliseconds (`shown`), which is what ClickHouse's DateTime64(3) holds.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

UTC = timezone.utc


def utc(value: datetime) -> datetime:
    """`value` in UTC; a naive value is taken to be UTC already (ClickHouse returns naive UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant in UTC. Raises ValueError naming the accepted shape."""
    return utc(parse_as_written(text))


def parse_as_written(text: str) -> datetime:
    """An ISO 8601 time with the offset it was written with (none is UTC), not yet converted to UTC.

    For a time that may have no UTC form at all (`0001-01-01T00:00:00+05:00`), which the caller
    refuses with a reason of its own; `utc` on it raises OverflowError."""
    if not isinstance(text, str):
        raise ValueError("a time is ISO 8601 text, e.g. 2026-01-31T12:00:00Z")
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time, e.g. 2026-01-31T12:00:00Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def parse_optional(text: str | None) -> datetime | None:
    return None if text is None else parse_instant(text)


def parse_day(text: str) -> date:
    """A calendar day written YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"{text!r} is not a day written YYYY-MM-DD") from None


def stored(value: datetime) -> str:
    """The log's form: UTC, microseconds, `Z`."""
    return utc(value).isoformat(timespec="microseconds").replace("+00:00", "Z")


def shown(value: datetime | None) -> str | None:
    """The API's form: UTC, milliseconds, `Z` (None stays None)."""
    if value is None:
        return None
    return utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")
