"""`cdp import` as a user runs it: a 100,000-line history file, Ctrl-C halfway, the same command again.

Every valid line ends up stored exactly once, the lines that are not JSON are
reported with their line numbers (and never sent), the calls the platform
refuses are reported and kept in its dead-letter store.
"""

from __future__ import annotations

import gzip
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from infra.broker import free_port
from tests.e2e.test_restart import CdpProcess

LINES = 100_000
NOT_JSON = {1_234, 33_333, 77_777}  # 0-based line indexes
NO_IDENTITY = {5, 50_000, 99_998}  # valid JSON the platform refuses: neither userId nor anonymousId


def _line(i: int) -> str:
    if i in NOT_JSON:
        return '{"type": "track", "userId": "u1", "event": cut short\n'
    if i in NO_IDENTITY:
        return json.dumps({"type": "track", "event": "Orphan", "messageId": f"orphan-{i}"}) + "\n"
    timestamp = f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{i % 59:02d}.{i % 1000:03d}Z"
    call: dict[str, Any] = {"userId": f"u{i % 2_000}", "timestamp": timestamp, "context": {"ip": "10.0.0.1"}}
    if i % 10 == 0:
        call |= {"type": "identify", "traits": {"email": f"u{i % 2_000}@example.com", "n": i}}
    else:
        call |= {"type": "track", "event": "Viewed Product", "properties": {"sku": f"sku-{i}", "price": i % 100}}
    if i % 3 == 0:
        call["messageId"] = f"hist-{i}"  # the rest get an id from their content
    return json.dumps(call) + "\n"


def _summary(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def _checkpoint(data_dir: Path) -> dict[str, Any] | None:
    for path in (data_dir / "imports").glob("*.json"):
        try:
            return json.loads(path.read_text())
        except ValueError:
            return None  # being replaced
    return None


def _dead_letters(data_dir: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(data_dir / "events.sqlite3") as db:
        return db.execute("SELECT message_id, reason FROM cdp_dead_letters ORDER BY message_id").fetchall()


def test_an_interrupted_import_resumes_and_stores_every_valid_line_once(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with path.open("w") as f:
        f.writelines(_line(i) for i in range(LINES))
    valid = LINES - len(NOT_JSON) - len(NO_IDENTITY)
    cdp = CdpProcess(tmp_path / "data", free_port(), free_port())
    cdp.start()
    try:
        began = time.monotonic()
        # Ctrl-C as a terminal sends it, even when these tests run in the background (which ignores SIGINT).
        first = subprocess.Popen([sys.executable, "-m", "infra.cli", "import", str(path), "--json"], env=cdp.env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
        deadline = time.monotonic() + 120
        while (saved := _checkpoint(cdp.data_dir)) is None or saved["position"][1] < 5_000:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)  # Ctrl-C
        stdout, stderr = first.communicate(timeout=120)
        assert first.returncode == 130, stdout + stderr
        interrupted = _summary(stdout)
        assert not interrupted["complete"] and interrupted["error"] == "interrupted"
        stored_before = cdp.stored_events()
        assert 5_000 <= stored_before < valid
        assert interrupted["stored"] == stored_before  # the requests on the wire were waited for
        assert "interrupted; run the same command again" in " ".join(stderr.split())

        rerun = cdp.cli("import", str(path), "--json", timeout=600)
        seconds = time.monotonic() - began
        assert rerun.returncode == 1, rerun.stdout + rerun.stderr  # complete, with refused and dead-lettered lines
        done = _summary(rerun.stdout)
        assert done["complete"] and done["resumed_from"]["line"] >= 5_000
        assert done["notes"] == []  # gzip bodies taken, nothing fell back to plain JSON
        assert done["stored"] == valid and cdp.stored_events() == valid  # every valid line, once
        assert done["duplicates"] == 0  # Ctrl-C waited for the requests on the wire: the checkpoint had them all
        assert done["refused"] == len(NOT_JSON)
        assert [e.split(":")[0] for e in done["refused_examples"]] == [f"line {i + 1}" for i in sorted(NOT_JSON)]
        assert done["dead_lettered"] == len(NO_IDENTITY)
        assert [e.split(":")[0] for e in done["dead_letter_examples"]] == [f"line {i + 1}" for i in sorted(NO_IDENTITY)]
        letters = _dead_letters(cdp.data_dir)
        assert sorted({m for m, _ in letters}) == sorted(f"orphan-{i}" for i in NO_IDENTITY)
        assert all("userId or anonymousId" in reason for _, reason in letters)
        said = " ".join(rerun.stderr.split())
        assert f"stored {valid:,}" in said and "refused here 3" in said and "line 1235: not JSON" in said

        again = cdp.cli("import", str(path), "--json")  # done before: the checkpoint says so, nothing is sent
        assert _summary(again.stdout)["events_this_run"] == 0 and cdp.stored_events() == valid

        # The checkpoint is for speed only: the same rows in another file, in another order, are not stored again.
        other = tmp_path / "some-of-it-again.jsonl.gz"
        with gzip.open(other, "wt") as f:
            f.writelines(_line(i) for i in reversed(range(2_000)))
        overlap = cdp.cli("import", str(other), "--json", "--no-gzip", "--concurrency", "1")
        valid_in_other = sum(1 for i in range(2_000) if i not in NOT_JSON | NO_IDENTITY)
        assert _summary(overlap.stdout)["duplicates"] == valid_in_other, overlap.stdout + overlap.stderr
        assert cdp.stored_events() == valid
        print(f"\nimported {LINES:,} lines with one interruption in {seconds:.1f} s")
    finally:
        cdp.stop()
