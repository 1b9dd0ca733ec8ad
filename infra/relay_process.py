"""The relay in a process of its own: the event log to Kafka `cdp.events`, off the core's interpreter lock.

kafka-python builds every record in Python (about 40-50 us of CPU per event
here, and its sender thread besides), which in the core process would take the
interpreter lock from the resolver and the processors. `cdp up` starts this
process after the core (`cdp relay`); it reads the event log as stored
(domain/application.EventLog, no identity loaded), publishes each page keyed by
profile id, and records its position with the intake log (`relay`), so status,
the startup checks and `cdp rebuild` see it without ClickHouse. The Kafka
processor driver, which must lower the relay's start to what it has applied,
keeps the relay in the core.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from prometheus_client import Counter

from domain.application import EventLog
from infra.config import Settings
from infra.eventstore import eventsourcing_env, open_intake_log, open_keyring, opening_stores, prepare_event_store
from infra.kafka_security import kafka_client_options
from ingest.intake_log import RELAY
from streams.relay import EVENTS_TOPIC, KafkaPublisher, Relay, ensure_topics, kafka_producer

log = logging.getLogger(__name__)
UNPUBLISHABLE = Counter("cdp_relay_unpublishable", "Log entries the relay process could not encode and skipped")
POLL_S = 0.02  # nothing in this process is told of commits: it looks this often


def _skip(message: Any, exc: BaseException) -> None:
    """An entry from before ingest refused values JSON cannot hold: said and counted, the stream goes on."""
    UNPUBLISHABLE.inc()
    log.warning("log position %s cannot be published (%s); skipped", getattr(message, "position", "?"), exc)


def run_relay(settings: Settings) -> None:
    """Publish the event log to cdp.events until SIGTERM or SIGINT."""
    env = eventsourcing_env(settings)
    with opening_stores(settings):  # the core and the ingest workers open the same schema as it starts
        prepare_event_store(settings, env)
        events = EventLog(env, sealer=open_keyring(settings))
        intake_log = open_intake_log(settings)
    ensure_topics(settings.bootstrap_servers, settings.kafka_partitions, [EVENTS_TOPIC], kafka_client_options(settings))
    producer = kafka_producer(settings.bootstrap_servers, kafka_client_options(settings))
    relay = Relay(events, KafkaPublisher(producer, unpublishable=_skip), start=intake_log.position(RELAY) or 0,
                  save=lambda position: intake_log.save_position(RELAY, position), idle_wait=POLL_S)  # fmt: skip
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    relay.start()
    try:
        stopping.wait()
    finally:
        relay.stop()
        producer.close(timeout=5)
