"""Computed traits that depend on the whole workspace or on the clock: RFM scores and lifecycle stage.

Pure functions: the projections supply the per-profile numbers, these turn them
into scores and stages.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Mapping

from domain.identity import LifecycleThresholds

INTENT_EVENTS = frozenset({"Checkout Started", "Product Added", "Lead Created", "Opportunity Stage Changed"})
CONTACT_TYPES = ("user_id", "email", "phone")
# RFM recency is the last order's age before this instant, not before now: it ranks buyers alike, and a score
# does not depend on the moment it is computed (projections/rfm.py measures the boundaries the same way).
RFM_HORIZON = datetime(2299, 12, 31, tzinfo=timezone.utc)


def rfm_age(last_order_at: datetime | None) -> int | None:
    """The last order's age before RFM_HORIZON in whole milliseconds (the timestamps' precision)."""
    return None if last_order_at is None else (RFM_HORIZON - last_order_at) // timedelta(milliseconds=1)


def quintile(value: float, boundaries: list[float], higher_is_better: bool = True) -> int:
    """Score 1..5 by the workspace's quintile boundaries (5 = best)."""
    above = sum(1 for b in boundaries if value > b)
    score = 1 + above if higher_is_better else 5 - above
    return max(1, min(5, score))


def rfm_tier(recency: int, frequency: int, monetary: int) -> str:
    """Customer value tier from RFM scores, after the usual RFM segment grid."""
    if recency >= 4 and frequency >= 4 and monetary >= 4:
        return "champion"
    if recency >= 3 and frequency >= 3:
        return "loyal"
    if recency >= 4 and frequency <= 2:
        return "new"
    if recency <= 2 and frequency >= 3:
        return "at_risk"
    if recency <= 2 and frequency <= 2:
        return "hibernating"
    return "needs_attention"


def rfm(
    recency: float | None,
    orders: int,
    revenue: Mapping[str, Decimal | float],
    boundaries: Mapping[str, Any],
) -> dict[str, object] | None:
    """RFM scores within the workspace, or None for a profile without orders.

    `recency` is how old the last order is (`rfm_age`: greater is older), `boundaries` the
    quintile boundaries of `recency` and `frequency` among buyers, and of `monetary` per
    currency (currency → boundaries): money is scored within its own currency, and a
    customer's monetary score is their best one.
    """
    if not orders or recency is None:
        return None
    r = quintile(recency, boundaries.get("recency", []), higher_is_better=False)
    f = quintile(orders, boundaries.get("frequency", []))
    monetary = boundaries.get("monetary", {})
    m = max((quintile(float(v), monetary.get(c, [])) for c, v in revenue.items()), default=1)
    return {"recency": r, "frequency": f, "monetary": m, "tier": rfm_tier(r, f, m)}


def lifecycle_stage(
    identifier_types: set[str],
    orders: int,
    last_order_at: datetime | None,
    track_counts: dict[str, int],
    now: datetime,
    thresholds: LifecycleThresholds,
) -> str:
    """visitor → lead → prospect → customer → repeat_customer, then at_risk and churned as orders age."""
    if orders and last_order_at is not None:
        idle_days = (now - last_order_at).total_seconds() / 86400
        if idle_days >= thresholds.churned_days:
            return "churned"
        if idle_days >= thresholds.at_risk_days:
            return "at_risk"
        return "repeat_customer" if orders >= thresholds.repeat_orders else "customer"
    if any(track_counts.get(name) for name in INTENT_EVENTS):
        return "prospect"
    if identifier_types & set(CONTACT_TYPES):
        return "lead"
    return "visitor"
