"""The relay: the event store's notification log, in order, onto Kafka topic `cdp.events`.

Messages are keyed by profile id (a profile's messages stay in one partition, in
log order) and carry their log position and event id in the value and headers.
The relay records the position it has published; after a restart it resumes
from there, or from earlier if a Kafka consumer needs it (a forgetful broker).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Mapping, Sequence

import orjson
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

from streams.log_follower import LogFollower
from streams.messages import ErasedEntry, ErasureMessage, Message, Outgoing
from streams.stages import measured

log = logging.getLogger(__name__)

EVENTS_TOPIC = "cdp.events"


def ensure_topics(
    bootstrap: str, partitions: int, topics: list[str], security: Mapping[str, Any] | None = None
) -> list[str]:
    """Create missing topics; returns the ones created now. `security`: TLS/SASL arguments (infra/kafka_security.py)."""
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="cdp-admin", request_timeout_ms=10_000, **(security or {})
        )
    except KafkaTimeoutError as exc:  # the first client to connect: say what was tried
        protocol = (security or {}).get("security_protocol", "PLAINTEXT")
        raise type(exc)(f"no Kafka broker answered at {bootstrap} over {protocol} ({exc}): check the address and "
                        f"that the broker's listener there speaks {protocol}") from exc  # fmt: skip
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing])
            except TopicAlreadyExistsError:
                pass
        return missing
    finally:
        admin.close()


def kafka_producer(bootstrap: str, security: Mapping[str, Any] | None = None) -> KafkaProducer:
    """One producer per process (it is thread-safe), acknowledged by all in-sync replicas."""
    return KafkaProducer(
        **(security or {}),
        bootstrap_servers=bootstrap,
        client_id="cdp",
        acks="all",
        linger_ms=5,
        batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
        retries=5,
    )


class KafkaPublisher:
    """Publishes messages keyed by profile id, waiting for the broker's acknowledgement per page.

    Log messages (`cdp.events`) are written as `encode` writes them; the
    processors' own messages (profile and tag changes, KPI updates) are JSON
    objects already. A message that cannot be encoded as JSON (an entry from
    before ingest refused such values) is handed to `unpublishable` and skipped,
    so it cannot stop the stream; without that callback it raises, and the
    caller's page fails.
    """

    def __init__(
        self,
        producer: KafkaProducer,
        topic: str = EVENTS_TOPIC,
        key: Callable[[Outgoing], str] | None = None,
        unpublishable: Callable[[Any, BaseException], None] | None = None,
    ) -> None:
        self.topic = topic
        self.key = key or (lambda m: m["profile_id"] or m["workspace_id"])
        self.sent: dict[int, int] = {}  # partition → last position the broker acknowledged
        self.producer = producer
        self.unpublishable = unpublishable

    def publish(self, messages: Sequence[Message | Outgoing]) -> None:
        futures = []
        for m in messages:
            if isinstance(m, ErasedEntry):
                continue  # an erased person's entry: nothing to say of it downstream
            body = m if isinstance(m, dict) else m.to_json()
            try:
                value = orjson.dumps(body)
            except (TypeError, ValueError) as exc:  # orjson: nested too deep, an integer beyond 64 bits
                if self.unpublishable is None:
                    raise
                self.unpublishable(m, exc)
                continue
            headers = [(name, str(body[name]).encode()) for name in ("position", "event_id") if name in body]
            # An erasure goes to the partition of each erased profile, after that profile's earlier entries there:
            # a consumer of one partition (the Kafka driver's processors) never projects them after it.
            keys = list(m.profile_ids) if isinstance(m, ErasureMessage) else [self.key(body)]
            for key in keys:
                futures.append((body, self.producer.send(self.topic, key=key.encode(), value=value, headers=headers)))
        self.producer.flush()
        for body, future in futures:
            metadata = future.get(timeout=30)  # raises if the broker refused a message: the page is retried
            self.sent[metadata.partition] = max(self.sent.get(metadata.partition, 0), body.get("position", 0))


class Relay:
    """Follows the log from `start` and publishes each page, recording the position after the broker acks."""

    def __init__(
        self,
        app: Any,
        publisher: KafkaPublisher,
        save: Callable[[int], None],
        start: int,
        batch: int = 5000,
        tail: Any = None,
        idle_wait: float = 0.25,
    ) -> None:
        self.publisher = publisher
        self.follower = LogFollower(app, self._publish, save, start, batch=batch, idle_wait=idle_wait, name="relay",
                                    tail=tail)  # fmt: skip

    def _publish(self, messages: list[Message]) -> None:
        with measured("relay", len(messages)):
            self.publisher.publish(messages)

    @property
    def position(self) -> int:
        return self.follower.position

    @property
    def wake(self) -> threading.Event:
        return self.follower.wake

    def start(self) -> None:
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()
