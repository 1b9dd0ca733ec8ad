"""Segment-compatible HTTP ingest: `/v1/batch` and the single-call endpoints.

Translates requests into validated, normalised calls and the outcome into status
codes; recording is the committer's job. Outcomes:
200 `{"success": true}` only after every event of the request is durably stored;
400 with each rejected event's index, field path and reason; 401 for a missing or
unknown write key; 413 above the size limits. A request is all-or-nothing.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone
from typing import Any, Protocol, Sequence

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import Counter
from pydantic import ValidationError

from domain.crm import schema_documents, validate_properties
from domain.limits import OutOfRange
from domain.segment import CALL_TYPES, Track, call_adapter, normalise
from ingest.committer import StoreUnavailable


REQUESTS = Counter("cdp_ingest_requests", "Ingest requests by endpoint and status code", ["endpoint", "status"])
EVENTS = Counter("cdp_ingest_events", "Events acknowledged, by outcome (stored, duplicate)", ["outcome"])


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, headers=headers, media_type="application/json")


class IngestService(Protocol):
    max_event_bytes: int
    max_batch_bytes: int

    def authorise_write(self, key: str) -> str | None: ...
    async def submit(self, workspace_id: str, calls: Sequence[dict[str, Any]]) -> list[Any]: ...


class Rejected(Exception):
    def __init__(self, status: int, error: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.errors = errors or []

    def response(self) -> Response:
        body: dict[str, Any] = {"success": False, "error": self.error}
        if self.errors:
            body["errors"] = self.errors
        headers = {"WWW-Authenticate": 'Basic realm="cdp"'} if self.status == 401 else None
        return json_response(body, status_code=self.status, headers=headers)


def _basic_username(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Rejected(401, "the Authorization header is not valid HTTP Basic credentials") from None
    return decoded.partition(":")[0] or None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"request body of {declared} bytes is above the {limit} byte limit; send smaller batches")
    chunks = bytearray()
    async for chunk in request.stream():
        chunks.extend(chunk)
        if len(chunks) > limit:
            raise Rejected(413, f"request body is above the {limit} byte limit; send smaller batches")
    return bytes(chunks)


def _field(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in CALL_TYPES:  # the discriminator pydantic puts first
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "(event)"


def _validation_errors(index: int, exc: ValidationError, prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors(include_url=False):
        field = _field(prefix + tuple(err["loc"]))
        reason = err["msg"]
        if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
            field, reason = "type", f"type must be one of {', '.join(CALL_TYPES)}"
        errors.append({"index": index, "field": field, "reason": reason})
    return errors


def parse_calls(
    items: list[Any], received_at: datetime, batch_sent_at: Any, max_event_bytes: int
) -> list[dict[str, Any]]:
    """Validate and normalise every call; raise `Rejected` listing every bad one."""
    errors: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    oversized: list[dict[str, Any]] = []
    sent_at = None
    if batch_sent_at is not None:
        try:
            sent_at = datetime.fromisoformat(str(batch_sent_at).replace("Z", "+00:00"))
        except ValueError:
            errors.append({"index": None, "field": "sentAt", "reason": "not an ISO 8601 date-time"})
    for index, item in enumerate(items):
        size = len(orjson.dumps(item))
        if size > max_event_bytes:
            oversized.append(
                {"index": index, "field": "(event)", "reason": f"{size} bytes, above the {max_event_bytes} byte limit"}
            )
            continue
        try:
            call = call_adapter.validate_python(item)
        except ValidationError as exc:
            errors.extend(_validation_errors(index, exc))
            continue
        if isinstance(call, Track):
            try:  # reserved CRM events (Order Completed, Ticket Opened, ...) have schemas of their own
                call.properties = validate_properties(call.event, call.properties)
            except ValidationError as exc:
                errors.extend(_validation_errors(index, exc, prefix=("properties",)))
                continue
        try:
            calls.append(normalise(call, received_at, sent_at))
        except OutOfRange as exc:  # a time the projections could not hold (domain/limits.py)
            errors.append({"index": index, "field": exc.field, "reason": exc.reason})
    if oversized:
        raise Rejected(413, "events above the size limit; nothing was stored", oversized + errors)
    if errors:
        raise Rejected(400, "invalid events; nothing was stored", errors)
    return calls


def build_ingest_router(service: IngestService) -> APIRouter:
    router = APIRouter(tags=["ingest"])

    async def ingest(request: Request, call_type: str | None) -> Response:
        endpoint = call_type or "batch"
        try:
            basic_key = _basic_username(request)
            if basic_key is not None and service.authorise_write(basic_key) is None:
                # Refuse unknown keys before reading a byte of the body.
                raise Rejected(401, "unknown write key; use a write key of your workspace (see `cdp up` output)")
            limit = service.max_batch_bytes if call_type is None else service.max_event_bytes
            raw = await _read_body(request, limit)
            if call_type is not None and len(raw) > service.max_event_bytes:
                raise Rejected(413, f"event is above the {service.max_event_bytes} byte limit")
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise Rejected(400, f"the body is not valid JSON: {exc}") from None
            if not isinstance(body, dict):
                raise Rejected(400, "the body must be a JSON object")
            key = basic_key or body.get("writeKey")
            if not key:
                raise Rejected(401, "missing write key: send it as the HTTP Basic username or as writeKey in the body")
            workspace_id = service.authorise_write(str(key))
            if workspace_id is None:
                raise Rejected(401, "unknown write key; use a write key of your workspace (see `cdp up` output)")
            if call_type is None:
                items = body.get("batch")
                if not isinstance(items, list) or not items:
                    raise Rejected(
                        400,
                        "invalid batch; nothing was stored",
                        [{"index": None, "field": "batch", "reason": "must be a non-empty array of events"}],
                    )
                shared = {k: body[k] for k in ("context", "integrations") if isinstance(body.get(k), dict)}
                items = [{**shared, **item} if isinstance(item, dict) and shared else item for item in items]
            else:
                items = [{k: v for k, v in body.items() if k != "writeKey"} | {"type": call_type}]
            calls = parse_calls(
                items, datetime.now(timezone.utc), body.get("sentAt") if call_type is None else None,
                service.max_event_bytes,
            )  # fmt: skip
            try:
                recorded = await service.submit(workspace_id, calls)
            except StoreUnavailable as exc:
                raise Rejected(503, f"{exc}; retry the request (retries are deduplicated by messageId)") from None
        except Rejected as rejected:
            REQUESTS.labels(endpoint, str(rejected.status)).inc()
            return rejected.response()
        stored = sum(1 for r in recorded if r.stored)
        EVENTS.labels("stored").inc(stored)
        EVENTS.labels("duplicate").inc(len(recorded) - stored)
        REQUESTS.labels(endpoint, "200").inc()
        return json_response({"success": True})

    @router.post("/v1/batch", summary="Record a batch of calls (all-or-nothing)")
    async def batch(request: Request) -> Response:
        return await ingest(request, None)

    def single(call_type: str) -> None:
        async def endpoint(request: Request) -> Response:
            return await ingest(request, call_type)

        router.add_api_route(
            f"/v1/{call_type}", endpoint, methods=["POST"], summary=f"Record one {call_type} call",
            name=f"ingest_{call_type}",
        )  # fmt: skip

    for call_type in CALL_TYPES:
        single(call_type)

    @router.get("/v1/schemas/events", summary="JSON Schemas of the reserved CRM events' properties")
    def event_schemas() -> Response:
        return json_response({"events": schema_documents()})

    return router
