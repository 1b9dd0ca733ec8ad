"""HTTP adapter of the profiles and identity service: profile reads, listings and timelines, and the
identity commands (split, rules).

Reads need a read key with the profiles (or, for timelines, events) scope as
`Authorization: Bearer`; identity commands need an admin key (domain/access.py). Each route turns
the request into a query or command of services/profiles.py and its answer into JSON.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.auth import Requires, audit_target, services
from api.errors import ApiError
from api.params import QUERY_TIME, QUERY_TIME_HELP, decode_cursor, encode_cursor, parse_query_time
from api.responses import json_response
from domain.identity import IdentityRules
from services import Services
from services.documents import json_problems
from services.profiles import (
    MAX_PAGE, GetConsent, GetMerges, GetProfile, GetTimeline, ListProfiles, ProfileService, SetRules, SplitProfile,
)  # fmt: skip

router = APIRouter(tags=["profiles"])
profiles_read = Requires("read:profiles", "reading profiles")
events_read = Requires("read:events", "reading timelines")
identity_admin = Requires("admin", "changing identity (splits, rules)")
any_read = Requires("read", "this", audit=False)


def profiles(built: Services = Depends(services)) -> ProfileService:
    return built.profiles


def _trait_filters(request: Request) -> dict[str, list[str]]:
    """`trait.<name>=<value>` parameters as {name: raw JSON values}: the text, and the JSON value it parses to."""
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
            raise ApiError(400, "bad_request", f"unknown parameter {key!r}: filter with trait.<name>=<value>")
    return wanted


@router.get(
    "/v1/profiles",
    summary="List profiles by profile id, optionally filtered by trait: ?trait.plan=pro&trait.country=DE",
    description=f"Paginated: `limit` profiles (at most {MAX_PAGE}) per page; pass `next_cursor` as `cursor` for the "
    "next page. Without a `trait.<name>` filter every profile of the workspace is listed.",
)
def find_profiles(
    request: Request,
    limit: int = Query(50, ge=1, le=MAX_PAGE),
    cursor: str | None = Query(None, description="next_cursor of the page before"),
    workspace_id: str = Depends(profiles_read),
    service: ProfileService = Depends(profiles),
) -> Response:
    page = service.profiles(ListProfiles(workspace_id, _trait_filters(request), limit, cursor))
    return json_response({"profiles": page.profiles, "next_cursor": page.next_after})


@router.get("/v1/profiles/{identifier}", summary="A unified profile by identifier or profile id")
def get_profile(
    identifier: str,
    request: Request,
    as_of: str | None = Query(None, description=f"the profile as it was then; {QUERY_TIME_HELP}",
                              json_schema_extra=QUERY_TIME),
    workspace_id: str = Depends(profiles_read),
    service: ProfileService = Depends(profiles),
) -> Response:  # fmt: skip
    profile = service.profile(GetProfile(workspace_id, identifier, parse_query_time("as_of", as_of)))
    audit_target(request, profile.get("profile_id"))
    return json_response(profile)


@router.get("/v1/profiles/{identifier}/events", summary="A profile's timeline, newest first, filterable")
def get_events(
    identifier: str,
    request: Request,
    limit: int = Query(50, ge=1, le=MAX_PAGE),
    cursor: str | None = None,
    type: list[str] = Query(default_factory=list, description="call type or track event name; repeatable"),
    since: str | None = Query(None, alias="from", description=QUERY_TIME_HELP, json_schema_extra=QUERY_TIME),
    until: str | None = Query(None, alias="to", description=QUERY_TIME_HELP, json_schema_extra=QUERY_TIME),
    as_of: str | None = Query(None, description=QUERY_TIME_HELP, json_schema_extra=QUERY_TIME),
    workspace_id: str = Depends(events_read),
    service: ProfileService = Depends(profiles),
) -> Response:
    when = parse_query_time("as_of", as_of)
    timeline = service.timeline(GetTimeline(
        workspace_id, identifier, limit, decode_cursor(cursor) if cursor else None, tuple(type),
        parse_query_time("from", since), parse_query_time("to", until), when,
    ))  # fmt: skip
    audit_target(request, timeline.profile_id)
    next_cursor = encode_cursor(*timeline.next_before) if timeline.next_before else None
    return json_response({"profile_id": timeline.profile_id, "events": timeline.events, "next_cursor": next_cursor})


CONSENT_EXAMPLE = {
    "profile_id": "86dfc915-baff-5154-b741-04c27749136a",
    "consent": {
        "analytics": {"granted": True, "source": "default", "at": None, "event_id": None},
        "marketing": {"granted": False, "source": "event", "at": "2026-03-02T09:15:00.000Z",
                      "event_id": "5d0c6d4e-7f0a-5b43-9a31-2f4f3c1f9b11"},
        "personalisation": {"granted": False, "source": "default", "at": None, "event_id": None},
    },
    "defaults": {"version": 0, "defaults": {"*": "denied", "analytics": "granted", "marketing": "denied",
                                             "personalisation": "denied"}},
    "history": [
        {"purpose": "marketing", "granted": False, "at": "2026-03-02T09:15:00.000Z",
         "received_at": "2026-03-02T09:15:00.204Z", "event_id": "5d0c6d4e-7f0a-5b43-9a31-2f4f3c1f9b11",
         "position": 118, "channel": "preference-centre"},
        {"purpose": "marketing", "granted": True, "at": "2026-01-10T17:40:00.000Z",
         "received_at": "2026-01-10T17:40:00.311Z", "event_id": "0b7e2c55-2a4e-5f1d-8d2b-6f9a1c3e7d20",
         "position": 42, "channel": "signup-form"},
    ],
}  # fmt: skip


@router.get(
    "/v1/profiles/{identifier}/consent",
    summary="A profile's consent per purpose, and its decisions newest first",
    description="Each purpose the workspace's consent defaults name or the person decided on: `source` `event` (the "
    "latest Consent Changed of the purpose, by event time) or `default` (the workspace's default; "
    "`/v1/settings/consent-defaults`). With `as_of`, as known then: the decisions received by that time and the "
    "defaults in force. See docs/consent.md.",
    responses={200: {"content": {"application/json": {"example": CONSENT_EXAMPLE}}}},
)
def get_consent(
    identifier: str,
    request: Request,
    as_of: str | None = Query(None, description=f"consent as known then; {QUERY_TIME_HELP}",
                              json_schema_extra=QUERY_TIME),
    limit: int = Query(100, ge=1, le=MAX_PAGE, description="decisions in `history`, newest first"),
    workspace_id: str = Depends(profiles_read),
    service: ProfileService = Depends(profiles),
) -> Response:  # fmt: skip
    query = GetConsent(workspace_id, identifier, parse_query_time("as_of", as_of), limit)
    consent = service.consent(query)
    audit_target(request, consent.get("profile_id"))
    return json_response(consent)


@router.get("/v1/profiles/{identifier}/merges", summary="A profile's identity events: links, merges, refusals, splits")
def get_merges(
    identifier: str, request: Request, workspace_id: str = Depends(profiles_read),
    service: ProfileService = Depends(profiles),
) -> Response:  # fmt: skip
    merges = service.merges(GetMerges(workspace_id, identifier))
    audit_target(request, merges.get("profile_id"))
    return json_response(merges)


@router.post("/v1/profiles/{identifier}/split", summary="Move identifiers, and their events, to a new profile")
async def split_profile(
    identifier: str,
    request: Request,
    payload: dict[str, Any] = Body(..., examples=[{"identifiers": ["anonymous_id:device-9"], "reason": "shared"}]),
    workspace_id: str = Depends(identity_admin),
    service: ProfileService = Depends(profiles),
) -> Response:
    idents = payload.get("identifiers")
    if not isinstance(idents, list) or not idents or not all(isinstance(i, str) for i in idents):
        raise ApiError(400, "bad_request", "identifiers: give a non-empty list of type:value strings to split off")
    problems = json_problems({"identifiers": idents, "reason": payload.get("reason")})
    if problems:
        raise ApiError(400, "bad_request", "; ".join(f"{path}: {reason}" for path, reason in problems))
    done = await service.split(SplitProfile(workspace_id, identifier, tuple(idents), str(payload.get("reason") or "")))
    audit_target(request, done.profile_id)
    return json_response({"profile_id": done.profile_id, "new_profile_id": done.new_profile_id,
                          "identifiers": done.identifiers}, 201)  # fmt: skip


@router.get("/v1/identity/rules", tags=["identity"], summary="The workspace's identity and trait rules")
def get_rules(workspace_id: str = Depends(any_read), service: ProfileService = Depends(profiles)) -> Response:
    version, rules = service.rules(workspace_id)
    return json_response({"version": version, "rules": rules.model_dump(mode="json")})


def _invalid_rules(errors: list[dict[str, str]]) -> ApiError:
    return ApiError(400, "invalid_rules", "invalid rules; nothing changed", errors)


@router.put("/v1/identity/rules", tags=["identity"], summary="Replace the rules (a new version)")
async def put_rules(
    payload: dict[str, Any] = Body(...), workspace_id: str = Depends(identity_admin),
    service: ProfileService = Depends(profiles),
) -> Response:  # fmt: skip
    problems = json_problems(payload)
    if problems:  # checked first: rules are recorded in the log and read by every projection
        raise _invalid_rules([{"field": path, "reason": reason} for path, reason in problems])
    try:
        rules = IdentityRules.model_validate(payload)
    except ValidationError as exc:
        raise _invalid_rules([{"field": ".".join(str(p) for p in e["loc"]) or "(rules)", "reason": e["msg"]}
                              for e in exc.errors(include_url=False)]) from None  # fmt: skip
    version = await service.set_rules(SetRules(workspace_id, rules))
    return json_response({"version": version, "rules": rules.model_dump(mode="json")})


@router.get("/v1/status", tags=["operations"], summary="The log's last position and each projection's position")
def get_status(workspace_id: str = Depends(any_read), built: Services = Depends(services)) -> Response:
    # Positions are the platform's; the dead letters counted are this workspace's only.
    return json_response(built.status(workspace_id))
