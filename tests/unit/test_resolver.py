"""The resolver's loop: a write command it has taken survives a failing store and keeps its turn."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from ingest.intake_log import SqliteIntakeLog
from streams.resolver import Resolver


class FlakyIntake(SqliteIntakeLog):
    """A real intake log whose reads fail `failures` times, as a locked database does."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def read(self, after: int, limit: int) -> list[Any]:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().read(after, limit)


def test_commands_taken_before_a_store_failure_run_after_it_in_their_order(tmp_path: Path) -> None:
    intake = FlakyIntake(tmp_path / "intake.sqlite3", failures=0)
    intake.append([("ws", [{"messageId": "m1", "timestamp": "2026-01-01T00:00:00.000000Z"}])])
    recorded: list[Any] = []
    resolver = Resolver(intake, recorded.append, lambda entry, exc: None, transient=(sqlite3.OperationalError,))
    resolver.page = 1
    intake.failures = 2  # the first command's catch-up read fails twice
    ran: list[str] = []

    def command(name: str) -> Any:
        return lambda: ran.append(name) or name

    resolver.start()
    try:
        first = threading.Thread(target=lambda: resolver.run_now(command("first")))
        first.start()
        first.join(0.05)  # the first is taken and waits out the failing reads
        assert resolver.run_now(command("second")) == "second"
        first.join(10)
        assert ran == ["first", "second"]
        assert [call["messageId"] for _, calls in recorded[0] for call in calls] == ["m1"]  # resolved before either
    finally:
        resolver.stop()
