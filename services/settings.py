"""Workspace settings: the origins whose pages may send events from the browser (CORS)."""

from __future__ import annotations

from dataclasses import dataclass

from domain.application import CustomerData
from domain.directory import Directory
from domain.errors import Invalid
from services.ports import Committer


@dataclass(frozen=True)
class SetAllowedOrigins:
    workspace_id: str
    origins: tuple[str, ...]


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
