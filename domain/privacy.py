"""Personal data sealed per subject, so that erasing a person destroys keys instead of rewriting the log.

A *subject* is one identifier of a workspace (`user_id:42`, `email:a@b.c`, a
profile's own `profile_id:…`). Everything personal is sealed with the key of
its subject: a call with the key of its anchor, a profile's identity events
with the profile's own key, and every identifier they carry with that
identifier's key as well, so that a person's identifiers become unreadable
wherever they were written (a refused merge on someone else's profile
included). Erasure destroys the keys of all of a person's subjects: their
entries in the immutable log stay, unreadable forever, and every reader skips
them (`Shredded`).

The keys live outside the log (infra/keyring.py, infra/key_store.py); this
module only names what is sealed with which subject, behind the `Sealer`
protocol, so the domain does not depend on how keys are kept.
"""

from __future__ import annotations

import base64
from typing import Any, Iterable, Protocol, Sequence

from eventsourcing.persistence import Mapper, StoredEvent, find_id_convertor
from eventsourcing.utils import get_topic, resolve_topic

from domain.identity import identifier, own_identifier
from domain.model import CustomerEvent, Profile

MAGIC = b"\xceS1"  # sealed bytes start so; plain JSON never does (stored before sealing existed, or with it off)
TOKEN = "\u2063sealed:"  # a sealed identifier inside an event's state (invisible separator: no real identifier has it)


class Shredded(Exception):
    """The key of what was read was destroyed by an erasure: the entry is skipped, never an error."""


class KeyMissing(RuntimeError):
    """Sealed data whose key the key store does not hold and never destroyed: restore it with the log."""

    code = "key_missing"


class Sealer(Protocol):
    """Seals bytes with the key of one subject of a workspace, and opens them again."""

    sealing: bool  # False: new data is stored plain (sealed data still opens)

    def ensure(self, subjects: Iterable[tuple[str, str]]) -> None:
        """Have a key for every (workspace, subject), creating the missing ones in one round trip."""

    def seal(self, workspace_id: str, subject: str, plain: bytes) -> bytes: ...

    def open(self, sealed: bytes) -> bytes:
        """The plain bytes; plain input is returned as it is; raises Shredded or KeyMissing."""

    def prefetch(self, blobs: Iterable[bytes]) -> None:
        """Load the keys of many sealed blobs in one round trip (a page of the log)."""

    def subject_hash(self, workspace_id: str, subject: str) -> str:
        """What the key store knows of a subject: a keyed hash (suppressions match calls by it too)."""

    def destroy(self, workspace_id: str, subjects: Iterable[str], regulation_id: str) -> int:
        """Destroy the keys of these subjects (an erasure); returns how many were destroyed."""

    def forget(self, workspace_id: str, hashes: Iterable[str]) -> None:
        """Drop the cached keys of subjects (by hash) another process erased."""


def is_sealed(data: bytes) -> bool:
    return data[:3] == MAGIC


def call_subject(call: dict[str, Any]) -> str:
    """The subject an accepted call is sealed with before identity is resolved: its user id, else its
    anonymous id (ingest refuses calls with neither)."""
    user_id = call.get("userId")
    if user_id not in (None, ""):
        return identifier("user_id", str(user_id).strip())
    return identifier("anonymous_id", str(call.get("anonymousId") or "").strip())


def identifiers_in(call: dict[str, Any]) -> list[str]:
    """The raw identifier values a call carries, as a suppression matches them (rules aside)."""
    found = []
    for kind, value in (("user_id", call.get("userId")), ("anonymous_id", call.get("anonymousId"))):
        if value not in (None, ""):
            found.append(identifier(kind, str(value).strip()))
    traits = call.get("traits") or (call.get("context") or {}).get("traits") or {}
    if isinstance(traits, dict):
        for kind in ("email", "phone"):
            value = traits.get(kind)
            if isinstance(value, str) and value.strip():
                found.append(identifier(kind, value.strip()))
    return found


_PROFILE_TOPICS = {
    get_topic(cls)
    for cls in (Profile.Created, Profile.IdentifiersLinked, Profile.Absorbed, Profile.MergedInto,
                Profile.MergeRefused, Profile.SplitApart)
}  # fmt: skip
_RECORDED = get_topic(CustomerEvent.Recorded)


def subject_of(topic: str, state: dict[str, Any], originator_id: Any) -> str | None:
    """The subject a stored event is sealed with, or None for what is not personal (workspaces, rules,
    tag definitions, webhook mappings, regulations: they name no person)."""
    if topic == _RECORDED:
        return str(state["anchor"])
    if topic in _PROFILE_TOPICS:
        return own_identifier(str(originator_id))
    return None


def event_subjects(events: Iterable[Any]) -> list[tuple[str, str]]:
    """Every (workspace, subject) that sealing `events` needs a key for."""
    needed: list[tuple[str, str]] = []
    for e in events:
        subject = subject_of(get_topic(type(e)), vars(e), e.originator_id)
        if subject is None:
            continue
        ws = e.workspace_id
        needed.append((ws, subject))
        needed.extend((ws, i) for i in getattr(e, "identifiers", None) or ())
    return needed


def _tokens(state: dict[str, Any]) -> list[str]:
    """The sealed values inside an opened state: its identifiers and its reason."""
    values = [*(state.get("identifiers") or ()), state.get("reason")]
    return [v for v in values if isinstance(v, str) and v.startswith(TOKEN)]


class SealingMapper(Mapper[Any]):
    """eventsourcing's mapper with a key per subject instead of one cipher for the application.

    A profile event's identifiers are each sealed with their own key inside the state, and its `reason`
    (which may quote them) with the key of its first identifier too: a person's erasure then removes them
    from every profile's history, not only from their own.
    """

    def __init__(self, transcoder: Any, sealer: Sealer) -> None:
        super().__init__(transcoder)
        self.sealer = sealer

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        topic = get_topic(type(domain_event))
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        if getattr(type(domain_event), "class_version", 1) > 1:
            state["class_version"] = type(domain_event).class_version
        subject = subject_of(topic, state, originator_id) if self.sealer.sealing else None
        if subject is None:
            return StoredEvent(originator_id, originator_version, topic, self.transcoder.encode(state))
        ws = state["workspace_id"]
        idents = state.get("identifiers")
        if idents:
            state["identifiers"] = [self._token(ws, i, i.encode()) for i in idents]
            if state.get("reason"):
                state["reason"] = self._token(ws, idents[0], state["reason"].encode())
        sealed = self.sealer.seal(ws, subject, self.transcoder.encode(state))
        return StoredEvent(originator_id, originator_version, topic, sealed)

    def _token(self, workspace_id: str, subject: str, plain: bytes) -> str:
        return TOKEN + base64.b64encode(self.sealer.seal(workspace_id, subject, plain)).decode()

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        """The domain event; raises Shredded when its subject was erased."""
        state = stored_event.state
        if not is_sealed(state):
            return super().to_domain_event(stored_event)
        return self._domain_event(stored_event, self.transcoder.decode(self.sealer.open(state)))

    def to_domain_events(self, stored_events: Sequence[StoredEvent]) -> list[Any]:
        """The domain events of a page of the log, in order; a `Shredded` in place of each erased one.

        The keys of the page are loaded in two round trips: those of the states, then those of every
        identifier sealed inside them (one key each). Opening the events one by one asked the key store once
        per identifier: a restart on a log of 1.28 million entries had not come up after 14 minutes; this
        way it came up in 30 seconds (2 cores).
        """
        self.sealer.prefetch(e.state for e in stored_events)
        opened: list[dict[str, Any] | Shredded | None] = []
        for e in stored_events:
            if not is_sealed(e.state):
                opened.append(None)
                continue
            try:
                opened.append(self.transcoder.decode(self.sealer.open(e.state)))
            except Shredded as erased:
                opened.append(erased)
        self.sealer.prefetch(base64.b64decode(t[len(TOKEN):]) for state in opened if isinstance(state, dict)
                             for t in _tokens(state))  # fmt: skip
        events: list[Any] = []
        for e, state in zip(stored_events, opened):
            if state is None:
                events.append(super().to_domain_event(e))
            elif isinstance(state, Shredded):
                events.append(state)
            else:
                events.append(self._domain_event(e, state))
        return events

    def _domain_event(self, stored_event: StoredEvent, event_state: dict[str, Any]) -> Any:
        idents = event_state.get("identifiers")
        if idents:
            event_state["identifiers"] = [i for i in (self._untoken(t) for t in idents) if i is not None]
            if isinstance(event_state.get("reason"), str):
                event_state["reason"] = self._untoken(event_state["reason"]) or "(erased)"
        cls = resolve_topic(stored_event.topic)  # the rest as eventsourcing's own mapper does it
        event_state["originator_id"] = find_id_convertor(cls, type(stored_event.originator_id))(
            stored_event.originator_id
        )
        event_state["originator_version"] = stored_event.originator_version
        from_version, class_version = event_state.pop("class_version", 1), getattr(cls, "class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(event_state)
            from_version += 1
        domain_event = object.__new__(cls)
        object.__setattr__(domain_event, "__dict__", event_state)
        return domain_event

    def _untoken(self, value: str) -> str | None:
        """An identifier (or reason) sealed inside a state, or None when its subject was erased."""
        if not value.startswith(TOKEN):
            return value
        try:
            return self.sealer.open(base64.b64decode(value[len(TOKEN):])).decode()
        except Shredded:
            return None

    def plain_state(self, stored_state: bytes) -> bytes:
        """A stored event's state opened (raises Shredded), for readers that parse rows themselves."""
        return self.sealer.open(stored_state) if is_sealed(stored_state) else stored_state
