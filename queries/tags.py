"""HTTP adapter of the tags and segments service (services/tags.py).

Definitions (tags, saved segments) and manual tags change data: write key, as
Bearer or HTTP Basic username. Reads take the read key as Bearer. Bodies are JSON
or YAML, read by the service; an invalid rule is a 400 listing each bad node by
path and why. Definitions, segment queries and exports may name a `purpose`: only profiles with
consent for it are members (docs/consent.md).
"""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Iterator

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from api.auth import Requires, services
from api.openapi import inline_schema
from api.params import RangeFrom, RangeTo, parse_query_time
from api.responses import json_response
from domain.crm import PURPOSE
from domain.tags import SLUG, Definition
from queries import consent
from services import Services
from services.tags import (
    KINDS, AddManualTag, Define, Delete, ExportSegment, GetHistory, QuerySegment, RemoveManualTag, SegmentMembers,
    TagService,
)  # fmt: skip

router = APIRouter()
# The consent defaults setting is read by tags and segments; served with them until it is listed on its own.
router.include_router(consent.router)
tags_admin = Requires("admin", "changing tags and segments")
segments_read = Requires("read:segments", "reading tags and segments")
profile_tags_read = Requires("read:profiles", "reading a profile's tag changes")


def tags(built: Services = Depends(services)) -> TagService:
    return built.tags


def _body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    """openapi_extra for a route whose body the service reads: JSON, or the same as YAML."""
    content = {"application/json": {"schema": schema, "example": example}}
    return {"requestBody": {"required": True, "description": "JSON, or YAML with Content-Type application/yaml",
                            "content": content}}  # fmt: skip


# The children of and, or and not are rules too; documented one level deep.
_DEFINITION = inline_schema(Definition.model_json_schema(), family=("AndNode", "OrNode", "NotNode"))
_DEFINITION["properties"]["id"]["pattern"] = SLUG.pattern
_DEFINITION["properties"]["purpose"]["anyOf"][0]["pattern"] = PURPOSE.pattern
_RULE = _DEFINITION["properties"]["rule"]
_EXAMPLE_RULE = {"and": [{"computed": "orders_count", "op": ">=", "value": 3},
                         {"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 1000,
                          "within": "90d"}]}  # fmt: skip
DEFINITION_BODY = _body(_DEFINITION, {"id": "big-spenders", "name": "Big spenders", "purpose": "marketing",
                                       "rule": _EXAMPLE_RULE})  # fmt: skip
REPLACEMENT_BODY = _body(
    {**_DEFINITION, "required": [r for r in _DEFINITION.get("required", []) if r != "id"]},
    {"name": "Big spenders", "purpose": "marketing", "rule": _EXAMPLE_RULE},
)
QUERY_BODY = _body({
    "type": "object", "additionalProperties": False, "required": ["rule"],
    "properties": {"rule": _RULE, "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                   "purpose": {"type": "string", "pattern": PURPOSE.pattern,
                               "description": "only profiles with consent for this purpose (e.g. marketing)"},
                   "cursor": {"type": "string", "description": "next_cursor of the page before"}},
}, {"rule": {"event": "Order Completed", "between": ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"]},
    "purpose": "marketing", "limit": 10})  # fmt: skip
MANUAL_TAG_BODY = _body({
    "type": "object", "required": ["tag"],
    "properties": {"tag": {"type": "string", "description": "a manual tag's id, e.g. beta-tester"},
                   "reason": {"type": "string"}},
}, {"tag": "beta-tester", "reason": "joined the beta"})  # fmt: skip


HISTORY_SUMMARY = {"tag": "A tag's enters, exits and members per day, week or month",
                   "segment": "A segment's history: none is recorded (400 segment_has_no_history)"}  # fmt: skip
HISTORY_DESCRIPTION = (
    "One row per period of [from, to), zeros included: `entered` and `exited` count the enters and exits decided in "
    "it (by their `at`, the platform's clock), `members` is the member count at its end. A saved segment is "
    "evaluated when it is read and records no enters or exits: its history is a 400 `segment_has_no_history` "
    "(define a tag with its rule to record them). See docs/tags.md."
)
HISTORY_EXAMPLE = {"id": "vip", "kind": "tag", "from": "2026-11-01T00:00:00.000Z", "to": "2026-11-04T00:00:00.000Z",
                   "granularity": "day", "series": [
                       {"period": "2026-11-01", "entered": 12, "exited": 0, "members": 12},
                       {"period": "2026-11-02", "entered": 0, "exited": 0, "members": 12},
                       {"period": "2026-11-03", "entered": 3, "exited": 5, "members": 10}]}  # fmt: skip


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "")


# Tags and segments: the same five routes each -----------------------------------------------------


def _definition_routes(kind: str) -> None:
    plural = f"/v1/{kind}s"

    @router.post(plural, tags=[f"{kind}s"], summary=f"Define a {kind} (JSON or YAML body)", status_code=201,
                 openapi_extra=DEFINITION_BODY)  # fmt: skip
    async def create(request: Request, workspace_id: str = Depends(tags_admin), service: TagService = Depends(tags)) -> Response:
        command = Define(workspace_id, kind, await request.body(), _content_type(request), create_only=True)
        return json_response(await service.define(command), 201)

    @router.put(plural + "/{slug}", tags=[f"{kind}s"], summary=f"Create or change a {kind}: a new rule version",
                openapi_extra=REPLACEMENT_BODY)  # fmt: skip
    async def replace(
        slug: str, request: Request, workspace_id: str = Depends(tags_admin), service: TagService = Depends(tags)
    ) -> Response:
        command = Define(workspace_id, kind, await request.body(), _content_type(request), slug=slug)
        return json_response(await service.define(command))

    @router.delete(plural + "/{slug}", tags=[f"{kind}s"], summary=f"Delete a {kind}")
    async def delete(slug: str, workspace_id: str = Depends(tags_admin), service: TagService = Depends(tags)) -> Response:
        version = await service.delete(Delete(workspace_id, kind, slug))
        return json_response({"id": slug, "rule_version": version, "deleted": True})

    @router.get(plural, tags=[f"{kind}s"], summary=f"Every {kind} of the workspace")
    def listing(workspace_id: str = Depends(segments_read), service: TagService = Depends(tags)) -> Response:
        return json_response({f"{kind}s": service.listing(workspace_id, kind)})

    @router.get(plural + "/{slug}", tags=[f"{kind}s"], summary=f"A {kind}, with its count (and backfill state)")  # fmt: skip
    def one(slug: str, workspace_id: str = Depends(segments_read), service: TagService = Depends(tags)) -> Response:
        return json_response(service.one(workspace_id, kind, slug))

    @router.get(plural + "/{slug}/history", tags=[f"{kind}s"], summary=HISTORY_SUMMARY[kind],
                description=HISTORY_DESCRIPTION, responses={200: {"content": {"application/json": {
                    "example": HISTORY_EXAMPLE}}}})  # fmt: skip
    def history(
        slug: str,
        workspace_id: str = Depends(segments_read),
        start: RangeFrom = None,
        end: RangeTo = None,
        granularity: Annotated[str, Query(description="day, week or month")] = "day",
        service: TagService = Depends(tags),
    ) -> Response:  # fmt: skip
        query = GetHistory(workspace_id, kind, slug, parse_query_time("from", start), parse_query_time("to", end),
                           granularity)  # fmt: skip
        return json_response(service.history(query))


for _kind in KINDS:
    _definition_routes(_kind)


# Manual tags ---------------------------------------------------------------------------------------


@router.post("/v1/profiles/{identifier}/tags", tags=["tags"], summary="Add a manual tag to a profile",
             status_code=201, openapi_extra=MANUAL_TAG_BODY)  # fmt: skip
async def add_tag(
    identifier: str, request: Request, workspace_id: str = Depends(tags_admin), service: TagService = Depends(tags)
) -> Response:
    done = await service.add_manual_tag(AddManualTag(workspace_id, identifier, await request.body(), _content_type(request)))
    return json_response({"profile_id": done.profile_id, "tag": done.tag, "action": done.action}, 201)


@router.delete("/v1/profiles/{identifier}/tags/{tag}", tags=["tags"], summary="Remove a manual tag")
async def remove_tag(
    identifier: str, tag: str, reason: str = "", workspace_id: str = Depends(tags_admin),
    service: TagService = Depends(tags),
) -> Response:  # fmt: skip
    done = await service.remove_manual_tag(RemoveManualTag(workspace_id, identifier, tag, reason))
    return json_response({"profile_id": done.profile_id, "tag": done.tag, "action": done.action})


@router.get("/v1/profiles/{identifier}/tag-changes", tags=["tags"], summary="A profile's tag enters and exits")
def tag_history(
    identifier: str, limit: int = Query(100, ge=1, le=1000), workspace_id: str = Depends(profile_tags_read),
    service: TagService = Depends(tags),
) -> Response:  # fmt: skip
    return json_response(service.tag_changes(workspace_id, identifier, limit))


# Segments ------------------------------------------------------------------------------------------


@router.post("/v1/segments/query", tags=["segments"], summary="Count and list the profiles a rule matches",
             openapi_extra=QUERY_BODY)  # fmt: skip
async def query(request: Request, workspace_id: str = Depends(segments_read), service: TagService = Depends(tags)) -> Response:
    return json_response(service.query(QuerySegment(workspace_id, await request.body(), _content_type(request))))


@router.get("/v1/segments/{slug}/members", tags=["segments"], summary="A saved segment's members (paginated)")
def segment_members(
    slug: str, limit: int = Query(50, ge=1, le=1000), cursor: str | None = None,
    workspace_id: str = Depends(segments_read), service: TagService = Depends(tags),
) -> Response:  # fmt: skip
    return json_response(service.members(SegmentMembers(workspace_id, slug, limit, cursor)))


def _lines(pages: Iterator[list[dict[str, Any]]], format: str) -> Iterator[bytes]:
    if format == "csv":
        yield b"profile_id,identifiers,traits\n"
    for page in pages:
        for member in page:
            if format == "jsonl":
                yield orjson.dumps(member) + b"\n"
            else:
                out = io.StringIO()
                csv.writer(out).writerow([member["profile_id"], " ".join(member["identifiers"]),
                                          orjson.dumps(member["traits"]).decode()])  # fmt: skip
                yield out.getvalue().encode()


@router.get("/v1/segments/{slug}/export", tags=["segments"], summary="Every member, streamed as CSV or JSONL")
def export(
    slug: str, format: str = Query("jsonl", pattern="^(csv|jsonl)$"),
    purpose: str | None = Query(None, pattern=PURPOSE.pattern, examples=["marketing"],
                                description="the purpose the export serves: only members with consent for it"),
    workspace_id: str = Depends(segments_read), service: TagService = Depends(tags),
) -> StreamingResponse:  # fmt: skip
    pages = service.export(ExportSegment(workspace_id, slug, purpose=purpose))
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(_lines(pages, format), media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="{slug}.{format}"'})  # fmt: skip
