"""Sealing per subject (domain/privacy.py, infra/keyring.py): what an erased key sealed is skipped by every
reader of the log, a lost key store is an error, and a master key rotation re-wraps without rewriting."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from pathlib import Path

import pytest

from domain.application import CustomerData
from domain.privacy import KeyMissing, Shredded, is_sealed
from domain.segment import call_adapter, normalise
from infra.key_store import SqliteKeyStore
from infra.keyring import Keyring, MasterKeyMismatch
from ingest.intake_log import SqliteIntakeLog
from streams.log_follower import read_messages

MASTER = secrets.token_bytes(32)


def _keyring(tmp_path: Path, master: bytes = MASTER) -> Keyring:
    return Keyring(SqliteKeyStore(tmp_path / "keys.sqlite3"), master)


def _calls(*specs: tuple[str, str]) -> list[dict]:
    now = datetime.now(timezone.utc)
    raw = [{"type": "identify", "userId": user, "messageId": mid, "traits": {"email": f"{user}@example.com"}}
           for user, mid in specs]  # fmt: skip
    return [normalise(call_adapter.validate_python(c), now) for c in raw]


def _app(tmp_path: Path, keyring: Keyring) -> CustomerData:
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "e.db")}
    return CustomerData(env=env, sealer=keyring)


def test_seal_open_and_destroy(tmp_path: Path) -> None:
    keyring = _keyring(tmp_path)
    sealed = keyring.seal("ws", "email:a@example.com", b"secret")
    assert is_sealed(sealed) and b"secret" not in sealed and keyring.open(sealed) == b"secret"
    assert keyring.open(b'{"plain": 1}') == b'{"plain": 1}'  # rows from before sealing still read
    assert keyring.destroy("ws", ["email:a@example.com"], "reg-1") == 1
    fresh = _keyring(tmp_path)  # another process: nothing cached
    with pytest.raises(Shredded):
        fresh.open(sealed)
    with pytest.raises(Shredded):
        keyring.open(sealed)


def test_a_key_neither_stored_nor_destroyed_is_an_error(tmp_path: Path) -> None:
    sealed = _keyring(tmp_path / "a").seal("ws", "user_id:1", b"x")
    with pytest.raises(KeyMissing, match="restore the key store"):
        _keyring(tmp_path / "b").open(sealed)


def test_an_erased_person_is_skipped_by_the_identity_load_and_the_log_readers(tmp_path: Path) -> None:
    keyring = _keyring(tmp_path)
    app = _app(tmp_path, keyring)
    ws = app.ensure_workspace("default")
    app.record([(ws, _calls(("ann", "m1"), ("bob", "m2")))])
    messages, _ = read_messages(app, 0, 1000)
    ann = next(m.profile_id for m in messages if getattr(m, "anchor", "") == "user_id:ann")
    subjects = [*app.graph.identifiers[ann], f"profile_id:{ann}"]
    keyring.destroy(ws, subjects, "reg-1")
    reopened = _app(tmp_path, _keyring(tmp_path))
    assert ann not in reopened.graph.identifiers
    assert reopened.graph.profile_of(ws, "user_id:bob") is not None
    after, _ = read_messages(reopened, 0, 1000)
    assert all("ann" not in str(m) for m in after) and any("bob" in str(m) for m in after)


def test_intake_entries_of_an_erased_subject_keep_their_batch_end(tmp_path: Path) -> None:
    keyring = _keyring(tmp_path)
    intake = SqliteIntakeLog(tmp_path / "intake.sqlite3", keyring)
    intake.append([("ws", _calls(("bob", "m1"), ("ann", "m2")))])
    assert all(b"ann" not in row[0] for row in intake._connection().execute("SELECT body FROM intake"))
    keyring.destroy("ws", ["user_id:ann"], "reg-1")
    entries = SqliteIntakeLog(tmp_path / "intake.sqlite3", _keyring(tmp_path)).read(0, 10)
    assert [e.call is None for e in entries] == [False, True] and entries[-1].last


def test_rotation_rewraps_every_key_and_the_old_master_no_longer_opens(tmp_path: Path) -> None:
    keyring = _keyring(tmp_path)
    sealed = keyring.seal("ws", "user_id:1", b"kept")
    new_master = secrets.token_bytes(32)
    assert keyring.rotate(new_master) >= 2  # the subject key and the subject index
    assert _keyring(tmp_path, new_master).open(sealed) == b"kept"
    with pytest.raises(MasterKeyMismatch):
        _keyring(tmp_path, MASTER)


def test_a_page_of_identity_entries_loads_its_keys_in_two_round_trips(tmp_path: Path) -> None:
    """A restart (the identity load) and a log reader open a page's sealed identifiers together: the key store
    is asked twice per page (the states' keys, then the identifiers'), not once per identifier."""
    app = _app(tmp_path, _keyring(tmp_path))
    ws = app.ensure_workspace("default")
    app.record([(ws, _calls(*((f"u{i}", f"m{i}") for i in range(200))))])  # 200 profiles, 400 identifiers
    store = SqliteKeyStore(tmp_path / "keys.sqlite3")
    asked: list[int] = []
    by_id = store.by_id
    store.by_id = lambda ids: asked.append(len(ids)) or by_id(ids)  # type: ignore[method-assign]

    reopened = _app(tmp_path, Keyring(store, MASTER))  # nothing cached: every key comes from the store
    assert asked == [200, 400], asked  # the whole log is one page: the profiles' own keys, then the identifiers'
    assert sum(1 for p in reopened.graph.identifiers if reopened.graph.identifiers[p]) == 200
    assert reopened.graph.profile_of(ws, "email:u7@example.com") == reopened.graph.profile_of(ws, "user_id:u7")

    asked.clear()
    messages, _ = read_messages(_app(tmp_path, Keyring(store, MASTER)), 0, 10_000)
    assert len(asked) <= 4, asked  # the load of the reader's app (2), then its page of the log (2)
    linked = [m for m in messages if getattr(m, "change", "") in ("created", "linked")]
    assert {i for m in linked for i in m.identifiers} >= {"user_id:u7", "email:u7@example.com"}
