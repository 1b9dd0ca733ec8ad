"""Processors: log messages in, projection rows and profile changes out. No transport here.

The same `ProfileProcessor.process` runs behind the in-process log follower and
behind the Faust agent on Kafka. It is idempotent: processing a message twice,
or a batch again after a crash, leaves the projections as they were. Profile
changes are published at least once, before the profiles are written: a batch
retried after a failure publishes its merges, splits and refusals again (with the
same profile_id, position and change, the key consumers drop repeats by), while a
recompute that changes nothing emits no update.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol
from uuid import UUID

import orjson

from domain.identity import IdentityRules, normalise_email
from domain.segment import source_of
from domain.times import parse_instant, parse_optional
from streams.messages import (
    DefinitionMessage, ErasureMessage, EventMessage, IdentityMessage, ManualTagMessage, Message, Outgoing,
    RulesMessage, by_erasures,
)  # fmt: skip

DEFAULT_RULES = IdentityRules()
PROFILE_CHANGES_TOPIC = "cdp.profile-changes"


class ProjectionWriter(Protocol):
    """What a processor needs from projections/ (ProjectionStore implements it)."""

    def insert_events(self, rows: list[list[Any]]) -> None: ...
    def insert_identity_history(self, rows: list[list[Any]]) -> None: ...
    def insert_profile_identifiers(self, rows: list[list[Any]]) -> None: ...
    def insert_changes(self, rows: list[list[Any]]) -> None: ...
    def insert_rules(self, rows: list[list[Any]]) -> None: ...
    def latest_rules(self) -> dict[str, dict[str, Any]]: ...
    def profile_ids(self, workspace_id: str) -> list[str]: ...
    def read_profiles(self, workspace_id: str, profile_ids: Iterable[str]) -> dict[str, Any]: ...
    def compute_profiles(
        self, workspace_id: str, profile_ids: Iterable[str], as_of: Any = None, trait_sources: Any = None
    ) -> dict[str, Any]: ...
    def write_profiles(self, workspace_id: str, views: Iterable[Any], gone: Iterable[str], top: int) -> None: ...
    def erase(self, workspace_id: str, profile_ids: list[str]) -> None: ...


def _json(value: Any) -> str:
    return orjson.dumps(value or {}).decode()


def _email(call: dict[str, Any], rules: IdentityRules) -> str:
    """The call's email as the events table keeps it, if the workspace's rules let it identify anyone."""
    traits = call.get("traits") or {}
    email = traits.get("email") or ((call.get("context") or {}).get("traits") or {}).get("email")
    return normalise_email(email) if isinstance(email, str) and rules.usable(email) else ""


def event_row(message: EventMessage, rules: IdentityRules) -> list[Any]:
    """The `events` table row of an event message, under the workspace's identity rules."""
    call = message.call
    return [
        message.workspace_id,
        UUID(message.event_id),
        message.message_id,
        message.anchor,
        UUID(message.profile_id),
        message.position,
        call["type"],
        call.get("event", ""),
        call.get("name") or "",
        source_of(call),
        call.get("userId") or "",
        call.get("anonymousId") or "",
        _email(call, rules),
        call.get("groupId") or "",
        call.get("previousId") or "",
        parse_instant(call["timestamp"]),
        parse_instant(call["originalTimestamp"]),
        parse_optional(call.get("sentAt")),
        parse_instant(call["receivedAt"]),
        _json(call.get("properties")),
        _json(call.get("traits")),
        _json(call.get("context")),
    ]


def _diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: {"old": old.get(k), "new": new.get(k)} for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


@dataclass
class _Rows:
    """The identity projection rows of one batch, and the identity changes it publishes."""

    events: list[list[Any]] = field(default_factory=list)
    rules: list[list[Any]] = field(default_factory=list)
    history: list[list[Any]] = field(default_factory=list)
    owned: list[list[Any]] = field(default_factory=list)
    changes: list[list[Any]] = field(default_factory=list)
    published: list[IdentityMessage] = field(default_factory=list)

    def identity(self, m: IdentityMessage) -> None:
        ws, pid, pos, at, change, idents, other = (m.workspace_id, m.profile_id, m.position, m.recorded_at, m.change,
                                                   list(m.identifiers), m.other)  # fmt: skip
        self.changes.append([ws, UUID(pid), pos, change, other or "", idents, m.cause_event_id, m.reason, at])
        if change in ("created", "linked"):
            self.history += [[ws, i, UUID(pid), pos, at] for i in idents]
            self.owned += [[ws, UUID(pid), i, pos, 0] for i in idents]
        elif change in ("absorbed", "split_apart"):
            assert other is not None
            # absorbed: `other` gave its identifiers to pid; split_apart: pid gave them to `other`.
            receiver, giver = (pid, other) if change == "absorbed" else (other, pid)
            self.history += [[ws, i, UUID(receiver), pos, at] for i in idents]
            self.owned += [[ws, UUID(receiver), i, pos, 0] for i in idents]
            self.owned += [[ws, UUID(giver), i, pos, 1] for i in idents]
            self.published.append(m)
        elif change == "merge_refused":
            self.published.append(m)


class ProfileProcessor:
    """Builds the events, identity and profiles projections, and the profile change stream."""

    name = "profiles"

    def __init__(self, writer: ProjectionWriter, publish: Callable[[list[Outgoing]], None] | None = None) -> None:
        self.writer = writer
        self.publish = publish
        # Each workspace's identity rules as of the last applied position (rules are in the log too).
        self.rules = {ws: IdentityRules.model_validate(r) for ws, r in writer.latest_rules().items()}

    def process(self, messages: list[Message]) -> int:
        """Apply a batch of messages; returns the highest position in it (0 for none)."""
        top = 0
        for part in by_erasures(messages):
            if isinstance(part, ErasureMessage):
                self._erase(part)
                top = max(top, part.position)
            else:
                top = max(top, self._apply(part))
        return top

    def _erase(self, m: ErasureMessage) -> None:
        """A regulation erased these profiles: say `deleted` downstream (before: a failure retries it), then
        delete their rows from every table of this processor."""
        if self.publish is not None:
            self.publish([{"workspace_id": m.workspace_id, "profile_id": pid, "change": "deleted", "position": m.position,
                           "reason": "erased", "regulation_id": m.regulation_id} for pid in m.profile_ids])  # fmt: skip
        self.writer.erase(m.workspace_id, list(m.profile_ids))

    def _apply(self, messages: list[Message]) -> int:
        if not messages:
            return 0
        rows = _Rows()
        touched: dict[str, set[str]] = defaultdict(set)
        current = dict(self.rules)  # kept only once the whole batch is applied
        top = 0
        for m in sorted(messages, key=lambda m: m.position):
            ws, pid, pos = m.workspace_id, m.profile_id, m.position
            top = max(top, pos)
            match m:
                case DefinitionMessage() | ManualTagMessage():
                    continue  # tags' business (streams/tags.py)
                case RulesMessage():
                    rows.rules.append([ws, m.version, _json(m.rules), pos])
                    before = current.get(ws, DEFAULT_RULES)
                    current[ws] = IdentityRules.model_validate(m.rules)
                    if current[ws].trait_sources != before.trait_sources:
                        touched[ws].update(self.writer.profile_ids(ws))  # precedence changed: recompute everyone
                case EventMessage():
                    touched[ws].add(pid)
                    rows.events.append(event_row(m, current.get(ws, DEFAULT_RULES)))
                case IdentityMessage():
                    touched[ws].add(pid)
                    if m.other and m.change in ("absorbed", "split_apart"):
                        touched[ws].add(m.other)
                    rows.identity(m)
        self.writer.insert_identity_history(rows.history)
        self.writer.insert_profile_identifiers(rows.owned)
        self.writer.insert_changes(rows.changes)
        self.writer.insert_events(rows.events)
        self.writer.insert_rules(rows.rules)
        self._recompute(touched, current, top, [self._identity_change(m) for m in rows.published])
        self.rules = current
        return top

    def _recompute(
        self, touched: dict[str, set[str]], current: dict[str, IdentityRules], top: int, out: list[Outgoing]
    ) -> None:
        """Recompute the touched profiles, publish what changed, then write them."""
        writes: list[tuple[str, list[Any], list[str]]] = []
        for ws, pids in touched.items():
            before = self.writer.read_profiles(ws, pids) if self.publish else {}
            sources = current[ws].trait_sources if ws in current else None
            views = self.writer.compute_profiles(ws, pids, trait_sources=sources)
            live = [v for v in views.values() if v.alive]
            gone = [pid for pid, v in views.items() if not v.alive]
            for view in live:
                out += self._updates(ws, before.get(view.profile_id), view, top)
            if self.publish:
                out += [{"workspace_id": ws, "profile_id": pid, "change": "deleted", "position": top}
                        for pid in gone if pid in before]  # fmt: skip
            writes.append((ws, live, gone))
        if self.publish and out:
            self.publish(out)  # before the profiles are written: a failure here retries the whole batch
        for ws, live, gone in writes:
            self.writer.write_profiles(ws, live, gone, top)

    @staticmethod
    def _identity_change(m: IdentityMessage) -> Outgoing:
        kind = {"absorbed": "merged", "split_apart": "split", "merge_refused": "merge_refused"}[m.change]
        message: Outgoing = {
            "workspace_id": m.workspace_id,
            "profile_id": m.profile_id,
            "change": kind,
            "position": m.position,
            "identifiers": list(m.identifiers),
            "reason": m.reason,
        }
        if kind == "merged":
            message["merged_profile_id"] = m.absorbed_id
            message["cause_event_id"] = m.cause_event_id
        elif kind == "split":
            message["new_profile_id"] = m.new_profile_id
        else:
            message["other_profile_id"] = m.other_profile_id
            message["cause_event_id"] = m.cause_event_id
        return message

    @staticmethod
    def _updates(ws: str, old: Any, new: Any, top: int) -> list[Outgoing]:
        old_traits = old.traits if old else {}
        old_computed = old.computed() if old else {}
        traits, computed = _diff(old_traits, new.traits), _diff(old_computed, new.computed())
        consent = _diff(_granted(old), _granted(new))  # a decision in force changed (domain/consent.py)
        ids = {"old": old.identifiers if old else [], "new": new.identifiers}
        if not traits and not computed and not consent and ids["old"] == ids["new"]:
            return []
        message: Outgoing = {"workspace_id": ws, "profile_id": new.profile_id,
                             "change": "updated" if old else "created", "position": top, "traits": traits,
                             "computed_traits": computed}  # fmt: skip
        if consent:
            message["consent"] = consent
        if ids["old"] != ids["new"]:
            message["identifiers"] = ids
        return [message]


def _granted(view: Any) -> dict[str, bool]:
    """Purpose → granted of the decisions in force on a profile (none: no profile yet)."""
    return {p: c["granted"] for p, c in view.consent.items()} if view is not None else {}
