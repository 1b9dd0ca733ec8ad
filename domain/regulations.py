"""Regulations: a person's erasure and suppression, recorded in the log without the data they erase.

A regulation names a person by any of their identifiers. `delete` destroys the
keys of all their subjects (domain/privacy.py): their entries in the immutable
log stay, unreadable forever, and the projections delete their rows when the
regulation's own log entry reaches them (`profile_ids` says whose). `suppress`
makes ingest drop later calls that carry any of the identifiers, without
storing or dead-lettering them; `unsuppress` ends that; `suppress_with_delete`
is both. The log keeps only keyed hashes of the identifiers (the key store's
subject hashes), so a regulation never re-records what it erased.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable
from uuid import UUID

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

from domain.identity import normalise_identifier
from domain.privacy import identifiers_in

TYPES = ("delete", "suppress", "unsuppress", "suppress_with_delete")
DELETES = ("delete", "suppress_with_delete")
SUPPRESSES = ("suppress", "suppress_with_delete")


class Regulation(Aggregate):
    """One regulation of one workspace; its id is what `GET /v1/regulations/{id}` takes."""

    @event("Received")
    def __init__(
        self, workspace_id: str, type: str, subject_hashes: list[str], profile_ids: list[str], identifiers: int
    ) -> None:
        """`identifiers`: how many the request named (the hashes also cover the profiles' other ones)."""
        self.workspace_id = workspace_id
        self.type = type
        self.subject_hashes = list(subject_hashes)
        self.profile_ids = list(profile_ids)
        self.identifiers = identifiers
        self.keys_destroyed: int | None = None

    @event("KeysDestroyed")
    def keys_were_destroyed(self, workspace_id: str, count: int) -> None:
        self.keys_destroyed = count

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id), "type": self.type, "received_at": self.created_on.isoformat(),
            "identifiers": self.identifiers, "profiles": len(self.profile_ids),
            "keys_destroyed": self.keys_destroyed,
        }  # fmt: skip


REGULATION_TOPICS = [get_topic(Regulation.Received), get_topic(Regulation.KeysDestroyed)]


class Suppressions:
    """The subject hashes each workspace suppresses, as the log's regulations left them.

    A suppression covers every identifier the person had when it was received; an `unsuppress` naming any
    of them lifts all of it (and the identifiers it names itself)."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[str, set[str]]] = {}  # workspace → regulation id → hashes

    def apply(self, e: Any) -> None:
        """Follow one `Regulation.Received` (other regulation events change nothing here)."""
        if not isinstance(e, Regulation.Received):
            return
        groups = self._groups.setdefault(e.workspace_id, {})
        hashes = set(e.subject_hashes)
        if e.type in SUPPRESSES:
            groups[str(e.originator_id)] = hashes
        elif e.type == "unsuppress":
            for rid in [rid for rid, held in groups.items() if held & hashes]:
                del groups[rid]

    def any(self, workspace_id: str) -> bool:
        return bool(self._groups.get(workspace_id))

    def matches(self, workspace_id: str, identifiers: Iterable[str], hashed: Callable[[str, str], str]) -> bool:
        """Whether any of a call's identifiers is suppressed; `hashed(workspace, identifier)` is the key
        store's subject hash."""
        groups = self._groups.get(workspace_id)
        if not groups:
            return False
        wanted = {hashed(workspace_id, i) for i in identifiers}
        return any(held & wanted for held in groups.values())


def regulation_id(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


def suppressed_call(
    suppressions: Suppressions, hashed: Callable[[str, str], str], workspace_id: str, call: dict[str, Any]
) -> bool:
    """Whether ingest drops this call: it carries an identifier a regulation suppresses."""
    if not suppressions.any(workspace_id):
        return False
    return suppressions.matches(workspace_id, [normalise_identifier(i) for i in identifiers_in(call)], hashed)
