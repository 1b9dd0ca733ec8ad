"""The Kafka ingest topic: calls produced to `cdp.ingest` are stored once, and nothing a producer sends is lost."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, Iterator

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import REGISTRY

from ingest.committer import StoreUnavailable
from ingest.kafka_topic import KafkaIngest, decode, derived_message_id
from tests.conftest import Running

TOPIC = "cdp.ingest"
SOURCE = "kafka:cdp.ingest"


@pytest.fixture
def producer(running: Running) -> Iterator[KafkaProducer]:
    p = KafkaProducer(bootstrap_servers=running.platform.settings.bootstrap_servers, acks="all")
    yield p
    p.close(timeout=5)


def produce(producer: KafkaProducer, value: Any, write_key: str | None, key: str | None = None) -> None:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    headers = [("write_key", write_key.encode())] if write_key is not None else []
    producer.send(TOPIC, raw, key=key.encode() if key else None, headers=headers)
    producer.flush()


def drained(running: Running, ingest: KafkaIngest | None = None, timeout: float = 20.0) -> None:
    """Wait until the consumer has committed every message of the topic."""
    ingest = ingest or running.platform.kafka_ingest
    assert ingest is not None
    probe = KafkaConsumer(bootstrap_servers=running.platform.settings.bootstrap_servers)
    try:
        partitions = [TopicPartition(TOPIC, p) for p in probe.partitions_for_topic(TOPIC)]
        ends = {tp.partition: offset for tp, offset in probe.end_offsets(partitions).items() if offset > 0}
    finally:
        probe.close()
    deadline = time.monotonic() + timeout
    while not all(ingest.committed.get(p, 0) >= end for p, end in ends.items()):
        if time.monotonic() > deadline:
            raise AssertionError(f"the ingest consumer committed {ingest.committed} of {ends} within {timeout}s")
        time.sleep(0.05)


def letters(running: Running) -> list[Any]:
    platform = running.platform
    return platform.dead_letters.list(platform.workspace_id, source=SOURCE)


def test_calls_produced_to_the_topic_become_profiles(running: Running, producer: KafkaProducer) -> None:
    key = running.write_key
    identify = {"type": "identify", "userId": "k1", "traits": {"email": "Kim@Example.com", "plan": "pro"},
                "messageId": "k-1"}  # fmt: skip
    produce(producer, identify, key, key="k1")
    # A batch with the key in the body, as Segment's HTTP API takes it; one call without a messageId.
    batch = {
        "writeKey": key,
        "context": {"library": {"name": "kafka-producer"}},
        "batch": [
            {"type": "track", "userId": "k1", "event": "Viewed", "messageId": "k-2"},
            {"type": "page", "anonymousId": "anon-k", "name": "Pricing"},
            {"type": "alias", "previousId": "anon-k", "userId": "k1", "messageId": "k-3"},
        ],
    }
    produce(producer, batch, None, key="k1")
    drained(running)
    assert running.stored_event_count() == 4
    running.wait_caught_up()

    profile = running.profile("user_id:k1").json()
    assert profile["identifiers"] == {"user_id": ["k1"], "email": ["kim@example.com"], "anonymous_id": ["anon-k"]}
    assert profile["traits"] == {"email": "Kim@Example.com", "plan": "pro"}
    assert profile["event_count"] == 4
    assert letters(running) == []


def test_redelivery_stores_nothing_twice(running: Running, producer: KafkaProducer) -> None:
    key = running.write_key
    calls = [{"type": "track", "userId": f"r{i}", "event": "Viewed", "messageId": f"r-{i}"} for i in range(30)]
    for call in calls:
        produce(producer, call, key, key=call["userId"])
    without_ids = {"batch": [{"type": "track", "userId": "r0", "event": "Clicked"} for _ in range(3)]}
    produce(producer, without_ids, key)  # three equal calls: three events, each with an id of its own
    drained(running)
    assert running.stored_event_count() == 33

    for call in calls[:10]:  # a producer sending again what it sent
        produce(producer, call, key, key=call["userId"])
    drained(running)
    assert running.stored_event_count() == 33

    # The whole topic delivered again from offset 0, to a consumer group that has committed nothing.
    platform = running.platform
    assert platform.kafka_ingest is not None
    platform.kafka_ingest.stop()
    again = KafkaIngest(platform.settings.bootstrap_servers, platform.intake, platform.services.access.authorise_write,
                        platform.workspace_id, group_id="cdp-ingest-replay").start()  # fmt: skip
    try:
        drained(running, again)
    finally:
        again.stop()
    assert running.stored_event_count() == 33
    running.wait_caught_up()
    assert running.profile("user_id:r0").json()["event_count"] == 4
    assert letters(running) == []


def test_invalid_messages_are_dead_lettered_and_the_consumer_goes_on(
    running: Running, producer: KafkaProducer
) -> None:
    key = running.write_key
    produce(producer, b"{not json", key)
    produce(producer, [1, 2], key)
    produce(producer, {"batch": []}, key)
    produce(producer, {"type": "track", "userId": "p1", "messageId": "no-event"}, key)  # track needs an event
    mixed = {"writeKey": key, "batch": [{"type": "identify", "userId": "p1", "messageId": "ok-1"},
                                        {"type": "shout", "userId": "p1", "messageId": "bad-type"}]}  # fmt: skip
    produce(producer, mixed, None)
    produce(producer, {"type": "track", "userId": "p1", "event": "After", "messageId": "ok-2"}, key)
    drained(running)

    assert running.stored_event_count() == 2  # the identify of the batch and the last track
    found = {(x.code, x.field, x.message_id): x for x in letters(running)}
    assert set(found) == {
        ("invalid_json", "(body)", None),
        ("invalid_batch", "(body)", None),
        ("invalid_event", "event", "no-event"),
        ("invalid_event", "type", "bad-type"),
    }
    unreadable = sorted((x.body, x.reason) for x in letters(running) if x.code == "invalid_json")
    assert [body for body, _ in unreadable] == [b"[1,2]", b"{not json"]
    assert "not a JSON object" in unreadable[0][1] and "not valid JSON" in unreadable[1][1]
    assert found[("invalid_event", "event", "no-event")].reason == "Field required"
    assert "type must be one of" in found[("invalid_event", "type", "bad-type")].reason
    assert all(key.encode() not in x.body for x in found.values())  # the write key is never kept
    running.wait_caught_up()
    assert running.profile("user_id:p1").json()["event_count"] == 2


def test_messages_without_a_usable_key_are_kept_without_the_key(running: Running, producer: KafkaProducer) -> None:
    produce(producer, {"type": "track", "userId": "u1", "event": "Viewed", "messageId": "nk-1"}, "wk_not_a_key")
    produce(producer, {"type": "track", "userId": "u1", "event": "Viewed", "messageId": "nk-2"}, None)
    produce(producer, {"writeKey": "wk_also_not", "type": "track", "userId": "u1", "event": "Viewed"}, None)
    produce(producer, b"\x00\x01 binary", None)
    produce(producer, {"type": "track", "userId": "u1", "event": "Viewed", "messageId": "nk-3"}, running.write_key)
    drained(running)

    assert running.stored_event_count() == 1
    found = letters(running)
    assert sorted(x.code for x in found) == ["missing_key", "missing_key", "unknown_key", "unknown_key"]
    assert all(b"not_a_key" not in x.body and b"also_not" not in x.body for x in found)
    assert all(x.workspace_id == running.platform.workspace_id for x in found)
    calls = [orjson.loads(x.body) for x in found if x.body.startswith(b"{")]
    assert {c["messageId"] for c in calls} >= {"nk-1", "nk-2"} and all(c.get("messageId") for c in calls)
    assert all("writeKey" not in c for c in calls)  # a replay later finds the same ids, never the key


def test_nothing_is_committed_until_the_store_takes_the_batch(
    running: Running, producer: KafkaProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, ingest = running.platform, running.platform.kafka_ingest
    assert ingest is not None
    take_now, unreadable = platform.intake.take_now, platform.intake.unreadable
    calls = {"take_now": 0, "unreadable": 0}
    committed_while_failing: list[tuple[int, dict[int, int]]] = []  # (offset of the message not taken, commits)

    def flaky_take_now(*args: Any, **kwargs: Any) -> Any:
        calls["take_now"] += 1
        if calls["take_now"] <= 2:  # the store is down for two attempts
            committed_while_failing.append((2, dict(ingest.committed)))
            raise StoreUnavailable("the event store did not take the batch: disk full")
        return take_now(*args, **kwargs)

    def flaky_unreadable(*args: Any, **kwargs: Any) -> Any:
        calls["unreadable"] += 1
        if calls["unreadable"] == 2:  # down again after the call and the first dead letter went in
            committed_while_failing.append((1, dict(ingest.committed)))
            raise StoreUnavailable("the event store did not take the batch: disk full")
        return unreadable(*args, **kwargs)

    monkeypatch.setattr(platform.intake, "take_now", flaky_take_now)
    monkeypatch.setattr(platform.intake, "unreadable", flaky_unreadable)
    retries = REGISTRY.get_sample_value("cdp_kafka_ingest_retries_total") or 0
    call = {"type": "track", "userId": "s1", "event": "Viewed", "messageId": "s-1"}
    for value in (b"poison 1", b"poison 2", orjson.dumps(call)):  # one partition, in this order
        produce(producer, value, running.write_key, key="s1")
    drained(running)

    assert (REGISTRY.get_sample_value("cdp_kafka_ingest_retries_total") or 0) - retries == 3
    assert calls["take_now"] == 3  # a retried batch does not take again what went in before the failure
    assert len(committed_while_failing) == 3
    assert all(max(c.values(), default=0) <= offset for offset, c in committed_while_failing)  # never past it
    assert running.stored_event_count() == 1
    assert sorted(x.body for x in letters(running)) == [b"poison 1", b"poison 2"]  # each kept once


def test_a_message_the_intake_fails_on_is_kept_and_the_rest_goes_on(
    running: Running, producer: KafkaProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = running.platform
    take_now = platform.intake.take_now

    def failing_on_boom(workspace_id: str, items: Any, **kwargs: Any) -> Any:
        if any(item.get("userId") == "boom" for item in items):
            raise RecursionError("a bug in the intake")
        return take_now(workspace_id, items, **kwargs)

    monkeypatch.setattr(platform.intake, "take_now", failing_on_boom)
    for user in ("b1", "boom", "b2"):
        produce(producer, {"type": "track", "userId": user, "event": "Viewed", "messageId": f"m-{user}"},
                running.write_key, key="b")  # fmt: skip
    drained(running)
    assert running.stored_event_count() == 2
    [letter] = letters(running)
    assert letter.code == "intake_error" and orjson.loads(letter.body)["messageId"] == "m-boom"
    assert "RecursionError" in letter.reason


def test_stopping_takes_what_is_on_the_topic_first(running: Running, producer: KafkaProducer) -> None:
    # The bundled broker forgets the topic when the platform stops: what producers wrote is taken before.
    for i in range(5):
        produce(producer, {"type": "track", "userId": f"d{i}", "event": "Viewed", "messageId": f"d-{i}"},
                running.write_key, key=f"d{i}")  # fmt: skip
    assert running.platform.kafka_ingest is not None
    running.platform.kafka_ingest.stop()
    assert running.stored_event_count() == 5


def test_derived_ids_follow_the_record() -> None:
    record = SimpleNamespace(value=b'{"batch": [{"type": "page", "userId": "1"}, {"type": "page", "userId": "1"}]}',
                             headers=[("write_key", b"wk")], timestamp=1_700_000_000_000, offset=7)  # fmt: skip
    first = decode(TOPIC, record, {"wk": "ws"}.get, "default")
    again = decode(TOPIC, record, {"wk": "ws"}.get, "default")
    ids = [item["messageId"] for item in first.items or ()]
    assert ids == [item["messageId"] for item in again.items or ()] and len(set(ids)) == 2
    later = SimpleNamespace(**{**vars(record), "timestamp": record.timestamp + 1, "offset": 0})
    assert decode(TOPIC, later, {"wk": "ws"}.get, "default").items[0]["messageId"] not in ids  # type: ignore[index]
    assert ids[0] == derived_message_id(TOPIC, record.timestamp, record.value, 0)
