"""The Kafka ingest topic (`cdp.ingest` by default): Segment calls written by Kafka producers.

One message holds one Segment call, or `{"batch": [call, ...]}` as `/v1/batch`
takes it. The workspace is named by the write key in the `write_key` header (or
`writeKey` in the body, as Segment's HTTP API accepts). A consumer thread in the
group `cdp-ingest` polls up to `max_records` messages, hands the calls of each
workspace to the one intake (`Intake.take_now`: validate, record through the
single writer, dead-letter the refused ones), and commits the offsets only then.
It joins the group once the topic holds a message, so an idle platform stays out.

Invariants:
- An offset is committed only after every message below it is durably in the
  event log or in the dead-letter store. When the store does not take a batch,
  nothing is committed: the consumer seeks back, waits, and takes it again.
- Nothing is stored twice on redelivery: every call is deduplicated by its
  `messageId` within the workspace; a call sent without one gets an id derived
  from the record (`derived_message_id`), which a redelivery reproduces.
- No message stops the consumer: one that is not a call (not JSON, not an
  object, an empty batch) is dead-lettered with the reason; an invalid call is
  dead-lettered by the intake; one without a usable write key, which names no
  workspace, is dead-lettered in the platform's default workspace with the code
  `missing_key` or `unknown_key` and without the key. A message on which the
  intake itself fails (a bug) is dead-lettered as `intake_error`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import orjson
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from prometheus_client import Counter

from ingest.committer import StoreUnavailable
from ingest.intake import Intake, raw_body

log = logging.getLogger(__name__)

INGEST_TOPIC = "cdp.ingest"
INGEST_GROUP = "cdp-ingest"
KEY_HEADERS = ("write_key", "writeKey")

MESSAGES = Counter(
    "cdp_kafka_ingest_messages",
    "Messages consumed from the Kafka ingest topic, by outcome (taken, invalid_json, invalid_batch, missing_key, "
    "unknown_key, intake_error)",
    ["outcome"],
)
CALLS = Counter(
    "cdp_kafka_ingest_calls", "Calls from the Kafka ingest topic, by outcome (stored, duplicate, rejected)", ["outcome"]
)
RETRIES = Counter("cdp_kafka_ingest_retries", "Polled batches taken again because the event store did not take them")

# Fixed forever: derived messageIds must come out the same on every redelivery, in every version.
_ID_NAMESPACE = uuid.UUID("6f1c3a52-8d2e-5b7a-9c41-0e5d7f2a9b13")


def derived_message_id(topic: str, timestamp: int | None, value: bytes, index: int) -> str:
    """The messageId of a call sent without one: from the record's content, its timestamp and the call's place.

    A redelivered record has the same bytes and timestamp, so it maps to the same
    id, and so does a producer's retry of the same send. The offset is left out on
    purpose: the bundled broker forgets its topics on restart and numbers offsets
    from 0 again, so offset-based ids would make new messages look like old ones.
    The record timestamp keeps two sends of the same bytes apart.
    """
    digest = hashlib.sha256(value).hexdigest()
    return str(uuid.uuid5(_ID_NAMESPACE, f"kafka\x00{topic}\x00{timestamp}\x00{digest}\x00{index}"))


@dataclass
class Decoded:
    """One record, read: the calls for a workspace, or a reason it holds none."""

    workspace_id: str
    items: list[Any] | None = None  # the calls, ready for the intake
    code: str = ""  # set when the record is not a call at all
    reason: str = ""
    body: bytes = b""  # what the dead letter keeps (never the write key)


def _header_key(headers: Any) -> str | None:
    for name, value in headers or ():
        if name in KEY_HEADERS and value:
            return bytes(value).decode("utf-8", "replace").strip() or None
    return None


def _without_key(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "writeKey"}


def _with_ids(topic: str, record: Any, value: bytes, body: dict[str, Any]) -> dict[str, Any]:
    """The body without its write key, every call in it carrying a messageId (derived when it had none)."""

    def named(item: Any, index: int) -> Any:
        if not isinstance(item, dict):
            return item
        item = _without_key(item)
        if item.get("messageId") is None:
            item["messageId"] = derived_message_id(topic, record.timestamp, value, index)
        return item

    body = _without_key(body)
    if "batch" not in body:
        return named(body, 0)
    if isinstance(body["batch"], list):
        body["batch"] = [named(item, index) for index, item in enumerate(body["batch"])]
    return body


def decode(
    topic: str, record: Any, authorise: Callable[[str], str | None], default_workspace: str
) -> Decoded:
    """Turn a record into calls for a workspace, or into a dead letter; never raises for a bad record."""
    value: bytes = record.value if record.value is not None else b""
    try:
        body: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        body, not_json = None, f"the message is not valid JSON: {exc}"
    else:
        not_json = ""
    key = _header_key(record.headers)
    if key is None and isinstance(body, dict) and isinstance(body.get("writeKey"), (str, int)):
        key = str(body["writeKey"]).strip() or None
    if isinstance(body, dict):
        body = _with_ids(topic, record, value, body)

    def kept() -> bytes:  # what a dead letter keeps: a replay finds the same ids, and never the key
        return raw_body(body) if isinstance(body, dict) else value

    if key is None:
        return Decoded(default_workspace, code="missing_key", body=kept(),
                       reason="no write key: set the write_key header (or writeKey in the body) to a write key "
                              "of the workspace")  # fmt: skip
    workspace_id = authorise(key)
    if workspace_id is None:
        return Decoded(default_workspace, code="unknown_key", body=kept(),
                       reason="the write key names no workspace; use a write key of the workspace "
                              "(see `cdp up` output)")  # fmt: skip
    if not_json:
        return Decoded(workspace_id, code="invalid_json", reason=not_json, body=value)
    if not isinstance(body, dict):
        return Decoded(workspace_id, code="invalid_json", body=value,
                       reason='the message is not a JSON object; send one call, or {"batch": [call, ...]}')  # fmt: skip
    if "batch" not in body:
        return Decoded(workspace_id, items=[body])
    batch = body["batch"]
    if not isinstance(batch, list) or not batch:
        return Decoded(workspace_id, code="invalid_batch", body=kept(), reason="batch must be a non-empty array of calls")
    # As /v1/batch: a call without its own context, integrations or sentAt takes the batch's.
    shared = {k: body[k] for k in ("context", "integrations") if isinstance(body.get(k), dict)}
    if body.get("sentAt") is not None:
        shared["sentAt"] = body["sentAt"]
    return Decoded(workspace_id, items=[{**shared, **item} if isinstance(item, dict) else item for item in batch])


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: "KafkaIngest") -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        gone = set(revoked)
        self.owner._done = {d for d in self.owner._done if d[0] not in gone}

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("kafka ingest: consuming %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class KafkaIngest:
    """The consumer of the ingest topic: a thread of its own, started and stopped with the platform."""

    def __init__(
        self,
        bootstrap: str,
        intake: Intake,
        authorise: Callable[[str], str | None],
        default_workspace: str,
        topic: str = INGEST_TOPIC,
        group_id: str = INGEST_GROUP,
        max_records: int = 1000,
        retry_pause: float = 0.5,
        max_retry_pause: float = 5.0,
        drain_on_stop: float = 0.0,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.security = dict(security or {})  # TLS/SASL arguments of the consumer (infra/kafka_security.py)
        self.intake = intake
        self.authorise = authorise
        self.default_workspace = default_workspace
        self.topic = topic
        self.group_id = group_id
        self.source = f"kafka:{topic}"
        self.max_records = max_records
        self.retry_pause = retry_pause
        self.max_retry_pause = max_retry_pause
        self.drain_on_stop = drain_on_stop  # seconds to take what is already on the topic when stopping
        self.committed: dict[int, int] = {}  # partition → next offset, as committed
        self.error: BaseException | None = None  # the last failure, until a batch goes through again
        self._done: set[tuple[TopicPartition, int]] = set()  # handled, not yet committed (a batch being retried)
        self._pause = retry_pause
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-ingest", daemon=True)

    def start(self) -> "KafkaIngest":
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # The consumer thread -------------------------------------------------------------------

    def _consumer(self) -> KafkaConsumer:
        return KafkaConsumer(
            **self.security,
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id="cdp-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a new group takes the whole topic; messageIds make that safe
            max_poll_records=self.max_records,
            # Short timeouts: the group joins in seconds, also on the bundled broker.
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=30_000,
        )

    def _ends(self, consumer: KafkaConsumer) -> dict[TopicPartition, int]:
        partitions = [TopicPartition(self.topic, p) for p in consumer.partitions_for_topic(self.topic) or ()]
        return consumer.end_offsets(partitions) if partitions else {}

    def _join(self, consumer: KafkaConsumer) -> bool:
        """Join the group once the topic holds a message (True when joined or joining).

        An idle platform stays out of the group: a join in flight holds up the
        bundled broker's exit for seconds, and there is nothing to take yet.
        """
        if consumer.subscription():
            return True
        if not any(self._ends(consumer).values()):
            return False
        consumer.subscribe([self.topic], listener=_Listener(self))
        return True

    def _run(self) -> None:
        consumer: KafkaConsumer | None = None
        while not self._stopping.is_set():
            try:
                if consumer is None:
                    consumer = self._consumer()
                if not self._join(consumer):
                    self._stopping.wait(0.25)
                    continue
                polled = consumer.poll(timeout_ms=250)
                if polled:
                    self._handle(consumer, polled)
            except Exception as exc:  # the broker went away, or worse: start over from the committed offsets
                if isinstance(exc, KafkaError):
                    log.warning("kafka ingest: %r; reconnecting", exc)
                else:
                    log.exception("kafka ingest: the consumer failed; reconnecting")
                self.error = exc
                if consumer is not None:
                    _close(consumer)
                    consumer = None
                self._wait()
        if consumer is not None:
            if self.drain_on_stop > 0:
                self._drain(consumer)
            _close(consumer)

    def _drain(self, consumer: KafkaConsumer) -> None:
        """Take what the topic holds now, for at most `drain_on_stop` seconds (a broker that forgets on restart)."""
        deadline = time.monotonic() + self.drain_on_stop
        try:
            ends = self._ends(consumer)

            def left() -> bool:  # the bundled broker's topic holds only this run's messages: we know the commits
                return any(self.committed.get(tp.partition, 0) < end for tp, end in ends.items())

            while left() and time.monotonic() < deadline:
                self._join(consumer)
                polled = consumer.poll(timeout_ms=100)  # joins the group first if it has not yet
                if polled:
                    self._handle(consumer, polled)
        except Exception:
            log.exception("kafka ingest: taking the rest of the topic before stopping failed")

    def _wait(self) -> None:
        self._stopping.wait(self._pause)
        self._pause = min(self._pause * 2, self.max_retry_pause)

    def _handle(self, consumer: KafkaConsumer, polled: dict[TopicPartition, list[Any]]) -> None:
        """Take one polled batch, then commit it; when the store fails, seek back and take it again later."""
        groups: dict[str, list[tuple[tuple[TopicPartition, int], Decoded]]] = {}
        letters: list[tuple[tuple[TopicPartition, int], Decoded]] = []
        for tp, records in polled.items():
            for record in records:
                at = (tp, record.offset)
                if at in self._done:
                    continue
                decoded = decode(self.topic, record, self.authorise, self.default_workspace)
                if decoded.items is None:
                    letters.append((at, decoded))
                else:
                    groups.setdefault(decoded.workspace_id, []).append((at, decoded))
        try:
            for workspace_id, entries in groups.items():
                self._take(workspace_id, entries)
            for at, decoded in letters:
                self.intake.unreadable(decoded.workspace_id, self.source, decoded.body, decoded.code, decoded.reason)
                MESSAGES.labels(decoded.code).inc()
                self._done.add(at)
        except Exception as exc:  # the event store did not take it: nothing is committed
            log.warning("kafka ingest: the event store did not take a batch (%s); taking it again", exc)
            RETRIES.inc()
            self.error = exc
            for tp, records in polled.items():
                try:
                    consumer.seek(tp, records[0].offset)
                except (AssertionError, KafkaError, ValueError):
                    pass  # no longer ours: its next owner starts from the committed offset
            self._wait()
            return
        keyless = [d for _, d in letters if d.code in ("missing_key", "unknown_key")]
        if keyless:  # never the key or the body: where to find them is enough
            log.warning("kafka ingest: %d messages without a usable write key, kept as dead letters of workspace %s",
                        len(keyless), self.default_workspace)  # fmt: skip
        self._commit(consumer, polled)
        self._pause = self.retry_pause
        self.error = None

    def _take(self, workspace_id: str, entries: list[tuple[tuple[TopicPartition, int], Decoded]]) -> None:
        """One workspace's calls to the intake in one go; the messages are then done (until committed)."""
        items = [item for _, decoded in entries for item in decoded.items or ()]
        try:
            outcome = self.intake.take_now(workspace_id, items, source=self.source)
        except StoreUnavailable:
            raise
        except Exception as exc:
            if len(entries) > 1:  # find the message the intake fails on; the others go through
                for entry in entries:
                    self._take(workspace_id, [entry])
                return
            # One message the intake cannot take (a bug, or a store failure: then this raises too).
            log.exception("kafka ingest: the intake failed on a message; kept as a dead letter")
            reason = f"the intake failed on this message: {type(exc).__name__}"
            body = raw_body(items if len(items) != 1 else items[0])
            self.intake.unreadable(workspace_id, self.source, body, "intake_error", reason)
            MESSAGES.labels("intake_error").inc()
            self._done.update(at for at, _ in entries)
            return
        rejected = len({r.index for r in outcome.rejected})
        CALLS.labels("stored").inc(outcome.stored)
        CALLS.labels("duplicate").inc(outcome.duplicates)
        CALLS.labels("rejected").inc(rejected)
        MESSAGES.labels("taken").inc(len(entries))
        self._done.update(at for at, _ in entries)

    def _commit(self, consumer: KafkaConsumer, polled: dict[TopicPartition, list[Any]]) -> None:
        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1) for tp, records in polled.items()}
        try:
            consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance took the partitions: their next owner takes them again (deduplicated)
            log.warning("kafka ingest: committing offsets failed (%s); the messages will be delivered again", exc)
            return
        for tp, offset in offsets.items():
            self.committed[tp.partition] = offset.offset
        self._done = {(tp, at) for tp, at in self._done if tp not in offsets or at >= offsets[tp].offset}


def _close(consumer: KafkaConsumer) -> None:
    try:
        consumer.close(autocommit=False, timeout_ms=200)  # a join in flight would hold it for seconds
    except Exception:
        log.exception("kafka ingest: closing the consumer failed")
