"""POST /v1/sql: read-only SQL for analysts over their workspace's tables (docs/sql.md)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response

from api.auth import Requires, services
from api.errors import ApiError
from projections.analyst_sql import AnalystSql
from services import Services
from services.documents import MAX_INT, MIN_INT, json_problems

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z

router = APIRouter(tags=["sql"])
sql_read = Requires("read:sql", "analyst SQL")


def analyst_sql(built: Services = Depends(services)) -> AnalystSql:
    return built.analyst_sql


def _plain(value: Any) -> Any:
    """What orjson cannot write, made plain: map keys that are tuples or arrays (ClickHouse
    Map(Tuple(...), ...)) as their JSON text, and integers beyond 64 bits (Int128, UInt256)
    as decimal strings, as ClickHouse's own JSON output quotes them."""
    if isinstance(value, dict):
        return {_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not MIN_INT <= value <= MAX_INT:
        return str(value)
    return value


def _key(key: Any) -> Any:
    if isinstance(key, (list, tuple, dict)):
        return orjson.dumps(_plain(key), default=str, option=_OPTIONS).decode()
    return _plain(key)


def _rows(body: Any) -> Response:
    """ClickHouse's answers as JSON: maps with non-string keys, Decimals and IP addresses come back too,
    and the tables keep times in UTC that the client may return without a zone."""
    try:
        content = orjson.dumps(body, default=str, option=_OPTIONS)
    except TypeError:  # a map keyed by tuples or arrays, an integer beyond 64 bits
        content = orjson.dumps(_plain(body), default=str, option=_OPTIONS)
    return Response(content, media_type="application/json")


@router.post(
    "/v1/sql",
    summary="Run one read-only SELECT over the workspace's tables",
    description="Body: {\"query\": \"SELECT ...\"}. Limits, errors and tables: docs/sql.md and docs/tables.md.",
)
def run_sql(
    payload: dict[str, Any] = Body(..., examples=[{"query": "SELECT type, count() FROM events GROUP BY type"}]),
    workspace_id: str = Depends(sql_read),
    sql: AnalystSql = Depends(analyst_sql),
) -> Response:
    query = payload.get("query")
    if not isinstance(query, str) or not query.strip():
        message = "send the SQL as a string in 'query', e.g. {\"query\": \"SELECT 1\"}"
        raise ApiError(400, "invalid_query", message, reason="empty")
    if json_problems(query):
        raise ApiError(400, "invalid_query", "the query is not valid Unicode text (it holds a lone surrogate)",
                       reason="encoding")  # fmt: skip
    result = sql.run(workspace_id, query)  # SqlRefused: its status and reason (api/errors.py)
    return _rows({"columns": result.columns, "rows": result.rows, "row_count": len(result.rows),
                  "truncated": result.truncated, "elapsed_ms": result.elapsed_ms})  # fmt: skip
