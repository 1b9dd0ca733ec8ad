"""Consent per person and purpose, from `Consent Changed` events, and the workspace's defaults.

A `Consent Changed` track event (domain/crm.py) says that a person granted (`granted: true`) or withdrew
(`false`) consent for one purpose: `marketing`, `analytics`, `personalisation` or a purpose of the
workspace's own. A profile's consent for a purpose is its latest decision by event time (then log
position), over every identifier the profile holds: merges and splits carry consent along as they carry
events, and a decision delivered late does not overrule a later one. A decision is taken at its event time,
or when it was received if that is earlier (a client clock running ahead cannot date it after the decisions
that follow). A purpose the person never decided on takes the workspace's default (`Defaults`), a setting
that is itself versioned in the log.

Consent gates who may be *used* for a purpose (members of tags, segments and exports that declare it);
it never changes what is recorded or counted: KPIs read every event.

Pure but for the two commands at the end, which the writer thread runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping

from domain.crm import CONSENT_CHANGED, PURPOSE, PURPOSE_HELP, purpose_key
from domain.errors import Invalid
from domain.tags import RuleDefinition
from domain.times import shown

GRANTED, DENIED = "granted", "denied"
OTHER = "*"  # the default of every purpose the defaults do not name
# What a workspace holds until it sets its own: opt-in for everything that reaches out to or singles out a
# person (GDPR art. 6(1)(a), ePrivacy art. 5(3) and 13), granted for analytics, which the platform uses for
# aggregate audience measurement; a workspace whose legal basis for analytics is consent sets it to denied.
BUILT_IN: dict[str, str] = {"analytics": GRANTED, "marketing": DENIED, "personalisation": DENIED, OTHER: DENIED}
KIND, SLUG = "consent", "defaults"  # recorded as a definition of this kind (domain/tags.RuleDefinition)

__all__ = [
    "BUILT_IN", "CONSENT_CHANGED", "Change", "ConsentError", "Defaults", "DENIED", "GRANTED", "OTHER", "change_of",
    "defaults_as_of", "document", "latest", "parse_defaults", "save_defaults",
]  # fmt: skip


class ConsentError(Invalid):
    """Consent defaults that cannot be stored; `errors` lists each bad field."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("invalid consent defaults; nothing changed", code="invalid_consent_defaults", errors=errors)


@dataclass(frozen=True)
class Change:
    """One Consent Changed event of a profile."""

    purpose: str
    granted: bool
    timestamp: datetime  # when it was taken (event time, at most when received): which decision is the latest
    position: int  # breaks ties between decisions at the same time
    event_id: str
    channel: str = ""
    received_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"purpose": self.purpose, "granted": self.granted, "at": shown(self.timestamp),
                "received_at": shown(self.received_at), "event_id": self.event_id, "position": self.position,
                "channel": self.channel or None}  # fmt: skip


def change_of(
    purpose: Any, granted: Any, timestamp: datetime, position: int, event_id: str, channel: Any = "",
    received_at: datetime | None = None,
) -> Change | None:  # fmt: skip
    """A change from stored values (None if they are not one: events are validated at ingest, but the log is
    older than any check)."""
    purpose = purpose_key(purpose)
    if not isinstance(purpose, str) or not PURPOSE.match(purpose) or not isinstance(granted, bool):
        return None
    return Change(purpose, granted, timestamp, position, event_id, channel if isinstance(channel, str) else "",
                  received_at)  # fmt: skip


def latest(changes: Iterable[Change]) -> dict[str, Change]:
    """Per purpose, the decision in force: the latest by event time, then log position."""
    out: dict[str, Change] = {}
    for c in changes:
        held = out.get(c.purpose)
        if held is None or (c.timestamp, c.position) > (held.timestamp, held.position):
            out[c.purpose] = c
    return out


@dataclass(frozen=True)
class Defaults:
    """A workspace's consent defaults: per purpose granted or denied when the person never decided."""

    by_purpose: Mapping[str, str]  # always names OTHER
    version: int = 0  # 0: the built-in defaults, never set

    def granted(self, purpose: str) -> bool:
        return self.by_purpose.get(purpose, self.by_purpose[OTHER]) == GRANTED

    def to_json(self) -> dict[str, str]:
        return dict(sorted(self.by_purpose.items()))


def parse_defaults(data: Any, version: int = 0) -> Defaults:
    """Defaults from a body or the log: {purpose: "granted" | "denied"}, `*` for every other purpose (denied when
    not given: consent is opt-in). ConsentError names each bad entry."""
    if not isinstance(data, dict) or not data:
        raise ConsentError([{"field": "defaults", "reason": 'give {purpose: "granted" or "denied"}, e.g. '
                             '{"analytics": "granted", "marketing": "denied"}'}])  # fmt: skip
    errors, out = [], {}
    for key, value in data.items():
        purpose = key if key == OTHER else purpose_key(key)
        if purpose != OTHER and not (isinstance(purpose, str) and PURPOSE.match(purpose)):
            errors.append({"field": f"defaults.{key}", "reason": f"not a purpose; {PURPOSE_HELP}, or * for all others"})
        elif value not in (GRANTED, DENIED):
            errors.append({"field": f"defaults.{key}", "reason": f'{value!r}: write "granted" or "denied"'})
        else:
            out[purpose] = value
    if errors:
        raise ConsentError(errors)
    return Defaults({OTHER: DENIED, **out}, version)


def document(explicit: Mapping[str, Mapping[str, Any]], defaults: Defaults) -> dict[str, dict[str, Any]]:
    """The profile's `consent`: every purpose the defaults name or the person decided on (`explicit`: purpose →
    `Change.to_json()`), with where its state comes from: `event`, the person's latest decision, or `default`."""
    out: dict[str, dict[str, Any]] = {}
    for purpose in sorted({p for p in defaults.by_purpose if p != OTHER} | set(explicit)):
        c = explicit.get(purpose)
        if c is None:
            out[purpose] = {"granted": defaults.granted(purpose), "source": "default", "at": None, "event_id": None}
        else:
            out[purpose] = {"granted": c["granted"], "source": "event", "at": c["at"], "event_id": c["event_id"]}
    return out


# The defaults in the log: a definition of kind `consent`, so they reach every processor as a `definition`
# message (tags re-evaluate the members of purposes whose default changed) and a rebuild replays them.


def defaults_as_of(definitions: Any, workspace_id: str, as_of: datetime | None = None) -> Defaults:
    """The defaults in force now (or at `as_of`): the latest version recorded by then, else the built-in ones."""
    current = definitions.get(workspace_id, KIND, SLUG)
    if current is None:
        return Defaults(BUILT_IN)
    if as_of is None:
        return parse_defaults(current.rule["defaults"], current.rule_version)
    versions = [v for v in definitions.versions.get(str(current.id), []) if v[0] <= as_of]
    if not versions:
        return Defaults(BUILT_IN)
    _, version, rule = versions[-1]
    return parse_defaults(rule["defaults"], version)


def save_defaults(app: Any, workspace_id: str, defaults: Defaults) -> Defaults:
    """Record new defaults (a new version; nothing when they say what the current ones say); on the writer."""
    rule = {"defaults": defaults.to_json()}
    current = app.definitions.get(workspace_id, KIND, SLUG)
    if current is None:
        aggregate = RuleDefinition(workspace_id, KIND, SLUG, "consent defaults", "", rule)
    elif current.rule == rule:
        return parse_defaults(rule["defaults"], current.rule_version)
    else:
        aggregate = current
        aggregate.change(workspace_id, KIND, SLUG, current.rule_version + 1, current.name, "", rule)
    try:
        app.save(aggregate)
    except BaseException:
        app.load()  # the aggregate was changed in memory; the log is what counts
        raise
    app.definitions.saved(aggregate, aggregate.modified_on)
    return parse_defaults(rule["defaults"], aggregate.rule_version)
