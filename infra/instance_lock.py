"""Who runs on a data dir: lock files held with `flock` for a process's life, saying its pid and addresses.

`cdp up` holds `cdp.lock` in its data dir from before it opens anything until it exits, and so does a command
that must have the data dir to itself (`cdp restore`, `cdp rebuild`). A second one is refused with what the
file says of the first (pid, addresses, since when). The ingest workers' supervisor (`cdp ingest`) holds
`ingest.lock` and the relay (`cdp relay`) `relay.lock`, whether `cdp up` started them (they share its data dir,
and are not refused by its lock) or they run on their own; each says which `cdp up` started it.

The kernel releases a `flock` when its process dies, however it dies: a lock file left by a killed process
blocks nothing. Its text is only what the last holder said. A `cdp up` killed with `kill -9` leaves its relay
and ingest workers running until they notice (within a second, then a graceful stop): the next `cdp up` waits
for their locks to be released before it checks its ports, and the relay and ingest workers it starts wait for
any the killed one was still starting. One whose `cdp up` is gone before it starts does not start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from domain.times import UTC
from infra.config import ConfigError

FILES = {"up": "cdp.lock", "ingest": "ingest.lock", "relay": "relay.lock"}
NAMES = {"up": "cdp up", "ingest": "cdp ingest", "relay": "cdp relay"}


@dataclass(frozen=True)
class Holder:
    """What a lock file says of the process holding it (as much as could be read)."""

    role: str
    pid: int | None = None
    command: str = ""  # "cdp up", "cdp restore", ...
    addresses: tuple[str, ...] = ()
    parent: int | None = None  # the `cdp up` that started it
    since: str = ""

    def describe(self) -> str:
        parts = [f"pid {self.pid}" if self.pid else "pid unknown"]
        parts += list(self.addresses)
        if self.parent:
            parts.append(f"started by the cdp up of pid {self.parent}")
        if self.since:
            parts.append(f"since {self.since}")
        return f"{self.command or NAMES[self.role]} ({', '.join(parts)})"


class AlreadyRunning(ConfigError):
    """Another process holds the lock."""

    def __init__(self, message: str, holder: Holder) -> None:
        super().__init__(message)
        self.holder = holder


def _read(path: Path, role: str) -> Holder:
    """The holder's own account; it writes it right after taking the lock, so a moment's wait may be needed."""
    for _ in range(20):
        with contextlib.suppress(OSError, ValueError):
            said = json.loads(path.read_text() or "null")
            if isinstance(said, dict):
                return Holder(role, said.get("pid"), said.get("command", ""), tuple(said.get("addresses", ())),
                              said.get("parent"), said.get("since", ""))  # fmt: skip
        time.sleep(0.05)
    return Holder(role)


class InstanceLock:
    """One of the data dir's lock files, held by this process from `acquire` until it exits (or `release`)."""

    def __init__(self, data_dir: Path, role: str) -> None:
        self.role = role
        self.path = data_dir / FILES[role]
        self._fd: int | None = None

    def acquire(self, command: str, addresses: list[str] | tuple[str, ...] = (), parent: int | None = None,
                wait: float = 0.5) -> "InstanceLock":  # fmt: skip
        """Take the lock, or raise AlreadyRunning naming who holds it. `wait`: how long another process may hold
        it before that counts (one that only looks, `holder()`, lets go at once)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    holder = _read(self.path, self.role)
                    raise AlreadyRunning(f"{holder.describe()} already runs on the data dir {self.path.parent}",
                                         holder) from None  # fmt: skip
                time.sleep(0.05)
        said = {"pid": os.getpid(), "command": command, "addresses": list(addresses), "parent": parent,
                "since": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(said).encode() + b"\n", 0)
        self._fd = fd  # kept open: the lock lasts as long as this process (file descriptors are not inherited)
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "InstanceLock":
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def holder(self) -> Holder | None:
        """Who holds the lock now, or None: nobody (a lock file left by a process that died holds nothing)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read(self.path, self.role)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def wait_released(self, timeout: float) -> Holder | None:
        """Until nobody holds the lock (None), or `timeout` seconds: then who still does."""
        deadline = time.monotonic() + timeout
        while (holder := self.holder()) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        return holder
