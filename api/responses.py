"""The one `json_response` of the HTTP API."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from fastapi.responses import Response



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
