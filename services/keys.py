"""Workspaces and their keys: made, listed (never shown again), rotated and revoked, through the log's writer.

A key is shown once, in the answer that makes it; the log keeps its hash. Revoking is
an event in the log: the core stops taking the key at once, each ingest worker at its
next directory refresh (at most a second later; domain/directory.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.access import KINDS, KeyGrant, new_key
from domain.application import CustomerData
from domain.errors import Conflict, Invalid, NotFound
from services.ports import Committer


@dataclass(frozen=True)
class CreateKey:
    workspace_id: str
    kind: str
    scopes: tuple[str, ...] = ()
    name: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Made:
    """A key just made: the key itself, shown this once, and how it is listed."""

    key: str
    grant: KeyGrant

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, **self.grant.described()}


class KeyService:
    def __init__(self, app: CustomerData, committer: Committer) -> None:
        self.app, self.committer = app, committer

    async def create(self, c: CreateKey) -> Made:
        key = new_key(c.kind) if c.kind in KINDS else ""  # an unknown kind is refused by create_key, named
        expires = c.expires_at.timestamp() if c.expires_at is not None else None

        def make() -> KeyGrant:
            return self.app.create_key(c.workspace_id, c.kind, key, list(c.scopes), c.name, expires)

        try:
            return Made(key, await self.committer.run(make))
        except ValueError as exc:
            raise Invalid(str(exc), code="invalid_key") from None

    def listing(self, workspace_id: str) -> list[dict[str, Any]]:
        return [g.described() for g in self.app.keys.of_workspace(workspace_id)]

    def _live(self, workspace_id: str, key_id: str) -> KeyGrant:
        for grant in self.app.keys.of_workspace(workspace_id):
            if grant.key_id == key_id:
                return grant
        raise NotFound(f"no live key {key_id!r} in this workspace (revoked, or never made); `cdp keys list` shows "
                       "the live ones", code="unknown_key")  # fmt: skip

    async def rotate(self, workspace_id: str, key_id: str) -> Made:
        """A new key of the same kind, scopes, name and expiry; the old one revoked in the same step."""
        old = self._live(workspace_id, key_id)
        key = new_key(old.kind)

        def swap() -> KeyGrant:
            made = self.app.create_key(workspace_id, old.kind, key, sorted(old.scopes) if old.kind == "read" else None,
                                       old.name, old.expires_at)  # fmt: skip
            self.app.revoke_key(workspace_id, key_id, f"rotated to {made.key_id}")
            return made

        try:
            return Made(key, await self.committer.run(swap))
        except ValueError as exc:  # it expired meanwhile
            raise Invalid(f"{key_id} cannot be rotated: {exc}; create a new key instead", code="invalid_key") from None

    async def revoke(self, workspace_id: str, key_id: str) -> None:
        self._live(workspace_id, key_id)
        if not await self.committer.run(lambda: self.app.revoke_key(workspace_id, key_id)):
            raise NotFound(f"no live key {key_id!r} in this workspace", code="unknown_key")


class WorkspaceService:
    """Workspaces, managed with the platform key."""

    def __init__(self, app: CustomerData, committer: Committer) -> None:
        self.app, self.committer = app, committer

    def listing(self) -> list[dict[str, Any]]:
        return [{"id": i, "name": w.name} for i, w in sorted(self.app.workspaces.items(), key=lambda kv: kv[1].name)]

    async def create(self, name: str) -> dict[str, Any]:
        """A workspace and its first keys (admin, write, read), shown this once."""
        name = _name(name)
        keys = {kind: new_key(kind) for kind in ("admin", "write", "read")}

        def make() -> tuple[str, list[KeyGrant]]:
            workspace_id = self.app.create_workspace(name)
            return workspace_id, [self.app.create_key(workspace_id, kind, key, name=f"first {kind} key")
                                  for kind, key in keys.items()]  # fmt: skip

        try:
            workspace_id, grants = await self.committer.run(make)
        except ValueError as exc:
            raise Conflict(str(exc), code="workspace_exists") from None
        return {"id": workspace_id, "name": name, "keys": [Made(keys[g.kind], g).to_json() for g in grants]}

    async def rename(self, workspace_id: str, name: str) -> dict[str, Any]:
        if workspace_id not in self.app.workspaces:
            raise NotFound(f"no workspace {workspace_id!r}; `cdp workspaces list` shows them", code="unknown_workspace")
        name = _name(name)
        try:
            await self.committer.run(lambda: self.app.rename_workspace(workspace_id, name))
        except ValueError as exc:
            raise Conflict(str(exc), code="workspace_exists") from None
        return {"id": workspace_id, "name": name}


def _name(name: str) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not 1 <= len(name) <= 100 or any(ord(c) < 32 for c in name):
        raise Invalid("name: give 1 to 100 printable characters", code="invalid_name",
                      errors=[{"field": "name", "reason": "1 to 100 printable characters"}])  # fmt: skip
    return name
