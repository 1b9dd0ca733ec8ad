"""Ingest in processes of its own, as `cdp up` runs it: workers answer, the core resolves, crashes lose nothing.

Real processes throughout: `cdp up` starts the core and `cdp ingest` with two worker
processes sharing the ingest port; senders retry a request until it is answered with
200, as Segment's SDKs do, with the same messageIds.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from infra.broker import free_port
from infra.config import Settings
from infra.keyring import Keyring, load_master_key, open_key_store
from tests.e2e.test_restart import RECORDED_TOPIC, CdpProcess

KILL_POINTS = int(os.environ.get("CDP_TEST_KILL_POINTS", "10"))


def _supervisor(cdp: CdpProcess) -> int | None:
    """The pid of `cdp ingest`, the child of `cdp up` that supervises the worker processes."""
    assert cdp.process is not None
    try:
        return next((c.pid for c in psutil.Process(cdp.process.pid).children() if "ingest" in c.cmdline()), None)
    except psutil.Error:
        return None


def _workers(cdp: CdpProcess) -> list[int]:
    """The pids of the ingest worker processes (children of `cdp ingest`, itself a child of `cdp up`)."""
    assert cdp.process is not None
    try:
        children = psutil.Process(cdp.process.pid).children()
        supervisors = [c for c in children if "ingest" in c.cmdline()]
        return [w.pid for s in supervisors for w in s.children() if "spawn_main" in " ".join(w.cmdline())]
    except psutil.Error:  # a process went away while it was looked at
        return []


def _retry_workers(cdp: CdpProcess, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while not (found := _workers(cdp)):
        assert time.monotonic() < deadline, "no ingest worker to kill"
        time.sleep(0.1)
    return found


def _wait_workers(cdp: CdpProcess, count: int = 2, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(_workers(cdp)) >= count and httpx.get(f"{cdp.ingest_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the ingest workers did not come up; cdp up said:\n{cdp.output()[-4000:]}")


def _stored_message_ids(data_dir: Path) -> list[str]:
    db = sqlite3.connect(data_dir / "events.sqlite3")
    try:
        rows = db.execute("SELECT state FROM stored_events WHERE topic = ?", (RECORDED_TOPIC,)).fetchall()
    finally:
        db.close()
    settings = Settings(data_dir=data_dir)  # the calls are sealed: opened with this data dir's keys
    keyring = Keyring(open_key_store(settings), load_master_key(settings)[0])
    return [orjson.loads(keyring.open(state))["call"]["messageId"] for (state,) in rows]


@pytest.fixture
def cdp(tmp_path: Path) -> CdpProcess:
    process = CdpProcess(tmp_path / "data", free_port(), free_port())
    process.env["CDP_INGEST_WORKERS"] = "2"
    return process


def _batch(n: int, start: int) -> dict[str, object]:
    return {"batch": [{"type": "track", "userId": f"u{(start + i) % 50}", "event": "Viewed",
                       "messageId": f"m-{start + i}"} for i in range(n)]}  # fmt: skip


def test_workers_acknowledge_and_the_core_resolves_them_once(cdp: CdpProcess) -> None:
    cdp.start()
    try:
        _wait_workers(cdp)
        auth = (cdp.keys["write_key"], "")
        body = _batch(20, 0)
        # The same retry arriving at two workers at once: one stores it, the other says duplicate.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: httpx.post(f"{cdp.ingest_url}/v1/batch", json=body, auth=auth,
                                                         timeout=30).json(), range(8)))  # fmt: skip
        assert sum(a["stored"] for a in answers) == 20
        assert sum(a["duplicates"] for a in answers) == 20 * 7
        identify = {"type": "identify", "userId": "u1", "traits": {"email": "ann@example.com"}, "messageId": "i-1"}
        assert httpx.post(f"{cdp.ingest_url}/v1/identify", json=identify, auth=auth).json()["stored"] == 1
        # A bad key and a bad body are answered by the worker in the one error shape.
        refused = httpx.post(f"{cdp.ingest_url}/v1/batch", json=body, auth=("wk_nope", ""))
        assert refused.status_code == 401 and refused.json()["code"] == "unknown_key"
        bad = httpx.post(f"{cdp.ingest_url}/v1/batch", content=b"{not json", auth=auth)
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_json"
        status = cdp.wait_caught_up()
        assert status["resolver"]["lag"] == 0
        profile = cdp.get("/v1/profiles/email:ann@example.com")
        assert profile["identifiers"]["user_id"] == ["u1"]
        letters = cdp.get("/v1/dead-letters", key="admin")["dead_letters"]
        assert letters[0]["code"] == "invalid_json"  # kept by the worker
    finally:
        cdp.stop()
    ids = _stored_message_ids(cdp.data_dir)
    assert sorted(ids) == sorted([f"m-{i}" for i in range(20)] + ["i-1"])


def test_cdp_up_starts_its_ingest_workers_again_when_their_supervisor_is_killed(cdp: CdpProcess) -> None:
    """`kill -9` of `cdp ingest`: its workers stop with it (none is left holding the port), `cdp up` says so
    and starts `cdp ingest` again, and senders are answered by the new workers."""
    cdp.start()
    try:
        _wait_workers(cdp)
        supervisor, workers = _supervisor(cdp), _workers(cdp)
        assert supervisor is not None and len(workers) == 2
        os.kill(supervisor, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(psutil.pid_exists(w) and psutil.Process(w).status() != psutil.STATUS_ZOMBIE for w in workers):
            assert time.monotonic() < deadline, "the workers of a killed cdp ingest still run"
            time.sleep(0.1)
        _wait_workers(cdp)
        assert _supervisor(cdp) not in (None, supervisor) and not set(_workers(cdp)) & set(workers)
        answer = httpx.post(f"{cdp.ingest_url}/v1/batch", json=_batch(5, 0), auth=(cdp.keys["write_key"], ""))
        assert answer.status_code == 200 and answer.json()["stored"] == 5
    finally:
        output = cdp.stop()
    assert "the ingest workers exited unasked (exit status -9" in output


class _Sender(threading.Thread):
    """Sends batches of new events without pause, each retried until answered 200 (as an SDK does)."""

    def __init__(self, url: str, key: str, start: int) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.next = url, key, start
        self.acknowledged: set[str] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stopping.is_set():
                body = _batch(25, self.next)
                while True:
                    try:
                        response = client.post(self.url, json=body, auth=(self.key, ""))
                        if response.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.05)  # the port is down (a restart): try again, same messageIds
                self.acknowledged.update(e["messageId"] for e in body["batch"])  # type: ignore[index]
                self.next += 25


def test_kill_9_of_workers_and_of_the_core_loses_nothing_and_doubles_nothing(cdp: CdpProcess) -> None:
    """At random points of sustained ingest, kill -9 an ingest worker or the whole core (with its workers);
    every acknowledged event is then stored exactly once and the projections equal a rebuild."""
    rng = random.Random(11)
    cdp.start()
    _wait_workers(cdp)
    senders = [_Sender(f"{cdp.ingest_url}/v1/batch", cdp.keys["write_key"], 1_000_000 * (i + 1)) for i in range(2)]
    for sender in senders:
        sender.start()
    kills = {"worker": 0, "core": 0}
    try:
        for point in range(KILL_POINTS):
            time.sleep(rng.uniform(0.3, 1.5))
            if point % 3 == 2:  # the core: the ingest workers stop with it; restart it as an operator would
                assert cdp.process is not None
                cdp.process.send_signal(signal.SIGKILL)
                cdp.process.wait(10)
                kills["core"] += 1
                time.sleep(rng.uniform(0.0, 0.5))
                cdp.start()
            else:
                _wait_workers(cdp)  # a worker killed before may still be being replaced
                os.kill(rng.choice(_workers(cdp) or _retry_workers(cdp)), signal.SIGKILL)  # uvicorn starts a new one
                kills["worker"] += 1
            _wait_workers(cdp)
        time.sleep(0.5)
    except BaseException:
        if cdp.process is not None and cdp.process.poll() is None:  # no platform left behind for the next tests
            cdp.process.terminate()
            cdp.process.wait(60)
        raise
    finally:
        for sender in senders:
            sender.stopping.set()
        for sender in senders:
            sender.join(60)
    cdp.wait_caught_up(timeout=120)
    cdp.stop()
    acknowledged = set().union(*(s.acknowledged for s in senders))
    stored = _stored_message_ids(cdp.data_dir)
    assert kills["core"] >= KILL_POINTS // 3 and kills["worker"] >= 1
    assert len(acknowledged) > 500, "too little was sent between the kills to say anything"
    assert len(stored) == len(set(stored)), "an event was stored twice"
    assert acknowledged <= set(stored), f"{len(acknowledged - set(stored))} acknowledged events were lost"
    verify = cdp.cli("rebuild", "--verify", timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
