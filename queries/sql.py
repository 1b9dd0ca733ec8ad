"""POST /v1/sql: read-only SQL for analysts over their workspace's tables (docs/sql.md)."""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Body, Depends, HTTPException
from fastapi.responses import Response

from infra.http_errors import error_body
from projections.analyst_sql import AnalystSql, SqlRefused
from queries.http import MAX_INT, MIN_INT, json_problems, read_access


class SqlService(Protocol):
    analyst_sql: AnalystSql | None

    def authorise_read(self, key: str) -> str | None: ...


_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


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


def _json(body: Any, status_code: int = 200) -> Response:
    # Maps with non-string keys, Decimals and IP addresses come back from ClickHouse too; the
    # tables keep times in UTC and the client may return them without a zone.
    try:
        content = orjson.dumps(body, default=str, option=_OPTIONS)
    except TypeError:  # a map keyed by tuples or arrays, an integer beyond 64 bits
        content = orjson.dumps(_plain(body), default=str, option=_OPTIONS)
    return Response(content, status_code=status_code, media_type="application/json")


def build_sql_router(service: SqlService) -> APIRouter:
    router = APIRouter(tags=["sql"])

    workspace = read_access(service)

    @router.post(
        "/v1/sql",
        summary="Run one read-only SELECT over the workspace's tables",
        description="Body: {\"query\": \"SELECT ...\"}. Limits, errors and tables: docs/sql.md and docs/tables.md.",
    )
    def run_sql(
        payload: dict[str, Any] = Body(..., examples=[{"query": "SELECT type, count() FROM events GROUP BY type"}]),
        workspace_id: str = Depends(workspace),
    ) -> Response:
        query = payload.get("query")
        if not isinstance(query, str) or not query.strip():
            message = "send the SQL as a string in 'query', e.g. {\"query\": \"SELECT 1\"}"
            return _json(error_body("invalid_query", message, reason="empty"), 400)
        if json_problems(query):
            message = "the query is not valid Unicode text (it holds a lone surrogate)"
            return _json(error_body("invalid_query", message, reason="encoding"), 400)
        if service.analyst_sql is None:
            raise HTTPException(503, "the platform is still starting; retry in a moment")
        try:
            result = service.analyst_sql.run(workspace_id, query)
        except SqlRefused as refused:
            code = {400: "invalid_query", 403: "forbidden"}.get(refused.status, "query_limit")
            return _json(error_body(code, refused.message, reason=refused.reason, **refused.details), refused.status)
        return _json(
            {
                "columns": result.columns,
                "rows": result.rows,
                "row_count": len(result.rows),
                "truncated": result.truncated,
                "elapsed_ms": result.elapsed_ms,
            }
        )

    return router
