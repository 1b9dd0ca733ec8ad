"""Identity: which identifiers an event carries, and which profile they resolve to.

An identifier is written `type:value` (`user_id:42`, `anonymous_id:a1`,
`email:ann@example.com`, `phone:+4915123456789`, `crm_id:C-7`). Each identifier
is owned by exactly one profile. An event carrying two or more identifiers links
them, within the workspace's rules: a type that is unique per profile (user_id by
default) never gets a second value, a profile holds at most `caps[type]` values
of a type, and blocked values link nothing. What the rules forbid is refused and
recorded, never merged.

Attribution: an event belongs to the owner of its *anchor*, its highest-priority
identifier. Merges and splits move identifiers between profiles, and events
follow their anchors, so history always moves with identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.identifiers import check_email, clean_identifier, normalise_text

BUILTIN_TYPES = ("user_id", "email", "phone", "anonymous_id")
DEFAULT_BLOCKED = (
    "", "null", "none", "undefined", "nil", "0", "-1", "anonymous", "unknown", "n/a", "test", "guest",
    "test@test.com", "test@example.com", "email@example.com", "noreply@example.com",
)  # fmt: skip


def identifier(kind: str, value: str) -> str:
    return f"{kind}:{value}"


def own_identifier(profile_id: str) -> str:
    """Every profile owns its own id: the anchor of events that carry no usable identifier."""
    return identifier("profile_id", profile_id)


def split_identifier(text: str, types: Iterable[str] = BUILTIN_TYPES) -> tuple[str, str]:
    """`user_id:42` → (`user_id`, `42`); anything without a known type prefix is a profile id."""
    kind, sep, value = text.partition(":")
    if sep and (kind in types or kind.endswith("_id")):
        return kind, value
    return "profile_id", text


def normalise_email(value: str) -> str:
    """NFKC, trimmed and lower-cased (domain/identifiers.py); the shape is not checked here."""
    return normalise_text(value).lower()


def normalise_phone(value: str) -> str | None:
    """E.164 (`+4915123456789`), or None when the value is not a valid international number."""
    try:
        number = phonenumbers.parse(value.strip(), None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class LifecycleThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repeat_orders: int = Field(2, ge=2, description="orders that make a repeat customer")
    at_risk_days: int = Field(60, ge=1, description="days since the last order that make a customer at risk")
    churned_days: int = Field(180, ge=1, description="days since the last order that make a customer churned")


class IdentityRules(BaseModel):
    """A workspace's identity and trait rules. Versioned: every change is an event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unique_types: list[str] = Field(default_factory=lambda: ["user_id"])
    caps: dict[str, int] = Field(
        default_factory=lambda: {"user_id": 1, "email": 5, "phone": 5, "anonymous_id": 100}
    )
    default_cap: int = Field(5, ge=1, description="cap for declared external id types without their own")
    blocked_values: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCKED))
    external_id_types: list[str] = Field(default_factory=list)
    shared_value_limit: int | None = Field(
        None, ge=1, description="opt-in: a value already on this many profiles links no more"
    )
    priority: list[str] = Field(
        default_factory=lambda: ["user_id", "email", "phone", "anonymous_id"],
        description="identifier types from strongest to weakest; declared external ids rank after user_id",
    )
    trait_sources: dict[str, list[str]] = Field(
        default_factory=dict,
        description="trait → sources from most to least trusted (e.g. plan: [crm, web]); '*' applies to all traits",
    )
    lifecycle: LifecycleThresholds = Field(default_factory=LifecycleThresholds)

    @field_validator("external_id_types")
    @classmethod
    def _external_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if name in (*BUILTIN_TYPES, "profile_id") or not name.replace("_", "").isalnum() or not name.islower():
                raise ValueError(f"{name!r}: external id types are lower_snake_case and not one of {BUILTIN_TYPES}")
        return value

    @field_validator("caps")
    @classmethod
    def _positive_caps(cls, value: dict[str, int]) -> dict[str, int]:
        for kind, cap in value.items():
            if cap < 1:
                raise ValueError(f"caps.{kind} must be at least 1")
        return value

    # Reading identifiers off events ---------------------------------------------------------

    @property
    def types(self) -> list[str]:
        return [*BUILTIN_TYPES, *self.external_id_types]

    def cap(self, kind: str) -> int:
        return self.caps.get(kind, self.default_cap)

    def rank(self, kind: str) -> int:
        """Position in the priority order; undeclared external ids rank as a block right after user_id."""
        ranks, unknown = self._ranks
        return ranks.get(kind, unknown)

    @cached_property
    def _ranks(self) -> tuple[dict[str, int], int]:  # the rules are frozen: computed once per rules object
        order = list(self.priority)
        externals = [e for e in self.external_id_types if e not in order]
        at = order.index("user_id") + 1 if "user_id" in order else 0
        order[at:at] = externals
        ranks: dict[str, int] = {}
        for i, kind in enumerate(order):
            ranks.setdefault(kind, i)  # the first place a type appears, as list.index
        return ranks, len(order)

    def usable(self, value: Any) -> bool:
        """A string or number that is clean (domain/identifiers.py), not empty and not blocked."""
        return self.clean(value) is not None

    def clean(self, value: Any) -> str | None:
        """`value` as an identifier value (NFKC, trimmed), or None when it may not be one.

        Not one: a non-string, a value with a control, invisible, bidirectional or
        unassigned character (ingest already refuses those in the top-level ids; in
        traits they are simply not used), an empty value, a blocked value.
        """
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            return None
        try:
            text = clean_identifier(value)
        except ValueError:
            return None
        return text if text and text.lower() not in self._blocked else None

    @cached_property
    def _blocked(self) -> frozenset[str]:
        return frozenset(normalise_text(v).lower() for v in self.blocked_values)

    def identifiers_of(self, call: dict[str, Any]) -> list[str]:
        """Identifiers an event carries, strongest first (see `priority`)."""
        found: list[str] = []

        def add(kind: str, value: Any) -> None:
            text = self.clean(value)
            if text is None:
                return
            if kind == "email":
                try:
                    text = check_email(text).lower()
                except ValueError:  # `not an email`, `ann@localhost`: a trait, but no identifier
                    return
            elif kind == "phone":
                text = normalise_phone(text) or ""
                if not text:
                    return
            ident = identifier(kind, text)
            if ident not in found:
                found.append(ident)

        # A group call's traits describe the company, not the person: they identify no one.
        traits = _dict(call.get("traits")) if call.get("type") != "group" else {}
        context = _dict(call.get("context"))
        context_traits = _dict(context.get("traits"))
        add("user_id", call.get("userId"))
        add("anonymous_id", call.get("anonymousId"))
        add("email", traits.get("email") or context_traits.get("email"))
        add("phone", traits.get("phone") or context_traits.get("phone"))
        for kind in self.external_id_types:
            add(kind, traits.get(kind) or context_traits.get(kind))
        for external in context.get("externalIds") or []:
            if isinstance(external, dict) and external.get("type") in self.external_id_types:
                add(external["type"], external.get("id"))
        return sorted(found, key=lambda i: (self.rank(i.partition(":")[0]), found.index(i)))


def normalise_identifier(text: str) -> str:
    """`Email:Ann@X.com`-style input as stored: type lower-cased, values NFKC and trimmed, emails
    lower-cased, phones E.164. Never refuses: a value ingest would not take is simply found nowhere."""
    kind, _, value = text.partition(":")
    kind = normalise_text(kind).lower()
    if kind == "email":
        value = normalise_email(value)
    elif kind == "phone":
        value = normalise_phone(value) or normalise_text(value)
    else:
        value = normalise_text(value)
    return identifier(kind, value)


def parse_identifier(text: str, types: Iterable[str] = BUILTIN_TYPES) -> tuple[str, str]:
    """(type, value as stored) of an identifier a user names: `email: Ann@X.com ` → (`email`, `ann@x.com`),
    `user_id:42` → (`user_id`, `42`); a bare profile id, or anything without a known type prefix
    (`split_identifier`), → (`profile_id`, text). The one way the read side and commands turn what a user
    wrote into what the identity projections hold; never refuses (see `normalise_identifier`)."""
    kind, value = split_identifier(text, types)
    if kind == "profile_id":
        return kind, value
    kind, _, value = normalise_identifier(identifier(kind, value)).partition(":")
    return kind, value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass
class Refusal:
    """A link the rules did not allow, and why."""

    reason: str
    identifiers: list[str]
    profile_id: str | None = None  # the profile that was not merged, if any


@dataclass
class Resolution:
    """What the write model must record for one event."""

    anchor: str | None  # the event's strongest identifier; the event belongs to its owner
    profile_id: str | None  # the profile the event lands on; None → create one with `new_identifiers`
    new_identifiers: list[str]
    absorbed: list[str] = field(default_factory=list)  # profiles merged into `profile_id`
    refusals: list[Refusal] = field(default_factory=list)
    reason: str = ""


@dataclass
class IdentityGraph:
    """Current ownership of identifiers, per workspace, rebuilt from the log at start."""

    owner: dict[tuple[str, str], str] = field(default_factory=dict)  # (workspace, identifier) → profile
    identifiers: dict[str, list[str]] = field(default_factory=dict)  # live profile → its identifiers
    age: dict[str, tuple[float, str]] = field(default_factory=dict)  # profile → (created, id): oldest wins
    # (workspace, value) → other profiles that carried an owned value and were refused it
    refused_with: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def profile_of(self, workspace_id: str, ident: str) -> str | None:
        return self.owner.get((workspace_id, ident))

    def resolve(self, workspace_id: str, idents: list[str], rules: IdentityRules) -> Resolution:
        """Decide, within `rules`, which profile an event with `idents` (strongest first) lands on."""
        if not idents:
            return Resolution(anchor=None, profile_id=None, new_identifiers=[])
        refusals: list[Refusal] = []
        # A value already seen on `shared_value_limit` profiles links nothing: it stays with its owner.
        shared = [i for i in idents if self._shared(workspace_id, i, rules)]
        linking = [i for i in idents if i not in shared] or idents[:1]
        group: list[str] = []  # existing profiles that become one
        new: list[str] = []  # unknown identifiers that join them
        held: list[str] = []  # every identifier of the group so far
        for ident in linking:  # strongest first: the anchor always lands
            profile = self.profile_of(workspace_id, ident)
            if profile is None:
                conflict = self._conflict(held, [ident], rules)
                if conflict:
                    refusals.append(Refusal(conflict, [ident]))
                else:
                    new.append(ident)
                    held.append(ident)
            elif profile not in group:
                conflict = self._conflict(held, self.identifiers[profile], rules) if held else ""
                if conflict:
                    refusals.append(Refusal(conflict, [ident], profile))
                else:
                    group.append(profile)
                    held += self.identifiers[profile]
        for ident in shared:
            owner = self.profile_of(workspace_id, ident)
            if owner not in group and ident not in linking:
                refusals.append(Refusal(self._shared(workspace_id, ident, rules), [ident], owner))
        anchor = linking[0]
        if not group:
            return Resolution(anchor=anchor, profile_id=None, new_identifiers=new, refusals=refusals)
        survivor = min(group, key=lambda p: self.age[p])
        absorbed = [p for p in group if p != survivor]
        reason = f"one event carried {', '.join(idents)}" if absorbed else ""
        return Resolution(anchor, survivor, new, absorbed, refusals, reason)

    @staticmethod
    def _conflict(held: list[str], incoming: list[str], rules: IdentityRules) -> str:
        """Why `incoming` may not join a profile holding `held` (empty: it may).

        Only values the incoming identifiers add are judged, so a profile already over a
        since-lowered cap keeps taking identifiers of other types.
        """
        have: dict[str, set[str]] = {}
        for ident in held:
            kind, _, value = ident.partition(":")
            have.setdefault(kind, set()).add(value)
        adding: dict[str, set[str]] = {}
        for ident in incoming:
            kind, _, value = ident.partition(":")
            if value not in have.get(kind, set()):
                adding.setdefault(kind, set()).add(value)
        for kind, values in adding.items():
            together = have.get(kind, set()) | values
            if kind in rules.unique_types and len(together) > 1:
                return f"{kind} is unique per profile: {', '.join(sorted(together))} would share one"
            if len(together) > rules.cap(kind):
                return f"a profile holds at most {rules.cap(kind)} {kind} values"
        return ""

    def _shared(self, workspace_id: str, ident: str, rules: IdentityRules) -> str:
        limit = rules.shared_value_limit
        if limit is not None and self.profile_of(workspace_id, ident) and self.carriers(workspace_id, ident) >= limit:
            return f"{ident} was already seen on {limit} profiles (shared_value_limit)"
        return ""

    # Mutations, applied as the write model's events are recorded or replayed ------------------

    def created(self, workspace_id: str, profile_id: str, idents: list[str], created: float) -> None:
        self.identifiers[profile_id] = []
        self.age[profile_id] = (created, profile_id)
        self.linked(workspace_id, profile_id, idents)

    def linked(self, workspace_id: str, profile_id: str, idents: list[str]) -> None:
        for ident in idents:
            self.owner[(workspace_id, ident)] = profile_id
        self.identifiers[profile_id].extend(idents)

    def refused(self, workspace_id: str, profile_id: str, idents: list[str]) -> None:
        """`profile_id` carried `idents` but was refused them: they are shared by one more profile."""
        for ident in idents:
            if self.owner.get((workspace_id, ident)) not in (None, profile_id):
                self.refused_with.setdefault((workspace_id, ident), set()).add(profile_id)

    def carriers(self, workspace_id: str, ident: str) -> int:
        """How many profiles were seen with `ident`: its owner and those refused it."""
        owned = 1 if (workspace_id, ident) in self.owner else 0
        return owned + len(self.refused_with.get((workspace_id, ident), ()))

    def merged(self, workspace_id: str, survivor: str, absorbed: str) -> None:
        moved = self.identifiers.pop(absorbed)
        self.age.pop(absorbed, None)
        for ident in moved:
            self.owner[(workspace_id, ident)] = survivor
        self.identifiers[survivor].extend(moved)

    def split(self, workspace_id: str, source: str, new_profile: str, idents: list[str], created: float) -> None:
        self.identifiers[source] = [i for i in self.identifiers[source] if i not in idents]
        self.identifiers[new_profile] = []
        self.age[new_profile] = (created, new_profile)
        for ident in idents:
            self.owner[(workspace_id, ident)] = new_profile
        self.identifiers[new_profile].extend(idents)
