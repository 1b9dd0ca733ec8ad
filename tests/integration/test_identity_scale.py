"""The scale workload of bench/identity_scale.py, scaled down to run in the suite.

The full run (100,000 profiles, 1,000,000 events) is `python -m bench.identity_scale`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from bench.identity_scale import workload
from domain.segment import call_adapter, normalise
from infra.bootstrap import verify_rebuild
from tests.conftest import Running

PROFILES, EVENTS = 1_000, 12_000


def test_stitching_at_scale_keeps_every_event_and_equals_a_rebuild(running: Running) -> None:
    platform = running.platform
    received = datetime.now(timezone.utc)
    calls = [normalise(call_adapter.validate_python(raw), received) for raw in workload(PROFILES, EVENTS, seed=3)]
    for start in range(0, len(calls), 2_000):
        platform.committer.record_now(platform.workspace_id, calls[start : start + 2_000])
    running.wait_caught_up(timeout=120)

    merges = sum(1 for profile in platform.app.profiles.values() if profile.merged_into)
    assert merges > 0.1 * PROFILES  # second devices with history merge at login
    total = 0
    for customer in range(PROFILES):
        profile = running.profile(f"user_id:user-{customer}").json()
        assert profile["identifiers"]["email"] == [f"c{customer}@example.com"]
        assert all(d.startswith(f"c{customer}-d") for d in profile["identifiers"]["anonymous_id"])
        total += profile["event_count"]
    assert total == EVENTS == running.stored_event_count()
    assert verify_rebuild(platform.app, platform.store.client, platform.settings.clickhouse_database) == []
