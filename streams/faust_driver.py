"""Drive processors with faust-streaming agents consuming `cdp.events` from Kafka.

The distributed mode's driver (and selectable in the embedded default with
CDP_PROCESSOR_DRIVER=kafka). Each partition's applied position is recorded;
redeliveries at or below it are dropped, and the processor is idempotent besides.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any, Mapping

import faust

from streams.messages import decode
from streams.pipeline import Processor
from streams.relay import EVENTS_TOPIC

log = logging.getLogger(__name__)

POSITIONS_NAME = "profiles@kafka"


def broker_credentials(security: Mapping[str, Any] | None) -> Any:
    """Faust's `broker_credentials` for kafka-python's TLS/SASL arguments (infra/kafka_security.py); None: plain."""
    security = security or {}
    protocol = security.get("security_protocol", "PLAINTEXT")
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=security.get("ssl_cafile"))
        if security.get("ssl_certfile"):
            context.load_cert_chain(security["ssl_certfile"], security.get("ssl_keyfile"))
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=security["sasl_plain_username"], password=security["sasl_plain_password"],
            mechanism=security["sasl_mechanism"], ssl_context=context,
        )  # fmt: skip
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class KafkaDriver:
    def __init__(
        self, bootstrap: str, processor: Processor, store: Any, data_dir: Path, group: str = "cdp-processors",
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self.processor = processor
        self.store = store
        self.applied: dict[int, int] = dict(store.positions().get(POSITIONS_NAME, {}))
        self.error: BaseException | None = None
        self.app = faust.App(
            group,
            broker=f"kafka://{bootstrap}",
            broker_credentials=broker_credentials(security),
            web_enabled=False,
            datadir=str(data_dir / "faust"),  # Faust keeps table state here; never in the working directory
            autodiscover=False,
            store="memory://",
            broker_rebalance_timeout=5,
            broker_session_timeout=6,
            broker_heartbeat_interval=1,
            consumer_auto_offset_reset="earliest",
            topic_allow_declare=False,  # the relay declares cdp.events with the configured partitions
            stream_wait_empty=False,
        )
        topic = self.app.topic(EVENTS_TOPIC, key_serializer="raw", value_serializer="raw")
        self.app.agent(topic, name="profiles")(self._consume)

    def applied_position(self) -> int:
        """A position every partition has applied; the relay republishes after it on a fresh broker."""
        return min(self.applied.values()) if self.applied else 0

    async def _consume(self, stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(2000, within=0.1):
            fresh = []
            top: dict[int, int] = {}
            for event in events:
                message = decode(event.value)
                partition = event.message.partition
                if message.position <= self.applied.get(partition, 0):
                    continue  # a redelivery: already applied
                fresh.append(message)
                top[partition] = max(top.get(partition, 0), message.position)
            if not fresh:
                continue
            while True:
                try:
                    await loop.run_in_executor(None, self.processor.process, fresh)
                    break
                except Exception as exc:  # keep the partition's order: retry the same batch
                    self.error = exc
                    log.exception("processing a batch from Kafka failed; retrying")
                    await asyncio.sleep(1.0)
            self.error = None
            for partition, position in top.items():
                await loop.run_in_executor(None, self.store.save_position, POSITIONS_NAME, partition, position)
                self.applied[partition] = position

    async def start(self) -> None:
        await self.app.start()

    async def stop(self) -> None:
        await self.app.stop()

    def status(self, sent: dict[int, int], relay_position: int, log_position: int) -> dict[str, Any]:
        """Caught up when every partition applied the last position the relay sent to it."""
        lagging = {p: self.applied.get(p, 0) for p, last in sent.items() if self.applied.get(p, 0) < last}
        position = min(lagging.values()) if lagging else relay_position
        return {
            "driver": "kafka",
            "position": position,
            "lag": log_position - position,
            "partitions": {str(p): self.applied.get(p, 0) for p in sorted(set(sent) | set(self.applied))},
            "error": repr(self.error) if self.error else None,
        }
