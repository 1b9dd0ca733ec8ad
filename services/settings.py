"""Workspace settings: the origins whose pages may send events from the browser (CORS), and the consent
defaults (per purpose, granted or denied for a person who never decided; domain/consent.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.application import CustomerData
from domain.consent import Defaults, defaults_as_of, parse_defaults, save_defaults
from domain.directory import Directory
from domain.errors import Invalid
from services.ports import Committer


@dataclass(frozen=True)
class SetAllowedOrigins:
    workspace_id: str
    origins: tuple[str, ...]


@dataclass(frozen=True)
class SetConsentDefaults:
    """The whole defaults: {purpose: "granted" | "denied"}, `*` for every purpose not named."""

    workspace_id: str
    defaults: Any


def origin(value: str) -> str:
    """`scheme://host[:port]` as stored (lower-case host, no trailing slash), or `*`; Invalid otherwise."""
    value = value.strip().rstrip("/")
    if value == "*":
        return value
    scheme, sep, rest = value.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or "/" in rest or " " in rest:
        raise Invalid(f"{value!r} is not an origin: write scheme://host[:port], e.g. https://shop.example.com",
                      code="invalid_origin", errors=[{"field": "origins", "reason": "scheme://host[:port]"}])  # fmt: skip
    return f"{scheme}://{rest.lower()}"


class SettingsService:
    def __init__(self, app: CustomerData | Directory, committer: Committer | None) -> None:
        """Without a committer (an ingest worker) the settings are read, never changed."""
        self.app, self.committer = app, committer

    def allowed_origins(self, workspace_id: str) -> list[str]:
        return self.app.allowed_origins(workspace_id)

    def any_allowed_origin(self, origin: str) -> bool:
        """Whether some workspace lets pages of `origin` send events (a CORS preflight carries no key)."""
        return any(origin in ws.allowed_origins or "*" in ws.allowed_origins for ws in self.app.workspaces.values())

    async def set_allowed_origins(self, c: SetAllowedOrigins) -> list[str]:
        origins = [origin(o) for o in c.origins]
        app = self.app
        if self.committer is None or not isinstance(app, CustomerData):
            raise RuntimeError("settings are changed through the core process, not an ingest worker")
        await self.committer.run(lambda: app.allow_origins(c.workspace_id, origins))
        return origins

    def _core(self) -> CustomerData:
        if self.committer is None or not isinstance(self.app, CustomerData):
            raise RuntimeError("settings are changed through the core process, not an ingest worker")
        return self.app

    def consent_defaults(self, workspace_id: str) -> Defaults:
        """The consent defaults in force (the built-in ones, version 0, until the workspace sets its own)."""
        return defaults_as_of(self._core().definitions, workspace_id)

    async def set_consent_defaults(self, c: SetConsentDefaults) -> Defaults:
        """Record new defaults: tags and segments that declare a purpose whose default changed re-evaluate their
        members (in the log's order, as every definition)."""
        defaults = parse_defaults(c.defaults)
        app = self._core()
        assert self.committer is not None
        return await self.committer.run(lambda: save_defaults(app, c.workspace_id, defaults))
