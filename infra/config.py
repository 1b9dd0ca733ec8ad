"""Configuration from environment variables, with embedded defaults.

Only infra/ reads the environment; every other layer receives a `Settings`.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


class ConfigError(ValueError):
    """A configuration value is unusable; the message names the variable to fix."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    http_host: str = "127.0.0.1"
    http_port: int = 8000  # the core: the query API (and ingest, through one process)
    ingest_port: int = 8001  # the ingest workers (`cdp ingest`, started by `cdp up`)
    ingest_workers: int = 2  # processes sharing ingest_port; 0: `cdp up` starts none
    event_store: str = ""  # "" → SQLite file in data_dir; "postgresql://…" → PostgreSQL
    clickhouse_url: str = ""  # "" → embedded chDB in data_dir; "http(s)://…" → server
    clickhouse_database: str = "cdp"
    kafka_bootstrap: str = ""  # "" → start the bundled broker on kafka_port
    kafka_port: int = 9092
    kafka_partitions: int = 4
    ingest_topic: str = "cdp.ingest"  # Segment calls from Kafka producers (ingest/kafka_topic.py)
    write_key: str | None = None
    read_key: str | None = None
    processor_driver: str = "log"  # "log" (follow the event store in-process) | "kafka" (Faust)
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    sql_max_rows: int = 10_000  # analyst SQL (POST /v1/sql): rows returned, then truncated
    sql_timeout_s: float = 10.0  # analyst SQL: ClickHouse max_execution_time
    sql_max_memory: int = 1 << 30  # analyst SQL: ClickHouse max_memory_usage, bytes
    # Privacy (docs/privacy.md): the master key wrapping every subject key, and whether new data is sealed.
    master_key: str | None = None  # CDP_MASTER_KEY, base64 of 32 bytes; None → data_dir/master.key
    encryption: bool = True  # CDP_ENCRYPTION=off stores new data in plain text (benchmarks); sealed data stays readable
    # In transit (docs/operations.md, "TLS"): HTTPS for the API and the ingest workers when both files are set.
    tls_certfile: str = ""  # CDP_TLS_CERTFILE, PEM certificate (chain)
    tls_keyfile: str = ""  # CDP_TLS_KEYFILE, its unencrypted PEM private key
    # An external Kafka cluster's TLS and SASL (infra/kafka_security.py turns them into client arguments).
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    kafka_sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "events.sqlite3"

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "clickhouse"

    @property
    def master_key_path(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def key_store_path(self) -> Path:
        return self.data_dir / "keystore.sqlite3"

    @property
    def keys_path(self) -> Path:
        return self.data_dir / "keys.json"

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls_certfile and self.tls_keyfile)

    @property
    def http_scheme(self) -> str:
        return "https" if self.uses_tls else "http"

    @property
    def uses_postgres(self) -> bool:
        return self.event_store.startswith(("postgresql://", "postgres://"))

    @property
    def uses_bundled_broker(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; set it to a number such as {default}") from None


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} is not a positive number; set it to a number such as {default:g}")
    return value


def _workers(env: Mapping[str, str]) -> int:
    """CDP_INGEST_WORKERS, by default one per core (at least one, at most eight)."""
    count = _int(env, "CDP_INGEST_WORKERS", min(8, max(1, os.cpu_count() or 1)))
    if count < 0:
        raise ConfigError(f"CDP_INGEST_WORKERS={count} is negative; use 0 (none) or more")
    return count


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "true", "1", "yes"):
        return True
    if raw in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"{name}={raw!r}: use 'on' or 'off'")


def _topic(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value):
        raise ConfigError(f"{name}={value!r} is not a Kafka topic name; use letters, digits, '.', '_' and '-'")
    return value


def _file(env: Mapping[str, str], name: str) -> str:
    """A path setting: "" when unset, else a readable file (absolute, as the processes `cdp up` starts may not
    share the working directory)."""
    raw = env.get(name, "").strip()
    if not raw:
        return ""
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}={raw!r}: no such file; give the path of an existing PEM file, or unset {name}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{name}={raw!r} is not readable by this user; fix its owner or mode, or unset {name}")
    return str(path.resolve())


def _tls(env: Mapping[str, str]) -> tuple[str, str]:
    """CDP_TLS_CERTFILE and CDP_TLS_KEYFILE: both or neither, and a key that matches the certificate."""
    cert, key = _file(env, "CDP_TLS_CERTFILE"), _file(env, "CDP_TLS_KEYFILE")
    if bool(cert) != bool(key):
        given, missing = ("CDP_TLS_CERTFILE", "CDP_TLS_KEYFILE") if cert else ("CDP_TLS_KEYFILE", "CDP_TLS_CERTFILE")
        raise ConfigError(f"{given} is set but {missing} is not: HTTPS needs both the certificate and its private "
                          f"key file; set {missing}, or unset {given} to serve plain HTTP")  # fmt: skip
    if cert:
        try:  # said now, in words, rather than by uvicorn's traceback in each process
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=lambda: b"")
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"CDP_TLS_CERTFILE={cert!r} and CDP_TLS_KEYFILE={key!r} cannot be used together ({exc}): give a PEM "
                "certificate and the unencrypted PEM private key it was issued for"
            ) from None
    return cert, key


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KAFKA_SECURITY_VARIABLES = (
    "CDP_KAFKA_SECURITY_PROTOCOL", "CDP_KAFKA_SSL_CAFILE", "CDP_KAFKA_SSL_CERTFILE", "CDP_KAFKA_SSL_KEYFILE",
    "CDP_KAFKA_SASL_MECHANISM", "CDP_KAFKA_SASL_USERNAME", "CDP_KAFKA_SASL_PASSWORD",
)  # fmt: skip


def _kafka_security(env: Mapping[str, str]) -> dict[str, str]:
    """The external cluster's TLS/SASL settings, checked together (the fields of Settings they fill)."""
    protocol = env.get("CDP_KAFKA_SECURITY_PROTOCOL", "").strip().upper() or "PLAINTEXT"
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise ConfigError(f"CDP_KAFKA_SECURITY_PROTOCOL={protocol!r}: use one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}")
    given = [name for name in KAFKA_SECURITY_VARIABLES if env.get(name, "").strip()]
    if given and not env.get("CDP_KAFKA_BOOTSTRAP", "").strip():
        raise ConfigError(
            f"{', '.join(given)} set without CDP_KAFKA_BOOTSTRAP: the bundled broker speaks plain Kafka on "
            "127.0.0.1 only; set CDP_KAFKA_BOOTSTRAP to the external cluster these settings are for, or unset them"
        )
    mechanism = env.get("CDP_KAFKA_SASL_MECHANISM", "").strip().upper()
    username = env.get("CDP_KAFKA_SASL_USERNAME", "")
    password = env.get("CDP_KAFKA_SASL_PASSWORD", "")
    sasl = protocol.startswith("SASL_")
    if sasl:
        if mechanism not in KAFKA_SASL_MECHANISMS:
            raise ConfigError(f"CDP_KAFKA_SASL_MECHANISM={mechanism!r}: CDP_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                              f"one of {', '.join(KAFKA_SASL_MECHANISMS)}")  # fmt: skip
        missing = [n for n, v in (("CDP_KAFKA_SASL_USERNAME", username), ("CDP_KAFKA_SASL_PASSWORD", password)) if not v]
        if missing:
            raise ConfigError(f"CDP_KAFKA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}: set the SASL "
                              "user's name and password")  # fmt: skip
    elif mechanism or username or password:
        raise ConfigError(f"CDP_KAFKA_SASL_* set with CDP_KAFKA_SECURITY_PROTOCOL={protocol}: SASL needs "
                          "SASL_PLAINTEXT or SASL_SSL; set the protocol, or unset the CDP_KAFKA_SASL_* variables")  # fmt: skip
    files = {name: _file(env, f"CDP_KAFKA_SSL_{name.upper()}") for name in ("cafile", "certfile", "keyfile")}
    if any(files.values()) and not protocol.endswith("SSL"):
        raise ConfigError(f"CDP_KAFKA_SSL_* set with CDP_KAFKA_SECURITY_PROTOCOL={protocol}: TLS needs SSL or "
                          "SASL_SSL; set the protocol, or unset the CDP_KAFKA_SSL_* variables")  # fmt: skip
    if files["keyfile"] and not files["certfile"]:
        raise ConfigError("CDP_KAFKA_SSL_KEYFILE is set but CDP_KAFKA_SSL_CERTFILE is not: a client certificate "
                          "needs both; set CDP_KAFKA_SSL_CERTFILE, or unset CDP_KAFKA_SSL_KEYFILE")  # fmt: skip
    return {
        "kafka_security_protocol": protocol,
        **{f"kafka_ssl_{name}": path for name, path in files.items()},
        "kafka_sasl_mechanism": mechanism if sasl else "",
        "kafka_sasl_username": username,
        "kafka_sasl_password": password,
    }


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    event_store = env.get("CDP_EVENT_STORE", "")
    if event_store and not event_store.startswith(("postgresql://", "postgres://", "sqlite://")):
        raise ConfigError(
            f"CDP_EVENT_STORE={event_store!r}: use a postgresql://user@host:port/db URL, "
            "sqlite:///path/to/file, or leave it unset for the SQLite file in CDP_DATA_DIR"
        )
    clickhouse_url = env.get("CDP_CLICKHOUSE_URL", "")
    if clickhouse_url and not clickhouse_url.startswith(("http://", "https://", "chdb://")):
        raise ConfigError(
            f"CDP_CLICKHOUSE_URL={clickhouse_url!r}: use http(s)://user:password@host:8123, "
            "chdb:///path, or leave it unset for embedded ClickHouse in CDP_DATA_DIR"
        )
    driver = env.get("CDP_PROCESSOR_DRIVER", "log")
    if driver not in ("log", "kafka"):
        raise ConfigError(f"CDP_PROCESSOR_DRIVER={driver!r}: use 'log' or 'kafka'")
    tls_certfile, tls_keyfile = _tls(env)
    return Settings(
        data_dir=Path(env.get("CDP_DATA_DIR", "./.cdp")).resolve(),
        http_host=env.get("CDP_HTTP_HOST", "127.0.0.1"),
        http_port=_int(env, "CDP_HTTP_PORT", 8000),
        ingest_port=_int(env, "CDP_INGEST_PORT", 8001),
        ingest_workers=_workers(env),
        event_store=event_store,
        clickhouse_url=clickhouse_url,
        clickhouse_database=env.get("CDP_CLICKHOUSE_DATABASE", "cdp"),
        kafka_bootstrap=env.get("CDP_KAFKA_BOOTSTRAP", ""),
        kafka_port=_int(env, "CDP_KAFKA_PORT", 9092),
        kafka_partitions=_int(env, "CDP_KAFKA_PARTITIONS", 4),
        ingest_topic=_topic(env, "CDP_INGEST_TOPIC", "cdp.ingest"),
        write_key=env.get("CDP_WRITE_KEY") or None,
        read_key=env.get("CDP_READ_KEY") or None,
        processor_driver=driver,
        sql_max_rows=int(_positive(env, "CDP_SQL_MAX_ROWS", 10_000)),
        sql_timeout_s=_positive(env, "CDP_SQL_TIMEOUT_S", 10.0),
        sql_max_memory=int(_positive(env, "CDP_SQL_MAX_MEMORY", 1 << 30)),
        master_key=env.get("CDP_MASTER_KEY") or None,
        encryption=_switch(env, "CDP_ENCRYPTION", True),
        tls_certfile=tls_certfile,
        tls_keyfile=tls_keyfile,
        **_kafka_security(env),  # type: ignore[arg-type]
    )
