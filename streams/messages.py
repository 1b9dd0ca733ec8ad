"""Log entries as messages: typed once, from the log or from `cdp.events`, for every processor.

One frozen dataclass per kind: `EventMessage` (a tracking call, with the `anchor`
identifier it belongs by), `IdentityMessage` (a profile created, identifiers
linked, a merge, a refused merge, a split), `RulesMessage`, `DefinitionMessage`
(a tag or saved segment defined, changed or deleted) and `ManualTagMessage` (a
static tag added or removed) and `ErasureMessage` (a person erased by a
regulation: profile ids only). `to_message` builds one from a log entry (the log
follower, the committed tail); `decode` reads one from the bytes on
`cdp.events` (the Kafka driver); `encode` writes the JSON published there
(docs/streams.md). Every message carries its log `position` and an `event_id`,
so consumers can discard redeliveries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, Union
from uuid import UUID, uuid5

import orjson
from eventsourcing.utils import get_topic

from domain.model import CustomerEvent, Profile, Workspace
from domain.predictions import ModelRun
from domain.regulations import Regulation
from domain.tags import ManualTagChange, RuleDefinition
from domain.times import parse_instant, stored

_IDENTITY_CHANGES = {
    Profile.Created: "created",
    Profile.IdentifiersLinked: "linked",
    Profile.Absorbed: "absorbed",
    Profile.MergedInto: "merged_into",
    Profile.MergeRefused: "merge_refused",
    Profile.SplitApart: "split_apart",
}
_IDENTITY_FIELDS = (
    "identifiers", "absorbed_id", "survivor_id", "other_profile_id", "new_profile_id", "cause_event_id", "reason",
)  # fmt: skip
# The fields an identity message of each change carries: those its domain event has, in this order.
_FIELDS_OF = {
    change: tuple(name for name in _IDENTITY_FIELDS if name in cls.__annotations__)
    for cls, change in _IDENTITY_CHANGES.items()
}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Entry:
    position: int
    event_id: str
    workspace_id: str
    profile_id: str  # "" for rules and definitions: they belong to the workspace
    recorded_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class EventMessage(_Entry):
    """One recorded Segment call; `profile_id` owned `anchor` when it was recorded."""

    kind: ClassVar[str] = "event"
    anchor: str
    message_id: str
    call: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.call["type"])

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "position": self.position, "event_id": self.event_id,
                "workspace_id": self.workspace_id, "profile_id": self.profile_id, "anchor": self.anchor,
                "message_id": self.message_id, "type": self.type, "recorded_at": stored(self.recorded_at),
                "call": self.call}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EventMessage:
        return cls(**_common(d), anchor=d["anchor"], message_id=d["message_id"], call=d["call"])


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityMessage(_Entry):
    """One identity change of `profile_id`; which of the optional fields it has depends on `change`."""

    kind: ClassVar[str] = "identity"
    change: str  # created, linked, absorbed, merged_into, merge_refused, split_apart
    identifiers: tuple[str, ...] = ()
    absorbed_id: str | None = None
    survivor_id: str | None = None
    other_profile_id: str | None = None
    new_profile_id: str | None = None
    cause_event_id: str = ""
    reason: str = ""

    @property
    def other(self) -> str | None:
        """The other profile of the change: absorbed, survivor, refused owner or split-off profile."""
        return self.absorbed_id or self.survivor_id or self.other_profile_id or self.new_profile_id

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "position": self.position, "event_id": self.event_id,
                             "workspace_id": self.workspace_id, "profile_id": self.profile_id, "change": self.change,
                             "recorded_at": stored(self.recorded_at)}  # fmt: skip
        for name in _FIELDS_OF[self.change]:
            d[name] = list(self.identifiers) if name == "identifiers" else getattr(self, name)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IdentityMessage:
        fields = {name: d[name] for name in _FIELDS_OF[d["change"]]}
        if "identifiers" in fields:
            fields["identifiers"] = tuple(fields["identifiers"])
        return cls(**_common(d), change=d["change"], **fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class RulesMessage(_Entry):
    """A new version of the workspace's identity rules (the complete rules, as stored)."""

    kind: ClassVar[str] = "rules"
    version: int
    rules: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "position": self.position, "event_id": self.event_id,
                "workspace_id": self.workspace_id, "profile_id": self.profile_id, "version": self.version,
                "rules": self.rules, "recorded_at": stored(self.recorded_at)}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RulesMessage:
        return cls(**_common(d), version=d["version"], rules=d["rules"])


@dataclass(frozen=True, slots=True, kw_only=True)
class DefinitionMessage(_Entry):
    """A tag or saved segment (`definition_kind`) defined, changed or deleted; `rule` is None when deleted."""

    kind: ClassVar[str] = "definition"
    definition_kind: str
    definition_id: str
    tag_id: str
    rule_version: int
    name: str
    rule: dict[str, Any] | None
    deleted: bool

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "event_id": self.event_id, "position": self.position,
                "workspace_id": self.workspace_id, "recorded_at": stored(self.recorded_at),
                "profile_id": self.profile_id, "definition_kind": self.definition_kind,
                "definition_id": self.definition_id, "tag_id": self.tag_id, "rule_version": self.rule_version,
                "name": self.name, "rule": self.rule, "deleted": self.deleted}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DefinitionMessage:
        return cls(**_common(d), definition_kind=d["definition_kind"], definition_id=d["definition_id"],
                   tag_id=d["tag_id"], rule_version=d["rule_version"], name=d["name"], rule=d["rule"],
                   deleted=d["deleted"])  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class ManualTagMessage(_Entry):
    """A manual tag `added` to or `removed` from `profile_id` (`action`)."""

    kind: ClassVar[str] = "manual_tag"
    tag_id: str
    action: str
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "event_id": self.event_id, "position": self.position,
                "workspace_id": self.workspace_id, "recorded_at": stored(self.recorded_at),
                "profile_id": self.profile_id, "tag_id": self.tag_id, "action": self.action,
                "reason": self.reason}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ManualTagMessage:
        return cls(**_common(d), tag_id=d["tag_id"], action=d["action"], reason=d["reason"])


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureMessage(_Entry):
    """A person erased by a regulation (domain/regulations.py): every projection deletes the rows of
    `profile_ids`, and says so downstream. It carries no identifier, only profile ids."""

    kind: ClassVar[str] = "erasure"
    regulation_id: str
    profile_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "event_id": self.event_id, "position": self.position,
                "workspace_id": self.workspace_id, "recorded_at": stored(self.recorded_at),
                "profile_id": self.profile_id, "regulation_id": self.regulation_id,
                "profile_ids": list(self.profile_ids)}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ErasureMessage:
        return cls(**_common(d), regulation_id=d["regulation_id"], profile_ids=tuple(d["profile_ids"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictionMessage(_Entry):
    """A run of `model` (domain/predictions.py): `trained` carries its `status` and `doc` (evaluation,
    parameters, or why it could not train), `scored` a page of `scores`, each (profile_id, score, details)."""

    kind: ClassVar[str] = "prediction"
    change: str  # trained | scored
    model: str
    version: str
    status: str = ""
    doc: dict[str, Any] | None = None
    scores: tuple[tuple[str, float, dict[str, Any]], ...] = ()

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "event_id": self.event_id, "position": self.position,
                             "workspace_id": self.workspace_id, "recorded_at": stored(self.recorded_at),
                             "profile_id": self.profile_id, "change": self.change, "model": self.model,
                             "version": self.version}  # fmt: skip
        if self.change == "trained":
            d.update(status=self.status, doc=self.doc)
        else:
            d["scores"] = [list(s) for s in self.scores]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PredictionMessage:
        return cls(**_common(d), change=d["change"], model=d["model"], version=d["version"],
                   status=d.get("status", ""), doc=d.get("doc"),
                   scores=_scores(d.get("scores", ())))  # fmt: skip


def _scores(rows: Any) -> tuple[tuple[str, float, dict[str, Any]], ...]:
    """A page of scores as a message holds them, from the log's lists or the JSON of cdp.events."""
    return tuple((str(pid), float(score), dict(details)) for pid, score, details in rows)


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasedEntry(_Entry):
    """A log entry whose subject was erased (it cannot be read): only its position, so that a rebuild cuts
    its pages where the live run did (tag steps). Processors apply nothing for it; it is never published."""

    kind: ClassVar[str] = "erased"

    def to_json(self) -> dict[str, Any]:
        raise TypeError("an erased entry is never published")


Message = Union[
    EventMessage, IdentityMessage, RulesMessage, DefinitionMessage, ManualTagMessage, ErasureMessage,
    PredictionMessage, ErasedEntry,
]
Outgoing = dict[str, Any]  # what processors publish on their own topics (profile, tag changes, KPI updates)

_KINDS: dict[str, Any] = {
    cls.kind: cls
    for cls in (EventMessage, IdentityMessage, RulesMessage, DefinitionMessage, ManualTagMessage, ErasureMessage,
                PredictionMessage)
}


def _common(d: dict[str, Any]) -> dict[str, Any]:
    return {"position": d["position"], "event_id": d["event_id"], "workspace_id": d["workspace_id"],
            "profile_id": d["profile_id"], "recorded_at": parse_instant(d["recorded_at"])}  # fmt: skip


def _entry_id(domain_event: Any) -> str:
    """An entry of an aggregate's own: uuid5 of the aggregate id and its version."""
    return str(uuid5(UUID(str(domain_event.originator_id)), str(domain_event.originator_version)))


def to_message(domain_event: Any, position: int) -> Message | None:
    """The message for one log entry, or None for entries that stay internal (workspaces, keys, mappings)."""
    at = domain_event.timestamp
    if isinstance(domain_event, CustomerEvent.Recorded):
        return EventMessage(
            position=position, event_id=str(domain_event.originator_id), workspace_id=domain_event.workspace_id,
            profile_id=domain_event.profile_id, recorded_at=at, anchor=domain_event.anchor,
            message_id=domain_event.message_id, call=domain_event.call,
        )  # fmt: skip
    if isinstance(domain_event, Workspace.RulesChanged):
        return RulesMessage(
            position=position, event_id=_entry_id(domain_event), workspace_id=str(domain_event.originator_id),
            profile_id="", recorded_at=at, version=domain_event.version, rules=domain_event.rules,
        )  # fmt: skip
    change = _IDENTITY_CHANGES.get(type(domain_event))
    if change is not None:
        fields = {name: getattr(domain_event, name) for name in _FIELDS_OF[change]}
        if "identifiers" in fields:
            fields["identifiers"] = tuple(fields["identifiers"])  # not the list the write model holds
        return IdentityMessage(
            position=position, event_id=_entry_id(domain_event), workspace_id=domain_event.workspace_id,
            profile_id=str(domain_event.originator_id), recorded_at=at, change=change, **fields,
        )  # fmt: skip
    if isinstance(domain_event, Regulation.Received) and domain_event.profile_ids:
        return ErasureMessage(
            position=position, event_id=_entry_id(domain_event), workspace_id=domain_event.workspace_id,
            profile_id="", recorded_at=at, regulation_id=str(domain_event.originator_id),
            profile_ids=tuple(domain_event.profile_ids),
        )  # fmt: skip
    if isinstance(domain_event, ManualTagChange.Recorded):
        return ManualTagMessage(
            position=position, event_id=_entry_id(domain_event), workspace_id=domain_event.workspace_id,
            profile_id=domain_event.profile_id, recorded_at=at, tag_id=domain_event.tag,
            action=domain_event.action, reason=domain_event.reason,
        )  # fmt: skip
    if isinstance(domain_event, RuleDefinition.Event):
        deleted = isinstance(domain_event, RuleDefinition.Deleted)
        return DefinitionMessage(
            position=position, event_id=_entry_id(domain_event), workspace_id=domain_event.workspace_id,
            profile_id="", recorded_at=at, definition_kind=domain_event.kind,
            definition_id=str(domain_event.originator_id), tag_id=domain_event.slug,
            rule_version=getattr(domain_event, "rule_version", 1), name=getattr(domain_event, "name", ""),
            rule=None if deleted else domain_event.rule, deleted=deleted,
        )  # fmt: skip
    if isinstance(domain_event, (ModelRun.Trained, ModelRun.Scored)):
        trained = isinstance(domain_event, ModelRun.Trained)
        return PredictionMessage(
            position=position, event_id=_entry_id(domain_event), workspace_id=domain_event.workspace_id,
            profile_id="", recorded_at=at, change="trained" if trained else "scored", model=domain_event.model,
            version=domain_event.model_version, status=domain_event.status if trained else "",
            doc=domain_event.doc if trained else None,
            scores=() if trained else _scores(domain_event.scores),
        )  # fmt: skip
    return None


def by_erasures(messages: list[Message]) -> list[list[Message] | ErasureMessage]:
    """The messages in log order, cut at each erasure: a processor applies what came before an erasure,
    then the erasure, then the rest (so an erased person's rows of the same page are deleted too)."""
    parts: list[list[Message] | ErasureMessage] = [[]]
    for m in sorted(messages, key=lambda m: m.position):
        if isinstance(m, ErasureMessage):
            parts += [m, []]
        else:
            parts[-1].append(m)  # type: ignore[union-attr]
    return [p for p in parts if p != []]


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def erased_entry(notification: Any) -> ErasedEntry:
    return ErasedEntry(position=notification.id, event_id=str(notification.originator_id), workspace_id="",
                       profile_id="", recorded_at=_EPOCH)  # fmt: skip


_RECORDED_TOPIC = get_topic(CustomerEvent.Recorded)


def stored_event_message(notification: Any, state: bytes | None = None) -> EventMessage | None:
    """The message of a stored `CustomerEvent.Recorded` read straight from its row, without the domain event.

    Most of the log is calls: reading them page after page (rebuilds, a follower that fell behind) is then
    one JSON parse per row instead of eventsourcing's transcoder and an event object. It answers exactly
    what `to_message` would, or None (use the mapper) for every other entry and whenever the row is not
    plain JSON with the timestamp as its only transcoded value (a cipher, a compressor, an integer beyond
    64 bits, a call that itself holds a `_type_` key).
    """
    state = notification.state if state is None else state  # `state`: the row's state already opened
    if notification.topic != _RECORDED_TOPIC or state.count(b'"_type_"') != 1:
        return None
    try:
        d = orjson.loads(state)
        at = d["timestamp"]
        return EventMessage(
            position=notification.id, event_id=str(notification.originator_id), workspace_id=d["workspace_id"],
            profile_id=d["profile_id"], recorded_at=datetime.fromisoformat(at["_data_"]), anchor=d["anchor"],
            message_id=d["message_id"], call=d["call"],
        )  # fmt: skip
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def encode(message: Message) -> bytes:
    """The message as published on `cdp.events`."""
    return orjson.dumps(message.to_json())


def decode(raw: bytes) -> Message:
    """A message read from `cdp.events`."""
    d = orjson.loads(raw)
    return _KINDS[d["kind"]].from_json(d)  # type: ignore[no-any-return]
