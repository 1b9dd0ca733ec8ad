"""The write side: record customer events with identity resolved, atomically.

`CustomerData` is an eventsourcing Application. Persistence (SQLite file or
PostgreSQL) is chosen by the environment it is given, never here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from domain.identity import IdentityGraph, IdentityRules, identifier
from domain.model import CustomerEvent, Profile, Workspace, customer_event_id_for

PROFILE_TOPICS = [
    get_topic(Profile.Created),
    get_topic(Profile.IdentifiersLinked),
    get_topic(Profile.Absorbed),
    get_topic(Profile.MergedInto),
]
WORKSPACE_TOPICS = [get_topic(Workspace.Created), get_topic(Workspace.KeyIssued)]
LOAD_PAGE = 10_000


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Recorded:
    event_id: str
    profile_id: str | None  # None for a retry of an event stored by an earlier request
    stored: bool  # False: the messageId was already stored (a retry); nothing new was written


@dataclass(frozen=True)
class KeyGrant:
    workspace_id: str
    kind: str  # "write" | "read"


class CustomerData(Application[UUID]):
    """Records tracking calls and the identity changes they cause, in one transaction per save."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        rules: IdentityRules | None = None,
        existing_ids: Callable[[list[UUID]], set[UUID]] | None = None,
    ) -> None:
        """`existing_ids` answers which aggregate ids are already stored, in one round trip;
        infra/ provides it per store. Without it, each id is looked up on its own."""
        super().__init__(env=env)
        self.rules = rules or IdentityRules()
        self.existing_ids = existing_ids or self._existing_ids_one_by_one
        self.load()

    # Loading state from the log -------------------------------------------------------------

    def load(self) -> None:
        """Rebuild the identity graph and key index by replaying their events from the log."""
        self.graph = IdentityGraph()
        self.profiles: dict[str, Profile] = {}
        self.workspaces: dict[str, Workspace] = {}
        self.keys: dict[str, KeyGrant] = {}
        for domain_event in self._replay(PROFILE_TOPICS + WORKSPACE_TOPICS):
            self._apply(domain_event)

    def _replay(self, topics: list[str]) -> Iterator[DomainEventProtocol[UUID]]:
        start = 1
        while True:
            page = self.recorder.select_notifications(start, LOAD_PAGE, topics=topics)
            for notification in page:
                yield self.mapper.to_domain_event(notification)
            if len(page) < LOAD_PAGE:
                return
            start = page[-1].id + 1

    def _apply(self, domain_event: Any) -> None:
        if isinstance(domain_event, Workspace.Created):
            self.workspaces[str(domain_event.originator_id)] = domain_event.mutate(None)
        elif isinstance(domain_event, Workspace.KeyIssued):
            workspace = self.workspaces[str(domain_event.originator_id)]
            domain_event.mutate(workspace)
            self.keys[domain_event.key_hash] = KeyGrant(str(workspace.id), domain_event.kind)
        elif isinstance(domain_event, Profile.Created):
            profile = domain_event.mutate(None)
            self.profiles[str(profile.id)] = profile
            self.graph.created(
                profile.workspace_id, str(profile.id), domain_event.identifiers, domain_event.timestamp.timestamp()
            )
        elif isinstance(domain_event, Profile.IdentifiersLinked):
            profile = self.profiles[str(domain_event.originator_id)]
            domain_event.mutate(profile)
            self.graph.linked(profile.workspace_id, str(profile.id), domain_event.identifiers)
        elif isinstance(domain_event, Profile.Absorbed):
            domain_event.mutate(self.profiles[str(domain_event.originator_id)])
            self.graph.merged(str(domain_event.originator_id), domain_event.absorbed_id)
        elif isinstance(domain_event, Profile.MergedInto):
            domain_event.mutate(self.profiles[str(domain_event.originator_id)])

    # Workspaces and keys -------------------------------------------------------------------

    def ensure_workspace(self, name: str) -> str:
        workspace_id = str(Workspace.create_id(name))
        if workspace_id not in self.workspaces:
            workspace = Workspace(name)
            self.save(workspace)
            self.workspaces[workspace_id] = workspace
        return workspace_id

    def grant_key(self, workspace_id: str, kind: str, key: str) -> None:
        if kind not in ("write", "read"):
            raise ValueError(f"key kind must be 'write' or 'read', not {kind!r}")
        key_hash = hash_key(key)
        if key_hash in self.keys:
            if self.keys[key_hash] != KeyGrant(workspace_id, kind):
                raise ValueError("this key is already granted elsewhere; generate a new one")
            return
        workspace = self.workspaces[workspace_id]
        workspace.issue_key(kind, key_hash)
        self.save(workspace)
        self.keys[key_hash] = KeyGrant(workspace_id, kind)

    def authorise(self, key: str, kind: str) -> str | None:
        """The workspace id a key of `kind` belongs to, or None."""
        grant = self.keys.get(hash_key(key))
        return grant.workspace_id if grant is not None and grant.kind == kind else None

    # Recording events ----------------------------------------------------------------------

    def record(self, batches: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> list[list[Recorded]]:
        """Record several batches of normalised calls in one transaction (a group commit).

        Each call must carry a `messageId`. A messageId already stored in the workspace
        is acknowledged again without writing. If anything fails, nothing is written
        and in-memory identity state is reloaded from the log.
        """
        group = _Group()
        results: list[list[Recorded]] = []
        candidates = [customer_event_id_for(ws, call["messageId"]) for ws, calls in batches for call in calls]
        group.already_stored = self.existing_ids(candidates)
        try:
            for workspace_id, calls in batches:
                results.append([self._record_one(workspace_id, call, group) for call in calls])
            if group.events:
                self.save(*group.events)
        except BaseException:
            self.load()
            raise
        return results

    def _record_one(self, workspace_id: str, call: dict[str, Any], group: "_Group") -> Recorded:
        event_id = customer_event_id_for(workspace_id, call["messageId"])
        if event_id in group.recorded:
            return Recorded(str(event_id), group.recorded[event_id], stored=False)
        if event_id in group.already_stored:
            return Recorded(str(event_id), None, stored=False)
        profile_id = self._resolve(workspace_id, call, str(event_id), group)
        group.add(CustomerEvent(workspace_id, call["messageId"], profile_id, call))
        group.recorded[event_id] = profile_id
        return Recorded(str(event_id), profile_id, stored=True)

    def _existing_ids_one_by_one(self, ids: Iterable[UUID]) -> set[UUID]:
        return {i for i in set(ids) if self.recorder.select_events(i, limit=1)}

    def identifiers_of(self, workspace_id: str, call: dict[str, Any]) -> list[str]:
        idents = self.rules.identifiers_of(call)
        if call.get("type") == "alias" and self.rules.usable(call.get("previousId")):
            previous = call["previousId"]
            as_user = identifier("user_id", previous)
            known_user = self.graph.profile_of(workspace_id, as_user) is not None
            idents.append(as_user if known_user else identifier("anonymous_id", previous))
        return idents

    def _resolve(self, workspace_id: str, call: dict[str, Any], cause: str, group: "_Group") -> str:
        resolution = self.graph.resolve(workspace_id, self.identifiers_of(workspace_id, call))
        if resolution.profile_id is None:
            profile = Profile(workspace_id, resolution.new_identifiers, cause)
            profile_id = str(profile.id)
            self.profiles[profile_id] = profile
            self.graph.created(workspace_id, profile_id, resolution.new_identifiers, profile.created_on.timestamp())
            group.add(profile)
            return profile_id
        survivor = self.profiles[resolution.profile_id]
        for absorbed_id in resolution.absorbed:
            absorbed = self.profiles[absorbed_id]
            fragments = sorted(self.graph.members[absorbed_id])
            moved = list(self.graph.identifiers[absorbed_id])
            survivor.absorb(workspace_id, absorbed_id, fragments, moved, cause, resolution.reason)
            absorbed.merge_into(workspace_id, resolution.profile_id, cause, resolution.reason)
            self.graph.merged(resolution.profile_id, absorbed_id)
            group.add(survivor, absorbed)
        if resolution.new_identifiers:
            survivor.link(workspace_id, resolution.new_identifiers, cause)
            self.graph.linked(workspace_id, resolution.profile_id, resolution.new_identifiers)
            group.add(survivor)
        return resolution.profile_id

    # Reading the log -----------------------------------------------------------------------

    def last_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def read_log(self, after: int, limit: int) -> list[Notification]:
        return list(self.recorder.select_notifications(after + 1, limit))


class _Group:
    """Domain events of one group commit, kept in the order they happened."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.recorded: dict[UUID, str] = {}  # event id → profile id, for retries inside the group
        self.already_stored: set[UUID] = set()  # event ids stored by earlier groups

    def add(self, *aggregates: Any) -> None:
        for aggregate in aggregates:
            self.events.extend(aggregate.collect_events())
