"""The processes `cdp up` starts beside its core (the relay, the ingest workers), kept running while it runs.

A part that stops on its own (an ingest worker that failed to open the store on a busy machine, which makes
uvicorn's supervisor give up on all of them; a relay killed by the OOM killer) is said and started again,
after a pause that grows while it keeps failing, so the platform heals without an operator and without a
restart loop that eats the machine. Parts that `stop` ends are not restarted.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)


@dataclass
class _Part:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    pause: float
    started_at: float
    restarts: int = 0


@dataclass
class Children:
    """Start parts with `start`, watch them in a thread of their own, stop them all with `stop`."""

    clock: Callable[[], float]
    poll_s: float = 0.5
    first_pause_s: float = 1.0
    longest_pause_s: float = 30.0
    healthy_after_s: float = 60.0  # a part that ran this long before it stopped starts again after the first pause
    _parts: list[_Part] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _watcher: threading.Thread | None = None

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start `argv` as the part `name` and keep it running until `stop`."""
        with self._lock:
            part = _Part(name, argv, subprocess.Popen(argv), self.first_pause_s, self.clock())
            self._parts.append(part)
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="children", daemon=True)
            self._watcher.start()
        return part.process

    def restarts(self, name: str) -> int:
        """How many times the part `name` was started again after it stopped on its own."""
        return sum(p.restarts for p in self._parts if p.name == name)

    def stop(self, timeout: float = 30) -> None:
        """Ask every part to stop (SIGTERM) and wait for them; none is started again after this."""
        self._stopping.set()
        with self._lock:
            parts = list(self._parts)
        for part in parts:
            if part.process.poll() is None:
                part.process.terminate()
        for part in parts:
            try:
                part.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s of SIGTERM: killed", part.name, timeout)
                part.process.kill()
                part.process.wait()

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_s):
            with self._lock:
                for part in self._parts:
                    if part.process.poll() is not None and not self._stopping.is_set():
                        self._restart(part)

    def _restart(self, part: _Part) -> None:
        """Called with the lock held; sleeps on `_stopping`, so `stop` cuts the pause short."""
        ran = self.clock() - part.started_at
        if ran >= self.healthy_after_s:
            part.pause = self.first_pause_s
        log.warning("%s exited unasked (exit status %s after %.0f s): starting again in %.1f s",
                    part.name, part.process.returncode, ran, part.pause)  # fmt: skip
        if self._stopping.wait(part.pause):
            return
        part.pause = min(part.pause * 2, self.longest_pause_s)
        part.process = subprocess.Popen(part.argv)
        part.started_at = self.clock()
        part.restarts += 1
