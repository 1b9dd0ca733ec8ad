"""Operators' mistakes get one line that names the fix, a non-zero exit and no traceback, on real processes.

A second `cdp up` on a data dir another one runs on is refused before it opens anything, with the first one's
pid and addresses (and so is a `cdp ingest` or `cdp rebuild` beside it), while the relay and ingest workers
`cdp up` starts itself are not; a `cdp up` killed with SIGKILL blocks nothing. A port that is taken, and a bad
`CDP_*` value, are said before "cdp is up" is printed. No test here waits on a clock: each failure is said
before its command starts anything.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from infra.broker import free_port
from tests.e2e.test_restart import CdpProcess


def _said(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join((result.stdout + result.stderr).split())  # Rich wraps long lines


def _refused(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    said = _said(result)
    assert result.returncode == code, said
    assert "Traceback" not in said and "cdp is up" not in said, said
    for word in words:
        assert word in said, said
    return said


@pytest.fixture
def listening() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_one_cdp_up_per_data_dir_and_a_killed_one_blocks_nothing(tmp_path: Path) -> None:
    cdp = CdpProcess(tmp_path / "data", free_port(), free_port())
    cdp.env["CDP_INGEST_WORKERS"] = "1"
    cdp.start()  # its relay and ingest workers share its data dir: they are not refused
    try:
        assert cdp.process is not None
        pid, broker = cdp.process.pid, (cdp.data_dir / "broker.pid").read_text()
        second = cdp.cli("up")
        _refused(second, 1, f"cdp is already running on the data dir {cdp.data_dir}: cdp up (pid {pid}",
                 f"API {cdp.url}", f"ingest {cdp.ingest_url}", "another CDP_DATA_DIR")  # fmt: skip
        # It opened nothing: it did not even stop the broker of this data dir, as a start would.
        assert (cdp.data_dir / "broker.pid").read_text() == broker
        assert cdp.get("/v1/status")["log_position"] > 0

        ingest = cdp.cli("ingest")
        _refused(ingest, 1, "cdp ingest already runs on the data dir", f"started by the cdp up of pid {pid}")
        rebuild = cdp.cli("rebuild")
        _refused(rebuild, 1, "cdp is running on the data dir", "`cdp rebuild` needs it stopped", f"kill {pid}")

        assert cdp.post("/v1/batch", {"batch": [{"type": "track", "userId": "k-1", "event": "Kept",
                                                 "messageId": "kill-1"}]}).status_code == 200  # fmt: skip
        cdp.wait_recorded()
        os.kill(pid, signal.SIGKILL)  # its lock goes with it; its relay and ingest workers stop by themselves
        cdp.process.wait(30)
        cdp.start()  # the same data dir and ports: it waits for the workers left behind, then starts
        cdp.wait_caught_up(60)
        assert cdp.get("/v1/profiles/user_id:k-1")["event_count"] == 1
    finally:
        output = cdp.stop()
    assert "cdp stopped cleanly" in output


def test_a_taken_port_is_said_before_anything_starts(tmp_path: Path, listening: int) -> None:
    cdp = CdpProcess(tmp_path / "data", listening, free_port())
    cdp.env["CDP_INGEST_WORKERS"] = "1"
    http = cdp.cli("up")
    _refused(http, 1, f"CDP_HTTP_PORT={listening}: port {listening} on 127.0.0.1 is taken", "CDP_HTTP_PORT=")
    assert not (cdp.data_dir / "events.sqlite3").exists()  # nothing opened

    cdp.env |= {"CDP_HTTP_PORT": str(free_port()), "CDP_INGEST_PORT": str(listening)}
    _refused(cdp.cli("up"), 1, f"CDP_INGEST_PORT={listening}: port {listening} on 127.0.0.1 is taken")
    _refused(cdp.cli("ingest"), 1, f"CDP_INGEST_PORT={listening}", "cdp ingest cannot start")

    cdp.env |= {"CDP_INGEST_PORT": str(free_port()), "CDP_KAFKA_PORT": str(listening)}
    _refused(cdp.cli("up"), 1, f"CDP_KAFKA_PORT={listening}: port {listening} on 127.0.0.1 is taken")
    assert not (cdp.data_dir / "events.sqlite3").exists() and not (cdp.data_dir / "broker.pid").exists()


def test_bad_values_are_said_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    cdp = CdpProcess(tmp_path / "data", free_port(), free_port())
    for name, value, words in [
        ("CDP_HTTP_PORT", "eighty", ["CDP_HTTP_PORT='eighty' is not an integer", "set it to"]),
        ("CDP_INGEST_PORT", cdp.env["CDP_HTTP_PORT"], ["is also CDP_HTTP_PORT", "set CDP_INGEST_PORT"]),
        ("CDP_DATA_DIR", str(tmp_path / "a-file"), ["CDP_DATA_DIR=", "is a file, not a directory"]),
    ]:
        env = {**cdp.env, name: value}
        result = subprocess.run([sys.executable, "-m", "infra.cli", "up"], env=env, capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        _refused(result, 2, "configuration error", *words)
    assert not cdp.data_dir.exists()  # said before the data dir is even made
