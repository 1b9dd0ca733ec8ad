"""RFM over the profiles table: the workspace's quintile boundaries and its buyers, scored by domain/traits.py.

Both the profile's `rfm` computed trait and the `rfm_tiers` KPI score with
`domain.traits.rfm` against these boundaries, so a customer has one tier.
Money is scored within its currency.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

_QUINTILES = "quantiles(0.2, 0.4, 0.6, 0.8)"
_DAYS = "dateDiff('second', last_order_at, now64(3)) / 86400"


def _buyers(db: str) -> str:
    return f"FROM {db}.profiles FINAL WHERE workspace_id = {{ws:String}} AND orders_count > 0 AND is_deleted = 0"


def rfm_boundaries(client: Any, db: str, workspace_id: str) -> dict[str, Any]:
    """Quintile boundaries among buyers of recency (days since last order) and frequency, and of net
    revenue per currency."""
    params = {"ws": workspace_id}
    rows = client.query(f"SELECT {_QUINTILES}({_DAYS}), {_QUINTILES}(orders_count) {_buyers(db)}",
                        parameters=params).result_rows  # fmt: skip
    recency, frequency = rows[0] if rows else ([], [])
    monetary = client.query(
        f"SELECT kv.1 AS c, {_QUINTILES}(toFloat64(kv.2)) FROM (SELECT arrayJoin(CAST(revenue, "
        f"'Array(Tuple(String, Decimal(38, 6)))')) AS kv {_buyers(db)}) GROUP BY c",
        parameters=params,
    ).result_rows  # fmt: skip
    return {"recency_days": list(recency), "frequency": list(frequency), "monetary": dict(monetary)}


def buyers(client: Any, db: str, workspace_id: str) -> list[tuple[float, int, dict[str, Decimal]]]:
    """(days since last order, orders, net revenue per currency) of every profile with orders."""
    return client.query(f"SELECT {_DAYS}, orders_count, revenue {_buyers(db)}",
                        parameters={"ws": workspace_id}).result_rows  # fmt: skip
