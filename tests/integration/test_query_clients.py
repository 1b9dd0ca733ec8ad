"""The query API's pool of ClickHouse clients (infra/clickhouse.ClientPool) on embedded chDB: each call takes a
free client and gives it back, a failing query included, and every client sees what the processors' shared
client wrote."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from infra.clickhouse import clickhouse_client, query_clients
from infra.config import Settings


def test_the_pool_reads_the_shared_clients_writes_and_survives_a_failing_query(settings: Settings) -> None:
    shared = clickhouse_client(settings)
    table = f"{settings.clickhouse_database}.pool_probe"
    shared.command(f"CREATE DATABASE IF NOT EXISTS {settings.clickhouse_database}")
    shared.command(f"CREATE TABLE {table} (n UInt32) ENGINE = MergeTree ORDER BY n")
    shared.insert(table, [[1], [2], [3]], column_names=["n"])
    pool = query_clients(replace(settings, query_connections=2))
    try:
        for _ in range(3):  # a failure gives its client back: the pool never runs dry
            with pytest.raises(Exception, match="UNKNOWN_TABLE|doesn't exist|does not exist"):
                pool.query(f"SELECT * FROM {table}_missing")
        answers: list[int] = []
        threads = [threading.Thread(target=lambda: answers.append(pool.query(f"SELECT sum(n) FROM {table}")
                                                                  .result_rows[0][0])) for _ in range(8)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert answers == [6] * 8
        shared.insert(table, [[4]], column_names=["n"])
        assert pool.query(f"SELECT sum(n) FROM {table}").result_rows[0][0] == 10  # what was written since
    finally:
        shared.command(f"DROP TABLE IF EXISTS {table}")


def test_at_least_one_query_connection_is_configured() -> None:
    from infra.config import ConfigError, load_settings

    assert load_settings({"CDP_QUERY_CONNECTIONS": "4"}).query_connections == 4
    with pytest.raises(ConfigError, match="CDP_QUERY_CONNECTIONS"):
        load_settings({"CDP_QUERY_CONNECTIONS": "0"})
