"""Segment-compatible HTTP ingest: `/v1/batch`, the single-call endpoints and analytics.js's short paths.

Translates requests into items for the intake (ingest/intake.py) and its outcome
into status codes. Valid events are stored beside invalid ones, which are kept
in the dead-letter store with the reason, as Segment and RudderStack do:
200 `{"success": true, "accepted": N, "stored", "duplicates", "rejected": [...]}`
once every valid event is durably stored. Only a request that cannot be read at
all is refused as a whole: 400 (not JSON, not an object, no batch), 401
(missing or unknown write key), 413 (above the size limits, also after
inflating a gzip or deflate body), 503 (the store did not take it; retry).
With `?strict=true` (or header `X-CDP-Strict: true`) a request is all-or-nothing:
one invalid event refuses it with 400 and none of its events enters the log.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from typing import Any, AsyncIterator

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from api.auth import BadCredentials, Requires, basic_username, services, write_key_scheme
from api.errors import ApiError
from api.openapi import inline_schema
from api.responses import json_response
from domain.crm import SCHEMAS, schema_documents
from domain.segment import CALL_TYPES, Alias, Group, Identify, Page, Screen, Track
from ingest.committer import StoreUnavailable
from ingest.intake import Outcome, parse_sent_at
from services import IngestServices
from services.settings import SetAllowedOrigins, SettingsService

REQUESTS = Counter("cdp_ingest_requests", "Ingest requests by endpoint and status code", ["endpoint", "status"])
EVENTS = Counter("cdp_ingest_events", "Events by outcome (stored, duplicate, rejected)", ["outcome"])
# analytics.js (the browser library) posts to these short paths, with the write key in a text/plain body.
SHORT_PATHS = {"b": None, "t": "track", "p": "page", "i": "identify", "s": "screen", "g": "group", "a": "alias"}
CORS_HEADERS = "Content-Type, Authorization, Content-Encoding, X-CDP-Strict, X-CDP-Source"
_SOURCE = re.compile(r"[a-z][a-z0-9_.:-]{0,39}")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the request body is above the {limit} byte limit; send smaller batches")


async def _inflated(chunks: AsyncIterator[bytes], encoding: str, limit: int) -> AsyncIterator[bytes]:
    """Inflate a gzip or deflate body while it streams, never holding more than `limit` inflated bytes."""
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    else:  # deflate: zlib-wrapped, as the HTTP spec says; raw deflate as some clients send it
        inflater = None
    produced = 0
    async for chunk in chunks:
        if inflater is None:
            inflater = zlib.decompressobj(zlib.MAX_WBITS if chunk[:1] == b"\x78" else -zlib.MAX_WBITS)
        data = chunk
        while data:
            try:
                out = inflater.decompress(data, limit + 1 - produced)  # a bomb stops here, before it inflates
            except zlib.error:
                raise ApiError(400, "invalid_encoding", f"the body is not valid {encoding} data") from None
            produced += len(out)
            if produced > limit:
                raise _too_large(limit)
            yield out
            data = inflater.unconsumed_tail
    if inflater is not None and not inflater.eof:
        raise ApiError(400, "invalid_encoding", f"the {encoding} body ends before its end marker")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "x-gzip", "deflate"):
        raise ApiError(415, "unsupported_encoding", f"Content-Encoding {encoding!r}: send gzip, deflate or none")

    async def raw() -> AsyncIterator[bytes]:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(limit)
            if chunk:
                yield chunk

    chunks = raw() if encoding in ("identity", "") else _inflated(raw(), encoding, limit)
    body = bytearray()
    async for chunk in chunks:
        body.extend(chunk)
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _strict(request: Request) -> bool:
    flag = request.query_params.get("strict") or request.headers.get("x-cdp-strict") or ""
    return flag.strip().lower() in ("1", "true", "yes")


class AllowedOrigins(BaseModel):
    model_config = ConfigDict(extra="forbid")

    origins: list[str] = Field(
        default_factory=list, max_length=100,
        description="origins (scheme://host[:port]) whose pages may send events from the browser; '*' allows any",
    )  # fmt: skip


def _call_schemas() -> dict[str, list[dict[str, Any]]]:
    """JSON Schemas of each call type, from the models ingest validates with (domain/segment.py).

    A track call whose event is reserved (domain/crm.py) has its properties' schema
    as a variant of its own (one for the events that share one), beside the track
    call of any other event.
    """
    models = {"identify": Identify, "track": Track, "page": Page, "screen": Screen, "group": Group, "alias": Alias}
    calls = {name: [inline_schema(model.model_json_schema())] for name, model in models.items()}
    track = calls["track"][0]
    events: dict[type, list[str]] = {}
    for event, properties in SCHEMAS.items():
        events.setdefault(properties, []).append(event)
    for properties, names in events.items():
        variant = {**track, "title": f"Track {' | '.join(names)}", "properties": {
            **track["properties"], "event": {"type": "string", "enum": names},
            "properties": inline_schema(properties.model_json_schema()),
        }}  # fmt: skip
        calls["track"].append(variant)
    return calls


def request_body(call_type: str | None) -> dict[str, Any]:
    """The OpenAPI request body of an ingest route (they read the raw request, so FastAPI cannot see it)."""
    calls = _call_schemas()
    write_key = {"type": "string", "description": "the write key, when it is not sent as the HTTP Basic username"}
    if call_type is None:  # each call type once: a reserved track event's properties are documented at /v1/track
        items = {"anyOf": [variants[0] for variants in calls.values()]}
        schema: dict[str, Any] = {
            "type": "object", "title": "Batch", "required": ["batch"],
            "properties": {
                "batch": {"type": "array", "minItems": 1, "items": items},
                "sentAt": {"type": "string", "format": "date-time", "description": "when the client sent the batch"},
                "context": {"type": "object", "description": "context shared by every call of the batch"},
                "integrations": {"type": "object"},
                "writeKey": write_key,
            },
        }  # fmt: skip
    else:  # the route sets the type
        variants = [
            {**v, "properties": {**{k: p for k, p in v["properties"].items() if k != "type"}, "writeKey": write_key},
             "required": [r for r in v.get("required", []) if r != "type"]}
            for v in calls[call_type]
        ]  # fmt: skip
        schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    example = {"type": "track", "userId": "u-42", "event": "Order Completed", "timestamp": "2026-01-31T12:00:00Z",
               "properties": {"order_id": "o-1", "revenue": 42.5, "currency": "EUR"}}  # fmt: skip
    if call_type is None:
        example = {"batch": [{"type": "identify", "userId": "u-42", "traits": {"email": "ada@example.com"}}, example]}
    elif call_type != "track":
        example = {"userId": "u-42", **({"previousId": "anon-1"} if call_type == "alias" else {}),
                   **({"groupId": "acme"} if call_type == "group" else {})}  # fmt: skip
    else:
        example = {k: v for k, v in example.items() if k != "type"}
    content = {"application/json": {"schema": schema, "example": example}}
    return {"requestBody": {"required": True, "content": content}}


router = APIRouter(tags=["ingest"])
# The workspace's settings: served by the core process only (changing them writes the event log).
settings_router = APIRouter(tags=["ingest"])
UNKNOWN_KEY = "unknown write key; use a write key of your workspace (see `cdp up` output)"
settings_key = Requires("admin", "allowed origins")


def settings(built: IngestServices = Depends(services)) -> SettingsService:
    return built.settings


def _cors(built: IngestServices, origin: str | None, workspace_id: str | None) -> dict[str, str]:
    if not origin or workspace_id is None:
        return {"Vary": "Origin"}
    allowed = built.settings.allowed_origins(workspace_id)
    if origin in allowed or "*" in allowed:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {"Vary": "Origin"}


def _basic_workspace(built: IngestServices, request: Request) -> str | None:
    """The workspace of the HTTP Basic username, None without one; an unknown key is refused before the body
    is read."""
    try:
        key = basic_username(request)
    except BadCredentials as exc:
        raise ApiError(401, "invalid_credentials", str(exc)) from None
    if key is None:
        return None
    workspace_id = built.access.authorise_write(key, limited=True)
    if workspace_id is None:
        raise ApiError(401, "unknown_key", UNKNOWN_KEY)
    return workspace_id


def _body_workspace(built: IngestServices, body: dict[str, Any]) -> str:
    key = body.get("writeKey")
    if not key:
        raise ApiError(401, "missing_key", "missing write key: send it as the HTTP Basic username or as writeKey in the body")  # fmt: skip
    workspace_id = built.access.authorise_write(str(key), limited=True)
    if workspace_id is None:
        raise ApiError(401, "unknown_key", UNKNOWN_KEY)
    return workspace_id


async def _dead_letter(
    built: IngestServices, workspace_id: str, source: str, raw: bytes, code: str, reason: str
) -> None:
    await asyncio.to_thread(built.intake.unreadable, workspace_id, source, raw, code, reason)


async def _parse(built: IngestServices, raw: bytes, workspace_id: str | None, source: str) -> dict[str, Any]:
    """The body as a JSON object; from a known sender, one that is not is kept as a dead letter."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if workspace_id is not None:
            await _dead_letter(built, workspace_id, source, raw, "invalid_json", f"not valid JSON: {exc}")
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}", dead_lettered=workspace_id is not None) from None  # fmt: skip
    if not isinstance(body, dict):
        if workspace_id is not None:
            await _dead_letter(built, workspace_id, source, raw, "invalid_json", "the body is not a JSON object")
        raise ApiError(400, "invalid_json", "the body must be a JSON object", dead_lettered=workspace_id is not None)
    return body


async def _items(built: IngestServices, body: dict[str, Any], raw: bytes, call_type: str | None, workspace_id: str,
                 source: str) -> list[Any]:  # fmt: skip
    """The calls of a request: a batch's, each with the batch's context and integrations, or the one call."""
    if call_type is not None:
        return [{k: v for k, v in body.items() if k != "writeKey"} | {"type": call_type}]
    items = body.get("batch")
    if not isinstance(items, list) or not items:
        await _dead_letter(built, workspace_id, source, raw, "invalid_batch", "batch must be a non-empty array")
        raise ApiError(400, "invalid_batch", "the batch must be a non-empty array of events; nothing was stored",
                       [{"index": None, "field": "batch", "reason": "must be a non-empty array of events"}])  # fmt: skip
    shared = {k: body[k] for k in ("context", "integrations") if isinstance(body.get(k), dict)}
    return [{**shared, **item} if isinstance(item, dict) and shared else item for item in items]


async def _sent_at(built: IngestServices, body: dict[str, Any], raw: bytes, call_type: str | None, workspace_id: str,
                   source: str) -> Any:  # fmt: skip
    try:
        return parse_sent_at(body.get("sentAt")) if call_type is None else None
    except ValueError:
        await _dead_letter(built, workspace_id, source, raw, "invalid_request", "sentAt is not an ISO 8601 date-time")
        raise ApiError(400, "invalid_request", "sentAt is not an ISO 8601 date-time; nothing was stored",
                       [{"index": None, "field": "sentAt", "reason": "not an ISO 8601 date-time"}]) from None  # fmt: skip


class _Refused(Exception):
    """A request answered with `error`; `workspace_id` once its key was known (for the CORS headers)."""

    def __init__(self, error: ApiError, workspace_id: str | None) -> None:
        super().__init__(error.message)
        self.error, self.workspace_id = error, workspace_id


async def _take(built: IngestServices, request: Request, call_type: str | None, source: str) -> tuple[str, Outcome]:
    """Read, authorise and record one request: its workspace and the intake's outcome, or _Refused."""
    workspace_id: str | None = None
    try:
        workspace_id = _basic_workspace(built, request)
        limit = built.max_batch_bytes if call_type is None else built.max_event_bytes
        raw = await _read_body(request, limit)
        body = await _parse(built, raw, workspace_id, source)
        workspace_id = workspace_id or _body_workspace(built, body)
        items = await _items(built, body, raw, call_type, workspace_id, source)
        sent_at = await _sent_at(built, body, raw, call_type, workspace_id, source)
        try:
            outcome = await built.intake.take(workspace_id, items, source, sent_at=sent_at, strict=_strict(request))
        except StoreUnavailable as exc:
            raise ApiError(503, "store_unavailable", f"{exc}; retry the request (retries are deduplicated by messageId)") from None  # fmt: skip
        if outcome.refused:
            raise ApiError(
                400, "invalid_events",
                "invalid events in a strict request; none of its events was stored (all are in the dead-letter store)",
                [r.to_json() for r in outcome.rejected],
            )  # fmt: skip
    except ApiError as error:
        raise _Refused(error, workspace_id) from None
    return workspace_id, outcome


async def _ingest(request: Request, built: IngestServices, call_type: str | None, endpoint: str, source: str) -> Response:
    declared = request.headers.get("x-cdp-source", "")
    if _SOURCE.fullmatch(declared):  # a client may say what it is (cdp import does), for the dead letters
        source = declared
    origin = request.headers.get("origin")
    try:
        workspace_id, outcome = await _take(built, request, call_type, source)
    except _Refused as refused:
        error = refused.error
        REQUESTS.labels(endpoint, str(error.status)).inc()
        error.headers = {**(error.headers or {}), **_cors(built, origin, refused.workspace_id)}
        return error.response()
    EVENTS.labels("stored").inc(outcome.stored)
    EVENTS.labels("duplicate").inc(outcome.duplicates)
    EVENTS.labels("rejected").inc(len({r.index for r in outcome.rejected}))
    REQUESTS.labels(endpoint, "200").inc()
    return json_response(outcome.to_json(), headers=_cors(built, origin, workspace_id))


async def preflight(request: Request, service: SettingsService = Depends(settings)) -> Response:
    """CORS preflight: allowed when some workspace allows the page's origin (the key comes with the request)."""
    origin = request.headers.get("origin")
    headers = {"Vary": "Origin"}
    if origin and service.any_allowed_origin(origin):
        headers |= {
            "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": CORS_HEADERS, "Access-Control-Max-Age": "600",
        }  # fmt: skip
    return Response(status_code=204, headers=headers)


def _route(path: str, call_type: str | None, endpoint: str, source: str, summary: str, schema: bool = True) -> None:
    async def receive(request: Request, built: IngestServices = Depends(services)) -> Response:
        return await _ingest(request, built, call_type, endpoint, source)

    router.add_api_route(
        path, receive, methods=["POST"], summary=summary, name=f"ingest_{endpoint}", include_in_schema=schema,
        openapi_extra=request_body(call_type) if schema else None, dependencies=[Depends(write_key_scheme)],
    )
    router.add_api_route(path, preflight, methods=["OPTIONS"], include_in_schema=False, name=f"preflight_{endpoint}")


_route("/v1/batch", None, "batch", "http", "Record a batch of calls (valid ones stored, invalid ones dead-lettered)")
for _call_type in CALL_TYPES:
    _route(f"/v1/{_call_type}", _call_type, _call_type, "http", f"Record one {_call_type} call")
for _short, _call_type in SHORT_PATHS.items():
    _route(f"/v1/{_short}", _call_type, f"short_{_short}", "browser",
           f"analytics.js short path for {_call_type or 'batch'}", False)  # fmt: skip


@router.get("/v1/schemas/events", summary="JSON Schemas of the reserved CRM events' properties")
def event_schemas() -> Response:
    return json_response({"events": schema_documents()})


@settings_router.get("/v1/settings/allowed-origins", summary="Origins whose pages may send events from the browser")
def get_origins(workspace_id: str = Depends(settings_key), service: SettingsService = Depends(settings)) -> Response:
    return json_response({"origins": service.allowed_origins(workspace_id)})


@settings_router.put("/v1/settings/allowed-origins", summary="Set the origins whose pages may send events (CORS)")
async def put_origins(
    payload: AllowedOrigins, workspace_id: str = Depends(settings_key), service: SettingsService = Depends(settings)
) -> Response:
    origins = await service.set_allowed_origins(SetAllowedOrigins(workspace_id, tuple(payload.origins)))
    return json_response({"origins": origins})
