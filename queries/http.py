"""Read API over the projections, and the identity commands (split, rules).

Reads need the read key as `Authorization: Bearer`; identity commands change data
and need the write key (as Bearer or as the HTTP Basic username).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Protocol
from uuid import UUID

import orjson
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from domain.application import IdentityError
from domain.identity import IdentityRules, normalise_identifier, own_identifier, split_identifier
from domain.tags import TIME_WINDOW, time_window_error
from domain.traits import lifecycle_stage, rfm
from infra.http_errors import error_body
from projections.store import ProfileView, ProjectionStore, iso

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
RFM_TTL_SECONDS = 5.0


class QueryService(Protocol):
    store: ProjectionStore

    def authorise_read(self, key: str) -> str | None: ...
    def authorise_write(self, key: str) -> str | None: ...
    def status(self) -> dict[str, Any]: ...
    def rules(self, workspace_id: str) -> tuple[int, IdentityRules]: ...
    def set_rules(self, workspace_id: str, rules: IdentityRules) -> Awaitable[int]: ...
    def split(self, workspace_id: str, profile_id: str, identifiers: list[str], reason: str) -> Awaitable[str]: ...


QUERY_TIME = {"format": "date-time"}  # documents an ISO time parameter; parse_query_time reads it
QUERY_TIME_HELP = f"ISO 8601 time from {TIME_WINDOW}"
MIN_INT, MAX_INT = -(2**63), 2**64 - 1  # the integers JSON ingest keeps exactly (orjson); others become floats


def _plain(value: Any) -> Any:
    """`value` with what JSON cannot carry made plain: non-finite floats as null, other objects as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    try:
        content = orjson.dumps(body)
    except TypeError:  # an integer beyond 64 bits or a lone surrogate, e.g. recorded before they were refused
        content = json.dumps(_plain(body), separators=(",", ":")).encode()
    return Response(content, status_code=status_code, headers=headers, media_type="application/json")


def json_problems(value: Any, path: str = "", limit: int = 20) -> list[tuple[str, str]]:
    """(path, reason) of what a JSON body parsed by FastAPI may hold but the log and ClickHouse cannot.

    Python's JSON parser accepts integers of any size, NaN and Infinity, and lone
    UTF-16 surrogates (\\ud800) that are not text; these are refused before they are
    recorded or sent in a query.
    """
    problems: list[tuple[str, str]] = []
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack and len(problems) < limit:
        item, at = stack.pop()
        name = at or "(body)"
        if isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and not _is_text(key):
                    problems.append((name, f"the key {key!r} is not valid Unicode text (a lone surrogate)"))
                stack.append((child, f"{at}.{key}" if at else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{at}[{i}]") for i, child in enumerate(item))
        elif isinstance(item, str):
            if not _is_text(item):
                problems.append((name, "not valid Unicode text (a lone surrogate)"))
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append((name, f"{item} is not a number JSON can carry; send a finite number"))
        elif isinstance(item, int) and not isinstance(item, bool):
            if not MIN_INT <= item <= MAX_INT:
                problems.append((name, f"the integer is outside {MIN_INT} to {MAX_INT}"))
    return sorted(problems)


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_query_time(name: str, value: str | None) -> datetime | None:
    """An ISO 8601 time parameter (UTC when it has no offset); 400 unless inside the window that can be queried."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"{name}={value!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z") from None
    parsed = parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed
    try:
        reason = time_window_error(parsed.astimezone(timezone.utc))
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00: no UTC time
        reason = f"{value} is outside the times that can be queried: {TIME_WINDOW}"
    if reason is not None:
        raise HTTPException(400, f"{name}={value!r}: {reason}")
    return parsed


def _encode_cursor(timestamp: datetime, event_id: str) -> str:
    return base64.urlsafe_b64encode(f"{iso(timestamp)}|{event_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, _, event_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        at = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at
        if time_window_error(at.astimezone(timezone.utc)) is not None:
            raise ValueError("not a time this API returns")
        return at, str(UUID(event_id))
    except (binascii.Error, UnicodeError, ValueError, OverflowError):
        raise HTTPException(400, "cursor is not one this API returned; pass next_cursor unchanged") from None


def _grouped(identifiers: list[str], types: list[str]) -> dict[str, list[str]]:
    """{type: values} in the workspace's type order, only the types the profile has."""
    grouped: dict[str, list[str]] = {}
    for ident in identifiers:
        kind, _, value = ident.partition(":")
        grouped.setdefault(kind, []).append(value)
    order = {kind: i for i, kind in enumerate(types)}
    return {kind: sorted(grouped[kind]) for kind in sorted(grouped, key=lambda k: (order.get(k, len(order)), k))}


def bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def read_access(service: Any) -> Callable[[Request], str]:
    """A dependency resolving the read key (Bearer) to its workspace id, 401 otherwise."""

    def workspace(request: Request) -> str:
        token = bearer(request)
        if not token:
            raise HTTPException(401, "missing read key: send it as 'Authorization: Bearer <read key>'")
        workspace_id = service.authorise_read(token)
        if workspace_id is None:
            raise HTTPException(401, "unknown read key; use a read key of your workspace (see `cdp up` output)")
        return workspace_id

    return workspace


def key_of(request: Request) -> str:
    """The key sent as `Authorization: Bearer <key>` or as the HTTP Basic username ("" for none)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return ""


def write_access(service: Any, needed_for: str) -> Callable[[Request], str]:
    """A dependency resolving a write key (Bearer or HTTP Basic username) to its workspace id, 401 otherwise."""

    def workspace(request: Request) -> str:
        key = key_of(request)
        if not key:
            raise HTTPException(401, "missing write key: this changes data; send 'Authorization: Bearer <write key>'")
        workspace_id = service.authorise_write(key)
        if workspace_id is None:
            raise HTTPException(401, f"unknown write key; {needed_for}")
        return workspace_id

    return workspace


def build_query_router(
    service: QueryService, profile_extras: Callable[[str, str], dict[str, Any]] | None = None
) -> APIRouter:
    """`profile_extras(workspace, profile id)` adds fields to the current profile (its tags)."""
    router = APIRouter(tags=["profiles"])
    rfm_cache: dict[str, tuple[float, dict[str, list[float]]]] = {}
    workspace = read_access(service)

    writer = write_access(service, "identity commands need a write key of your workspace")

    def typed(workspace_id: str, identifier: str) -> tuple[str, str]:
        """(type, normalised value) of an identifier in the API's path; type `profile_id` for bare ids."""
        _, rules = service.rules(workspace_id)
        kind, value = split_identifier(identifier, rules.types)
        if kind == "profile_id":
            return kind, value
        kind, _, value = normalise_identifier(f"{kind}:{value}").partition(":")
        return kind, value

    def resolve(workspace_id: str, identifier: str, as_of: datetime | None = None) -> str:
        """The profile id for `type:value` or a profile id (a merged-away one resolves to its survivor)."""
        _, rules = service.rules(workspace_id)
        kind, value = typed(workspace_id, identifier)
        if kind == "profile_id":
            if not _UUID.match(value):
                raise HTTPException(
                    400, f"{identifier!r} is neither a profile id nor type:value with a type of {', '.join(rules.types)}"
                )
            profile_id = str(UUID(value))
            if as_of is None and service.store.read_profile(workspace_id, profile_id) is None:
                profile_id = service.store.merged_into(workspace_id, profile_id) or profile_id
            return profile_id
        profile_id = service.store.owner_of(workspace_id, f"{kind}:{value}", as_of)
        if profile_id is None:
            raise HTTPException(404, f"no profile has the identifier {identifier!r}" + (" at that time" if as_of else ""))
        return profile_id

    def load(workspace_id: str, identifier: str, as_of: datetime | None = None) -> ProfileView:
        kind, value = typed(workspace_id, identifier)
        if as_of is None and kind != "profile_id":
            found = service.store.read_profile_of(workspace_id, f"{kind}:{value}")
            if found is None:
                raise HTTPException(404, f"no profile has the identifier {identifier!r}")
            return found
        profile_id = resolve(workspace_id, identifier, as_of)
        if as_of is None:
            view = service.store.read_profile(workspace_id, profile_id)
        else:
            _, rules = service.rules(workspace_id)
            view = service.store.compute_profiles(workspace_id, [profile_id], as_of, rules.trait_sources)[profile_id]
            view = view if view.alive else None
        if view is None:
            raise HTTPException(404, f"no profile has the identifier {identifier!r}" + (" at that time" if as_of else ""))
        return view

    def boundaries(workspace_id: str) -> dict[str, list[float]]:
        cached = rfm_cache.get(workspace_id)
        if cached is None or time.monotonic() - cached[0] > RFM_TTL_SECONDS:
            cached = (time.monotonic(), service.store.rfm_boundaries(workspace_id))
            rfm_cache[workspace_id] = cached
        return cached[1]

    def body(workspace_id: str, view: ProfileView, as_of: datetime | None, with_changes: bool) -> dict[str, Any]:
        _, rules = service.rules(workspace_id)
        now = as_of or datetime.now(timezone.utc)
        computed = view.computed()
        days = (now - view.last_order_at).total_seconds() / 86400 if view.last_order_at else None
        computed["rfm"] = rfm(days, view.orders_count, view.revenue, boundaries(workspace_id))
        computed["lifecycle_stage"] = lifecycle_stage(
            {i.partition(":")[0] for i in view.identifiers}, view.orders_count, view.last_order_at,
            view.track_counts, now, rules.lifecycle,
        )  # fmt: skip
        result: dict[str, Any] = {
            "profile_id": view.profile_id,
            "identifiers": _grouped(view.identifiers, rules.types),
            "traits": view.traits,
            "trait_sources": view.trait_sources,
            "computed_traits": computed,
            "first_seen": computed["first_seen"],
            "last_seen": computed["last_seen"],
            "event_count": view.event_count,
            "counts": computed["counts"],
            "position": view.position,
        }
        if as_of is not None:
            result["as_of"] = iso(as_of)
        if with_changes:
            changes = view.changes
            result["merged_profiles"] = sorted(
                {c["other_profile_id"] for c in changes if c["change"] == "absorbed" and c["profile_id"] == view.profile_id}
            )
            result["merge_history"] = [c for c in changes if c["change"] != "linked"]
        return result

    @router.get("/v1/profiles", summary="Find profiles by trait: ?trait.plan=pro&trait.country=DE (paginated)")
    def find_profiles(
        request: Request,
        limit: int = Query(50, ge=1, le=1000),
        cursor: str | None = None,
        workspace_id: str = Depends(workspace),
    ) -> Response:
        wanted: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            if key.startswith("trait."):
                raws = [orjson.dumps(value).decode()]
                try:
                    parsed = orjson.loads(value)
                    if not isinstance(parsed, str):
                        raws.append(orjson.dumps(parsed).decode())
                except orjson.JSONDecodeError:
                    pass
                wanted.setdefault(key[len("trait.") :], []).extend(raws)
            elif key not in ("limit", "cursor"):
                raise HTTPException(400, f"unknown parameter {key!r}: filter with trait.<name>=<value>")
        if not wanted:
            raise HTTPException(400, "give at least one trait filter, e.g. ?trait.plan=pro")
        views = service.store.find_profiles(workspace_id, wanted, limit + 1, cursor)
        page = views[:limit]
        return json_response(
            {
                "profiles": [body(workspace_id, v, None, with_changes=False) for v in page],
                "next_cursor": page[-1].profile_id if len(views) > limit else None,
            }
        )

    @router.get("/v1/profiles/{identifier}", summary="A unified profile by identifier or profile id")
    def get_profile(
        identifier: str,
        as_of: str | None = Query(None, description=f"the profile as it was then; {QUERY_TIME_HELP}",
                                  json_schema_extra=QUERY_TIME),
        workspace_id: str = Depends(workspace),
    ) -> Response:  # fmt: skip
        when = parse_query_time("as_of", as_of)
        view = load(workspace_id, identifier, when)
        result = body(workspace_id, view, when, with_changes=True)
        if profile_extras is not None and when is None:
            result.update(profile_extras(workspace_id, view.profile_id))
        return json_response(result)

    @router.get("/v1/profiles/{identifier}/events", summary="A profile's timeline, newest first, filterable")
    def get_events(
        identifier: str,
        limit: int = Query(50, ge=1, le=1000),
        cursor: str | None = None,
        type: list[str] = Query(default_factory=list, description="call type or track event name; repeatable"),
        since: str | None = Query(None, alias="from", description=QUERY_TIME_HELP, json_schema_extra=QUERY_TIME),
        until: str | None = Query(None, alias="to", description=QUERY_TIME_HELP, json_schema_extra=QUERY_TIME),
        as_of: str | None = Query(None, description=QUERY_TIME_HELP, json_schema_extra=QUERY_TIME),
        workspace_id: str = Depends(workspace),
    ) -> Response:
        when = parse_query_time("as_of", as_of)
        view = load(workspace_id, identifier, when)
        rows = service.store.timeline(
            workspace_id, view.identifiers + [own_identifier(view.profile_id)], limit + 1,
            _decode_cursor(cursor) if cursor else None, type, parse_query_time("from", since), parse_query_time("to", until), when,
        )  # fmt: skip
        page, more = rows[:limit], len(rows) > limit
        events = [
            {
                "event_id": r["id"], "message_id": r["message_id"], "type": r["type"],
                "event": r["event"] or None, "name": r["name"] or None, "source": r["source"] or None,
                "anchor": r["anchor"], "timestamp": iso(r["timestamp"]), "received_at": iso(r["received_at"]),
                "position": r["position"], "user_id": r["user_id"] or None, "anonymous_id": r["anonymous_id"] or None,
                "properties": orjson.loads(r["properties"]), "traits": orjson.loads(r["traits"]),
                "context": orjson.loads(r["context"]),
            }  # fmt: skip
            for r in page
        ]
        next_cursor = _encode_cursor(page[-1]["timestamp"], page[-1]["id"]) if more else None
        return json_response({"profile_id": view.profile_id, "events": events, "next_cursor": next_cursor})

    @router.get("/v1/profiles/{identifier}/merges", summary="A profile's identity events: links, merges, refusals, splits")
    def get_merges(identifier: str, workspace_id: str = Depends(workspace)) -> Response:
        profile_id = resolve(workspace_id, identifier)
        # The profile's own identity events, and those of every profile merged into it.
        changes, pending, seen = [], [profile_id], set()
        while pending:
            current = pending.pop()
            seen.add(current)
            for change in service.store.changes(workspace_id, current):
                changes.append(change)
                if change["change"] == "absorbed" and change["other_profile_id"] not in seen:
                    pending.append(change["other_profile_id"])
        changes.sort(key=lambda c: (c["position"], c["profile_id"], c["change"]))
        return json_response({"profile_id": profile_id, "changes": changes})

    @router.post("/v1/profiles/{identifier}/split", summary="Move identifiers, and their events, to a new profile")
    async def split_profile(
        identifier: str,
        payload: dict[str, Any] = Body(..., examples=[{"identifiers": ["anonymous_id:device-9"], "reason": "shared"}]),
        workspace_id: str = Depends(writer),
    ) -> Response:
        idents = payload.get("identifiers")
        if not isinstance(idents, list) or not idents or not all(isinstance(i, str) for i in idents):
            raise HTTPException(400, "identifiers: give a non-empty list of type:value strings to split off")
        problems = json_problems({"identifiers": idents, "reason": payload.get("reason")})
        if problems:
            raise HTTPException(400, "; ".join(f"{path}: {reason}" for path, reason in problems))
        profile_id = resolve(workspace_id, identifier)
        try:
            idents = [normalise_identifier(i) for i in idents]
            new_id = await service.split(workspace_id, profile_id, idents, str(payload.get("reason") or ""))
        except IdentityError as exc:
            raise HTTPException(409, str(exc)) from None
        return json_response({"profile_id": profile_id, "new_profile_id": new_id, "identifiers": idents}, 201)

    @router.get("/v1/identity/rules", tags=["identity"], summary="The workspace's identity and trait rules")
    def get_rules(workspace_id: str = Depends(workspace)) -> Response:
        version, rules = service.rules(workspace_id)
        return json_response({"version": version, "rules": rules.model_dump(mode="json")})

    @router.put("/v1/identity/rules", tags=["identity"], summary="Replace the rules (a new version)")
    async def put_rules(payload: dict[str, Any] = Body(...), workspace_id: str = Depends(writer)) -> Response:
        problems = json_problems(payload)
        if problems:  # checked first: rules are recorded in the log and read by every projection
            errors = [{"field": path, "reason": reason} for path, reason in problems]
            return json_response(error_body("invalid_rules", "invalid rules; nothing changed", errors), 400)
        try:
            rules = IdentityRules.model_validate(payload)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]) or "(rules)", "reason": e["msg"]}
                for e in exc.errors(include_url=False)
            ]
            return json_response(error_body("invalid_rules", "invalid rules; nothing changed", errors), 400)
        version = await service.set_rules(workspace_id, rules)
        return json_response({"version": version, "rules": rules.model_dump(mode="json")})

    @router.get("/v1/status", tags=["operations"], summary="The log's last position and each projection's position")
    def get_status(workspace_id: str = Depends(workspace)) -> Response:
        return json_response(service.status())

    return router

