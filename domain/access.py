"""Keys and what they open: kinds and scopes, expiry and revocation, followed from the log.

Kinds (docs/access.md):
- `write`: ingest only. Segment and RudderStack treat it as public (it ships inside web
  pages and apps), so it opens nothing else.
- `read` with scopes: `profiles` (profiles, their identifiers, traits and tags), `events`
  (timelines), `kpis` (KPIs, funnels, cohorts), `segments` (tags and segments, members,
  exports), `sql` (analyst SQL).
- `admin`: everything of its workspace but ingest: identity rules, splits, tags, segments,
  mappings, settings, dead letters, regulations, keys; and every read scope.

Keys are stored as SHA-256 hashes in `Workspace` events (domain/model.py), never in clear.
A key made by an earlier version (`KeyIssued`) is a write key or a read key of every scope.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from domain.model import Workspace

KINDS = ("write", "read", "admin")
READ_SCOPES = ("profiles", "events", "kpis", "segments", "sql")
PREFIXES = {"write": "wk_", "read": "rk_", "admin": "ak_"}
# Where a key came from: set at start from CDP_* variables or generated into the data dir ("start"), or made
# through the API. A start key no longer configured is revoked at the next start, never silently kept.
ORIGINS = ("start", "api")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(kind: str) -> str:
    return PREFIXES[kind] + secrets.token_urlsafe(24)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


def legacy_key_id(key_hash: str) -> str:
    """The id of a key issued before keys had ids: stable, from its hash."""
    return "key_" + key_hash[:12]


def needs(requirement: str) -> tuple[str, str]:
    """("read", "kpis") from "read:kpis"; ("admin", "") from "admin"."""
    kind, _, scope = requirement.partition(":")
    if kind not in KINDS or (scope and scope not in READ_SCOPES) or (scope and kind != "read"):
        raise ValueError(f"{requirement!r} is not a requirement: write, admin, read or read:<{'|'.join(READ_SCOPES)}>")
    return kind, scope


@dataclass(frozen=True)
class KeyGrant:
    """What one key opens."""

    workspace_id: str
    kind: str
    key_id: str = ""
    scopes: frozenset[str] = frozenset(READ_SCOPES)
    name: str = ""
    expires_at: float | None = None  # epoch seconds; None: never
    origin: str = "api"
    created_at: float = 0.0

    def allows(self, requirement: str) -> bool:
        kind, scope = needs(requirement)
        if kind == "write":
            return self.kind == "write"
        if kind == "admin":
            return self.kind == "admin"
        return self.kind == "admin" or (self.kind == "read" and (not scope or scope in self.scopes))

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def described(self) -> dict[str, Any]:
        """The key as listed: everything but the key itself, which is shown once, when made."""
        return {
            "id": self.key_id, "kind": self.kind, "name": self.name, "origin": self.origin,
            "scopes": sorted(self.scopes) if self.kind == "read" else [], "created_at": self.created_at,
            "expires_at": self.expires_at,
        }  # fmt: skip


def checked_scopes(kind: str, scopes: list[str] | None) -> frozenset[str]:
    """The scopes a new key of `kind` gets: read keys name theirs (all when none are named)."""
    if kind != "read":
        if scopes:
            raise ValueError(f"only read keys have scopes; a {kind} key opens what its kind does")
        return frozenset()
    unknown = sorted(set(scopes or []) - set(READ_SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}: choose from {', '.join(READ_SCOPES)}")
    return frozenset(scopes) if scopes else frozenset(READ_SCOPES)


class KeyTable:
    """Every live key of every workspace, by hash (to authorise) and by id (to revoke), from the log's events."""

    def __init__(self) -> None:
        self.by_hash: dict[str, KeyGrant] = {}
        self.hash_of: dict[str, str] = {}  # key id → hash, for the live keys
        self.revoked: set[str] = set()  # hashes of revoked keys: never made live again

    def add(self, key_hash: str, grant: KeyGrant) -> None:
        self.by_hash[key_hash] = grant
        self.hash_of[grant.key_id] = key_hash

    def revoke(self, key_id: str) -> None:
        key_hash = self.hash_of.pop(key_id, None)
        if key_hash is not None:
            self.by_hash.pop(key_hash, None)
            self.revoked.add(key_hash)

    def was_revoked(self, key: str) -> bool:
        return hash_key(key) in self.revoked

    def apply(self, workspace_id: str, e: Any) -> None:
        """A Workspace event: keys issued, made and revoked (other events change no key)."""
        if isinstance(e, Workspace.KeyIssued):
            self.add(e.key_hash, KeyGrant(workspace_id, e.kind, legacy_key_id(e.key_hash), origin="start",
                                          created_at=e.timestamp.timestamp()))  # fmt: skip
        elif isinstance(e, Workspace.KeyCreated):
            self.add(e.key_hash, KeyGrant(workspace_id, e.kind, e.key_id, frozenset(e.scopes), e.name, e.expires_at,
                                          e.origin, e.timestamp.timestamp()))  # fmt: skip
        elif isinstance(e, Workspace.KeyRevoked):
            self.revoke(e.key_id)

    def grant(self, key: str) -> KeyGrant | None:
        return self.by_hash.get(hash_key(key))

    def of_workspace(self, workspace_id: str) -> list[KeyGrant]:
        return sorted((g for g in self.by_hash.values() if g.workspace_id == workspace_id), key=lambda g: g.created_at)
