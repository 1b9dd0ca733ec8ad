import re
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


MASTER = "q0Wzyq2UaJ7JmT1hL3s9kH6cTn2oQ0mXxVb8dJf4Y1E="  # base64 of 32 bytes
FIX = re.compile(r"\b(set|use|write|give|choose|unset)\b")  # every message says what to do


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"CDP_HTTP_PORT": "80a"}, "CDP_HTTP_PORT"),
        ({"CDP_HTTP_PORT": "0"}, "CDP_HTTP_PORT"),
        ({"CDP_HTTP_PORT": "-1"}, "CDP_HTTP_PORT"),
        ({"CDP_HTTP_PORT": "70000"}, "CDP_HTTP_PORT"),
        ({"CDP_INGEST_PORT": "eighty-one"}, "CDP_INGEST_PORT"),
        ({"CDP_INGEST_PORT": "65536"}, "CDP_INGEST_PORT"),
        ({"CDP_KAFKA_PORT": "9092.5"}, "CDP_KAFKA_PORT"),
        ({"CDP_KAFKA_PORT": "0"}, "CDP_KAFKA_PORT"),
        ({"CDP_INGEST_PORT": "8000"}, "CDP_INGEST_PORT"),  # the API's port
        ({"CDP_KAFKA_PORT": "8001"}, "CDP_KAFKA_PORT"),  # the ingest workers'
        ({"CDP_INGEST_WORKERS": "two"}, "CDP_INGEST_WORKERS"),
        ({"CDP_INGEST_WORKERS": "-1"}, "CDP_INGEST_WORKERS"),
        ({"CDP_KAFKA_PARTITIONS": "0"}, "CDP_KAFKA_PARTITIONS"),
        ({"CDP_KAFKA_PARTITIONS": "four"}, "CDP_KAFKA_PARTITIONS"),
        ({"CDP_SQL_MAX_ROWS": "0"}, "CDP_SQL_MAX_ROWS"),
        ({"CDP_SQL_MAX_ROWS": "2.5"}, "CDP_SQL_MAX_ROWS"),
        ({"CDP_SQL_MAX_MEMORY": "-1073741824"}, "CDP_SQL_MAX_MEMORY"),
        ({"CDP_SQL_MAX_MEMORY": "1GB"}, "CDP_SQL_MAX_MEMORY"),
        ({"CDP_SQL_TIMEOUT_S": "-5"}, "CDP_SQL_TIMEOUT_S"),
        ({"CDP_SQL_TIMEOUT_S": "ten"}, "CDP_SQL_TIMEOUT_S"),
        ({"CDP_ENCRYPTION": "maybe"}, "CDP_ENCRYPTION"),
        ({"CDP_PROCESSOR_DRIVER": "spark"}, "CDP_PROCESSOR_DRIVER"),
        ({"CDP_HTTP_HOST": ""}, "CDP_HTTP_HOST"),
        ({"CDP_HTTP_HOST": "http://127.0.0.1"}, "CDP_HTTP_HOST"),
        ({"CDP_HTTP_HOST": "127.0.0.1:8000"}, "CDP_HTTP_HOST"),
        ({"CDP_HTTP_HOST": "my host"}, "CDP_HTTP_HOST"),
        ({"CDP_EVENT_STORE": "mysql://x"}, "CDP_EVENT_STORE"),
        ({"CDP_EVENT_STORE": "postgresql://cdp:pw@db:fivefour/cdp"}, "CDP_EVENT_STORE"),
        ({"CDP_EVENT_STORE": "postgresql://cdp@db:99999/cdp"}, "CDP_EVENT_STORE"),
        ({"CDP_EVENT_STORE": "sqlite://"}, "CDP_EVENT_STORE"),
        ({"CDP_CLICKHOUSE_URL": "tcp://x:9000"}, "CDP_CLICKHOUSE_URL"),
        ({"CDP_CLICKHOUSE_URL": "http://ch:port"}, "CDP_CLICKHOUSE_URL"),
        ({"CDP_CLICKHOUSE_URL": "http://:8123"}, "CDP_CLICKHOUSE_URL"),
        ({"CDP_CLICKHOUSE_URL": "chdb://"}, "CDP_CLICKHOUSE_URL"),
        ({"CDP_CLICKHOUSE_DATABASE": "cdp-prod"}, "CDP_CLICKHOUSE_DATABASE"),
        ({"CDP_CLICKHOUSE_DATABASE": "cdp; DROP DATABASE x"}, "CDP_CLICKHOUSE_DATABASE"),
        ({"CDP_KAFKA_BOOTSTRAP": "kafka.example.internal"}, "CDP_KAFKA_BOOTSTRAP"),
        ({"CDP_KAFKA_BOOTSTRAP": "kafka:9092,kafka-2:x"}, "CDP_KAFKA_BOOTSTRAP"),
        ({"CDP_KAFKA_BOOTSTRAP": "PLAINTEXT://kafka/9092"}, "CDP_KAFKA_BOOTSTRAP"),
        ({"CDP_INGEST_TOPIC": "cdp ingest"}, "CDP_INGEST_TOPIC"),
        ({"CDP_WRITE_KEY": "wk_with:colon"}, "CDP_WRITE_KEY"),
        ({"CDP_READ_KEY": "rk with blank"}, "CDP_READ_KEY"),
        ({"CDP_MASTER_KEY": "not-a-key"}, "CDP_MASTER_KEY"),
        ({"CDP_MASTER_KEY": MASTER[:-8] + "="}, "CDP_MASTER_KEY"),  # base64, but not of 32 bytes
        ({"CDP_TLS_CERTFILE": "/nowhere/cert.pem", "CDP_TLS_KEYFILE": "/nowhere/key.pem"}, "CDP_TLS_CERTFILE"),
        ({"CDP_KAFKA_SECURITY_PROTOCOL": "TLS"}, "CDP_KAFKA_SECURITY_PROTOCOL"),
        ({"CDP_PREDICTIONS_EVERY": "daily"}, "CDP_PREDICTIONS_EVERY"),
        ({"CDP_PREDICTIONS_EVERY": "-1"}, "CDP_PREDICTIONS_EVERY"),
        ({"CDP_PREDICTION_HORIZON_DAYS": "0"}, "CDP_PREDICTION_HORIZON_DAYS"),
        ({"CDP_LTV_HORIZON_DAYS": "a year"}, "CDP_LTV_HORIZON_DAYS"),
        ({"CDP_CHURN_ON": "purchase"}, "CDP_CHURN_ON"),
    ],
)
def test_every_bad_value_names_its_variable_and_the_fix(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env)
    message = str(raised.value)
    assert name in message and FIX.search(message), message


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="CDP_DATA_DIR") as raised:
        load_settings({"CDP_DATA_DIR": str(tmp_path / "file")})
    assert FIX.search(str(raised.value))


def test_a_password_in_a_bad_url_is_not_repeated() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"CDP_EVENT_STORE": "postgresql://cdp:s3cret@db:fivefour/cdp"})
    assert "s3cret" not in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        load_settings({"CDP_MASTER_KEY": "almost-a-key-but-secret"})
    assert "almost-a-key-but-secret" not in str(raised.value)


def test_good_values_of_the_checked_variables_pass() -> None:
    s = load_settings({
        "CDP_HTTP_HOST": "0.0.0.0", "CDP_HTTP_PORT": "443", "CDP_INGEST_PORT": "8443", "CDP_KAFKA_PORT": "19092",
        "CDP_KAFKA_PARTITIONS": "12", "CDP_SQL_MAX_ROWS": "500", "CDP_SQL_MAX_MEMORY": "268_435_456",
        "CDP_CLICKHOUSE_DATABASE": "cdp_prod", "CDP_PROCESSOR_DRIVER": "Kafka", "CDP_MASTER_KEY": MASTER,
        "CDP_EVENT_STORE": "sqlite:///var/lib/cdp/events.sqlite3", "CDP_CLICKHOUSE_URL": "https://ch.example:8443",
    })  # fmt: skip
    assert (s.http_host, s.http_port, s.ingest_port, s.kafka_port, s.kafka_partitions) == ("0.0.0.0", 443, 8443, 19092, 12)
    assert (s.sql_max_rows, s.sql_max_memory, s.clickhouse_database, s.processor_driver) == (500, 268435456, "cdp_prod",
                                                                                              "kafka")  # fmt: skip
    assert load_settings({"CDP_HTTP_HOST": "::1"}).http_host == "::1"
    assert load_settings({"CDP_KAFKA_BOOTSTRAP": "k1:9092,k2:9092"}).kafka_bootstrap == "k1:9092,k2:9092"
    # The same port for the API and the ingest workers is fine when this machine runs no ingest workers.
    assert load_settings({"CDP_INGEST_PORT": "8000", "CDP_INGEST_WORKERS": "0"}).ingest_port == 8000


def test_prediction_settings_have_defaults_and_take_good_values() -> None:
    s = load_settings({})
    assert (s.predictions_every_h, s.prediction_horizon_days, s.churn_on, s.ltv_horizon_days) == (24.0, 30, "activity",
                                                                                                 365)  # fmt: skip
    s = load_settings({"CDP_PREDICTIONS_EVERY": "0", "CDP_PREDICTION_HORIZON_DAYS": "14", "CDP_CHURN_ON": "Order",
                       "CDP_LTV_HORIZON_DAYS": "180"})  # fmt: skip
    assert (s.predictions_every_h, s.prediction_horizon_days, s.churn_on, s.ltv_horizon_days) == (0.0, 14, "order", 180)
