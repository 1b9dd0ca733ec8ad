"""RFM over the profiles table: the workspace's quintile boundaries and its buyers, scored by domain/traits.py.

Both the profile's `rfm` computed trait and the `rfm_tiers` KPI score with
`domain.traits.rfm` against these boundaries, so a customer has one tier.
Money is scored within its currency.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from domain.traits import RFM_HORIZON

_QUINTILES = "quantiles(0.2, 0.4, 0.6, 0.8)"
# Recency as the last order's age before a fixed horizon, in milliseconds (domain/traits.py RFM_HORIZON): it
# orders buyers as "days since" does, but does not move with the time of asking, so the profile's trait and the
# KPI, read moments apart and with boundaries up to 5 s old, score a buyer alike; measured from now, a buyer
# on a boundary (ties are common: orders imported at midnight) was above it for the one and not the other.
_AGE = f"dateDiff('millisecond', last_order_at, toDateTime64('{RFM_HORIZON:%Y-%m-%d %H:%M:%S}', 3, 'UTC'))"


def _buyers(db: str) -> str:
    return f"FROM {db}.profiles FINAL WHERE workspace_id = {{ws:String}} AND orders_count > 0 AND is_deleted = 0"


def rfm_boundaries(client: Any, db: str, workspace_id: str) -> dict[str, Any]:
    """Quintile boundaries among buyers of recency (the last order's age) and frequency, and of net revenue
    per currency."""
    params = {"ws": workspace_id}
    rows = client.query(f"SELECT {_QUINTILES}({_AGE}), {_QUINTILES}(orders_count) {_buyers(db)}",
                        parameters=params).result_rows  # fmt: skip
    recency, frequency = rows[0] if rows else ([], [])
    monetary = client.query(
        f"SELECT kv.1 AS c, {_QUINTILES}(toFloat64(kv.2)) FROM (SELECT arrayJoin(CAST(revenue, "
        f"'Array(Tuple(String, Decimal(38, 6)))')) AS kv {_buyers(db)}) GROUP BY c",
        parameters=params,
    ).result_rows  # fmt: skip
    return {"recency": list(recency), "frequency": list(frequency), "monetary": dict(monetary)}


def buyer_groups(client: Any, db: str, workspace_id: str,
                 boundaries: dict[str, Any]) -> list[tuple[float | None, int, dict[str, Decimal], int]]:  # fmt: skip
    """The buyers grouped by how many of each quintile boundary they are above: (the last order's age, orders,
    net revenue per currency) of one buyer of each group, and the group's size.

    `domain.traits.rfm` scores a value by the boundaries it is above (`value > b`), so every buyer of a group
    gets the scores of the one shown: the tiers are counted by calling it once a group, not once a buyer.
    The comparisons are the ones it makes, on the same values (the age in whole milliseconds, money as the
    boundaries' own Float64).
    """
    monetary = {c: [float(b) for b in bs] for c, bs in boundaries.get("monetary", {}).items()}
    sql = (f"SELECT any(age), any(orders_count), any(revenue), count() FROM (SELECT {_AGE} AS age, orders_count, "
           "revenue, arrayCount(b -> age > b, {rb:Array(Float64)}) AS r, "
           "arrayCount(b -> orders_count > b, {fb:Array(Float64)}) AS f, "
           # a currency without boundaries: indexOf is 0, and element 0 is the empty array
           "arrayMax(arrayConcat([0], arrayMap((c, v) -> arrayCount(b -> toFloat64(v) > b, "
           "{mb:Array(Array(Float64))}[indexOf({mc:Array(String)}, c)]), mapKeys(revenue), mapValues(revenue)))) "
           f"AS m {_buyers(db)}) GROUP BY age IS NULL, r, f, m")  # fmt: skip
    params = {"ws": workspace_id, "rb": [float(b) for b in boundaries.get("recency", [])],
              "fb": [float(b) for b in boundaries.get("frequency", [])], "mc": list(monetary),
              "mb": list(monetary.values())}  # fmt: skip
    return client.query(sql, parameters=params).result_rows  # type: ignore[no-any-return]
