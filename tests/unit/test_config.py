from pathlib import Path

import pytest

from infra.config import ConfigError, load_settings


def test_defaults_are_the_embedded_ones() -> None:
    s = load_settings({})
    assert s.data_dir == Path("./.cdp").resolve()
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8000)
    assert not s.uses_postgres and s.clickhouse_url == "" and s.uses_bundled_broker
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.sqlite_path == s.data_dir / "events.sqlite3"
    assert s.processor_driver == "log"


def test_urls_select_the_distributed_parts() -> None:
    s = load_settings(
        {
            "CDP_EVENT_STORE": "postgresql://cdp:pw@db:5432/cdp",
            "CDP_CLICKHOUSE_URL": "http://ch:8123",
            "CDP_KAFKA_BOOTSTRAP": "kafka:9092",
            "CDP_HTTP_PORT": "9000",
            "CDP_PROCESSOR_DRIVER": "kafka",
        }
    )
    assert s.uses_postgres and not s.uses_bundled_broker
    assert s.bootstrap_servers == "kafka:9092" and s.http_port == 9000 and s.processor_driver == "kafka"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"CDP_HTTP_PORT": "eighty"}, "CDP_HTTP_PORT"),
        ({"CDP_EVENT_STORE": "mysql://x"}, "CDP_EVENT_STORE"),
        ({"CDP_CLICKHOUSE_URL": "tcp://x:9000"}, "CDP_CLICKHOUSE_URL"),
        ({"CDP_PROCESSOR_DRIVER": "spark"}, "CDP_PROCESSOR_DRIVER"),
    ],
)
def test_bad_values_name_the_variable_to_fix(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_settings(env)


def test_analyst_sql_limits_have_defaults_and_refuse_non_positive_values() -> None:
    defaults = load_settings({})
    assert (defaults.sql_max_rows, defaults.sql_timeout_s, defaults.sql_max_memory) == (10_000, 10.0, 1 << 30)
    tuned = load_settings({"CDP_SQL_MAX_ROWS": "500", "CDP_SQL_TIMEOUT_S": "2.5", "CDP_SQL_MAX_MEMORY": "268435456"})
    assert (tuned.sql_max_rows, tuned.sql_timeout_s, tuned.sql_max_memory) == (500, 2.5, 268435456)
    for name, value in (("CDP_SQL_TIMEOUT_S", "0"), ("CDP_SQL_MAX_ROWS", "many"), ("CDP_SQL_MAX_MEMORY", "-1")):
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value})
