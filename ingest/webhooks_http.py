"""Webhook sources over HTTP: `POST /v1/webhooks/{source}` receives a tool's own JSON, and the mapping API.

A tool that can only call a URL posts its payload; the workspace's mapping for
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

import asyncio
import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.webhooks import (
    SOURCE,
    MappingError,
    NoMapping,
    PayloadError,
    Unmapped,
    WebhookMapping,
    apply,
    delete_mapping,
    load_document,
    parse_mapping,
    save_mapping,
)
from ingest.committer import StoreUnavailable

DELIVERIES = Counter(
    "cdp_webhook_deliveries", "Webhook deliveries by source and outcome (stored, duplicate, dead_lettered, refused)",
    ["source", "outcome"],
)  # fmt: skip
MAX_PAYLOADS = 1000  # elements of a JSON array delivered at once (email tools batch their events)
RAW_CODES = ("unknown_source", "webhook_unmapped", "webhook_invalid", "webhook_unreadable")  # letters holding a payload


class WebhookPlatform(Protocol):
    """What the router needs of the platform (infra/bootstrap.Platform)."""

    app: Any  # CustomerData: .webhook_mappings, save through the committer
    committer: Any  # GroupCommitter: .run(command)
    intake: Any  # Intake: .take(...), .unreadable(...)
    dead_letters: Any  # DeadLetterStore: .list(...), .replayed(...), .refused_again(...)
    settings: Any  # .max_batch_bytes

    def authorise_write(self, key: str) -> str | None: ...


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def response(self) -> Response:
        headers = {"WWW-Authenticate": 'Basic realm="cdp"'} if self.status == 401 else None
        return _json({"code": self.code, "message": self.message, **self.extra}, self.status, headers)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def _key(request: Request, allow_query: bool) -> str:
    """The write key: HTTP Basic username, Bearer token, or (receiver only) the `key` query parameter."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            raise _Refusal(401, "unauthorized", "the Authorization header is not valid HTTP Basic credentials; "
                                                "send the write key as the username") from None  # fmt: skip
    if allow_query:
        return request.query_params.get("key", "").strip()
    return ""


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _Refusal(413, "too_large", f"the body of {declared} bytes is above the {limit} byte limit; nothing was "
                                         "kept")  # fmt: skip
    chunks = bytearray()
    async for chunk in request.stream():
        chunks.extend(chunk)
        if len(chunks) > limit:
            raise _Refusal(413, "too_large", f"the body is above the {limit} byte limit; nothing was kept")
    return bytes(chunks)


class _Unreadable(Exception):
    pass


def read_payloads(body: bytes, content_type: str) -> list[Any]:
    """The payloads of a delivery: one JSON object, a JSON array of them, or a form-encoded body."""
    if "application/x-www-form-urlencoded" in content_type.lower():
        try:
            pairs = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Unreadable(f"not a form-encoded body: {exc}") from None
        return [{k: v[0] if len(v) == 1 else v for k, v in pairs.items()}]
    if not body.strip():
        raise _Unreadable("the body is empty; a webhook delivers a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Unreadable(f"not JSON: {exc}") from None
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        if not data:
            raise _Unreadable("an empty JSON array holds no payload")
        if len(data) > MAX_PAYLOADS:
            raise _Unreadable(f"{len(data)} payloads in one array, above the limit of {MAX_PAYLOADS}")
        return data
    raise _Unreadable(f"a webhook payload is a JSON object, not {type(data).__name__}")


@dataclass
class _Failure:
    index: int
    code: str
    field: str
    reason: str
    body: bytes

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "field": self.field, "reason": self.reason}


@dataclass
class _Mapped:
    calls: list[dict[str, Any]]
    owners: list[int]  # for each call, the payload it came from
    failures: list[_Failure]
    event_types: list[str | None]


def map_payloads(mapping: Any, payloads: list[Any], raw: bytes, source: str) -> _Mapped:
    """Every payload through the mapping; those it cannot map become failures with their own body."""
    out = _Mapped([], [], [], [])
    for index, payload in enumerate(payloads):
        body = raw if len(payloads) == 1 else orjson.dumps(payload)
        try:
            mapped = apply(mapping, payload, source)
        except Unmapped as exc:
            out.failures.append(_Failure(index, "webhook_unmapped", "(event type)", exc.reason, body))
            out.event_types.append(exc.event_type)
            continue
        except PayloadError as exc:
            code = "webhook_unreadable" if exc.field == "(body)" else "webhook_invalid"
            out.failures.append(_Failure(index, code, exc.field, exc.reason, body))
            out.event_types.append(exc.event_type)
            continue
        out.calls += mapped.calls
        out.owners += [index] * len(mapped.calls)
        out.event_types.append(mapped.event_type)
    return out


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[int] | None = Field(None, max_length=1000, description="the dead letters to replay (default: all open)")
    limit: int = Field(1000, ge=1, le=1000)


def _view(stored: WebhookMapping, changed: bool | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": stored.source, "version": stored.mapping_version, "url": f"/v1/webhooks/{stored.source}",
        "description": stored.mapping.get("description", ""), "event_types": sorted(stored.mapping.get("events", {})),
        "mapping": stored.mapping,
    }  # fmt: skip
    if changed is not None:
        body["changed"] = changed
    return body


def build_webhooks_router(platform: WebhookPlatform) -> APIRouter:
    router = APIRouter(tags=["webhooks"])

    def workspace(request: Request, allow_query: bool = False) -> str:
        key = _key(request, allow_query)
        where = "as the HTTP Basic username, as 'Authorization: Bearer <write key>'" + (
            ", or as ?key=<write key> on the URL" if allow_query else "")  # fmt: skip
        if not key:
            raise _Refusal(401, "unauthorized", f"missing write key; send it {where}. Nothing was kept")
        workspace_id = platform.authorise_write(key)
        if workspace_id is None:
            raise _Refusal(401, "unauthorized", "unknown write key; use the write key of your workspace (cdp up "
                                                "prints it). Nothing was kept")  # fmt: skip
        return workspace_id

    def checked(source: str) -> str:
        if not SOURCE.match(source):
            raise _Refusal(400, "invalid_source", f"{source!r} is not a source name: 1-63 lower-case letters, digits, "
                                                  "- or _ (e.g. stripe)")  # fmt: skip
        return source

    # Receiving ---------------------------------------------------------------------------------

    @router.post("/v1/webhooks/{source}", summary="Receive a tool's webhook; its mapping turns it into calls")
    async def receive(source: str, request: Request) -> Response:
        received_at = datetime.now(timezone.utc)
        try:
            workspace_id = workspace(request, allow_query=True)
            body = await _body(request, platform.settings.max_batch_bytes)
        except _Refusal as exc:
            DELIVERIES.labels("unknown", "refused").inc()
            return exc.response()
        label = f"webhook:{source[:63]}"
        mapping = platform.app.webhook_mappings.model(workspace_id, source) if SOURCE.match(source) else None
        if mapping is None:
            reason = (f"no mapping for webhook source {source!r} in this workspace; install one with "
                      f"PUT /v1/webhooks/{source}/mapping (docs/webhooks.md); the tool's retries are then stored, or "
                      f"POST /v1/webhooks/{source}/replay stores the ones kept here")  # fmt: skip
            await asyncio.to_thread(platform.intake.unreadable, workspace_id, label, body, "unknown_source", reason)
            DELIVERIES.labels("unknown", "dead_lettered").inc()
            return _Refusal(404, "unknown_source", reason, dead_lettered=1, stored=0).response()
        try:
            payloads = read_payloads(body, request.headers.get("content-type", ""))
        except _Unreadable as exc:
            await asyncio.to_thread(platform.intake.unreadable, workspace_id, label, body, "webhook_unreadable",
                                    str(exc))  # fmt: skip
            DELIVERIES.labels(source, "dead_lettered").inc()
            return _Refusal(400, "webhook_unreadable", f"{exc}; the body is kept in the dead-letter store",
                            dead_lettered=1, stored=0).response()  # fmt: skip
        mapped = map_payloads(mapping, payloads, body, source)
        for failure in mapped.failures:
            reason = failure.reason if failure.field.startswith("(") else f"{failure.field}: {failure.reason}"
            await asyncio.to_thread(platform.intake.unreadable, workspace_id, label, failure.body, failure.code,
                                    reason)  # fmt: skip
        try:
            outcome = (await platform.intake.take(workspace_id, mapped.calls, source=label, received_at=received_at)
                       if mapped.calls else None)  # fmt: skip
        except StoreUnavailable:
            DELIVERIES.labels(source, "refused").inc()
            return _Refusal(503, "store_unavailable", "the event store is unavailable; no call of this delivery was "
                                                      "stored; retry later").response()  # fmt: skip
        result: dict[str, Any] = {
            "source": source, "payloads": len(payloads), "calls": len(mapped.calls),
            "event_types": mapped.event_types,
        }  # fmt: skip
        if outcome is not None:
            result |= outcome.to_json()
        else:
            result |= {"accepted": 0, "stored": 0, "duplicates": 0, "rejected": []}
        refused_calls = len({r["index"] for r in result["rejected"]})
        result["dead_lettered"] = len(mapped.failures) + refused_calls
        result["errors"] = [f.to_json() for f in mapped.failures]
        result["success"] = result["accepted"] > 0 and result["dead_lettered"] == 0
        for name, count in (("stored", result["stored"]), ("duplicate", result["duplicates"]),
                            ("dead_lettered", result["dead_lettered"])):  # fmt: skip
            if count:
                DELIVERIES.labels(source, name).inc(count)
        if result["accepted"] > 0:
            return _json(result)
        if mapped.failures:
            first = mapped.failures[0]
            message = f"{first.field}: {first.reason}" if not first.field.startswith("(") else first.reason
            return _json({"code": first.code, "message": message + "; the payload is kept in the dead-letter store",
                          **result}, 422)  # fmt: skip
        first_call = result["rejected"][0]
        return _json({"code": "invalid_event", "message": f"the mapped call is invalid: {first_call['field']}: "
                      f"{first_call['reason']}; it is kept in the dead-letter store", **result}, 422)  # fmt: skip

    @router.post("/v1/webhooks/{source}/replay", summary="Map the source's dead-lettered payloads again and store them")
    async def replay(source: str, request: Request) -> Response:
        try:
            workspace_id = workspace(request)
            checked(source)
            raw = await request.body()
            try:
                wanted = ReplayRequest.model_validate(orjson.loads(raw) if raw.strip() else {})
            except (orjson.JSONDecodeError, ValidationError) as exc:
                raise _Refusal(400, "invalid_request", f"the body is {{\"ids\": [...], \"limit\": n}} or empty: {exc}")
            mapping = platform.app.webhook_mappings.model(workspace_id, source)
            if mapping is None:
                raise _Refusal(404, "unknown_source", f"no mapping for webhook source {source!r}; install one with "
                                                      f"PUT /v1/webhooks/{source}/mapping first")  # fmt: skip
        except _Refusal as exc:
            return exc.response()
        letters = await asyncio.to_thread(
            platform.dead_letters.list, workspace_id, source=f"webhook:{source}", ids=wanted.ids, limit=wanted.limit
        )
        letters = [x for x in letters if x.code in RAW_CODES]
        calls: list[dict[str, Any]] = []
        spans: list[tuple[Any, int, int]] = []
        results: list[dict[str, Any]] = []
        for letter in letters:
            try:
                payloads = read_payloads(letter.body, "application/json")
            except _Unreadable as exc:
                failures = [_Failure(0, "webhook_unreadable", "(body)", str(exc), letter.body)]
            else:
                mapped = map_payloads(mapping, payloads, letter.body, source)
                failures = mapped.failures
                if not failures:
                    spans.append((letter, len(calls), len(calls) + len(mapped.calls)))
                    calls += mapped.calls
            if failures:
                f = failures[0]
                await asyncio.to_thread(platform.dead_letters.refused_again, letter.id, f.code, f.field, f.reason)
                results.append({"id": letter.id, "outcome": "refused", "code": f.code, "field": f.field,
                                "reason": f.reason})  # fmt: skip
        try:
            outcome = await platform.intake.take(workspace_id, calls, source=f"webhook:{source}") if calls else None
        except StoreUnavailable:
            return _Refusal(503, "store_unavailable", "the event store is unavailable; nothing was replayed").response()
        refused = {r.index for r in outcome.rejected} if outcome is not None else set()
        for letter, start, end in spans:
            bad = len([i for i in range(start, end) if i in refused])
            how = "stored" if bad == 0 else f"stored; {bad} of its {end - start} calls refused (kept as dead letters)"
            await asyncio.to_thread(platform.dead_letters.replayed, letter.id, how)
            results.append({"id": letter.id, "outcome": how})
        body: dict[str, Any] = {
            "replayed": len(spans), "refused": len(letters) - len(spans),
            "stored": outcome.stored if outcome else 0, "duplicates": outcome.duplicates if outcome else 0,
            "rejected": [r.to_json() for r in outcome.rejected] if outcome else [],
            "results": sorted(results, key=lambda r: r["id"]),
        }  # fmt: skip
        return _json(body)

    # Mappings ----------------------------------------------------------------------------------

    @router.put("/v1/webhooks/{source}/mapping", summary="Install or change a source's mapping (YAML or JSON)")
    async def put_mapping(source: str, request: Request) -> Response:
        try:
            workspace_id = workspace(request)
            checked(source)
            try:
                document, text = load_document(await request.body(), request.headers.get("content-type", ""))
                mapping = parse_mapping(document, source)
            except MappingError as exc:
                errors = [{"field": path, "reason": reason} for path, reason in exc.errors]
                what = "cannot be read" if exc.code == "unreadable_mapping" else "is invalid"
                raise _Refusal(400, exc.code, f"the mapping {what}; nothing changed: {errors[0]['field']}: "
                                              f"{errors[0]['reason']}", errors=errors)  # fmt: skip
        except _Refusal as exc:
            return exc.response()
        existed = platform.app.webhook_mappings.get(workspace_id, source) is not None
        app = platform.app
        stored, changed = await platform.committer.run(lambda: save_mapping(app, workspace_id, source, mapping, text))
        return _json(_view(stored, changed), 200 if existed else 201)

    @router.get("/v1/webhooks/{source}/mapping", summary="A source's mapping (JSON; as written with Accept: yaml)")
    def get_mapping(source: str, request: Request) -> Response:
        try:
            workspace_id = workspace(request)
            stored = platform.app.webhook_mappings.get(workspace_id, checked(source))
            if stored is None:
                raise _Refusal(404, "unknown_source", f"no mapping for webhook source {source!r}; GET /v1/webhooks "
                                                      "lists the installed ones")  # fmt: skip
        except _Refusal as exc:
            return exc.response()
        if "yaml" in request.headers.get("accept", ""):
            return Response(stored.text, media_type="application/yaml",
                            headers={"X-Mapping-Version": str(stored.mapping_version)})  # fmt: skip
        return _json(_view(stored))

    @router.delete("/v1/webhooks/{source}/mapping", summary="Delete a source's mapping")
    async def remove_mapping(source: str, request: Request) -> Response:
        try:
            workspace_id = workspace(request)
            checked(source)
        except _Refusal as exc:
            return exc.response()
        app = platform.app
        try:
            version = await platform.committer.run(lambda: delete_mapping(app, workspace_id, source))
        except NoMapping as exc:
            return _Refusal(404, "unknown_source", str(exc)).response()
        return _json({"source": source, "version": version, "deleted": True})

    @router.get("/v1/webhooks", summary="The workspace's webhook sources and their mappings' versions")
    def list_sources(request: Request) -> Response:
        try:
            workspace_id = workspace(request)
        except _Refusal as exc:
            return exc.response()
        live = platform.app.webhook_mappings.live(workspace_id)
        return _json({"webhooks": [{k: v for k, v in _view(live[s]).items() if k != "mapping"} for s in sorted(live)]})

    return router
