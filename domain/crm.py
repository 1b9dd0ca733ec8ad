"""The CRM's event schemas: `track` events with reserved names and validated properties.

A track call whose `event` is one of the reserved names below must carry the
properties its schema asks for; ingest rejects it with the field and reason
otherwise, like any other invalid call. Other properties are kept as sent. The
validated values are stored normalised (currency upper case, numbers as numbers),
so projections read one shape. Money always carries a currency: amounts in
different currencies are reported per currency, never added together.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from domain.limits import MAX_AMOUNT, MAX_QUANTITY, check_date


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
        self._needs_currency(self.revenue, self.total)
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


class ConsentChanged(_Properties):
    """A person gave or withdrew consent for one purpose (e.g. email_marketing, analytics)."""

    purpose: Name
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
    "Consent Changed": ConsentChanged,
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


__all__ = ["SCHEMAS", "ValidationError", "validate_properties", "schema_documents"]
