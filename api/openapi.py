"""OpenAPI helpers shared by the routers that describe bodies they read themselves."""

from __future__ import annotations

from typing import Any


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
