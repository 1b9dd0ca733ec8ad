"""HTTP API for tags, manual tags and segments.

Definitions (tags, saved segments) and manual tags change data: write key, as
Bearer or HTTP Basic username. Reads take the read key as Bearer. Bodies are JSON
or YAML; an invalid rule is a 400 listing each bad node by path and why.
"""

from __future__ import annotations

import csv
import io
import math
import re
from datetime import date, datetime
from typing import Any, Awaitable, Iterator, Protocol
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

from domain.identity import normalise_identifier, split_identifier
from domain.tags import (
    SLUG, AlreadyDefined, Definition, NotFound, RuleError, load_document, parse_definition, parse_rule, time_errors,
)  # fmt: skip
from infra.http_errors import error_body
from projections.store import ProjectionStore
from projections.tags import TagStore
from infra.openapi import inline_schema
from queries.http import MAX_INT, MIN_INT, json_response, read_access, write_access

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
EXPORT_PAGE = 2000
MAX_NODES = 100_000  # values in one document; YAML aliases can make a short text a huge one


class TagService(Protocol):
    store: ProjectionStore
    tag_store: TagStore

    def authorise_read(self, key: str) -> str | None: ...
    def authorise_write(self, key: str) -> str | None: ...
    def identifier_types(self, workspace_id: str) -> list[str]: ...
    def definitions(self, workspace_id: str, kind: str) -> dict[str, Any]: ...
    def tag_rules(self, workspace_id: str) -> dict[str, Any]: ...
    def now(self) -> Any: ...
    def save_definition(self, workspace_id: str, kind: str, definition: Definition, create_only: bool) -> Awaitable[Any]: ...
    def delete_definition(self, workspace_id: str, kind: str, slug: str) -> Awaitable[int]: ...
    def manual_tag(self, workspace_id: str, profile_id: str, tag: str, action: str, reason: str) -> Awaitable[None]: ...


def json_data(doc: Any) -> Any:
    """A parsed body as JSON data, or RuleError naming each path that is not.

    YAML has more than JSON: its unquoted dates and times are read as the ISO text
    written; keys that are not strings, binary values, sets, NaN and infinities,
    integers beyond 64 bits and lone surrogates are refused, as neither the log nor a
    ClickHouse query can carry them.
    """
    errors: list[tuple[str, str]] = []
    nodes = 0

    def convert(value: Any, path: str) -> Any:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_NODES:
            raise RuleError([("(body)", f"more than {MAX_NODES} values; send a smaller document")])
        where = path or "(body)"
        if isinstance(value, dict):
            out = {}
            for key, child in value.items():
                if not isinstance(key, str):
                    errors.append((where, f"the key {key!r} is not a string; quote it"))
                    continue
                out[key] = convert(child, f"{path}.{key}" if path else key)
            return out
        if isinstance(value, list):
            return [convert(child, f"{path}[{i}]") for i, child in enumerate(value)]
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                errors.append((where, "not valid Unicode text (a lone surrogate)"))
            return value
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            if not MIN_INT <= value <= MAX_INT:
                errors.append((where, f"the integer is outside {MIN_INT} to {MAX_INT}"))
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                errors.append((where, f"{value} is not a number JSON can carry; send a finite number"))
            return value
        if isinstance(value, (date, datetime)):  # YAML's unquoted 2026-01-31 or 2026-01-31T00:00:00Z
            return value.isoformat()
        errors.append((where, f"a {type(value).__name__} is not a JSON value"))
        return None

    try:
        converted = convert(doc, "")
    except RecursionError:
        raise RuleError([("(body)", "nested too deeply; flatten the document")]) from None
    if errors:
        raise RuleError(errors[:20])
    return converted


def check_times(rule: Any) -> Any:
    """The rule, or RuleError naming each time in it outside the window that can be queried."""
    errors = time_errors(rule)
    if errors:
        raise RuleError(errors)
    return rule


def _body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    """openapi_extra for a route that reads its body itself (`document`): JSON, or the same as YAML."""
    content = {"application/json": {"schema": schema, "example": example}}
    return {"requestBody": {"required": True, "description": "JSON, or YAML with Content-Type application/yaml",
                            "content": content}}  # fmt: skip


# The children of and, or and not are rules too; documented one level deep.
_DEFINITION = inline_schema(Definition.model_json_schema(), family=("AndNode", "OrNode", "NotNode"))
_DEFINITION["properties"]["id"]["pattern"] = SLUG.pattern
_RULE = _DEFINITION["properties"]["rule"]
_EXAMPLE_RULE = {"and": [{"computed": "orders_count", "op": ">=", "value": 3},
                         {"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 1000,
                          "within": "90d"}]}  # fmt: skip
DEFINITION_BODY = _body(_DEFINITION, {"id": "big-spenders", "name": "Big spenders", "rule": _EXAMPLE_RULE})
REPLACEMENT_BODY = _body(
    {**_DEFINITION, "required": [r for r in _DEFINITION.get("required", []) if r != "id"]},
    {"name": "Big spenders", "rule": _EXAMPLE_RULE},
)
QUERY_BODY = _body({
    "type": "object", "additionalProperties": False, "required": ["rule"],
    "properties": {"rule": _RULE, "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                   "cursor": {"type": "string", "description": "next_cursor of the page before"}},
}, {"rule": {"event": "Order Completed", "between": ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"]}, "limit": 10})
MANUAL_TAG_BODY = _body({
    "type": "object", "required": ["tag"],
    "properties": {"tag": {"type": "string", "description": "a manual tag's id, e.g. beta-tester"},
                   "reason": {"type": "string"}},
}, {"tag": "beta-tester", "reason": "joined the beta"})  # fmt: skip


def invalid(exc: RuleError, what: str) -> Response:
    errors = [{"path": path, "reason": reason} for path, reason in exc.errors]
    code = "invalid_" + what.replace(" ", "_")
    return json_response(error_body(code, f"invalid {what}; nothing changed", errors), 400)


def profile_tags(tag_store: TagStore, definitions: dict[str, Any], workspace_id: str, profile_id: str) -> dict[str, Any]:
    """The `tags` of a profile as the profile API shows them."""
    held = tag_store.members_of(workspace_id, [profile_id]).get(profile_id, {})
    tags = []
    for slug, m in sorted(held.items()):
        d = definitions.get(slug)
        tags.append({"id": slug, "name": d.name if d is not None else slug, "kind": m["kind"],
                     "since": m["since"].isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                     "rule_version": m["rule_version"] if m["kind"] == "dynamic" else None})  # fmt: skip
    return {"tags": tags}


def build_tags_router(service: TagService) -> APIRouter:
    router = APIRouter()

    reader = read_access(service)
    writer = write_access(service, "changing tags and segments needs a write key")

    def resolve(workspace_id: str, identifier: str) -> str:
        kind, value = split_identifier(identifier, service.identifier_types(workspace_id))
        if kind == "profile_id":
            if not _UUID.match(value):
                raise HTTPException(400, f"{identifier!r} is neither a profile id nor type:value")
            pid = str(UUID(value))
            if service.store.read_profile(workspace_id, pid) is None:
                pid = service.store.merged_into(workspace_id, pid) or pid
            return pid
        found = service.store.owner_of(workspace_id, normalise_identifier(f"{kind}:{value}"))
        if found is None:
            raise HTTPException(404, f"no profile has the identifier {identifier!r}")
        return found

    async def document(request: Request) -> Any:
        raw = await request.body()
        try:
            try:
                doc = load_document(raw, request.headers.get("content-type", ""))
            except RuleError:
                raise
            except RecursionError:
                raise RuleError([("(body)", "nested too deeply; flatten the document")]) from None
            except (ValueError, TypeError, OverflowError) as exc:  # YAML's 2026-13-01, a timestamp out of range
                raise RuleError([("(body)", f"neither JSON nor YAML: {exc}")]) from None
            return json_data(doc)
        except RuleError as exc:
            raise _Invalid(exc) from None

    def view(workspace_id: str, kind: str, d: Any, counts: dict[str, int] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": d.slug, "name": d.name, "description": d.description, "rule": d.rule,
                                "rule_version": d.rule_version}  # fmt: skip
        if kind == "tag":
            counts = counts if counts is not None else service.tag_store.member_counts(workspace_id)
            body["members"] = counts.get(d.slug, 0)
            backfill = service.tag_store.backfill(workspace_id, d.slug)
            if backfill is None or backfill["rule_version"] < d.rule_version:  # the processor has not reached it yet
                backfill = {"rule_version": d.rule_version, "state": "pending", "done": 0, "total": None}
            body["backfill"] = backfill
        else:
            body["count"], _ = service.tag_store.matching(
                workspace_id, parse_rule(d.rule), service.tag_rules(workspace_id), service.now()
            )
        return body

    def crud(kind: str) -> None:
        plural = f"/v1/{kind}s"

        @router.post(plural, tags=[f"{kind}s"], summary=f"Define a {kind} (JSON or YAML body)", status_code=201,
                     openapi_extra=DEFINITION_BODY)  # fmt: skip
        async def create(request: Request, workspace_id: str = Depends(writer)) -> Response:
            try:
                definition = parse_definition(await document(request))
                check_times(definition.rule)
                saved = await service.save_definition(workspace_id, kind, definition, True)
            except AlreadyDefined as exc:
                return json_response(error_body("conflict", str(exc)), 409)
            except RuleError as exc:
                return invalid(exc, kind)
            except _Invalid as exc:
                return invalid(exc.error, kind)
            return json_response(view(workspace_id, kind, saved), 201)

        @router.put(plural + "/{slug}", tags=[f"{kind}s"], summary=f"Create or change a {kind}: a new rule version",
                    openapi_extra=REPLACEMENT_BODY)  # fmt: skip
        async def replace(slug: str, request: Request, workspace_id: str = Depends(writer)) -> Response:
            try:
                definition = parse_definition(await document(request), default_id=slug)
                check_times(definition.rule)
                saved = await service.save_definition(workspace_id, kind, definition, False)
            except RuleError as exc:
                return invalid(exc, kind)
            except _Invalid as exc:
                return invalid(exc.error, kind)
            return json_response(view(workspace_id, kind, saved))

        @router.delete(plural + "/{slug}", tags=[f"{kind}s"], summary=f"Delete a {kind}")
        async def delete(slug: str, workspace_id: str = Depends(writer)) -> Response:
            try:
                version = await service.delete_definition(workspace_id, kind, slug)
            except NotFound as exc:
                raise HTTPException(404, str(exc)) from None
            return json_response({"id": slug, "rule_version": version, "deleted": True})

        @router.get(plural, tags=[f"{kind}s"], summary=f"Every {kind} of the workspace")
        def listing(workspace_id: str = Depends(reader)) -> Response:
            defs = service.definitions(workspace_id, kind)
            counts = service.tag_store.member_counts(workspace_id) if kind == "tag" else None
            return json_response({f"{kind}s": [view(workspace_id, kind, defs[s], counts) for s in sorted(defs)]})

        @router.get(plural + "/{slug}", tags=[f"{kind}s"], summary=f"A {kind}, with its count (and backfill state)")
        def one(slug: str, workspace_id: str = Depends(reader)) -> Response:
            d = service.definitions(workspace_id, kind).get(slug)
            if d is None:
                raise HTTPException(404, f"no {kind} {slug!r} in this workspace; GET {plural} lists them")
            return json_response(view(workspace_id, kind, d))

    crud("tag")
    crud("segment")

    # Manual tags -------------------------------------------------------------------------------

    @router.post("/v1/profiles/{identifier}/tags", tags=["tags"], summary="Add a manual tag to a profile",
                 status_code=201, openapi_extra=MANUAL_TAG_BODY)  # fmt: skip
    async def add_tag(identifier: str, request: Request, workspace_id: str = Depends(writer)) -> Response:
        try:
            body = await document(request)
        except _Invalid as exc:
            return invalid(exc.error, "manual tag")
        if not isinstance(body, dict) or not isinstance(body.get("tag"), str):
            return invalid(RuleError([("tag", "give the tag's id, e.g. {\"tag\": \"beta-tester\"}")]), "manual tag")
        pid = resolve(workspace_id, identifier)
        try:
            await service.manual_tag(workspace_id, pid, body["tag"], "added", str(body.get("reason") or ""))
        except RuleError as exc:
            return invalid(exc, "manual tag")
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        return json_response({"profile_id": pid, "tag": body["tag"], "action": "added"}, 201)

    @router.delete("/v1/profiles/{identifier}/tags/{tag}", tags=["tags"], summary="Remove a manual tag")
    async def remove_tag(identifier: str, tag: str, reason: str = "", workspace_id: str = Depends(writer)) -> Response:
        pid = resolve(workspace_id, identifier)
        held = service.tag_store.members_of(workspace_id, [pid]).get(pid, {}).get(tag)
        if held is None or held["kind"] != "manual":
            raise HTTPException(404, f"profile {pid} has no manual tag {tag!r}")
        try:
            await service.manual_tag(workspace_id, pid, tag, "removed", reason)
        except (RuleError, NotFound) as exc:
            raise HTTPException(404, str(exc)) from None
        return json_response({"profile_id": pid, "tag": tag, "action": "removed"})

    @router.get("/v1/profiles/{identifier}/tag-changes", tags=["tags"], summary="A profile's tag enters and exits")
    def tag_history(identifier: str, limit: int = Query(100, ge=1, le=1000), workspace_id: str = Depends(reader)) -> Response:
        pid = resolve(workspace_id, identifier)
        return json_response({"profile_id": pid, "changes": service.tag_store.changes_of(workspace_id, pid, limit)})

    # Segments ----------------------------------------------------------------------------------

    def members(workspace_id: str, rule: Any, limit: int, cursor: str | None) -> dict[str, Any]:
        count, ids = service.tag_store.matching(
            workspace_id, rule, service.tag_rules(workspace_id), service.now(), after=cursor or "", limit=limit + 1
        )
        page = ids[:limit]
        docs = service.tag_store.profile_docs(workspace_id, page)
        return {
            "count": count,
            "members": [{"profile_id": d["profile_id"], "identifiers": d["identifiers"], "traits": d["traits"]}
                        for d in docs],  # fmt: skip
            "next_cursor": page[-1] if len(ids) > limit else None,
        }

    @router.post("/v1/segments/query", tags=["segments"], summary="Count and list the profiles a rule matches",
                 openapi_extra=QUERY_BODY)  # fmt: skip
    async def query(request: Request, workspace_id: str = Depends(reader)) -> Response:
        try:
            body = await document(request)
            if not isinstance(body, dict) or "rule" not in body:
                raise RuleError([("rule", "give the rule to match, e.g. {\"rule\": {\"tag\": \"vip\"}}")])
            unknown = sorted(set(body) - {"rule", "limit", "cursor"})
            if unknown:
                raise RuleError([(unknown[0], "unknown field; a query has rule, limit and cursor")])
            limit = body.get("limit", 50)
            if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
                raise RuleError([("limit", "give a whole number from 1 to 1000")])
            rule = check_times(parse_rule(body["rule"]))
        except RuleError as exc:
            return invalid(exc, "segment query")
        except _Invalid as exc:
            return invalid(exc.error, "segment query")
        cursor = body.get("cursor")
        return json_response(members(workspace_id, rule, limit, cursor if isinstance(cursor, str) else None))

    def saved(workspace_id: str, slug: str) -> Any:
        d = service.definitions(workspace_id, "segment").get(slug)
        if d is None:
            raise HTTPException(404, f"no segment {slug!r} in this workspace; GET /v1/segments lists them")
        return parse_rule(d.rule)

    @router.get("/v1/segments/{slug}/members", tags=["segments"], summary="A saved segment's members (paginated)")
    def segment_members(
        slug: str, limit: int = Query(50, ge=1, le=1000), cursor: str | None = None,
        workspace_id: str = Depends(reader),
    ) -> Response:  # fmt: skip
        return json_response(members(workspace_id, saved(workspace_id, slug), limit, cursor))

    @router.get("/v1/segments/{slug}/export", tags=["segments"], summary="Every member, streamed as CSV or JSONL")
    def export(slug: str, format: str = Query("jsonl", pattern="^(csv|jsonl)$"),
               workspace_id: str = Depends(reader)) -> StreamingResponse:  # fmt: skip
        rule = saved(workspace_id, slug)
        inline, now = service.tag_rules(workspace_id), service.now()  # one clock reading for the whole export

        def rows() -> Iterator[bytes]:
            after = ""
            if format == "csv":
                yield b"profile_id,identifiers,traits\n"
            while True:
                _, ids = service.tag_store.matching(workspace_id, rule, inline, now, after=after, limit=EXPORT_PAGE)
                for d in service.tag_store.profile_docs(workspace_id, ids):
                    if format == "jsonl":
                        yield orjson.dumps({"profile_id": d["profile_id"], "identifiers": d["identifiers"],
                                            "traits": d["traits"]}) + b"\n"  # fmt: skip
                    else:
                        out = io.StringIO()
                        csv.writer(out).writerow([d["profile_id"], " ".join(d["identifiers"]),
                                                  orjson.dumps(d["traits"]).decode()])  # fmt: skip
                        yield out.getvalue().encode()
                if len(ids) < EXPORT_PAGE:
                    return
                after = ids[-1]

        media = "text/csv" if format == "csv" else "application/x-ndjson"
        return StreamingResponse(rows(), media_type=media,
                                 headers={"Content-Disposition": f'attachment; filename="{slug}.{format}"'})  # fmt: skip

    return router


class _Invalid(Exception):
    def __init__(self, error: RuleError) -> None:
        super().__init__(str(error))
        self.error = error

