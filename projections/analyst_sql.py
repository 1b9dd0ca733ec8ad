"""Read-only SQL for analysts: check a query, confine it to one workspace, run it within limits.

`prepare` is pure: it parses the query with sqlglot's ClickHouse dialect, refuses anything
but one SELECT over the analyst tables, and rewrites every table reference into a subquery
filtered by a server-side parameter. `AnalystSql.run` executes the rewritten query with
ClickHouse's own guards (readonly, time, memory, result rows), so isolation does not rest
on the parser alone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from queue import Empty, LifoQueue
from typing import Any, Callable

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

# Tables analysts may read, each filtered to the caller's workspace. The value says whether
# reads use FINAL: every table here is a ReplacingMergeTree, whose duplicates and deleted
# rows disappear only at merge time, so exact answers need FINAL. Adding a table is one line.
ANALYST_TABLES: dict[str, bool] = {
    "events": True,
    "identity_history": True,
    "profile_identifiers": True,
    "profile_changes": True,
    "profiles": True,
    "workspace_rules": True,
    "kpi_facts": True,
    "activity_days": True,
    "tag_membership": True,  # FINAL also drops the rows of members that left (is_deleted): current members only
    "tag_changes": True,
    "tag_definitions": True,
}

WORKSPACE_PARAMETER = "cdp_workspace_id"


# Functions are refused by name, compared in lower case: ClickHouse takes many of these in any
# case (VERSION(), User(), TIMEZONE()), and refusing a spelling ClickHouse would reject anyway costs nothing.

# Functions that reach data by name rather than through FROM, so the table rewrite cannot confine
# them; the IN family is here because `x IN db.table` reads a table, `url` and `s3` because they fetch.
DATA_FUNCTIONS = frozenset(
    name.lower()
    for name in (
        "file", "url", "s3", "joinGet", "joinGetOrNull", "hasColumnInTable", "catboostEvaluate", "modelEvaluate",
        "evalMLMethod", "in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn", "globalNullIn",
        "globalNotNullIn", "sleep", "sleepEachRow",
    )
)  # fmt: skip
DATA_FUNCTION_PREFIXES = ("dict",)  # dictGet*, dictHas, dictIsIn...: dictionaries are not workspace data

# Functions that reveal the host, the server, its configuration or the connection. Such details
# help an attacker (a version to match exploits against; host names, ports and users to aim at)
# and say nothing about customers: the SQL role is for analysing the workspace's projections.
HOST_FUNCTIONS = frozenset(
    name.lower()
    for name in (
        # the machine
        "hostName", "hostname", "FQDN", "fullHostName", "getOSKernelVersion", "uptime", "filesystemAvailable",
        "filesystemCapacity", "filesystemUnreserved", "filesystemFree", "tcpPort", "getServerPort",
        "showCertificate", "addressToLine", "addressToLineWithInlines", "addressToSymbol", "demangle", "tid",
        "logTrace",
        # the server: build, identity, cluster, configuration, time zone
        "version", "revision", "buildId", "serverUUID", "displayName", "hasThreadFuzzer", "shardNum", "shardCount",
        "zookeeperSessionUptime", "getMacro", "getSetting", "getSettingOrDefault", "getServerSetting",
        "getMergeTreeSetting", "globalVariable", "timezone", "timeZone", "serverTimezone", "serverTimeZone",
        "transactionID", "transactionLatestSnapshot", "transactionOldestSnapshot",
        # the connection: user, roles, profiles, request, query ids
        "currentUser", "user", "current_user", "session_user", "authenticatedUser", "authUser", "pgGetUserById",
        "pg_get_userbyid", "currentProfiles", "enabledProfiles", "defaultProfiles", "currentRoles", "enabledRoles",
        "defaultRoles", "connectionId", "connection_id", "getClientHTTPHeader", "currentHandler",
        "currentRequestURL", "queryID", "query_id", "initialQueryID", "initial_query_id", "currentQueryID",
        "current_query_id",
    )
)  # fmt: skip

# sqlglot parses a few functions into expressions of its own instead of exp.Anonymous: `version()`
# and `CURRENT_VERSION()` both become exp.CurrentVersion, which it writes back as `VERSION()`.
# Such expressions are named here by the ClickHouse function they run as; the others sqlglot
# makes of ClickHouse SQL (exp.CurrentUser, exp.SessionUser) are named by sql_name(), which is
# a ClickHouse alias already (current_user, session_user).
_RUNS_AS: dict[type[exp.Expression], str] = {exp.CurrentVersion: "version"}


def _function_name(node: exp.Func) -> str:
    """The function's name as the query wrote it, or as ClickHouse will run it."""
    if isinstance(node, exp.Anonymous):
        return node.name
    return _RUNS_AS.get(type(node)) or node.sql_name().lower()


class SqlRefused(Exception):
    """A query that is not run; `status` is the HTTP status that fits, `reason` a short code."""

    def __init__(self, status: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details


def _forbidden(reason: str, message: str) -> SqlRefused:
    return SqlRefused(403, reason, message)


def _tables_hint() -> str:
    return ", ".join(sorted(ANALYST_TABLES))


def _parse_one(sql: str) -> exp.Expression:
    try:
        statements = [s for s in sqlglot.parse(sql, read="clickhouse") if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        line, column = first.get("line"), first.get("col")
        near = f" near {first['highlight']!r}" if first.get("highlight") else ""
        raise SqlRefused(
            400, "malformed", f"malformed SQL at line {line}, column {column}{near}: "
            f"{first.get('description', str(exc))}", line=line, column=column,
        ) from None  # fmt: skip
    except sqlglot.errors.SqlglotError as exc:  # tokenizer errors, e.g. an unterminated string
        raise SqlRefused(400, "malformed", f"malformed SQL: {exc}") from None
    if not statements:
        raise SqlRefused(400, "empty", "the query is empty: send one SELECT statement")
    if len(statements) > 1:
        raise _forbidden("multiple_statements", f"{len(statements)} statements sent: send exactly one SELECT")
    return statements[0]


def _check_statement(tree: exp.Expression) -> None:
    if not isinstance(tree, (exp.Select, exp.SetOperation, exp.Subquery)):
        kind = tree.sql(dialect="clickhouse").split(None, 1)[0].upper() if isinstance(tree, exp.Command) else None
        kind = kind or type(tree).__name__.upper()
        raise _forbidden("not_select", f"{kind} is not allowed: this endpoint runs read-only SELECT queries only")


def _check_node(node: exp.Expression) -> None:
    if node.args.get("settings"):
        raise _forbidden("settings", "a SETTINGS clause is not allowed: the server sets the limits of analyst queries")
    if node.args.get("format"):
        raise _forbidden("format", "a FORMAT clause is not allowed: results are always returned as JSON")
    if isinstance(node, exp.Into):
        raise _forbidden("into", "SELECT ... INTO is not allowed: this endpoint only reads")
    if isinstance(node, exp.Placeholder):
        raise SqlRefused(400, "parameter", "query parameters ({name:Type}) are not supported: write the values inline")
    if isinstance(node, (exp.Command, exp.DDL, exp.DML, exp.Set)):
        raise _forbidden("not_select", "only SELECT is allowed: this endpoint is read-only")
    if isinstance(node, exp.In) and isinstance(node.args.get("field"), exp.Column):
        name = node.args["field"].sql(dialect="clickhouse")
        raise _forbidden("in_table", f"IN {name} reads a table directly: write IN (SELECT ... FROM {name})")
    if isinstance(node, exp.Values):  # `FROM values('x String', 'a')` parses as VALUES, not as a table function
        raise _forbidden(
            "table_function", "table function values() is not allowed: FROM may name only the workspace tables "
            f"({_tables_hint()}); write constant rows as an array instead, e.g. SELECT arrayJoin(['a', 'b']) AS x",
        )  # fmt: skip
    if isinstance(node, exp.Func):
        name = _function_name(node)
        if name.lower() in HOST_FUNCTIONS:
            raise _forbidden(
                "function", f"function {name}() is not allowed: it reveals the host or the server, which this endpoint "
                "never exposes; query only the workspace's tables (the platform's operators can give server details)",
            )  # fmt: skip
        if name.lower() in DATA_FUNCTIONS or name.lower().startswith(DATA_FUNCTION_PREFIXES):
            raise _forbidden("function", f"function {name}() is not allowed: it reaches outside the workspace's tables")


def _scoped_table(database: str, table: str, alias: str) -> exp.Expression:
    """`(SELECT * FROM db.table [FINAL] WHERE workspace_id = {ws:String}) AS alias`."""
    final = " FINAL" if ANALYST_TABLES[table] else ""
    inner = sqlglot.parse_one(
        f"SELECT * FROM {exp.to_identifier(database).sql('clickhouse')}.{table}{final} "
        f"WHERE workspace_id = {{{WORKSPACE_PARAMETER}:String}}",
        read="clickhouse",
    )
    return exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(alias)))


def prepare(sql: str, database: str) -> str:
    """The query rewritten so that it reads only the caller's workspace, or SqlRefused.

    The result names the workspace as the server-side parameter WORKSPACE_PARAMETER.
    """
    tree = _parse_one(sql)
    _check_statement(tree)
    for node in tree.walk():
        _check_node(node)

    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE) if not cte.args.get("scalar")}
    for name in ctes & ANALYST_TABLES.keys():
        raise _forbidden("cte_shadows_table", f"WITH {name} AS (...) hides the table {name}: name the CTE differently")
    # Out-of-scope CTE names would resolve to same-named tables of the database: give every
    # CTE a name no table has, so such a reference fails instead of reading an unfiltered table.
    renamed = {name: f"cte_{i}_{name}" for i, name in enumerate(sorted(ctes))}
    for cte in tree.find_all(exp.CTE):
        if not cte.args.get("scalar") and cte.alias_or_name in renamed:
            cte.args["alias"].set("this", exp.to_identifier(renamed[cte.alias_or_name]))

    for table in list(tree.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier):
            raise _forbidden(
                "table_function",
                f"table function {table.this.sql(dialect='clickhouse')} is not allowed: "
                f"FROM may name only the workspace tables ({_tables_hint()})",
            )
        name, db = table.name, table.db
        if table.catalog or (db and db != database):
            raise _forbidden(
                "other_database",
                f"{table.sql(dialect='clickhouse')} is outside the workspace: system tables, information_schema "
                f"and other databases are not readable; the tables are {_tables_hint()}",
            )
        if not db and name in renamed:
            alias = table.alias_or_name  # keeps `cte.column` qualifiers working after the rename
            table.set("this", exp.to_identifier(renamed[name]))
            table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
            continue
        if name not in ANALYST_TABLES:
            raise _forbidden("unknown_table", f"table {name!r} is not readable here; the tables are {_tables_hint()}")
        if table.args.get("sample"):
            raise SqlRefused(400, "sample", f"SAMPLE is not supported on {name}: filter with WHERE instead")
        scoped = _scoped_table(database, name, table.alias_or_name)
        # A user's FINAL is redundant: the subquery already reads with FINAL where it matters.
        target = table.parent if isinstance(table.parent, exp.Final) else table
        target.replace(scoped)
    return tree.sql(dialect="clickhouse")


@dataclass(frozen=True)
class SqlLimits:
    max_rows: int = 10_000
    timeout_s: float = 10.0
    max_memory: int = 1 << 30


@dataclass(frozen=True)
class SqlResult:
    columns: list[dict[str, str]]
    rows: list[list[Any]]
    truncated: bool
    elapsed_ms: float


# ClickHouse error codes of a query stopped by a limit, and the limit's name.
_LIMIT_ERRORS = {
    159: "time",  # TIMEOUT_EXCEEDED
    241: "memory",  # MEMORY_LIMIT_EXCEEDED
    158: "rows_to_read",  # TOO_MANY_ROWS
    307: "bytes_to_read",  # TOO_MANY_BYTES
    396: "result",  # TOO_MANY_ROWS_OR_BYTES
}


class AnalystSql:
    """Runs analysts' queries on clients of their own.

    The platform's shared client serialises every projection write and API read behind one
    lock; a ten-second analyst query there would stall ingest. chDB runs queries of separate
    handles concurrently, so analysts get `pool_size` dedicated clients and wait at most
    the time limit for one.
    """

    def __init__(
        self, connect: Callable[[], Any], database: str, limits: SqlLimits, pool_size: int = 2
    ) -> None:
        self.database = database
        self.limits = limits
        self._connect = connect
        self._idle: LifoQueue[Any] = LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)

    def settings(self) -> dict[str, Any]:
        """Per-query ClickHouse settings; readonly=1 also forbids writes and table functions that write or fetch."""
        return {
            "readonly": 1,
            "max_execution_time": self.limits.timeout_s,
            "max_memory_usage": self.limits.max_memory,
            # `limit` caps the result exactly (result_overflow_mode=break stops only at a block
            # boundary); one row more than allowed tells that the result was cut.
            "limit": self.limits.max_rows + 1,
        }

    def run(self, workspace_id: str, sql: str) -> SqlResult:
        query = prepare(sql, self.database)
        if not self._slots.acquire(timeout=self.limits.timeout_s):
            raise SqlRefused(503, "busy", "all analyst query slots are busy; retry in a few seconds")
        try:
            try:
                client = self._idle.get_nowait()
            except Empty:
                client = self._connect()
            started = time.monotonic()
            parameters = {WORKSPACE_PARAMETER: workspace_id}
            try:
                result = client.query(query, parameters=parameters, settings=self.settings())
                columns = [{"name": n, "type": t.name} for n, t in zip(result.column_names, result.column_types)]
                if not columns:
                    # An empty result carries no column metadata; DESCRIBE names them without reading rows.
                    describe = f"DESCRIBE TABLE ({query})"
                    described = client.query(describe, parameters=parameters, settings=self.settings())
                    columns = [{"name": row[0], "type": row[1]} for row in described.result_rows]
            except Exception as exc:
                raise _refusal(exc) from None
            finally:
                self._idle.put(client)
            elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        finally:
            self._slots.release()
        rows = [list(row) for row in result.result_rows]
        truncated = len(rows) > self.limits.max_rows
        return SqlResult(columns, rows[: self.limits.max_rows], truncated, elapsed_ms)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except Empty:
                return


def _refusal(exc: Exception) -> SqlRefused:
    """A ClickHouse error as a refusal: limits → 422, readonly violations → 403, the rest → 400."""
    code = getattr(exc, "code", None)
    message = str(exc).strip()
    if code in _LIMIT_ERRORS:
        return SqlRefused(
            422, "limit", f"the query exceeded the {_LIMIT_ERRORS[code]} limit and was stopped: "
            f"narrow it (WHERE, LIMIT, fewer joins) ({message})", limit=_LIMIT_ERRORS[code],
        )  # fmt: skip
    if code == 164:  # READONLY
        return SqlRefused(403, "readonly", f"refused by ClickHouse's readonly mode: {message}")
    return SqlRefused(400, "query_error", f"ClickHouse could not run the query: {message}")
