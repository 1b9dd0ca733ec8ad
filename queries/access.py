"""HTTP adapter of access: a workspace's keys and audit log (admin key), and workspaces (platform key).

A key is in the answer that makes it (`POST /v1/keys`, a rotation, a new workspace)
and never again: listings show ids, kinds, scopes, names and expiry.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response

from api.auth import Requires, audit_target, note, platform_key, services
from api.errors import ApiError
from api.params import QUERY_TIME, QUERY_TIME_HELP, parse_query_time
from api.responses import json_response
from domain.access import KINDS, READ_SCOPES
from services import Services
from services.audit import AuditLog
from services.keys import CreateKey, KeyService, WorkspaceService

router = APIRouter(tags=["access"])
keys_admin = Requires("admin", "managing keys")
audit_admin = Requires("admin", "reading the audit log")
KEY_EXAMPLE = {"kind": "read", "scopes": ["kpis"], "name": "partner dashboard", "expires_at": "2027-06-30T00:00:00Z"}


def keys(built: Services = Depends(services)) -> KeyService:
    return built.keys


def workspaces(built: Services = Depends(services)) -> WorkspaceService:
    return built.workspaces


def audit_log(built: Services = Depends(services)) -> AuditLog:
    return built.audit


def _object(payload: Any, allowed: set[str], example: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ApiError(400, "bad_request", f"send a JSON object such as {example}")
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s) {', '.join(unknown)}: send {', '.join(sorted(allowed))}")
    return payload


@router.post(
    "/v1/keys", status_code=201, summary="Make a key (admin): write, read with scopes, or admin; shown this once",
    description=f"`kind`: one of {', '.join(KINDS)}. `scopes` (read keys only, default all): any of "
    f"{', '.join(READ_SCOPES)}. `expires_at` (optional): ISO 8601; the key stops working then. The answer holds "
    "the key itself, which is never shown again.",
)  # fmt: skip
async def create_key(
    request: Request, payload: Any = Body(..., examples=[KEY_EXAMPLE]), workspace_id: str = Depends(keys_admin),
    service: KeyService = Depends(keys),
) -> Response:  # fmt: skip
    body = _object(payload, {"kind", "scopes", "name", "expires_at"}, '{"kind": "read", "scopes": ["kpis"]}')
    kind, scopes, name = body.get("kind"), body.get("scopes") or [], body.get("name") or ""
    if kind not in KINDS:
        raise ApiError(400, "bad_request", f"kind: one of {', '.join(KINDS)}")
    if not isinstance(scopes, list) or not all(isinstance(x, str) for x in scopes):
        raise ApiError(400, "bad_request", f"scopes: a list of {', '.join(READ_SCOPES)}")
    if not isinstance(name, str) or len(name) > 100:
        raise ApiError(400, "bad_request", "name: text of at most 100 characters")
    expires = body.get("expires_at")
    if expires is not None and not isinstance(expires, str):
        raise ApiError(400, "bad_request", "expires_at: an ISO 8601 time such as 2027-06-30T00:00:00Z")
    made = await service.create(CreateKey(workspace_id, kind, tuple(scopes), name, parse_query_time("expires_at", expires)))
    audit_target(request, made.grant.key_id)
    return json_response(made.to_json(), 201)


@router.get("/v1/keys", summary="The workspace's live keys (admin), without the keys themselves")
def list_keys(workspace_id: str = Depends(keys_admin), service: KeyService = Depends(keys)) -> Response:
    return json_response({"keys": service.listing(workspace_id)})


@router.post("/v1/keys/{key_id}/rotate", status_code=201, summary="A new key in place of this one, which is revoked")
async def rotate_key(
    key_id: str, request: Request, workspace_id: str = Depends(keys_admin), service: KeyService = Depends(keys)
) -> Response:
    audit_target(request, key_id)
    return json_response((await service.rotate(workspace_id, key_id)).to_json(), 201)


@router.delete("/v1/keys/{key_id}", status_code=204, summary="Revoke a key: it stops working at once")
async def revoke_key(
    key_id: str, request: Request, workspace_id: str = Depends(keys_admin), service: KeyService = Depends(keys)
) -> Response:
    audit_target(request, key_id)
    await service.revoke(workspace_id, key_id)
    return Response(status_code=204)


@router.get(
    "/v1/audit", summary="The audit log (admin): admin actions and reads of personal data, oldest first",
    description="Each entry: who (`key_id`, `key_kind`), what (`method`, `endpoint` as the route's template, "
    "`target`: the profile id read or the slug or key changed), when (`at`), from where (`address`) and the "
    "`status` answered. Page with `after` = the last `id` seen (`next_after`).",
)  # fmt: skip
def get_audit(
    since: str | None = Query(None, alias="from", description=QUERY_TIME_HELP, json_schema_extra=QUERY_TIME),
    until: str | None = Query(None, alias="to", description=QUERY_TIME_HELP, json_schema_extra=QUERY_TIME),
    key_id: str | None = None, target: str | None = None,
    action: str | None = Query(None, pattern="^(read|admin|platform)$", description="read (personal data), admin or platform"),
    after: int = Query(0, ge=0, le=2**63 - 1), limit: int = Query(100, ge=1, le=1000),
    workspace_id: str = Depends(audit_admin), service: AuditLog = Depends(audit_log),
) -> Response:  # fmt: skip
    entries = service.entries(workspace_id, parse_query_time("from", since), parse_query_time("to", until), key_id,
                              target, action, after, limit)  # fmt: skip
    return json_response({"entries": entries, "next_after": entries[-1]["id"] if len(entries) == limit else None})


@router.post("/v1/workspaces", status_code=201, summary="Make a workspace (platform key), with its first keys",
             description="The answer holds the new workspace's admin, write and read keys, shown this once.")
async def create_workspace(
    request: Request, payload: Any = Body(..., examples=[{"name": "eu-shop"}]), _: None = Depends(platform_key),
    service: WorkspaceService = Depends(workspaces),
) -> Response:  # fmt: skip
    body = _object(payload, {"name"}, '{"name": "eu-shop"}')
    made = await service.create(body.get("name", ""))
    note(request, made["id"], "platform", "platform", "platform")  # in the new workspace's audit log
    audit_target(request, made["id"])
    return json_response(made, 201)


@router.get("/v1/workspaces", summary="Every workspace (platform key)")
def list_workspaces(_: None = Depends(platform_key), service: WorkspaceService = Depends(workspaces)) -> Response:
    return json_response({"workspaces": service.listing()})


@router.patch("/v1/workspaces/{workspace_id}", summary="Rename a workspace (platform key); its id stays")
async def rename_workspace(
    workspace_id: str, request: Request, payload: Any = Body(..., examples=[{"name": "eu-shop"}]),
    _: None = Depends(platform_key), service: WorkspaceService = Depends(workspaces),
) -> Response:  # fmt: skip
    body = _object(payload, {"name"}, '{"name": "eu-shop"}')
    renamed = await service.rename(workspace_id, body.get("name", ""))
    note(request, workspace_id, "platform", "platform", "platform")
    audit_target(request, workspace_id)
    return json_response(renamed)
