"""Profiles and identity: look profiles up (now or as of a time), list them, read their timelines and
identity history; split a profile and change the identity rules through the group committer.

Queries and commands are small frozen objects; `ProfileService` handles them all. Errors are
`domain.errors` kinds: an identifier no profile has is NotFound, one that is neither a profile id
nor `type:value` is Invalid, a split the identity state refuses is a Conflict.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable
from uuid import UUID

import orjson

from domain.application import CustomerData, IdentityError
from domain.consent import defaults_as_of, document
from domain.errors import Conflict, Invalid, NotFound
from domain.identity import IdentityRules, normalise_identifier, own_identifier, parse_identifier
from domain.times import shown
from domain.traits import lifecycle_stage, rfm, rfm_age
from services.ports import Committer
from projections.store import ProfileView, ProjectionStore

UUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
RFM_TTL_SECONDS = 5.0
MAX_PAGE = 1000  # profiles or events in one page


# Queries -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GetProfile:
    workspace_id: str
    identifier: str
    as_of: datetime | None = None


@dataclass(frozen=True)
class ListProfiles:
    """Profiles by profile id, after `after`; with `traits`, only those whose traits match (any of the raw
    JSON values given for each)."""

    workspace_id: str
    traits: dict[str, list[str]] = field(default_factory=dict)
    limit: int = 50
    after: str | None = None


@dataclass(frozen=True)
class GetTimeline:
    workspace_id: str
    identifier: str
    limit: int = 50
    before: tuple[datetime, str] | None = None  # (timestamp, event id) of the last event of the page before
    types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    as_of: datetime | None = None


@dataclass(frozen=True)
class GetConsent:
    """A profile's consent per purpose and its decisions, newest first (now, or as known at `as_of`)."""

    workspace_id: str
    identifier: str
    as_of: datetime | None = None
    limit: int = 100


@dataclass(frozen=True)
class GetMerges:
    workspace_id: str
    identifier: str


# Commands ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitProfile:
    workspace_id: str
    identifier: str  # the profile: type:value or its id
    identifiers: tuple[str, ...]  # to move to the new profile
    reason: str = ""


@dataclass(frozen=True)
class SetRules:
    workspace_id: str
    rules: IdentityRules


# Results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfilePage:
    profiles: list[dict[str, Any]]
    next_after: str | None


@dataclass(frozen=True)
class Timeline:
    profile_id: str
    events: list[dict[str, Any]]
    next_before: tuple[datetime, str] | None


@dataclass(frozen=True)
class Split:
    profile_id: str
    new_profile_id: str
    identifiers: list[str]


def _grouped(identifiers: list[str], types: list[str]) -> dict[str, list[str]]:
    """{type: values} in the workspace's type order, only the types the profile has."""
    grouped: dict[str, list[str]] = {}
    for ident in identifiers:
        kind, _, value = ident.partition(":")
        grouped.setdefault(kind, []).append(value)
    order = {kind: i for i, kind in enumerate(types)}
    return {kind: sorted(grouped[kind]) for kind in sorted(grouped, key=lambda k: (order.get(k, len(order)), k))}


def _event(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": r["id"], "message_id": r["message_id"], "type": r["type"],
        "event": r["event"] or None, "name": r["name"] or None, "source": r["source"] or None,
        "anchor": r["anchor"], "timestamp": shown(r["timestamp"]), "received_at": shown(r["received_at"]),
        "position": r["position"], "user_id": r["user_id"] or None, "anonymous_id": r["anonymous_id"] or None,
        "properties": orjson.loads(r["properties"]), "traits": orjson.loads(r["traits"]),
        "context": orjson.loads(r["context"]),
    }  # fmt: skip


class ProfileService:
    """`extras(workspace, profile id)` adds fields to a current profile (its tags, from the tag service)."""

    def __init__(
        self,
        app: CustomerData,
        store: ProjectionStore,
        committer: Committer,
        extras: Callable[[str, str], dict[str, Any]] | None = None,
    ) -> None:
        self.app, self.store, self.committer, self.extras = app, store, committer, extras
        self._rfm: dict[str, tuple[float, dict[str, Any]]] = {}

    # Identifiers --------------------------------------------------------------------------------

    def rules(self, workspace_id: str) -> tuple[int, IdentityRules]:
        return self.app.rules_version(workspace_id), self.app.rules_for(workspace_id)

    def _typed(self, workspace_id: str, identifier: str) -> tuple[str, str]:
        """(type, normalised value) of an identifier; type `profile_id` for bare ids."""
        return parse_identifier(identifier, self.app.rules_for(workspace_id).types)

    def resolve(self, workspace_id: str, identifier: str, as_of: datetime | None = None) -> str:
        """The profile id for `type:value` or a profile id (a merged-away one resolves to its survivor)."""
        kind, value = self._typed(workspace_id, identifier)
        if kind == "profile_id":
            if not UUID_TEXT.match(value):
                types = ", ".join(self.app.rules_for(workspace_id).types)
                raise Invalid(f"{identifier!r} is neither a profile id nor type:value with a type of {types}",
                              code="bad_request")  # fmt: skip
            profile_id = str(UUID(value))
            if as_of is None and self.store.read_profile(workspace_id, profile_id) is None:
                profile_id = self.store.merged_into(workspace_id, profile_id) or profile_id
            return profile_id
        profile_id = self.store.owner_of(workspace_id, f"{kind}:{value}", as_of)
        if profile_id is None:
            raise NotFound(f"no profile has the identifier {identifier!r}" + (" at that time" if as_of else ""))
        return profile_id

    def _load(self, workspace_id: str, identifier: str, as_of: datetime | None = None) -> ProfileView:
        kind, value = self._typed(workspace_id, identifier)
        if as_of is None and kind != "profile_id":
            found = self.store.read_profile_of(workspace_id, f"{kind}:{value}")
            if found is None:
                raise NotFound(f"no profile has the identifier {identifier!r}")
            return found
        profile_id = self.resolve(workspace_id, identifier, as_of)
        view: ProfileView | None
        if as_of is None:
            view = self.store.read_profile(workspace_id, profile_id)
        else:
            sources = self.app.rules_for(workspace_id).trait_sources
            view = self.store.compute_profiles(workspace_id, [profile_id], as_of, sources)[profile_id]
            view = view if view.alive else None
        if view is None:
            raise NotFound(f"no profile has the identifier {identifier!r}" + (" at that time" if as_of else ""))
        return view

    # Queries ------------------------------------------------------------------------------------

    def profile(self, q: GetProfile) -> dict[str, Any]:
        view = self._load(q.workspace_id, q.identifier, q.as_of)
        result = self._document(q.workspace_id, view, q.as_of, with_changes=True)
        if self.extras is not None and q.as_of is None:
            extra = self.extras(q.workspace_id, view.profile_id)
            result["computed_traits"].update(extra.pop("computed_traits", {}))  # e.g. the prediction scores
            result.update(extra)
        return result

    def profiles(self, q: ListProfiles) -> ProfilePage:
        views = self.store.find_profiles(q.workspace_id, q.traits, q.limit + 1, q.after)
        page = views[: q.limit]
        return ProfilePage(
            [self._document(q.workspace_id, v, None, with_changes=False) for v in page],
            page[-1].profile_id if len(views) > q.limit else None,
        )

    def timeline(self, q: GetTimeline) -> Timeline:
        view = self._load(q.workspace_id, q.identifier, q.as_of)
        rows = self.store.timeline(
            q.workspace_id, view.identifiers + [own_identifier(view.profile_id)], q.limit + 1, q.before,
            list(q.types), q.since, q.until, q.as_of,
        )  # fmt: skip
        page = rows[: q.limit]
        last = (page[-1]["timestamp"], page[-1]["id"]) if len(rows) > q.limit else None
        return Timeline(view.profile_id, [_event(r) for r in page], last)

    def consent(self, q: GetConsent) -> dict[str, Any]:
        view = self._load(q.workspace_id, q.identifier, q.as_of)
        defaults = defaults_as_of(self.app.definitions, q.workspace_id, q.as_of)
        history = self.store.consent_history(
            q.workspace_id, view.identifiers + [own_identifier(view.profile_id)], q.limit, q.as_of
        )
        result: dict[str, Any] = {
            "profile_id": view.profile_id, "consent": document(view.consent, defaults),
            "defaults": {"version": defaults.version, "defaults": defaults.to_json()},
            "history": [c.to_json() for c in history],
        }  # fmt: skip
        if q.as_of is not None:
            result["as_of"] = shown(q.as_of)
        return result

    def merges(self, q: GetMerges) -> dict[str, Any]:
        """The profile's own identity events, and those of every profile merged into it."""
        profile_id = self.resolve(q.workspace_id, q.identifier)
        changes, pending, seen = [], [profile_id], set()
        while pending:
            current = pending.pop()
            seen.add(current)
            for change in self.store.changes(q.workspace_id, current):
                changes.append(change)
                if change["change"] == "absorbed" and change["other_profile_id"] not in seen:
                    pending.append(change["other_profile_id"])
        changes.sort(key=lambda c: (c["position"], c["profile_id"], c["change"]))
        return {"profile_id": profile_id, "changes": changes}

    # Commands -----------------------------------------------------------------------------------

    async def split(self, c: SplitProfile) -> Split:
        profile_id = self.resolve(c.workspace_id, c.identifier)
        app = self.app
        try:
            idents = [normalise_identifier(i) for i in c.identifiers]
            new_id = await self.committer.run(lambda: app.split(c.workspace_id, profile_id, idents, c.reason))
        except IdentityError as exc:
            raise Conflict(str(exc)) from None
        return Split(profile_id, new_id, idents)

    async def set_rules(self, c: SetRules) -> int:
        app = self.app
        return await self.committer.run(lambda: app.set_rules(c.workspace_id, c.rules))

    # The profile document -----------------------------------------------------------------------

    def _boundaries(self, workspace_id: str) -> dict[str, Any]:
        cached = self._rfm.get(workspace_id)
        if cached is None or time.monotonic() - cached[0] > RFM_TTL_SECONDS:
            cached = (time.monotonic(), self.store.rfm_boundaries(workspace_id))
            self._rfm[workspace_id] = cached
        return cached[1]

    def _document(self, workspace_id: str, view: ProfileView, as_of: datetime | None, with_changes: bool) -> dict[str, Any]:
        rules = self.app.rules_for(workspace_id)
        now = as_of or datetime.now(timezone.utc)
        computed = view.computed()
        computed["rfm"] = rfm(rfm_age(view.last_order_at), view.orders_count, view.revenue, self._boundaries(workspace_id))
        computed["lifecycle_stage"] = lifecycle_stage(
            {i.partition(":")[0] for i in view.identifiers}, view.orders_count, view.last_order_at,
            view.track_counts, now, rules.lifecycle,
        )  # fmt: skip
        result: dict[str, Any] = {
            "profile_id": view.profile_id, "identifiers": _grouped(view.identifiers, rules.types),
            "traits": view.traits, "trait_sources": view.trait_sources, "computed_traits": computed,
            "first_seen": computed["first_seen"], "last_seen": computed["last_seen"],
            "event_count": view.event_count, "counts": computed["counts"], "position": view.position,
            "consent": document(view.consent, defaults_as_of(self.app.definitions, workspace_id, as_of)),
        }  # fmt: skip
        if as_of is not None:
            result["as_of"] = shown(as_of)
        if with_changes:
            changes = view.changes
            result["merged_profiles"] = sorted(
                {c["other_profile_id"] for c in changes if c["change"] == "absorbed" and c["profile_id"] == view.profile_id}
            )
            result["merge_history"] = [c for c in changes if c["change"] != "linked"]
        return result
