"""A seeded, realistic workload of tracking calls for the benchmark suite.

Customers browse anonymously (some on two devices, a few on a shared device), then
identify, order, open and resolve tickets, give feedback and receive campaigns.
Some deliveries are late (event time hours back) and some are sent twice.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
PAGES = ["Home", "Pricing", "Docs", "Blog", "Checkout"]
CHANNELS = ["web", "app", "store"]
REPS = ["rita", "max", "sue", "tom"]
STAGES = [("qualification", 0.2), ("proposal", 0.5), ("negotiation", 0.7)]


def customer_journey(rng: random.Random, c: int, start: datetime) -> list[dict[str, Any]]:
    devices = [f"c{c}-web"] + ([f"c{c}-phone"] if rng.random() < 0.3 else [])
    if rng.random() < 0.02:
        devices.append("shared-kiosk")  # a few customers use the same kiosk: never merged (user_id is unique)
    user, when, calls = f"user-{c}", start, []

    def at() -> str:
        nonlocal when
        when += timedelta(seconds=rng.randint(5, 600))
        late = rng.random() < 0.05
        return (when - timedelta(hours=6) if late else when).isoformat()

    for device in devices:
        for _ in range(rng.randint(2, 6)):
            calls.append({"type": "page", "anonymousId": device, "name": rng.choice(PAGES), "timestamp": at()})
        calls.append({"type": "identify", "userId": user, "anonymousId": device, "timestamp": at(),
                      "traits": {"email": f"c{c}@example.com", "plan": rng.choice(["free", "pro"])}})  # fmt: skip
    campaigns = [f"camp-{k}" for k in range(rng.randint(0, 3))]
    for campaign in campaigns:
        calls.append({"type": "track", "userId": user, "event": "Email Sent", "timestamp": at(),
                      "properties": {"campaign_id": campaign}})  # fmt: skip
        if rng.random() < 0.3:
            calls.append({"type": "track", "userId": user, "event": "Email Clicked", "timestamp": at(),
                          "properties": {"campaign_id": campaign}})  # fmt: skip
    if rng.random() < 0.1:  # a B2B lead worked by a sales rep
        rep = rng.choice(REPS)
        calls.append({"type": "track", "userId": user, "event": "Lead Created", "timestamp": at(),
                      "properties": {"lead_id": f"l{c}", "owner": rep}})  # fmt: skip
        for stage, probability in STAGES[: rng.randint(1, 3)]:
            calls.append({"type": "track", "userId": user, "event": "Opportunity Stage Changed", "timestamp": at(),
                          "properties": {"opportunity_id": f"op{c}", "stage": stage, "amount": 1000,
                                         "probability": probability, "currency": "EUR", "owner": rep}})  # fmt: skip
        if rng.random() < 0.5:
            stage = rng.choice(["Closed Won", "Closed Lost"])
            calls.append({"type": "track", "userId": user, "event": "Opportunity Stage Changed", "timestamp": at(),
                          "properties": {"opportunity_id": f"op{c}", "stage": stage, "amount": 1000,
                                         "probability": 1.0 if stage == "Closed Won" else 0.0, "currency": "EUR",
                                         "owner": rep}})  # fmt: skip
        calls.append({"type": "track", "userId": user, "event": "Call Logged", "timestamp": at(),
                      "properties": {"owner": rep, "duration_s": rng.randint(60, 1800)}})  # fmt: skip
    for o in range(rng.choice([0, 0, 1, 1, 2, 3])):
        calls.append({"type": "track", "userId": user, "event": "Order Completed", "timestamp": at(),
                      "properties": {"order_id": f"{c}-{o}", "revenue": rng.randint(5, 400), "currency": "EUR",
                                     "channel": rng.choice(CHANNELS)}})  # fmt: skip
    if rng.random() < 0.02:
        calls.append({"type": "track", "userId": user, "event": "Order Refunded", "timestamp": at(),
                      "properties": {"order_id": f"{c}-0"}})  # fmt: skip
    if rng.random() < 0.2:
        category = "complaint" if rng.random() < 0.25 else "billing"
        calls.append({"type": "track", "userId": user, "event": "Ticket Opened", "timestamp": at(),
                      "properties": {"ticket_id": f"t{c}", "priority": "high", "category": category}})
        calls.append({"type": "track", "userId": user, "event": "Ticket Assigned", "timestamp": at(),
                      "properties": {"ticket_id": f"t{c}", "assignee": rng.choice(REPS)}})  # fmt: skip
        if rng.random() < 0.7:
            calls.append({"type": "track", "userId": user, "event": "Ticket Resolved", "timestamp": at(),
                          "properties": {"ticket_id": f"t{c}"}})  # fmt: skip
    if rng.random() < 0.3:
        calls.append({"type": "track", "userId": user, "event": "Feedback Submitted", "timestamp": at(),
                      "properties": {"csat": rng.randint(1, 5), "nps": rng.randint(0, 10)}})  # fmt: skip
    for campaign in campaigns:
        calls.append({"type": "track", "userId": user, "event": "Email Opened", "timestamp": at(),
                      "properties": {"campaign_id": campaign}})  # fmt: skip
    if c == 0:  # this quarter's sales targets
        for rep in REPS:
            calls.append({"type": "track", "userId": "finance", "event": "Sales Target Set", "timestamp": at(),
                          "properties": {"owner": rep, "period_start": "2026-01-01", "period_end": "2026-03-31",
                                         "amount": 50_000, "currency": "EUR"}})  # fmt: skip
    if c % 500 == 0:  # marketing spend, as the finance system reports it
        calls.append({"type": "track", "userId": "finance", "event": "Cost Incurred", "timestamp": at(),
                      "properties": {"amount": 2500, "currency": "EUR", "channel": "email",
                                     "campaign_id": "camp-0"}})  # fmt: skip
    return calls


def workload(events: int, seed: int = 7, duplicates: float = 0.01) -> Iterator[dict[str, Any]]:
    """`events` calls with unique messageIds (plus `duplicates` share sent again with the same id)."""
    rng = random.Random(seed)
    n, c = 0, 0
    pending: list[dict[str, Any]] = []
    while n < events:
        if not pending:
            pending = customer_journey(rng, c, T0 + timedelta(minutes=c % 10_000))
            c += 1
        call = pending.pop(0) | {"messageId": f"m{n}"}
        n += 1
        yield call
        if rng.random() < duplicates:
            yield dict(call)  # a client retry: same messageId, stored once
