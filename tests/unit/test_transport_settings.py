"""In transit and at rest: the TLS, Kafka security and PostgreSQL settings, and the owner-only data dir."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra.config import ConfigError, Settings, load_settings
from infra.data_dir import secure_data_dir
from infra.kafka_security import kafka_client_options
from streams.faust_driver import broker_credentials


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for `host` (an IP address or a name) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    key_file.chmod(0o600)
    return cert_file, key_file


# HTTPS ---------------------------------------------------------------------------------------


def test_tls_is_off_by_default() -> None:
    s = load_settings({})
    assert not s.uses_tls and s.http_scheme == "http" and s.tls_certfile == s.tls_keyfile == ""


def test_tls_needs_both_files_that_exist_and_match(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    s = load_settings({"CDP_TLS_CERTFILE": str(cert), "CDP_TLS_KEYFILE": str(key)})
    assert s.uses_tls and s.http_scheme == "https" and s.tls_certfile == str(cert.resolve())
    with pytest.raises(ConfigError, match="CDP_TLS_CERTFILE is set but CDP_TLS_KEYFILE is not"):
        load_settings({"CDP_TLS_CERTFILE": str(cert)})
    with pytest.raises(ConfigError, match="CDP_TLS_KEYFILE is set but CDP_TLS_CERTFILE is not"):
        load_settings({"CDP_TLS_KEYFILE": str(key)})
    with pytest.raises(ConfigError, match=r"CDP_TLS_KEYFILE='/nowhere/key.pem': no such file"):
        load_settings({"CDP_TLS_CERTFILE": str(cert), "CDP_TLS_KEYFILE": "/nowhere/key.pem"})
    other_cert, _ = self_signed(tmp_path / "other")
    with pytest.raises(ConfigError, match="cannot be used together"):  # a key that is not the certificate's
        load_settings({"CDP_TLS_CERTFILE": str(other_cert), "CDP_TLS_KEYFILE": str(key)})
    with pytest.raises(ConfigError, match="cannot be used together"):
        load_settings({"CDP_TLS_CERTFILE": str(key), "CDP_TLS_KEYFILE": str(key)})


# Kafka TLS and SASL ----------------------------------------------------------------------------

EXTERNAL = {"CDP_KAFKA_BOOTSTRAP": "kafka-1.example:9093"}


def test_kafka_clients_are_plaintext_by_default() -> None:
    assert kafka_client_options(load_settings({})) == {"security_protocol": "PLAINTEXT"}
    assert kafka_client_options(load_settings(EXTERNAL)) == {"security_protocol": "PLAINTEXT"}
    assert broker_credentials(kafka_client_options(load_settings({}))) is None


def test_sasl_ssl_maps_to_the_kafka_python_arguments(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    s = load_settings({
        **EXTERNAL, "CDP_KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "CDP_KAFKA_SSL_CAFILE": str(cert),
        "CDP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "CDP_KAFKA_SASL_USERNAME": "cdp",
        "CDP_KAFKA_SASL_PASSWORD": "s3cret",
    })  # fmt: skip
    assert kafka_client_options(s) == {
        "security_protocol": "SASL_SSL", "ssl_cafile": str(cert.resolve()), "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "cdp", "sasl_plain_password": "s3cret",
    }  # fmt: skip
    assert "s3cret" not in repr(s)  # settings are logged and printed in tracebacks
    credentials = broker_credentials(kafka_client_options(s))
    assert type(credentials).__name__ == "SASLCredentials"
    assert (credentials.username, credentials.password, credentials.mechanism.value) == ("cdp", "s3cret", "SCRAM-SHA-512")
    assert credentials.protocol.value == "SASL_SSL" and isinstance(credentials.ssl_context, ssl.SSLContext)
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED and credentials.ssl_context.check_hostname


def test_ssl_with_a_client_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    s = load_settings({**EXTERNAL, "CDP_KAFKA_SECURITY_PROTOCOL": "SSL", "CDP_KAFKA_SSL_CAFILE": str(cert),
                       "CDP_KAFKA_SSL_CERTFILE": str(cert), "CDP_KAFKA_SSL_KEYFILE": str(key)})  # fmt: skip
    options = kafka_client_options(s)
    assert options == {"security_protocol": "SSL", "ssl_cafile": str(cert.resolve()),
                       "ssl_certfile": str(cert.resolve()), "ssl_keyfile": str(key.resolve())}  # fmt: skip
    credentials = broker_credentials(options)
    assert type(credentials).__name__ == "SSLCredentials" and credentials.protocol.value == "SSL"
    sasl_plain = load_settings({**EXTERNAL, "CDP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                "CDP_KAFKA_SASL_MECHANISM": "PLAIN", "CDP_KAFKA_SASL_USERNAME": "u",
                                "CDP_KAFKA_SASL_PASSWORD": "p"})  # fmt: skip
    assert "ssl_cafile" not in kafka_client_options(sasl_plain)
    assert broker_credentials(kafka_client_options(sasl_plain)).protocol.value == "SASL_PLAINTEXT"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CDP_KAFKA_SECURITY_PROTOCOL": "TLS"}, r"CDP_KAFKA_SECURITY_PROTOCOL='TLS': use one of PLAINTEXT, SSL"),
        ({"CDP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "CDP_KAFKA_SASL_USERNAME": "u", "CDP_KAFKA_SASL_PASSWORD": "p"},
         r"CDP_KAFKA_SASL_MECHANISM='': CDP_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs one of PLAIN, SCRAM-SHA-256"),
        ({"CDP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CDP_KAFKA_SASL_MECHANISM": "GSSAPI",
          "CDP_KAFKA_SASL_USERNAME": "u", "CDP_KAFKA_SASL_PASSWORD": "p"}, r"CDP_KAFKA_SASL_MECHANISM='GSSAPI'"),
        ({"CDP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CDP_KAFKA_SASL_MECHANISM": "PLAIN",
          "CDP_KAFKA_SASL_USERNAME": "u"}, r"needs CDP_KAFKA_SASL_PASSWORD"),
        ({"CDP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "CDP_KAFKA_SASL_MECHANISM": "PLAIN"},
         r"needs CDP_KAFKA_SASL_USERNAME and CDP_KAFKA_SASL_PASSWORD"),
        ({"CDP_KAFKA_SASL_USERNAME": "u"}, r"CDP_KAFKA_SASL_\* set with CDP_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"CDP_KAFKA_SECURITY_PROTOCOL": "SSL", "CDP_KAFKA_SSL_CAFILE": "/nowhere/ca.pem"},
         r"CDP_KAFKA_SSL_CAFILE='/nowhere/ca.pem': no such file"),
    ],
)
def test_kafka_security_is_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({**EXTERNAL, **env})


def test_kafka_security_needs_an_external_cluster(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    with pytest.raises(ConfigError, match="CDP_KAFKA_SECURITY_PROTOCOL set without CDP_KAFKA_BOOTSTRAP"):
        load_settings({"CDP_KAFKA_SECURITY_PROTOCOL": "SSL"})
    with pytest.raises(ConfigError, match="CDP_KAFKA_SSL_CAFILE set without CDP_KAFKA_BOOTSTRAP"):
        load_settings({"CDP_KAFKA_SSL_CAFILE": str(cert)})
    with pytest.raises(ConfigError, match="TLS needs SSL or SASL_SSL"):
        load_settings({**EXTERNAL, "CDP_KAFKA_SSL_CAFILE": str(cert)})
    assert load_settings({"CDP_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", **EXTERNAL}).uses_bundled_broker is False


# The owner-only data dir ---------------------------------------------------------------------


def _open_entries(root: Path) -> list[str]:
    return [f"{p} {stat.filemode(p.lstat().st_mode)}" for p in [root, *root.rglob("*")]
            if not p.is_symlink() and p.lstat().st_mode & 0o077]  # fmt: skip


@pytest.fixture
def restore_umask() -> object:
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


def test_a_new_data_dir_is_owner_only(tmp_path: Path, restore_umask: object) -> None:
    os.umask(0o022)
    settings = Settings(data_dir=tmp_path / "a" / "data")
    secure_data_dir(settings)
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
    (settings.data_dir / "new.sqlite3").write_text("x")  # the umask: what the process creates next
    (settings.data_dir / "sub").mkdir()
    assert _open_entries(settings.data_dir) == []
    assert os.umask(0o077) == 0o077


def test_an_open_data_dir_is_tightened(tmp_path: Path, restore_umask: object) -> None:
    os.umask(0o022)
    data = tmp_path / "data"
    (data / "clickhouse" / "store").mkdir(parents=True)
    (data / "events.sqlite3").write_text("x")
    (data / "clickhouse" / "store" / "part.bin").write_text("x")
    (data / "run.sh").write_text("x")
    (data / "run.sh").chmod(0o755)
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    (data / "link").symlink_to(outside)
    data.chmod(0o755)
    secure_data_dir(Settings(data_dir=data))
    assert _open_entries(data) == []
    assert stat.S_IMODE((data / "events.sqlite3").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "run.sh").stat().st_mode) == 0o700  # the owner's bits are kept
    assert stat.S_IMODE((data / "clickhouse" / "store").stat().st_mode) == 0o700
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644  # a link's target is left alone


# Keys shown once ---------------------------------------------------------------------------------


def test_the_keys_say_which_were_just_made(tmp_path: Path) -> None:
    from infra.keys import load_or_create_keys

    settings = Settings(data_dir=tmp_path / "data", read_key="rk_given")
    first = load_or_create_keys(settings)
    assert first.generated == {"write", "admin", "platform"} and first.read_key == "rk_given"
    again = load_or_create_keys(settings)
    assert again.generated == frozenset() and again == first


# PostgreSQL connection parameters ----------------------------------------------------------------


def test_the_event_store_url_parameters_reach_every_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    from infra.eventstore import eventsourcing_env, postgres_conninfo, prepare_event_store

    for name in ("PGSSLMODE", "PGSSLROOTCERT", "PGAPPNAME"):
        monkeypatch.delenv(name, raising=False)
    url = "postgresql://cdp:pw@db.example:5433/cdp?schema=tenant&sslmode=verify-full&sslrootcert=/etc/ca.pem"
    settings = Settings(data_dir=tmp_path, event_store=url)
    env = eventsourcing_env(settings)
    assert env["POSTGRES_SCHEMA"] == "tenant" and env["POSTGRES_HOST"] == "db.example"
    assert psycopg.conninfo.conninfo_to_dict(postgres_conninfo(env)) == {
        "dbname": "cdp", "host": "db.example", "port": "5433", "user": "cdp", "password": "pw",
        "sslmode": "verify-full", "sslrootcert": "/etc/ca.pem",
    }  # fmt: skip
    monkeypatch.setattr("infra.eventstore._ensure_postgres_schema", lambda env: None)
    prepare_event_store(settings, env)  # for eventsourcing's pool: libpq's variables
    assert (os.environ["PGSSLMODE"], os.environ["PGSSLROOTCERT"]) == ("verify-full", "/etc/ca.pem")
    plain = Settings(data_dir=tmp_path, event_store="postgresql://cdp@db.example/cdp?application_name=cdp")
    prepare_event_store(plain, eventsourcing_env(plain))  # another store: the first one's are gone
    assert "PGSSLMODE" not in os.environ and os.environ["PGAPPNAME"] == "cdp"
    assert "sslmode" not in postgres_conninfo(eventsourcing_env(Settings(data_dir=tmp_path,
                                                                         event_store="postgresql://db/cdp")))


@pytest.mark.parametrize(("query", "message"), [
    ("sslmod=require", "sslmod='require' is not a connection parameter"),
    ("host=other", "host='other' is not a connection parameter"),
    ("sslpassword=x", "sslpassword cannot be given to the event store's connection pool"),
])  # fmt: skip
def test_unknown_event_store_parameters_are_refused(tmp_path: Path, query: str, message: str) -> None:
    from infra.eventstore import eventsourcing_env

    with pytest.raises(ConfigError, match=f"CDP_EVENT_STORE: {message}"):
        eventsourcing_env(Settings(data_dir=tmp_path, event_store=f"postgresql://db/cdp?{query}"))


# No personal data in log lines -------------------------------------------------------------------


def test_a_quarantined_entry_is_logged_without_the_error_text(caplog: pytest.LogCaptureFixture) -> None:
    from streams.pipeline import Pipeline
    from tests.unit.test_pipeline import Picky, Quarantine, page

    class Quoting(Picky):  # a store's error quoting the value it could not take, as ClickHouse's do
        def process(self, messages: list) -> int:  # type: ignore[type-arg]
            if any(m.position in self.bad for m in messages):
                raise ValueError("Cannot parse 'jane@example.com' as Int64")
            return super().process(messages)

    quarantine = Quarantine()
    pipeline = Pipeline([Quoting(bad={2})], {}, save=lambda n, p: None, quarantine=quarantine, retry_pause=0)
    with caplog.at_level("WARNING"):
        assert pipeline.process(page(1, 2, 3)) == 3
    assert "log position 2 (ValueError)" in caplog.text and "jane@example.com" not in caplog.text
    assert quarantine.entries == [("picky", 2, "Cannot parse 'jane@example.com' as Int64")]  # kept for the read key
