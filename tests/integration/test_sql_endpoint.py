"""POST /v1/sql through HTTP on a running platform with two workspaces."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from infra.bootstrap import Platform
from infra.broker import free_port
from infra.config import Settings
from infra.server import create_app
from tests.conftest import Running

OTHER_WRITE_KEY, OTHER_READ_KEY = "wk_sql_other", "rk_sql_other"
OURS, THEIRS = 60, 7  # events ingested into each workspace


class Analyst:
    def __init__(self, running: Running, other_workspace: str) -> None:
        self.running = running
        self.http = running.http
        self.other_workspace = other_workspace

    def sql(self, query: str, key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {key or self.running.read_key}"}
        return self.http.post("/v1/sql", json={"query": query}, headers=headers)

    def rows(self, query: str, key: str | None = None) -> list[list[Any]]:
        response = self.sql(query, key)
        assert response.status_code == 200, response.text
        return response.json()["rows"]


def _calls(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {"type": "track", "userId": f"{prefix}-{i % 5}", "event": "Order Completed", "messageId": f"{prefix}-{i}",
         "properties": {"total": 10 + i, "currency": "EUR"}, "timestamp": "2026-03-01T10:00:00Z"}
        for i in range(count)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def analyst(tmp_path_factory: pytest.TempPathFactory, chdb_url: str) -> Iterator[Analyst]:
    settings = Settings(
        data_dir=Path(tmp_path_factory.mktemp("sql")) / "data", http_port=free_port(), kafka_port=free_port(),
        kafka_partitions=2, clickhouse_url=chdb_url, clickhouse_database=f"t_{uuid.uuid4().hex[:12]}",
        sql_max_rows=50, sql_timeout_s=1.0, sql_max_memory=128 << 20, predictions_every_h=0,
    )  # fmt: skip
    platform = Platform(settings)
    with TestClient(create_app(platform)) as client:
        running = Running(platform, client)
        other = platform.app.ensure_workspace("globex")
        platform.app.grant_key(other, "write", OTHER_WRITE_KEY)
        platform.app.grant_key(other, "read", OTHER_READ_KEY)
        assert running.send("/v1/batch", {"batch": _calls("ours", OURS)}).status_code == 200
        theirs = client.post("/v1/batch", json={"batch": _calls("theirs", THEIRS)}, auth=(OTHER_WRITE_KEY, ""))
        assert theirs.status_code == 200, theirs.text
        # A redelivered copy of the same events: FINAL must keep counts exact.
        assert running.send("/v1/batch", {"batch": _calls("ours", 3)}).status_code == 200
        running.wait_caught_up()
        yield Analyst(running, other)


def test_an_aggregate_over_events_sees_only_the_callers_workspace(analyst: Analyst) -> None:
    response = analyst.sql("SELECT event, count() AS n, sum(JSONExtractFloat(properties, 'total')) AS total, "
                           "max(timestamp) AS last FROM events GROUP BY event")  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == [
        {"name": "event", "type": "String"}, {"name": "n", "type": "UInt64"},
        {"name": "total", "type": "Float64"}, {"name": "last", "type": "DateTime64(3, 'UTC')"},
    ]  # fmt: skip
    assert body["rows"] == [["Order Completed", OURS, sum(10 + i for i in range(OURS)), "2026-03-01T10:00:00Z"]]
    assert body["row_count"] == 1 and body["truncated"] is False and body["elapsed_ms"] >= 0
    assert analyst.rows("SELECT count() FROM events", OTHER_READ_KEY) == [[THEIRS]]
    empty = analyst.sql("SELECT profile_id, revenue FROM profiles WHERE orders_count > 1000").json()
    assert empty["rows"] == [] and empty["row_count"] == 0
    assert empty["columns"] == [
        {"name": "profile_id", "type": "UUID"}, {"name": "revenue", "type": "Map(String, Decimal(38, 6))"},
    ]  # fmt: skip
    assert analyst.rows("SELECT count() FROM profiles") == [[5]]


@pytest.mark.parametrize(
    "query",
    ["SELECT count() FROM events WHERE workspace_id = '{other}'",
     "SELECT count() FROM events WHERE workspace_id != '' AND user_id LIKE 'theirs%'",
     "SELECT count() FROM (SELECT * FROM events WHERE workspace_id = '{other}')",
     "SELECT count() FROM events WHERE workspace_id = '{other}' "
     "UNION ALL SELECT count() FROM profiles WHERE workspace_id = '{other}'",
     "SELECT count() FROM events AS a JOIN profiles AS b ON a.workspace_id != b.workspace_id",
     "SELECT count() FROM events WHERE profile_id IN (SELECT profile_id FROM profiles WHERE workspace_id = '{other}')",
     "SELECT count() FROM {db}.events FINAL WHERE workspace_id = '{other}'",
     "WITH e AS (SELECT * FROM events) SELECT count() FROM e WHERE e.workspace_id = '{other}'"],
)  # fmt: skip
def test_no_query_reaches_another_workspaces_rows(analyst: Analyst, query: str) -> None:
    db = analyst.running.platform.settings.clickhouse_database
    rows = analyst.rows(query.format(other=analyst.other_workspace, db=db))
    assert all(row == [0] for row in rows), rows
    distinct = analyst.rows("SELECT DISTINCT workspace_id FROM events UNION DISTINCT SELECT workspace_id FROM profiles")
    assert distinct == [[analyst.running.platform.workspace_id]]


@pytest.mark.parametrize(
    "query, status, named",
    [("INSERT INTO events (event_id) VALUES (generateUUIDv4())", 403, "INSERT"),
     ("ALTER TABLE events DELETE WHERE 1", 403, "ALTER"),
     ("DROP TABLE events", 403, "DROP"),
     ("CREATE TABLE x (a Int8) ENGINE = Memory", 403, "CREATE"),
     ("TRUNCATE TABLE events", 403, "TRUNCATE"),
     ("OPTIMIZE TABLE events FINAL", 403, "OPTIMIZE"),
     ("SYSTEM DROP MARK CACHE", 403, "SYSTEM"),
     ("SET readonly = 0", 403, "SET"),
     ("KILL QUERY WHERE 1", 400, "malformed"),
     ("SELECT * FROM system.tables", 403, "system.tables"),
     ("SELECT * FROM information_schema.tables", 403, "information_schema"),
     ("SELECT * FROM system.one", 403, "system.one"),
     ("SELECT * FROM default.events", 403, "default.events"),
     ("SELECT * FROM file('/etc/passwd', 'LineAsString')", 403, "file"),
     ("SELECT * FROM url('http://127.0.0.1:9/x.csv', 'CSV')", 403, "url"),
     ("SELECT * FROM remote('127.0.0.1', system.one)", 403, "remote"),
     ("SELECT * FROM cluster('default', system.one)", 403, "cluster"),
     ("SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv')", 403, "s3"),
     ("SELECT * FROM input('a Int8')", 403, "input"),
     ("SELECT * FROM numbers(1000000000000)", 403, "numbers"),
     ("SELECT count() FROM events; DROP TABLE events", 403, "2 statements"),
     ("SELECT count() FROM events SETTINGS readonly = 0", 403, "SETTINGS"),
     ("SELECT count() FROM events SETTINGS max_execution_time = 0", 403, "SETTINGS"),
     ("SELECT * FROM events FORMAT TabSeparated", 403, "FORMAT")],
)  # fmt: skip
def test_writes_ddl_system_tables_functions_and_overrides_are_refused(
    analyst: Analyst, query: str, status: int, named: str
) -> None:
    response = analyst.sql(query)
    assert response.status_code == status, response.text
    assert named.lower() in response.json()["message"].lower(), response.text
    assert analyst.rows("SELECT count() FROM events") == [[OURS]]  # nothing was changed


def test_host_details_and_values_are_refused_while_ordinary_analysis_runs(analyst: Analyst) -> None:
    for query, name in [("SELECT hostName()", "hostName"), ("SELECT version()", "version"),
                        ("SELECT count() FROM events WHERE user_id = currentUser()", "currentUser")]:  # fmt: skip
        response = analyst.sql(query)
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["reason"] == "function", response.text
        assert body["message"].startswith(f"function {name}() is not allowed: it reveals the host or the server")
    refused = analyst.sql("SELECT * FROM values('x String', 'a')")
    assert refused.status_code == 403 and refused.json()["reason"] == "table_function", refused.text
    assert refused.json()["message"].startswith("table function values() is not allowed")
    rows = analyst.rows(
        "SELECT toStartOfDay(timestamp) AS day, countIf(type = 'track') AS tracks, "
        "JSONExtractString(properties, 'currency') AS currency FROM events GROUP BY day, currency"
    )
    assert rows == [["2026-03-01T00:00:00Z", OURS, "EUR"]]


def test_out_of_scope_cte_names_and_outfile_fail_without_reading_anything(analyst: Analyst, tmp_path: Path) -> None:
    response = analyst.sql("SELECT * FROM (WITH positions AS (SELECT 1 AS a) SELECT * FROM positions), positions")
    assert response.status_code == 400 and response.json()["reason"] == "query_error", response.text
    target = tmp_path / "out.csv"
    assert analyst.sql(f"SELECT * FROM events INTO OUTFILE '{target}'").status_code == 400
    assert not target.exists()


def test_malformed_sql_gets_a_400_with_the_parsers_message_and_position(analyst: Analyst) -> None:
    response = analyst.sql("SELECT count( FROM events")
    assert response.status_code == 400
    body = response.json()
    assert body["reason"] == "malformed" and body["line"] == 1 and body["column"] > 0
    assert body["message"].startswith("malformed SQL at line 1")
    unknown = analyst.sql("SELECT no_such_column FROM events")
    assert unknown.status_code == 400 and "no_such_column" in unknown.json()["message"]
    empty = analyst.http.post("/v1/sql", json={}, headers=analyst.running.read_headers)
    assert empty.status_code == 400 and "query" in empty.json()["message"]


def test_the_row_limit_truncates_and_says_so(analyst: Analyst) -> None:
    body = analyst.sql("SELECT event_id, position FROM events ORDER BY position").json()
    assert body["row_count"] == 50 and len(body["rows"]) == 50 and body["truncated"] is True
    assert [r[1] for r in body["rows"]] == sorted(r[1] for r in body["rows"])
    exact = analyst.sql("SELECT event_id FROM events LIMIT 50").json()
    assert exact["row_count"] == 50 and exact["truncated"] is False


def test_a_runaway_query_is_stopped_at_the_time_limit_while_the_platform_keeps_serving(analyst: Analyst) -> None:
    runaway = ("SELECT count() FROM events a, events b, events c, events d, events e "
               "WHERE sipHash64(a.event_id, b.event_id, c.event_id, d.event_id, e.event_id) = 0")  # fmt: skip
    outcome: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        outcome["response"] = analyst.sql(runaway)
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    served = []
    while thread.is_alive() and len(served) < 5:
        started = time.monotonic()
        profile = analyst.running.profile("user_id:ours-1")
        assert profile.status_code == 200
        assert analyst.rows("SELECT count() FROM profiles") == [[5]]
        served.append(time.monotonic() - started)
    thread.join()
    response = outcome["response"]
    assert response.status_code == 422, response.text
    assert response.json()["limit"] == "time" and "time limit" in response.json()["message"]
    assert 0.9 < outcome["seconds"] < 3.0
    assert served and max(served) < 0.9  # reads were not queued behind the runaway query
    assert analyst.rows("SELECT 1 FROM events LIMIT 1") == [[1]]


def test_a_query_over_the_memory_limit_is_stopped(analyst: Analyst) -> None:
    response = analyst.sql("SELECT groupArray(x) FROM events ARRAY JOIN range(1000000) AS x")
    assert response.status_code == 422, response.text
    assert response.json()["limit"] == "memory"


def test_reading_needs_a_read_key(analyst: Analyst) -> None:
    assert analyst.http.post("/v1/sql", json={"query": "SELECT 1"}).status_code == 401
    assert analyst.sql("SELECT 1", key="rk_unknown").status_code == 401
    refused = analyst.sql("SELECT 1", key=analyst.running.write_key)  # a live key, but the write key reads nothing
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), refused.text
