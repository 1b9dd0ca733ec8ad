"""Webhook sources over HTTP: `POST /v1/webhooks/{source}` receives a tool's own JSON, and the mapping API.

The HTTP adapter of services/webhooks.py. A tool that can only call a URL posts its payload; the workspace's mapping for
`{source}` (domain/webhooks.py) turns it into Segment calls, which take the one
intake path every source takes (ingest/intake.py): valid calls are recorded,
refused ones kept in the dead-letter store with the reason. A payload the
mapping cannot turn into calls (its event type is not mapped, a required field
is missing, it is not JSON) is kept in the dead-letter store too: every
delivery that reaches the platform is in the log or in the dead-letter store,
and the answer says which. Answers other than 2xx make tools retry, so a
delivery refused for want of a mapping is stored by a retry once the mapping is
fixed (or by `POST /v1/webhooks/{source}/replay`).

Authentication: the workspace's write key as the HTTP Basic username, as
`Authorization: Bearer`, or, for tools that cannot send headers, as `?key=` on
the receiving URL (which must then be kept as secret as the key). Without a
known key nothing is stored (401). Errors are `{"code", "message", ...}`.
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.auth import BadCredentials, Requires, basic_username, bearer, services, write_key_scheme
from api.errors import ApiError
from api.responses import json_response
from services import Services
from services.webhooks import DELIVERIES, PutMapping, Receive, Replay, ReplayRequest, WebhookService, view

router = APIRouter(tags=["webhooks"])


def webhooks(built: Services = Depends(services)) -> WebhookService:
    return built.webhooks


def _workspace(request: Request, built: Services, allow_query: bool) -> str:
    """The workspace of the write key: HTTP Basic username, Bearer token, or (receiver only) `?key=`."""
    try:
        key = bearer(request) or basic_username(request) or ""
    except BadCredentials:
        raise ApiError(401, "unauthorized", "the Authorization header is not valid HTTP Basic credentials; "
                                            "send the write key as the username") from None  # fmt: skip
    if not key and allow_query:
        key = request.query_params.get("key", "").strip()
    where = "as the HTTP Basic username, as 'Authorization: Bearer <write key>'" + (
        ", or as ?key=<write key> on the URL" if allow_query else "")  # fmt: skip
    if not key:
        raise ApiError(401, "unauthorized", f"missing write key; send it {where}. Nothing was kept")
    workspace_id = built.access.authorise_write(key, limited=True)
    if workspace_id is None:
        raise ApiError(401, "unauthorized", "unknown write key; use the write key of your workspace (cdp up "
                                            "prints it). Nothing was kept")  # fmt: skip
    return workspace_id


mappings_admin = Requires("admin", "webhook mappings and replays")


def receiver_key(request: Request, built: Services = Depends(services)) -> str:
    """The receiver also takes `?key=`; a refused delivery is counted."""
    try:
        return _workspace(request, built, allow_query=True)
    except ApiError:
        DELIVERIES.labels("unknown", "refused").inc()
        raise


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the body of {declared} bytes is above the {limit} byte limit; nothing was "
                                         "kept")  # fmt: skip
    chunks = bytearray()
    async for chunk in request.stream():
        chunks.extend(chunk)
        if len(chunks) > limit:
            raise ApiError(413, "too_large", f"the body is above the {limit} byte limit; nothing was kept")
    return bytes(chunks)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "")


@router.post("/v1/webhooks/{source}", summary="Receive a tool's webhook; its mapping turns it into calls",
             dependencies=[Depends(write_key_scheme)])
async def receive(
    source: str, request: Request, workspace_id: str = Depends(receiver_key), built: Services = Depends(services)
) -> Response:
    received_at = datetime.now(timezone.utc)
    try:
        body = await _body(request, built.max_batch_bytes)
    except ApiError:
        DELIVERIES.labels("unknown", "refused").inc()
        raise
    delivery = await built.webhooks.receive(Receive(workspace_id, source, body, _content_type(request), received_at))
    if delivery.refusal is None:
        return json_response(delivery.result)
    code, message = delivery.refusal
    return json_response({"code": code, "message": message, **delivery.result}, 422)


@router.post("/v1/webhooks/{source}/replay", summary="Map the source's dead-lettered payloads again and store them")
async def replay(
    source: str, request: Request, workspace_id: str = Depends(mappings_admin), service: WebhookService = Depends(webhooks)
) -> Response:
    raw = await request.body()
    try:
        wanted = ReplayRequest.model_validate(orjson.loads(raw) if raw.strip() else {})
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise ApiError(400, "invalid_request", f"the body is {{\"ids\": [...], \"limit\": n}} or empty: {exc}") from None
    return json_response(await service.replay(Replay(workspace_id, source, wanted)))


@router.put("/v1/webhooks/{source}/mapping", summary="Install or change a source's mapping (YAML or JSON)")
async def put_mapping(
    source: str, request: Request, workspace_id: str = Depends(mappings_admin), service: WebhookService = Depends(webhooks)
) -> Response:
    view, created = await service.put_mapping(PutMapping(workspace_id, source, await request.body(), _content_type(request)))
    return json_response(view, 201 if created else 200)


@router.get("/v1/webhooks/{source}/mapping", summary="A source's mapping (JSON; as written with Accept: yaml)")
def get_mapping(
    source: str, request: Request, workspace_id: str = Depends(mappings_admin), service: WebhookService = Depends(webhooks)
) -> Response:
    stored = service.mapping(workspace_id, source)
    if "yaml" in request.headers.get("accept", ""):
        return Response(stored.text, media_type="application/yaml",
                        headers={"X-Mapping-Version": str(stored.mapping_version)})  # fmt: skip
    return json_response(view(stored))


@router.delete("/v1/webhooks/{source}/mapping", summary="Delete a source's mapping")
async def remove_mapping(
    source: str, workspace_id: str = Depends(mappings_admin), service: WebhookService = Depends(webhooks)
) -> Response:
    version = await service.delete_mapping(workspace_id, source)
    return json_response({"source": source, "version": version, "deleted": True})


@router.get("/v1/webhooks", summary="The workspace's webhook sources and their mappings' versions")
def list_sources(workspace_id: str = Depends(mappings_admin), service: WebhookService = Depends(webhooks)) -> Response:
    return json_response({"webhooks": service.sources(workspace_id)})
