"""OpenAPI helpers shared by the routers that describe bodies they read themselves."""

from __future__ import annotations

from typing import Any, Callable, Iterable


def inline_schema(schema: dict[str, Any], family: tuple[str, ...] = ()) -> dict[str, Any]:
    """A pydantic JSON Schema with its `$defs` put where they are referred to, for an OpenAPI operation.

    FastAPI documents a route's own models under components; bodies a route reads
    itself (openapi_extra) carry their schema inline. A model met again inside itself,
    or inside another model of its `family` (a rule's and, or and not), is left as any
    object there; unions are written as anyOf.
    """
    defs = schema.get("$defs", {})

    def resolve(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.rsplit("/", 1)[1]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            if name in seen or (name in family and seen.intersection(family)):
                return {"type": "object", **rest}
            return resolve({**defs[name], **rest}, seen | {name})
        # A discriminator's mapping names $defs that are gone; the variants' consts still tell them apart,
        # and anyOf, unlike oneOf, stays true where a cut-off child matches more than one variant.
        return {
            "anyOf" if k == "oneOf" else k: resolve(v, seen) for k, v in node.items() if k not in ("$defs", "discriminator")
        }

    return resolve(schema, frozenset())  # type: ignore[no-any-return]


def document_keys(schema: dict[str, Any], routes: Iterable[Any], describe: Callable[[Any], str | None]) -> None:
    """Say in each operation which key it needs: `describe` turns a route's key dependency (api/auth.Requires,
    PlatformKey) into words, written first in the description and as `x-cdp-key`."""

    def needed(dependant: Any) -> str | None:
        for dependency in dependant.dependencies:
            said = describe(dependency.call) or needed(dependency)
            if said:
                return said
        return None

    for route in routes:
        included = getattr(route, "original_router", None)  # a router included in one of them (FastAPI ≥ 0.160)
        if not hasattr(route, "dependant") and included is not None:
            document_keys(schema, included.routes, describe)
            continue
        said = needed(route.dependant) if hasattr(route, "dependant") else None
        operations = schema.get("paths", {}).get(getattr(route, "path", ""), {})
        for method in getattr(route, "methods", ()):
            operation = operations.get(method.lower())
            if said and operation is not None:
                operation["x-cdp-key"] = said
                operation["description"] = f"**Key:** {said}.\n\n" + operation.get("description", "")
