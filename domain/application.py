"""The write side: record customer events with identity resolved, atomically.

`CustomerData` is an eventsourcing Application. Persistence (SQLite file or
PostgreSQL) is chosen by the environment it is given, never here. All writes go
through one writer (the group committer), so in-memory identity state is only
ever changed by one thread, and is rebuilt from the log when a save fails.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from domain.access import KINDS, KeyGrant, KeyTable, checked_scopes, hash_key, new_key_id
from domain.identity import IdentityGraph, IdentityRules, identifier, own_identifier
from domain.model import Profile, Workspace, customer_event_id_for, recorded
from domain.privacy import Sealer, SealingMapper, Shredded, event_subjects
from domain.regulations import DELETES, REGULATION_TOPICS, TYPES, Regulation, Suppressions
from domain.tags import DEFINITION_TOPICS, Definitions, RuleDefinition
from domain.webhooks import WEBHOOK_TOPICS, WebhookMapping, WebhookMappings

PROFILE_TOPICS = [
    get_topic(cls)
    for cls in (
        Profile.Created, Profile.IdentifiersLinked, Profile.Absorbed, Profile.MergedInto, Profile.MergeRefused,
        Profile.SplitApart,
    )
]  # fmt: skip
WORKSPACE_TOPICS = [
    get_topic(Workspace.Created), get_topic(Workspace.KeyIssued), get_topic(Workspace.RulesChanged),
    get_topic(Workspace.OriginsAllowed), get_topic(Workspace.KeyCreated), get_topic(Workspace.KeyRevoked),
    get_topic(Workspace.Renamed),
]  # fmt: skip
LOAD_PAGE = 10_000
log = logging.getLogger(__name__)


class IdentityError(ValueError):
    """A split or rules change that cannot be applied; the message says what to change."""


class RegulationError(ValueError):
    """A regulation that cannot be applied as asked; `code` and the message say why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Recorded:
    event_id: str
    profile_id: str | None  # None for a retry of an event stored by an earlier request
    stored: bool  # False: the messageId was already stored (a retry); nothing new was written


LOG_NAME = "CustomerData"  # eventsourcing names the log's tables (and reads its settings) after the application


class EventLog(Application[UUID]):
    """The event log read as it is stored, without loading anything from it: the relay process reads it so,
    and every application over this log (`CustomerData`, domain/directory.Directory) is one."""

    name = LOG_NAME

    def __init__(self, env: dict[str, str] | None = None, sealer: Sealer | None = None) -> None:
        """`sealer` seals personal data per subject (domain/privacy.py); without one the log is plain JSON."""
        self.sealer = sealer
        super().__init__(env=env)

    def construct_mapper(self) -> Any:
        if self.sealer is None:
            return super().construct_mapper()
        return SealingMapper(self.construct_transcoder(), self.sealer)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = LOG_NAME  # eventsourcing names each subclass after itself: all of them share this log

    def last_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def read_log(self, after: int, limit: int) -> list[Notification]:
        return list(self.recorder.select_notifications(after + 1, limit))


class CustomerData(EventLog):
    """Records tracking calls and the identity changes they cause, in one transaction per save."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        existing_ids: Callable[[list[UUID]], set[UUID]] | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        """`existing_ids` answers which aggregate ids are already stored, in one round trip;
        infra/ provides it per store. Without it, each id is looked up on its own."""
        super().__init__(env=env, sealer=sealer)
        self.existing_ids = existing_ids or self._existing_ids_one_by_one
        self.on_saved: list[Callable[[list[Any]], None]] = []  # told the recordings of every commit
        self.load()

    def _notify(self, recordings: list[Any]) -> None:
        """After every commit (on the writer's thread): hand the recordings, in log order, to the listeners."""
        for listener in self.on_saved:
            try:
                listener(recordings)
            except Exception:  # stored already: a listener that fails must not fail the commit
                log.exception("a commit listener failed; followers read the log instead")

    # Loading state from the log -------------------------------------------------------------

    def load(self) -> None:
        """Rebuild the identity graph, rules and key index by replaying their events from the log."""
        self.graph = IdentityGraph()
        self.profiles: dict[str, Profile] = {}
        self.workspaces: dict[str, Workspace] = {}
        self.keys = KeyTable()  # every live key (domain/access.py)
        self._rules: dict[str, IdentityRules] = {}
        self.definitions = Definitions()  # tags and saved segments (domain/tags.py)
        self.webhook_mappings = WebhookMappings()  # webhook sources' mappings (domain/webhooks.py)
        self.regulations: dict[str, Regulation] = {}  # erasures and suppressions (domain/regulations.py)
        self.suppressions = Suppressions()
        self.regulation_positions: dict[str, int] = {}  # regulation id → log position of its Received
        self.erased_profiles: set[str] = set()  # their ids stay taken in the log
        topics = PROFILE_TOPICS + WORKSPACE_TOPICS + DEFINITION_TOPICS + WEBHOOK_TOPICS + REGULATION_TOPICS
        for position, domain_event in self._replay(topics):
            if isinstance(domain_event, Regulation.Received):
                self.regulation_positions[str(domain_event.originator_id)] = position
            self._apply(domain_event)

    def _replay(self, topics: list[str]) -> Iterator[tuple[int, DomainEventProtocol[UUID]]]:
        start = 1
        while True:
            page = self.recorder.select_notifications(start, LOAD_PAGE, topics=topics)
            for notification, domain_event in zip(page, self._domain_events(page)):
                if not isinstance(domain_event, Shredded):  # an erased person's identity: as if it never was
                    yield notification.id, domain_event
            if len(page) < LOAD_PAGE:
                return
            start = page[-1].id + 1

    def _domain_events(self, page: Sequence[Notification]) -> list[Any]:
        """The page's domain events, a `Shredded` for each erased one (sealed: the keys in two round trips)."""
        if isinstance(self.mapper, SealingMapper):
            return self.mapper.to_domain_events(page)
        return [self.mapper.to_domain_event(n) for n in page]

    def _apply(self, e: Any) -> None:
        originator = str(e.originator_id)
        if isinstance(e, RuleDefinition.Event):
            self.definitions.apply(e)
            return
        if isinstance(e, WebhookMapping.Event):
            self.webhook_mappings.apply(e)
            return
        if isinstance(e, Regulation.Event):
            self.regulations[originator] = e.mutate(self.regulations.get(originator))
            self.suppressions.apply(e)
            if isinstance(e, Regulation.Received) and e.type in DELETES:
                self.erased_profiles.update(e.profile_ids)
            return
        if isinstance(e, Workspace.Created):
            self.workspaces[originator] = e.mutate(None)
            return
        if isinstance(e, Workspace.Event):
            e.mutate(self.workspaces[originator])
            self.keys.apply(originator, e)
            if isinstance(e, Workspace.RulesChanged):
                self._rules.pop(originator, None)
            return
        if isinstance(e, Profile.Created):
            self.profiles[originator] = e.mutate(None)
            self.graph.created(e.workspace_id, originator, e.identifiers, e.timestamp.timestamp())
            return
        e.mutate(self.profiles[originator])
        if isinstance(e, Profile.IdentifiersLinked):
            self.graph.linked(e.workspace_id, originator, e.identifiers)
        elif isinstance(e, Profile.Absorbed):
            self.graph.merged(e.workspace_id, originator, e.absorbed_id)
        elif isinstance(e, Profile.MergeRefused):
            self.graph.refused(e.workspace_id, originator, e.identifiers)
        elif isinstance(e, Profile.SplitApart):
            self.graph.identifiers[originator] = [i for i in self.graph.identifiers[originator] if i not in e.identifiers]

    # Workspaces, keys and rules -------------------------------------------------------------

    def ensure_workspace(self, name: str) -> str:
        workspace_id = str(Workspace.create_id(name))
        if workspace_id not in self.workspaces:
            workspace = Workspace(name)
            self.save(workspace)
            self.workspaces[workspace_id] = workspace
        return workspace_id

    def create_workspace(self, name: str) -> str:
        """A new workspace; ValueError when the name is taken, or was the first name of one (its id)."""
        if str(Workspace.create_id(name)) in self.workspaces or any(w.name == name for w in self.workspaces.values()):
            raise ValueError(f"a workspace named {name!r} exists already; choose another name")
        return self.ensure_workspace(name)

    def rename_workspace(self, workspace_id: str, name: str) -> None:
        if any(w.name == name for i, w in self.workspaces.items() if i != workspace_id):
            raise ValueError(f"a workspace named {name!r} exists already; choose another name")
        workspace = self.workspaces[workspace_id]
        workspace.rename(name)
        self.save(workspace)

    def grant_key(self, workspace_id: str, kind: str, key: str) -> None:
        """A key configured at start (CDP_* or the data dir's keys.json): made once, then found again. The start
        keys of this kind it replaces are revoked, so a key taken out of the configuration stops working."""
        key_hash = hash_key(key)
        existing = self.keys.by_hash.get(key_hash)
        if existing is not None and (existing.workspace_id, existing.kind) != (workspace_id, kind):
            raise ValueError("this key is already granted elsewhere; generate a new one")
        for grant in self.keys.of_workspace(workspace_id):
            if grant.kind == kind and grant.origin == "start" and self.keys.hash_of[grant.key_id] != key_hash:
                self.revoke_key(workspace_id, grant.key_id, "no longer configured at start")
        if existing is None:
            self.create_key(workspace_id, kind, key, origin="start", name=f"{kind} key set at start")

    def create_key(
        self, workspace_id: str, kind: str, key: str, scopes: list[str] | None = None, name: str = "",
        expires_at: float | None = None, origin: str = "api",
    ) -> KeyGrant:
        """Record a new key (its hash); ValueError for a kind, scope or expiry that cannot be."""
        if kind not in KINDS:
            raise ValueError(f"key kind must be one of {', '.join(KINDS)}, not {kind!r}")
        granted = checked_scopes(kind, scopes)
        if expires_at is not None and expires_at <= time.time():
            raise ValueError("expires_at is in the past; give a time to come (ISO 8601) or none")
        key_hash = hash_key(key)
        if key_hash in self.keys.by_hash or key_hash in self.keys.revoked:
            raise ValueError("this key is already granted, or was revoked; generate a new one")
        workspace = self.workspaces[workspace_id]
        key_id = new_key_id()
        workspace.create_key(key_id, kind, sorted(granted), key_hash, name, expires_at, origin)
        self.save(workspace)
        grant = KeyGrant(workspace_id, kind, key_id, granted, name, expires_at, origin, time.time())
        self.keys.add(key_hash, grant)
        return grant

    def revoke_key(self, workspace_id: str, key_id: str, reason: str = "revoked") -> bool:
        """Revoke a live key of this workspace; False when it has none of that id (unknown or revoked)."""
        key_hash = self.keys.hash_of.get(key_id)
        if key_hash is None or self.keys.by_hash[key_hash].workspace_id != workspace_id:
            return False
        workspace = self.workspaces[workspace_id]
        workspace.revoke_key(key_id, key_hash, reason)
        self.save(workspace)
        self.keys.revoke(key_id)
        return True

    def authorise(self, key: str) -> KeyGrant | None:
        """What a key opens, or None (unknown, revoked or expired)."""
        grant = self.keys.grant(key)
        return None if grant is None or grant.expired(time.time()) else grant

    def rules_for(self, workspace_id: str) -> IdentityRules:
        if workspace_id not in self._rules:
            stored = self.workspaces[workspace_id].rules if workspace_id in self.workspaces else {}
            self._rules[workspace_id] = IdentityRules.model_validate(stored)
        return self._rules[workspace_id]

    def rules_version(self, workspace_id: str) -> int:
        return self.workspaces[workspace_id].rules_version

    def set_rules(self, workspace_id: str, rules: IdentityRules) -> int:
        """Store a new version of the workspace's rules; returns its version number."""
        workspace = self.workspaces[workspace_id]
        workspace.change_rules(workspace.rules_version + 1, rules.model_dump(mode="json"))
        self.save(workspace)
        self._rules[workspace_id] = rules
        return workspace.rules_version

    def allowed_origins(self, workspace_id: str) -> list[str]:
        """Origins whose pages may send events from the browser (none until set)."""
        return list(self.workspaces[workspace_id].allowed_origins)

    def allow_origins(self, workspace_id: str, origins: list[str]) -> None:
        workspace = self.workspaces[workspace_id]
        workspace.allow_origins(list(dict.fromkeys(origins)))
        self.save(workspace)

    # Recording events ----------------------------------------------------------------------

    def record(self, batches: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> list[list[Recorded]]:
        """Record several batches of normalised calls in one transaction (a group commit).

        Each call must carry a `messageId`. A messageId already stored in the workspace
        is acknowledged again without writing. Within a batch, identity is resolved in
        event-time order (then messageId), so the order calls arrive in does not change
        who is who. If anything fails, nothing is written and in-memory identity state
        is reloaded from the log.
        """
        group = _Group()
        results: list[list[Recorded]] = []
        candidates = [customer_event_id_for(ws, call["messageId"]) for ws, calls in batches for call in calls]
        group.already_stored = self.existing_ids(candidates)
        try:
            for workspace_id, calls in batches:
                order = sorted(range(len(calls)), key=lambda i: (calls[i]["timestamp"], calls[i]["messageId"]))
                out: list[Recorded | None] = [None] * len(calls)
                for i in order:
                    out[i] = self._record_one(workspace_id, calls[i], group)
                results.append(out)  # type: ignore[arg-type]
            if group.events:
                self._have_keys(group.events)
                self.save(group)
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
        profile_id, anchor = self._resolve(workspace_id, call, str(event_id), group)
        group.events.append(recorded(workspace_id, call["messageId"], profile_id, anchor, call))
        group.recorded[event_id] = profile_id
        return Recorded(str(event_id), profile_id, stored=True)

    def _have_keys(self, events: list[Any]) -> None:
        """Create the subject keys a commit needs in one round trip, before the mapper seals each event."""
        if self.sealer is not None and self.sealer.sealing:
            self.sealer.ensure(event_subjects(events))

    def _existing_ids_one_by_one(self, ids: Iterable[UUID]) -> set[UUID]:
        return {i for i in set(ids) if self.recorder.select_events(i, limit=1)}

    def identifiers_of(self, workspace_id: str, call: dict[str, Any]) -> list[str]:
        """The event's identifiers, strongest first; alias's previousId is whichever id it names."""
        rules = self.rules_for(workspace_id)
        idents = rules.identifiers_of(call)
        if call.get("type") == "alias" and rules.usable(call.get("previousId")):
            previous = str(call["previousId"]).strip()
            as_user = identifier("user_id", previous)
            known_user = self.graph.profile_of(workspace_id, as_user) is not None
            extra = as_user if known_user else identifier("anonymous_id", previous)
            if extra not in idents:
                idents.append(extra)
        return idents

    def _resolve(self, workspace_id: str, call: dict[str, Any], cause: str, group: "_Group") -> tuple[str, str]:
        """Apply the event's identity consequences; returns (profile id, anchor)."""
        rules = self.rules_for(workspace_id)
        resolution = self.graph.resolve(workspace_id, self.identifiers_of(workspace_id, call), rules)
        if resolution.profile_id is None:
            seed = cause
            if str(Profile.create_id(workspace_id, resolution.new_identifiers, cause)) in self.erased_profiles:
                seed = f"renewed:{cause}"  # the erased person's entries keep their id in the log: a new one
            target = Profile(workspace_id, resolution.new_identifiers, seed)
            target_id = str(target.id)
            self.profiles[target_id] = target
            self.graph.created(workspace_id, target_id, resolution.new_identifiers, target.created_on.timestamp())
        else:
            target_id = resolution.profile_id
            target = self.profiles[target_id]
            for absorbed_id in resolution.absorbed:
                absorbed = self.profiles[absorbed_id]
                moved = list(self.graph.identifiers[absorbed_id])
                target.absorb(workspace_id, absorbed_id, moved, cause, resolution.reason)
                absorbed.merge_into(workspace_id, target_id, cause, resolution.reason)
                self.graph.merged(workspace_id, target_id, absorbed_id)
                group.add(target, absorbed)
            if resolution.new_identifiers:
                target.link(workspace_id, resolution.new_identifiers, cause)
                self.graph.linked(workspace_id, target_id, resolution.new_identifiers)
        for refusal in resolution.refusals:
            target.refuse_merge(workspace_id, refusal.identifiers, refusal.profile_id, cause, refusal.reason)
            self.graph.refused(workspace_id, target_id, refusal.identifiers)
        group.add(target)
        return target_id, resolution.anchor or own_identifier(target_id)

    # Splitting ------------------------------------------------------------------------------

    def split(self, workspace_id: str, profile_id: str, identifiers: list[str], reason: str = "") -> str:
        """Move `identifiers` (and every event anchored on them) from a profile to a new one."""
        profile = self.profiles.get(profile_id)
        if profile is None or profile.workspace_id != workspace_id:
            raise IdentityError(f"no profile {profile_id} in this workspace")
        if profile.merged_into is not None:
            raise IdentityError(f"profile {profile_id} was merged into {profile.merged_into}; split that one")
        held = self.graph.identifiers[profile_id]
        wanted = list(dict.fromkeys(identifiers))
        missing = [i for i in wanted if i not in held]
        if not wanted or missing:
            raise IdentityError(
                f"identifiers to split off must be some of the profile's own ({', '.join(held)}); "
                f"not on it: {', '.join(missing) or 'none given'}"
            )
        if len(wanted) == len(held):
            raise IdentityError("a split must leave at least one identifier on the profile")
        cause = f"split:{profile_id}:{profile.version}"
        new = Profile(workspace_id, wanted, cause)
        profile.split_apart(workspace_id, str(new.id), wanted, reason or "split requested through the API")
        try:
            self._have_keys([*profile.pending_events, *new.pending_events])
            self.save(profile, new)
        except BaseException:
            self.load()
            raise
        self.profiles[str(new.id)] = new
        self.graph.split(workspace_id, profile_id, str(new.id), wanted, new.created_on.timestamp())
        return str(new.id)

    # Regulations ----------------------------------------------------------------------------

    def person(self, workspace_id: str, identifiers: list[str]) -> tuple[list[str], list[str]]:
        """(profile ids, subjects) of the person some identifiers name: the profiles that hold any of them
        now (a merged-away profile id names its survivor), every profile merged into those, and all their
        identifiers and own ids. An identifier no profile holds is a subject all the same (a dead letter,
        a call not resolved yet may carry it)."""
        found: list[str] = []
        for ident in identifiers:
            kind, _, value = ident.partition(":")
            pid = value if kind == "profile_id" else self.graph.profile_of(workspace_id, ident)
            while pid is not None and pid in self.profiles and self.profiles[pid].merged_into is not None:
                pid = self.profiles[pid].merged_into
            if pid is not None and pid in self.profiles and self.profiles[pid].workspace_id == workspace_id:
                found.append(pid)
        absorbed: dict[str, list[str]] = {}
        for pid, profile in self.profiles.items():
            if profile.merged_into is not None and profile.workspace_id == workspace_id:
                absorbed.setdefault(profile.merged_into, []).append(pid)
        profiles, pending = [], list(dict.fromkeys(found))
        while pending:
            pid = pending.pop()
            if pid not in profiles:
                profiles.append(pid)
                pending += absorbed.get(pid, [])
        subjects = list(identifiers)
        for pid in profiles:
            subjects += [own_identifier(pid), *self.graph.identifiers.get(pid, [])]
        return profiles, list(dict.fromkeys(subjects))

    def regulate(self, workspace_id: str, type: str, identifiers: list[str]) -> Regulation:
        """Record a regulation and, for a delete, destroy the person's keys (one writer: between pages).

        The regulation is recorded first: the projections erase the profiles when it reaches them, whether or
        not the keys could be destroyed (a key store failure raises, and sending the regulation again
        finishes it). The identity state is then loaded again from the log, which no longer shows the person.
        """
        if type not in TYPES:
            raise RegulationError("bad_request", f"type must be one of {', '.join(TYPES)}, not {type!r}")
        if self.sealer is None:
            raise RegulationError("encryption_off", "regulations need the key store: this log has no sealer")
        deleting = type in DELETES
        if deleting and not self.sealer.sealing:
            raise RegulationError(
                "encryption_off",
                "a delete destroys the person's keys, but CDP_ENCRYPTION=off stores new data in plain text that no "
                "key erases: turn encryption on (the default) before taking erasure requests",
            )
        profiles, subjects = self.person(workspace_id, identifiers)
        hashes = sorted({self.sealer.subject_hash(workspace_id, s) for s in subjects})
        regulation = Regulation(workspace_id, type, hashes, profiles if deleting else [], len(identifiers))
        received = regulation.pending_events[0]
        recordings = self.save(regulation)
        self.regulations[str(regulation.id)] = regulation
        self.regulation_positions[str(regulation.id)] = recordings[0].notification.id
        self.suppressions.apply(received)
        if deleting:
            try:
                destroyed = self.sealer.destroy(workspace_id, subjects, str(regulation.id))
                regulation.keys_were_destroyed(workspace_id, destroyed)
                self.save(regulation)
            finally:
                self.load()  # the person's identity events are unreadable now: as if they never were
        return self.regulations.get(str(regulation.id), regulation)

    # Reading the log -----------------------------------------------------------------------

class _Group:
    """Domain events of one group commit, kept in the order they happened.

    Saved as one object (`save(group)`): `Application.save` checks each object it is
    given against a runtime Protocol (about 10 us each), so one check per commit
    instead of one per event. It is no aggregate: not cached, never snapshotted.
    """

    id = None

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.recorded: dict[UUID, str] = {}  # event id → profile id, for retries inside the group
        self.already_stored: set[UUID] = set()  # event ids stored by earlier groups

    def add(self, *aggregates: Any) -> None:
        for aggregate in aggregates:
            self.events.extend(aggregate.collect_events())

    def collect_events(self) -> list[Any]:
        return self.events
