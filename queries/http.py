"""Read API over the projections: profiles, timelines, status. Read key as `Authorization: Bearer`."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timezone
from typing import Any, Protocol
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from domain.identity import IDENTIFIER_TYPES, normalise_email, split_identifier
from projections.store import ProfileView, ProjectionStore

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, headers=headers, media_type="application/json")


class QueryService(Protocol):
    store: ProjectionStore

    def authorise_read(self, key: str) -> str | None: ...
    def status(self) -> dict[str, Any]: ...


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def profile_body(view: ProfileView) -> dict[str, Any]:
    grouped: dict[str, list[str]] = {kind: [] for kind in IDENTIFIER_TYPES}
    for ident in view.identifiers:
        kind, value = split_identifier(ident)
        grouped.setdefault(kind, []).append(value)
    return {
        "profile_id": view.profile_id,
        "identifiers": grouped,
        "traits": view.traits,
        "first_seen": _iso(view.first_seen),
        "last_seen": _iso(view.last_seen),
        "event_count": view.event_count,
        "counts": view.counts,
        "merged_profiles": sorted(f for f in view.fragments if f != view.profile_id),
        "position": view.position,
    }


def _encode_cursor(timestamp: datetime, event_id: str) -> str:
    return base64.urlsafe_b64encode(f"{_iso(timestamp)}|{event_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, _, event_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")), str(UUID(event_id))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise HTTPException(400, "cursor is not one this API returned; pass next_cursor unchanged") from None


def build_query_router(service: QueryService) -> APIRouter:
    router = APIRouter(tags=["queries"])

    def workspace(request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing read key: send it as 'Authorization: Bearer <read key>'")
        workspace_id = service.authorise_read(token.strip())
        if workspace_id is None:
            raise HTTPException(401, "unknown read key; use a read key of your workspace (see `cdp up` output)")
        return workspace_id

    def resolve(workspace_id: str, identifier: str) -> str:
        """The surviving profile id for `type:value` or a profile id (merged ones too)."""
        kind, value = split_identifier(identifier)
        if kind == "profile_id":
            if not _UUID.match(value):
                raise HTTPException(
                    400,
                    f"{identifier!r} is neither a profile id nor type:value with a type of "
                    f"{', '.join(IDENTIFIER_TYPES)}",
                )
            canonical = service.store.canonical_of(workspace_id, [str(UUID(value))])
            profile_id = canonical.get(str(UUID(value)))
        else:
            if kind == "email":
                value = normalise_email(value)
            profile_id = service.store.profile_for_identifier(workspace_id, f"{kind}:{value}")
        if profile_id is None:
            raise HTTPException(404, f"no profile has the identifier {identifier!r} (yet)")
        return profile_id

    def load(workspace_id: str, identifier: str) -> ProfileView:
        view = service.store.read_profile(workspace_id, resolve(workspace_id, identifier))
        if view is None:
            raise HTTPException(404, f"no profile has the identifier {identifier!r} (yet)")
        return view

    @router.get("/v1/profiles/{identifier}", summary="A unified profile by identifier or profile id")
    def get_profile(identifier: str, workspace_id: str = Depends(workspace)) -> Response:
        return json_response(profile_body(load(workspace_id, identifier)))

    @router.get("/v1/profiles/{identifier}/events", summary="A profile's timeline, newest first")
    def get_events(
        identifier: str,
        limit: int = Query(50, ge=1, le=1000),
        cursor: str | None = None,
        workspace_id: str = Depends(workspace),
    ) -> Response:
        view = load(workspace_id, identifier)
        before = _decode_cursor(cursor) if cursor else None
        rows = service.store.timeline(workspace_id, view.fragments, limit + 1, before)
        page, more = rows[:limit], len(rows) > limit
        events = [
            {
                "event_id": r["toString(event_id)"],
                "message_id": r["message_id"],
                "type": r["type"],
                "event": r["event"] or None,
                "name": r["name"] or None,
                "timestamp": _iso(r["timestamp"]),
                "received_at": _iso(r["received_at"]),
                "position": r["position"],
                "user_id": r["user_id"] or None,
                "anonymous_id": r["anonymous_id"] or None,
                "properties": orjson.loads(r["properties"]),
                "traits": orjson.loads(r["traits"]),
                "context": orjson.loads(r["context"]),
            }
            for r in page
        ]
        next_cursor = _encode_cursor(page[-1]["timestamp"], page[-1]["toString(event_id)"]) if more else None
        return json_response({"profile_id": view.profile_id, "events": events, "next_cursor": next_cursor})

    @router.get("/v1/status", summary="The log's last position and each projection's applied position")
    def get_status(workspace_id: str = Depends(workspace)) -> Response:
        return json_response(service.status())

    return router
