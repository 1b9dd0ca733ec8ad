"""The CRM and money vocabulary: reserved `track` events, their schemas, and what each counts as.

A track call whose `event` is one of the reserved names below must carry the
properties its schema asks for; ingest rejects it with the field and reason
otherwise, like any other invalid call. Other properties are kept as sent. The
validated values are stored normalised (currency upper case, numbers as numbers),
so projections read one shape.

`facts_of` is the one definition of what a reserved event means to the read side:
its kind, its amount, its currency, its dimensions. The KPI facts, the profile's
computed revenue and the tag measures all read these facts, so they agree.
Money is exact (`Decimal`) and always carries a currency: amounts in different
currencies are reported per currency, never added together. An order's amount is
`revenue`, else `total`, else the sum of its products' price x quantity; a refund
takes away its `revenue`, or the whole order's amount (and currency) without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from domain.limits import MAX_AMOUNT, MAX_QUANTITY, check_date
from domain.times import parse_day


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _iso_date(value: Any) -> Any:
    # JSON carries dates as "YYYY-MM-DD" text; a number here is a mistake, not a Unix time.
    if not isinstance(value, str):
        raise ValueError("a date is written as text, YYYY-MM-DD")
    return value


# Types are strict: the string "9" is not an NPS score and the number 7 is not a ticket id, so a
# sender that mixes them up hears about it instead of getting figures that mean something else.
Id = Annotated[str, Field(strict=True, min_length=1, max_length=256)]
Name = Annotated[str, Field(strict=True, min_length=1, max_length=256)]
Currency = Annotated[
    str, BeforeValidator(_upper), Field(strict=True, pattern=r"^[A-Z]{3}$", description="ISO 4217 code")
]
# Bounded by what the KPI facts hold exactly (domain/limits.py): Decimal(38, 6) amounts, Int64 quantities.
Money = Annotated[float, Field(strict=True, ge=0, le=MAX_AMOUNT, allow_inf_nan=False)]
Quantity = Annotated[int, Field(strict=True, ge=0, le=MAX_QUANTITY)]
Day = Annotated[date, BeforeValidator(_iso_date), AfterValidator(check_date)]
Score = Annotated[int, Field(strict=True)]


class _Properties(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class _Amount(_Properties):
    """An optional amount that, when present, needs its currency."""

    currency: Currency | None = None

    def _needs_currency(self, *amounts: float | None) -> None:
        if any(a is not None for a in amounts) and self.currency is None:
            raise ValueError("currency is required with an amount (ISO 4217 code, e.g. EUR)")


class Product(_Properties):
    product_id: Id | None = None
    sku: Id | None = None
    name: Name | None = None
    category: Name | None = None
    price: Money = 0.0
    quantity: Quantity = 1


class OrderCompleted(_Amount):
    order_id: Id | None = None
    revenue: Money | None = None
    total: Money | None = None
    products: list[Product] = Field(default_factory=list)
    campaign_id: Id | None = None

    @model_validator(mode="after")
    def _check(self) -> "OrderCompleted":
        self._needs_currency(self.revenue, self.total, *(p.price or None for p in self.products))
        return self


class OrderRefunded(_Amount):
    order_id: Id
    revenue: Money | None = Field(None, description="refunded amount; the whole order when absent")

    @model_validator(mode="after")
    def _check(self) -> "OrderRefunded":
        self._needs_currency(self.revenue)
        return self


class LeadCreated(_Properties):
    lead_id: Id | None = None
    owner: Name | None = None
    channel: Name | None = None
    campaign_id: Id | None = None


class OpportunityStageChanged(_Amount):
    opportunity_id: Id
    stage: Name
    amount: Money
    probability: Annotated[float, Field(strict=True, ge=0, le=1, description="0 to 1")]
    owner: Name | None = None
    status: Literal["open", "won", "lost"] | None = Field(None, description="derived from the stage when absent")

    @model_validator(mode="after")
    def _check(self) -> "OpportunityStageChanged":
        self._needs_currency(self.amount)
        if self.status is None:
            stage = self.stage.strip().lower().replace("_", " ")
            self.status = "won" if stage in WON_STAGES else "lost" if stage in LOST_STAGES else "open"
        return self


WON_STAGES = {"won", "closed won"}
LOST_STAGES = {"lost", "closed lost"}


class Activity(_Properties):
    owner: Name | None = None
    duration_s: Annotated[float, Field(strict=True, ge=0, le=MAX_AMOUNT, allow_inf_nan=False)] | None = None
    outcome: Name | None = None


class Ticket(_Properties):
    ticket_id: Id
    priority: Name | None = None
    category: Name | None = None
    channel: Name | None = None
    assignee: Name | None = None


class FeedbackSubmitted(_Properties):
    csat: Annotated[Score, Field(ge=1, le=5)] | None = None
    nps: Annotated[Score, Field(ge=0, le=10)] | None = None
    comment: Annotated[str, Field(strict=True, max_length=10_000)] | None = None
    channel: Name | None = None

    @model_validator(mode="after")
    def _check(self) -> "FeedbackSubmitted":
        if self.csat is None and self.nps is None and not self.comment:
            raise ValueError("feedback needs a csat (1-5), an nps (0-10) or a comment")
        return self


class CampaignMessage(_Properties):
    campaign_id: Id


CONSENT_CHANGED = "Consent Changed"
PURPOSE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
PURPOSE_HELP = "a purpose is a lower-case id of letters, digits, - or _, e.g. marketing, analytics or personalisation"


def purpose_key(value: Any) -> Any:
    """A purpose as stored and compared: trimmed, lower case (`Marketing ` is `marketing`)."""
    return value.strip().lower() if isinstance(value, str) else value


def _purpose(value: str) -> str:
    if not PURPOSE.match(value):
        raise ValueError(f"{value!r} is not a purpose; {PURPOSE_HELP}")
    return value


Purpose = Annotated[str, BeforeValidator(purpose_key), Field(strict=True), AfterValidator(_purpose)]


class ConsentChanged(_Properties):
    """A person granted (`granted: true`) or withdrew (`false`) consent for one purpose (docs/consent.md)."""

    purpose: Purpose
    granted: Annotated[bool, Field(strict=True)]
    channel: Name | None = None


class CostIncurred(_Amount):
    amount: Money
    channel: Name | None = None
    campaign_id: Id | None = None
    kind: Literal["marketing", "sales"] = "marketing"

    @model_validator(mode="after")
    def _check(self) -> "CostIncurred":
        self._needs_currency(self.amount)
        return self


class SalesTargetSet(_Amount):
    owner: Name
    period_start: Day
    period_end: Day
    amount: Money

    @model_validator(mode="after")
    def _check(self) -> "SalesTargetSet":
        self._needs_currency(self.amount)
        if self.period_end < self.period_start:
            raise ValueError("period_end must not be before period_start")
        return self


SCHEMAS: dict[str, type[_Properties]] = {
    "Order Completed": OrderCompleted,
    "Order Refunded": OrderRefunded,
    "Lead Created": LeadCreated,
    "Opportunity Stage Changed": OpportunityStageChanged,
    "Call Logged": Activity,
    "Meeting Logged": Activity,
    "Ticket Opened": Ticket,
    "Ticket Assigned": Ticket,
    "Ticket Resolved": Ticket,
    "Feedback Submitted": FeedbackSubmitted,
    "Email Sent": CampaignMessage,
    "Email Opened": CampaignMessage,
    "Email Clicked": CampaignMessage,
    "SMS Sent": CampaignMessage,
    "SMS Opened": CampaignMessage,
    "SMS Clicked": CampaignMessage,
    CONSENT_CHANGED: ConsentChanged,
    "Cost Incurred": CostIncurred,
    "Sales Target Set": SalesTargetSet,
}
"""Reserved track event names and the schema of their properties."""


def validate_properties(event: str, properties: dict[str, Any]) -> dict[str, Any]:
    """The properties of a reserved event, validated and normalised (others unchanged).

    Raises pydantic's ValidationError with locations relative to `properties`.
    """
    schema = SCHEMAS.get(event)
    if schema is None:
        return properties
    model = schema.model_validate(properties)
    return {**properties, **model.model_dump(mode="json", exclude_none=True, exclude_unset=False)}


def schema_documents() -> dict[str, Any]:
    """JSON Schemas of the reserved events' properties, by event name (for docs and `GET /v1/schemas`)."""
    return {name: schema.model_json_schema() for name, schema in SCHEMAS.items()}


# What each reserved event counts as --------------------------------------------------------------

ORDER_COMPLETED, ORDER_REFUNDED = "Order Completed", "Order Refunded"
TICKET_OPENED, TICKET_RESOLVED = "Ticket Opened", "Ticket Resolved"
FEEDBACK_SUBMITTED = "Feedback Submitted"

FACT_KINDS: dict[str, str] = {
    ORDER_COMPLETED: "order",
    ORDER_REFUNDED: "refund",
    "Lead Created": "lead",
    "Opportunity Stage Changed": "opportunity",
    "Call Logged": "call",
    "Meeting Logged": "meeting",
    TICKET_OPENED: "ticket_opened",
    "Ticket Assigned": "ticket_assigned",
    TICKET_RESOLVED: "ticket_resolved",
    FEEDBACK_SUBMITTED: "feedback",
    "Email Sent": "message_sent",
    "Email Opened": "message_opened",
    "Email Clicked": "message_clicked",
    "SMS Sent": "message_sent",
    "SMS Opened": "message_opened",
    "SMS Clicked": "message_clicked",
    "Cost Incurred": "cost",
    "Sales Target Set": "target",
}
"""Reserved event name → fact kind (Consent Changed is reserved but counted by no KPI: consent decides who may be
reached for a purpose, never what is counted; docs/consent.md)."""
assert set(FACT_KINDS) <= set(SCHEMAS), "every counted event has a schema"

EPOCH_DAY = date(1970, 1, 1)
ZERO = Decimal(0)


@dataclass(frozen=True)
class Fact:
    """One thing a reserved event counts as; an order gives one `order` fact plus one `order_line` per product."""

    fact_id: str
    kind: str
    entity_id: str
    amount: Decimal = ZERO
    has_amount: bool = False  # False for a refund of the whole order: its amount is the order's
    currency: str = ""
    quantity: int = 0
    probability: float = 0.0
    stage: str = ""
    status: str = ""
    csat: int | None = None
    nps: int | None = None
    complaint: bool = False
    channel: str = ""
    campaign: str = ""
    product: str = ""
    owner: str = ""
    category: str = ""
    priority: str = ""
    period_start: date = EPOCH_DAY
    period_end: date = EPOCH_DAY


def money(value: Any) -> Decimal:
    """An amount as sent (a JSON number) as an exact decimal; `str` keeps 1100.54 from becoming 1100.5400000000002."""
    return ZERO if value is None else Decimal(str(value))


def order_amount(properties: dict[str, Any]) -> Decimal:
    """An order's amount: `revenue`, else `total`, else the sum of its products' price x quantity."""
    for name in ("revenue", "total"):
        if properties.get(name) is not None:
            return money(properties[name])
    return sum((line_amount(x) for x in _lines(properties)), ZERO)


def line_amount(line: dict[str, Any]) -> Decimal:
    return money(line.get("price")) * int(line.get("quantity", 1))


def refund_amount(properties: dict[str, Any]) -> Decimal | None:
    """What a refund takes away; None means the whole order (its amount and currency come from the order)."""
    value = properties.get("revenue")
    return None if value is None else money(value)


def _lines(properties: dict[str, Any]) -> list[dict[str, Any]]:
    return [x for x in properties.get("products") or [] if isinstance(x, dict)]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def facts_of(call: dict[str, Any], event_id: str, source: str = "") -> list[Fact]:
    """The facts of one stored call (none for calls no KPI counts); `source` is its channel when it names none."""
    kind = FACT_KINDS.get(call.get("event", "")) if call.get("type") == "track" else None
    if kind is None:
        return []
    p: dict[str, Any] = call.get("properties") or {}
    context = call.get("context") or {}
    campaign_context = context.get("campaign") if isinstance(context.get("campaign"), dict) else {}
    base = Fact(
        fact_id=event_id, kind=kind, entity_id=event_id, currency=_text(p.get("currency")),
        channel=_text(p.get("channel")) or source,
        campaign=_text(p.get("campaign_id")) or _text(campaign_context.get("name")),
        owner=_text(p.get("owner") or p.get("assignee")), category=_text(p.get("category")),
        priority=_text(p.get("priority")),
    )  # fmt: skip
    return _SHAPES[kind](base, p, call)


def _order(base: Fact, p: dict[str, Any], call: dict[str, Any]) -> list[Fact]:
    order = replace(base, entity_id=_text(p.get("order_id")) or base.fact_id, amount=order_amount(p), has_amount=True)
    lines = [
        replace(order, fact_id=f"{base.fact_id}/{i}", kind="order_line", quantity=int(line.get("quantity", 1)),
                 amount=line_amount(line), category=_text(line.get("category")),
                 product=_text(line.get("product_id") or line.get("sku") or line.get("name")))
        for i, line in enumerate(_lines(p))
    ]  # fmt: skip
    return [order, *lines]


def _refund(base: Fact, p: dict[str, Any], call: dict[str, Any]) -> list[Fact]:
    amount = refund_amount(p)
    return [replace(base, entity_id=_text(p["order_id"]), amount=amount or ZERO, has_amount=amount is not None)]


def _opportunity(base: Fact, p: dict[str, Any], call: dict[str, Any]) -> list[Fact]:
    return [replace(base, entity_id=_text(p["opportunity_id"]), amount=money(p["amount"]), has_amount=True,
                     probability=float(p["probability"]), stage=_text(p["stage"]), status=_text(p["status"]))]  # fmt: skip


def _ticket(base: Fact, p: dict[str, Any], call: dict[str, Any]) -> list[Fact]:
    return [replace(base, entity_id=_text(p["ticket_id"]), complaint=base.category.lower() == "complaint")]


def _message(base: Fact, p: dict[str, Any], call: dict[str, Any]) -> list[Fact]:
    channel = "sms" if call["event"].startswith("SMS") else "email"
    return [replace(base, channel=channel, entity_id=_text(p["campaign_id"]))]


def _cost(base: Fact, p: dict[str, Any], call: dict[str, Any]) -> list[Fact]:
    return [replace(base, amount=money(p["amount"]), has_amount=True, category=_text(p.get("kind") or "marketing"))]


def _target(base: Fact, p: dict[str, Any], call: dict[str, Any]) -> list[Fact]:
    return [replace(base, amount=money(p["amount"]), has_amount=True, period_start=parse_day(p["period_start"]),
                     period_end=parse_day(p["period_end"]),
                     entity_id=f"{p['owner']}|{p['period_start']}|{p['period_end']}")]  # fmt: skip


def _lead(base: Fact, p: dict[str, Any], call: dict[str, Any]) -> list[Fact]:
    return [replace(base, entity_id=_text(p.get("lead_id")) or base.fact_id)]


def _feedback(base: Fact, p: dict[str, Any], call: dict[str, Any]) -> list[Fact]:
    return [replace(base, csat=p.get("csat"), nps=p.get("nps"))]


def _same(base: Fact, p: dict[str, Any], call: dict[str, Any]) -> list[Fact]:
    return [base]


_SHAPES = {
    "order": _order, "refund": _refund, "lead": _lead, "opportunity": _opportunity, "call": _same, "meeting": _same,
    "ticket_opened": _ticket, "ticket_assigned": _ticket, "ticket_resolved": _ticket, "feedback": _feedback,
    "message_sent": _message, "message_opened": _message, "message_clicked": _message, "cost": _cost,
    "target": _target,
}  # fmt: skip
assert set(_SHAPES) == set(FACT_KINDS.values()), "every fact kind has its shape"


__all__ = [
    "SCHEMAS", "FACT_KINDS", "Fact", "ValidationError", "facts_of", "money", "order_amount", "refund_amount",
    "validate_properties", "schema_documents",
]  # fmt: skip
