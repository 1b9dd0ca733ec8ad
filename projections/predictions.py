"""The ClickHouse side of predictions: each person's features and outcomes as of a time, the models and scores.

The models and scores are a projection of the log's model runs (domain/predictions.py), written by the
`predictions` processor (streams/predictions.py); the features are read from the KPI projection.

Features are computed from the KPI projection's facts and activity days, each fact counted for the current
owner of its anchor (as every KPI counts it, `KpiStore.owners`), so a merge moves a person's history with
them. Everything is "as of" a cut-off: features from before it, outcomes from the horizon after it, which is
how a model is trained on the past and evaluated on what came next (services/predictions.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable
from uuid import UUID

from projections.erasure import PREDICTION_TABLES, erase_rows
from projections.kpis import KpiStore

_ZERO = "toUUID('00000000-0000-0000-0000-000000000000')"
_T = "DateTime64(3, 'UTC')"
DAY_S = 86400.0

# The classifiers' features, in this order (the names are served with each model).
FEATURES = (
    "days_since_last_active", "tenure_days", "active_days_30", "active_days_90", "active_days",
    "orders", "orders_30", "orders_90", "days_since_last_order", "order_value_mean",
    "tickets", "complaints", "csat_mean", "nps_mean", "messages_opened_90", "messages_clicked_90",
    # Events of each call type in the last 30 days and in the 30 before: the trend of each (the model weighs
    # the pair; a difference would be negative, and the counts are taken as log(1 + x)).
    "pages_30", "pages_prev_30", "screens_30", "screens_prev_30", "tracks_30", "tracks_prev_30",
)
_TRENDS = (("page", "pages"), ("screen", "screens"), ("track", "tracks"))


@dataclass
class Person:
    """One person's history as of a cut-off: the features, and what BG/NBD and Gamma-Gamma read (in days)."""

    profile_id: str
    features: dict[str, float] = field(default_factory=dict)
    order_days: int = 0  # distinct days with an order: frequency is order_days - 1
    first_order_days: float = 0.0  # cut-off minus the first order's day, in days (T of BG/NBD)
    order_span_days: float = 0.0  # the last order's day minus the first's, in whole days (recency of BG/NBD)
    orders_by_currency: dict[str, int] = field(default_factory=dict)
    mean_order_by_currency: dict[str, float] = field(default_factory=dict)


class PredictionStore:
    """Reads features and outcomes; writes and reads models and scores."""

    def __init__(self, kpis: KpiStore) -> None:
        self.kpis = kpis
        self.client = kpis.client
        self.db = kpis.db

    def _people(self, table: str, until: str, since: str | None = None, extra: str = "", columns: str = "*") -> str:
        """Rows of `table` (kpi_facts, activity_days or events) before `until`, with `person`, the anchor's owner
        now; `columns`: those of the table read (they must include anchor and profile_id)."""
        time = "day" if table == "activity_days" else "timestamp"
        cut = (lambda p: f"toDate({{{p}:{_T}}})") if table == "activity_days" else (lambda p: f"{{{p}:{_T}}}")
        where = f"workspace_id = {{ws:String}} AND {time} < {cut(until)}"
        if since:
            where += f" AND {time} >= {cut(since)}"
        final = "FINAL" if table in ("kpi_facts", "events") else ""
        return (f"(SELECT t.*, if(o.owner = {_ZERO}, t.profile_id, o.owner) AS person FROM (SELECT {columns} FROM "
                f"{self.db}.{table} {final} WHERE {where} {extra}) AS t LEFT JOIN {self.kpis.owners()} AS o "
                "ON t.anchor = o.anchor)")  # fmt: skip

    def people(self, workspace_id: str, cutoff: datetime) -> dict[str, Person]:
        """Every person active before `cutoff`, with their features as of then."""
        params = {"ws": workspace_id, "c": cutoff, "c30": cutoff - timedelta(days=30),
                  "c60": cutoff - timedelta(days=60), "c90": cutoff - timedelta(days=90)}  # fmt: skip
        people: dict[str, Person] = {}
        activity = (f"SELECT person, dateDiff('second', toDateTime(max(day)), {{c:{_T}}}) / {DAY_S}, "
                    f"dateDiff('second', toDateTime(min(day)), {{c:{_T}}}) / {DAY_S}, "
                    f"uniqExactIf(day, day >= toDate({{c30:{_T}}})), uniqExactIf(day, day >= toDate({{c90:{_T}}})), "
                    f"uniqExact(day) FROM {self._people('activity_days', 'c')} GROUP BY person")  # fmt: skip
        for pid, since_last, tenure, a30, a90, days in self.client.query(activity, parameters=params).result_rows:
            people[str(pid)] = Person(str(pid), {
                "days_since_last_active": float(since_last), "tenure_days": float(tenure),
                "active_days_30": float(a30), "active_days_90": float(a90), "active_days": float(days)})  # fmt: skip
        orders = (f"SELECT person, currency, uniqExact(event_id), sum(toFloat64(amount)), "
                  f"uniqExactIf(event_id, timestamp >= {{c30:{_T}}}), uniqExactIf(event_id, timestamp >= {{c90:{_T}}}), "
                  "min(timestamp), max(timestamp), groupUniqArray(toDate(timestamp)) "
                  f"FROM {self._people('kpi_facts', 'c', extra=_ORDERS)} GROUP BY person, currency")
        spans: dict[str, tuple[datetime, datetime, set[Any]]] = {}
        for pid, currency, n, total, n30, n90, first, last, days in self.client.query(
            orders, parameters=params
        ).result_rows:  # fmt: skip
            person = people.get(str(pid))
            if person is None:  # an order without an activity day cannot be: activity days come from every event
                continue
            f = person.features
            f["orders"] = f.get("orders", 0.0) + n
            f["orders_30"] = f.get("orders_30", 0.0) + n30
            f["orders_90"] = f.get("orders_90", 0.0) + n90
            person.orders_by_currency[currency] = int(n)
            person.mean_order_by_currency[currency] = float(total) / n if n else 0.0
            was = spans.get(person.profile_id)
            spans[person.profile_id] = ((min(was[0], first), max(was[1], last), was[2] | set(days)) if was
                                        else (first, last, set(days)))  # fmt: skip
        for pid, (first, last, days) in spans.items():
            person = people[pid]
            # In whole days, as purchase days are counted: two orders on one day are one purchase occasion.
            person.order_days = len(days)
            person.first_order_days = (cutoff - datetime.combine(min(days), datetime.min.time(), _UTC)).total_seconds() / DAY_S
            person.order_span_days = float((max(days) - min(days)).days)
            person.features["days_since_last_order"] = (cutoff - _aware(last)).total_seconds() / DAY_S
            main = max(person.orders_by_currency, key=lambda c: person.orders_by_currency[c])
            person.features["order_value_mean"] = person.mean_order_by_currency[main]
        self._service(people, params)
        self._trends(people, params)
        for person in people.values():
            for name in FEATURES:
                person.features.setdefault(name, float("nan") if name in _UNKNOWN_WHEN_ABSENT else 0.0)
        return people

    def _service(self, people: dict[str, Person], params: dict[str, Any]) -> None:
        """Each person's tickets, complaints, mean CSAT and NPS, and campaign messages opened and clicked."""
        service = (f"SELECT person, countIf(kind = 'ticket_opened'), countIf(kind = 'ticket_opened' AND complaint = 1), "
                   "avgIf(csat, csat IS NOT NULL), avgIf(nps, nps IS NOT NULL), "
                   f"countIf(kind = 'message_opened' AND timestamp >= {{c90:{_T}}}), "
                   f"countIf(kind = 'message_clicked' AND timestamp >= {{c90:{_T}}}) "
                   f"FROM {self._people('kpi_facts', 'c', extra=_SERVICE_KINDS)} GROUP BY person")  # fmt: skip
        for pid, tickets, complaints, csat, nps, opened, clicked in self.client.query(
            service, parameters=params
        ).result_rows:  # fmt: skip
            person = people.get(str(pid))
            if person is None:
                continue
            person.features.update(tickets=float(tickets), complaints=float(complaints), csat_mean=_nan(csat),
                                   nps_mean=_nan(nps), messages_opened_90=float(opened),
                                   messages_clicked_90=float(clicked))  # fmt: skip

    def _trends(self, people: dict[str, Person], params: dict[str, Any]) -> None:
        """Each person's events of each call type in the 30 days before the cut-off and in the 30 before."""
        counts = ", ".join(f"countIf(type = '{t}' AND timestamp >= {{c30:{_T}}}), countIf(type = '{t}' AND "
                           f"timestamp < {{c30:{_T}}})" for t, _ in _TRENDS)  # fmt: skip
        trends = (f"SELECT person, {counts} FROM {self._people('events', 'c', since='c60', columns=_EVENT_COLUMNS)} "
                  "GROUP BY person")  # fmt: skip
        for pid, *pairs in self.client.query(trends, parameters=params).result_rows:
            person = people.get(str(pid))
            if person is None:
                continue
            for i, (_, name) in enumerate(_TRENDS):
                person.features[f"{name}_30"] = float(pairs[2 * i])
                person.features[f"{name}_prev_30"] = float(pairs[2 * i + 1])

    def outcomes(self, workspace_id: str, start: datetime, end: datetime) -> tuple[set[str], set[str], dict[str, int]]:
        """Who was active, who ordered, and how many distinct order days each had, in [start, end)."""
        params = {"ws": workspace_id, "s": start, "e": end}
        active = {str(r[0]) for r in self.client.query(
            f"SELECT DISTINCT person FROM {self._people('activity_days', 'e', since='s')}", parameters=params
        ).result_rows}  # fmt: skip
        order_days = {str(pid): int(n) for pid, n in self.client.query(
            f"SELECT person, uniqExact(toDate(timestamp)) FROM "
            f"{self._people('kpi_facts', 'e', since='s', extra=_ORDERS)} GROUP BY person",
            parameters=params,
        ).result_rows}  # fmt: skip
        return active, set(order_days), order_days

    def history_span(self, workspace_id: str) -> tuple[datetime, datetime] | None:
        """The first and last activity day of the workspace (None: nothing yet)."""
        row = self.client.query(f"SELECT min(day), max(day), count() FROM {self.db}.activity_days WHERE "
                                "workspace_id = {ws:String}", parameters={"ws": workspace_id}).result_rows[0]  # fmt: skip
        if not row[2]:
            return None
        return (datetime.combine(row[0], datetime.min.time()).replace(tzinfo=_UTC),
                datetime.combine(row[1], datetime.min.time()).replace(tzinfo=_UTC))  # fmt: skip

    # models and scores ---------------------------------------------------------------------

    def save_models(self, rows: list[tuple[str, str, str, str, dict[str, Any]]]) -> None:
        """(workspace, model, version, status, doc) per run; the version is the run's instant."""
        if rows:
            self.client.insert(f"{self.db}.prediction_models",
                               [[ws, model, version, _instant(version), status, json.dumps(doc)]
                                for ws, model, version, status, doc in rows],
                               column_names=["workspace_id", "model", "version", "trained_at", "status", "doc"])  # fmt: skip

    def save_scores(self, rows: Iterable[tuple[str, str, str, str, float, dict[str, Any]]]) -> int:
        """(workspace, profile, model, version, score, details) per score: stored with the model and version,
        as the profile serves them."""
        values = [[ws, UUID(pid), model, version, _instant(version), float(score),
                   json.dumps({**details, "model": model, "version": version, "scored_at": version})]
                  for ws, pid, model, version, score, details in rows]  # fmt: skip
        if values:
            self.client.insert(f"{self.db}.prediction_scores", values,
                               column_names=["workspace_id", "profile_id", "model", "version", "scored_at", "score",
                                             "doc"])  # fmt: skip
        return len(values)

    def erase(self, workspace_id: str, profile_ids: list[str]) -> None:
        """A regulation erased these profiles: their scores go (the log's runs name them by id only)."""
        erase_rows(self.client, self.db, PREDICTION_TABLES, workspace_id, profile_ids)

    def models(self, workspace_id: str) -> list[dict[str, Any]]:
        """The latest run of each model (its status, evaluation and parameters)."""
        rows = self.client.query(
            f"SELECT model, argMax(version, trained_at), argMax(status, trained_at), argMax(doc, trained_at), "
            f"max(trained_at) FROM {self.db}.prediction_models FINAL WHERE workspace_id = {{ws:String}} "
            "GROUP BY model ORDER BY model", parameters={"ws": workspace_id},
        ).result_rows  # fmt: skip
        return [{"model": m, "version": v, "status": s, "trained_at": _aware(t).isoformat(), **json.loads(d)}
                for m, v, s, d, t in rows]  # fmt: skip

    def scores(self, workspace_id: str, profile_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The latest scores of the profiles `profile_ids` (a profile with merged-away ids: any of them)."""
        if not profile_ids:
            return {}
        rows = self.client.query(
            f"SELECT model, argMax(doc, scored_at) FROM {self.db}.prediction_scores FINAL WHERE workspace_id = "
            "{ws:String} AND profile_id IN {ids:Array(UUID)} GROUP BY model ORDER BY model",
            parameters={"ws": workspace_id, "ids": [UUID(p) for p in profile_ids]},
        ).result_rows  # fmt: skip
        return {model: json.loads(doc) for model, doc in rows}

    def latest_scores(self, workspace_id: str, model: str) -> dict[str, float]:
        """Every profile's current score of `model` (to publish only the scores that moved)."""
        rows = self.client.query(
            f"SELECT profile_id, argMax(score, scored_at) FROM {self.db}.prediction_scores FINAL WHERE workspace_id = "
            "{ws:String} AND model = {m:String} GROUP BY profile_id", parameters={"ws": workspace_id, "m": model},
        ).result_rows  # fmt: skip
        return {str(pid): float(score) for pid, score in rows}


_ORDERS = "AND kind = 'order'"
_EVENT_COLUMNS = "anchor, profile_id, type, timestamp"
_SERVICE_KINDS = "AND kind IN ('ticket_opened', 'feedback', 'message_opened', 'message_clicked')"
_UNKNOWN_WHEN_ABSENT = {"csat_mean", "nps_mean", "days_since_last_order"}

_UTC = timezone.utc


def _instant(version: str) -> datetime:
    return _aware(datetime.fromisoformat(version))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=_UTC)


def _nan(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return number if number == number else float("nan")
