"""The event-sourced write model: workspaces, profiles and recorded customer events.

Ids are deterministic (uuid5 of natural keys), so a retried `messageId` maps to
the same aggregate id and the event store's uniqueness keeps it stored once.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

NAMESPACE = uuid5(NAMESPACE_URL, "https://cdp.dev/ids")


def workspace_id_for(name: str) -> UUID:
    return uuid5(NAMESPACE, f"workspace/{name}")


def customer_event_id_for(workspace_id: str, message_id: str) -> UUID:
    return uuid5(NAMESPACE, f"{workspace_id}/message/{message_id}")


def profile_id_for(workspace_id: str, first_identifier: str) -> UUID:
    return uuid5(NAMESPACE, f"{workspace_id}/profile/{first_identifier}")


class Workspace(Aggregate):
    """A tenant. Keys are stored as SHA-256 hashes, never in clear."""

    @staticmethod
    def create_id(name: str) -> UUID:
        return workspace_id_for(name)

    @event("Created")
    def __init__(self, name: str) -> None:
        self.name = name
        self.key_hashes: dict[str, str] = {}  # hash → "write" | "read"

    @event("KeyIssued")
    def issue_key(self, kind: str, key_hash: str) -> None:
        self.key_hashes[key_hash] = kind


class Profile(Aggregate):
    """One person as first seen: a fragment that later merges may fold into a survivor."""

    @staticmethod
    def create_id(workspace_id: str, identifiers: list[str], cause_event_id: str) -> UUID:
        # An event whose every identifier is blocked still gets a profile of its own.
        return profile_id_for(workspace_id, identifiers[0] if identifiers else f"event:{cause_event_id}")

    @event("Created")
    def __init__(self, workspace_id: str, identifiers: list[str], cause_event_id: str) -> None:
        self.workspace_id = workspace_id
        self.identifiers = list(identifiers)
        self.merged_into: str | None = None

    # Every event repeats the workspace so each log entry is self-describing for consumers.
    @event("IdentifiersLinked")
    def link(self, workspace_id: str, identifiers: list[str], cause_event_id: str) -> None:
        self.identifiers.extend(identifiers)

    @event("Absorbed")
    def absorb(
        self,
        workspace_id: str,
        absorbed_id: str,
        fragments: list[str],
        identifiers: list[str],
        cause_event_id: str,
        reason: str,
    ) -> None:
        """This profile survives a merge; `fragments` and `identifiers` now resolve to it."""
        self.identifiers.extend(identifiers)

    @event("MergedInto")
    def merge_into(self, workspace_id: str, survivor_id: str, cause_event_id: str, reason: str) -> None:
        self.merged_into = survivor_id


class CustomerEvent(Aggregate):
    """One accepted call of the tracking spec, attributed to the profile it resolved to."""

    @staticmethod
    def create_id(workspace_id: str, message_id: str, profile_id: str, call: dict[str, Any]) -> UUID:
        return customer_event_id_for(workspace_id, message_id)

    @event("Recorded")
    def __init__(self, workspace_id: str, message_id: str, profile_id: str, call: dict[str, Any]) -> None:
        self.workspace_id = workspace_id
        self.message_id = message_id
        self.profile_id = profile_id
        self.call = call
