"""The Kafka security settings reach real kafka-python clients (and Faust); against the bundled broker.

A broker with TLS or SASL listeners does not run here: that the arguments are the ones kafka-python documents is
checked by the clients accepting them, and a SASL client against the plain bundled broker fails in bounded time
with kafka-python's error rather than waiting forever.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from infra.broker import BundledBroker, free_port
from infra.config import load_settings
from infra.kafka_security import kafka_client_options
from ingest.kafka_topic import KafkaIngest
from streams import relay
from streams.faust_driver import KafkaDriver
from streams.relay import ensure_topics, kafka_producer

SASL = {"CDP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CDP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "CDP_KAFKA_SASL_USERNAME": "cdp", "CDP_KAFKA_SASL_PASSWORD": "pw"}  # fmt: skip


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    bundled = BundledBroker(free_port(), log_path=tmp_path / "broker.log").start()
    try:
        yield bundled.bootstrap
    finally:
        bundled.stop()


def test_explicit_plaintext_reaches_the_clients_and_they_work(broker: str, tmp_path: Path) -> None:
    settings = load_settings({"CDP_KAFKA_BOOTSTRAP": broker, "CDP_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
                              "CDP_DATA_DIR": str(tmp_path)})  # fmt: skip
    options = kafka_client_options(settings)
    assert ensure_topics(settings.bootstrap_servers, 1, ["secured"], options) == ["secured"]
    producer = kafka_producer(settings.bootstrap_servers, options)
    try:
        assert producer.config["security_protocol"] == "PLAINTEXT"
        assert producer.send("secured", b"x").get(timeout=10).offset == 0
    finally:
        producer.close(timeout=5)
    ingest = KafkaIngest(settings.bootstrap_servers, None, lambda _: None, "ws", topic="secured",  # type: ignore[arg-type]
                         security=options)  # fmt: skip
    consumer = ingest._consumer()
    try:
        assert consumer.config["security_protocol"] == "PLAINTEXT"
        assert consumer.partitions_for_topic("secured") == {0}
    finally:
        consumer.close()


def test_sasl_against_a_plain_broker_fails_in_bounded_time(broker: str, tmp_path: Path) -> None:
    settings = load_settings({"CDP_KAFKA_BOOTSTRAP": broker, "CDP_DATA_DIR": str(tmp_path), **SASL})
    options = kafka_client_options(settings)
    started = time.monotonic()
    with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):
        KafkaProducer(bootstrap_servers=broker, **options, bootstrap_timeout_ms=3000)
    assert time.monotonic() - started < 20


def test_ensure_topics_names_the_protocol_it_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def admin(**config: Any) -> None:
        seen.update(config)
        raise KafkaTimeoutError("Unable to bootstrap from kafka:9093")

    monkeypatch.setattr(relay, "KafkaAdminClient", admin)
    with pytest.raises(KafkaTimeoutError, match="no Kafka broker answered at kafka:9093 over SASL_SSL .*speaks SASL_SSL"):
        ensure_topics("kafka:9093", 1, ["t"], {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"})
    assert seen["security_protocol"] == "SASL_SSL" and seen["sasl_mechanism"] == "PLAIN"


def test_the_faust_driver_gets_the_credentials(tmp_path: Path) -> None:
    settings = load_settings({"CDP_KAFKA_BOOTSTRAP": "kafka:9093", "CDP_DATA_DIR": str(tmp_path), **SASL})
    driver = KafkaDriver(settings.bootstrap_servers, None, _NoPositions(), tmp_path,  # type: ignore[arg-type]
                         security=kafka_client_options(settings))  # fmt: skip
    credentials = driver.app.conf.broker_credentials
    assert type(credentials).__name__ == "SASLCredentials"
    assert (credentials.username, credentials.mechanism.value, credentials.protocol.value) == (
        "cdp", "SCRAM-SHA-256", "SASL_PLAINTEXT")
    plain = KafkaDriver("kafka:9092", None, _NoPositions(), tmp_path, group="plain")  # type: ignore[arg-type]
    assert plain.app.conf.broker_credentials is None


class _NoPositions:
    def positions(self) -> dict[str, Any]:
        return {}
