"""Webhook sources: declarative mappings from a tool's webhook JSON to Segment calls.

A tool that can only call a URL (a payment provider, a help desk, a survey tool)
posts its own JSON. A workspace's **mapping** for that source says which calls
the payload becomes: the event type field that picks the rules, the tool's event
id (so a redelivery is the same `messageId` and is stored once), the event time,
who the call is about, and the properties or traits, each taken from a field
path with simple conversions (minor units to units, upper case, unix seconds to
ISO time, a lookup table).

Mappings are written in YAML or JSON (see docs/webhooks.md) and stored as
versioned events of a `WebhookMapping` aggregate in the log, like tag
definitions. This module is pure: the models, the path language, and `apply`,
which turns one payload into a list of Segment call dicts for the intake to
validate. No drivers, no HTTP.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Annotated, Any, Literal, Union
from uuid import UUID, uuid5

import orjson
import yaml
from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from domain.model import NAMESPACE
from domain.times import UTC, parse_instant, shown

SOURCE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ANY_TYPE = "*"  # the rules for event types the mapping does not list
MAX_TEXT = 64 * 1024  # bytes of one mapping document
MAX_EVENT_TYPES = 500
MAX_CALLS = 20  # calls one event type may produce
MAX_MESSAGE_ID = 256  # domain/segment.py keeps messageIds to this length
CONVERSIONS = (
    "string", "number", "integer", "boolean", "upper", "lower", "trim", "cents", "minor_units", "unix", "unix_ms",
    "iso",
)  # fmt: skip
# ISO 4217 minor units other than 2 (Stripe and most payment tools send amounts in the currency's minor unit).
ZERO_DECIMAL = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()
)  # fmt: skip
THREE_DECIMAL = frozenset("BHD IQD JOD KWD LYD OMR TND".split())


class MappingError(ValueError):
    """A mapping that cannot be accepted; `errors` holds (path in the document, reason) pairs."""

    def __init__(self, errors: list[tuple[str, str]], code: str = "invalid_mapping") -> None:
        super().__init__("; ".join(f"{p}: {r}" for p, r in errors))
        self.errors = errors
        self.code = code


class Unmapped(Exception):
    """The mapping has no call for this payload (its event type is not listed, or no rule applies)."""

    def __init__(self, reason: str, event_type: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_type = event_type


class PayloadError(Exception):
    """The payload lacks a field the mapping requires, or a value does not convert; `field` is its path."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.event_type: str | None = None  # set by `apply` once the payload's type is known


# Paths into the payload ------------------------------------------------------------------------
#
#   data.object.amount            keys, separated by dots
#   items[0].price, items.0.price an element of a list
#   metadata["Order ID"]          a key with dots, spaces or brackets, quoted
#   answers[type=email].email     the first element of a list whose `type` is "email"
#   answers[field.ref=nps].number the filter's key is itself a path


@dataclass(frozen=True)
class Key:
    name: str


@dataclass(frozen=True)
class Index:
    index: int


@dataclass(frozen=True)
class Where:
    path: tuple[Any, ...]
    value: str


Step = Union[Key, Index, Where]
_MISSING: Any = object()


@lru_cache(maxsize=4096)  # a mapping's paths, parsed once
def parse_path(text: str) -> tuple[Step, ...]:
    """The steps of a path; raises ValueError saying where it is malformed."""
    if not isinstance(text, str):
        raise ValueError(f"a path is text, not {text!r}; write the field's keys separated by dots, e.g. data.object.id")
    if not text.strip():
        raise ValueError("a path cannot be empty; write the field's keys separated by dots, e.g. data.object.id")
    steps: list[Step] = []
    i, n = 0, len(text)
    expect_key = True
    while i < n:
        c = text[i]
        if c == ".":
            if expect_key:
                raise ValueError(f"{text!r}: empty key at character {i + 1}")
            expect_key = True
            i += 1
        elif c == "[":
            close = _closing(text, i)
            steps.append(_bracket(text, text[i + 1 : close]))
            i, expect_key = close + 1, False
        elif c == "]":
            raise ValueError(f"{text!r}: ']' at character {i + 1} closes nothing")
        else:
            if not expect_key:
                raise ValueError(f"{text!r}: expected '.' or '[' at character {i + 1}")
            j = i
            while j < n and text[j] not in ".[]":
                j += 1
            name = text[i:j].strip()
            steps.append(Key(name))
            i, expect_key = j, False
    if expect_key:
        raise ValueError(f"{text!r} ends with '.'; remove it or add the key")
    return tuple(steps)


def _closing(text: str, start: int) -> int:
    quote = None
    for j in range(start + 1, len(text)):
        c = text[j]
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "]":
            return j
    raise ValueError(f"{text!r}: '[' at character {start + 1} is not closed")


def _bracket(text: str, inner: str) -> Step:
    inner = inner.strip()
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "\"'":
        return Key(inner[1:-1])
    if re.fullmatch(r"-?\d+", inner):
        return Index(int(inner))
    if "=" in inner:
        left, _, right = inner.partition("=")
        value = right.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        return Where(parse_path(left.strip()), value)
    raise ValueError(f"{text!r}: [{inner}] is neither an index ([0]), a quoted key ([\"a b\"]) nor a filter "
                     "([type=email])")


def resolve(data: Any, steps: tuple[Step, ...]) -> Any:
    """The value at `steps`, or _MISSING when any step does not exist."""
    current = data
    for step in steps:
        if isinstance(step, Key):
            if isinstance(current, dict) and step.name in current:
                current = current[step.name]
            elif isinstance(current, list) and re.fullmatch(r"-?\d+", step.name):
                current = _element(current, int(step.name))
            else:
                return _MISSING
        elif isinstance(step, Index):
            current = _element(current, step.index) if isinstance(current, list) else _MISSING
        else:
            if not isinstance(current, list):
                return _MISSING
            current = next((e for e in current if _text(resolve(e, step.path)) == step.value), _MISSING)
        if current is _MISSING:
            return _MISSING
    return current


def _element(items: list[Any], index: int) -> Any:
    return items[index] if -len(items) <= index < len(items) else _MISSING


def _text(value: Any) -> str | None:
    """A scalar as a lookup or comparison key: booleans as true/false, whole floats without .0."""
    if value is _MISSING or value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# The mapping document ---------------------------------------------------------------------------


class _Strict(BaseModel):
    """Unknown options are refused by name, with the options that exist and a likely intended one."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            names = set()
            for name, f in cls.model_fields.items():
                names.add(f.alias or name)
            unknown = [k for k in data if k not in names]
            if unknown:
                key = str(unknown[0])
                close = difflib.get_close_matches(key, sorted(names), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                options = ", ".join(sorted(names))
                raise ValueError(f"unknown option {key!r}{hint}; the options here are {options}")
        return data


def _as_paths(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _field_spec(value: Any) -> Any:
    """A field given as a path ("data.object.id"), a list of paths (first present wins), a constant
    (a number, a boolean) or an object with options."""
    if isinstance(value, str):
        return {"path": value}
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return {"path": value}
    if isinstance(value, (bool, int, float)) or value is None:
        return {"value": value}
    return value


def _name_spec(value: Any) -> Any:
    """An event or page name: a string is the name itself; an object takes it from the payload."""
    if isinstance(value, str):
        return {"value": value}
    return value


class Value(_Strict):
    """How one field of a call is taken from the payload: path(s) or a constant, then conversions."""

    path: Annotated[list[str] | None, BeforeValidator(_as_paths)] = Field(
        None, description="where the value is; with several paths, the first that is present and not null")
    value: Any = Field(None, description="a constant instead of a path")
    convert: Annotated[list[str], BeforeValidator(_as_paths)] = Field(
        default_factory=list, description="conversions applied in order: " + ", ".join(CONVERSIONS))
    currency: str | None = Field(None, description="with minor_units: the path of the ISO currency code")
    minus: Annotated[list[str] | None, BeforeValidator(_as_paths)] = Field(
        None, description="subtract the number at this path (before conversions), e.g. what was refunded before")
    lookup: dict[str, Any] | None = Field(None, description="replace the value by this table's entry for it")
    default: Any = Field(None, description="the value when the field is absent, null, or not in the lookup table")
    prefix: str | None = Field(None, description="text put before the value (e.g. stripe: for ids of the tool)")
    required: bool = Field(False, description="a payload without the field is refused (webhook_invalid)")

    @field_validator("path", "minus")
    @classmethod
    def _paths(cls, paths: list[str] | None) -> list[str] | None:
        if paths is not None:
            if not paths:
                raise ValueError("give at least one path")
            for p in paths:
                parse_path(p)
        return paths

    @field_validator("currency")
    @classmethod
    def _currency_path(cls, path: str | None) -> str | None:
        if path is not None:
            parse_path(path)
        return path

    @field_validator("convert")
    @classmethod
    def _conversions(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in CONVERSIONS:
                close = difflib.get_close_matches(str(name), CONVERSIONS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"unknown conversion {name!r}{hint}; use one of {', '.join(CONVERSIONS)}")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> "Value":
        given = self.model_fields_set
        if ("path" in given) == ("value" in given):
            raise ValueError("give one of path (where the value is in the payload) and value (a constant)")
        if "minor_units" in self.convert and self.currency is None:
            raise ValueError("minor_units needs currency: the path of the currency code (JPY has no minor unit, "
                             "BHD three), e.g. currency: data.object.currency")  # fmt: skip
        if self.currency is not None and "minor_units" not in self.convert:
            raise ValueError("currency is only used by the minor_units conversion; add convert: minor_units")
        return self

    @property
    def steps(self) -> list[tuple[Step, ...]]:
        return [parse_path(p) for p in self.path or ()]


FieldSpec = Annotated[Value, BeforeValidator(_field_spec)]
NameSpec = Annotated[Value, BeforeValidator(_name_spec)]


class Condition(_Strict):
    """A test on the payload; a call with `when` is made only when all its conditions hold."""

    path: str | None = None
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    not_in: list[Any] | None = None
    exists: bool | None = None
    any: list["Condition"] | None = Field(None, description="holds when one of these conditions holds")

    @field_validator("path")
    @classmethod
    def _path(cls, path: str | None) -> str | None:
        if path is not None:
            parse_path(path)
        return path

    @model_validator(mode="after")
    def _one_test(self) -> "Condition":
        tests = {"equals", "not_equals", "in_", "not_in", "exists", "any"} & self.model_fields_set
        if len(tests) != 1:
            raise ValueError("a condition is a path and one test (equals, not_equals, in, not_in or exists), "
                             "or any: [conditions]")  # fmt: skip
        if ("any" in tests) == (self.path is not None):
            raise ValueError("any: [...] stands alone, without path" if self.path is not None
                             else "say which field the test is about: path")  # fmt: skip
        if "any" in tests and not self.any:
            raise ValueError("any needs at least one condition")
        if tests & {"in_", "not_in", "exists"} and getattr(self, next(iter(tests))) is None:
            raise ValueError("exists is true or false; in and not_in are lists of values")
        return self

    def holds(self, payload: Any) -> bool:
        if self.any is not None:
            return any(c.holds(payload) for c in self.any)
        assert self.path is not None
        value = resolve(payload, parse_path(self.path))
        present = value is not _MISSING and value is not None
        if self.exists is not None:
            return present == self.exists
        if self.in_ is not None or self.not_in is not None:
            found = any(_same(value, v) for v in (self.in_ if self.in_ is not None else self.not_in) or ())
            return found if self.in_ is not None else not found
        if "equals" in self.model_fields_set:
            return _same(value, self.equals)
        return not _same(value, self.not_equals)


def _same(value: Any, expected: Any) -> bool:
    if value is _MISSING:
        return expected is None
    return bool(value == expected) or (_text(value) is not None and _text(value) == _text(expected))


def _conditions(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class Identity(_Strict):
    """Who every call of the mapping is about, unless a call says otherwise."""

    user_id: FieldSpec | None = None
    anonymous_id: FieldSpec | None = None
    email: FieldSpec | None = None
    phone: FieldSpec | None = None


class Call(_Strict):
    """One Segment call made from a payload."""

    type: Literal["track", "identify", "page", "screen", "group", "alias"] = "track"
    event: NameSpec | None = Field(None, description="track: the event name, fixed or taken from the payload")
    name: NameSpec | None = Field(None, description="page, screen: the name")
    when: Annotated[list[Condition], BeforeValidator(_conditions)] = Field(default_factory=list)
    user_id: FieldSpec | None = None
    anonymous_id: FieldSpec | None = None
    email: FieldSpec | None = None
    phone: FieldSpec | None = None
    group_id: FieldSpec | None = None
    previous_id: FieldSpec | None = None
    timestamp: FieldSpec | None = None
    properties: dict[str, FieldSpec] = Field(default_factory=dict)
    traits: dict[str, FieldSpec] = Field(default_factory=dict)
    context: dict[str, FieldSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fits_its_type(self) -> "Call":
        t = self.type
        if t == "track" and self.event is None:
            raise ValueError("a track call needs event: its name (e.g. Order Completed) or where to read it")
        if t != "track" and self.event is not None:
            raise ValueError(f"event is the name of a track call; a {t} call has none" +
                             (" (use name)" if t in ("page", "screen") else ""))  # fmt: skip
        if t not in ("page", "screen") and self.name is not None:
            raise ValueError(f"name is for page and screen calls, not {t}")
        if t in ("identify", "group", "alias") and self.properties:
            raise ValueError(f"a {t} call has no properties" + (" (use traits)" if t != "alias" else ""))
        if t == "group" and self.group_id is None:
            raise ValueError("a group call needs group_id")
        if t != "group" and self.group_id is not None:
            raise ValueError(f"group_id is for group calls, not {t}")
        if t == "alias" and self.previous_id is None:
            raise ValueError("an alias call needs previous_id (and user_id, the id it becomes)")
        if t != "alias" and self.previous_id is not None:
            raise ValueError(f"previous_id is for alias calls, not {t}")
        return self


def _calls(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class Mapping(_Strict):
    """A workspace's mapping for one webhook source (see docs/webhooks.md for every option)."""

    source: str | None = Field(None, description="the source it is for; must equal the URL's {source} when given")
    description: str = ""
    event_type: str | None = Field(None, description="path of the field naming the tool's event (e.g. type)")
    event_id: FieldSpec | None = Field(None, description="the tool's id of the event: redeliveries are stored once")
    timestamp: FieldSpec | None = Field(None, description="when it happened (default: when it was received)")
    identity: Identity = Field(default_factory=Identity)
    context: dict[str, FieldSpec] = Field(default_factory=dict)
    events: dict[str, Annotated[list[Call], BeforeValidator(_calls)]] = Field(
        description="the calls for each event type; '*' for any type not listed")

    @field_validator("source")
    @classmethod
    def _slug(cls, source: str | None) -> str | None:
        if source is not None and not SOURCE.match(source):
            raise ValueError(f"{source!r} is not a source name: 1-63 lower-case letters, digits, - or _")
        return source

    @field_validator("event_type")
    @classmethod
    def _path(cls, path: str | None) -> str | None:
        if path is not None:
            parse_path(path)
        return path

    @field_validator("events")
    @classmethod
    def _events(cls, events: dict[str, list[Call]]) -> dict[str, list[Call]]:
        if not events:
            raise ValueError("list at least one event type and its calls")
        if len(events) > MAX_EVENT_TYPES:
            raise ValueError(f"{len(events)} event types, above the limit of {MAX_EVENT_TYPES}")
        for name, calls in events.items():
            if not calls:
                raise ValueError(f"{name!r} has no calls; remove it (payloads of that type are then unmapped)")
            if len(calls) > MAX_CALLS:
                raise ValueError(f"{name!r} makes {len(calls)} calls, above the limit of {MAX_CALLS}")
        return events

    @model_validator(mode="after")
    def _typed(self) -> "Mapping":
        if self.event_type is None and set(self.events) != {ANY_TYPE}:
            raise ValueError("events are keyed by event type, so say where the type is (event_type: type), or "
                             "key the calls by '*' to map every payload the same way")  # fmt: skip
        return self


# Reading a document -----------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars (only true/false are booleans; yes, no, on, dates stay text) and no duplicate keys."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))  # fmt: skip


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)  # YAML merge keys (<<: *defaults)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be text, not a list or an object", key_node.start_mark) from None
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {seen[key] + 1}); each key may appear once", mark)
        seen[key] = key_node.start_mark.line
    return dict(loader.construct_pairs(node, deep=deep))


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    """Loaded YAML as JSON data: keys as text."""
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else _text(k) or "null"): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_document(raw: bytes, content_type: str = "") -> tuple[Any, str]:
    """A mapping document (JSON or YAML) as data, and its text; MappingError (`unreadable_mapping`) otherwise."""
    if len(raw) > MAX_TEXT:
        raise MappingError([("(body)", f"{len(raw)} bytes, above the {MAX_TEXT} byte limit of a mapping")],
                           "unreadable_mapping")  # fmt: skip
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MappingError([("(body)", f"not UTF-8 text: {exc.reason} at byte {exc.start}")], "unreadable_mapping")
    if "json" in content_type.lower():
        try:
            return orjson.loads(raw), text
        except orjson.JSONDecodeError as exc:
            raise MappingError([("(body)", f"not JSON: {exc}")], "unreadable_mapping") from None
    try:
        documents = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]  # noqa: S506 (safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        reason = f"{where}{problem}" + (f" ({context})" if context and context not in problem else "")
        raise MappingError([("(body)", f"neither JSON nor YAML: {reason}")], "unreadable_mapping") from None
    if len(documents) != 1:
        raise MappingError([("(body)", f"{len(documents)} documents; a mapping is one YAML or JSON document")],
                           "unreadable_mapping")  # fmt: skip
    return _plain(documents[0]), text


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith("function-"):  # pydantic's validator frames
            continue
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += ("." if out else "") + part
        else:
            out += f"[{orjson.dumps(str(part)).decode()}]"
    return out or "(mapping)"


def parse_mapping(data: Any, source: str | None = None) -> Mapping:
    """The mapping model of a document; MappingError lists every problem with its path in the document."""
    if not isinstance(data, dict):
        raise MappingError([("(mapping)", "a mapping is an object with event_type, event_id, events, ...; "
                            "see docs/webhooks.md")])  # fmt: skip
    try:
        mapping = Mapping.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            reason = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                reason = "required"
            errors.append((_location(loc), reason))
        raise MappingError(errors) from None
    if source is not None and mapping.source is not None and mapping.source != source:
        raise MappingError([("source", f"the mapping says {mapping.source!r} but the URL says {source!r}; "
                                       "make them agree or leave source out")])  # fmt: skip
    return mapping


def mapping_json(mapping: Mapping) -> dict[str, Any]:
    """The mapping as stored and shown: the options that were given, in their written form."""
    return mapping.model_dump(mode="json", by_alias=True, exclude_unset=True)


# Applying a mapping -----------------------------------------------------------------------------


@dataclass
class Mapped:
    """What one payload became."""

    event_type: str | None
    event_id: str
    calls: list[dict[str, Any]] = field(default_factory=list)


def _number(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} {value!r} is not a number")
    try:
        number = Decimal(str(value).strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{what} {value!r} is not a finite number")
    return number


def _out(number: Decimal) -> int | float:
    return int(number) if number == number.to_integral_value() else float(number)


def _exponent(currency: Any) -> int:
    code = str(currency).strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ValueError(f"{currency!r} is not an ISO 4217 currency code")
    return 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2


def _time(seconds: Decimal) -> str:
    try:
        moment = datetime.fromtimestamp(float(seconds), tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{seconds} seconds since 1970 is outside any date") from None
    return str(shown(moment))


def _convert(name: str, value: Any, payload: Any, spec: Value, where: str) -> Any:
    if name == "string":
        return _text(value) if not isinstance(value, (dict, list)) else orjson.dumps(value).decode()
    if name in ("upper", "lower", "trim"):
        if not isinstance(value, str):
            raise ValueError(f"{name} takes text, not {value!r}")
        return value.upper() if name == "upper" else value.lower() if name == "lower" else value.strip()
    if name == "number":
        return _out(_number(value, "the value"))
    if name == "integer":
        number = _number(value, "the value")
        if number != number.to_integral_value():
            raise ValueError(f"{value!r} is not a whole number")
        return int(number)
    if name == "boolean":
        if isinstance(value, bool):
            return value
        text = _text(value)
        if text is not None and text.strip().lower() in ("true", "1", "yes"):
            return True
        if text is not None and text.strip().lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{value!r} is not a boolean (true/false, 1/0, yes/no)")
    if name == "cents":
        return _out(_number(value, "the amount") / 100)
    if name == "minor_units":
        assert spec.currency is not None
        currency = resolve(payload, parse_path(spec.currency))
        if currency is _MISSING or currency is None:
            raise PayloadError(spec.currency, f"missing, and minor_units needs the currency (for {where})")
        return _out(_number(value, "the amount") / (10 ** _exponent(currency)))
    if name in ("unix", "unix_ms"):
        seconds = _number(value, "the time")
        return _time(seconds / 1000 if name == "unix_ms" else seconds)
    if name == "iso":
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not an ISO 8601 time (for numbers use unix or unix_ms)")
        try:
            return str(shown(parse_instant(value)))
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z") from None
    raise AssertionError(name)  # validated in the model


def evaluate(spec: Value, payload: Any, where: str) -> Any:
    """The value of a field for this payload, or _MISSING; PayloadError when it is required or does not convert."""
    if "value" in spec.model_fields_set:
        value = spec.value
        source = "the constant"
    else:
        value, source = _MISSING, " or ".join(spec.path or ())
        for steps, text in zip(spec.steps, spec.path or ()):
            found = resolve(payload, steps)
            if found is not _MISSING and found is not None:
                value, source = found, text
                break
    if value is _MISSING or value is None:
        if "default" in spec.model_fields_set:
            return spec.default
        if spec.required:
            raise PayloadError(source, f"missing, and {where} requires it")
        return _MISSING
    try:
        if spec.minus is not None:
            for text in spec.minus:
                less = resolve(payload, parse_path(text))
                if less is not _MISSING and less is not None:
                    value = _out(_number(value, source) - _number(less, text))
                    break
        for name in spec.convert:
            value = _convert(name, value, payload, spec, where)
    except ValueError as exc:
        raise PayloadError(source, f"{exc} (for {where})") from None
    if spec.lookup is not None:
        key = _text(value)
        if key is not None and key in spec.lookup:
            value = spec.lookup[key]
        elif "default" in spec.model_fields_set:
            return spec.default
        elif spec.required:
            raise PayloadError(source, f"{value!r} is not in the lookup table of {where}")
        else:
            return _MISSING
    if spec.prefix is not None and value is not _MISSING and value is not None:
        value = spec.prefix + (_text(value) or "")
    return value


def _put(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested objects."""
    *parents, last = dotted.split(".")
    for part in parents:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[last] = value


def _fill(target: dict[str, Any], specs: dict[str, Value], payload: Any, where: str) -> None:
    for name, spec in specs.items():
        value = evaluate(spec, payload, f"{where}.{name}")
        if value is not _MISSING:
            _put(target, name, value)


def body_digest(payload: Any) -> str:
    """A stable id for a payload that carries none: the same JSON, the same id."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def message_id(source: str, event_id: str, key: str) -> str:
    """The stored messageId of one call: source, the tool's event id, and which call of the event it is."""
    text = f"{source}:{event_id}:{key}"
    return text if len(text) <= MAX_MESSAGE_ID else f"{source}:sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def apply(mapping: Mapping, payload: Any, source: str) -> Mapped:
    """The Segment calls (not yet validated) that `payload` becomes.

    Raises Unmapped when the mapping makes no call of it, PayloadError when a field
    it requires is missing or a value does not convert. Every call carries a
    messageId made of the source, the tool's event id (`event_id`; a digest of the
    payload when it has none) and the call's event name (track) or type, so a
    redelivered payload yields the same messageIds and is stored once.
    """
    try:
        return _apply(mapping, payload, source)
    except PayloadError as exc:
        if exc.event_type is None and isinstance(payload, dict) and mapping.event_type is not None:
            exc.event_type = _text(resolve(payload, parse_path(mapping.event_type)))
        raise


def _apply(mapping: Mapping, payload: Any, source: str) -> Mapped:
    if not isinstance(payload, dict):
        raise PayloadError("(body)", "a webhook payload is a JSON object")
    event_type = None
    if mapping.event_type is not None:
        found = resolve(payload, parse_path(mapping.event_type))
        event_type = _text(found)
        if event_type is None:
            raise Unmapped(f"the payload has no event type at {mapping.event_type}; the mapping needs it to pick calls")
    rules = mapping.events.get(event_type) if event_type is not None else None
    if rules is None:
        rules = mapping.events.get(ANY_TYPE)
    if rules is None:
        listed = ", ".join(sorted(mapping.events)[:20])
        raise Unmapped(f"event type {event_type!r} is not in the {source} mapping (it maps {listed}); add it to the "
                       "mapping to store such events", event_type)  # fmt: skip
    key = event_type if event_type in mapping.events else ANY_TYPE
    if mapping.event_id is not None:
        found = evaluate(mapping.event_id, payload, "event_id")
        event_id = _text(found) if found is not _MISSING else None
    else:
        event_id = None
    out = Mapped(event_type, event_id or f"sha256:{body_digest(payload)}")
    defaults: dict[str, Any] = {}
    for name in ("user_id", "anonymous_id", "email", "phone"):
        spec = getattr(mapping.identity, name)
        if spec is not None:
            defaults[name] = evaluate(spec, payload, f"identity.{name}")
    base_time = evaluate(mapping.timestamp, payload, "timestamp") if mapping.timestamp is not None else _MISSING
    seen: dict[str, int] = {}
    for index, call in enumerate(rules):
        where = f"events[{orjson.dumps(key).decode()}][{index}]"
        if not all(c.holds(payload) for c in call.when):
            continue
        made = _make(call, payload, source, where, defaults, base_time, mapping)
        if made is None:
            continue
        name = made.get("event") if made["type"] == "track" else made["type"]
        seen[name] = seen.get(name, 0) + 1
        suffix = name if seen[name] == 1 else f"{name}#{seen[name]}"
        made["messageId"] = message_id(source, out.event_id, suffix)
        made["context"].setdefault("webhook", {"source": source, "event_id": out.event_id, "event_type": event_type})
        out.calls.append(made)
    if not out.calls:
        raise Unmapped(f"no call of {key!r} applies to this payload (their conditions do not hold, or the event name "
                       "is not in the lookup table)", event_type)  # fmt: skip
    return out


def _make(
    call: Call, payload: Any, source: str, where: str, defaults: dict[str, Any], base_time: Any, mapping: Mapping
) -> dict[str, Any] | None:
    made: dict[str, Any] = {"type": call.type}
    if call.type == "track":
        assert call.event is not None
        name = evaluate(call.event, payload, f"{where}.event")
        if name is _MISSING or name is None:
            return None  # an event name the lookup table does not know: this call is not made
        made["event"] = _text(name) if not isinstance(name, str) else name
    if call.name is not None:
        name = evaluate(call.name, payload, f"{where}.name")
        if name is not _MISSING and name is not None:
            made["name"] = _text(name) if not isinstance(name, str) else name

    def pick(attribute: str) -> Any:
        spec = getattr(call, attribute)
        if spec is None:
            return defaults.get(attribute, _MISSING)
        return evaluate(spec, payload, f"{where}.{attribute}")

    for attribute, key in (("user_id", "userId"), ("anonymous_id", "anonymousId"), ("group_id", "groupId"),
                           ("previous_id", "previousId")):  # fmt: skip
        value = pick(attribute)
        if value is not _MISSING and value is not None:
            made[key] = _text(value) if not isinstance(value, str) else value
    when = evaluate(call.timestamp, payload, f"{where}.timestamp") if call.timestamp is not None else base_time
    if when is not _MISSING and when is not None:
        if not isinstance(when, str):
            field_name = f"{where}.timestamp" if call.timestamp is not None else "timestamp"
            raise PayloadError(field_name, f"{when!r} is not an ISO time; add convert: unix (seconds), unix_ms or iso")
        made["timestamp"] = when
    context: dict[str, Any] = {"source": source}
    _fill(context, mapping.context, payload, "context")
    _fill(context, call.context, payload, f"{where}.context")
    person: dict[str, Any] = {}  # the person's traits: email and phone identify them (domain/identity.py)
    for attribute in ("email", "phone"):
        value = pick(attribute)
        if value is not _MISSING and value is not None:
            person[attribute] = value
    traits: dict[str, Any] = {}
    _fill(traits, call.traits, payload, f"{where}.traits")
    if call.type == "identify":
        made["traits"] = {**person, **traits}
    elif call.type == "group":  # a group's traits describe the company; the person's go in the context
        made["traits"] = traits
        traits = {}
    if call.type != "identify" and (person or traits):
        context["traits"] = {**(context.get("traits") or {}), **person, **traits}
    if call.type in ("track", "page", "screen"):
        properties: dict[str, Any] = {}
        _fill(properties, call.properties, payload, f"{where}.properties")
        made["properties"] = properties
    made["context"] = context
    return made


# The aggregate: mappings live in the log, versioned ---------------------------------------------


def mapping_id_for(workspace_id: str, source: str) -> UUID:
    return uuid5(NAMESPACE, f"{workspace_id}/webhook-mapping/{source}")


class WebhookMapping(Aggregate):
    """A workspace's mapping for one webhook source; every change is a new version. `text` is the document
    as written (YAML comments included), `mapping` its validated form."""

    @staticmethod
    def create_id(workspace_id: str, source: str, mapping: dict[str, Any], text: str) -> UUID:
        return mapping_id_for(workspace_id, source)

    @event("Defined")
    def __init__(self, workspace_id: str, source: str, mapping: dict[str, Any], text: str) -> None:
        self.workspace_id = workspace_id
        self.source = source
        self.mapping = mapping
        self.text = text
        self.mapping_version = 1
        self.deleted = False

    @event("Changed")
    def change(self, workspace_id: str, source: str, mapping_version: int, mapping: dict[str, Any], text: str) -> None:
        self.mapping, self.text = mapping, text
        self.mapping_version = mapping_version
        self.deleted = False

    @event("Deleted")
    def delete(self, workspace_id: str, source: str, mapping_version: int) -> None:
        self.mapping_version = mapping_version
        self.deleted = True


WEBHOOK_TOPICS = [get_topic(c) for c in (WebhookMapping.Defined, WebhookMapping.Changed, WebhookMapping.Deleted)]


class NoMapping(LookupError):
    """No mapping for this source in the workspace."""


class WebhookMappings:
    """Every workspace's webhook mappings, as the log says they are now, with their parsed models."""

    def __init__(self) -> None:
        self.by_id: dict[str, WebhookMapping] = {}
        self._parsed: dict[tuple[str, int], Mapping] = {}

    def apply(self, domain_event: Any) -> None:
        originator = str(domain_event.originator_id)
        if isinstance(domain_event, WebhookMapping.Defined):
            self.by_id[originator] = domain_event.mutate(None)
        else:
            domain_event.mutate(self.by_id[originator])

    def get(self, workspace_id: str, source: str) -> WebhookMapping | None:
        """The live (not deleted) mapping of the source, or None."""
        found = self.by_id.get(str(mapping_id_for(workspace_id, source)))
        return found if found is not None and not found.deleted else None

    def live(self, workspace_id: str) -> dict[str, WebhookMapping]:
        return {m.source: m for m in self.by_id.values() if m.workspace_id == workspace_id and not m.deleted}

    def model(self, workspace_id: str, source: str) -> Mapping | None:
        """The parsed mapping of the source (parsed once per version), or None."""
        stored = self.get(workspace_id, source)
        if stored is None:
            return None
        key = (str(stored.id), stored.mapping_version)
        if key not in self._parsed:
            self._parsed[key] = Mapping.model_validate(stored.mapping)
        return self._parsed[key]


# Commands (run on the writer thread, through the group committer) -------------------------------


def save_mapping(app: Any, workspace_id: str, source: str, mapping: Mapping, text: str) -> tuple[WebhookMapping, bool]:
    """Store the source's mapping (a new version when it exists and differs); returns it and whether it changed."""
    registry: WebhookMappings = app.webhook_mappings
    document = mapping_json(mapping)
    existing = registry.by_id.get(str(mapping_id_for(workspace_id, source)))
    if existing is not None and not existing.deleted and existing.mapping == document and existing.text == text:
        return existing, False
    if existing is None:
        aggregate = WebhookMapping(workspace_id, source, document, text)
    else:
        existing.change(workspace_id, source, existing.mapping_version + 1, document, text)
        aggregate = existing
    try:
        app.save(aggregate)
    except BaseException:
        app.load()  # the aggregate was changed in memory; the log is what counts
        raise
    registry.by_id[str(aggregate.id)] = aggregate
    return aggregate, True


def delete_mapping(app: Any, workspace_id: str, source: str) -> int:
    """Delete the source's mapping; returns the version of the deletion. Raises NoMapping."""
    registry: WebhookMappings = app.webhook_mappings
    existing = registry.get(workspace_id, source)
    if existing is None:
        raise NoMapping(f"no mapping for webhook source {source!r} in this workspace")
    existing.delete(workspace_id, source, existing.mapping_version + 1)
    try:
        app.save(existing)
    except BaseException:
        app.load()
        raise
    return existing.mapping_version
