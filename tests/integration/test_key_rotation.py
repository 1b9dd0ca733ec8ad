"""`cdp keys rotate-master`: every key of the key store re-wrapped with a new master key, the log untouched and
still readable with the new key only; refused while the platform runs, and with CDP_MASTER_KEY until the new
key is given."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import replace

from domain.application import EventLog

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from infra.bootstrap import Platform
from infra.cli import app as cli
from infra.config import Settings
from infra.eventstore import eventsourcing_env
from infra.server import create_app
from infra.key_store import SqliteKeyStore
from infra.keyring import Keyring, MasterKeyMismatch, load_master_key, open_key_store
from streams.log_follower import read_messages
from tests.conftest import Running


def _env(s: Settings, **extra: str) -> dict[str, str]:
    return {"CDP_DATA_DIR": str(s.data_dir), "CDP_CLICKHOUSE_URL": s.clickhouse_url, "CDP_HTTP_PORT": str(s.http_port),
            "CDP_CLICKHOUSE_DATABASE": s.clickhouse_database, **extra}  # fmt: skip


def _calls_readable_with(s: Settings, master: bytes) -> list[str]:
    keyring = Keyring(open_key_store(s), master)  # a fresh keyring: nothing cached from before the rotation
    log = EventLog(eventsourcing_env(s), sealer=keyring)
    return [m.call["userId"] for m in read_messages(log, 0, 1000)[0] if getattr(m, "call", None)]


def test_rotation_rewraps_every_key_and_the_log_reads_with_the_new_key_only(settings: Settings) -> None:
    platform = Platform(settings)
    with TestClient(create_app(platform)) as client:  # refused while it runs: tests/e2e/test_privacy.py
        running = Running(platform, client)
        assert running.send("/v1/batch", {"batch": [{"type": "identify", "userId": "rot-1", "messageId": "r1",
                                                     "traits": {"email": "rot@example.org"}}]}).status_code == 200  # fmt: skip
        running.wait_caught_up()

    old, _ = load_master_key(settings)
    wrapped_before = dict(SqliteKeyStore(settings.key_store_path).all_wrapped()[0])
    done = CliRunner().invoke(cli, ["keys", "rotate-master"], env=_env(settings))
    assert done.exit_code == 0, done.output
    assert "re-wrapped" in done.output and base64.b64encode(old).decode() not in done.output  # no key printed
    new, _ = load_master_key(settings)
    assert new != old and not (settings.data_dir / "master.key.new").exists()
    wrapped_after = dict(SqliteKeyStore(settings.key_store_path).all_wrapped()[0])
    assert wrapped_after.keys() == wrapped_before.keys() and all(wrapped_after[k] != wrapped_before[k] for k in wrapped_after)
    assert _calls_readable_with(settings, new) == ["rot-1"]
    with pytest.raises(MasterKeyMismatch):
        Keyring(open_key_store(settings), old)


def test_with_cdp_master_key_the_new_key_must_be_given(settings: Settings) -> None:
    current = base64.b64encode(secrets.token_bytes(32)).decode()
    s = replace(settings, master_key=current)
    Keyring(open_key_store(s), base64.b64decode(current))  # creates the key store under the current key
    env = _env(s, CDP_MASTER_KEY=current)
    asked = CliRunner().invoke(cli, ["keys", "rotate-master"], env=env)
    assert asked.exit_code == 2 and "CDP_NEW_MASTER_KEY" in asked.output
    new = base64.b64encode(secrets.token_bytes(32)).decode()
    done = CliRunner().invoke(cli, ["keys", "rotate-master"], env={**env, "CDP_NEW_MASTER_KEY": new})
    assert done.exit_code == 0, done.output
    assert new not in done.output and hashlib.sha256(new.encode()).hexdigest() not in done.output
    Keyring(open_key_store(s), base64.b64decode(new))  # opens with the new key
    with pytest.raises(MasterKeyMismatch):
        Keyring(open_key_store(s), base64.b64decode(current))
