"""Tags and segments: the rule language, and the versioned definitions that live in the log.

A rule is a tree of conditions, written as JSON or YAML:

- trait conditions `{"trait": "plan", "op": "=", "value": "pro"}` (dotted paths reach into objects),
- computed-trait conditions `{"computed": "orders_count", "op": ">=", "value": 3}`,
- event conditions `{"event": "Order Completed", "measure": "sum(revenue)", "op": ">", "value": 1000,
  "within": "90d"}`, with property filters in `where` and a window (`within` a duration, or `between` two times),
- recency `{"last_seen": {"older_than": "30d"}}` (or `{"within": "7d"}`),
- `{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}`, and membership of another tag `{"tag": "vip"}`,
- consent for a purpose `{"consent": "marketing"}` (domain/consent.py: the profile's latest decision, else the
  workspace's default).

A definition may declare the `purpose` it serves: it is stored as its rule's first condition,
`{"and": [{"consent": purpose}, rule]}`, so whoever reads the rule (the engine, segment queries,
consumers of `cdp.events`) reads what membership means, and it reads back as `purpose` and `rule`.

Models forbid unknown keys, so a typo is a 400 that names its path, never a rule
that silently matches everyone. No drivers here: projections/ compiles rules to SQL.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Iterator, Literal, Union
from uuid import UUID, uuid5

import orjson
import yaml
from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from domain import errors
from domain.crm import ORDER_COMPLETED, PURPOSE, PURPOSE_HELP
from domain.errors import Conflict, Invalid
from domain.limits import EARLIEST_CLOCK, LATEST_CLOCK
from domain.model import NAMESPACE
from domain.predictions import LTV_KEYS, SCORE_MODELS as SCORES
from domain.times import parse_instant, shown

Op = Literal["=", "!=", "<", "<=", ">", ">=", "in", "contains", "exists", "between"]
Comparison = Literal["=", "!=", "<", "<=", ">", ">="]
Scalar = Union[bool, int, float, str]
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DURATION = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MEASURE = re.compile(r"^(count|exists|min|max|sum)(?:\(([^()]+)\))?$")
# Computed traits a rule can read; rfm and lifecycle_stage depend on other customers and on the time of
# reading, and are left out. The prediction scores are read as the log's last model run gave them
# (domain/predictions.py): `predicted_ltv` is its value per currency, `predicted_ltv.EUR` one currency's,
# `predicted_ltv.expected_purchases` and `predicted_ltv.probability_alive` the model's other figures.
COMPUTED_NUMBERS = ("event_count", "orders_count", "open_tickets", "average_csat", "revenue", "average_order_value",
                    *SCORES)  # fmt: skip
COMPUTED_TIMES = ("first_seen", "last_seen", "last_order_at")
COMPUTED_MAPS = ("counts", "track_counts", "revenue", "average_order_value", "predicted_ltv")
MAX_DEPTH = 16
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# The times a rule or a query may name: the range of the ClickHouse DateTime64 columns they are compared with.
# Times that can be queried: ClickHouse DateTime64's range, the same one ingest holds client clocks to.
EARLIEST_TIME, LATEST_TIME = EARLIEST_CLOCK, LATEST_CLOCK
TIME_WINDOW = "1900-01-01T00:00:00Z to 2299-12-31T23:59:59.999Z"
MAX_DURATION_DAYS = timedelta.max.days


class RuleError(Invalid):
    """A rule or definition that cannot be accepted; `errors` holds (path, reason) pairs."""

    code = "invalid_rule"

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{p}: {r}" for p, r in errors))
        self.errors = errors  # type: ignore[assignment]  # (path, reason) pairs, as the services expect


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration; write a positive number and a unit s, m, h, d or w, e.g. 90d")
    try:
        return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    except OverflowError:  # above timedelta's 999,999,999 days
        raise ValueError(f"{text!r} is longer than any window; write at most {MAX_DURATION_DAYS}d") from None


def _check_value(op: str, value: Any) -> Any:
    """The value an operator needs: none for exists, a list for in, two bounds for between, a scalar otherwise."""
    if op == "exists":
        if value is not None:
            raise ValueError("'exists' takes no value; remove 'value'")
        return value
    if op == "in":
        if not isinstance(value, list) or not value or not all(isinstance(v, (bool, int, float, str)) for v in value):
            raise ValueError("'in' needs 'value' to be a non-empty list of strings, numbers or booleans")
        return value
    if op == "between":
        if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, (int, float, str)) for v in value):
            raise ValueError("'between' needs 'value' to be a list of two bounds, e.g. [10, 20]")
        if {type(v) is str for v in value} == {True, False}:
            raise ValueError("'between' bounds must both be numbers or both be strings (ISO times)")
        if value[0] > value[1]:
            raise ValueError(f"'between' bounds must be in order: {value[0]!r} is above {value[1]!r}")
        return value
    if value is None or isinstance(value, (list, dict)):
        raise ValueError(f"{op!r} needs 'value' to be a string, number or boolean")
    if op in ("<", "<=", ">", ">=") and isinstance(value, bool):
        raise ValueError(f"{op!r} compares numbers or strings, not booleans")
    return value


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TraitCondition(_Node):
    trait: str = Field(min_length=1, description="trait name; a dotted path reaches into objects (address.city)")
    op: Op
    value: Any = None

    @model_validator(mode="after")
    def _value(self) -> "TraitCondition":
        _check_value(self.op, self.value)
        return self


class ComputedCondition(_Node):
    computed: str = Field(description="event_count, orders_count, revenue, revenue.EUR, counts.page, last_seen, ...")
    op: Op
    value: Any = None

    @field_validator("computed")
    @classmethod
    def _known(cls, name: str) -> str:
        base, _, key = name.partition(".")
        if base == "predicted_ltv" and key and key not in LTV_KEYS and not _CURRENCY.match(key):
            raise ValueError(f"predicted_ltv.{key}: use predicted_ltv.<currency> (predicted_ltv.EUR), "
                             f"{', '.join('predicted_ltv.' + k for k in LTV_KEYS)}, or predicted_ltv (any currency)")
        if key and base in COMPUTED_MAPS:
            return name
        if not key and base in COMPUTED_NUMBERS + COMPUTED_TIMES:
            return name
        known = ", ".join(COMPUTED_NUMBERS + COMPUTED_TIMES) + ", " + ", ".join(f"{m}.<key>" for m in COMPUTED_MAPS)
        raise ValueError(f"unknown computed trait {name!r}; use one of {known}")

    @model_validator(mode="after")
    def _value(self) -> "ComputedCondition":
        _check_value(self.op, self.value)
        if self.op == "contains":
            raise ValueError("'contains' applies to traits and properties, not to computed traits")
        if self.computed.partition(".")[0] in COMPUTED_TIMES and self.op not in ("exists",):
            bounds = self.value if isinstance(self.value, list) else [self.value]
            for bound in bounds:
                read_time(bound)
        return self


def read_time(value: Any) -> datetime:
    """An ISO 8601 time as an aware UTC datetime, as written (ValueError if it is not one)."""
    try:
        return parse_instant(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a time; write ISO 8601, e.g. 2026-01-31T00:00:00Z") from None
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00: no UTC time
        raise ValueError(f"{value!r} is outside the times that can be queried: {TIME_WINDOW}") from None


def time_window_error(value: datetime) -> str | None:
    """Why a time cannot be queried (None when it can): outside EARLIEST_TIME to LATEST_TIME."""
    if EARLIEST_TIME <= value <= LATEST_TIME:
        return None
    return f"{shown(value)} is outside the times that can be queried: {TIME_WINDOW}"


def parse_time(value: Any) -> datetime:
    """A rule's time as compared with: `read_time`, held to EARLIEST_TIME..LATEST_TIME.

    New rules outside that window are refused by the API (`time_errors`); one
    recorded before it was checked still compiles, to the same answer, as no event
    time lies outside it.
    """
    return min(max(read_time(value), EARLIEST_TIME), LATEST_TIME)


class PropertyFilter(_Node):
    property: str = Field(min_length=1, description="event property; a dotted path reaches into objects")
    op: Op
    value: Any = None

    @model_validator(mode="after")
    def _value(self) -> "PropertyFilter":
        _check_value(self.op, self.value)
        return self


class EventCondition(_Node):
    """An aggregate of the events of one type (a track event name or a call type) that match `where`."""

    event: str = Field(min_length=1, description="track event name, or a call type such as page")
    where: list[PropertyFilter] = Field(default_factory=list)
    measure: str = Field("count", description="count | exists | sum(property) | min(property) | max(property)")
    op: Comparison = ">="
    value: float | None = None
    within: str | None = Field(None, description="a duration before now, e.g. 90d")
    between: list[str] | None = Field(None, description="[from, to): two ISO 8601 times")
    currency: str | None = Field(
        None, pattern=r"^[A-Z]{3}$", description="with sum(revenue) of Order Completed: the currency to measure"
    )

    @field_validator("measure")
    @classmethod
    def _measure(cls, text: str) -> str:
        match = _MEASURE.match(text.replace(" ", ""))
        if match is None:
            raise ValueError(f"{text!r} is not a measure; use count, exists, sum(property), min(property), max(property)")
        kind, prop = match.groups()
        if kind in ("count", "exists") and prop:
            raise ValueError(f"{kind} takes no property; write {kind!r}")
        if kind in ("sum", "min", "max") and not prop:
            raise ValueError(f"{kind} needs the property to read, e.g. {kind}(revenue)")
        return text.replace(" ", "")

    @field_validator("within")
    @classmethod
    def _within(cls, text: str | None) -> str | None:
        if text is not None:
            parse_duration(text)
        return text

    @field_validator("between")
    @classmethod
    def _between(cls, bounds: list[str] | None) -> list[str] | None:
        if bounds is None:
            return None
        if len(bounds) != 2:
            raise ValueError("'between' needs two ISO 8601 times: [from, to)")
        start, end = (read_time(b) for b in bounds)
        if start >= end:
            raise ValueError(f"'between' must go forwards: {bounds[0]} is not before {bounds[1]}")
        return bounds

    @model_validator(mode="after")
    def _shape(self) -> "EventCondition":
        if self.within is not None and self.between is not None:
            raise ValueError("give either 'within' (a duration before now) or 'between' (two times), not both")
        kind = self.kind
        if kind == "exists" and self.value is not None:
            raise ValueError("'exists' takes no value; remove 'value' (use count with op and value to compare)")
        if self.currency is not None and not self.money:
            raise ValueError(f"'currency' applies to sum(revenue) of {ORDER_COMPLETED}; remove it here")
        return self

    @property
    def money(self) -> bool:
        """sum(revenue) of Order Completed is net revenue as domain/crm.py defines it: orders minus refunds,
        per currency (the one given, or holding when it holds in some currency), as the KPI counts it."""
        return self.event == ORDER_COMPLETED and self.measure == "sum(revenue)"

    @property
    def kind(self) -> str:
        return _MEASURE.match(self.measure).group(1)  # type: ignore[union-attr]

    @property
    def prop(self) -> str | None:
        return _MEASURE.match(self.measure).group(2)  # type: ignore[union-attr]

    @property
    def threshold(self) -> float:
        """The value compared with; a bare count means 'at least once'."""
        return 1.0 if self.value is None and self.kind == "count" else float(self.value or 0)

    @property
    def window(self) -> timedelta | None:
        return parse_duration(self.within) if self.within else None


class Recency(_Node):
    older_than: str | None = Field(None, description="last seen longer ago than this duration")
    within: str | None = Field(None, description="last seen within this duration")

    @field_validator("older_than", "within")
    @classmethod
    def _duration(cls, text: str | None) -> str | None:
        if text is not None:
            parse_duration(text)
        return text

    @model_validator(mode="after")
    def _one(self) -> "Recency":
        if (self.older_than is None) == (self.within is None):
            raise ValueError("give exactly one of 'older_than' or 'within', e.g. {older_than: 30d}")
        return self


class LastSeenCondition(_Node):
    last_seen: Recency


class TagCondition(_Node):
    tag: str = Field(description="id of another tag (dynamic or manual) the profile must have")


def _purpose(value: str) -> str:
    if not PURPOSE.match(value):
        raise ValueError(f"{value!r} is not a purpose; {PURPOSE_HELP}")
    return value


class ConsentCondition(_Node):
    """The profile has consent for a purpose: its latest Consent Changed for it, else the workspace's default."""

    consent: str = Field(description="a purpose, e.g. marketing, analytics, personalisation")

    @field_validator("consent")
    @classmethod
    def _known(cls, value: str) -> str:
        return _purpose(value)


class AndNode(_Node):
    and_: list["Rule"] = Field(alias="and", min_length=1)


class OrNode(_Node):
    or_: list["Rule"] = Field(alias="or", min_length=1)


class NotNode(_Node):
    not_: "Rule" = Field(alias="not")


_KINDS = ("and", "or", "not", "event", "trait", "computed", "last_seen", "tag", "consent")


def _kind(node: Any) -> str | None:
    if isinstance(node, dict):
        found = [k for k in _KINDS if k in node]
        return f"~{found[0]}" if len(found) == 1 else None
    for cls, kind in _CLASS_KINDS.items():
        if isinstance(node, cls):
            return f"~{kind}"
    return None


Rule = Annotated[
    Union[
        Annotated[AndNode, Tag("~and")],
        Annotated[OrNode, Tag("~or")],
        Annotated[NotNode, Tag("~not")],
        Annotated[EventCondition, Tag("~event")],
        Annotated[TraitCondition, Tag("~trait")],
        Annotated[ComputedCondition, Tag("~computed")],
        Annotated[LastSeenCondition, Tag("~last_seen")],
        Annotated[TagCondition, Tag("~tag")],
        Annotated[ConsentCondition, Tag("~consent")],
    ],
    Discriminator(
        _kind,
        custom_error_type="rule_kind",
        custom_error_message="a rule node is an object with exactly one of the keys " + ", ".join(_KINDS),
    ),
]
_CLASS_KINDS = {
    AndNode: "and", OrNode: "or", NotNode: "not", EventCondition: "event", TraitCondition: "trait",
    ComputedCondition: "computed", LastSeenCondition: "last_seen", TagCondition: "tag", ConsentCondition: "consent",
}  # fmt: skip
AndNode.model_rebuild()
OrNode.model_rebuild()
NotNode.model_rebuild()


class Definition(BaseModel):
    """A tag or saved segment as sent to the API: an id, a name, the purpose it serves (if any) and a rule."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="lower-case slug, e.g. vip (letters, digits, - and _)")
    name: str = Field("", max_length=200)
    description: str = Field("", max_length=2000)
    purpose: str | None = Field(
        None, description="the purpose the members are used for (e.g. marketing): only profiles with consent for it "
        "are members; none needs no consent",
    )  # fmt: skip
    rule: Rule

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError(f"{value!r} is not an id; use 1-63 lower-case letters, digits, - or _, e.g. vip")
        return value

    @field_validator("purpose")
    @classmethod
    def _known_purpose(cls, value: str | None) -> str | None:
        return value if value is None else _purpose(value)

    def stored_rule(self) -> dict[str, Any]:
        """The rule as recorded: with a purpose, consent for it is the rule's first condition."""
        return with_purpose(self.purpose, rule_json(self.rule))


def with_purpose(purpose: str | None, rule: dict[str, Any]) -> dict[str, Any]:
    return rule if purpose is None else {"and": [{"consent": purpose}, rule]}


def split_purpose(rule: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(purpose, rule) of a recorded rule: the inverse of `with_purpose` (a rule written in that shape by hand
    reads back as a purpose too: it means the same)."""
    children = rule.get("and") if isinstance(rule, dict) and len(rule) == 1 else None
    if isinstance(children, list) and len(children) == 2 and isinstance(children[0], dict):
        first = children[0]
        if set(first) == {"consent"} and isinstance(first["consent"], str):
            return first["consent"], children[1]
    return None, rule


def purpose_of(rule: Any) -> str | None:
    """The purpose of a parsed recorded rule (see `split_purpose`), or None."""
    if isinstance(rule, AndNode) and len(rule.and_) == 2 and isinstance(rule.and_[0], ConsentCondition):
        return rule.and_[0].consent
    return None


def error_path(loc: tuple[Any, ...]) -> str:
    """`('rule', 'and', 1, '~event', 'within')` → `rule.and[1].within`: the union tags are left out."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and part.startswith("~"):
            continue
        elif part in ("and_", "or_", "not_"):
            path += ("." if path else "") + part[:-1]
        else:
            path += ("." if path else "") + str(part)
    return path or "(body)"


def validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    errors = []
    for e in exc.errors(include_url=False):
        reason = e["msg"].removeprefix("Value error, ")
        errors.append((error_path(tuple(e["loc"])), reason))
    return errors


def load_document(raw: bytes, content_type: str = "") -> Any:
    """JSON or YAML text as Python data (YAML is a superset of JSON, so either is accepted)."""
    try:
        if "yaml" not in content_type:
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise RuleError([("(body)", f"neither JSON nor YAML: {exc}")]) from None


def parse_definition(data: Any, default_id: str | None = None) -> Definition:
    if isinstance(data, dict) and default_id is not None:
        if "id" in data and data["id"] != default_id:
            raise RuleError([("id", f"the body says {data['id']!r} but the path says {default_id!r}; make them agree")])
        data = {**data, "id": default_id}
    try:
        return Definition.model_validate(data)
    except ValidationError as exc:
        raise RuleError(validation_errors(exc)) from None


def parse_rule(data: Any, path: str = "rule") -> Any:
    """A rule on its own (segment queries); errors are prefixed with `path`."""
    try:
        return Definition.model_validate({"id": "q", "rule": data}).rule
    except ValidationError as exc:
        raise RuleError([(p.replace("rule", path, 1), r) for p, r in validation_errors(exc)]) from None


def rule_json(rule: Any) -> dict[str, Any]:
    return rule.model_dump(mode="json", by_alias=True, exclude_none=True)


def walk(rule: Any) -> list[Any]:
    """Every node of a rule, depth first."""
    out = [rule]
    if isinstance(rule, (AndNode, OrNode)):
        for child in rule.and_ if isinstance(rule, AndNode) else rule.or_:
            out += walk(child)
    elif isinstance(rule, NotNode):
        out += walk(rule.not_)
    return out


def depth(rule: Any) -> int:
    if isinstance(rule, (AndNode, OrNode)):
        return 1 + max(depth(c) for c in (rule.and_ if isinstance(rule, AndNode) else rule.or_))
    if isinstance(rule, NotNode):
        return 1 + depth(rule.not_)
    return 1


def _nodes(rule: Any, path: str = "rule") -> Iterator[tuple[str, Any]]:
    """Every node of a rule with its path (`rule.and[1].not`), parents before children."""
    stack = [(path, rule)]
    while stack:
        path, node = stack.pop()
        yield path, node
        if isinstance(node, (AndNode, OrNode)):
            key = "and" if isinstance(node, AndNode) else "or"
            children = node.and_ if isinstance(node, AndNode) else node.or_
            stack.extend((f"{path}.{key}[{i}]", child) for i, child in reversed(list(enumerate(children))))
        elif isinstance(node, NotNode):
            stack.append((f"{path}.not", node.not_))


def consent_purposes(rule: Any) -> set[str]:
    """The purposes whose consent a rule reads (its own conditions, not those of tags it refers to)."""
    return {node.consent for _, node in _nodes(rule) if isinstance(node, ConsentCondition)}


def scores_read(rule: Any) -> set[str]:
    """The prediction models whose scores a rule reads (its own conditions, not those of tags it refers to)."""
    return {node.computed.partition(".")[0] for _, node in _nodes(rule)
            if isinstance(node, ComputedCondition) and node.computed.partition(".")[0] in SCORES}  # fmt: skip


def tag_refs(rule: Any) -> list[tuple[str, str]]:
    """(path, tag id) of every tag condition in a rule."""
    return [(path, node.tag) for path, node in _nodes(rule) if isinstance(node, TagCondition)]


def time_errors(rule: Any) -> list[tuple[str, str]]:
    """(path, reason) of every time in a rule outside the window that can be queried (for new rules)."""
    errors: list[tuple[str, str]] = []

    def check(value: Any, path: str) -> None:
        try:
            reason = time_window_error(read_time(value))
        except ValueError as exc:
            reason = str(exc)
        if reason is not None:
            errors.append((path, reason))

    for path, node in _nodes(rule):
        if isinstance(node, EventCondition) and node.between:
            for i, bound in enumerate(node.between):
                check(bound, f"{path}.between[{i}]")
        elif isinstance(node, ComputedCondition) and node.computed in COMPUTED_TIMES and node.op != "exists":
            if isinstance(node.value, list):
                for i, bound in enumerate(node.value):
                    check(bound, f"{path}.value[{i}]")
            else:
                check(node.value, f"{path}.value")
    return errors


# Aggregates ---------------------------------------------------------------------------------


def tag_id_for(workspace_id: str, kind: str, slug: str) -> UUID:
    return uuid5(NAMESPACE, f"{workspace_id}/{kind}/{slug}")


class RuleDefinition(Aggregate):
    """A tag or a saved segment of a workspace: every change of its rule is a new version."""

    @staticmethod
    def create_id(workspace_id: str, kind: str, slug: str, name: str, description: str, rule: dict[str, Any]) -> UUID:
        return tag_id_for(workspace_id, kind, slug)

    @event("Defined")
    def __init__(
        self, workspace_id: str, kind: str, slug: str, name: str, description: str, rule: dict[str, Any]
    ) -> None:
        self.workspace_id = workspace_id
        self.kind = kind  # "tag" | "segment"
        self.slug = slug
        self.name = name
        self.description = description
        self.rule = rule
        self.rule_version = 1
        self.deleted = False

    # Every event repeats workspace, kind and slug, so each log entry is self-describing for consumers.
    @event("Changed")
    def change(
        self, workspace_id: str, kind: str, slug: str, rule_version: int, name: str, description: str,
        rule: dict[str, Any],
    ) -> None:  # fmt: skip
        self.name, self.description, self.rule = name, description, rule
        self.rule_version = rule_version
        self.deleted = False

    @event("Deleted")
    def delete(self, workspace_id: str, kind: str, slug: str, rule_version: int) -> None:
        self.rule_version = rule_version
        self.deleted = True

    def holds(self, name: str, description: str, rule: dict[str, Any]) -> bool:
        """Whether the current version already says this: not deleted, same name, description and rule.

        Rules are compared parsed, so a rule recorded in another spelling (key order, 1000 for 1000.0, a
        default written out) is the same rule."""
        if self.deleted or (self.name, self.description) != (name, description):
            return False
        try:
            current = rule_json(parse_rule(self.rule))
        except RuleError:  # recorded before a check it would fail today: compare as recorded
            current = self.rule
        return current == rule


class ManualTagChange(Aggregate):
    """A static tag added to or removed from a profile by hand; one aggregate per change."""

    @event("Recorded")
    def __init__(self, workspace_id: str, profile_id: str, tag: str, action: str, reason: str) -> None:
        self.workspace_id = workspace_id
        self.profile_id = profile_id
        self.tag = tag
        self.action = action  # "added" | "removed"
        self.reason = reason


class Definitions:
    """The tags and saved segments of every workspace, as the log says they are now; and every version of
    the workspaces' consent defaults (kind `consent`, domain/consent.py), with when it was recorded."""

    def __init__(self) -> None:
        self.by_id: dict[str, RuleDefinition] = {}
        self.versions: dict[str, list[tuple[datetime, int, dict[str, Any]]]] = {}  # consent defaults: id → versions

    def apply(self, domain_event: Any) -> None:
        originator = str(domain_event.originator_id)
        if isinstance(domain_event, RuleDefinition.Defined):
            self.by_id[originator] = domain_event.mutate(None)
        else:
            domain_event.mutate(self.by_id[originator])
        self._keep_version(self.by_id[originator], domain_event.timestamp)

    def saved(self, aggregate: RuleDefinition, at: datetime) -> None:
        """An aggregate the writer just saved, whose last event was recorded `at`."""
        self.by_id[str(aggregate.id)] = aggregate
        self._keep_version(aggregate, at)

    def _keep_version(self, d: RuleDefinition, at: datetime) -> None:
        if d.kind == "consent":  # read as of a time (profiles as of then); tags and segments only now
            self.versions.setdefault(str(d.id), []).append((at, d.rule_version, dict(d.rule)))

    def get(self, workspace_id: str, kind: str, slug: str) -> RuleDefinition | None:
        return self.by_id.get(str(tag_id_for(workspace_id, kind, slug)))

    def live(self, workspace_id: str, kind: str) -> dict[str, RuleDefinition]:
        return {
            d.slug: d for d in self.by_id.values() if d.workspace_id == workspace_id and d.kind == kind and not d.deleted
        }

    def check(self, workspace_id: str, kind: str, definition: Definition) -> None:
        """Reject references to unknown dynamic tags and cycles, naming the path of the reference."""
        errors = []
        if depth(definition.rule) > MAX_DEPTH:
            errors.append(("rule", f"nested deeper than {MAX_DEPTH} levels; flatten and/or groups"))
        tags = self.live(workspace_id, "tag")
        rules = {slug: parse_rule(d.rule) for slug, d in tags.items()}
        if kind == "tag":
            rules[definition.id] = definition.rule
        for path, ref in tag_refs(definition.rule):
            if not SLUG.match(ref):
                errors.append((f"{path}.tag", f"{ref!r} is not a tag id (lower-case letters, digits, - or _)"))
            elif kind == "tag" and ref == definition.id:
                errors.append((f"{path}.tag", f"a tag cannot refer to itself ({ref!r})"))
            elif kind == "tag" and _reaches(rules, ref, definition.id):
                errors.append((f"{path}.tag", f"{ref!r} refers back to {definition.id!r}: a cycle; remove one of them"))
        if errors:
            raise RuleError(errors)

    def dependents(self, workspace_id: str, slug: str) -> list[str]:
        """Tags whose rules refer to `slug`, directly or through other tags."""
        rules = {s: parse_rule(d.rule) for s, d in self.live(workspace_id, "tag").items()}
        return sorted(s for s in rules if s != slug and _reaches(rules, s, slug))


def _reaches(rules: dict[str, Any], start: str, target: str) -> bool:
    seen, pending = set(), [start]
    while pending:
        current = pending.pop()
        if current == target:
            return True
        if current in seen or current not in rules:
            continue
        seen.add(current)
        pending += [ref for _, ref in tag_refs(rules[current])]
    return False


def define(
    definitions: Definitions, workspace_id: str, kind: str, definition: Definition, create_only: bool = False
) -> RuleDefinition:
    """A new definition or a new version of one (not yet saved), or the current version unchanged when it
    already says the same; raises RuleError with the path of a bad node."""
    definitions.check(workspace_id, kind, definition)
    existing = definitions.get(workspace_id, kind, definition.id)
    rule = definition.stored_rule()
    name = definition.name or definition.id
    if existing is None:
        return RuleDefinition(workspace_id, kind, definition.id, name, definition.description, rule)
    if create_only and not existing.deleted:
        raise AlreadyDefined(f"{kind} {definition.id!r} exists; change it by defining it again in place")
    if existing.holds(name, definition.description, rule):
        return existing  # unchanged: no new version, so nothing is recorded and no backfill starts
    existing.change(workspace_id, kind, definition.id, existing.rule_version + 1, name, definition.description, rule)
    return existing


def rule_text(rule: Any) -> str:
    return orjson.dumps(rule_json(rule) if isinstance(rule, BaseModel) else rule, option=orjson.OPT_SORT_KEYS).decode()


# Commands (run on the writer thread, through the group committer) ----------------------------

DEFINITION_TOPICS = [get_topic(c) for c in (RuleDefinition.Defined, RuleDefinition.Changed, RuleDefinition.Deleted)]


class AlreadyDefined(Conflict):
    """A new definition whose id is taken (changing an existing one is a new version instead)."""

    code = "already_defined"


class NotFound(errors.NotFound):
    """No such tag, segment or profile in the workspace."""


def save_definition(app: Any, workspace_id: str, kind: str, definition: Definition, create_only: bool = False) -> Any:
    """Store a tag or saved segment (a new version if it exists and differs); returns the aggregate.

    A definition that says what the current version says records nothing: the aggregate comes back at
    its current version, with no pending events."""
    aggregate = define(app.definitions, workspace_id, kind, definition, create_only)
    if not aggregate.pending_events:
        return aggregate
    try:
        app.save(aggregate)
    except BaseException:
        app.load()  # the aggregate was changed in memory; the log is what counts
        raise
    app.definitions.saved(aggregate, aggregate.modified_on)
    return aggregate


def delete_definition(app: Any, workspace_id: str, kind: str, slug: str) -> int:
    existing = app.definitions.get(workspace_id, kind, slug)
    if existing is None or existing.deleted:
        raise NotFound(f"no {kind} {slug!r} in this workspace; the {kind}s listing shows them")
    existing.delete(workspace_id, kind, slug, existing.rule_version + 1)
    try:
        app.save(existing)
    except BaseException:
        app.load()
        raise
    return existing.rule_version


def record_manual_tag(app: Any, workspace_id: str, profile_id: str, tag: str, action: str, reason: str = "") -> None:
    if not SLUG.match(tag):
        raise RuleError([("tag", f"{tag!r} is not a tag id; use 1-63 lower-case letters, digits, - or _")])
    dynamic = app.definitions.get(workspace_id, "tag", tag)
    if dynamic is not None and not dynamic.deleted:
        raise RuleError([("tag", f"{tag!r} is a dynamic tag: its rule decides who has it; pick another id")])
    profile = app.profiles.get(profile_id)
    if profile is None or profile.workspace_id != workspace_id or profile.merged_into is not None:
        raise NotFound(f"no profile {profile_id} in this workspace")
    app.save(ManualTagChange(workspace_id, profile_id, tag, action, reason))
