"""What the services need from the write side, as protocols: ingest/ implements them, infra/ passes them in.

The services sit below the HTTP adapters of ingest/ and queries/, so they name no
class of ingest/: the group committer, the intake and the dead-letter store reach
them as these shapes (streams/resolver.Resolver, ingest/intake.Intake,
ingest/dead_letters.DeadLetterStore). A store that is down raises
domain.errors.Unavailable (the committer's StoreUnavailable is one).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence


class Committer(Protocol):
    """Runs write commands on the event log's single writer (streams/resolver.Resolver), between its pages."""

    async def run(self, command: Callable[[], Any]) -> Any: ...


class Intake(Protocol):
    """The one validate-and-record path of every source."""

    async def take(self, workspace_id: str, items: Sequence[Any], source: str, **how: Any) -> Any: ...

    def unreadable(self, workspace_id: str, source: str, body: bytes, code: str, reason: str, field: str = ...) -> None:
        ...

    async def replay(self, workspace_id: str, letters: Sequence[Any]) -> dict[str, Any]: ...


class DeadLetters(Protocol):
    """The dead-letter store: refused events with their reasons."""

    def list(self, *args: Any, **kwargs: Any) -> Any: ...

    def counts(self, workspace_id: str | None = None) -> dict[str, int]: ...

    def refused_again(self, letter_id: int, code: str, field: str, reason: str) -> None: ...

    def replayed(self, letter_id: int, outcome: str) -> None: ...
