"""Processors: log messages in, projection rows out. No transport here.

The same `ProfileProcessor.process` runs behind the in-process log follower and
behind the Faust agent on Kafka. It is idempotent: processing a message twice,
or a batch again after a crash, leaves the projections as they were.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any, Iterable, Protocol
from uuid import UUID

import orjson

from domain.identity import IdentityRules, normalise_email
from streams.messages import Message

_rules = IdentityRules()


class ProjectionWriter(Protocol):
    """What a processor needs from projections/ (ProjectionStore implements it)."""

    def insert_events(self, rows: list[list[Any]]) -> None: ...
    def insert_identities(self, rows: list[list[Any]]) -> None: ...
    def insert_fragments(self, rows: list[list[Any]]) -> None: ...
    def insert_fragment_identifiers(self, rows: list[list[Any]]) -> None: ...
    def canonical_of(self, workspace_id: str, fragment_ids: Iterable[str]) -> dict[str, str]: ...
    def refresh_profiles(self, workspace_id: str, profile_ids: Iterable[str]) -> None: ...
    def delete_profiles(self, workspace_id: str, profile_ids: Iterable[str], position: int) -> None: ...


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def _json(value: Any) -> str:
    return orjson.dumps(value or {}).decode()


def _email(call: dict[str, Any]) -> str:
    traits = call.get("traits") or {}
    email = traits.get("email") or ((call.get("context") or {}).get("traits") or {}).get("email")
    return normalise_email(email) if _rules.usable(email) else ""


def event_row(message: Message) -> list[Any]:
    """The `events` table row of an event message."""
    call = message["call"]
    return [
        message["workspace_id"],
        UUID(message["event_id"]),
        message["message_id"],
        UUID(message["profile_id"]),
        message["position"],
        call["type"],
        call.get("event", ""),
        call.get("name") or "",
        call.get("userId") or "",
        call.get("anonymousId") or "",
        _email(call),
        call.get("groupId") or "",
        call.get("previousId") or "",
        _time(call["timestamp"]),
        _time(call["originalTimestamp"]),
        _time(call.get("sentAt")),
        _time(call["receivedAt"]),
        _json(call.get("properties")),
        _json(call.get("traits")),
        _json(call.get("context")),
    ]


class ProfileProcessor:
    """Builds the events, identity and profiles projections."""

    name = "profiles"

    def __init__(self, writer: ProjectionWriter) -> None:
        self.writer = writer

    def process(self, messages: list[Message]) -> int:
        """Apply a batch of messages; returns the highest position in it (0 for none)."""
        if not messages:
            return 0
        events: list[list[Any]] = []
        identities: list[list[Any]] = []
        fragments: list[list[Any]] = []
        fragment_identifiers: list[list[Any]] = []
        touched: dict[str, set[str]] = defaultdict(set)
        merged_away: dict[str, set[str]] = defaultdict(set)
        top = 0
        for m in sorted(messages, key=lambda m: m["position"]):
            ws, pid, pos = m["workspace_id"], m["profile_id"], m["position"]
            top = max(top, pos)
            if m["kind"] == "event":
                events.append(event_row(m))
                touched[ws].add(pid)
                continue
            change = m["change"]
            if change in ("created", "linked"):
                if change == "created":
                    fragments.append([ws, UUID(pid), UUID(pid), pos])
                for ident in m["identifiers"]:
                    fragment_identifiers.append([ws, UUID(pid), ident, pos])
                    identities.append([ws, ident, UUID(pid), pos])
            elif change == "absorbed":
                for fragment in m["fragments"]:
                    fragments.append([ws, UUID(fragment), UUID(pid), pos])
                for ident in m["identifiers"]:
                    identities.append([ws, ident, UUID(pid), pos])
            elif change == "merged_into":
                merged_away[ws].add(pid)
            touched[ws].add(pid)
        self.writer.insert_fragments(fragments)
        self.writer.insert_fragment_identifiers(fragment_identifiers)
        self.writer.insert_identities(identities)
        self.writer.insert_events(events)
        for ws, fragment_ids in touched.items():
            canonical = self.writer.canonical_of(ws, fragment_ids)
            survivors = {canonical.get(f, f) for f in fragment_ids} - merged_away[ws]
            self.writer.refresh_profiles(ws, survivors)
        for ws, gone in merged_away.items():
            self.writer.delete_profiles(ws, gone, top)
        return top
