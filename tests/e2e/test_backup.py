"""`cdp backup` and `cdp restore` as an operator runs them, on real processes.

A backup taken while calls stream in is consistent: restored into a fresh data dir, `cdp up` on it answers
profiles, KPIs and SQL exactly as the original did for the events the backup holds (up to the log position in
its manifest), takes new calls, and `cdp rebuild --verify` passes on it. The backup is owner-only and holds no
master key unless asked; a restore is refused into a data dir that holds a store, and without the right master
key, each with the fix named and no traceback. On PostgreSQL, `cdp backup` says which pg_dump to run, or runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from infra.broker import free_port
from infra.keyring import new_master_key
from tests.e2e.test_restart import CdpProcess

EMAIL = "ada.backup@example.org"
TODAY = datetime.now(timezone.utc).date()
SPAN = f"from={TODAY - timedelta(days=2)}T00:00:00Z&to={TODAY + timedelta(days=2)}T00:00:00Z&granularity=day"


def _said(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join((result.stdout + result.stderr).split())  # Rich wraps long lines


def _post(url: str, key: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    response = httpx.post(f"{url}/v1/batch", json={"batch": calls}, auth=(key, ""), timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _first_calls() -> list[dict[str, Any]]:
    """A person who identifies with an email, browses, and orders; a second one who orders in another currency."""
    return [
        {"type": "identify", "anonymousId": "anon-ada", "traits": {"email": EMAIL, "plan": "pro"}, "messageId": "b-1"},
        {"type": "track", "anonymousId": "anon-ada", "event": "Product Viewed", "properties": {"sku": "S-1"},
         "messageId": "b-2"},
        {"type": "identify", "userId": "ada", "anonymousId": "anon-ada", "traits": {"name": "Ada"},
         "messageId": "b-3"},
        {"type": "track", "userId": "ada", "event": "Order Completed",
         "properties": {"order_id": "o-1", "total": 99.5, "currency": "USD"}, "messageId": "b-4"},
        {"type": "track", "userId": "bob", "event": "Order Completed",
         "properties": {"order_id": "o-2", "total": 20, "currency": "EUR"}, "messageId": "b-5"},
        {"type": "page", "userId": "bob", "name": "Pricing", "messageId": "b-6"},
    ]  # fmt: skip


class Sender(threading.Thread):
    """Streams batches of page views from other people to the ingest workers until stopped."""

    def __init__(self, cdp: CdpProcess) -> None:
        super().__init__(daemon=True)
        self.cdp, self.key = cdp, cdp.keys["write_key"]
        self.stop = threading.Event()
        self.acknowledged = threading.Semaphore(0)
        self.batches = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                n = self.batches
                _post(self.cdp.ingest_url, self.key, [
                    {"type": "track", "userId": f"load-{(n * 20 + k) % 97}", "event": "Viewed",
                     "properties": {"n": n}, "messageId": f"load-{n}-{k}"} for k in range(20)
                ])  # fmt: skip
                self.batches += 1
                self.acknowledged.release()
        except BaseException as exc:  # said by the test
            self.error = exc


def _sql(cdp: CdpProcess, query: str) -> list[Any]:
    response = httpx.post(f"{cdp.url}/v1/sql", json={"query": query}, timeout=60,
                          headers={"Authorization": f"Bearer {cdp.keys['read_key']}"})  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body["truncated"]
    return list(body["rows"])


def _profile(cdp: CdpProcess, identifier: str) -> dict[str, Any]:
    """A profile, without its RFM scores: they grade the days since the last order against quintiles taken when
    asked (cached a while), so two platforms asked seconds apart may grade the same history differently."""
    profile = dict(cdp.get(f"/v1/profiles/{identifier}"))
    assert profile["computed_traits"].pop("rfm")["frequency"] == 1
    return profile


def _answers(cdp: CdpProcess, up_to: int) -> dict[str, Any]:
    """What the platform answers about the events up to log position `up_to` (the backup's)."""
    return {
        "ada": _profile(cdp, f"email:{EMAIL}"),
        "ada by user id": _profile(cdp, "user_id:ada"),
        "bob": _profile(cdp, "user_id:bob"),
        "revenue": cdp.get(f"/v1/kpis/revenue?{SPAN}"),
        "orders": cdp.get(f"/v1/kpis/orders?{SPAN}"),
        "events": _sql(cdp, f"SELECT position, message_id, type, event, anchor, profile_id, email, timestamp "
                            f"FROM events WHERE position <= {up_to} ORDER BY position"),  # fmt: skip
        "by type": _sql(cdp, f"SELECT type, count() FROM events WHERE position <= {up_to} GROUP BY type ORDER BY type"),
        "people": _sql(cdp, f"SELECT count(DISTINCT profile_id) FROM events WHERE position <= {up_to}"),
    }


def _owner_only(root: Path) -> dict[str, int]:
    """Entries under `root` (and itself) open to group or others, with their mode; {} when all are owner-only."""
    return {str(p): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")] if p.stat().st_mode & 0o077}


def test_a_backup_taken_during_ingest_restores_the_same_answers(tmp_path: Path) -> None:
    original = CdpProcess(tmp_path / "original", free_port(), free_port())
    original.env["CDP_INGEST_WORKERS"] = "1"
    during, keyed = tmp_path / "backups" / "during", tmp_path / "backups" / "with-key"
    original.start()
    try:
        _post(original.ingest_url, original.keys["write_key"], _first_calls())
        original.wait_caught_up()
        sender = Sender(original)
        sender.start()
        assert sender.acknowledged.acquire(timeout=60), sender.error  # calls are streaming in
        backed = original.cli("backup", str(during))
        assert sender.acknowledged.acquire(timeout=60), sender.error  # and still are, after the backup
        sender.stop.set()
        sender.join(60)
        assert sender.error is None, sender.error
        assert backed.returncode == 0, backed.stdout + backed.stderr
        said = _said(backed)
        assert "Traceback" not in said and "copying events.sqlite3" in said
        assert f"master key: NOT in the backup. It is {original.data_dir / 'master.key'}" in said, said
        manifest = json.loads((during / "manifest.json").read_text())
        position = manifest["log_position"]
        assert manifest["format"] == "cdp-backup/1" and manifest["cdp_version"] and manifest["created_at"]
        assert manifest["master_key"] == {"source": "master.key", "path": str(original.data_dir / "master.key"),
                                          "included": False}  # fmt: skip
        assert sorted(manifest["files"]) == ["events.sqlite3", "intake.sqlite3", "keys.json", "keystore.sqlite3"]
        assert sorted(p.name for p in during.iterdir()) == sorted([*manifest["files"], "manifest.json"])
        assert _owner_only(during) == {}
        assert manifest["resolver_position"] <= manifest["intake_position"] and manifest["relay_position"] <= position

        again = original.cli("backup", str(during))  # an earlier backup is never written over
        assert again.returncode == 1 and "backup_dir_not_empty" in _said(again), _said(again)
        with_key = original.cli("backup", str(keyed), "--include-master-key")
        assert with_key.returncode == 0, _said(with_key)
        assert (keyed / "master.key").read_bytes() == (original.data_dir / "master.key").read_bytes()
        assert _owner_only(keyed) == {} and "whoever holds this backup can read all of it" in _said(with_key)

        final = original.wait_caught_up()
        assert final["log_position"] > position  # the stream went on after the backup's snapshot
        before = _answers(original, position)
    finally:
        original.stop()
    assert before["events"][-1][0] <= position and len(before["events"]) > len(_first_calls())
    assert {"USD": 99.5, "EUR": 20.0} == {s["currency"]: s["value"] for s in before["revenue"]["series"]}

    restored = CdpProcess(tmp_path / "restored", free_port(), free_port())
    restored.env["CDP_INGEST_WORKERS"] = "1"
    missing = restored.cli("restore", str(during))
    assert missing.returncode == 2, _said(missing)
    assert "master_key_missing" in _said(missing) and "--master-key-file" in _said(missing), _said(missing)
    wrong = restored.cli("restore", str(during), "--master-key-file", str(_other_master_key(tmp_path)))
    assert wrong.returncode == 2 and "wrong_master_key" in _said(wrong), _said(wrong)
    assert "Traceback" not in _said(missing) + _said(wrong)
    left = {p.name for p in restored.data_dir.iterdir()}
    assert left <= {"cdp.lock"}, f"a refused restore leaves the data dir as it was (its lock file aside): {left}"

    done = restored.cli("restore", str(during), "--master-key-file", str(original.data_dir / "master.key"))
    assert done.returncode == 0, _said(done)
    assert f"event log to position {position}" in _said(done)
    assert _owner_only(restored.data_dir) == {}
    restored.start()
    try:
        restored.wait_caught_up()
        assert restored.keys == original.keys  # the same write and read keys
        assert _answers(restored, position) == before
        running = restored.cli("restore", str(during))  # onto the data dir of a running platform
        assert running.returncode == 1 and "cdp is running on the data dir" in _said(running), _said(running)
        more = _post(restored.ingest_url, restored.keys["write_key"], [
            {"type": "track", "userId": "ada", "event": "Order Completed", "messageId": "after-restore",
             "properties": {"order_id": "o-3", "total": 0.5, "currency": "USD"}},
            {**_first_calls()[0]},  # a retry of a call the backup holds: a duplicate
        ])  # fmt: skip
        assert (more["stored"], more["duplicates"]) == (1, 1), more
        restored.wait_caught_up()
        assert restored.get("/v1/profiles/user_id:ada")["computed_traits"]["revenue"] == {"USD": 100.0}
    finally:
        restored.stop()
    refused = restored.cli("restore", str(during))  # a data dir that holds a store
    assert refused.returncode == 1 and "data_dir_not_empty" in _said(refused), _said(refused)
    assert "Traceback" not in _said(refused) + _said(running)
    verified = restored.cli("rebuild", "--verify", timeout=300)
    assert verified.returncode == 0 and "equal a rebuild" in verified.stdout, _said(verified)

    from_backup = CdpProcess(tmp_path / "from-keyed-backup", free_port(), free_port())
    keyed_restore = from_backup.cli("restore", str(keyed))  # the key comes with the backup
    assert keyed_restore.returncode == 0 and "(in the backup)" in _said(keyed_restore), _said(keyed_restore)


def _other_master_key(tmp_path: Path) -> Path:
    path = tmp_path / "another.key"
    path.write_text(new_master_key() + "\n")
    return path


def test_postgresql_backups_go_through_pg_dump_and_pg_restore(tmp_path: Path, postgres_url: str) -> None:
    from infra.config import load_settings
    from infra.eventstore import open_event_store, open_intake_log
    from infra.keys import load_or_create_keys

    schema = postgres_url.rsplit("schema=", 1)[1]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CDP_")}, "CDP_EVENT_STORE": postgres_url,
           "CDP_DATA_DIR": str(tmp_path / "data"), "CDP_MASTER_KEY": new_master_key()}  # fmt: skip
    settings = load_settings(env)
    app = open_event_store(settings)  # a store as `cdp up` leaves it: a workspace, its keys, an accepted call
    workspace = app.ensure_workspace("default")
    keys = load_or_create_keys(settings)
    app.grant_key(workspace, "write", keys.write_key)
    intake = open_intake_log(settings)
    intake.append([(workspace, [{"type": "identify", "userId": "pg-1", "traits": {"email": "pg@example.org"},
                                 "messageId": "pg-1", "timestamp": "2026-01-01T00:00:00Z"}])])  # fmt: skip
    position = app.last_position()

    def cdp(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infra.cli", *args], env={**env, **extra}, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    told = cdp("backup", str(tmp_path / "b"))
    assert told.returncode == 2 and "postgresql_event_store" in _said(told), _said(told)
    assert f"pg_dump --format=custom --schema={schema} --file={tmp_path / 'b' / 'cdp.pgdump'}" in _said(told)
    assert not (tmp_path / "b").exists()

    dumped = cdp("backup", str(tmp_path / "b"), "--pg-dump")
    assert dumped.returncode == 0, _said(dumped)
    assert "master key: CDP_MASTER_KEY, not in the backup" in _said(dumped)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert (manifest["event_store"], manifest["schema"], manifest["log_position"]) == ("postgresql", schema, position)
    assert sorted(manifest["files"]) == ["cdp.pgdump", "keys.json"] and _owner_only(tmp_path / "b") == {}
    listing = subprocess.run(["pg_restore", "--list", str(tmp_path / "b" / "cdp.pgdump")], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    for table in ("customerdata_events", "cdp_intake", "cdp_stage_positions", "cdp_subject_keys", "cdp_data_keys"):
        assert f"TABLE DATA {schema} {table}" in listing, listing

    target = str(tmp_path / "restored")
    occupied = cdp("restore", str(tmp_path / "b"), "--pg-restore", CDP_DATA_DIR=target)  # the schema still exists
    assert occupied.returncode == 1 and "schema_not_empty" in _said(occupied), _said(occupied)
    import psycopg

    with psycopg.connect(postgres_url.split("?")[0], autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')  # the database is lost
    said = cdp("restore", str(tmp_path / "b"), CDP_DATA_DIR=target)
    assert said.returncode == 2 and "postgresql_backup" in _said(said) and "pg_restore --no-owner" in _said(said)
    back = cdp("restore", str(tmp_path / "b"), "--pg-restore", CDP_DATA_DIR=target)
    assert back.returncode == 0, _said(back)
    assert f"event log to position {position}" in _said(back)
    assert json.loads((Path(target) / "keys.json").read_text())["write_key"] == keys.write_key
    # Another URL for the same database: this process's keyring for the first one caches the keys it made.
    restored_env = {**env, "CDP_DATA_DIR": target, "CDP_EVENT_STORE": f"{postgres_url}&application_name=check"}
    reopened = open_intake_log(load_settings(restored_env))
    [entry] = reopened.read(0, 10)
    assert entry.call is not None and entry.call["traits"]["email"] == "pg@example.org"  # sealed, and opened
