"""What the read side can hold: the ranges every accepted value must fall in.

An event is immutable once it is in the log, so a value the projections cannot
store would stop them for good. Ingest therefore refuses, with the field and the
reason, every value outside these ranges; the ranges follow the ClickHouse
column types the projections use (docs/tables.md):

- event time (`timestamp` after the clock-skew correction) lands in `Date` and
  `DateTime64(3)` columns: from 1970-01-01 (where ClickHouse `Date` starts) to
  one day after the server received the event (a later time is a client clock
  that is wrong, not an event that happened);
- the client's own clock readings (`originalTimestamp`, `sentAt`) are stored as
  sent in `DateTime64(3)` columns: 1900-01-01 to 2299-12-31;
- calendar dates (a sales target's `period_start`, `period_end`) land in `Date`
  columns: 1970-01-01 to 2149-06-06;
- amounts land in `Decimal(38, 6)`: at most 10^15 each, so that a line's price ×
  quantity and the sums the KPIs take stay far inside its 10^32;
- quantities land in `Int64`: at most 10^9 each;
- properties, traits and context nest at most 64 levels deep.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from domain.times import shown

EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_FUTURE = timedelta(days=1)
EARLIEST_CLOCK = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_CLOCK = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
EARLIEST_DATE = date(1970, 1, 1)
LATEST_DATE = date(2149, 6, 6)
MAX_AMOUNT = 10**15
MAX_QUANTITY = 10**9
MAX_DEPTH = 64


class OutOfRange(ValueError):
    """A value the projections could not hold; `field` names it in the call, `reason` says what is allowed."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_event_time(value: datetime, received_at: datetime, field: str = "timestamp", corrected: bool = False) -> None:
    latest = received_at + MAX_FUTURE
    if not EARLIEST_EVENT_TIME <= value <= latest:
        how = ", after the clock-skew correction by receivedAt - sentAt," if corrected else ""
        raise OutOfRange(
            field,
            f"event time {shown(value)}{how} is outside the accepted window {shown(EARLIEST_EVENT_TIME)} to "
            f"{shown(latest)} (receivedAt + 1 day); check the client's clock, its sentAt, or the time sent",
        )


def clock_ok(value: datetime) -> bool:
    return EARLIEST_CLOCK <= value <= LATEST_CLOCK


def check_clock(value: datetime, field: str) -> None:
    if not clock_ok(value):
        raise OutOfRange(
            field, f"{shown(value)} is outside {shown(EARLIEST_CLOCK)} to {shown(LATEST_CLOCK)}; check the client's clock"
        )


def check_date(value: date) -> date:
    """For pydantic validators: a calendar date the projections can hold."""
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise ValueError(f"date {value.isoformat()} is outside {EARLIEST_DATE} to {LATEST_DATE}")
    return value


def depth(value: Any) -> int:
    """How deeply a JSON value nests (a scalar is 0, `{}` is 1); iterative, so any depth is safe to measure."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest  # deep enough to refuse; no need to walk the rest
        stack.extend((child, level) for child in children)
    return deepest

