"""HTTP adapter of the consent defaults setting (services/settings.py, domain/consent.py).

`GET /v1/settings/consent-defaults` (read key) answers the defaults in force: per purpose, granted or denied
for a person who never decided, `*` for every purpose not named. `PUT` (write key) replaces them: a new
version in the log, after which tags and segments that declare a purpose whose default changed re-evaluate
their members. A profile's own consent is on the profile (`/v1/profiles/{identifier}/consent`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response

from api.auth import Requires, services
from api.responses import json_response
from domain.consent import BUILT_IN, DENIED, GRANTED, OTHER, ConsentError, Defaults
from domain.crm import PURPOSE
from services import Services
from services.settings import SetConsentDefaults, SettingsService

router = APIRouter(tags=["settings"])
settings_read = Requires("read", "reading consent defaults", audit=False)
settings_admin = Requires("admin", "setting consent defaults")
EXAMPLE = {"defaults": BUILT_IN}
BODY = {"requestBody": {"required": True, "content": {"application/json": {"example": EXAMPLE, "schema": {
    "type": "object", "required": ["defaults"], "additionalProperties": False,
    "properties": {"defaults": {
        "type": "object", "minProperties": 1,
        "description": f"purpose → {GRANTED} or {DENIED}; {OTHER!r} for every purpose not named ({DENIED} when not given)",
        "propertyNames": {"anyOf": [{"pattern": PURPOSE.pattern}, {"const": OTHER}]},
        "additionalProperties": {"enum": [GRANTED, DENIED]},
    }},
}}}}}  # fmt: skip
ANSWER = {"version": 1, "defaults": {"*": "denied", "analytics": "granted", "marketing": "denied",
                                     "personalisation": "denied"}}  # fmt: skip
_ANSWERED = {200: {"content": {"application/json": {"example": ANSWER}}}}


def settings(built: Services = Depends(services)) -> SettingsService:
    return built.settings


def _answer(defaults: Defaults) -> Response:
    return json_response({"version": defaults.version, "defaults": defaults.to_json()})


@router.get("/v1/settings/consent-defaults", summary="Consent per purpose for a person who never decided",
            responses=_ANSWERED)  # fmt: skip
def get_consent_defaults(workspace_id: str = Depends(settings_read), service: SettingsService = Depends(settings)) -> Response:
    return _answer(service.consent_defaults(workspace_id))


@router.put(
    "/v1/settings/consent-defaults",
    summary="Replace the consent defaults (a new version)",
    description='The whole defaults: `{"defaults": {purpose: "granted" | "denied"}}`; `*` is the default of every '
    "purpose not named (denied when not given). Members of tags and segments that declare a purpose whose "
    "default changed enter or leave accordingly, with cause `consent`. See docs/consent.md.",
    responses=_ANSWERED,
    openapi_extra=BODY,
)
async def put_consent_defaults(
    payload: dict[str, Any] = Body(...),
    workspace_id: str = Depends(settings_admin),
    service: SettingsService = Depends(settings),
) -> Response:
    unknown = sorted(set(payload) - {"defaults"})
    if unknown:
        raise ConsentError([{"field": unknown[0], "reason": 'unknown field; the body is {"defaults": {...}}'}])
    return _answer(await service.set_consent_defaults(SetConsentDefaults(workspace_id, payload.get("defaults"))))
