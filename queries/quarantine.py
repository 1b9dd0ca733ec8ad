"""Quarantined log entries: list them, and apply them again after a fix.

An entry a projection could not apply is set aside with its reason so that the
rest of the log moves on (streams/pipeline.py); these endpoints show what was
set aside and re-apply it once the cause is fixed (a code fix, or a change of
the workspace's rules).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from queries.http import json_response, read_access, write_access


class QuarantineService(Protocol):
    def authorise_read(self, key: str) -> str | None: ...
    def authorise_write(self, key: str) -> str | None: ...
    def quarantined(self, workspace_id: str, include_resolved: bool = False) -> list[dict[str, Any]]: ...
    def retry_quarantined(
        self, workspace_id: str, projection: str | None = None, positions: Sequence[int] | None = None
    ) -> dict[str, Any]: ...


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    projection: str | None = Field(None, description="only this projection's entries (profiles, tags, kpis)")
    positions: list[int] | None = Field(None, max_length=10_000, description="only these log positions")


def build_quarantine_router(service: QuarantineService) -> APIRouter:
    router = APIRouter(tags=["operations"])
    reader = read_access(service)
    writer = write_access(service, "re-applying quarantined entries needs the workspace's write key")

    @router.get("/v1/quarantine", summary="Log entries a projection could not apply, with the reason")
    def list_quarantined(include_resolved: bool = False, workspace_id: str = Depends(reader)) -> Response:
        return json_response({"entries": service.quarantined(workspace_id, include_resolved)})

    @router.post("/v1/quarantine/retry", summary="Apply quarantined entries again (after a fix)")
    def retry(request: RetryRequest | None = None, workspace_id: str = Depends(writer)) -> Response:
        request = request or RetryRequest()
        return json_response(service.retry_quarantined(workspace_id, request.projection, request.positions))

    return router
