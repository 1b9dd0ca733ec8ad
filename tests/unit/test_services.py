"""The service layer without HTTP: commands on a real application through an inline committer, reads
from fake stores; errors are domain.errors kinds with their codes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from domain.application import CustomerData
from domain.errors import Conflict, Invalid, NotFound
from services.profiles import ProfileService, SplitProfile
from services.settings import SetAllowedOrigins, SettingsService
from services.tags import Define, Delete, InvalidDocument, TagService

PROFILE = "0b7c4e3a-8f0e-4a7e-9a57-3f2d6c1b9e10"


class InlineCommitter:
    """Runs each command at once, as the group committer's writer thread would."""

    async def run(self, command: Callable[[], Any]) -> Any:
        return command()


class NoTags:
    def member_counts(self, workspace_id: str) -> dict[str, int]:
        return {}

    def backfill(self, workspace_id: str, slug: str) -> None:
        return None


class Profiles:
    """A projection that knows one profile, by its id only."""

    def read_profile(self, workspace_id: str, profile_id: str) -> object | None:
        return object() if profile_id == PROFILE else None

    def merged_into(self, workspace_id: str, profile_id: str) -> None:
        return None

    def owner_of(self, workspace_id: str, identifier: str, as_of: Any = None) -> None:
        return None


@pytest.fixture
def app(tmp_path: Path) -> Iterator[CustomerData]:
    application = CustomerData(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "e.db")})
    yield application
    application.close()


def run(awaitable: Any) -> Any:
    return asyncio.run(awaitable)


def test_tags_define_refuse_and_delete(app: CustomerData) -> None:
    ws = app.ensure_workspace("acme")
    tags = TagService(app, NoTags(), InlineCommitter(), resolve=lambda w, i: i, now=lambda: None)  # type: ignore[arg-type]
    body = b"id: vip\nrule:\n  computed: orders_count\n  op: '>='\n  value: 3\n"
    created = run(tags.define(Define(ws, "tag", body, "application/yaml", create_only=True)))
    assert created["id"] == "vip" and created["rule_version"] == 1 and created["backfill"]["state"] == "pending"
    with pytest.raises(Conflict) as taken:
        run(tags.define(Define(ws, "tag", body, "application/yaml", create_only=True)))
    assert "/v1" not in taken.value.message
    with pytest.raises(InvalidDocument) as bad:
        run(tags.define(Define(ws, "tag", b'{"id": "x", "rule": {"computed": "nope"}}', "application/json")))
    assert bad.value.code == "invalid_tag" and bad.value.kind == "invalid" and bad.value.errors
    assert run(tags.delete(Delete(ws, "tag", "vip"))) == 2
    with pytest.raises(NotFound) as gone:
        run(tags.delete(Delete(ws, "tag", "vip")))
    assert "/v1" not in gone.value.message


def test_profiles_resolve_and_split_errors(app: CustomerData) -> None:
    ws = app.ensure_workspace("acme")
    profiles = ProfileService(app, Profiles(), InlineCommitter())  # type: ignore[arg-type]
    assert profiles.resolve(ws, PROFILE.replace("-", "")) == PROFILE
    with pytest.raises(NotFound):
        profiles.resolve(ws, "email:nobody@example.com")
    with pytest.raises(Invalid) as neither:
        profiles.resolve(ws, "not-a-profile")
    assert neither.value.code == "bad_request"
    with pytest.raises(Conflict):  # the projection knows it, the log does not
        run(profiles.split(SplitProfile(ws, PROFILE, ("email:a@example.com",))))


def test_settings_hold_origins_to_their_form(app: CustomerData) -> None:
    ws = app.ensure_workspace("acme")
    settings = SettingsService(app, InlineCommitter())  # type: ignore[arg-type]
    assert run(settings.set_allowed_origins(SetAllowedOrigins(ws, ("https://Shop.Example.com/",)))) == [
        "https://shop.example.com"
    ]
    assert settings.allowed_origins(ws) == ["https://shop.example.com"] and settings.any_allowed_origin("https://shop.example.com")
    with pytest.raises(Invalid) as bad:
        run(settings.set_allowed_origins(SetAllowedOrigins(ws, ("shop.example.com",))))
    assert bad.value.code == "invalid_origin" and bad.value.errors == [{"field": "origins", "reason": "scheme://host[:port]"}]
