"""Log entries as messages: the JSON shape published on `cdp.events` and fed to processors.

Every message carries its log `position` and an `event_id`, so consumers can
discard redeliveries. `kind` is `event` (a tracking call, with the `anchor`
identifier it belongs by), `identity` (a profile created, identifiers linked,
a merge, a refused merge, a split), `rules`, `definition` (a tag or saved segment
defined, changed or deleted) or `manual_tag` (a static tag added or removed).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

import orjson

from domain.model import CustomerEvent, Profile, Workspace
from domain.tags import tag_message

Message = dict[str, Any]

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


def _iso(value: Any) -> str:
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


def to_message(domain_event: Any, position: int) -> Message | None:
    """The message for one log entry, or None for entries that stay internal (workspaces, keys)."""
    if isinstance(domain_event, CustomerEvent.Recorded):
        return {
            "kind": "event",
            "position": position,
            "event_id": str(domain_event.originator_id),
            "workspace_id": domain_event.workspace_id,
            "profile_id": domain_event.profile_id,
            "anchor": domain_event.anchor,
            "message_id": domain_event.message_id,
            "type": domain_event.call["type"],
            "recorded_at": _iso(domain_event.timestamp),
            "call": domain_event.call,
        }
    if isinstance(domain_event, Workspace.RulesChanged):
        return {
            "kind": "rules",
            "position": position,
            "event_id": str(uuid5(UUID(str(domain_event.originator_id)), str(domain_event.originator_version))),
            "workspace_id": str(domain_event.originator_id),
            "profile_id": "",
            "version": domain_event.version,
            "rules": domain_event.rules,
            "recorded_at": _iso(domain_event.timestamp),
        }
    change = _IDENTITY_CHANGES.get(type(domain_event))
    if change is None:
        return tag_message(domain_event, position, _iso)  # tag and segment definitions, manual tags; else None
    message: Message = {
        "kind": "identity",
        "position": position,
        "event_id": str(uuid5(UUID(str(domain_event.originator_id)), str(domain_event.originator_version))),
        "workspace_id": domain_event.workspace_id,
        "profile_id": str(domain_event.originator_id),
        "change": change,
        "recorded_at": _iso(domain_event.timestamp),
    }
    for name in _IDENTITY_FIELDS:
        if hasattr(domain_event, name):
            message[name] = getattr(domain_event, name)
    return message


def encode(message: Message) -> bytes:
    return orjson.dumps(message)


def decode(raw: bytes) -> Message:
    return orjson.loads(raw)
