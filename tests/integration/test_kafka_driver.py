"""The same processors driven by Faust on the real broker (CDP_PROCESSOR_DRIVER=kafka)."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from infra.bootstrap import Platform, verify_rebuild
from infra.config import Settings
from infra.server import create_app
from tests.conftest import Running


@pytest.fixture
def kafka_running(settings: Settings) -> Iterator[Running]:
    platform = Platform(replace(settings, processor_driver="kafka", kafka_partitions=3))
    with TestClient(create_app(platform)) as client:
        yield Running(platform, client)


def test_faust_driver_builds_the_same_projections(kafka_running: Running) -> None:
    batch = [
        {"type": "identify", "userId": f"u{i}", "anonymousId": f"a{i}", "traits": {"i": i}, "messageId": f"i{i}"}
        for i in range(20)
    ] + [{"type": "track", "anonymousId": f"a{i % 20}", "event": "Viewed", "messageId": f"t{i}"} for i in range(60)]
    batch += [{"type": "track", "anonymousId": "z", "event": "Viewed", "messageId": f"z{i}"} for i in range(3)]
    assert kafka_running.send("/v1/batch", {"batch": batch}).status_code == 200
    merge = {"type": "alias", "previousId": "z", "userId": "u2", "messageId": "merge"}
    assert kafka_running.send("/v1/batch", {"batch": [merge]}).status_code == 200
    status = kafka_running.wait_caught_up(timeout=60)
    assert status["projections"]["profiles"]["driver"] == "kafka"

    merged = kafka_running.profile("user_id:u2").json()
    assert merged["identifiers"] == {"user_id": ["u2"], "anonymous_id": ["a2", "z"]}
    assert merged["event_count"] == 1 + 3 + 3 + 1  # identify, a2's tracks, z's tracks, the alias
    assert len(merged["merged_profiles"]) == 1
    assert kafka_running.profile("anonymous_id:z").json() == merged

    platform = kafka_running.platform
    assert verify_rebuild(platform.app, platform.store.client, platform.settings.clickhouse_database) == []


def test_faust_driver_runs_tags_and_kpis_too(kafka_running: Running) -> None:
    from tests.integration.test_tags_http import define, members, pid

    define(kafka_running, "buyers", {"event": "Order Completed", "measure": "sum(revenue)", "op": ">=", "value": 50})
    orders = [{"type": "track", "userId": f"b{i}", "event": "Order Completed", "messageId": f"o{i}",
               "timestamp": "2026-03-01T10:00:00Z", "properties": {"revenue": 30 * i, "currency": "EUR"}}
              for i in range(1, 4)]  # fmt: skip
    assert kafka_running.send("/v1/batch", {"batch": orders}).status_code == 200
    kafka_running.settle(timeout=60)
    assert members(kafka_running, "buyers") == {pid(kafka_running, "user_id:b2"), pid(kafka_running, "user_id:b3")}
    revenue = kafka_running.http.get(
        "/v1/kpis/revenue", params={"from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"},
        headers=kafka_running.read_headers,
    ).json()["series"]  # fmt: skip
    assert [(r["currency"], r["value"]) for r in revenue] == [("EUR", 180)]


def test_faust_driver_quarantines_a_poison_event_and_projects_the_rest(kafka_running: Running) -> None:
    from tests.integration.test_poison_events import POISONS, _call, _order, _revenue

    platform = kafka_running.platform
    ws = platform.workspace_id
    platform.committer.record_now(ws, [_call("poisoned", **POISONS["event time in year 9999"]), _order("after", 5.0)])
    status = kafka_running.wait_caught_up(timeout=60)
    assert status["projections"]["kpis"]["quarantined"] == 1 and status["projections"]["profiles"]["quarantined"] == 0
    assert kafka_running.profile("user_id:after").status_code == 200
    assert _revenue(kafka_running) == 5.0
    entries = kafka_running.http.get("/v1/quarantine", headers=kafka_running.admin_headers).json()["entries"]
    assert {e["projection"] for e in entries} == {"kpis"} and len(entries) == 1


def test_faust_driver_erases_a_merged_person_on_every_partition(kafka_running: Running) -> None:
    """The person's profiles' entries sit on the partitions of their profile ids: the erasure is sent to each,
    after them, so no partition projects the person again after it."""
    r = kafka_running
    calls = [{"type": "identify", "anonymousId": f"era-{i}", "traits": {"n": i}, "messageId": f"era-{i}"} for i in range(6)]
    assert r.send("/v1/batch", {"batch": calls}).status_code == 200
    r.wait_caught_up(timeout=60)
    merges = [{"type": "alias", "previousId": f"era-{i}", "userId": "era-user", "messageId": f"era-m{i}"} for i in range(6)]
    assert r.send("/v1/batch", {"batch": merges}).status_code == 200
    r.wait_caught_up(timeout=60)
    person = r.profile("user_id:era-user").json()
    assert len(person["merged_profiles"]) >= 2
    done = r.http.post("/v1/regulations", json={"type": "delete", "identifiers": ["anonymous_id:era-3"]},
                       headers=r.admin_headers)  # fmt: skip
    assert done.status_code == 202, done.text
    r.wait_caught_up(timeout=60)
    erased = [person["profile_id"], *person["merged_profiles"]]
    store = r.platform.store
    for table in ("events", "profiles", "profile_identifiers", "identity_history"):
        (n,) = store.client.query(f"SELECT count() FROM {store.db}.{table} WHERE toString(profile_id) IN {{ids:Array(String)}}",
                                  parameters={"ids": erased}).result_rows[0]  # fmt: skip
        assert n == 0, table
    assert r.profile("user_id:era-user").status_code == 404
    platform = r.platform
    assert verify_rebuild(platform.app, platform.store.client, platform.settings.clickhouse_database) == []
