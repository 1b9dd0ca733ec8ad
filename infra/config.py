"""Configuration from environment variables, with embedded defaults.

Only infra/ reads the environment; every other layer receives a `Settings`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse


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
    admin_key: str | None = None  # CDP_ADMIN_KEY: the default workspace's first admin key (docs/access.md)
    platform_key: str | None = None  # CDP_PLATFORM_KEY: manages workspaces; None → generated into keys.json
    rate_limit: float = 1000.0  # CDP_RATE_LIMIT: HTTP requests a second per key and process; 0: no limit
    rate_burst: float = 0.0  # CDP_RATE_BURST: requests at once per key; 0: two seconds' worth
    metrics_open: bool = False  # CDP_METRICS_OPEN=on: /metrics without the platform key (a private network)
    processor_driver: str = "log"  # "log" (follow the event store in-process) | "kafka" (Faust)
    predictions_every_h: float = 24.0  # CDP_PREDICTIONS_EVERY: hours between scheduled prediction runs; 0: on demand
    prediction_horizon_days: int = 30  # CDP_PREDICTION_HORIZON_DAYS: purchase propensity and churn risk
    churn_on: str = "activity"  # CDP_CHURN_ON: churn is no activity (activity) or no order (order) in the horizon
    ltv_horizon_days: int = 365  # CDP_LTV_HORIZON_DAYS: the predicted lifetime value's horizon
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    sql_max_rows: int = 10_000  # analyst SQL (POST /v1/sql): rows returned, then truncated
    query_connections: int = 1  # ClickHouse clients of the query API's KPI reads (infra/clickhouse.ClientPool)
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


def _float(env: Mapping[str, str], name: str) -> tuple[str, float] | None:
    """The variable as written and as a number (-1 when it is not one); None when it is unset."""
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return raw, float(raw)
    except ValueError:
        return raw, -1.0


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    given = _float(env, name)
    if given is None:
        return default
    raw, value = given
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} is not a positive number; set it to a number such as {default:g}")
    return value


def _workers(env: Mapping[str, str]) -> int:
    """CDP_INGEST_WORKERS, by default one per core (at least one, at most eight)."""
    count = _int(env, "CDP_INGEST_WORKERS", min(8, max(1, os.cpu_count() or 1)))
    if count < 0:
        raise ConfigError(f"CDP_INGEST_WORKERS={count} is negative; use 0 (none) or more")
    return count


def _non_negative(env: Mapping[str, str], name: str, default: float) -> float:
    given = _float(env, name)
    if given is None:
        return default
    raw, value = given
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name}={raw!r} is not a number of 0 or more; set it to a number such as {default:g} "
                          "(0 turns it off)")  # fmt: skip
    return value


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


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port: a whole number from 1 to 65535."""
    port = _int(env, name, default)
    if not 0 < port < 65536:
        raise ConfigError(f"{name}={port} is not a TCP port; set it to a port from 1 to 65535, such as {default}")
    return port


def _count(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    """A whole number of at least `minimum` (rows, bytes, partitions)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} is not a whole number of {minimum} or more; set it to a number such as "
                          f"{default}")  # fmt: skip
    return value


def _host(env: Mapping[str, str]) -> str:
    """CDP_HTTP_HOST: an address or host name to listen on, without a scheme, port or path."""
    raw = env.get("CDP_HTTP_HOST")
    if raw is None:
        return "127.0.0.1"
    host = raw.strip()
    fix = "set it to an address of this machine, such as 127.0.0.1 (this machine only) or 0.0.0.0 (every address)"
    if not host:
        raise ConfigError(f"CDP_HTTP_HOST is empty; {fix}, or unset it")
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return host
    if "://" in host or "/" in host or ":" in host or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", host):
        raise ConfigError(f"CDP_HTTP_HOST={raw!r} is not an address or host name (the ports are CDP_HTTP_PORT and "
                          f"CDP_INGEST_PORT); {fix}")  # fmt: skip
    return host


def _url_port(name: str, raw: str, example: str) -> None:
    """A URL's port, if it has one, must be a number (urlparse raises later, in the middle of a start)."""
    try:
        urlparse(raw).port
    except ValueError:
        raise ConfigError(f"{name}={_shown(raw)}: its port is not a number from 1 to 65535; write it as "
                          f"{example}") from None  # fmt: skip


def _shown(url: str) -> str:
    """A URL as it may be printed: without its password."""
    parsed = urlparse(url)
    if parsed.password is None:
        return repr(url)
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return repr(parsed._replace(netloc=netloc).geturl())


def _event_store(env: Mapping[str, str]) -> str:
    event_store = env.get("CDP_EVENT_STORE", "").strip()
    if not event_store:
        return ""
    if event_store.startswith("sqlite://"):
        if not urlparse(event_store).path.strip("/"):
            raise ConfigError(f"CDP_EVENT_STORE={event_store!r} names no file: write sqlite:///path/to/events.sqlite3 "
                              "(three slashes and an absolute path), or unset it for the file in CDP_DATA_DIR")  # fmt: skip
        return event_store
    if not event_store.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"CDP_EVENT_STORE={_shown(event_store)}: use a postgresql://user@host:port/db URL, "
            "sqlite:///path/to/file, or leave it unset for the SQLite file in CDP_DATA_DIR"
        )
    _url_port("CDP_EVENT_STORE", event_store, "postgresql://user:password@host:5432/db")
    return event_store


def _clickhouse_url(env: Mapping[str, str]) -> str:
    url = env.get("CDP_CLICKHOUSE_URL", "").strip()
    if not url:
        return ""
    if url.startswith("chdb://"):
        if not urlparse(url).path.strip("/"):
            raise ConfigError(f"CDP_CLICKHOUSE_URL={url!r} names no directory: write chdb:///path/to/dir, or unset "
                              "it for embedded ClickHouse in CDP_DATA_DIR")  # fmt: skip
        return url
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"CDP_CLICKHOUSE_URL={_shown(url)}: use http(s)://user:password@host:8123, "
            "chdb:///path, or leave it unset for embedded ClickHouse in CDP_DATA_DIR"
        )
    if not urlparse(url).hostname:
        raise ConfigError(f"CDP_CLICKHOUSE_URL={_shown(url)} names no host: write http(s)://user:password@host:8123")
    _url_port("CDP_CLICKHOUSE_URL", url, "http(s)://user:password@host:8123")
    return url


def _database(env: Mapping[str, str]) -> str:
    name = env.get("CDP_CLICKHOUSE_DATABASE", "").strip() or "cdp"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ConfigError(f"CDP_CLICKHOUSE_DATABASE={name!r} is not a database name this platform uses; use letters, "
                          "digits and '_', starting with a letter, such as cdp")  # fmt: skip
    return name


def _bootstrap(env: Mapping[str, str]) -> str:
    """CDP_KAFKA_BOOTSTRAP: host:port[,host:port...] of an existing cluster."""
    raw = env.get("CDP_KAFKA_BOOTSTRAP", "").strip()
    if not raw:
        return ""
    for server in raw.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
            raise ConfigError(f"CDP_KAFKA_BOOTSTRAP={raw!r}: {server.strip()!r} is not host:port; write the "
                              "cluster's brokers as host:port[,host:port...], such as kafka-1:9092,kafka-2:9092 "
                              "(no scheme), or unset it to start the bundled broker")  # fmt: skip
    return raw


def _data_dir(env: Mapping[str, str]) -> Path:
    raw = env.get("CDP_DATA_DIR", "").strip()
    path = Path(raw or "./.cdp").expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"CDP_DATA_DIR={raw!r} is a file, not a directory; set it to a directory (it is created "
                          "if missing), such as ./.cdp")  # fmt: skip
    return path


def _workspace_key(env: Mapping[str, str], name: str) -> str | None:
    """CDP_WRITE_KEY, CDP_READ_KEY, CDP_ADMIN_KEY, CDP_PLATFORM_KEY: sent as a bearer token (the write key also as an
    HTTP Basic user name), so neither blanks nor ':'."""
    raw = env.get(name)
    if not raw:
        return None
    if re.search(r"[\s:]", raw) or not raw.isprintable():
        raise ConfigError(f"{name} holds a blank, a ':' or a control character, which HTTP Basic and bearer "
                          f"tokens cannot carry; set it to letters, digits and '-', '_', '.', '~' only, or unset it "
                          f"to have one generated")  # fmt: skip
    return raw


def _master_key(env: Mapping[str, str]) -> str | None:
    """CDP_MASTER_KEY, checked here for its form (infra/keyring.py checks it opens the key store); never shown."""
    raw = env.get("CDP_MASTER_KEY")
    if not raw:
        return None
    try:
        key = base64.b64decode(raw.strip(), altchars=b"-_" if ("-" in raw or "_" in raw) else None, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(
            "CDP_MASTER_KEY is not a master key (base64 of 32 bytes): set it to the key the data was sealed with; "
            "a new one is made with `python -c \"import base64, secrets; "
            "print(base64.b64encode(secrets.token_bytes(32)).decode())\"`, or unset it to use the data dir's master.key"
        )
    return raw


def _one_of(env: Mapping[str, str], name: str, choices: dict[str, str]) -> str:
    """A word out of `choices` (lower-cased; the first is the default), each with what it means."""
    value = env.get(name, "").strip().lower() or next(iter(choices))
    if value not in choices:
        said = " or ".join(f"'{c}' ({meaning})" for c, meaning in choices.items())
        raise ConfigError(f"{name}={env.get(name)!r}: use {said}")
    return value


def _driver(env: Mapping[str, str]) -> str:
    return _one_of(env, "CDP_PROCESSOR_DRIVER", {"log": "the default: processors follow the event log",
                                                 "kafka": "processors consume cdp.events with Faust"})  # fmt: skip


def _churn_on(env: Mapping[str, str]) -> str:
    return _one_of(env, "CDP_CHURN_ON", {"activity": "the default: churn is no activity within the horizon",
                                         "order": "churn is no order within it"})  # fmt: skip


def _distinct_ports(settings: Settings) -> None:
    """The ports this machine's processes listen on must differ."""
    used = [("CDP_HTTP_PORT", settings.http_port)]
    if settings.ingest_workers:
        used.append(("CDP_INGEST_PORT", settings.ingest_port))
    if settings.uses_bundled_broker:
        used.append(("CDP_KAFKA_PORT", settings.kafka_port))
    for i, (name, port) in enumerate(used):
        for other, other_port in used[:i]:
            if port == other_port:
                raise ConfigError(f"{name}={port} is also {other}: each needs a port of its own; set {name} to "
                                  "another port")  # fmt: skip


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    event_store = _event_store(env)
    clickhouse_url = _clickhouse_url(env)
    driver = _driver(env)
    tls_certfile, tls_keyfile = _tls(env)
    settings = Settings(
        data_dir=_data_dir(env),
        http_host=_host(env),
        http_port=_port(env, "CDP_HTTP_PORT", 8000),
        ingest_port=_port(env, "CDP_INGEST_PORT", 8001),
        ingest_workers=_workers(env),
        event_store=event_store,
        clickhouse_url=clickhouse_url,
        clickhouse_database=_database(env),
        kafka_bootstrap=_bootstrap(env),
        kafka_port=_port(env, "CDP_KAFKA_PORT", 9092),
        kafka_partitions=_count(env, "CDP_KAFKA_PARTITIONS", 4),
        ingest_topic=_topic(env, "CDP_INGEST_TOPIC", "cdp.ingest"),
        write_key=_workspace_key(env, "CDP_WRITE_KEY"),
        read_key=_workspace_key(env, "CDP_READ_KEY"),
        admin_key=_workspace_key(env, "CDP_ADMIN_KEY"),
        platform_key=_workspace_key(env, "CDP_PLATFORM_KEY"),
        rate_limit=_non_negative(env, "CDP_RATE_LIMIT", 1000.0),
        rate_burst=_non_negative(env, "CDP_RATE_BURST", 0.0),
        metrics_open=_switch(env, "CDP_METRICS_OPEN", False),
        processor_driver=driver,
        predictions_every_h=_non_negative(env, "CDP_PREDICTIONS_EVERY", 24.0),
        prediction_horizon_days=_count(env, "CDP_PREDICTION_HORIZON_DAYS", 30),
        churn_on=_churn_on(env),
        ltv_horizon_days=_count(env, "CDP_LTV_HORIZON_DAYS", 365),
        sql_max_rows=_count(env, "CDP_SQL_MAX_ROWS", 10_000),
        query_connections=_count(env, "CDP_QUERY_CONNECTIONS", 1),
        sql_timeout_s=_positive(env, "CDP_SQL_TIMEOUT_S", 10.0),
        sql_max_memory=_count(env, "CDP_SQL_MAX_MEMORY", 1 << 30),
        master_key=_master_key(env),
        encryption=_switch(env, "CDP_ENCRYPTION", True),
        tls_certfile=tls_certfile,
        tls_keyfile=tls_keyfile,
        **_kafka_security(env),  # type: ignore[arg-type]
    )
    _distinct_ports(settings)
    return settings
