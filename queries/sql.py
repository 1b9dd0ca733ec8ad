"""POST /v1/sql: read-only SQL for analysts over their workspace's tables (docs/sql.md)."""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from fastapi import APIRouter, Body, Depends, HTTPException
from fastapi.responses import Response

from projections.analyst_sql import AnalystSql, SqlRefused
from queries.http import read_access


class SqlService(Protocol):
    analyst_sql: AnalystSql | None

    def authorise_read(self, key: str) -> str | None: ...


def _json(body: Any, status_code: int = 200) -> Response:
    # Maps with non-string keys, Decimals and IP addresses come back from ClickHouse too; the
    # tables keep times in UTC and the client may return them without a zone.
    content = orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)
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
            return _json({"error": "send the SQL as a string in 'query', e.g. {\"query\": \"SELECT 1\"}",
                          "reason": "empty"}, 400)  # fmt: skip
        if service.analyst_sql is None:
            raise HTTPException(503, "the platform is still starting; retry in a moment")
        try:
            result = service.analyst_sql.run(workspace_id, query)
        except SqlRefused as refused:
            return _json({"error": refused.message, "reason": refused.reason, **refused.details}, refused.status)
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
