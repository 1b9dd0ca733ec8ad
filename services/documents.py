"""JSON data as the log and ClickHouse can carry it: what a parsed body may hold that they cannot.

Python's JSON parser accepts integers of any size, NaN and Infinity, and lone UTF-16
surrogates (\\ud800) that are not text; YAML has more still. Every way in checks its
documents here before they are recorded or sent in a query.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

from domain.tags import RuleError, load_document

MIN_INT, MAX_INT = -(2**63), 2**64 - 1  # the integers JSON ingest keeps exactly (orjson); others become floats
MAX_NODES = 100_000  # values in one document; YAML aliases can make a short text a huge one


def is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_problems(value: Any, path: str = "", limit: int = 20) -> list[tuple[str, str]]:
    """(path, reason) of what a JSON body parsed by FastAPI may hold but the log and ClickHouse cannot."""
    problems: list[tuple[str, str]] = []
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack and len(problems) < limit:
        item, at = stack.pop()
        name = at or "(body)"
        if isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and not is_text(key):
                    problems.append((name, f"the key {key!r} is not valid Unicode text (a lone surrogate)"))
                stack.append((child, f"{at}.{key}" if at else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{at}[{i}]") for i, child in enumerate(item))
        elif isinstance(item, str):
            if not is_text(item):
                problems.append((name, "not valid Unicode text (a lone surrogate)"))
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append((name, f"{item} is not a number JSON can carry; send a finite number"))
        elif isinstance(item, int) and not isinstance(item, bool):
            if not MIN_INT <= item <= MAX_INT:
                problems.append((name, f"the integer is outside {MIN_INT} to {MAX_INT}"))
    return sorted(problems)


def json_data(doc: Any) -> Any:
    """A parsed document as JSON data, or RuleError naming each path that is not.

    YAML's unquoted dates and times are read as the ISO text written; keys that are
    not strings, binary values, sets, NaN and infinities, integers beyond 64 bits and
    lone surrogates are refused, as neither the log nor a ClickHouse query can carry them.
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
            if not is_text(value):
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


def read_document(raw: bytes, content_type: str) -> Any:
    """A JSON or YAML body as JSON data; RuleError with the path of each problem."""
    try:
        doc = load_document(raw, content_type)
    except RuleError:
        raise
    except RecursionError:
        raise RuleError([("(body)", "nested too deeply; flatten the document")]) from None
    except (ValueError, TypeError, OverflowError) as exc:  # YAML's 2026-13-01, a timestamp out of range
        raise RuleError([("(body)", f"neither JSON nor YAML: {exc}")]) from None
    return json_data(doc)
