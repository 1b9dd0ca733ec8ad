"""The ranges ingest holds values to, so that nothing accepted is beyond what the projections can store."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.limits import MAX_DEPTH, OutOfRange, check_date, check_event_time, depth
from domain.segment import call_adapter, normalise

RECEIVED = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)


def test_depth_counts_nested_objects_and_arrays() -> None:
    assert depth(1) == 0 and depth({}) == 1 and depth({"a": [{"b": 1}]}) == 3


def test_depth_is_safe_far_beyond_the_recursion_limit() -> None:
    value: list = []
    for _ in range(100_000):
        value = [value]
    assert depth(value) > MAX_DEPTH


def test_event_time_window_edges() -> None:
    check_event_time(datetime(1970, 1, 1, tzinfo=timezone.utc), RECEIVED)
    check_event_time(RECEIVED + timedelta(days=1), RECEIVED)
    for outside in (datetime(1969, 12, 31, 23, 59, 59, tzinfo=timezone.utc), RECEIVED + timedelta(days=1, seconds=1)):
        with pytest.raises(OutOfRange, match="outside the accepted window"):
            check_event_time(outside, RECEIVED)


def test_dates_stay_within_clickhouse_date() -> None:
    assert check_date(date(2149, 6, 6)) == date(2149, 6, 6)
    with pytest.raises(ValueError, match="outside 1970-01-01 to 2149-06-06"):
        check_date(date(1, 1, 1))


def _normalise(**fields: str) -> dict:
    return normalise(call_adapter.validate_python({"type": "track", "event": "x", "userId": "u", **fields}), RECEIVED)


def test_skew_correction_that_leaves_the_window_is_refused_with_the_field() -> None:
    with pytest.raises(OutOfRange) as refused:
        _normalise(timestamp="2026-12-01T11:00:00Z", sentAt="2250-01-01T00:00:00Z")
    assert refused.value.field == "timestamp" and "clock-skew correction" in refused.value.reason
    with pytest.raises(OutOfRange) as refused:
        _normalise(originalTimestamp="2026-12-01T11:00:00Z", sentAt="0001-01-01T00:00:00Z")
    assert refused.value.field == "sentAt"


@given(st.datetimes(timezones=st.just(timezone.utc)), st.one_of(st.none(), st.datetimes(timezones=st.just(timezone.utc))))
def test_any_client_clock_is_either_normalised_into_the_window_or_refused(stamp: datetime, sent: datetime | None) -> None:
    fields = {"timestamp": stamp.isoformat()} | ({"sentAt": sent.isoformat()} if sent else {})
    try:
        call = _normalise(**fields)
    except OutOfRange as exc:
        assert exc.field in ("timestamp", "sentAt") and exc.reason
        return
    event_time = datetime.fromisoformat(call["timestamp"].replace("Z", "+00:00"))
    assert datetime(1970, 1, 1, tzinfo=timezone.utc) <= event_time <= RECEIVED + timedelta(days=1)
