"""The distributed layout, as separate commands: the core alone, ingest workers elsewhere, all on PostgreSQL.

Here "elsewhere" is two `cdp ingest` commands on ports of their own (two machines in
front of PostgreSQL), each with two workers, and the core started with
CDP_INGEST_WORKERS=0 so it starts none itself. Kafka is the bundled broker standing in
for a cluster; ClickHouse stays embedded in the core (a ClickHouse server, which would
let queries and processors run apart, cannot be run here: docs/scaling.md).
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

from infra.broker import free_port
from infra.keyring import new_master_key
from tests.e2e.test_restart import CdpProcess


def _ingest_command(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "infra.cli", "ingest", "--workers", "2"],
                            env={**env, "CDP_INGEST_PORT": str(port)})  # fmt: skip


def _healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not become healthy")


def test_ingest_on_two_machines_in_front_of_postgresql(tmp_path: Path, postgres_url: str) -> None:
    core = CdpProcess(tmp_path / "core", free_port(), free_port())
    # Machines share the store and the master key that wraps its subject keys, never a data dir.
    core.env |= {"CDP_EVENT_STORE": postgres_url, "CDP_INGEST_WORKERS": "0", "CDP_MASTER_KEY": new_master_key()}
    core.start()
    ports = [free_port(), free_port()]
    machines = [_ingest_command({**core.env, "CDP_DATA_DIR": str(tmp_path / f"ingest-{p}")}, p) for p in ports]
    try:
        for port in ports:
            _healthy(f"http://127.0.0.1:{port}")
        auth = (core.keys["write_key"], "")

        def send(i: int) -> dict[str, int]:
            port = ports[i % 2]
            batch = [{"type": "track", "userId": f"u{(i * 10 + k) % 30}", "event": "Viewed",
                      "messageId": f"m-{(i * 10 + k) % 400}"} for k in range(10)]  # fmt: skip
            if i % 7 == 0:
                batch.append({"type": "identify", "userId": f"u{i % 30}", "traits": {"email": f"p{i % 30}@example.com"},
                              "messageId": f"id-{i % 30}"})  # fmt: skip
            response = httpx.post(f"http://127.0.0.1:{port}/v1/batch", json={"batch": batch}, auth=auth, timeout=30)
            assert response.status_code == 200, response.text
            return response.json()

        # Overlapping messageIds across both machines at once: each stored once, the rest answered as duplicates.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, range(80)))
        identifies = len({i % 30 for i in range(80) if i % 7 == 0})
        assert sum(a["stored"] for a in answers) == 400 + identifies
        assert sum(a["stored"] + a["duplicates"] for a in answers) == 800 + len([i for i in range(80) if i % 7 == 0])
        status = core.wait_caught_up()
        assert status["resolver"]["lag"] == 0
        profile = core.get("/v1/profiles/email:p0@example.com")
        assert profile["identifiers"]["user_id"] == ["u0"]
        assert sum(core.get(f"/v1/profiles/user_id:u{u}")["event_count"] for u in range(30)) == 400 + identifies
    finally:
        for machine in machines:
            machine.terminate()
            machine.wait(30)
        core.stop()
    url, _, query = postgres_url.partition("?schema=")
    with psycopg.connect(url) as conn:
        stored = conn.execute(f'SELECT count(*) FROM "{query}".cdp_intake').fetchone()[0]  # type: ignore[index]
    assert stored == 400 + identifies
