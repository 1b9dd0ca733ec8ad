"""One validate-and-normalise path for every source: HTTP, browser, import, the Kafka ingest topic, webhooks.

Free of any transport: a source hands over the items it received (already
parsed from JSON) with the workspace and its own name; the intake validates and
normalises each one, records the valid ones through the single writer, and
keeps every refused one in the dead-letter store with the reason. The outcome
tells the sender which events were stored, which were duplicates (a messageId
already stored) and which were refused, index by index.

Rule: every event that reaches the platform is either in the log or in the
dead-letter store with its reason. Strict requests (all-or-nothing) store none
of their events in the log when one is invalid; all of them are then kept as
dead letters (the valid ones with code `strict_request`), so that nothing is
unaccounted for and a replay can still store them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Sequence

import orjson
from prometheus_client import Counter
from pydantic import ValidationError

from domain.crm import validate_properties
from domain.limits import OutOfRange
from domain.segment import CALL_TYPES, Track, call_adapter, normalise
from domain.times import UTC, parse_as_written
from ingest.dead_letters import DeadLetterStore, NewDeadLetter

RecordAsync = Callable[[str, Sequence[dict[str, Any]]], Awaitable[list[Any]]]
RecordSync = Callable[[str, Sequence[dict[str, Any]]], list[Any]]
Suppressed = Callable[[str, dict[str, Any]], bool]  # (workspace, normalised call) → drop it (a regulation)
SUPPRESSED = Counter("cdp_suppressed_events", "Calls dropped at ingest: they carry a suppressed identifier", ["source"])


@dataclass(frozen=True)
class Rejection:
    """Why one event was refused; `index` is its place in the request (None for request-level fields)."""

    index: int | None
    message_id: str | None
    field: str
    reason: str
    code: str = "invalid_event"

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "messageId": self.message_id, "field": self.field, "reason": self.reason,
                "code": self.code}  # fmt: skip


@dataclass
class Prepared:
    """The calls ready to record (with their index in the request) and the refusals."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    suppressed: int = 0  # valid calls dropped because a regulation suppresses one of their identifiers


@dataclass(frozen=True)
class Outcome:
    stored: int
    duplicates: int
    rejected: list[Rejection]
    refused: bool = False  # a strict request with an invalid event: nothing went into the log
    suppressed: int = 0  # dropped by a suppression: accepted (do not send again), never stored

    @property
    def accepted(self) -> int:
        return self.stored + self.duplicates + self.suppressed

    def to_json(self) -> dict[str, Any]:
        out = {"success": True, "accepted": self.accepted, "stored": self.stored, "duplicates": self.duplicates,
               "rejected": [r.to_json() for r in self.rejected]}  # fmt: skip
        if self.suppressed:  # only then: a sender whose calls no regulation drops sees the answer it always did
            out["suppressed"] = self.suppressed
        return out


def _field(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in CALL_TYPES:  # the discriminator pydantic puts first
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "(event)"


def _validation_rejections(
    index: int, message_id: str | None, exc: ValidationError, prefix: tuple[str, ...] = ()
) -> list[Rejection]:
    found = []
    for err in exc.errors(include_url=False):
        name, reason = _field(prefix + tuple(err["loc"])), err["msg"]
        if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
            name, reason = "type", f"type must be one of {', '.join(CALL_TYPES)}"
        found.append(Rejection(index, message_id, name, reason))
    return found


def _message_id(item: Any) -> str | None:
    value = item.get("messageId") if isinstance(item, dict) else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def parse_sent_at(value: Any) -> datetime | None:
    """A request-level `sentAt`; raises ValueError when it is not an ISO 8601 date-time."""
    # As written: a time with no UTC form is refused per call, with the reason, by `normalise`.
    return None if value is None else parse_as_written(value)


def prepare(
    items: Sequence[Any], received_at: datetime, batch_sent_at: datetime | None, max_event_bytes: int
) -> Prepared:
    """Validate and normalise every item; never raises for a bad item."""
    out = Prepared()
    for index, item in enumerate(items):
        message_id = _message_id(item)
        try:
            size = len(orjson.dumps(item))
        except orjson.JSONEncodeError:  # nested beyond what JSON encoders take
            out.rejections.append(Rejection(index, message_id, "(event)", "nested too deeply to store", "invalid_event"))
            continue
        if size > max_event_bytes:
            reason = f"{size} bytes, above the {max_event_bytes} byte limit of one event"
            out.rejections.append(Rejection(index, message_id, "(event)", reason, "too_large"))
            continue
        try:
            call = call_adapter.validate_python(item)
            if isinstance(call, Track):
                try:  # reserved CRM events (Order Completed, Ticket Opened, ...) have schemas of their own
                    call.properties = validate_properties(call.event, call.properties)
                except ValidationError as exc:
                    out.rejections += _validation_rejections(index, message_id, exc, prefix=("properties",))
                    continue
        except ValidationError as exc:
            out.rejections += _validation_rejections(index, message_id, exc)
            continue
        try:
            out.calls.append(normalise(call, received_at, batch_sent_at))
        except OutOfRange as exc:  # a time the projections could not hold (domain/limits.py)
            out.rejections.append(Rejection(index, message_id, exc.field, exc.reason, "out_of_range"))
            continue
        out.indexes.append(index)
    return out


def raw_body(item: Any) -> bytes:
    """An item as JSON bytes for the dead-letter store, however deep it nests (deeper than 200 levels is cut)."""
    try:
        return orjson.dumps(item, default=str)
    except orjson.JSONEncodeError:  # deeper than the encoder goes: keep the first 200 levels
        return orjson.dumps(_pruned(item, 200), default=str)


def _pruned(value: Any, limit: int) -> Any:
    """A copy of a JSON value with everything below `limit` levels replaced by a marker; no recursion."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 0)]
    while stack:
        item, parent, key, level = stack.pop()
        if isinstance(item, (dict, list)) and level >= limit:
            parent[key] = "(nested too deeply: cut here)"
        elif isinstance(item, dict):
            parent[key] = copy = {}
            stack.extend((v, copy, k, level + 1) for k, v in item.items())
        elif isinstance(item, list):
            parent[key] = copy = [None] * len(item)
            stack.extend((v, copy, i, level + 1) for i, v in enumerate(item))
        else:
            parent[key] = item
    return root[0]


class Intake:
    """Validate, normalise, record or dead-letter: the same for every source."""

    def __init__(
        self,
        record_async: RecordAsync,
        record_sync: RecordSync,
        dead_letters: DeadLetterStore,
        max_event_bytes: int,
        suppressed: Suppressed | None = None,
    ) -> None:
        """`suppressed` says which calls a regulation suppresses: they are counted and dropped, neither
        stored nor dead-lettered (their content would be kept otherwise)."""
        self.suppressed = suppressed
        self.record_async = record_async
        self.record_sync = record_sync
        self.dead_letters = dead_letters
        self.max_event_bytes = max_event_bytes

    def _letters(
        self, workspace_id: str, source: str, items: Sequence[Any], prepared: Prepared, strict: bool
    ) -> list[NewDeadLetter]:
        first: dict[int | None, Rejection] = {}
        for r in prepared.rejections:
            first.setdefault(r.index, r)  # one letter per event, with its first reason
        letters: list[tuple[int, NewDeadLetter]] = []
        for index, r in first.items():
            body = raw_body(items[index]) if index is not None else b"null"
            letters.append((index or 0, NewDeadLetter(workspace_id, source, r.code, r.field, r.reason, body, r.message_id)))
        if strict:
            reason = "not stored: the request was strict and another of its events was invalid"
            for index in prepared.indexes:
                letters.append((index, NewDeadLetter(workspace_id, source, "strict_request", "(event)", reason,
                                                     raw_body(items[index]), _message_id(items[index]))))  # fmt: skip
        return [letter for _, letter in sorted(letters, key=lambda pair: pair[0])]  # in the request's order

    @staticmethod
    def _outcome(recorded: list[Any], prepared: Prepared) -> Outcome:
        stored = sum(1 for r in recorded if r.stored)
        return Outcome(stored, len(recorded) - stored, prepared.rejections, suppressed=prepared.suppressed)

    def _prepare(
        self, workspace_id: str, items: Sequence[Any], sent_at: datetime | None, received_at: datetime | None,
        source: str = "",
    ) -> Prepared:  # fmt: skip
        prepared = prepare(items, received_at or datetime.now(UTC), sent_at, self.max_event_bytes)
        if self.suppressed is not None and prepared.calls:
            kept = [(i, c) for i, c in zip(prepared.indexes, prepared.calls) if not self.suppressed(workspace_id, c)]
            prepared.suppressed = len(prepared.calls) - len(kept)
            if prepared.suppressed:
                SUPPRESSED.labels(source or "replay").inc(prepared.suppressed)
                prepared.indexes, prepared.calls = [i for i, _ in kept], [c for _, c in kept]
        return prepared

    async def take(
        self,
        workspace_id: str,
        items: Sequence[Any],
        source: str,
        sent_at: datetime | None = None,
        strict: bool = False,
        received_at: datetime | None = None,
    ) -> Outcome:
        """Record the valid items, dead-letter the refused ones; the store's failure raises (nothing half-done
        that a retry would not complete: valid events are deduplicated by messageId)."""
        prepared = self._prepare(workspace_id, items, sent_at, received_at, source)
        if strict and prepared.rejections:
            await asyncio.to_thread(self.dead_letters.add, self._letters(workspace_id, source, items, prepared, True))
            return Outcome(0, 0, prepared.rejections, refused=True)
        recorded = await self.record_async(workspace_id, prepared.calls) if prepared.calls else []
        if prepared.rejections:
            await asyncio.to_thread(self.dead_letters.add, self._letters(workspace_id, source, items, prepared, False))
        return self._outcome(recorded, prepared)

    def take_now(
        self, workspace_id: str, items: Sequence[Any], source: str, sent_at: datetime | None = None
    ) -> Outcome:
        """`take` for callers on a thread of their own (the Kafka ingest consumer, replays)."""
        prepared = self._prepare(workspace_id, items, sent_at, None, source)
        recorded = self.record_sync(workspace_id, prepared.calls) if prepared.calls else []
        if prepared.rejections:
            self.dead_letters.add(self._letters(workspace_id, source, items, prepared, False))
        return self._outcome(recorded, prepared)

    def unreadable(
        self, workspace_id: str, source: str, body: bytes, code: str, reason: str, field: str = "(body)"
    ) -> None:
        """Keep a body that is not a request at all (not JSON, not an object, unmapped) from a known sender."""
        self.dead_letters.add([NewDeadLetter(workspace_id, source, code, field, reason, body)])

    async def replay(self, workspace_id: str, letters: Sequence[Any]) -> dict[str, Any]:
        """Submit dead letters again (after the sender or the schema was fixed).

        Each letter's body goes through the same path as a new call; one that is
        stored now (or was already: its messageId) is marked replayed, one that is
        still refused keeps its place with today's reason. A body that is not one
        call (a whole unreadable request, a webhook payload) is refused again.
        """
        items: list[Any] = []
        for letter in letters:
            try:
                items.append(orjson.loads(letter.body))
            except orjson.JSONDecodeError:
                items.append(None)  # refused below as not an object
        prepared = self._prepare(workspace_id, items, None, None)
        recorded = await self.record_async(workspace_id, prepared.calls) if prepared.calls else []
        results: list[dict[str, Any]] = []
        for index, outcome in zip(prepared.indexes, recorded):
            how = "stored" if outcome.stored else "duplicate"
            await asyncio.to_thread(self.dead_letters.replayed, letters[index].id, how)
            results.append({"id": letters[index].id, "outcome": how})
        first: dict[int | None, Rejection] = {}
        for r in prepared.rejections:
            first.setdefault(r.index, r)
        for index, r in first.items():
            assert index is not None
            await asyncio.to_thread(self.dead_letters.refused_again, letters[index].id, r.code, r.field, r.reason)
            results.append({"id": letters[index].id, "outcome": "refused", "field": r.field, "reason": r.reason})
        return {"replayed": sum(1 for r in results if r["outcome"] != "refused"),
                "refused": sum(1 for r in results if r["outcome"] == "refused"),
                "results": sorted(results, key=lambda r: r["id"])}  # fmt: skip
