"""Shared fixtures: every test runs against real parts (chDB, SQLite/PostgreSQL, the bundled broker).

chDB allows one data path per process, so the whole session shares one chDB path
and each test gets its own ClickHouse database, data dir and ports.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from infra.bootstrap import Platform
from infra.broker import free_port
from infra.config import Settings
from infra.server import ThreadedServer, create_app

POSTGRES_URL = os.environ.get("CDP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def read_topic(
    bootstrap: str, topic: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0
) -> list[tuple[Any, dict[str, Any]]]:
    """(record, decoded JSON value) of every partition of `topic` from the start, until `done(values)` or timeout."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=500)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    received: list[tuple[Any, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while not done([value for _, value in received]) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            received += [(record, orjson.loads(record.value)) for record in records]
    consumer.close()
    return received


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return "chdb://" + str(tmp_path_factory.mktemp("chdb"))


@pytest.fixture
def settings(tmp_path: Path, chdb_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        http_port=free_port(),
        kafka_port=free_port(),
        kafka_partitions=2,
        clickhouse_url=chdb_url,
        clickhouse_database=f"t_{uuid.uuid4().hex[:12]}",
        predictions_every_h=0,  # runs only when a test asks: a scheduled one would land at a time of its own
    )


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=2):
            return True
    except Exception:
        return False


@pytest.fixture
def postgres_url() -> str:
    """A fresh PostgreSQL schema; required in CI (CI=true), skipped elsewhere when unreachable."""
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required in CI (set CDP_TEST_POSTGRES)")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is not reachable")
    return f"{POSTGRES_URL}?schema=t_{uuid.uuid4().hex[:12]}"


@dataclass
class Running:
    """A started platform and an HTTP client on it."""

    platform: Platform
    http: Any  # TestClient or httpx.Client

    @property
    def write_key(self) -> str:
        return self.platform.keys.write_key

    @property
    def read_key(self) -> str:
        return self.platform.keys.read_key

    @property
    def admin_key(self) -> str:
        return self.platform.keys.admin_key

    @property
    def platform_key(self) -> str:
        return self.platform.keys.platform_key

    @property
    def read_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.read_key}"}

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def send(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.http.post(path, json=body, auth=(self.write_key, ""), **kwargs)

    def wait_caught_up(self, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.platform.status()
            if status["caught_up"] and status["relay"]["lag"] == 0:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"projections did not catch up within {timeout}s: {status}")
            time.sleep(0.02)

    def settle(self, timeout: float = 30.0) -> None:
        """The log applied and no tag backfill queued or running (then caught up again: a backfill can publish)."""
        self.wait_caught_up(timeout)
        deadline = time.monotonic() + timeout
        while self.platform.tags is not None and self.platform.tags.backfills_pending:
            assert time.monotonic() < deadline, "backfills did not finish"
            time.sleep(0.02)
        self.wait_caught_up(timeout)

    def profile(self, identifier: str) -> Any:
        return self.http.get(f"/v1/profiles/{identifier}", headers=self.read_headers)

    def stored_event_count(self) -> int:
        """Customer events in the event store (the system of record), once the resolver recorded what was accepted."""
        from domain.model import CustomerEvent
        from eventsourcing.utils import get_topic

        assert self.platform.resolver is not None
        self.platform.resolver.drain()
        topic = get_topic(CustomerEvent.Recorded)
        return len(self.platform.app.recorder.select_notifications(1, 1_000_000, topics=[topic]))


@pytest.fixture
def running(settings: Settings) -> Iterator[Running]:
    """The platform on embedded defaults (SQLite, chDB, bundled broker), served in-process."""
    platform = Platform(settings)
    with TestClient(create_app(platform)) as client:
        yield Running(platform, client)


@pytest.fixture
def live(settings: Settings) -> Iterator[Running]:
    import httpx

    server = ThreadedServer(Platform(settings)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield Running(server.platform, client)
    finally:
        server.stop()


def with_store(settings: Settings, event_store: str) -> Settings:
    return replace(settings, event_store=event_store)
