"""Personal data is sealed per subject in the event store, the intake log and the dead letters: a binary
search of their files (WAL included) and of PostgreSQL's tables finds none of it, while the API still
answers with it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from infra.config import Settings
from infra.keyring import Keyring, open_keyring
from tests.conftest import Running

EMAIL = "zephyrine.quillfeather@example.org"
PHONE = "+15551234987"
NAME = "Zephyrine Quillfeather"


def _calls() -> dict:
    return {"batch": [
        {"type": "identify", "userId": "zq-991", "messageId": "m1",
         "traits": {"email": EMAIL, "phone": PHONE, "name": NAME}},
        {"type": "track", "userId": "zq-991", "event": "Order Completed", "messageId": "m2",
         "properties": {"revenue": 10, "currency": "EUR", "note": NAME}},
    ]}  # fmt: skip


def _refused() -> dict:  # refused at ingest: kept in the dead letters with its body
    return {"batch": [{"type": "identify", "userId": "zq-991", "messageId": "m3",
                       "timestamp": "not a time", "traits": {"email": EMAIL, "name": NAME}}]}  # fmt: skip


def _store_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*") if p.is_file() and "clickhouse" not in p.parts]


def _plain_hits(files: list[Path]) -> list[str]:
    hits = []
    for path in files:
        raw = path.read_bytes()
        for secret in (EMAIL, PHONE, NAME, "zq-991"):
            if secret.encode() in raw:
                hits.append(f"{path.name}: {secret}")
    return hits


def test_event_store_intake_and_dead_letters_hold_no_plain_text(running: Running, settings: Settings) -> None:
    assert running.send("/v1/batch", _calls()).status_code == 200
    running.send("/v1/batch", _refused())
    running.wait_caught_up()
    profile = running.profile(f"email:{EMAIL}").json()
    assert profile["traits"]["name"] == NAME  # the read side opens what the log keeps sealed
    letters = running.http.get("/v1/dead-letters", headers=running.admin_headers).json()["dead_letters"]
    assert any(NAME in str(letter["body"]) for letter in letters)
    files = _store_files(settings.data_dir)
    names = {p.name for p in files}
    assert {"events.sqlite3", "intake.sqlite3", "keystore.sqlite3"} <= names
    assert _plain_hits(files) == []


def test_a_restart_reads_the_sealed_log_back(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from infra.bootstrap import Platform
    from infra.server import create_app

    platform = Platform(settings)
    with TestClient(create_app(platform)) as client:
        Running(platform, client).send("/v1/batch", _calls())
        Running(platform, client).wait_caught_up()
    again = Platform(settings)
    with TestClient(create_app(again)) as client:
        running = Running(again, client)
        assert running.profile("user_id:zq-991").json()["traits"]["email"] == EMAIL


def test_a_wrong_master_key_is_refused_with_the_fix(settings: Settings) -> None:
    open_keyring(settings)  # creates master.key and the key store
    other = replace(settings, master_key="A" * 43 + "=")
    with pytest.raises(Exception, match="master key does not open"):
        Keyring(open_keyring(settings).store, __import__("base64").b64decode(other.master_key))


def test_postgres_tables_hold_no_plain_text(settings: Settings, postgres_url: str) -> None:
    from fastapi.testclient import TestClient

    from infra.bootstrap import Platform
    from infra.server import create_app

    pg = replace(settings, event_store=postgres_url)
    platform = Platform(pg)
    with TestClient(create_app(platform)) as client:
        running = Running(platform, client)
        assert running.send("/v1/batch", _calls()).status_code == 200
        running.send("/v1/batch", _refused())
        running.wait_caught_up()
        assert running.profile(f"email:{EMAIL}").json()["traits"]["phone"] == PHONE
    schema = postgres_url.split("schema=")[1]
    with psycopg.connect(postgres_url.split("?")[0]) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))]  # fmt: skip
        assert {"cdp_intake", "cdp_dead_letters", "cdp_subject_keys"} <= set(tables)
        for table in tables:
            dump = conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t').fetchall()
            text = "\n".join(r[0] for r in dump)
            for secret in (EMAIL, PHONE, NAME):
                assert secret not in text and secret.encode().hex() not in text, (table, secret)
