"""`cdp up` as a user runs it: stop it, start it on the same data dir, and nothing is lost or doubled.

The bundled broker keeps nothing across restarts; the event store is the system of record.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from infra.broker import free_port

RECORDED_TOPIC = "domain.model:CustomerEvent.Recorded"


class CdpProcess:
    def __init__(self, data_dir: Path, http_port: int, kafka_port: int) -> None:
        self.env = {
            **os.environ,
            "CDP_DATA_DIR": str(data_dir),
            "CDP_HTTP_PORT": str(http_port),
            "CDP_KAFKA_PORT": str(kafka_port),
            "CDP_INGEST_PORT": str(free_port()),
            "CDP_PREDICTIONS_EVERY": "0",  # runs only when a test asks: a scheduled one would land at a time of its own
        }
        for name in ("CDP_EVENT_STORE", "CDP_CLICKHOUSE_URL", "CDP_KAFKA_BOOTSTRAP", "CDP_WRITE_KEY", "CDP_READ_KEY",
                     "CDP_ADMIN_KEY", "CDP_PLATFORM_KEY", "CDP_METRICS_OPEN"):  # fmt: skip
            self.env.pop(name, None)
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{http_port}"
        self.ingest_url = f"http://127.0.0.1:{self.env['CDP_INGEST_PORT']}"  # the ingest workers
        self.process: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None  # what the running `cdp up` (and the workers it started) printed
        self._runs = 0

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "infra.cli", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> None:
        # A file, not a pipe: nobody reads a pipe while the platform runs, and a full one would stop its writers.
        self._runs += 1
        self.log = self.data_dir.parent / f"{self.data_dir.name}-up-{self._runs}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "infra.cli", "up"], env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 90
        urls = [self.url] + ([self.ingest_url] if self.env.get("CDP_INGEST_WORKERS") != "0" else [])
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if all(httpx.get(f"{url}/healthz", timeout=1).status_code == 200 for url in urls):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.process.kill()  # not left running behind the test
        self.process.wait(30)
        raise AssertionError(f"cdp up did not become healthy in 90 s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        """What the last `cdp up` printed so far."""
        return self.log.read_text(errors="replace") if self.log is not None else ""

    def stop(self) -> str:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        assert self.process.returncode == 0, self.output()
        return self.output()

    @property
    def keys(self) -> dict[str, str]:
        return json.loads((self.data_dir / "keys.json").read_text())

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, auth=(self.keys["write_key"], ""), timeout=30)

    def get(self, path: str, key: str = "read") -> Any:
        """GET with a start key of keys.json: `read` (the default), `admin` or `platform`."""
        response = httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.keys[f'{key}_key']}"})
        assert response.status_code == 200, response.text
        return response.json()

    def wait_caught_up(self, timeout: float = 30) -> dict[str, Any]:
        return self._wait(lambda status: status["caught_up"] and status["relay"]["lag"] == 0, timeout)

    def wait_recorded(self, timeout: float = 60) -> dict[str, Any]:
        """Until the resolver has recorded in the log everything the intake accepted (projections may lag)."""
        return self._wait(lambda status: status["resolver"]["lag"] == 0, timeout)

    def _wait(self, done: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.get("/v1/status")
            if done(status):
                return status
            assert time.monotonic() < deadline, status
            time.sleep(0.05)

    def stored_events(self) -> int:
        """Customer events in the log; with the platform running, once the resolver has recorded what was accepted."""
        if self.process is not None and self.process.poll() is None:
            self.wait_recorded()
        with sqlite3.connect(self.data_dir / "events.sqlite3") as db:
            return db.execute("SELECT count(*) FROM stored_events WHERE topic = ?", (RECORDED_TOPIC,)).fetchone()[0]


def _batch(start: int, count: int) -> dict[str, Any]:
    return {
        "batch": [
            {"type": "track", "anonymousId": f"anon-{i % 7}", "event": "Viewed", "messageId": f"m-{i}"}
            if i % 5
            else {"type": "identify", "anonymousId": f"anon-{i % 7}", "userId": f"user-{i % 7 % 3}",
                  "traits": {"n": i}, "messageId": f"m-{i}"}  # fmt: skip
            for i in range(start, start + count)
        ]
    }


def test_restart_keeps_every_acknowledged_event_once(tmp_path: Path) -> None:
    cdp = CdpProcess(tmp_path / "data", free_port(), free_port())
    cdp.start()
    try:
        for start in (0, 100, 200):
            assert cdp.post("/v1/batch", _batch(start, 100)).status_code == 200
        before = cdp.wait_caught_up()
        profile_before = cdp.get("/v1/profiles/user_id:user-1")
    finally:
        output = cdp.stop()
    assert "cdp is up" in output and "cdp stopped cleanly" in output
    assert cdp.stored_events() == 300

    cdp.start()  # a fresh bundled broker: it remembers nothing
    try:
        status = cdp.wait_caught_up()
        assert status["log_position"] == before["log_position"]
        assert cdp.get("/v1/profiles/user_id:user-1") == profile_before
        assert cdp.post("/v1/batch", _batch(100, 100)).status_code == 200  # a client retrying after the restart
        assert cdp.post("/v1/batch", _batch(300, 50)).status_code == 200
        cdp.wait_caught_up()
        profiles = [cdp.get(f"/v1/profiles/user_id:user-{u}") for u in range(3)]
        assert sum(p["event_count"] for p in profiles) == 350  # every device stitched to its user
        assert profiles[1]["identifiers"]["anonymous_id"] == ["anon-1", "anon-4"]
    finally:
        cdp.stop()
    assert cdp.stored_events() == 350

    verified = cdp.cli("rebuild", "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "equal a rebuild" in verified.stdout


def _copy_store(data_dir: Path, to: Path) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for path in [*data_dir.glob("events.sqlite3*"), *data_dir.glob("intake.sqlite3*")]:  # with their WALs,
        (to / path.name).write_bytes(path.read_bytes())  # as a backup tool copies them: the log and the intake


def _restore_store(backup: Path, data_dir: Path) -> None:
    for path in [*data_dir.glob("events.sqlite3*"), *data_dir.glob("intake.sqlite3*")]:
        path.unlink()
    for path in backup.iterdir():
        (data_dir / path.name).write_bytes(path.read_bytes())


def test_an_older_event_store_put_back_is_refused_until_rebuilt(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    cdp = CdpProcess(data_dir, free_port(), free_port())
    cdp.start()
    try:
        assert cdp.post("/v1/batch", _batch(0, 50)).status_code == 200
        cdp.wait_caught_up()
    finally:
        cdp.stop()
    _copy_store(data_dir, tmp_path / "backup")  # a backup of the log at 50 events
    cdp.start()
    try:
        assert cdp.post("/v1/batch", _batch(50, 50)).status_code == 200
        cdp.wait_caught_up()
    finally:
        cdp.stop()
    _restore_store(tmp_path / "backup", data_dir)  # the projections now hold 50 events the log does not

    refused = cdp.cli("up", timeout=120)
    assert refused.returncode == 1
    said = " ".join(refused.stdout.split())  # Rich wraps long lines
    assert "cdp cannot start" in said and "applied beyond it" in said and "cdp rebuild" in said, said
    assert "Traceback" not in refused.stdout + refused.stderr

    rebuilt = cdp.cli("rebuild")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    cdp.start()
    try:
        cdp.wait_caught_up()
        profiles = [cdp.get(f"/v1/profiles/user_id:user-{u}") for u in range(3)]
        assert sum(p["event_count"] for p in profiles) == 50  # only what the log holds
        assert cdp.post("/v1/batch", _batch(50, 10)).status_code == 200  # new events are projected again
        cdp.wait_caught_up()
        assert sum(cdp.get(f"/v1/profiles/user_id:user-{u}")["event_count"] for u in range(3)) == 60
    finally:
        cdp.stop()


def test_another_event_store_under_the_same_projections_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    cdp = CdpProcess(data_dir, free_port(), free_port())
    cdp.start()
    cdp.stop()
    _copy_store(data_dir, tmp_path / "first")
    for path in data_dir.glob("events.sqlite3*"):
        path.unlink()  # a new, longer log: positions are not beyond it, but it is another history
    cdp.env["CDP_CLICKHOUSE_URL"] = f"chdb://{tmp_path / 'other-clickhouse'}"
    cdp.start()
    try:
        assert cdp.post("/v1/batch", _batch(0, 20)).status_code == 200
        cdp.wait_caught_up()
    finally:
        cdp.stop()
    del cdp.env["CDP_CLICKHOUSE_URL"]  # back to the first projections, now under the second log
    refused = cdp.cli("up", timeout=120)
    assert refused.returncode == 1
    assert "not the one these projections were built from" in " ".join(refused.stdout.split())
