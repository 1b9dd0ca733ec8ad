"""Dead letters: list a workspace's refused events with their reasons, and replay them after a fix."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.errors import Invalid
from services.ports import DeadLetters, Intake


@dataclass(frozen=True)
class ListDeadLetters:
    workspace_id: str
    code: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    include_replayed: bool = False
    after: int = 0
    limit: int = 100


@dataclass(frozen=True)
class ReplayDeadLetters:
    """The dead letters with these ids, or every open one with this code and/or source."""

    workspace_id: str
    ids: tuple[int, ...] | None = None
    code: str | None = None
    source: str | None = None
    limit: int = 1000

    def __post_init__(self) -> None:
        if self.ids is None and self.code is None and self.source is None:
            raise Invalid("say which dead letters to replay: ids, code or source",
                          errors=[{"field": "ids", "reason": "give ids, a code or a source"}])  # fmt: skip


class DeadLetterService:
    def __init__(self, dead_letters: DeadLetters, intake: Intake) -> None:
        self.dead_letters, self.intake = dead_letters, intake

    def page(self, q: ListDeadLetters) -> dict[str, Any]:
        letters = self.dead_letters.list(
            q.workspace_id, code=q.code, source=q.source, since=q.since, until=q.until,
            include_replayed=q.include_replayed, after_id=q.after, limit=q.limit,
        )  # fmt: skip
        next_after = letters[-1].id if len(letters) == q.limit else None
        return {"dead_letters": [x.to_json() for x in letters], "next_after": next_after,
                "open": self.dead_letters.counts(q.workspace_id)}  # fmt: skip

    async def replay(self, c: ReplayDeadLetters) -> dict[str, Any]:
        letters = self.dead_letters.list(
            c.workspace_id, code=c.code, source=c.source, ids=list(c.ids) if c.ids is not None else None, limit=c.limit
        )
        return await self.intake.replay(c.workspace_id, letters)
