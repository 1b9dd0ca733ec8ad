"""Privacy as a user of `cdp up` meets it, with the embedded defaults: personal data sent through every way
in (ingest workers, the core, the Kafka ingest topic, a webhook, `cdp import`, a refused call) is nowhere on disk in plain text (event store, WAL, intake log, key store, dead letters, ClickHouse, the
platform's own output), and a regulation sent to the core reaches the ingest worker processes."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaProducer

from infra.broker import free_port
from tests.e2e.test_restart import CdpProcess

EMAIL = "wilhelmina.thistlewood@example.org"
PHONE = "+15559876543"
NAME = "Wilhelmina Thistlewood"
SECRETS = (EMAIL, PHONE, NAME, "wt-7781")


def _send_worker(cdp: CdpProcess, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """A Segment SDK's default request: HTTP Basic with the write key, to the ingest workers."""
    batch = [{"messageId": uuid.uuid4().hex, **c} for c in calls]
    response = httpx.post(f"{cdp.ingest_url}/v1/batch", json={"batch": batch}, auth=(cdp.keys["write_key"], ""),
                          timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    return dict(response.json())


def _profile(cdp: CdpProcess, identifier: str) -> httpx.Response:
    return httpx.get(f"{cdp.url}/v1/profiles/{identifier}", headers={"Authorization": f"Bearer {cdp.keys['read_key']}"})


def _plain_hits(root: Path, extra: dict[str, bytes]) -> list[str]:
    hits = []
    blobs = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
    for name, data in {**blobs, **extra}.items():
        hits += [f"{name}: {s}" for s in SECRETS if s.encode() in data]
    return hits


def test_personal_data_from_every_source_is_nowhere_on_disk_in_plain_text(tmp_path: Path) -> None:
    cdp = CdpProcess(tmp_path / "data", free_port(), free_port())
    cdp.start()
    try:
        _send_worker(cdp, [{"type": "identify", "userId": "wt-7781", "traits": {"email": EMAIL, "name": NAME}}])
        core = cdp.post("/v1/batch", {"batch": [{"type": "track", "userId": "wt-7781", "event": "Order Completed",
                                                 "messageId": "o-1", "properties": {"revenue": 12, "currency": "EUR",
                                                                                    "note": NAME}}]})  # fmt: skip
        assert core.status_code == 200, core.text
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{cdp.env['CDP_KAFKA_PORT']}", acks="all")
        call = {"type": "identify", "userId": "wt-7781", "messageId": "k-1", "traits": {"phone": PHONE}}
        producer.send("cdp.ingest", json.dumps(call).encode(), key=b"wt-7781",
                      headers=[("write_key", cdp.keys["write_key"].encode())]).get(timeout=30)  # fmt: skip
        producer.close()
        assert cdp.cli("webhooks", "apply", "stripe").returncode == 0
        customer = {"id": "evt_wt_1", "type": "customer.created", "created": 1700000000,
                    "data": {"object": {"id": "cus_wt", "object": "customer", "email": EMAIL, "name": NAME,
                                        "phone": PHONE}}}  # fmt: skip
        hook = httpx.post(f"{cdp.url}/v1/webhooks/stripe", json=customer, auth=(cdp.keys["write_key"], ""), timeout=30)
        assert hook.status_code == 200 and hook.json()["stored"] == 1, hook.text
        history = tmp_path / "history.jsonl"
        history.write_text(json.dumps({"type": "track", "userId": "wt-7781", "event": "Viewed", "messageId": "h-1",
                                       "properties": {"who": NAME, "mail": EMAIL}}) + "\n")  # fmt: skip
        imported = cdp.cli("import", str(history))
        assert imported.returncode == 0, imported.stdout + imported.stderr
        refused = _send_worker(cdp, [{"type": "identify", "userId": "wt-7781", "timestamp": "not a time",
                                      "traits": {"email": EMAIL, "name": NAME}}])  # fmt: skip
        assert len(refused["rejected"]) == 1  # kept in the dead letters, sealed
        deadline = time.monotonic() + 60
        while "phone" not in _profile(cdp, "user_id:wt-7781").json().get("traits", {}):
            assert time.monotonic() < deadline, "the Kafka call was not recorded"
            time.sleep(0.2)
        cdp.wait_caught_up(60)
        doc = _profile(cdp, f"email:{EMAIL}").json()
        assert (doc["traits"]["name"], doc["traits"]["phone"]) == (NAME, PHONE)  # the read side opens it all
    finally:
        output = cdp.stop()
    data = cdp.data_dir
    assert {"events.sqlite3", "intake.sqlite3", "keystore.sqlite3", "master.key"} <= {p.name for p in data.iterdir()}
    assert any((data / "clickhouse").rglob("*.bin"))  # ClickHouse wrote its parts (encrypted)
    assert _plain_hits(data, {"cdp up output": output.encode()}) == []
    modes = {str(p.relative_to(data)): p.stat().st_mode & 0o077 for p in [data, *data.rglob("*")] if not p.is_symlink()}
    assert {name: mode for name, mode in modes.items() if mode} == {}  # owner-only, all of it


def test_a_regulation_sent_to_the_core_reaches_the_ingest_workers(tmp_path: Path) -> None:
    cdp = CdpProcess(tmp_path / "data", free_port(), free_port())
    cdp.start()
    try:
        _send_worker(cdp, [{"type": "identify", "userId": "rw-1", "traits": {"email": "rw@example.org"}}])
        cdp.wait_caught_up(60)
        headers = {"Authorization": f"Bearer {cdp.keys['admin_key']}"}  # regulations need the admin key
        deleted = httpx.post(f"{cdp.url}/v1/regulations", json={"type": "delete", "identifiers": ["email:rw@example.org"]},
                             headers=headers)  # fmt: skip
        assert deleted.status_code == 202, deleted.text
        suppressed = httpx.post(f"{cdp.url}/v1/regulations", json={"type": "suppress", "identifiers": ["user_id:rs-1"]},
                                headers=headers)  # fmt: skip
        assert suppressed.status_code == 202, suppressed.text
        time.sleep(1.5)  # the workers follow the log's regulations within a second
        assert _send_worker(cdp, [{"type": "track", "userId": "rs-1", "event": "Clicked"}])["suppressed"] == 1
        back = _send_worker(cdp, [{"type": "identify", "userId": "rw-1", "traits": {"plan": "again"}}])
        assert back["stored"] == 1
        cdp.wait_caught_up(60)
        fresh = _profile(cdp, "user_id:rw-1").json()  # sealed with a new key, not the destroyed one: readable
        assert fresh["traits"] == {"plan": "again"} and fresh["event_count"] == 1
        assert _profile(cdp, "email:rw@example.org").status_code == 404
        assert _profile(cdp, "user_id:rs-1").status_code == 404
        status = httpx.get(f"{cdp.url}/v1/regulations/{deleted.json()['id']}", headers=headers).json()
        assert status["status"] == "done", status
        running = cdp.cli("keys", "rotate-master")
        assert running.returncode == 1 and "stop it first" in running.stdout, running.stdout + running.stderr
    finally:
        cdp.stop()
    rotated = cdp.cli("keys", "rotate-master")
    assert rotated.returncode == 0 and "re-wrapped" in rotated.stdout, rotated.stdout + rotated.stderr
    rebuilt = cdp.cli("rebuild", "--verify", timeout=300)  # the log read back with the new master key
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
