"""/openapi.json documents consent: the purpose of definitions, queries and exports, the profile's consent and the
consent defaults setting, each with an example."""

from pathlib import Path
from typing import Any

from infra.bootstrap import Platform
from infra.config import Settings
from infra.server import create_app


def _doc() -> dict[str, Any]:
    return create_app(Platform(Settings(data_dir=Path("unused")))).openapi()


def _json_body(operation: dict[str, Any]) -> dict[str, Any]:
    return operation["requestBody"]["content"]["application/json"]  # type: ignore[no-any-return]


def test_definitions_queries_and_exports_take_a_purpose_with_examples() -> None:
    paths = _doc()["paths"]
    for path, method in (("/v1/tags", "post"), ("/v1/tags/{slug}", "put"), ("/v1/segments", "post")):
        body = _json_body(paths[path][method])
        assert "purpose" in body["schema"]["properties"], path
        assert body["example"]["purpose"] == "marketing", path
    query = _json_body(paths["/v1/segments/query"]["post"])
    assert "purpose" in query["schema"]["properties"] and query["example"]["purpose"] == "marketing"
    [purpose] = [p for p in paths["/v1/segments/{slug}/export"]["get"]["parameters"] if p["name"] == "purpose"]
    assert purpose["in"] == "query" and purpose["schema"]["examples"] == ["marketing"]


def test_the_profiles_consent_and_the_defaults_setting_are_documented_with_examples() -> None:
    paths = _doc()["paths"]
    consent = paths["/v1/profiles/{identifier}/consent"]["get"]
    example = consent["responses"]["200"]["content"]["application/json"]["example"]
    assert {"profile_id", "consent", "defaults", "history"} <= set(example)
    assert {p["name"] for p in consent["parameters"]} >= {"identifier", "as_of", "limit"}
    settings = paths["/v1/settings/consent-defaults"]
    assert settings["get"]["responses"]["200"]["content"]["application/json"]["example"]["defaults"]["marketing"] == "denied"
    put = _json_body(settings["put"])
    assert put["example"]["defaults"]["marketing"] == "denied" and put["schema"]["required"] == ["defaults"]
    assert put["schema"]["properties"]["defaults"]["additionalProperties"] == {"enum": ["granted", "denied"]}
