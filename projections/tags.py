"""Tag rules compiled to ClickHouse, and the tag tables' reads and writes.

One query evaluates any number of rules for a set of profiles (or all of them):
the events of each profile (`events FINAL` joined to the current owners of their
anchors) are aggregated once per event condition, joined to the `profiles` row
for traits and computed traits, and every rule becomes one boolean column plus
one "due" column: the next time its answer can change without a new event (an
event leaving a window, a recency condition flipping). Live evaluation, timers,
backfills and segment queries all run this same query, which is why a backfill
equals what live evaluation produces.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator, Sequence

import orjson

from domain.consent import Defaults
from domain.segment import CALL_TYPES
from domain.tags import (
    AndNode,
    ComputedCondition,
    ConsentCondition,
    EventCondition,
    LastSeenCondition,
    NotNode,
    OrNode,
    TagCondition,
    TraitCondition,
    parse_duration,
    parse_time,
)
from domain.predictions import SCORE_MODELS as SCORES
from domain.times import shown, utc
from projections.erasure import TAG_TABLES, erase_rows
from projections.kpis import KpiQuery
from projections.money import movements

FAR = datetime(2299, 12, 31, tzinfo=timezone.utc)  # "no timer": beyond any window
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NUMERIC = "('Int64', 'UInt64', 'Double')"
MEMBERSHIP_COLUMNS = ["workspace_id", "tag_id", "profile_id", "kind", "rule_version", "since", "position", "version",
                      "is_deleted"]  # fmt: skip
_TIME = "DateTime64(3, 'UTC')"
HISTORY_BUCKETS = {"day": "toDate", "week": "toMonday", "month": "toStartOfMonth"}  # as the KPI series label periods
CHANGE_COLUMNS = ["workspace_id", "tag_id", "profile_id", "change", "kind", "at", "rule_version", "position", "cause",
                  "reason"]  # fmt: skip


class _Compiler:
    """Turns rule trees into SQL expressions over `p` (the profile row) and `agg` (event aggregates)."""

    def __init__(self, now: datetime, rules: dict[str, Any], db: str, consent: Defaults) -> None:
        self.now = now
        self.rules = rules  # dynamic tags by id, inlined where a rule refers to them
        self.db = db
        self.consent = consent  # the workspace's defaults, for purposes a profile never decided on
        self.manual_table = f"{db}.tag_membership"
        self.params: dict[str, Any] = {"now": now, "far": FAR}
        self.aggs: dict[str, str] = {}  # SQL → column name
        self.money: dict[tuple[str, str], str] = {}  # (per-currency SQL, per-profile SQL over it) → column name
        self.dues: list[str] = []
        self.scores: set[str] = set()  # the prediction models whose scores the rules read

    def param(self, value: Any, kind: str) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"{{{name}:{kind}}}"

    def agg(self, sql: str) -> str:
        if sql not in self.aggs:
            self.aggs[sql] = f"a{len(self.aggs)}"
        return f"agg.{self.aggs[sql]}"

    def money_agg(self, inner: str, outer: str) -> str:
        """An aggregate of money movements per profile and currency (`inner`, over `m`), combined per profile
        by `outer` (with `{}` for the inner column), e.g. groupArray({}) for one value per currency."""
        key = (inner, outer)
        if key not in self.money:
            self.money[key] = f"m{len(self.money)}"
        return f"money.{self.money[key]}"

    # Leaves over raw JSON (traits and properties) ----------------------------------------

    def _json_eq(self, raw: str, value: Any) -> str:
        if isinstance(value, bool):
            return f"({raw} = {self.param('true' if value else 'false', 'String')})"
        if isinstance(value, (int, float)):
            return f"(JSONType({raw}) IN {_NUMERIC} AND JSONExtractFloat({raw}) = {self.param(float(value), 'Float64')})"
        return f"(JSONType({raw}) = 'String' AND JSONExtractString({raw}) = {self.param(str(value), 'String')})"

    def _json_cmp(self, raw: str, op: str, value: Any) -> str:
        if isinstance(value, (int, float)):
            return f"(JSONType({raw}) IN {_NUMERIC} AND JSONExtractFloat({raw}) {op} {self.param(float(value), 'Float64')})"
        return f"(JSONType({raw}) = 'String' AND JSONExtractString({raw}) {op} {self.param(str(value), 'String')})"

    def json_leaf(self, raw: str, op: str, value: Any) -> str:
        if op == "exists":
            return f"({raw} != '' AND {raw} != 'null')"
        if op == "=":
            return self._json_eq(raw, value)
        if op == "!=":
            return f"(NOT {self._json_eq(raw, value)})"
        if op in ("<", "<=", ">", ">="):
            return self._json_cmp(raw, op, value)
        if op == "in":
            return "(" + " OR ".join(self._json_eq(raw, v) for v in value) + ")"
        if op == "between":
            return f"({self._json_cmp(raw, '>=', value[0])} AND {self._json_cmp(raw, '<=', value[1])})"
        # contains: an element of an array, or a substring of a string
        element = self.param(orjson.dumps(value).decode(), "String")
        text = self.param(str(value).lower() if isinstance(value, bool) else str(value), "String")
        return (f"(if(JSONType({raw}) = 'Array', has(JSONExtractArrayRaw({raw}), {element}), "
                f"JSONType({raw}) = 'String' AND position(JSONExtractString({raw}), {text}) > 0))")  # fmt: skip

    def _raw(self, column: str, path: str) -> str:
        keys = path.split(".")
        args = ", ".join(self.param(k, "String") for k in keys[1:])
        base = f"{column}[{self.param(keys[0], 'String')}]" if column == "p.traits" else None
        if base is None:  # properties: a JSON string column
            args = ", ".join(self.param(k, "String") for k in keys)
            return f"JSONExtractRaw({column}, {args})"
        return f"JSONExtractRaw({base}, {args})" if args else base

    # Computed traits: the values the profiles table stores (projections/store.ProfileView computes them) --

    def _computed(self, name: str) -> tuple[str, str]:
        """(SQL expression, 'number' | 'time' | 'per_currency') of a computed trait; NULL where it has no value
        (per_currency: an array with one value per currency)."""
        base, _, key = name.partition(".")
        if base in SCORES:
            return self._score(base, key)
        if key:
            quoted = "'" + key.replace("\\", "\\\\").replace("'", "\\'") + "'"
            if base == "average_order_value":
                return f"if(mapContains(p.average_order_value, {quoted}), p.average_order_value[{quoted}], NULL)", "number"
            return f"p.{base}[{quoted}]", "number"
        return {
            "event_count": ("p.event_count", "number"),
            "orders_count": ("p.orders_count", "number"),
            "open_tickets": ("p.open_tickets", "number"),
            "average_csat": ("p.average_csat", "number"),
            # Money without a currency: one value per currency (see computed_leaf), never their sum.
            "revenue": ("if(empty(p.revenue), [toDecimal128(0, 6)], mapValues(p.revenue))", "per_currency"),
            "average_order_value": ("mapValues(p.average_order_value)", "per_currency"),
            "first_seen": ("if(p.event_count > 0, p.first_seen, NULL)", "time"),
            "last_seen": ("if(p.event_count > 0, p.last_seen, NULL)", "time"),
            "last_order_at": ("p.last_order_at", "time"),
        }[base]

    def _score(self, model: str, key: str) -> tuple[str, str]:
        """A model's latest score of the profile (joined as `s_<model>`, see TagStore._query); NULL without one."""
        self.scores.add(model)
        s = f"s_{model}"
        if model != "predicted_ltv" or key == "expected_purchases":
            return f"if({s}.scored = 1, {s}.score, NULL)", "number"
        if key == "probability_alive":
            return f"if({s}.scored = 1, JSONExtractFloat({s}.doc, 'probability_alive'), NULL)", "number"
        if key:  # one currency's value (a string of the amount, as the profile shows it)
            return f"toFloat64OrNull(JSONExtractString({s}.doc, 'value', {self.param(key, 'String')}))", "number"
        return (f"arrayMap(x -> toFloat64OrZero(x), mapValues(JSONExtract({s}.doc, 'value', 'Map(String, String)')))",
                "per_currency")  # fmt: skip

    def computed_leaf(self, node: ComputedCondition) -> str:
        expr, kind = self._computed(node.computed)
        if node.op == "exists":
            return f"notEmpty({expr})" if kind == "per_currency" else f"({expr} IS NOT NULL)"

        def lit(v: Any) -> str:
            if kind == "time":
                return self.param(parse_time(v), "DateTime64(3, 'UTC')")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"computed trait {node.computed} is a number; compare it with numbers")
            return self.param(float(v), "Float64")

        op, value = node.op, node.value
        if kind == "per_currency":  # holds when it holds in some currency
            values, expr = expr, "v"
        if op in ("=", "!=", "<", "<=", ">", ">="):
            test = f"({expr} {op} {lit(value)})"
        elif op == "in":
            test = f"({expr} IN ({', '.join(lit(v) for v in value)}))"
        else:
            test = f"({expr} BETWEEN {lit(value[0])} AND {lit(value[1])})"
        return f"arrayExists(v -> {test}, {values})" if kind == "per_currency" else test

    # Events ------------------------------------------------------------------------------

    def money_leaf(self, node: EventCondition) -> str:
        """sum(revenue) of Order Completed: net revenue per currency from the money movements
        (projections/money.py), as the profile and the revenue KPI count it; `where` filters pick the
        orders, and a refund counts with its order."""
        parts = ["1"]
        if node.where:
            filters = " AND ".join(self.json_leaf(self._raw("ev.properties", f.property), f.op, f.value)
                                   for f in node.where)  # fmt: skip
            parts.append(f"m.order_event IN (SELECT event_id FROM {self.db}.events AS ev FINAL WHERE "
                         f"ev.workspace_id = {{ws:String}} AND ev.type = 'track' AND ev.event = "
                         f"{self.param(node.event, 'String')} AND {filters})")  # fmt: skip
        time_type = "DateTime64(3, 'UTC')"
        seconds = int(parse_duration(node.within).total_seconds()) if node.within else 0
        if node.within:
            parts.append(f"m.timestamp > {{now:{time_type}}} - toIntervalSecond({seconds})")
        elif node.between:
            start, end = (parse_time(b) for b in node.between)
            parts += [f"m.timestamp >= {self.param(start, time_type)}", f"m.timestamp < {self.param(end, time_type)}"]
        condition = " AND ".join(parts)
        if node.within:
            count = self.money_agg(f"countIf({condition})", "sum({})")
            per_currency_count = count.replace("money.m", "i")  # the inner column: currencies with a movement
            oldest = self.money_agg(f"minIf(m.timestamp, {condition})", f"minIf({{}}, {per_currency_count} > 0)")
            self.dues.append(f"if({count} > 0, {oldest} + toIntervalSecond({seconds}), {{far:{time_type}}})")
        threshold = self.param(node.threshold, "Float64")
        if node.currency is not None:
            currency = self.param(node.currency, "String")
            net = self.money_agg(f"sumIf(m.net, {condition} AND m.currency = {currency})", "sum({})")
            return f"(toFloat64(ifNull({net}, 0)) {node.op} {threshold})"
        # No currency named: the condition holds when it holds in some currency (never across currencies);
        # a profile without orders has 0.
        nets = self.money_agg(f"sumIf(m.net, {condition})", "groupArray({})")
        return f"arrayExists(v -> toFloat64(v) {node.op} {threshold}, if(empty({nets}), [toDecimal128(0, 6)], {nets}))"

    def event_leaf(self, node: EventCondition) -> str:
        if node.money:
            return self.money_leaf(node)
        name = self.param(node.event, "String")
        match = f"e.type = {name}" if node.event in CALL_TYPES else f"(e.type = 'track' AND e.event = {name})"
        parts = [match] + [self.json_leaf(self._raw("e.properties", f.property), f.op, f.value) for f in node.where]
        if node.within:
            seconds = int(parse_duration(node.within).total_seconds())
            parts.append(f"e.timestamp > {{now:DateTime64(3, 'UTC')}} - toIntervalSecond({seconds})")
        elif node.between:
            start, end = (parse_time(b) for b in node.between)
            time_type = "DateTime64(3, 'UTC')"
            parts.append(f"e.timestamp >= {self.param(start, time_type)}")
            parts.append(f"e.timestamp < {self.param(end, time_type)}")
        prop = node.prop
        if prop is not None:
            raw = self._raw("e.properties", prop)
            parts.append(f"JSONType({raw}) IN {_NUMERIC}")
        condition = " AND ".join(parts)
        count = self.agg(f"countIf({condition})")
        if node.within:
            # The oldest qualifying event in the window leaves it first: the next time the answer can change.
            oldest = self.agg(f"minIf(e.timestamp, {condition})")
            seconds = int(parse_duration(node.within).total_seconds())
            self.dues.append(f"if({count} > 0, {oldest} + toIntervalSecond({seconds}), {{far:DateTime64(3, 'UTC')}})")
        kind, threshold = node.kind, self.param(node.threshold, "Float64")
        if kind == "exists":
            return f"({count} > 0)"
        if kind == "count":
            return f"({count} {node.op} {threshold})"
        value = f"JSONExtractFloat({raw})"
        measured = self.agg(f"{kind}If({value}, {condition})")
        if kind == "sum":
            return f"({measured} {node.op} {threshold})"
        return f"({count} > 0 AND {measured} {node.op} {threshold})"

    def recency_leaf(self, node: LastSeenCondition) -> str:
        text = node.last_seen.older_than or node.last_seen.within
        seconds = int(parse_duration(text).total_seconds())  # type: ignore[arg-type]
        flips = f"(p.last_seen + toIntervalSecond({seconds}))"
        self.dues.append(
            f"if(p.event_count > 0 AND {flips} > {{now:DateTime64(3, 'UTC')}}, {flips}, {{far:DateTime64(3, 'UTC')}})"
        )
        if node.last_seen.older_than:
            return f"(p.event_count > 0 AND {flips} <= {{now:DateTime64(3, 'UTC')}})"
        return f"(p.event_count > 0 AND {flips} > {{now:DateTime64(3, 'UTC')}})"

    # Trees -------------------------------------------------------------------------------

    def compile(self, node: Any, inlining: tuple[str, ...] = ()) -> str:
        if isinstance(node, AndNode):
            return "(" + " AND ".join(self.compile(c, inlining) for c in node.and_) + ")"
        if isinstance(node, OrNode):
            return "(" + " OR ".join(self.compile(c, inlining) for c in node.or_) + ")"
        if isinstance(node, NotNode):
            return f"(NOT {self.compile(node.not_, inlining)})"
        if isinstance(node, TagCondition):
            if node.tag in self.rules and node.tag not in inlining:
                return self.compile(self.rules[node.tag], inlining + (node.tag,))
            tag = self.param(node.tag, "String")
            return (f"(p.profile_id IN (SELECT profile_id FROM {self.manual_table} FINAL "
                    f"WHERE workspace_id = {{ws:String}} AND tag_id = {tag} AND kind = 'manual'))")  # fmt: skip
        if isinstance(node, TraitCondition):
            return f"ifNull({self.json_leaf(self._raw('p.traits', node.trait), node.op, node.value)}, 0)"
        if isinstance(node, ComputedCondition):
            return f"ifNull({self.computed_leaf(node)}, 0)"
        if isinstance(node, EventCondition):
            return f"ifNull({self.event_leaf(node)}, 0)"
        if isinstance(node, LastSeenCondition):
            return self.recency_leaf(node)
        if isinstance(node, ConsentCondition):  # the person's latest decision (profiles.consent), else the default
            purpose = self.param(node.consent, "String")
            default = "1" if self.consent.granted(node.consent) else "0"
            return f"if(mapContains(p.consent, {purpose}), p.consent[{purpose}] = 1, {default})"
        raise TypeError(f"not a rule node: {node!r}")

    def due(self, start: int) -> str:
        mine = self.dues[start:]
        if not mine:
            return "{far:DateTime64(3, 'UTC')}"
        return mine[0] if len(mine) == 1 else f"least({', '.join(mine)})"


@dataclass
class Evaluation:
    """Per profile: for each rule, whether it holds and when it can next change by time alone (None: never)."""

    results: dict[str, dict[str, tuple[bool, datetime | None]]]

    @property
    def profiles(self) -> list[str]:
        return list(self.results)


class TagStore:
    """Tag tables of one ClickHouse database, and rule evaluation over the projections."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.db = database

    def _insert(self, table: str, rows: Sequence[Sequence[Any]], columns: list[str]) -> None:
        if rows:
            self.client.insert(f"{self.db}.{table}", rows, column_names=columns)

    def erase(self, workspace_id: str, profile_ids: list[str]) -> None:
        """Delete the rows of erased profiles (a regulation's delete) from this store's tables."""
        erase_rows(self.client, self.db, TAG_TABLES, workspace_id, profile_ids)

    # Evaluation ------------------------------------------------------------------------------

    def _query(
        self, workspace_id: str, rules: dict[str, Any], inline: dict[str, Any], now: datetime, ids: list[str] | None,
        consent: Defaults,
    ) -> tuple[str, dict[str, Any], list[str]]:  # fmt: skip
        c = _Compiler(now, inline, self.db, consent)
        columns, names = [], []
        for i, (name, rule) in enumerate(rules.items()):
            start = len(c.dues)
            columns.append(f"{c.compile(rule, (name,))} AS m{i}, {c.due(start)} AS d{i}")
            names.append(name)
        c.params["ws"] = workspace_id
        only = ""
        if ids is not None:
            c.params["ids"] = ids
            only = "AND profile_id IN {ids:Array(UUID)}"
        events = ""
        if c.aggs:
            aggregates = ", ".join(f"{sql} AS {col}" for sql, col in c.aggs.items())
            events = (
                f"LEFT JOIN (SELECT o.pid AS pid, {aggregates} FROM {self.db}.events AS e FINAL "
                f"INNER JOIN owners AS o ON e.anchor = o.anchor "
                f"WHERE e.workspace_id = {{ws:String}} AND e.anchor IN (SELECT anchor FROM owners) "
                f"GROUP BY pid) AS agg ON agg.pid = p.profile_id"
            )
        if c.money:
            # Inner columns i<n> per profile and currency, outer m<n> per profile (distinct names: an alias
            # equal to a column would be read inside its own aggregate).
            inner = ", ".join(f"{sql} AS i{col[1:]}" for (sql, _), col in c.money.items())
            outer = ", ".join(f"{combine.format('i' + col[1:])} AS {col}" for (_, combine), col in c.money.items())
            events += (
                f" LEFT JOIN (SELECT pid, {outer} FROM (SELECT o.pid AS pid, m.currency AS currency, {inner} "
                f"FROM {movements(self.db, 'anchor IN (SELECT anchor FROM owners)')} AS m "
                f"INNER JOIN owners AS o ON m.anchor = o.anchor WHERE m.currency != '' GROUP BY pid, currency) "
                f"GROUP BY pid) AS money ON money.pid = p.profile_id"
            )
        for model in sorted(c.scores):  # each model's score of the profiles, as the last run gave it
            events += (
                f" LEFT JOIN (SELECT profile_id AS sid, 1 AS scored, score, doc FROM {self.db}.prediction_scores "
                f"FINAL WHERE workspace_id = {{ws:String}} AND model = '{model}' {only}) AS s_{model} "
                f"ON s_{model}.sid = p.profile_id"
            )
        sql = (
            f"WITH owners AS (SELECT identifier AS anchor, profile_id AS pid FROM {self.db}.profile_identifiers FINAL "
            f"WHERE workspace_id = {{ws:String}} {only} UNION ALL SELECT concat('profile_id:', toString(profile_id)), "
            f"profile_id FROM {self.db}.profiles FINAL WHERE workspace_id = {{ws:String}} {only}) "
            f"SELECT toString(p.profile_id) AS pid{''.join(', ' + col for col in columns)} "
            f"FROM {self.db}.profiles AS p FINAL {events} "
            f"WHERE p.workspace_id = {{ws:String}} {only.replace('profile_id', 'p.profile_id')}"
        )
        return sql, c.params, names

    def evaluate(
        self, workspace_id: str, rules: dict[str, Any], inline: dict[str, Any], now: datetime, ids: list[str] | None,
        consent: Defaults,
    ) -> Evaluation:  # fmt: skip
        """Evaluate `rules` (name → rule) for the profiles `ids` (None: all); `inline` resolves tag references,
        `consent` is the workspace's consent defaults."""
        results: dict[str, dict[str, tuple[bool, datetime | None]]] = {}
        if ids is not None and not ids:
            return Evaluation(results)
        if not rules:
            sql = f"SELECT toString(profile_id) FROM {self.db}.profiles FINAL WHERE workspace_id = {{ws:String}}"
            params: dict[str, Any] = {"ws": workspace_id}
            if ids is not None:
                sql += " AND profile_id IN {ids:Array(UUID)}"
                params["ids"] = ids
            return Evaluation({r[0]: {} for r in self.client.query(sql, parameters=params).result_rows})
        sql, params, names = self._query(workspace_id, rules, inline, now, ids, consent)
        for row in self.client.query(sql, parameters=params).result_rows:
            out = {}
            for i, name in enumerate(names):
                due = utc(row[2 + 2 * i])
                out[name] = (bool(row[1 + 2 * i]), None if due >= FAR else due)
            results[row[0]] = out
        return Evaluation(results)

    def matching(
        self, workspace_id: str, rule: Any, inline: dict[str, Any], now: datetime, consent: Defaults, after: str = "",
        limit: int = 0,
    ) -> tuple[int, list[str]]:  # fmt: skip
        """Segments: how many profiles match a rule, and a page of their ids in id order after `after`."""
        sql, params, _ = self._query(workspace_id, {"q": rule}, inline, now, None, consent)
        count = self.client.query(f"SELECT count() FROM ({sql}) WHERE m0", parameters=params).result_rows[0][0]
        ids: list[str] = []
        if limit:
            params.update(after=after, limit=limit)
            ids = [r[0] for r in self.client.query(
                f"SELECT pid FROM ({sql}) WHERE m0 AND pid > {{after:String}} ORDER BY pid LIMIT {{limit:UInt32}}",
                parameters=params,
            ).result_rows]  # fmt: skip
        return count, ids

    def profile_docs(self, workspace_id: str, ids: list[str]) -> list[dict[str, Any]]:
        """Profiles for member lists and exports, in the order of `ids`."""
        if not ids:
            return []
        rows = self.client.query(
            f"SELECT toString(profile_id), doc FROM {self.db}.profiles FINAL "
            "WHERE workspace_id = {ws:String} AND profile_id IN {ids:Array(UUID)}",
            parameters={"ws": workspace_id, "ids": ids},
        ).result_rows
        docs = {pid: orjson.loads(doc) for pid, doc in rows}
        return [docs[i] for i in ids if i in docs]

    def profile_page(self, workspace_id: str, after: str, limit: int) -> list[str]:
        return [r[0] for r in self.client.query(
            f"SELECT toString(profile_id) AS pid FROM {self.db}.profiles FINAL WHERE workspace_id = {{ws:String}} "
            "AND pid > {after:String} ORDER BY pid LIMIT {limit:UInt32}",
            parameters={"ws": workspace_id, "after": after, "limit": limit},
        ).result_rows]  # fmt: skip

    def profile_count(self, workspace_id: str) -> int:
        return self.client.query(
            f"SELECT count() FROM {self.db}.profiles FINAL WHERE workspace_id = {{ws:String}}",
            parameters={"ws": workspace_id},
        ).result_rows[0][0]

    # Membership ------------------------------------------------------------------------------

    def members_of(self, workspace_id: str, ids: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """profile → tag → {kind, rule_version, since} for the current members among `ids`."""
        ids = sorted(set(ids))
        out: dict[str, dict[str, dict[str, Any]]] = {pid: {} for pid in ids}
        if not ids:
            return out
        for pid, tag, kind, version, since in self.client.query(
            f"SELECT toString(profile_id), tag_id, kind, rule_version, since FROM {self.db}.tag_membership FINAL "
            "WHERE workspace_id = {ws:String} AND profile_id IN {ids:Array(UUID)}",
            parameters={"ws": workspace_id, "ids": ids},
        ).result_rows:
            out[pid][tag] = {"kind": kind, "rule_version": version, "since": utc(since)}
        return out

    def members_of_tag(self, workspace_id: str, tag: str) -> list[str]:
        return [r[0] for r in self.client.query(
            f"SELECT toString(profile_id) FROM {self.db}.tag_membership FINAL "
            "WHERE workspace_id = {ws:String} AND tag_id = {tag:String}",
            parameters={"ws": workspace_id, "tag": tag},
        ).result_rows]  # fmt: skip

    def member_counts(self, workspace_id: str) -> dict[str, int]:
        return dict(self.client.query(
            f"SELECT tag_id, count() FROM {self.db}.tag_membership FINAL WHERE workspace_id = {{ws:String}} "
            "GROUP BY tag_id",
            parameters={"ws": workspace_id},
        ).result_rows)  # fmt: skip

    def write_membership(self, rows: list[list[Any]]) -> None:
        """Rows of MEMBERSHIP_COLUMNS without `version` (added here, so later writes win)."""
        version = time.time_ns()
        self._insert("tag_membership", [r[:-1] + [version, r[-1]] for r in rows], MEMBERSHIP_COLUMNS)

    def insert_changes(self, rows: list[list[Any]]) -> None:
        self._insert("tag_changes", rows, CHANGE_COLUMNS)

    def history(self, workspace_id: str, tag: str, start: datetime, end: datetime, granularity: str) -> list[dict[str, Any]]:
        """Per period of [start, end) (day, week or month; the KPI series' periods): the tag's enters and exits
        decided in it (by `at`, the platform's clock) and its members at its end, every period present.
        FINAL: a change delivered twice is one row of the key (profile, tag, position, change)."""
        sql = (f"SELECT if(at < {{start:{_TIME}}}, NULL, {HISTORY_BUCKETS[granularity]}(at)) AS b, "
               "countIf(change = 'entered'), countIf(change = 'exited') "
               f"FROM {self.db}.tag_changes FINAL WHERE workspace_id = {{ws:String}} AND tag_id = {{tag:String}} "
               f"AND at < {{end:{_TIME}}} GROUP BY b")  # fmt: skip
        counts = {b: (int(entered), int(exited)) for b, entered, exited in self.client.query(
            sql, parameters={"ws": workspace_id, "tag": tag, "start": start, "end": end}).result_rows}  # fmt: skip
        entered_before, exited_before = counts.pop(None, (0, 0))
        members = entered_before - exited_before  # b is NULL for what was decided before the range
        rows = []
        for label, _, _ in KpiQuery(workspace_id, start, end, granularity).periods():
            entered, exited = counts.get(label, (0, 0))
            members += entered - exited
            rows.append({"period": label.isoformat(), "entered": entered, "exited": exited, "members": members})
        return rows

    def changes_of(self, workspace_id: str, profile_id: str, limit: int = 100) -> list[dict[str, Any]]:
        result = self.client.query(
            f"SELECT tag_id, change, kind, at, rule_version, position, cause, reason FROM {self.db}.tag_changes FINAL "
            "WHERE workspace_id = {ws:String} AND profile_id = {pid:UUID} ORDER BY position DESC, at DESC, change "
            "LIMIT {limit:UInt32}",
            parameters={"ws": workspace_id, "pid": profile_id, "limit": limit},
        )
        return [
            {**dict(zip(result.column_names, row)), "at": shown(row[3])}
            for row in result.result_rows
        ]

    # Timers ----------------------------------------------------------------------------------

    def timers_of(self, workspace_id: str, ids: list[str]) -> dict[tuple[str, str], datetime]:
        if not ids:
            return {}
        return {(pid, tag): utc(due) for pid, tag, due in self.client.query(
            f"SELECT toString(profile_id), tag_id, due FROM {self.db}.tag_timers FINAL "
            "WHERE workspace_id = {ws:String} AND profile_id IN {ids:Array(UUID)} AND due > toDateTime64(0, 3, 'UTC')",
            parameters={"ws": workspace_id, "ids": ids},
        ).result_rows}  # fmt: skip

    def write_timers(self, rows: list[list[Any]]) -> None:
        """Rows of (workspace_id, tag_id, profile_id, due); due = EPOCH clears a timer."""
        version = time.time_ns()
        self._insert("tag_timers", [r + [version] for r in rows],
                     ["workspace_id", "tag_id", "profile_id", "due", "version"])  # fmt: skip

    def due_timers(self, now: datetime) -> dict[str, set[str]]:
        """workspace → profiles with a timer due at or before `now`."""
        out: dict[str, set[str]] = {}
        for ws, pid in self.client.query(
            f"SELECT workspace_id, toString(profile_id) FROM {self.db}.tag_timers FINAL "
            "WHERE due > toDateTime64(0, 3, 'UTC') AND due <= {now:DateTime64(3, 'UTC')}",
            parameters={"now": now},
        ).result_rows:
            out.setdefault(ws, set()).add(pid)
        return out

    # Definitions and backfills ---------------------------------------------------------------

    def insert_definitions(self, rows: list[list[Any]]) -> None:
        self._insert("tag_definitions", rows,
                     ["workspace_id", "kind", "tag_id", "rule_version", "name", "rule", "deleted", "position"])  # fmt: skip

    def latest_definitions(self) -> list[tuple[str, str, str, int, str, str, bool]]:
        """(workspace, kind, id, version, name, rule JSON, deleted) of the newest version of every definition."""
        return [tuple(r) for r in self.client.query(  # type: ignore[misc]
            f"SELECT workspace_id, kind, tag_id, max(rule_version), argMax(name, rule_version), "
            f"argMax(rule, rule_version), argMax(deleted, rule_version) FROM {self.db}.tag_definitions "
            "GROUP BY workspace_id, kind, tag_id"
        ).result_rows]  # fmt: skip

    def save_backfill(self, workspace_id: str, tag: str, version: int, state: str, done: int, total: int,
                      started: datetime) -> None:  # fmt: skip
        self._insert(
            "tag_backfills", [[workspace_id, tag, version, state, done, total, started, datetime.now(timezone.utc)]],
            ["workspace_id", "tag_id", "rule_version", "state", "done", "total", "started_at", "updated_at"],
        )  # fmt: skip

    def backfill(self, workspace_id: str, tag: str) -> dict[str, Any] | None:
        result = self.client.query(
            f"SELECT rule_version, state, done, total, started_at FROM {self.db}.tag_backfills FINAL "
            "WHERE workspace_id = {ws:String} AND tag_id = {tag:String} ORDER BY rule_version DESC LIMIT 1",
            parameters={"ws": workspace_id, "tag": tag},
        )
        if not result.result_rows:
            return None
        version, state, done, total, started = result.result_rows[0]
        return {"rule_version": version, "state": state, "done": done, "total": total, "started_at": shown(started)}

    # Evaluation steps (what a rebuild follows) -------------------------------------------------

    def record_step(self, row: list[Any]) -> None:
        """(seq, kind, position, now, workspace_id, tag_id, rule_version, after) of a step that applied."""
        self._insert("tag_steps", [row], STEP_COLUMNS)

    def last_step(self) -> int:
        """The seq of the last recorded step (0: none)."""
        return int(self.client.query(f"SELECT max(seq) FROM {self.db}.tag_steps").result_rows[0][0] or 0)

    def backfill_keys(self) -> set[tuple[str, str, int, int]]:
        """(workspace, tag, rule version, definition position) of every backfill whose pages were recorded as steps
        of their own."""
        return {(ws, tag, version, position) for ws, tag, version, position in self.client.query(
            f"SELECT DISTINCT workspace_id, tag_id, rule_version, position FROM {self.db}.tag_steps "
            "WHERE kind = 'backfill'"
        ).result_rows}  # fmt: skip

    def steps(self, after: int = 0, limit: int = 10_000) -> list[Step]:
        """Recorded steps after `after`, in order, `limit` at most."""
        rows = self.client.query(
            f"SELECT {', '.join(STEP_COLUMNS)} FROM {self.db}.tag_steps FINAL WHERE seq > {{after:UInt64}} "
            "ORDER BY seq LIMIT {limit:UInt32}",
            parameters={"after": after, "limit": limit},
        ).result_rows
        return [Step(seq, kind, position, utc(now), ws, tag, version, after_) for
                seq, kind, position, now, ws, tag, version, after_ in rows]  # fmt: skip


STEP_COLUMNS = ["seq", "kind", "position", "now", "workspace_id", "tag_id", "rule_version", "after"]


@dataclass(frozen=True)
class Step:
    """One evaluation step of the tag engine, as recorded in `tag_steps`."""

    seq: int
    kind: str  # page | tick | backfill
    position: int
    now: datetime
    workspace_id: str = ""
    tag_id: str = ""
    rule_version: int = 0
    after: str = ""


def pages(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


__all__ = ["TagStore", "Evaluation", "Step", "FAR", "EPOCH", "pages", "timedelta"]
