"""The analyst SQL guard: what it refuses, and how it confines what it lets through."""

from __future__ import annotations

import pytest

from projections.analyst_sql import ANALYST_TABLES, WORKSPACE_PARAMETER, SqlRefused, prepare

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
