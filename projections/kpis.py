"""KPI reads and writes over `kpi_facts` and `activity_days` (see migrations/0002_kpis.sql).

Every read is exact with redelivered rows present: sums read with FINAL, and the
rest use aggregates a duplicate cannot move (uniqExact, min, max, argMax,
windowFunnel), which skips FINAL's cost. Reads group by event time (late events
land in their own day) and resolve people, where a KPI counts people, through
the current owner of each fact's anchor (merged profiles count once). User
input reaches ClickHouse only as server-side parameters; column and function
names come from the fixed lists below.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Iterator, Sequence
from uuid import UUID

import orjson

from domain.crm import Fact
from domain.errors import Invalid
from domain.kpis import CATALOGUE, FACT_DIMENSIONS
from domain.identity import IdentityRules, LifecycleThresholds
from domain.times import parse_day, utc
from domain.traits import INTENT_EVENTS, lifecycle_stage, rfm
from projections.erasure import KPI_TABLES, erase_rows
from projections.money import movements
from projections.rfm import buyer_groups, rfm_boundaries

# total: one period, the whole range, labelled by its first day (a headline number: ratios and means over
# the range, not sums of daily ones).
GRANULARITIES = {"day": "toDate", "week": "toMonday", "month": "toStartOfMonth", "total": ""}
_ZERO_UUID = "toUUID('00000000-0000-0000-0000-000000000000')"
_GENERATIONS: dict[str, int] = defaultdict(int)  # per database, see KpiStore.generation
_GENERATION_LOCK = threading.Lock()
_T = "DateTime64(3, 'UTC')"


FACT_COLUMNS = [
    "workspace_id", "fact_id", "event_id", "position", "anchor", "profile_id", "kind", "timestamp", "entity_id",
    "amount", "has_amount", "currency", "quantity", "probability", "stage", "status", "csat", "nps", "complaint",
    "channel", "campaign", "product", "owner", "category", "priority", "period_start", "period_end",
]  # fmt: skip


def fact_rows(
    facts: Sequence[Fact], *, workspace_id: str, event_id: str, position: int, anchor: str, profile_id: str,
    timestamp: datetime,
) -> list[list[Any]]:
    """`kpi_facts` rows (in FACT_COLUMNS order) of one event's facts (domain.crm.facts_of)."""
    event, profile = UUID(event_id), UUID(profile_id)
    rows = []
    for f in facts:
        rows.append([workspace_id, f.fact_id, event, position, anchor, profile, f.kind, timestamp, f.entity_id,
                     f.amount, int(f.has_amount), f.currency, f.quantity, f.probability, f.stage, f.status, f.csat,
                     f.nps, int(f.complaint), f.channel, f.campaign, f.product, f.owner, f.category, f.priority,
                     f.period_start, f.period_end])  # fmt: skip
    return rows


class KpiQueryError(Invalid):
    """A KPI request that cannot be answered as asked (the message says what to change)."""

    code = "invalid_kpi_query"


class UnknownKpi(KpiQueryError):
    """No KPI of that name in the catalogue."""

    kind = "not_found"
    code = "unknown_kpi"


@dataclass
class KpiQuery:
    workspace_id: str
    start: datetime
    end: datetime  # exclusive
    granularity: str = "day"
    by: str | None = None
    filters: dict[str, str] = field(default_factory=dict)
    within_days: float = 7.0
    split: datetime | None = None  # with granularity total: two periods, [start, split) and [split, end)

    def periods(self) -> list[tuple[date, datetime, datetime]]:
        """(label, start, end) of every period overlapping [start, end), clipped to it."""
        if self.granularity == "total":
            if self.split is not None:
                return [(self.start.date(), self.start, self.split), (self.split.date(), self.split, self.end)]
            return [(self.start.date(), self.start, self.end)] if self.start < self.end else []
        out = []
        label = _period_start(self.start.date(), self.granularity)
        while True:
            nxt = _next_period(label, self.granularity)
            lo = max(self.start, _midnight(label))
            hi = min(self.end, _midnight(nxt))
            if lo >= self.end:
                break
            out.append((label, lo, hi))
            label = nxt
        return out


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


def _period_start(d: date, granularity: str) -> date:
    if granularity == "week":
        return d - timedelta(days=d.weekday())
    if granularity == "month":
        return d.replace(day=1)
    return d


def _next_period(d: date, granularity: str) -> date:
    if granularity == "week":
        return d + timedelta(days=7)
    if granularity == "month":
        return (d.replace(day=28) + timedelta(days=4)).replace(day=1)
    return d + timedelta(days=1)


def _num(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and value != value:  # NaN from 0/0: no answers in the period
        return None
    return value


def _ratio(numerator: Any, denominator: Any) -> float | None:
    return None if not denominator else float(numerator) / float(denominator)


CSAT_SCORES = range(1, 6)
NPS_SCORES = range(0, 11)


def _counts_per_score(column: str, scores: range) -> str:
    """An array of the answers per score, every score in it (a score nobody gave counts 0)."""
    return "[" + ", ".join(f"countIf({column} = {s})" for s in scores) + "]"


def _distribution(scores: range, counts: Sequence[int]) -> dict[str, int]:
    return {str(s): int(n) for s, n in zip(scores, counts)}


Rows = list[dict[str, Any]]
_COMPUTED_BY: dict[str, Callable[["KpiStore", KpiQuery], Rows]] = {}
"""The KPI registry: catalogue name → the method that computes it (checked against the catalogue below)."""


def _computes(name: str) -> Callable[[Callable[["KpiStore", KpiQuery], Rows]], Callable[["KpiStore", KpiQuery], Rows]]:
    def register(method: Callable[["KpiStore", KpiQuery], Rows]) -> Callable[["KpiStore", KpiQuery], Rows]:
        assert name in CATALOGUE, f"{name} is computed but not in domain/kpis.py's catalogue"
        _COMPUTED_BY[name] = method
        return method

    return register


class KpiStore:
    """Writes facts and activity; answers every KPI in domain.kpis.CATALOGUE."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.db = database

    def erase(self, workspace_id: str, profile_ids: list[str]) -> None:
        """Delete the rows of erased profiles (a regulation's delete) from this store's tables."""
        with self._writing():
            erase_rows(self.client, self.db, KPI_TABLES, workspace_id, profile_ids)

    # Writes ----------------------------------------------------------------------------------

    def generation(self) -> int:
        """Moves before and after every write to this database's KPI tables (by any KpiStore of this process):
        an answer computed at one generation is current while the generation stays."""
        return _GENERATIONS[self.db]

    @contextmanager
    def _writing(self) -> Iterator[None]:
        # Before: a read that starts now is not taken for one from before the write. After: neither is a read
        # that ran while the rows were landing.
        with _GENERATION_LOCK:
            _GENERATIONS[self.db] += 1
        try:
            yield
        finally:
            with _GENERATION_LOCK:
                _GENERATIONS[self.db] += 1

    def insert_facts(self, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._writing():
                self.client.insert(f"{self.db}.kpi_facts", list(rows), column_names=FACT_COLUMNS)

    def insert_moves(self, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._writing():
                self.client.insert(f"{self.db}.identity_moves", list(rows),
                                   column_names=["workspace_id", "identifier", "profile_id", "position"])  # fmt: skip

    def insert_activity(self, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._writing():
                self.client.insert(f"{self.db}.activity_days", list(rows),
                                   column_names=["workspace_id", "anchor", "profile_id", "day", "position"])  # fmt: skip

    # SQL building blocks ---------------------------------------------------------------------

    def owners(self) -> str:
        """Current owners of the identifiers that moved; any other anchor's owner is the fact's profile_id."""
        return (f"(SELECT identifier AS anchor, argMax(profile_id, position) AS owner FROM {self.db}.identity_moves "
                "WHERE workspace_id = {ws:String} GROUP BY identifier)")  # fmt: skip

    def _facts(
        self, kinds: Sequence[str], q: KpiQuery | None, span: str = "range", end: str = "end",
        exact: bool = False, people: bool = False,
    ) -> str:
        """Facts of `kinds`; `span` is range ([start, end)), until (before end) or all.

        `exact` reads with FINAL (for sums and counts a redelivered row would move);
        `people` adds `person`, the current owner of the fact's anchor.
        """  # fmt: skip
        where = ["workspace_id = {ws:String}", "kind IN (" + ", ".join(f"'{k}'" for k in kinds) + ")"]
        if span == "range":
            where.append(f"timestamp >= {{start:{_T}}} AND timestamp < {{{end}:{_T}}}")
        elif span == "until":
            where.append(f"timestamp < {{{end}:{_T}}}")
        if q is not None:
            where += [f"{dim} = {{f_{dim}:String}}" for dim in q.filters]
        facts = f"(SELECT * FROM {self.db}.kpi_facts {'FINAL' if exact else ''} WHERE {' AND '.join(where)})"
        if not people:
            return facts
        return (f"(SELECT f.*, if(o.owner = {_ZERO_UUID}, f.profile_id, o.owner) AS person "
                f"FROM {facts} AS f LEFT JOIN {self.owners()} AS o ON f.anchor = o.anchor)")  # fmt: skip

    def _active(self, until: str = "end") -> str:
        """(day, person) of every active anchor-day before `until`; duplicates are harmless to its readers."""
        return (f"(SELECT a.day AS day, if(o.owner = {_ZERO_UUID}, a.profile_id, o.owner) AS person "
                f"FROM (SELECT * FROM {self.db}.activity_days WHERE workspace_id = {{ws:String}} "
                f"AND day < toDate({{{until}:{_T}}})) AS a LEFT JOIN {self.owners()} AS o ON a.anchor = o.anchor)")

    def _params(self, q: KpiQuery, **extra: Any) -> dict[str, Any]:
        params: dict[str, Any] = {"ws": q.workspace_id, "start": q.start, "end": q.end}
        if q.split is not None:
            params["split"] = q.split
        params.update({f"f_{k}": v for k, v in q.filters.items()})
        params.update(extra)
        return params

    def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self.client.query(sql, parameters=params).result_rows

    @staticmethod
    def _period(q: KpiQuery, column: str = "timestamp") -> str:
        if q.granularity == "total":  # what precedes the range (spans that read until its end) stays apart
            def bound(name: str) -> str:  # a day column is compared by day, a time by its instant
                return f"toDate({{{name}:{_T}}})" if column == "day" else f"{{{name}:{_T}}}"

            label = f"toDate({{start:{_T}}})"
            if q.split is not None:
                label = f"if({column} < {bound('split')}, {label}, toDate({{split:{_T}}}))"
            return f"if({column} < {bound('start')}, toDate('1970-01-01'), {label})"
        return f"{GRANULARITIES[q.granularity]}({column})"

    @staticmethod
    def _group(q: KpiQuery) -> str:
        return q.by if q.by else "''"

    @staticmethod
    def _out(q: KpiQuery, period: Any, group: Any, **values: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"period": period.isoformat() if isinstance(period, (date, datetime)) else period}
        if q.by:
            row[q.by] = group
        row.update({k: _num(v) for k, v in values.items()})
        return row

    # The KPIs --------------------------------------------------------------------------------

    def kpi(self, name: str, q: KpiQuery) -> list[dict[str, Any]]:
        """The rows of one KPI (validated name, dimension and filters)."""
        kpi = CATALOGUE.get(name)
        if kpi is None:
            raise UnknownKpi(f"unknown KPI {name!r}; the KPI catalogue lists them")
        if kpi.shape == "funnel":
            raise KpiQueryError("conversion_rate is a funnel: ask for it with its steps and window", code="funnel_kpi")
        for dim in ([q.by] if q.by else []) + list(q.filters):
            if dim not in kpi.dimensions:
                allowed = ", ".join(kpi.dimensions) or "none"
                raise KpiQueryError(f"{name} cannot be sliced by {dim!r}; its dimensions: {allowed}")
        if q.granularity not in GRANULARITIES:
            raise KpiQueryError(f"granularity must be one of {', '.join(GRANULARITIES)}")
        return _COMPUTED_BY[name](self, q)

    @_computes("csat")
    def _kpi_csat(self, q: KpiQuery) -> list[dict[str, Any]]:
        sql = (f"SELECT {self._period(q)} AS p, {self._group(q)} AS g, countIf(csat >= 4), count(), avg(csat), "
               f"{_counts_per_score('csat', CSAT_SCORES)} FROM {self._facts(['feedback'], q, exact=True)} "
               "WHERE csat IS NOT NULL GROUP BY p, g ORDER BY p, g")  # fmt: skip
        return [self._out(q, p, g, value=_ratio(good, n), mean=mean, satisfied=good, answers=n,
                          distribution=_distribution(CSAT_SCORES, counts))
                for p, g, good, n, mean, counts in self._rows(sql, self._params(q))]  # fmt: skip

    @_computes("nps")
    def _kpi_nps(self, q: KpiQuery) -> list[dict[str, Any]]:
        sql = (f"SELECT {self._period(q)} AS p, {self._group(q)} AS g, countIf(nps >= 9), countIf(nps <= 6), count(), "
               f"{_counts_per_score('nps', NPS_SCORES)} FROM {self._facts(['feedback'], q, exact=True)} "
               "WHERE nps IS NOT NULL GROUP BY p, g ORDER BY p, g")  # fmt: skip
        return [self._out(q, p, g, value=100.0 * (pro - det) / n, promoters=pro, detractors=det, answers=n,
                          distribution=_distribution(NPS_SCORES, counts))
                for p, g, pro, det, n, counts in self._rows(sql, self._params(q))]  # fmt: skip

    @_computes("active_customers")
    def _kpi_active_customers(self, q: KpiQuery) -> list[dict[str, Any]]:
        sql = (f"SELECT {self._period(q, 'day')} AS p, uniqExact(person) FROM {self._active()} "
               f"WHERE day >= toDate({{start:{_T}}}) GROUP BY p ORDER BY p")
        return [self._out(q, p, None, value=n) for p, n in self._rows(sql, self._params(q))]

    def _retention(self, q: KpiQuery) -> list[tuple[date, int, int]]:
        if q.granularity == "total":
            raise KpiQueryError("retention compares each period with the next: ask by day, week or month",
                                code="invalid_kpi_query")  # fmt: skip
        step = {"day": "period + 1", "week": "period + 7", "month": "addMonths(period, 1)"}[q.granularity]
        periods = q.periods()
        after = _midnight(_next_period(periods[-1][0], q.granularity)) if periods else q.end
        sql = (f"SELECT period, count(), countIf(has(ps, {step})) FROM (SELECT person, "
               f"groupUniqArray({self._period(q, 'day')}) AS ps FROM {self._active('after')} "
               f"WHERE day >= toDate({{start:{_T}}}) GROUP BY person) ARRAY JOIN ps AS period "
               f"WHERE period < toDate({{end:{_T}}}) GROUP BY period ORDER BY period")
        return [(p, n, kept) for p, n, kept in self._rows(sql, self._params(q, after=after))]

    @_computes("retention_rate")
    def _kpi_retention_rate(self, q: KpiQuery) -> list[dict[str, Any]]:
        return [self._out(q, p, None, value=_ratio(kept, n), active=n, retained=kept) for p, n, kept in self._retention(q)]

    @_computes("churn_rate")
    def _kpi_churn_rate(self, q: KpiQuery) -> list[dict[str, Any]]:
        return [self._out(q, p, None, value=1 - kept / n, active=n, churned=n - kept) for p, n, kept in self._retention(q)]

    @_computes("revenue")
    def _kpi_revenue(self, q: KpiQuery) -> list[dict[str, Any]]:
        if q.by == "product" or "product" in q.filters:
            sql = (f"SELECT {self._period(q)} AS p, {self._group(q)} AS g, currency, sum(amount) "
                   f"FROM {self._facts(['order_line'], q, exact=True)} GROUP BY p, g, currency ORDER BY p, g, currency")
            return [self._out(q, p, g, currency=c, value=v, gross=v, refunds=0)
                    for p, g, c, v in self._rows(sql, self._params(q))]  # fmt: skip
        return [self._out(q, p, g, currency=c, value=gross - refunds, gross=gross, refunds=refunds)
                for p, g, c, gross, refunds in self._gross_and_refunds(q)]  # fmt: skip

    def _gross_and_refunds(self, q: KpiQuery, span: str = "range") -> list[tuple[Any, ...]]:
        """(period, group, currency, order revenue, refunds) by event time from the money movements
        (projections/money.py); `span` is range (the query's period, dimension and filters) or until
        (everything before the end, unsliced)."""
        scope = f"timestamp < {{end:{_T}}}" + (f" AND timestamp >= {{start:{_T}}}" if span == "range" else "")
        sliced = span == "range"
        where = " AND ".join(f"{dim} = {{f_{dim}:String}}" for dim in q.filters) if sliced and q.filters else "1"
        group = q.by if q.by and sliced else "''"
        sql = (f"SELECT {self._period(q)} AS p, {group} AS g, currency AS c, sumIf(amount, sign = 1), "
               f"sumIf(amount, sign = -1) FROM {movements(self.db, scope)} WHERE {where} AND currency != '' "
               "GROUP BY p, g, c ORDER BY p, g, c")  # fmt: skip
        return self._rows(sql, self._params(q))

    @_computes("orders")
    def _kpi_orders(self, q: KpiQuery) -> list[dict[str, Any]]:
        kind = "order_line" if q.by == "product" or "product" in q.filters else "order"
        sql = (f"SELECT {self._period(q)} AS p, {self._group(q)} AS g, uniqExact(event_id) "
               f"FROM {self._facts([kind], q)} GROUP BY p, g ORDER BY p, g")
        return [self._out(q, p, g, value=n) for p, g, n in self._rows(sql, self._params(q))]

    @_computes("average_order_value")
    def _kpi_average_order_value(self, q: KpiQuery) -> list[dict[str, Any]]:
        sql = (f"SELECT {self._period(q)} AS p, {self._group(q)} AS g, currency, sum(amount), uniqExact(event_id) "
               f"FROM {self._facts(['order'], q, exact=True)} GROUP BY p, g, currency ORDER BY p, g, currency")
        return [self._out(q, p, g, currency=c, value=Decimal(total) / n, revenue=total, orders=n)
                for p, g, c, total, n in self._rows(sql, self._params(q))]  # fmt: skip

    @_computes("repeat_purchase_rate")
    def _kpi_repeat_purchase_rate(self, q: KpiQuery) -> list[dict[str, Any]]:
        sql = (f"SELECT p, g, countIf(n >= 2), count() FROM (SELECT {self._period(q)} AS p, {self._group(q)} AS g, "
               f"person, uniqExact(event_id) AS n FROM {self._facts(['order'], q, people=True)} GROUP BY p, g, person) "
               "GROUP BY p, g ORDER BY p, g")  # fmt: skip
        return [self._out(q, p, g, value=_ratio(repeat, n), repeat_buyers=repeat, buyers=n)
                for p, g, repeat, n in self._rows(sql, self._params(q))]  # fmt: skip

    def _first_orders(self, q: KpiQuery, by: str | None) -> dict[tuple[date, str], int]:
        """New customers (people by their first order ever) per period and group, before the end."""
        group = f"argMin({by}, timestamp)" if by else "''"
        sql = (f"SELECT {self._period(q, 'first')} AS p, g, count() FROM (SELECT person, min(timestamp) AS first, "
               f"{group} AS g FROM {self._facts(['order'], None, span='until', people=True)} GROUP BY person) "
               "GROUP BY p, g")  # fmt: skip
        return {(p, g): n for p, g, n in self._rows(sql, self._params(q))}

    @_computes("customer_lifetime_value")
    def _kpi_customer_lifetime_value(self, q: KpiQuery) -> list[dict[str, Any]]:
        new = self._first_orders(q, None)
        revenue: dict[str, dict[date, Decimal]] = defaultdict(dict)
        for p, _, c, gross, refunds in self._gross_and_refunds(q, span="until"):
            revenue[c][p] = gross - refunds
        out = []
        for label, _, _ in q.periods():
            customers = sum(n for (p, _), n in new.items() if p <= label)
            for c in sorted(revenue):
                total = sum((v for p, v in revenue[c].items() if p <= label), Decimal(0))
                out.append(self._out(q, label, None, currency=c, value=_ratio(total, customers), revenue=total,
                                     customers=customers))  # fmt: skip
        return out

    @_computes("customer_acquisition_cost")
    def _kpi_customer_acquisition_cost(self, q: KpiQuery) -> list[dict[str, Any]]:
        new = self._first_orders(q, q.by)
        sql = (f"SELECT {self._period(q)} AS p, {self._group(q)} AS g, currency, sum(amount) "
               f"FROM {self._facts(['cost'], q, exact=True)} GROUP BY p, g, currency ORDER BY p, g, currency")
        return [self._out(q, p, g, currency=c, value=_ratio(cost, new.get((p, g), 0)), cost=cost,
                          new_customers=new.get((p, g), 0))
                for p, g, c, cost in self._rows(sql, self._params(q))]  # fmt: skip

    @_computes("rfm_tiers")
    def _kpi_rfm_tiers(self, q: KpiQuery) -> list[dict[str, Any]]:
        boundaries = rfm_boundaries(self.client, self.db, q.workspace_id)
        tiers: dict[str, int] = defaultdict(int)
        for age, orders, revenue, n in buyer_groups(self.client, self.db, q.workspace_id, boundaries):
            scores = rfm(age, orders, revenue, boundaries)
            if scores is not None:
                tiers[str(scores["tier"])] += n
        total = sum(tiers.values())
        return [{"tier": t, "value": n, "share": n / total} for t, n in sorted(tiers.items())]

    @_computes("lifecycle_stages")
    def _kpi_lifecycle_stages(self, q: KpiQuery) -> list[dict[str, Any]]:
        # The stage is domain.traits.lifecycle_stage, the function the profile document calls, over the
        # profiles table's live rows (a merged-away or erased profile is a deleted row). ClickHouse groups
        # the profiles that function cannot tell apart first, and the function sees one of each group: the
        # same identifier types and intent events, orders up to the repeat threshold, and a last order on the
        # same side of the at-risk and churned cut-offs (a buyer a row of their own made 53,000 rows at
        # 80,000 profiles: most of the answer's time).
        thresholds = self._lifecycle_thresholds(q.workspace_id)
        now = datetime.now(timezone.utc)
        sql = ("SELECT arraySort(arrayDistinct(arrayMap(i -> splitByChar(':', i)[1], identifiers))) AS types, "
               "least(orders_count, {repeat:UInt64}) AS orders, max(last_order_at), "
               "arraySort(arrayFilter(kv -> has({intent:Array(String)}, kv.1) "
               "AND kv.2 > 0, arrayZip(mapKeys(track_counts), mapValues(track_counts)))) AS intent, count() "
               f"FROM {self.db}.profiles FINAL WHERE workspace_id = {{ws:String}} AND is_deleted = 0 "
               "GROUP BY types, orders, last_order_at IS NULL, last_order_at <= {churned:DateTime64(6, 'UTC')}, "
               "last_order_at <= {at_risk:DateTime64(6, 'UTC')}, intent")  # fmt: skip
        params = {"ws": q.workspace_id, "intent": sorted(INTENT_EVENTS), "repeat": thresholds.repeat_orders,
                  "churned": now - timedelta(days=thresholds.churned_days),
                  "at_risk": now - timedelta(days=thresholds.at_risk_days)}  # fmt: skip
        stages: dict[str, int] = defaultdict(int)
        for types, orders, last_order_at, intent, n in self._rows(sql, params):
            last = None if last_order_at is None else utc(last_order_at)
            stages[lifecycle_stage(set(types), orders, last, dict(intent), now, thresholds)] += n
        total = sum(stages.values())
        return [{"stage": stage, "value": n, "share": n / total} for stage, n in sorted(stages.items())]

    def _lifecycle_thresholds(self, workspace_id: str) -> LifecycleThresholds:
        """The workspace's lifecycle rules, as the log last recorded them (the defaults until it sets some)."""
        rows = self._rows(f"SELECT argMax(rules, version) FROM {self.db}.workspace_rules "
                          "WHERE workspace_id = {ws:String} GROUP BY workspace_id", {"ws": workspace_id})  # fmt: skip
        return IdentityRules.model_validate(orjson.loads(rows[0][0]) if rows else {}).lifecycle

    @_computes("leads")
    def _kpi_leads(self, q: KpiQuery) -> list[dict[str, Any]]:
        sql = (f"SELECT {self._period(q)} AS p, {self._group(q)} AS g, uniqExact(entity_id) "
               f"FROM {self._facts(['lead'], q)} GROUP BY p, g ORDER BY p, g")
        return [self._out(q, p, g, value=n) for p, g, n in self._rows(sql, self._params(q))]

    _STATE = "status, amount, probability, currency, owner, channel, campaign, category"

    def _opportunities(self, q: KpiQuery) -> str:
        """Each opportunity's latest state before the end, with its first and closing times."""
        names = self._STATE.split(", ")
        fields = ", ".join(f"s.{i + 1} AS {n}" for i, n in enumerate(names))
        where = " AND ".join(f"{dim} = {{f_{dim}:String}}" for dim in q.filters) or "1"
        return (f"(SELECT entity_id, created, closed, {fields} FROM (SELECT entity_id, argMax(tuple({self._STATE}), "
                f"(timestamp, position)) AS s, min(timestamp) AS created, max(timestamp) AS closed FROM "
                f"{self._facts(['opportunity'], None, span='until')} GROUP BY entity_id) "
                f"WHERE {where})")  # fmt: skip

    def _running(
        self, q: KpiQuery, states: str, value: str, is_open: str, group: str, currency: str, where: str
    ) -> dict[tuple[date, str, str], tuple[float, int]]:
        """(value, count) open at the end of each period, from `states`: one row per entity with `evs`,
        its state events sorted by (timestamp, position); the other arguments are expressions of `evs[i]`.

        Each state holds from its event to the entity's next event: it adds its value at
        its own time and takes it away at the next one's. Summing these changes up to a
        period's end gives what was open then, in one pass over the state events
        (a duplicate adds and takes away the same value at the same time).
        """
        sql = (f"SELECT if(t < {{start:{_T}}}, toDate('1970-01-01'), {self._period(q, 't')}) AS b, g, c, "
               "sum(dv), sum(dn) FROM (SELECT if(sign = 1, evs[i].1, evs[i + 1].1) AS t, "
               f"sign * {value} AS dv, sign * toInt64({is_open}) AS dn, {group} AS g, {currency} AS c "
               f"FROM {states} ARRAY JOIN arrayEnumerate(evs) AS i ARRAY JOIN [1, -1] AS sign "
               f"WHERE (sign = 1 OR i < length(evs)) AND {where}) GROUP BY b, g, c")  # fmt: skip
        changes: dict[tuple[str, str], list[tuple[date, float, int]]] = defaultdict(list)
        for b, g, c, dv, dn in self._rows(sql, self._params(q)):
            changes[(g, c)].append((b, float(dv), int(dn)))
        out: dict[tuple[date, str, str], tuple[float, int]] = {}
        for (g, c), deltas in changes.items():
            for label, _, _ in q.periods():
                v = sum(dv for b, dv, _ in deltas if b <= label)
                n = sum(dn for b, _, dn in deltas if b <= label)
                out[(label, g, c)] = (round(v, 6), n)
        return out

    @_computes("pipeline_value")
    def _kpi_pipeline_value(self, q: KpiQuery) -> list[dict[str, Any]]:
        names = self._STATE.split(", ")

        def field(name: str) -> str:  # evs[i] is (timestamp, position, value if open, open, *state)
            return f"evs[i].{5 + names.index(name)}"

        states = (f"(SELECT entity_id, arraySort(x -> (x.1, x.2), groupArray(tuple(timestamp, position, "
                  f"if(status = 'open', toFloat64(amount) * probability, 0.), status = 'open', {self._STATE}))) AS evs "
                  f"FROM {self._facts(['opportunity'], None, span='until')} GROUP BY entity_id)")  # fmt: skip
        where = " AND ".join(f"{field(dim)} = {{f_{dim}:String}}" for dim in q.filters) or "1"
        running = self._running(q, states, "evs[i].3", "evs[i].4", field(q.by) if q.by else "''",
                                field("currency"), where)  # fmt: skip
        return [self._out(q, label, g, currency=c, value=v, open_opportunities=n)
                for (label, g, c), (v, n) in sorted(running.items()) if n > 0]  # fmt: skip

    def _closed(self, q: KpiQuery, extra: str) -> list[tuple[Any, ...]]:
        sql = (f"SELECT {self._period(q, 'closed')} AS p, {self._group(q)} AS g, {extra} FROM {self._opportunities(q)} "
               f"WHERE closed >= {{start:{_T}}} AND status IN ('won', 'lost') GROUP BY p, g ORDER BY p, g")  # fmt: skip
        return self._rows(sql, self._params(q))

    @_computes("won_revenue")
    def _kpi_won_revenue(self, q: KpiQuery) -> list[dict[str, Any]]:
        sql = (f"SELECT {self._period(q, 'closed')} AS p, {self._group(q)} AS g, currency, sum(amount), count() "
               f"FROM {self._opportunities(q)} WHERE closed >= {{start:{_T}}} AND status = 'won' "
               "GROUP BY p, g, currency ORDER BY p, g, currency")  # fmt: skip
        return [self._out(q, p, g, currency=c, value=v, won=n) for p, g, c, v, n in self._rows(sql, self._params(q))]

    @_computes("win_rate")
    def _kpi_win_rate(self, q: KpiQuery) -> list[dict[str, Any]]:
        return [self._out(q, p, g, value=_ratio(won, n), won=won, closed=n)
                for p, g, won, n in self._closed(q, "countIf(status = 'won'), count()")]  # fmt: skip

    @_computes("average_sales_cycle")
    def _kpi_average_sales_cycle(self, q: KpiQuery) -> list[dict[str, Any]]:
        rows = self._closed(q, "avgIf(dateDiff('second', created, closed) / 86400, status = 'won'), "
                               "countIf(status = 'won')")  # fmt: skip
        return [self._out(q, p, g, value=days, won=n) for p, g, days, n in rows if n]

    @_computes("sales_activities")
    def _kpi_sales_activities(self, q: KpiQuery) -> list[dict[str, Any]]:
        sql = (f"SELECT {self._period(q)} AS p, {self._group(q)} AS g, uniqExactIf(fact_id, kind = 'call'), "
               f"uniqExactIf(fact_id, kind = 'meeting') FROM {self._facts(['call', 'meeting'], q)} GROUP BY p, g ORDER BY p, g")
        return [self._out(q, p, g, value=calls + meetings, calls=calls, meetings=meetings)
                for p, g, calls, meetings in self._rows(sql, self._params(q))]  # fmt: skip

    @_computes("budget_attainment")
    def _kpi_budget_attainment(self, q: KpiQuery) -> list[dict[str, Any]]:
        where = "AND owner = {f_owner:String}" if "owner" in q.filters else ""
        targets = self._rows(
            f"SELECT t.1, t.2, t.3, t.4, t.5 FROM (SELECT argMax(tuple(owner, period_start, period_end, currency, "
            f"amount), (timestamp, position)) AS t FROM {self.db}.kpi_facts WHERE workspace_id = {{ws:String}} "
            f"AND kind = 'target' {where} GROUP BY entity_id) WHERE t.3 >= toDate({{start:{_T}}}) "
            f"AND t.2 < toDate({{end:{_T}}}) ORDER BY t.1, t.2",
            self._params(q),
        )  # fmt: skip
        everything = KpiQuery(q.workspace_id, q.start, datetime.max.replace(tzinfo=timezone.utc), q.granularity)
        won = self._rows(
            f"SELECT owner, currency, toDate(closed) AS d, sum(amount) FROM {self._opportunities(everything)} "
            "WHERE status = 'won' GROUP BY owner, currency, d",
            self._params(everything),
        )  # fmt: skip
        out = []
        for owner, lo, hi, currency, target in targets:
            achieved = sum((v for o, c, d, v in won if o == owner and c == currency and lo <= d <= hi), Decimal(0))
            out.append({"owner": owner, "period_start": lo.isoformat(), "period_end": hi.isoformat(),
                        "currency": currency, "target": _num(target), "won": _num(achieved),
                        "value": _ratio(achieved, target)})  # fmt: skip
        return out

    def _tickets(self, q: KpiQuery) -> str:
        """Per ticket: opened, first response and resolution times, and the opening's dimensions."""
        where = " AND ".join(f"{dim} = {{f_{dim}:String}}" for dim in q.filters) or "1"
        return (f"(SELECT * FROM (SELECT entity_id, minIf(timestamp, kind = 'ticket_opened') AS opened, "
                "arrayFilter(t -> t >= opened, groupArrayIf(timestamp, kind != 'ticket_opened')) AS replies, "
                "if(empty(replies), NULL, arrayMin(replies)) AS responded, "
                "maxIf(timestamp, kind = 'ticket_resolved') AS resolved, countIf(kind = 'ticket_resolved') AS n_resolved, "
                "argMinIf(channel, timestamp, kind = 'ticket_opened') AS channel, "
                "argMinIf(category, timestamp, kind = 'ticket_opened') AS category, "
                "argMinIf(priority, timestamp, kind = 'ticket_opened') AS priority, "
                "argMax(owner, (timestamp, position)) AS owner "
                f"FROM {self._facts(['ticket_opened', 'ticket_assigned', 'ticket_resolved'], None, span='until')} "
                f"GROUP BY entity_id HAVING countIf(kind = 'ticket_opened') > 0) WHERE {where})")  # fmt: skip

    @_computes("first_response_time")
    def _kpi_first_response_time(self, q: KpiQuery) -> list[dict[str, Any]]:
        sql = (f"SELECT {self._period(q, 'opened')} AS p, {self._group(q)} AS g, "
               "avgIf(dateDiff('millisecond', opened, responded) / 3600000, responded IS NOT NULL), "
               f"countIf(responded IS NOT NULL), count() FROM {self._tickets(q)} WHERE opened >= {{start:{_T}}} "
               "GROUP BY p, g ORDER BY p, g")  # fmt: skip
        return [self._out(q, p, g, value=hours if answered else None, responded=answered, opened=n)
                for p, g, hours, answered, n in self._rows(sql, self._params(q))]  # fmt: skip

    @_computes("resolution_time")
    def _kpi_resolution_time(self, q: KpiQuery) -> list[dict[str, Any]]:
        sql = (f"SELECT {self._period(q, 'resolved')} AS p, {self._group(q)} AS g, "
               f"avg(dateDiff('millisecond', opened, resolved) / 3600000), count() FROM {self._tickets(q)} "
               f"WHERE n_resolved > 0 AND resolved >= {{start:{_T}}} AND resolved >= opened "
               "GROUP BY p, g ORDER BY p, g")  # fmt: skip
        return [self._out(q, p, g, value=hours, resolved=n) for p, g, hours, n in self._rows(sql, self._params(q))]

    @_computes("open_ticket_backlog")
    def _kpi_open_ticket_backlog(self, q: KpiQuery) -> list[dict[str, Any]]:
        # A ticket is open from an opening to the next resolution (a later opening reopens it);
        # its dimensions are those of its first opening, its owner the latest assignee.
        dims = ("argMinIf(channel, timestamp, kind = 'ticket_opened') AS channel, argMinIf(category, timestamp, "
                "kind = 'ticket_opened') AS category, argMinIf(priority, timestamp, kind = 'ticket_opened') AS "
                "priority, argMax(owner, (timestamp, position)) AS owner")  # fmt: skip
        steps = ["ticket_opened", "ticket_assigned", "ticket_resolved"]
        states = (f"(SELECT entity_id, arraySort(x -> (x.1, x.2), groupArrayIf(tuple(timestamp, position, "
                  f"toFloat64(kind = 'ticket_opened'), kind = 'ticket_opened'), kind != 'ticket_assigned')) AS evs, "
                  f"{dims} FROM {self._facts(steps, None, span='until')} GROUP BY entity_id "
                  "HAVING countIf(kind = 'ticket_opened') > 0)")  # fmt: skip
        where = " AND ".join(f"{dim} = {{f_{dim}:String}}" for dim in q.filters) or "1"
        running = self._running(q, states, "evs[i].3", "evs[i].4", q.by or "''", "''", where)
        if not q.by:  # an empty backlog is a zero, not a missing point
            return [self._out(q, label, None, value=running.get((label, "", ""), (0, 0))[1])
                    for label, _, _ in q.periods()]  # fmt: skip
        return [self._out(q, label, g, value=n) for (label, g, _), (_, n) in sorted(running.items()) if n > 0]

    @_computes("complaints_per_1000_customers")
    def _kpi_complaints_per_1000_customers(self, q: KpiQuery) -> list[dict[str, Any]]:
        complaints = dict(self._rows(
            f"SELECT {self._period(q)} AS p, uniqExact(entity_id) FROM {self._facts(['ticket_opened'], q)} "
            "WHERE complaint = 1 GROUP BY p", self._params(q)))  # fmt: skip
        active = self._kpi_active_customers(q)
        return [self._out(q, row["period"], None, value=1000.0 * complaints.get(parse_day(row["period"]), 0)
                          / row["value"], complaints=complaints.get(parse_day(row["period"]), 0),
                          customers=row["value"]) for row in active]  # fmt: skip

    def _campaign(self, q: KpiQuery, kinds: list[str]) -> list[tuple[Any, ...]]:
        sql = (f"SELECT {self._period(q)} AS p, {self._group(q)} AS g, "
               + ", ".join(f"uniqExactIf((campaign, person), kind = '{k}')" for k in kinds)
               + f" FROM {self._facts(kinds, q, people=True)} GROUP BY p, g ORDER BY p, g")  # fmt: skip
        return self._rows(sql, self._params(q))

    @_computes("campaign_sent")
    def _kpi_campaign_sent(self, q: KpiQuery) -> list[dict[str, Any]]:
        sql = (f"SELECT {self._period(q)} AS p, {self._group(q)} AS g, uniqExact(fact_id) FROM {self._facts(['message_sent'], q)} "
               "GROUP BY p, g ORDER BY p, g")
        return [self._out(q, p, g, value=n) for p, g, n in self._rows(sql, self._params(q))]

    @_computes("campaign_open_rate")
    def _kpi_campaign_open_rate(self, q: KpiQuery) -> list[dict[str, Any]]:
        return [self._out(q, p, g, value=_ratio(opened, sent), opened=opened, sent=sent)
                for p, g, sent, opened in self._campaign(q, ["message_sent", "message_opened"])]  # fmt: skip

    @_computes("campaign_click_rate")
    def _kpi_campaign_click_rate(self, q: KpiQuery) -> list[dict[str, Any]]:
        return [self._out(q, p, g, value=_ratio(clicked, sent), clicked=clicked, sent=sent)
                for p, g, sent, clicked in self._campaign(q, ["message_sent", "message_clicked"])]  # fmt: skip

    @_computes("campaign_conversion_rate")
    def _kpi_campaign_conversion_rate(self, q: KpiQuery) -> list[dict[str, Any]]:
        window = int(q.within_days * 86400)
        orders = f"(SELECT person, timestamp AS ordered FROM {self._facts(['order'], None, end='end_orders', people=True)})"
        group = f"c.{q.by}" if q.by else "''"
        sql = (f"SELECT {self._period(q, 'c.timestamp')} AS p, {group} AS g, "
               "uniqExact((c.campaign, c.person)), uniqExactIf((c.campaign, c.person), o.ordered >= c.timestamp AND "
               f"o.ordered <= c.timestamp + toIntervalSecond({window})) FROM {self._facts(['message_clicked'], q, people=True)} AS c "
               f"LEFT JOIN {orders} AS o ON c.person = o.person GROUP BY p, g ORDER BY p, g")  # fmt: skip
        params = self._params(q, end_orders=q.end + timedelta(seconds=window))
        return [self._out(q, p, g, value=_ratio(converted, clicked), clicked=clicked, converted=converted)
                for p, g, clicked, converted in self._rows(sql, params)]  # fmt: skip

    # Funnels and cohorts ---------------------------------------------------------------------

    def funnel(
        self, workspace_id: str, steps: list[dict[str, Any]], within_seconds: int, start: datetime, end: datetime,
    ) -> list[int]:
        """People reaching each step in order within the window from their first step in [start, end).

        A step matches an event `type` (page, track, ...), a track `event` name and
        property equalities. windowFunnel counts each person's longest ordered chain.
        """
        conditions, params = [], {"ws": workspace_id, "start": start, "end": end}
        for i, step in enumerate(steps):
            parts = []
            if step.get("type"):
                parts.append(f"type = {{s{i}_type:String}}")
                params[f"s{i}_type"] = step["type"]
            if step.get("event"):
                parts.append(f"event = {{s{i}_event:String}}")
                params[f"s{i}_event"] = step["event"]
            for j, (key, value) in enumerate(sorted((step.get("where") or {}).items())):
                parts.append(f"JSONExtractRaw(properties, {{s{i}_k{j}:String}}) = {{s{i}_v{j}:String}}")
                params[f"s{i}_k{j}"], params[f"s{i}_v{j}"] = key, _json_scalar(value)
            conditions.append("(" + " AND ".join(parts) + ")")
        # No FINAL: a duplicated event cannot change the longest ordered chain windowFunnel finds.
        # properties is a wide JSON column: read it only when a step filters on it.
        props = any(step.get("where") for step in steps)
        events = (f"(SELECT timestamp, type, event, {'properties, ' if props else ''}anchor, profile_id "
                  f"FROM {self.db}.events WHERE workspace_id = {{ws:String}} AND timestamp >= {{start:{_T}}} "
                  f"AND timestamp < {{end_window:{_T}}} AND ({' OR '.join(conditions)}))")  # fmt: skip
        columns = "e.timestamp AS ts, e.type AS type, e.event AS event" + (", e.properties AS properties" if props else "")
        sql = (f"SELECT level, count() FROM (SELECT person, windowFunnel({int(within_seconds)})(toDateTime(ts), "
               f"{', '.join(conditions)}) AS level FROM (SELECT {columns}, "
               f"if(o.owner = {_ZERO_UUID}, e.profile_id, o.owner) AS person "
               f"FROM {events} AS e LEFT JOIN {self.owners()} AS o ON e.anchor = o.anchor) "
               f"GROUP BY person HAVING minIf(ts, {conditions[0]}) < {{end:{_T}}}) GROUP BY level")  # fmt: skip
        params["end_window"] = end + timedelta(seconds=within_seconds)
        reached = dict(self._rows(sql, params))
        return [sum(n for level, n in reached.items() if level >= i + 1) for i in range(len(steps))]

    def retention_cohorts(self, workspace_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Monthly cohorts by first-seen month: size and the people active k months later."""
        q = KpiQuery(workspace_id, start, end, "month")
        sql = (f"SELECT cohort, dateDiff('month', cohort, m) AS k, count() FROM (SELECT person, "
               "groupUniqArray(toStartOfMonth(day)) AS months, min(toStartOfMonth(day)) AS cohort "
               f"FROM {self._active('never')} GROUP BY person) ARRAY JOIN months AS m "
               f"WHERE cohort >= toDate({{start:{_T}}}) AND cohort < toDate({{end:{_T}}}) GROUP BY cohort, k "
               "ORDER BY cohort, k")  # fmt: skip
        cohorts: dict[date, dict[int, int]] = defaultdict(dict)
        for cohort, k, n in self._rows(sql, self._params(q, never=datetime(2100, 1, 1, tzinfo=timezone.utc))):
            cohorts[cohort][k] = n
        out = []
        for cohort, active in sorted(cohorts.items()):
            size = active.get(0, 0)
            months = max(active) + 1
            counts = [active.get(k, 0) for k in range(months)]
            out.append({"cohort": cohort.isoformat()[:7], "size": size, "active": counts,
                        "retention": [n / size if size else None for n in counts]})  # fmt: skip
        return out

    def daily_values(self, workspace_id: str, name: str, days: list[date]) -> list[dict[str, Any]]:
        """The day values of a headline KPI for `days` (for the KPI update stream)."""
        if not days:
            return []
        q = KpiQuery(workspace_id, _midnight(min(days)), _midnight(max(days) + timedelta(days=1)), "day")
        wanted = {d.isoformat() for d in days}
        return [row for row in self.kpi(name, q) if row["period"] in wanted]


_UNCOMPUTED = {name for name, k in CATALOGUE.items() if k.shape != "funnel"} - set(_COMPUTED_BY)
assert not _UNCOMPUTED, f"KPIs in the catalogue without a computation: {sorted(_UNCOMPUTED)}"


def _json_scalar(value: Any) -> str:
    """How JSONExtractRaw renders a scalar property, so a step filter compares like with like."""
    return orjson.dumps(value).decode()
