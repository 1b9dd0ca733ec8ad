"""Identity: which identifiers an event carries, and which profile they resolve to.

An identifier is written `type:value` (`user_id:42`, `anonymous_id:a1`,
`email:ann@example.com`). The first rule: events sharing any identifier belong
to one profile, and `alias` links `previousId` to `userId`. When one event
carries identifiers of two profiles they merge and the oldest profile survives.
The rules live in `IdentityRules` so that later rules (uniqueness, caps, blocked
values) slot in without touching the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

IDENTIFIER_TYPES = ("user_id", "anonymous_id", "email")
# Values SDKs and forms send when they have no real identity; they never link anyone.
BLOCKED_VALUES = frozenset({"", "null", "none", "undefined", "nil", "0", "anonymous"})


def identifier(kind: str, value: str) -> str:
    return f"{kind}:{value}"


def split_identifier(text: str) -> tuple[str, str]:
    """`user_id:42` → (`user_id`, `42`); a bare profile id has no known type prefix."""
    kind, sep, value = text.partition(":")
    if sep and kind in IDENTIFIER_TYPES:
        return kind, value
    return "profile_id", text


def normalise_email(value: str) -> str:
    return value.strip().lower()


@dataclass(frozen=True)
class IdentityRules:
    """How identifiers are read off an event. Workspace-specific rules come later."""

    blocked_values: frozenset[str] = BLOCKED_VALUES

    def usable(self, value: Any) -> bool:
        return isinstance(value, str) and value.strip().lower() not in self.blocked_values

    def identifiers_of(self, call: dict[str, Any]) -> list[str]:
        """Identifiers an event carries, in a stable order (user id, anonymous id, email)."""
        found: list[str] = []
        if self.usable(call.get("userId")):
            found.append(identifier("user_id", call["userId"]))
        if self.usable(call.get("anonymousId")):
            found.append(identifier("anonymous_id", call["anonymousId"]))
        email = _email_of(call)
        if self.usable(email):
            found.append(identifier("email", normalise_email(email)))
        return found


def _email_of(call: dict[str, Any]) -> Any:
    traits = call.get("traits")
    if isinstance(traits, dict) and traits.get("email"):
        return traits["email"]
    context_traits = (call.get("context") or {}).get("traits")
    if isinstance(context_traits, dict):
        return context_traits.get("email")
    return None


@dataclass
class Resolution:
    """What the write model must record for one event."""

    profile_id: str | None  # the surviving profile; None → create one with `new_identifiers`
    new_identifiers: list[str]
    absorbed: list[str] = field(default_factory=list)  # canonical profiles merged into the survivor
    reason: str = ""


@dataclass
class IdentityGraph:
    """The current identifier → profile mapping of one process, rebuilt from the log.

    Fragments: every profile ever created keeps its id; a merge points the absorbed
    profile (and its own fragments) at the survivor. `canonical` is kept flat.
    """

    owner: dict[tuple[str, str], str] = field(default_factory=dict)  # (workspace, identifier) → fragment
    canonical: dict[str, str] = field(default_factory=dict)  # fragment → surviving profile
    members: dict[str, set[str]] = field(default_factory=dict)  # surviving profile → fragments
    identifiers: dict[str, list[str]] = field(default_factory=dict)  # surviving profile → identifiers
    age: dict[str, tuple[float, str]] = field(default_factory=dict)  # profile → (created, id) ordering

    def profile_of(self, workspace_id: str, ident: str) -> str | None:
        fragment = self.owner.get((workspace_id, ident))
        return None if fragment is None else self.canonical[fragment]

    def resolve(self, workspace_id: str, idents: Iterable[str]) -> Resolution:
        idents = list(dict.fromkeys(idents))
        profiles: list[str] = []
        unknown: list[str] = []
        for ident in idents:
            profile = self.profile_of(workspace_id, ident)
            if profile is None:
                unknown.append(ident)
            elif profile not in profiles:
                profiles.append(profile)
        if not profiles:
            return Resolution(profile_id=None, new_identifiers=unknown)
        survivor = min(profiles, key=lambda p: self.age[p])
        absorbed = [p for p in profiles if p != survivor]
        reason = ""
        if absorbed:
            shared = [i for i in idents if self.profile_of(workspace_id, i) in absorbed]
            reason = f"one event carried {', '.join(idents)}; {', '.join(shared)} belonged to another profile"
        return Resolution(profile_id=survivor, new_identifiers=unknown, absorbed=absorbed, reason=reason)

    # Mutations, applied as the write model's events are recorded or replayed.

    def created(self, workspace_id: str, profile_id: str, idents: list[str], created: float) -> None:
        self.canonical[profile_id] = profile_id
        self.members[profile_id] = {profile_id}
        self.identifiers[profile_id] = []
        self.age[profile_id] = (created, profile_id)
        self.linked(workspace_id, profile_id, idents)

    def linked(self, workspace_id: str, profile_id: str, idents: list[str]) -> None:
        for ident in idents:
            self.owner.setdefault((workspace_id, ident), profile_id)
        self.identifiers[self.canonical[profile_id]].extend(idents)

    def merged(self, survivor: str, absorbed: str) -> None:
        moved = self.members.pop(absorbed)
        for fragment in moved:
            self.canonical[fragment] = survivor
        self.members[survivor] |= moved
        self.identifiers[survivor].extend(self.identifiers.pop(absorbed))
