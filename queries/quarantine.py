"""HTTP adapter of the quarantine service (services/quarantine.py): list log entries a projection set
aside, and apply them again after a fix.

An entry a projection could not apply is set aside with its reason so that the
rest of the log moves on (streams/pipeline.py); these endpoints show what was
set aside and re-apply it once the cause is fixed (a code fix, or a change of
the workspace's rules).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Requires, services
from api.responses import json_response
from services import Services
from services.quarantine import ListQuarantined, QuarantineService, RetryQuarantined

router = APIRouter(tags=["operations"])
quarantine_admin = Requires("admin", "reading or re-applying quarantined entries")


def quarantine(built: Services = Depends(services)) -> QuarantineService:
    return built.quarantine


class RetryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    projection: str | None = Field(None, description="only this projection's entries (profiles, tags, kpis)")
    positions: list[int] | None = Field(None, max_length=10_000, description="only these log positions")


@router.get("/v1/quarantine", summary="Log entries a projection could not apply, with the reason")
def list_quarantined(
    include_resolved: bool = False, workspace_id: str = Depends(quarantine_admin),
    service: QuarantineService = Depends(quarantine),
) -> Response:  # fmt: skip
    return json_response({"entries": service.entries(ListQuarantined(workspace_id, include_resolved))})


@router.post("/v1/quarantine/retry", summary="Apply quarantined entries again (after a fix)")
def retry(
    request: RetryRequest | None = None, workspace_id: str = Depends(quarantine_admin),
    service: QuarantineService = Depends(quarantine),
) -> Response:  # fmt: skip
    request = request or RetryRequest()
    command = RetryQuarantined(workspace_id, request.projection, tuple(request.positions or ()))
    return json_response(service.retry(command))
