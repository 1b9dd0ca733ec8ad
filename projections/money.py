"""Money movements: the one SQL definition of revenue, read by the KPIs, the profiles and the tag measures.

Every completed order adds its amount and every refund takes its amount away,
in the order's currency when the refund names no amount (a whole-order refund),
by event time. A refund is counted under its order's dimensions (channel,
campaign, category) when the order is known, so `by=channel` nets each channel.
A whole-order refund of an order never seen moves nothing. Amounts are
Decimal(38, 6) from `kpi_facts` (written from domain/crm.py's facts), read with
FINAL so a redelivered fact counts once; nothing here adds two currencies.
"""

from __future__ import annotations

# Dimensions a refund takes from its order.
ORDER_DIMENSIONS = ("currency", "channel", "campaign", "category")


def movements(db: str, scope: str = "1") -> str:
    """A subquery of money movements of the workspace `{ws:String}` whose facts satisfy `scope` (SQL over
    kpi_facts columns, e.g. an anchor or time filter): one row per order or refund with `sign` (1 or -1),
    `amount` (>= 0, in `currency`), `net` (sign x amount), the fact's anchor, profile, event id, position and
    time, the dimensions (the order's, for a refund of a known order), `order_id` and `order_event` (the
    order's event id, for an order and for a refund of a known order)."""
    facts = (f"(SELECT * FROM {db}.kpi_facts FINAL WHERE workspace_id = {{ws:String}} "
             f"AND kind IN ('order', 'refund') AND ({scope}))")  # fmt: skip
    refunded = (f"(SELECT entity_id, argMin(tuple(amount, {', '.join(ORDER_DIMENSIONS)}, event_id), position) AS o "
                f"FROM {db}.kpi_facts FINAL WHERE workspace_id = {{ws:String}} AND kind = 'order' AND entity_id IN "
                f"(SELECT entity_id FROM {facts} WHERE kind = 'refund') GROUP BY entity_id)")  # fmt: skip
    known = "(f.kind = 'refund' AND r.entity_id != '')"
    whole = "(f.kind = 'refund' AND f.has_amount = 0)"
    dims = ", ".join(
        f"if({whole if d == 'currency' else known}, r.o.{i + 2}, f.{d}) AS {d}" for i, d in enumerate(ORDER_DIMENSIONS)
    )
    return (
        f"(SELECT f.workspace_id AS workspace_id, f.anchor AS anchor, f.profile_id AS profile_id, "
        f"f.event_id AS event_id, f.position AS position, f.timestamp AS timestamp, f.kind AS kind, "
        f"if(f.kind = 'refund', -1, 1) AS sign, if({whole}, r.o.1, f.amount) AS amount, "
        f"if(f.kind = 'refund', -amount, amount) AS net, {dims}, f.entity_id AS order_id, "
        f"if({known}, r.o.{len(ORDER_DIMENSIONS) + 2}, f.event_id) AS order_event "
        f"FROM {facts} AS f LEFT JOIN {refunded} AS r ON f.entity_id = r.entity_id "
        f"WHERE NOT ({whole} AND r.entity_id = ''))"
    )
