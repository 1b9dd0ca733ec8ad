"""The parts `cdp up` starts beside its core, kept running: real child processes that exit, hang and stop."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from infra.children import Children


def _part(starts: Path, exit_code: int | None) -> list[str]:
    """A process that notes its start in `starts`, then exits with `exit_code` (None: runs until stopped)."""
    body = f"open({str(starts)!r}, 'a').write('x')\nimport sys, time\n"
    body += f"sys.exit({exit_code})" if exit_code is not None else "time.sleep(600)"
    return [sys.executable, "-c", body]


def _until(condition, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.02)


def test_a_part_that_stops_on_its_own_is_started_again_after_a_growing_pause(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    children = Children(time.monotonic, poll_s=0.02, first_pause_s=0.1, longest_pause_s=0.4)
    began = time.monotonic()
    children.start("the failing part", _part(starts, 3))
    try:
        _until(lambda: starts.exists() and len(starts.read_text()) >= 5)
    finally:
        children.stop()
    took = time.monotonic() - began
    assert children.restarts("the failing part") >= 4
    assert took >= 0.1 + 0.2 + 0.4 + 0.4, "the pauses did not grow up to the longest"


def test_stop_ends_every_part_and_none_starts_again(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    children = Children(time.monotonic, poll_s=0.02, first_pause_s=0.05)
    running = children.start("the running part", _part(starts, None))
    _until(lambda: starts.exists())
    children.stop(timeout=10)
    assert running.returncode is not None
    time.sleep(0.3)  # a watcher that restarted it would have done so by now
    assert starts.read_text() == "x" and children.restarts("the running part") == 0


def test_a_part_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = [sys.executable, "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                f"open({str(ready)!r}, 'w').write('x')\ntime.sleep(600)"]  # fmt: skip
    children = Children(time.monotonic, poll_s=0.02)
    process = children.start("the stubborn part", stubborn)
    _until(lambda: ready.exists())
    children.stop(timeout=0.5)
    assert process.returncode == -9


def test_a_part_that_ran_long_enough_starts_again_after_the_first_pause(tmp_path: Path) -> None:
    ticks = iter(range(0, 10**9, 1_000))  # each look at the clock is 1,000 s later: every run was long
    children = Children(lambda: float(next(ticks)), poll_s=0.02, first_pause_s=0.1, longest_pause_s=60,
                        healthy_after_s=100)  # fmt: skip
    began = time.monotonic()
    children.start("the part", _part(tmp_path / "starts", 1))
    try:
        _until(lambda: children.restarts("the part") >= 5)
    finally:
        children.stop()
    assert time.monotonic() - began < 2.5, "the pause grew (0.1 + 0.2 + 0.4 + 0.8 + 1.6 s) though each run was long"
