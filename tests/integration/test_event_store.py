"""The same event-store behaviour on the SQLite file and on PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient

from domain.segment import call_adapter, normalise
from infra.bootstrap import Platform, verify_rebuild
from infra.config import Settings
from infra.eventstore import open_event_store
from infra.server import create_app
from tests.conftest import Running


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "postgres":
        return replace(settings, event_store=request.getfixturevalue("postgres_url"))
    return settings


def _calls(*raw: dict[str, Any]) -> list[dict[str, Any]]:
    now = datetime.now(timezone.utc)
    return [normalise(call_adapter.validate_python(r), now) for r in raw]


def test_append_dedup_and_reload(store_settings: Settings) -> None:
    app = open_event_store(store_settings)
    ws = app.ensure_workspace("default")
    first = _calls(
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1"},
        {"type": "track", "anonymousId": "a2", "event": "E", "messageId": "m2"},
    )
    merge = _calls({"type": "alias", "previousId": "a2", "userId": "u1", "messageId": "m3"})
    results = app.record([(ws, first), (ws, merge)])
    assert [r.stored for batch in results for r in batch] == [True, True, True]
    again = app.record([(ws, first)])
    assert [r.stored for r in again[0]] == [False, False]
    position = app.last_position()

    reopened = open_event_store(store_settings)  # a restart: state comes back from the log
    assert reopened.last_position() == position
    profile = reopened.graph.profile_of(ws, "anonymous_id:a2")
    assert profile == reopened.graph.profile_of(ws, "user_id:u1") == results[0][0].profile_id
    assert [r.stored for r in reopened.record([(ws, merge)])[0]] == [False]
    assert reopened.last_position() == position


def test_whole_platform_runs_and_restarts_on_the_store(store_settings: Settings) -> None:
    batch = {
        "batch": [
            {"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}, "messageId": "i1"},
            {"type": "track", "userId": "u1", "event": "Bought", "messageId": "t1"},
        ]
    }
    platform = Platform(store_settings)
    with TestClient(create_app(platform)) as client:
        running = Running(platform, client)
        assert running.send("/v1/batch", batch).status_code == 200
        running.wait_caught_up()
        before = running.profile("email:a@b.c").json()
        assert before["counts"] == {"identify": 1, "track": 1}

    platform = Platform(store_settings)
    with TestClient(create_app(platform)) as client:
        running = Running(platform, client)
        assert running.send("/v1/batch", batch).status_code == 200  # retried after restart: stored once
        running.wait_caught_up()
        assert running.profile("email:a@b.c").json() == before
        assert running.stored_event_count() == 2
        assert verify_rebuild(platform.app, platform.store.client, store_settings.clickhouse_database) == []
