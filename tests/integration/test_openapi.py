"""/openapi.json describes the ingest bodies, which the routes read themselves (for gzip), from the
pydantic models ingest validates with (domain/segment.py)."""

from pathlib import Path
from typing import Any

from domain.segment import Alias, Group, Identify, Page, Screen, Track
from infra.bootstrap import Platform
from infra.config import Settings
from infra.server import create_app

MODELS = {"identify": Identify, "track": Track, "page": Page, "screen": Screen, "group": Group, "alias": Alias}


def _doc() -> dict[str, Any]:
    return create_app(Platform(Settings(data_dir=Path("unused")))).openapi()


def _body(doc: dict[str, Any], path: str) -> dict[str, Any]:
    body = doc["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    return body["content"]["application/json"]  # type: ignore[no-any-return]


def _variants(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return schema.get("anyOf", [schema])  # type: ignore[no-any-return]


def test_every_call_route_documents_its_model() -> None:
    doc = _doc()
    for call_type, model in MODELS.items():
        content = _body(doc, f"/v1/{call_type}")
        documented = _variants(content["schema"])[0]
        fields = set(model.model_json_schema()["properties"]) - {"type"}
        assert fields | {"writeKey"} == set(documented["properties"]), call_type
        required = set(model.model_json_schema().get("required", [])) - {"type"}
        assert required == set(documented.get("required", [])), call_type
        assert "$ref" not in str(documented), call_type  # inlined: the document stands alone
        assert content["example"], call_type
    assert "previousId" in _variants(_body(doc, "/v1/alias")["schema"])[0]["required"]
    assert "groupId" in _variants(_body(doc, "/v1/group")["schema"])[0]["required"]
    track = _variants(_body(doc, "/v1/track")["schema"])
    assert len(track) > 1 and any("Order Completed" in v["properties"]["event"].get("enum", []) for v in track)


def test_the_batch_documents_each_call_type() -> None:
    content = _body(_doc(), "/v1/batch")
    schema = content["schema"]
    assert schema["required"] == ["batch"] and {"batch", "sentAt", "context", "writeKey"} <= set(schema["properties"])
    items = schema["properties"]["batch"]["items"]["anyOf"]
    assert {tuple(v["properties"]["type"].get("enum", [v["properties"]["type"].get("const")]))[0] for v in items} == set(MODELS)
    assert [c["type"] for c in content["example"]["batch"]] == ["identify", "track"]
