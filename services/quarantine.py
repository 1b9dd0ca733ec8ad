"""Quarantined log entries: list a workspace's, and apply them again after a fix (a code fix, or a change
of the workspace's rules); those that apply leave the list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from domain.application import CustomerData
from projections.quarantine import QuarantineStore
from streams.log_follower import read_messages


@dataclass(frozen=True)
class ListQuarantined:
    workspace_id: str
    include_resolved: bool = False


@dataclass(frozen=True)
class RetryQuarantined:
    """Only `projection`'s entries, only `positions`, when given."""

    workspace_id: str
    projection: str | None = None
    positions: tuple[int, ...] = ()


class QuarantineService:
    """`apply(projection, message)` applies one entry again (the pipeline, or the relay): the error, or None."""

    def __init__(
        self, app: CustomerData, quarantine: QuarantineStore, apply: Callable[[str, Any], BaseException | None]
    ) -> None:
        self.app, self.quarantine, self.apply = app, quarantine, apply

    def entries(self, q: ListQuarantined) -> list[dict[str, Any]]:
        """Log entries of the workspace a projection set aside, oldest first."""
        entries = self.quarantine.entries(include_resolved=q.include_resolved)
        return [e.to_json() for e in entries if e.workspace_id in (q.workspace_id, "")]

    def retry(self, c: RetryQuarantined) -> dict[str, Any]:
        wanted = set(c.positions)
        applied, failed = [], []
        for entry in self.quarantine.entries(c.projection):
            if entry.workspace_id not in (c.workspace_id, "") or (wanted and entry.position not in wanted):
                continue
            messages, _ = read_messages(self.app, entry.position - 1, 1)
            error = (
                self.apply(entry.projection, messages[0]) if messages
                else LookupError(f"log position {entry.position} holds no projected entry")
            )  # fmt: skip
            if error is None:
                self.quarantine.resolved(entry)
                applied.append({"projection": entry.projection, "position": entry.position})
            else:
                self.quarantine.failed_again(entry, error)
                failed.append({"projection": entry.projection, "position": entry.position, "reason": str(error)})
        return {"applied": applied, "failed": failed}
