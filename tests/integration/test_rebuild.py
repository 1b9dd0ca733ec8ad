"""Projections built live equal a rebuild from position 0, with redeliveries and merges present."""

from infra.bootstrap import rebuild, verify_rebuild
from projections.store import ProjectionStore
from streams.log_follower import read_messages
from streams.processors import ProfileProcessor
from tests.conftest import Running


def _traffic(running: Running) -> None:
    batch = [
        {"type": "page", "anonymousId": "a1", "name": "Home", "messageId": "p1"},
        {"type": "track", "anonymousId": "a2", "event": "Added", "messageId": "t1"},
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "traits": {"email": "x@y.z", "plan": "free"},
         "messageId": "i1", "timestamp": "2026-01-01T00:00:00Z"},
        {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}, "messageId": "i2",
         "timestamp": "2026-02-01T00:00:00Z"},
        {"type": "alias", "previousId": "a2", "userId": "u1", "messageId": "al1"},
        {"type": "track", "userId": "u2", "event": "Bought", "properties": {"revenue": 10}, "messageId": "t2"},
    ]
    assert running.send("/v1/batch", {"batch": batch}).status_code == 200


def test_live_projection_equals_rebuild_from_zero(running: Running) -> None:
    _traffic(running)
    running.wait_caught_up()
    platform = running.platform
    assert verify_rebuild(platform.app, platform.store.client, platform.settings.clickhouse_database) == []


def test_redelivery_does_not_double_count(running: Running) -> None:
    _traffic(running)
    running.wait_caught_up()
    before = running.profile("user_id:u1").json()
    assert before["counts"] == {"page": 1, "track": 1, "identify": 2, "alias": 1}
    assert before["traits"] == {"email": "x@y.z", "plan": "pro"}
    # Deliver the whole log again, in pages, as a consumer after a crash would see it.
    messages, _ = read_messages(running.platform.app, 0, 10_000)
    processor = ProfileProcessor(running.platform.store)
    processor.process(messages)
    processor.process(messages[:3])
    after = running.profile("user_id:u1").json()
    assert after == before
    platform = running.platform
    assert verify_rebuild(platform.app, platform.store.client, platform.settings.clickhouse_database) == []


def test_rebuild_reaches_the_log_position(running: Running) -> None:
    _traffic(running)
    status = running.wait_caught_up()
    platform = running.platform
    scratch = platform.settings.clickhouse_database + "_scratch"
    assert rebuild(platform.app, platform.store.client, scratch) == status["log_position"]
    store = ProjectionStore(platform.store.client, scratch)
    profile_id = store.owner_of(platform.workspace_id, "user_id:u1")
    assert profile_id is not None
    assert store.read_profile(platform.workspace_id, profile_id).event_count == 5
