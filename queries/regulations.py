"""HTTP adapter of regulations: erase or suppress a person (services/regulations.py).

A regulation needs an admin key: the write key ships inside web pages and apps,
and must not be able to erase anyone.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response

from api.auth import Requires, services
from api.errors import ApiError
from api.responses import json_response
from domain.regulations import TYPES
from services import Services
from services.regulations import MAX_IDENTIFIERS, RegulationService, RequestRegulation

router = APIRouter(tags=["regulations"])
regulation_key = Requires("admin", "regulations (erasure and suppression)")
EXAMPLE = {"type": "delete", "identifiers": ["email:ann@example.com"]}


def regulations(built: Services = Depends(services)) -> RegulationService:
    return built.regulations


@router.post(
    "/v1/regulations", status_code=202,
    summary="Erase or suppress a person: delete, suppress, unsuppress, suppress_with_delete",
    description="`identifiers`: any of the person's identifiers (type:value) or profile ids; each finds the profile. "
    "`delete` destroys the keys of all the person's identifiers (their events in the log become unreadable) and "
    "deletes their rows from every projection, with `deleted` on cdp.profile-changes and `exited` on "
    "cdp.tag-changes; `suppress` drops later calls carrying any of them at ingest; `unsuppress` ends a suppression; "
    "`suppress_with_delete` is both. Answers 202 with the regulation; `GET /v1/regulations/{id}` shows its progress.",
)  # fmt: skip
async def request_regulation(
    payload: Any = Body(..., examples=[EXAMPLE]),
    workspace_id: str = Depends(regulation_key),
    service: RegulationService = Depends(regulations),
) -> Response:
    if not isinstance(payload, dict):
        raise ApiError(400, "bad_request", 'send a JSON object: {"type": "delete", "identifiers": ["email:…"]}')
    unknown = sorted(set(payload) - {"type", "identifiers"})
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s) {', '.join(unknown)}: send type and identifiers")
    kind, idents = payload.get("type"), payload.get("identifiers")
    if kind not in TYPES:
        raise ApiError(400, "bad_request", f"type: one of {', '.join(TYPES)}")
    if not isinstance(idents, list) or not all(isinstance(i, str) for i in idents):
        raise ApiError(400, "bad_request", f"identifiers: a list of 1 to {MAX_IDENTIFIERS} type:value strings")
    done = await service.request(RequestRegulation(workspace_id, kind, tuple(idents)))
    return json_response(done, 202)


@router.get("/v1/regulations/{regulation_id}", summary="A regulation and its progress")
def get_regulation(
    regulation_id: str, workspace_id: str = Depends(regulation_key), service: RegulationService = Depends(regulations)
) -> Response:
    return json_response(service.get(workspace_id, regulation_id))
