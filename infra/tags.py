"""The service behind the tags and segments API: commands through the group committer, reads from projections."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.tags import Definition, delete_definition, parse_rule, record_manual_tag, save_definition
from infra.bootstrap import Platform
from projections.store import ProjectionStore
from projections.tags import TagStore


class TagService:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    @property
    def store(self) -> ProjectionStore:
        return self.platform.store

    @property
    def tag_store(self) -> TagStore:
        assert self.platform.tags is not None, "the platform is not started"
        return self.platform.tags.store

    def authorise_read(self, key: str) -> str | None:
        return self.platform.authorise_read(key)

    def authorise_write(self, key: str) -> str | None:
        return self.platform.authorise_write(key)

    def identifier_types(self, workspace_id: str) -> list[str]:
        return list(self.platform.app.rules_for(workspace_id).types)

    def definitions(self, workspace_id: str, kind: str) -> dict[str, Any]:
        return self.platform.app.definitions.live(workspace_id, kind)

    def tag_rules(self, workspace_id: str) -> dict[str, Any]:
        """Dynamic tags' rules as the log says they are now (for segments that refer to tags)."""
        return {slug: parse_rule(d.rule) for slug, d in self.definitions(workspace_id, "tag").items()}

    def now(self) -> datetime:
        return self.platform.clock.now()

    async def save_definition(self, workspace_id: str, kind: str, definition: Definition, create_only: bool) -> Any:
        app = self.platform.app
        return await self.platform.committer.run(lambda: save_definition(app, workspace_id, kind, definition, create_only))

    async def delete_definition(self, workspace_id: str, kind: str, slug: str) -> int:
        app = self.platform.app
        return await self.platform.committer.run(lambda: delete_definition(app, workspace_id, kind, slug))

    async def manual_tag(self, workspace_id: str, profile_id: str, tag: str, action: str, reason: str) -> None:
        app = self.platform.app
        await self.platform.committer.run(lambda: record_manual_tag(app, workspace_id, profile_id, tag, action, reason))

    def profile_extras(self, workspace_id: str, profile_id: str) -> dict[str, Any]:
        from queries.tags import profile_tags

        return profile_tags(self.tag_store, self.definitions(workspace_id, "tag"), workspace_id, profile_id)
