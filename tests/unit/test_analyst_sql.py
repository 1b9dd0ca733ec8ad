"""The analyst SQL guard: what it refuses, and how it confines what it lets through."""

from __future__ import annotations

import pytest

from projections.analyst_sql import (
    ANALYST_TABLES,
    DATA_FUNCTIONS,
    HOST_FUNCTIONS,
    WORKSPACE_PARAMETER,
    SqlRefused,
    prepare,
)

SCOPED_EVENTS = f"(SELECT * FROM db.events FINAL WHERE workspace_id = {{{WORKSPACE_PARAMETER}: String}}) AS"


def refusal(sql: str) -> SqlRefused:
    with pytest.raises(SqlRefused) as caught:
        prepare(sql, "db")
    return caught.value


def test_every_table_reference_becomes_a_workspace_filtered_subquery() -> None:
    rewritten = prepare("SELECT e.type, count() FROM events AS e JOIN profiles USING profile_id GROUP BY e.type", "db")
    assert f"FROM {SCOPED_EVENTS} e" in rewritten
    assert SCOPED_EVENTS.replace("events", "profiles") + " profiles" in rewritten


def test_tables_in_subqueries_unions_and_ctes_are_rewritten_too() -> None:
    sql = (
        "WITH recent AS (SELECT profile_id FROM events WHERE timestamp > now() - INTERVAL 1 DAY) "
        "SELECT count() FROM profiles WHERE profile_id IN (SELECT profile_id FROM recent) "
        "UNION ALL SELECT count() FROM db.events FINAL WHERE type IN (SELECT type FROM events)"
    )
    rewritten = prepare(sql, "db")
    assert rewritten.count("WHERE workspace_id = {") == 4
    assert " events " not in rewritten.replace("AS events", "")  # no bare reference is left


def test_scalar_with_and_a_users_final_are_kept_working() -> None:
    rewritten = prepare("WITH 10 AS n SELECT n FROM events FINAL LIMIT n", "db")
    assert rewritten.startswith("WITH 10 AS n SELECT n FROM (SELECT") and "FINAL FINAL" not in rewritten


def test_a_cte_out_of_its_scope_cannot_fall_through_to_a_real_table() -> None:
    rewritten = prepare("SELECT * FROM (WITH positions AS (SELECT 1 AS a) SELECT * FROM positions), positions", "db")
    assert "FROM positions" not in rewritten and rewritten.count("cte_0_positions AS positions") == 2


@pytest.mark.parametrize(
    "sql",
    ["INSERT INTO events SELECT * FROM events", "ALTER TABLE events DELETE WHERE 1", "DROP TABLE events",
     "CREATE TABLE x (a Int8) ENGINE = Memory", "TRUNCATE TABLE events", "OPTIMIZE TABLE events FINAL",
     "SYSTEM FLUSH LOGS", "SET readonly = 0", "DESCRIBE events", "EXPLAIN SELECT 1", "SHOW TABLES"],
)  # fmt: skip
def test_anything_but_select_is_forbidden(sql: str) -> None:
    refused = refusal(sql)
    assert refused.status == 403 and "SELECT" in refused.message


@pytest.mark.parametrize(
    "sql, named",
    [("SELECT * FROM system.tables", "system.tables"),
     ("SELECT * FROM `system`.`one`", "system"),
     ("SELECT * FROM information_schema.tables", "information_schema.tables"),
     ("SELECT * FROM INFORMATION_SCHEMA.COLUMNS", "INFORMATION_SCHEMA"),
     ("SELECT * FROM other_db.events", "other_db.events"),
     ("SELECT * FROM positions", "positions"),
     ("SELECT * FROM numbers(10)", "numbers"),
     ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "file"),
     ("SELECT * FROM url('http://example.com/x.csv', 'CSV')", "url"),
     ("SELECT * FROM remote('127.0.0.1', system.one)", "remote"),
     ("SELECT * FROM cluster('default', system.one)", "cluster"),
     ("SELECT * FROM s3('http://example.com/bucket/x.csv')", "s3"),
     ("SELECT * FROM input('a Int8')", "input"),
     ("SELECT file('/etc/hostname')", "file"),
     ("SELECT dictGet('d', 'a', 1)", "dictget"),
     ("SELECT joinGet('j', 'a', 1)", "joinget"),
     ("SELECT 1 FROM events WHERE (1, 2) IN system.tables", "system.tables"),
     ("WITH events AS (SELECT 1) SELECT * FROM events", "events")],
)  # fmt: skip
def test_reads_outside_the_workspace_tables_are_forbidden_by_name(sql: str, named: str) -> None:
    refused = refusal(sql)
    assert refused.status == 403 and named.lower() in refused.message.lower(), refused.message


@pytest.mark.parametrize(
    "sql, reason",
    [("SELECT 1 SETTINGS readonly = 0", "settings"),
     ("SELECT count() FROM events SETTINGS max_execution_time = 3600", "settings"),
     ("SELECT 1 UNION ALL SELECT 2 SETTINGS max_result_rows = 0", "settings"),
     ("SELECT * FROM events FORMAT CSV", "format"),
     ("SELECT 1; SELECT 2", "multiple_statements"),
     ("SELECT 1; DROP TABLE events", "multiple_statements")],
)  # fmt: skip
def test_overriding_the_limits_or_smuggling_statements_is_forbidden(sql: str, reason: str) -> None:
    refused = refusal(sql)
    assert (refused.status, refused.reason) == (403, reason)


def test_malformed_sql_is_a_400_with_the_parsers_position() -> None:
    refused = refusal("SELECT count( FROM events")
    assert refused.status == 400 and refused.reason == "malformed"
    assert refused.details["line"] == 1 and refused.details["column"] > 0 and "line 1, column" in refused.message
    assert refusal("SELECT 'unterminated").status == 400
    assert refusal("   ;  ").reason == "empty"
    assert refusal("SELECT * FROM events INTO OUTFILE 'x.csv'").status == 400


def test_every_analyst_table_is_readable() -> None:
    for table in ANALYST_TABLES:
        assert f"FROM db.{table} FINAL WHERE workspace_id" in prepare(f"SELECT count() FROM {table}", "db")


HOST_DETAILS = [
    "hostName()", "hostname()", "HOSTNAME()", "FQDN()", "fqdn()", "fullHostName()", "version()", "VERSION()",
    "CURRENT_VERSION()", "getOSKernelVersion()", "uptime()", "serverUUID()", "currentUser()", "user()", "USER()",
    "current_user()", "CURRENT_USER", "session_user()", "authenticatedUser()", "getSetting('max_threads')",
    "getMacro('replica')", "displayName()", "tcpPort()", "currentProfiles()", "currentRoles()",
    "enabledProfiles()", "enabledRoles()", "defaultProfiles()", "defaultRoles()", "getServerPort('tcp_port')",
    "shardNum()", "shardCount()", "buildId()", "revision()", "timezone()", "timeZone()", "TIMEZONE()",
    "serverTimezone()", "serverTimeZone()", "filesystemAvailable()", "filesystemCapacity()",
    "filesystemUnreserved()", "filesystemFree()", "getClientHTTPHeader('Authorization')", "initialQueryID()",
    "queryID()", "query_id()", "connectionId()", "showCertificate()", "getServerSetting('tcp_port')",
    "`hostName`()", "file('/etc/hostname')", "url('http://example.com/x')", "s3('http://example.com/b/x')",
]  # fmt: skip


@pytest.mark.parametrize("call", HOST_DETAILS)
def test_functions_that_reveal_the_host_or_server_are_forbidden_by_name(call: str) -> None:
    name = {"CURRENT_VERSION": "version", "CURRENT_USER": "current_user"}.get(call.split("(")[0], call.split("(")[0])
    for sql in (f"SELECT {call}", f"SELECT count() FROM events WHERE user_id = {call}",
                f"SELECT arrayMap(x -> {call}, [1])", f"SELECT (SELECT {call}) FROM events"):  # fmt: skip
        refused = refusal(sql)
        assert (refused.status, refused.reason) == (403, "function"), refused.message
        assert f"function {name.strip('`').lower()}() is not allowed" in refused.message.lower(), refused.message


def test_every_name_in_the_function_lists_is_refused_in_any_case() -> None:
    for name in HOST_FUNCTIONS | DATA_FUNCTIONS - {"in"}:  # `in(...)` does not parse as a call at all
        for spelling in (name, name.upper()):
            refused = refusal(f"SELECT {spelling}()")
            assert refused.reason == "function", (spelling, refused.message)
    host = refusal("SELECT hostName()").message
    assert "reveals the host or the server" in host and "query only the workspace's tables" in host


@pytest.mark.parametrize(
    "sql",
    ["SELECT * FROM values('x String', 'a')",
     "SELECT * FROM VALUES('x String', 'a')",
     "SELECT x FROM values('a')",
     "SELECT * FROM (VALUES (1, 2))",
     "SELECT e.type FROM events AS e JOIN values('type String', 'track') AS v USING type",
     "SELECT count() FROM events WHERE type IN (SELECT * FROM values('type String', 'track'))",
     "SELECT * FROM `values`('x String', 'a')",
     "SELECT * FROM generateRandom('a Int8')",
     "SELECT * FROM zeros(3)"],
)  # fmt: skip
def test_values_and_every_other_table_function_are_forbidden(sql: str) -> None:
    refused = refusal(sql)
    assert (refused.status, refused.reason) == (403, "table_function"), refused.message
    assert "is not allowed: FROM may name only the workspace tables" in refused.message


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1 FROM events WHERE 1 IN (SELECT 1 FROM system.one)",
     "SELECT (SELECT value FROM system.build_options LIMIT 1)",
     "SELECT * FROM events JOIN system.clusters AS c ON 1",
     "WITH m AS (SELECT * FROM system.macros) SELECT * FROM m"],
)  # fmt: skip
def test_the_system_database_is_unreadable_anywhere_in_a_query(sql: str) -> None:
    refused = refusal(sql)
    assert refused.status == 403 and "system." in refused.message


def test_ordinary_analysis_functions_stay_allowed() -> None:
    sql = (
        "SELECT toStartOfDay(timestamp) AS day, countIf(type = 'track') AS tracks, "
        "JSONExtractString(properties, 'currency') AS currency, toTimezone(timestamp, 'Europe/Paris') AS local, "
        "timezoneOf(timestamp) AS zone, uniqExact(anchor) AS anchors, arrayJoin(['a', 'b']) AS x "
        "FROM events WHERE (type, event) IN (('track', 'Order Completed')) GROUP BY day, currency, local, zone, x"
    )
    rewritten = prepare(sql, "db")
    assert f"FROM {SCOPED_EVENTS} events" in rewritten
    for kept in ("countIf(", "JSONExtractString(", "toTimezone(", "timezoneOf(", "uniqExact("):
        assert kept in rewritten
