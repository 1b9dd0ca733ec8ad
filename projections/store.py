"""Reads and writes of the projection tables in ClickHouse.

Every write is idempotent: rows are keyed so that a redelivered message replaces
itself, and profiles are recomputed from the (deduplicated) events table rather
than incremented, so applying a batch twice leaves the same answer.

An event belongs to the profile that owns its anchor identifier; a profile's
events are therefore `events WHERE anchor IN <its identifiers>`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterable, Sequence

import orjson

from domain.consent import CONSENT_CHANGED, Change, change_of, latest
from domain.crm import FEEDBACK_SUBMITTED as FEEDBACK
from domain.crm import TICKET_OPENED, TICKET_RESOLVED, ZERO
from domain.identity import own_identifier
from domain.times import UTC, parse_optional, shown, utc
from projections.erasure import PROFILE_TABLES, erase_rows
from projections.money import movements
from projections.rfm import rfm_boundaries
from projections.profile_cache import cache_for

EVENT_COLUMNS = [
    "workspace_id", "event_id", "message_id", "anchor", "profile_id", "position", "type", "event", "name", "source",
    "user_id", "anonymous_id", "email", "group_id", "previous_id", "timestamp", "original_timestamp", "sent_at",
    "received_at", "properties", "traits", "context",
]  # fmt: skip
PROFILE_COLUMNS = [
    "workspace_id", "profile_id", "identifiers", "traits", "trait_times", "trait_sources", "first_seen", "last_seen",
    "event_count", "counts", "track_counts", "orders_count", "order_counts", "order_revenue", "revenue", "last_order_at",
    "open_tickets", "csat_count", "csat_sum", "average_order_value", "average_csat", "consent", "position", "doc",
    "version", "is_deleted",
]  # fmt: skip
CHANGE_COLUMNS = [
    "workspace_id", "profile_id", "position", "change", "other_profile_id", "identifiers", "cause_event_id", "reason",
    "recorded_at",
]  # fmt: skip
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The Consent Changed events among `where`, with their decision (events are validated at ingest; a granted that is
# not a boolean is left out all the same) and when it was taken: its event time, or when it was received if that
# is earlier, so that a clock running ahead cannot date a decision after the ones that follow it.
_CONSENT_ROWS = (
    "SELECT anchor, JSONExtractString(properties, 'purpose') AS purpose, JSONExtractBool(properties, 'granted') "
    "AS granted, least(timestamp, received_at) AS decided, position, event_id, "
    "JSONExtractString(properties, 'channel') AS channel, received_at "
    "FROM {db}.events FINAL WHERE {where} AND type = 'track' AND event = '" + CONSENT_CHANGED + "' "
    "AND JSONType(properties, 'granted') = 'Bool'"
)


@dataclass
class ProfileView:
    """One profile as the projection holds it."""

    profile_id: str
    identifiers: list[str] = field(default_factory=list)
    traits: dict[str, Any] = field(default_factory=dict)
    trait_times: dict[str, datetime] = field(default_factory=dict)
    trait_sources: dict[str, str] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    event_count: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    track_counts: dict[str, int] = field(default_factory=dict)
    orders_count: int = 0
    order_counts: dict[str, int] = field(default_factory=dict)
    order_revenue: dict[str, Decimal] = field(default_factory=dict)  # completed orders, before refunds
    revenue: dict[str, Decimal] = field(default_factory=dict)  # net: orders minus refunds (projections/money.py)
    last_order_at: datetime | None = None
    open_tickets: int = 0
    csat_count: int = 0
    csat_sum: float = 0.0
    consent: dict[str, dict[str, Any]] = field(default_factory=dict)  # purpose → the decision in force (Change)
    position: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)  # identity history, oldest first

    def to_doc(self) -> bytes:
        return orjson.dumps(
            {
                "profile_id": self.profile_id, "identifiers": self.identifiers, "traits": self.traits,
                "trait_times": {k: shown(v) for k, v in self.trait_times.items()}, "trait_sources": self.trait_sources,
                "first_seen": shown(self.first_seen), "last_seen": shown(self.last_seen),
                "event_count": self.event_count, "counts": self.counts, "track_counts": self.track_counts,
                "orders_count": self.orders_count, "order_counts": self.order_counts,
                "order_revenue": _amounts(self.order_revenue), "revenue": _amounts(self.revenue),
                "last_order_at": shown(self.last_order_at), "open_tickets": self.open_tickets,
                "csat_count": self.csat_count, "csat_sum": self.csat_sum, "consent": self.consent,
                "position": self.position, "changes": self.changes,
            },  # fmt: skip
            option=orjson.OPT_SORT_KEYS,  # deterministic: a rebuild writes the same bytes
        )

    @classmethod
    def from_doc(cls, raw: str | bytes) -> "ProfileView":
        doc = orjson.loads(raw)
        for name in ("first_seen", "last_seen", "last_order_at"):
            doc[name] = parse_optional(doc[name])
        doc["trait_times"] = {k: parse_optional(v) for k, v in doc["trait_times"].items()}
        for name in ("order_revenue", "revenue"):
            doc[name] = {c: Decimal(str(v)) for c, v in doc.get(name, {}).items()}
        return cls(**doc)

    @property
    def alive(self) -> bool:
        return bool(self.identifiers) or self.event_count > 0

    def computed(self) -> dict[str, Any]:
        """The computed traits that follow from the profile's own events."""
        return {
            "first_seen": shown(self.first_seen),
            "last_seen": shown(self.last_seen),
            "event_count": self.event_count,
            "counts": dict(sorted(self.counts.items())),
            "orders_count": self.orders_count,
            "revenue": {c: float(v) for c, v in sorted(self.revenue.items())},
            "average_order_value": {c: float(v) for c, v in self.average_order_value().items()},
            "last_order_at": shown(self.last_order_at),
            "open_tickets": self.open_tickets,
            "average_csat": self.average_csat(),
        }

    # The computed traits that are not plain counts, defined here once: the profiles table stores them
    # and tag rules compare the stored values (projections/tags.py), so a rule sees what the profile shows.

    def average_order_value(self) -> dict[str, Decimal]:
        """Per currency: revenue of completed orders before refunds ÷ their number (as the KPI)."""
        return {c: round(self.order_revenue.get(c, ZERO) / n, 6) for c, n in sorted(self.order_counts.items()) if n}

    def average_csat(self) -> float | None:
        return round(self.csat_sum / self.csat_count, 2) if self.csat_count else None


def _amounts(values: dict[str, Decimal]) -> dict[str, str]:
    """Exact amounts for the stored document: decimal text, which JSON numbers would round."""
    return {c: str(v) for c, v in sorted(values.items())}


class ProjectionStore:
    """The projection tables of one ClickHouse database."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.db = database
        self.cache = cache_for(client, database)  # the latest owners and profiles written: reads without a query

    def drop(self) -> None:
        """Drop the whole database (a rebuild starts from nothing), and forget what the cache holds of it."""
        self.client.command(f"DROP DATABASE IF EXISTS {self.db}")
        self.cache.clear()

    def _insert(self, table: str, rows: Sequence[Sequence[Any]], columns: list[str]) -> None:
        if rows:
            self.client.insert(f"{self.db}.{table}", rows, column_names=columns)

    def erase(self, workspace_id: str, profile_ids: list[str]) -> None:
        """Delete the rows of erased profiles (a regulation's delete) from this store's tables."""
        erase_rows(self.client, self.db, PROFILE_TABLES, workspace_id, profile_ids)
        self.cache.clear()  # owners and documents of the erased profiles: read again from what is left

    # Writes --------------------------------------------------------------------------------

    def insert_events(self, rows: Sequence[Sequence[Any]]) -> None:
        self._insert("events", rows, EVENT_COLUMNS)

    def insert_identity_history(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of (workspace_id, identifier, profile_id, position, recorded_at)."""
        self._insert("identity_history", rows, ["workspace_id", "identifier", "profile_id", "position", "recorded_at"])
        self.cache.put_owners([(r[0], r[1], str(r[2]), r[3]) for r in rows])

    def insert_profile_identifiers(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of (workspace_id, profile_id, identifier, position, is_deleted)."""
        self._insert(
            "profile_identifiers", rows, ["workspace_id", "profile_id", "identifier", "position", "is_deleted"]
        )

    def insert_changes(self, rows: Sequence[Sequence[Any]]) -> None:
        self._insert("profile_changes", rows, CHANGE_COLUMNS)

    def write_profiles(self, workspace_id: str, views: Iterable[ProfileView], gone: Iterable[str], top: int) -> None:
        """Upsert live profiles and tombstone the ones left without identifiers or events."""
        version = time.time_ns()
        docs = [(v, v.to_doc()) for v in views]
        rows = [
            [
                workspace_id, v.profile_id, v.identifiers, {k: orjson.dumps(x).decode() for k, x in v.traits.items()},
                v.trait_times, v.trait_sources, v.first_seen or EPOCH, v.last_seen or EPOCH, v.event_count, v.counts,
                v.track_counts, v.orders_count, v.order_counts, v.order_revenue, v.revenue, v.last_order_at,
                v.open_tickets, v.csat_count, v.csat_sum, v.average_order_value(), v.average_csat(),
                {p: int(c["granted"]) for p, c in v.consent.items()}, v.position, doc.decode(), version, 0,
            ]  # fmt: skip
            for v, doc in docs
        ]
        gone = list(gone)
        rows += [
            [workspace_id, pid, [], {}, {}, {}, EPOCH, EPOCH, 0, {}, {}, 0, {}, {}, {}, None, 0, 0, 0.0, {}, None, {}, top,
             "", version, 1]
            for pid in gone
        ]
        self._insert("profiles", rows, PROFILE_COLUMNS)
        self.cache.put_profiles(
            [(workspace_id, v.profile_id, version, doc) for v, doc in docs]
            + [(workspace_id, pid, version, None) for pid in gone]
        )

    def insert_rules(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of (workspace_id, version, rules JSON, position)."""
        self._insert("workspace_rules", rows, ["workspace_id", "version", "rules", "position"])

    def latest_rules(self) -> dict[str, dict[str, Any]]:
        """workspace → the newest rules the log recorded for it."""
        rows = self.client.query(
            f"SELECT workspace_id, argMax(rules, version) FROM {self.db}.workspace_rules GROUP BY workspace_id"
        ).result_rows
        return {ws: orjson.loads(rules) for ws, rules in rows}

    def count_profiles(self, workspace_id: str) -> int:
        """Live profiles of the workspace (merged-away and erased ones are deleted rows, which FINAL hides)."""
        return int(self.client.query(f"SELECT count() FROM {self.db}.profiles FINAL WHERE workspace_id = {{ws:String}}",
                                     parameters={"ws": workspace_id}).result_rows[0][0])  # fmt: skip

    def profile_ids(self, workspace_id: str) -> list[str]:
        rows = self.client.query(
            f"SELECT DISTINCT toString(profile_id) FROM {self.db}.profile_identifiers FINAL "
            "WHERE workspace_id = {ws:String}",
            parameters={"ws": workspace_id},
        ).result_rows
        return [r[0] for r in rows]

    def save_position(self, name: str, partition: int, position: int) -> None:
        self._insert(
            "positions",
            [[name, partition, position, datetime.now(UTC)]],
            ["name", "partition", "position", "updated_at"],
        )

    def log_origin(self) -> str | None:
        """The fingerprint of the log these projections were built from (None before it is recorded)."""
        rows = self.client.query(f"SELECT argMax(log_id, recorded_at) FROM {self.db}.log_origin").result_rows
        return (rows[0][0] or None) if rows else None

    def record_log_origin(self, log_id: str) -> None:
        self.client.insert(
            f"{self.db}.log_origin", [[log_id, datetime.now(UTC)]], column_names=["log_id", "recorded_at"]
        )

    # Identity reads ------------------------------------------------------------------------

    def positions(self) -> dict[str, dict[int, int]]:
        result: dict[str, dict[int, int]] = defaultdict(dict)
        rows = self.client.query(
            f"SELECT name, partition, argMax(position, updated_at) FROM {self.db}.positions GROUP BY name, partition"
        ).result_rows
        for name, partition, position in rows:
            result[name][partition] = position
        return dict(result)

    def owner_of(self, workspace_id: str, ident: str, as_of: datetime | None = None) -> str | None:
        """The profile that owns an identifier now (or at `as_of`)."""
        condition = "AND recorded_at <= {t:DateTime64(6, 'UTC')}" if as_of else ""
        rows = self.client.query(
            f"SELECT toString(argMax(profile_id, position)) FROM {self.db}.identity_history "
            f"WHERE workspace_id = {{ws:String}} AND identifier = {{ident:String}} {condition} HAVING count() > 0",
            parameters={"ws": workspace_id, "ident": ident, "t": as_of},
        ).result_rows
        return rows[0][0] if rows else None

    def merged_into(self, workspace_id: str, profile_id: str) -> str | None:
        """Where a merged-away profile went (following later merges), or None if it was never merged."""
        seen = {profile_id}
        current, moved = profile_id, None
        while True:
            rows = self.client.query(
                f"SELECT other_profile_id FROM {self.db}.profile_changes WHERE workspace_id = {{ws:String}} "
                "AND profile_id = {pid:UUID} AND change = 'merged_into' ORDER BY position DESC LIMIT 1",
                parameters={"ws": workspace_id, "pid": current},
            ).result_rows
            if not rows or rows[0][0] in seen:
                return moved
            current = moved = rows[0][0]
            seen.add(current)

    def identifiers_of(
        self, workspace_id: str, profile_ids: Iterable[str], as_of: datetime | None = None
    ) -> dict[str, list[str]]:
        ids = sorted(set(profile_ids))
        result: dict[str, list[str]] = {pid: [] for pid in ids}
        if not ids:
            return result
        if as_of is None:
            query = (
                f"SELECT toString(profile_id), identifier FROM {self.db}.profile_identifiers FINAL "
                "WHERE workspace_id = {ws:String} AND profile_id IN {ids:Array(UUID)} ORDER BY identifier"
            )
        else:
            query = (
                f"SELECT p, identifier FROM (SELECT identifier, toString(argMax(profile_id, position)) AS p "
                f"FROM {self.db}.identity_history WHERE workspace_id = {{ws:String}} "
                "AND recorded_at <= {t:DateTime64(6, 'UTC')} GROUP BY identifier) "
                "WHERE p IN {sids:Array(String)} ORDER BY identifier"
            )
        for pid, ident in self.client.query(
            query, parameters={"ws": workspace_id, "ids": ids, "sids": ids, "t": as_of}
        ).result_rows:
            result[pid].append(ident)
        return result

    def changes(self, workspace_id: str, profile_id: str) -> list[dict[str, Any]]:
        return self.changes_of(workspace_id, [profile_id]).get(profile_id, [])

    def changes_of(self, workspace_id: str, profile_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """Identity changes recorded on each profile, oldest first, as the API shows them."""
        ids = sorted(set(profile_ids))
        result: dict[str, list[dict[str, Any]]] = {pid: [] for pid in ids}
        if not ids:
            return result
        rows = self.client.query(
            f"SELECT toString(profile_id), position, change, other_profile_id, identifiers, cause_event_id, reason, "
            f"recorded_at FROM {self.db}.profile_changes FINAL "
            "WHERE workspace_id = {ws:String} AND profile_id IN {ids:Array(UUID)} ORDER BY position, change",
            parameters={"ws": workspace_id, "ids": ids},
        ).result_rows
        for pid, position, change, other, idents, cause, reason, at in rows:
            result[pid].append({
                "profile_id": pid, "position": position, "change": change, "other_profile_id": other or None,
                "identifiers": list(idents), "cause_event_id": cause or None, "reason": reason or None,
                "recorded_at": shown(at),
            })  # fmt: skip
        return result

    # Profile computation --------------------------------------------------------------------

    def compute_profiles(
        self,
        workspace_id: str,
        profile_ids: Iterable[str],
        as_of: datetime | None = None,
        trait_sources: dict[str, list[str]] | None = None,
    ) -> dict[str, ProfileView]:
        """Profiles as the events and identity tables say they are now (or were at `as_of`).

        `trait_sources` maps a trait (or '*') to its sources, most trusted first; without
        an entry, the latest value by event time wins.
        """
        idents = self.identifiers_of(workspace_id, profile_ids, as_of)
        views = {pid: ProfileView(profile_id=pid, identifiers=list(ids)) for pid, ids in idents.items()}
        owner = {own_identifier(pid): pid for pid in views}
        owner.update({ident: pid for pid, ids in idents.items() for ident in ids})
        if not views:
            return views
        known = "AND received_at <= {t:DateTime64(6, 'UTC')}" if as_of else ""
        where = f"workspace_id = {{ws:String}} AND anchor IN {{anchors:Array(String)}} {known}"
        params = {"ws": workspace_id, "anchors": sorted(owner), "t": as_of}
        self._counts(views, owner, params, where)
        self._money(views, owner, params, known)
        self._tickets(views, owner, params, where)
        self._csat(views, owner, params, where)
        if any(v.track_counts.get(CONSENT_CHANGED) for v in views.values()):  # most pages carry no decision
            self._consent(views, owner, params, where)
        self._traits(views, owner, params, where, trait_sources or {})
        for pid, changes in self.changes_of(workspace_id, views).items():
            views[pid].changes = changes if as_of is None else [c for c in changes if c["recorded_at"] <= shown(as_of)]
        return views

    # Each reads one aspect of the profiles' events; `where` selects them (workspace, anchors, time travel),
    # `owner` maps an anchor to its profile.

    def _counts(self, views: dict[str, ProfileView], owner: dict[str, str], params: dict[str, Any], where: str) -> None:
        """Event counts by type and name, first and last seen, the highest position."""
        for anchor, kind, name, count, first, last, position in self.client.query(
            f"SELECT anchor, type, event, count(), min(timestamp), max(timestamp), max(position) "
            f"FROM {self.db}.events FINAL WHERE {where} GROUP BY anchor, type, event",
            parameters=params,
        ).result_rows:
            v = views[owner[anchor]]
            v.counts[kind] = v.counts.get(kind, 0) + count
            if kind == "track":
                v.track_counts[name] = v.track_counts.get(name, 0) + count
            v.event_count += count
            first, last = utc(first), utc(last)
            v.first_seen = first if v.first_seen is None else min(v.first_seen, first)
            v.last_seen = last if v.last_seen is None else max(v.last_seen, last)
            v.position = max(v.position, position)

    def _tickets(self, views: dict[str, ProfileView], owner: dict[str, str], params: dict[str, Any], where: str) -> None:
        """Open tickets: those whose latest Ticket Opened / Ticket Resolved is an opening."""
        tickets: dict[str, dict[str, tuple[datetime, int, str]]] = defaultdict(dict)
        for anchor, ticket, name, at, position in self.client.query(
            f"SELECT anchor, JSONExtractString(properties, 'ticket_id') AS t, argMax(event, (timestamp, position)), "
            f"max(timestamp), max(position) FROM {self.db}.events FINAL WHERE {where} AND type = 'track' "
            f"AND event IN ('{TICKET_OPENED}', '{TICKET_RESOLVED}') AND t != '' GROUP BY anchor, t",
            parameters=params,
        ).result_rows:
            latest = tickets[owner[anchor]].get(ticket)
            if latest is None or (at, position) > latest[:2]:
                tickets[owner[anchor]][ticket] = (at, position, name)
        for pid, states in tickets.items():
            views[pid].open_tickets = sum(1 for _, _, name in states.values() if name == TICKET_OPENED)

    def _csat(self, views: dict[str, ProfileView], owner: dict[str, str], params: dict[str, Any], where: str) -> None:
        for anchor, count, total in self.client.query(
            f"SELECT anchor, count(), sum(JSONExtractFloat(properties, 'csat')) FROM {self.db}.events FINAL "
            f"WHERE {where} AND type = 'track' AND event = '{FEEDBACK}' AND JSONHas(properties, 'csat') "
            "GROUP BY anchor",
            parameters=params,
        ).result_rows:
            v = views[owner[anchor]]
            v.csat_count += count
            v.csat_sum += total

    def _consent(self, views: dict[str, ProfileView], owner: dict[str, str], params: dict[str, Any], where: str) -> None:
        """Per purpose, the decision in force (domain/consent.latest) over the profile's anchors."""
        found: dict[str, list[Change]] = defaultdict(list)
        for anchor, purpose, (granted, at, position, event_id, channel, received) in self.client.query(
            f"SELECT anchor, purpose, argMax((granted, decided, position, toString(event_id), channel, received_at), "
            f"(decided, position)) FROM ({_CONSENT_ROWS.format(db=self.db, where=where)}) GROUP BY anchor, purpose",
            parameters=params,
        ).result_rows:
            c = change_of(purpose, bool(granted), utc(at), position, event_id, channel, utc(received))
            if c is not None:
                found[owner[anchor]].append(c)
        for pid, changes in found.items():
            views[pid].consent = {p: c.to_json() for p, c in sorted(latest(changes).items())}

    def consent_history(
        self, workspace_id: str, anchors: list[str], limit: int, as_of: datetime | None = None
    ) -> list[Change]:
        """The Consent Changed decisions anchored on `anchors` (received by `as_of`), the latest first."""
        known = "AND received_at <= {t:DateTime64(6, 'UTC')}" if as_of else ""
        where = f"workspace_id = {{ws:String}} AND anchor IN {{anchors:Array(String)}} {known}"
        rows = self.client.query(
            f"SELECT purpose, granted, decided, position, toString(event_id), channel, received_at "
            f"FROM ({_CONSENT_ROWS.format(db=self.db, where=where)}) "
            "ORDER BY decided DESC, position DESC LIMIT {limit:UInt32}",
            parameters={"ws": workspace_id, "anchors": anchors, "t": as_of, "limit": limit},
        ).result_rows
        changes = (change_of(p, bool(g), utc(at), pos, eid, ch, utc(rec)) for p, g, at, pos, eid, ch, rec in rows)
        return [c for c in changes if c is not None]

    def _traits(
        self, views: dict[str, ProfileView], owner: dict[str, str], params: dict[str, Any], where: str,
        precedence: dict[str, list[str]],
    ) -> None:
        """Each trait from the most trusted source that set it; among equals the latest event time wins."""
        candidates: dict[str, dict[str, list[tuple[str, datetime, int, Any]]]] = defaultdict(lambda: defaultdict(list))
        for anchor, key, source, raw, at, position in self.client.query(
            f"SELECT anchor, kv.1 AS k, source, argMax(kv.2, (timestamp, position)), max(timestamp), max(position) "
            f"FROM {self.db}.events FINAL ARRAY JOIN JSONExtractKeysAndValuesRaw(traits) AS kv "
            f"WHERE {where} AND type = 'identify' GROUP BY anchor, k, source",
            parameters=params,
        ).result_rows:
            candidates[owner[anchor]][key].append((source, utc(at), position, raw))
        for pid, keys in candidates.items():
            v = views[pid]
            for key, options in keys.items():
                order = precedence.get(key) or precedence.get("*") or []
                rank = {source: i for i, source in enumerate(order)}
                source, at, _, raw = min(options, key=lambda o: (rank.get(o[0], len(order)), -o[1].timestamp(), -o[2]))
                v.traits[key] = orjson.loads(raw)
                v.trait_times[key] = at
                v.trait_sources[key] = source

    def _money(self, views: dict[str, ProfileView], owner: dict[str, str], params: dict[str, Any], known: str) -> None:
        """Orders and revenue per currency from the money movements (projections/money.py), as the KPIs count them.

        `known` limits time travel to events received by then, through their event ids.
        """
        scope = "anchor IN {anchors:Array(String)}"
        if known:
            scope += (f" AND event_id IN (SELECT event_id FROM {self.db}.events WHERE workspace_id = {{ws:String}} "
                      f"AND anchor IN {{anchors:Array(String)}} {known})")  # fmt: skip
        for anchor, currency, orders, gross, net, last in self.client.query(
            "SELECT anchor, currency, uniqExactIf(event_id, sign = 1), sumIf(amount, sign = 1), sum(net), "
            f"maxIf(timestamp, sign = 1) FROM {movements(self.db, scope)} GROUP BY anchor, currency",
            parameters=params,
        ).result_rows:
            v = views[owner[anchor]]
            if currency:  # an order sent without any amount counts as an order, in no currency
                v.revenue[currency] = v.revenue.get(currency, ZERO) + net
            if orders:
                v.orders_count += orders
                if currency:
                    v.order_counts[currency] = v.order_counts.get(currency, 0) + orders
                    v.order_revenue[currency] = v.order_revenue.get(currency, ZERO) + gross
                last = utc(last)
                v.last_order_at = last if v.last_order_at is None else max(v.last_order_at, last)

    def read_profiles(self, workspace_id: str, profile_ids: Iterable[str]) -> dict[str, ProfileView]:
        found: dict[str, ProfileView] = {}
        missing = []
        for pid in sorted(set(profile_ids)):
            cached = self.cache.profile(workspace_id, pid)
            if cached is None:
                missing.append(pid)
            elif cached[1] is not None:
                found[pid] = ProfileView.from_doc(cached[1])
        if missing:
            rows = self.client.query(
                f"SELECT toString(profile_id), doc, version, is_deleted FROM {self.db}.profiles "
                "WHERE workspace_id = {ws:String} AND profile_id IN {ids:Array(UUID)}",
                parameters={"ws": workspace_id, "ids": missing},
            ).result_rows
            found.update(self._latest(workspace_id, rows))
        return found

    def _latest(self, workspace_id: str, rows: Iterable[Sequence[Any]]) -> dict[str, ProfileView]:
        """The live profiles among stored `profiles` rows (profile id, doc, version, is_deleted, ...), cached.

        What FINAL answers, without its merge step: per profile the row with the highest
        version (recompute times, never equal for one profile), none if that is a tombstone.
        Tombstones are cached with their version too.
        """
        latest: dict[str, tuple[int, Any]] = {}
        for pid, doc, version, deleted, *_ in rows:
            if pid not in latest or version > latest[pid][0]:
                latest[pid] = (version, None if deleted else doc)
        self.cache.put_profiles([(workspace_id, pid, version, doc) for pid, (version, doc) in latest.items()])
        return {pid: ProfileView.from_doc(doc) for pid, (_, doc) in latest.items() if doc is not None}

    def read_profile_of(self, workspace_id: str, ident: str) -> ProfileView | None:
        """The profile that owns an identifier (the hot path of the profile API), from the cache if it can."""
        owner = self.cache.owner(workspace_id, ident)
        if owner is not None:
            return self.read_profile(workspace_id, owner)
        writes = self.cache.owner_writes
        # One round trip: the owner and its position (one read of identity_history), the owner's rows.
        rows = self.client.query(
            f"WITH (SELECT (argMax(profile_id, position), max(position)) FROM {self.db}.identity_history "
            "WHERE workspace_id = {ws:String} AND identifier = {ident:String}) AS owner "
            f"SELECT toString(profile_id), doc, version, is_deleted, owner.2 FROM {self.db}.profiles "
            "WHERE workspace_id = {ws:String} AND profile_id = owner.1",
            parameters={"ws": workspace_id, "ident": ident},
        ).result_rows
        if not rows:
            return None  # nobody owns it, or the owner's profile is not written yet
        self.cache.fill_owner(workspace_id, ident, rows[0][0], rows[0][4], writes)
        return self._latest(workspace_id, rows).get(rows[0][0])

    def read_profile(self, workspace_id: str, profile_id: str) -> ProfileView | None:
        return self.read_profiles(workspace_id, [profile_id]).get(profile_id)

    def find_profiles(
        self, workspace_id: str, traits: dict[str, list[str]], limit: int, after: str | None = None
    ) -> list[ProfileView]:
        """Profiles whose traits match (each trait: any of the given raw JSON values), by profile id."""
        conditions, params = [], {"ws": workspace_id, "limit": limit, "after": after or ""}
        for i, (key, raws) in enumerate(sorted(traits.items())):
            conditions.append(f"traits[{{k{i}:String}}] IN {{v{i}:Array(String)}}")
            params[f"k{i}"], params[f"v{i}"] = key, raws
        where = " AND ".join(conditions) or "1"
        rows = self.client.query(
            f"SELECT doc FROM {self.db}.profiles FINAL "
            f"WHERE workspace_id = {{ws:String}} AND toString(profile_id) > {{after:String}} AND {where} "
            "ORDER BY toString(profile_id) LIMIT {limit:UInt32}",
            parameters=params,
        ).result_rows
        return [ProfileView.from_doc(row[0]) for row in rows]

    def rfm_boundaries(self, workspace_id: str) -> dict[str, Any]:
        return rfm_boundaries(self.client, self.db, workspace_id)

    def timeline(
        self,
        workspace_id: str,
        anchors: list[str],
        limit: int,
        before: tuple[datetime, str] | None = None,
        types: list[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        as_of: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Events anchored on a profile's identifiers, newest first, keyset-paginated and filtered."""
        conditions = ["workspace_id = {ws:String}", "anchor IN {anchors:Array(String)}"]
        params: dict[str, Any] = {"ws": workspace_id, "anchors": anchors, "limit": limit}
        if before is not None:
            conditions.append("(timestamp, event_id) < ({bt:DateTime64(3, 'UTC')}, {bid:UUID})")
            params.update(bt=before[0], bid=before[1])
        if types:
            conditions.append("(type IN {types:Array(String)} OR event IN {types:Array(String)})")
            params["types"] = types
        if since is not None:
            conditions.append("timestamp >= {since:DateTime64(3, 'UTC')}")
            params["since"] = since
        if until is not None:
            conditions.append("timestamp < {until:DateTime64(3, 'UTC')}")
            params["until"] = until
        if as_of is not None:
            conditions.append("received_at <= {as_of:DateTime64(3, 'UTC')}")
            params["as_of"] = as_of
        result = self.client.query(
            f"SELECT toString(event_id) AS id, message_id, type, event, name, source, anchor, timestamp, "
            f"received_at, position, properties, traits, context, user_id, anonymous_id "
            f"FROM {self.db}.events FINAL WHERE {' AND '.join(conditions)} "
            "ORDER BY timestamp DESC, event_id DESC LIMIT {limit:UInt32}",
            parameters=params,
        )
        return [dict(zip(result.column_names, row)) for row in result.result_rows]

    def table_snapshot(self, table: str, columns: str, order_by: str, where: str = "1") -> list[tuple[Any, ...]]:
        """All rows of a table as exact reads see them (used to compare a live run with a rebuild)."""
        return [tuple(r) for r in self.client.query(
            f"SELECT {columns} FROM {self.db}.{table} FINAL WHERE {where} ORDER BY {order_by}"
        ).result_rows]  # fmt: skip
