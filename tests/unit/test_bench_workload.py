"""The benchmark workload is seeded, valid Segment calls, with the retries it promises."""

from collections import Counter

from bench.workload import workload
from domain.segment import call_adapter


def test_workload_is_seeded_valid_and_has_retries() -> None:
    calls = list(workload(5_000, seed=1, duplicates=0.02))
    assert calls == list(workload(5_000, seed=1, duplicates=0.02))
    ids = Counter(c["messageId"] for c in calls)
    assert len(ids) == 5_000 and 0 < sum(n - 1 for n in ids.values()) < 250
    for call in calls:
        call_adapter.validate_python(call)
    kinds = Counter(c.get("event", c["type"]) for c in calls)
    assert {"page", "identify", "Order Completed", "Ticket Opened", "Feedback Submitted", "Email Opened"} <= set(kinds)
    assert any(c.get("anonymousId") == "shared-kiosk" for c in calls)
