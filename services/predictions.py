"""Predictions: purchase propensity, churn risk and lifetime value per profile, and the sales forecast.

Every model is trained on the workspace's own history with a time split and evaluated on what came after,
before the model that scores today is fitted (Run):

- the classifiers (`purchase_propensity`: an order within the horizon; `churn_risk`: no activity, or no
  order, within it) are fitted on the features as of `now - 2h` with the outcomes of the next `h` days,
  evaluated (AUC, Brier score, lift in the top decile) on the features as of `now - h` against the last `h`
  days, then refitted on those and applied to the features as of now;
- `predicted_ltv` is BG/NBD for the number of purchases and Gamma-Gamma for the spend per currency
  (domain/clv.py), fitted on the orders before a holdout and compared with each customer's purchases in it,
  then refitted on everything.

A model without enough history is stored as `not_enough_data` with what it needs, and scores nobody.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

import numpy as np

from domain import clv
from domain.errors import Conflict, Invalid, NotFound
from domain.predictions import ModelRun, record_run
from projections.kpis import KpiQuery
from projections.predictions import FEATURES, Person, PredictionStore

log = logging.getLogger(__name__)

MODELS = ("purchase_propensity", "churn_risk", "predicted_ltv")
FORECAST_KPIS = ("revenue", "won_revenue")
MIN_PEOPLE = 50
MIN_OF_EACH_OUTCOME = 5
MOVED = 0.01  # a score that moves less than this is not published again


@dataclass(frozen=True)
class PredictionSettings:
    propensity_horizon_days: int = 30
    churn_horizon_days: int = 30
    churn_on: str = "activity"  # or "order": churn is no order within the horizon
    ltv_horizon_days: int = 365
    min_people: int = MIN_PEOPLE


@dataclass(frozen=True)
class RunPredictions:
    workspace_id: str


@dataclass(frozen=True)
class GetForecast:
    workspace_id: str
    kpi: str
    granularity: str = "week"
    horizon: int = 4
    level: float = 0.8
    history_periods: int = 52


class PredictionService:
    def __init__(self, store: PredictionStore, clock: Callable[[], datetime], record: Callable[[ModelRun], int],
                 projected: Callable[[int], None], settings: PredictionSettings = PredictionSettings(),
                 publish: Callable[[list[dict[str, Any]]], None] | None = None) -> None:  # fmt: skip
        """`record`: appends a run to the log (through its writer), returning the position of its last entry;
        `projected(position)`: waits until the predictions projection has applied the log through it;
        `publish`: the `scored` changes of a run, for cdp.profile-changes."""
        self.store, self.clock, self.settings = store, clock, settings
        self.record, self.projected, self.publish = record, projected, publish
        self._running: set[str] = set()
        self._guard = threading.Lock()
        self._features: dict[tuple[str, datetime], dict[str, Person]] = {}

    # Queries ------------------------------------------------------------------------------------

    def models(self, workspace_id: str) -> dict[str, Any]:
        stored = {m["model"]: m for m in self.store.models(workspace_id)}
        return {"models": [stored.get(name, {"model": name, "status": "never_trained",
                                              "needs": "a run: `cdp predict`, POST /v1/predictions/run, or the "
                                                       "schedule (CDP_PREDICTIONS_EVERY)"})
                           for name in MODELS]}  # fmt: skip

    def profile_predictions(self, workspace_id: str, profile_id: str) -> dict[str, Any]:
        """The scores of one profile as computed traits (none before the first run)."""
        return {"computed_traits": self.store.scores(workspace_id, [profile_id])}

    # Commands -----------------------------------------------------------------------------------

    def run(self, q: RunPredictions) -> dict[str, Any]:
        """Train, evaluate and score every model of the workspace; what each run did, with its timings."""
        with self._guard:
            if q.workspace_id in self._running:
                raise Conflict("the predictions of this workspace are being run: wait for that run to finish",
                               code="run_in_progress")  # fmt: skip
            self._running.add(q.workspace_id)
        try:
            return self._run(q)
        finally:
            with self._guard:
                self._running.discard(q.workspace_id)

    def _people(self, ws: str, at: datetime) -> dict[str, Person]:
        """Features as of `at`, read once per run: the classifiers and BG/NBD share their cut-offs."""
        if (ws, at) not in self._features:
            self._features[(ws, at)] = self.store.people(ws, at)
        return self._features[(ws, at)]

    def _run(self, q: RunPredictions) -> dict[str, Any]:
        try:
            return self._run_models(q)
        finally:  # the run's features are not kept: the next run reads the projections as they are then
            for key in [k for k in self._features if k[0] == q.workspace_id]:
                del self._features[key]

    def _run_models(self, q: RunPredictions) -> dict[str, Any]:
        now = self.clock()
        version = now.isoformat()
        results = []
        position = 0
        for name, train in (("purchase_propensity", self._propensity), ("churn_risk", self._churn),
                            ("predicted_ltv", self._ltv)):  # fmt: skip
            began = time.perf_counter()
            try:
                doc, scores = train(q.workspace_id, now)
                status = "trained"
            except (clv.NotEnoughData, _NotEnough) as exc:
                doc, scores, status = {"reason": str(exc)}, {}, "not_enough_data"
            except Exception as exc:  # one model's fault: recorded with it, and the other models still run
                log.exception("training %s for workspace %s failed", name, q.workspace_id)
                doc, scores, status = {"reason": f"{type(exc).__name__}: {exc}"}, {}, "failed"
            doc["training_seconds"] = round(time.perf_counter() - began, 3)
            doc["scored_profiles"] = len(scores)
            before = self.store.latest_scores(q.workspace_id, name) if scores and self.publish else {}
            # The run is a fact of the log: the predictions projection, the tag rules and a rebuild read it there.
            position = self.record(record_run(q.workspace_id, name, version, status, doc,
                                              ((pid, score, details) for pid, (score, details) in scores.items())))
            if scores and self.publish:
                self._publish_moved(q.workspace_id, name, version, position, before, scores)
            results.append({"model": name, "status": status, "version": version, **doc})
        self.projected(position)  # the answer comes with the scores on the profiles
        return {"workspace_id": q.workspace_id, "version": version, "models": results}

    def _publish_moved(self, ws: str, model: str, version: str, position: int, before: dict[str, float],
                       scores: dict[str, tuple[float, dict[str, Any]]], chunk: int = 10_000) -> None:  # fmt: skip
        """A `scored` change for each profile whose score is new or moved by MOVED or more."""
        moved = [{"workspace_id": ws, "profile_id": pid, "position": position, "change": "scored", "model": model,
                  "version": version, "score": {"old": before.get(pid), "new": score}}
                 for pid, (score, _) in scores.items() if pid not in before or abs(before[pid] - score) >= MOVED]  # fmt: skip
        for i in range(0, len(moved), chunk):
            self.publish(moved[i:i + chunk])  # type: ignore[misc]

    # The classifiers ----------------------------------------------------------------------------

    def _propensity(self, ws: str, now: datetime) -> tuple[dict[str, Any], dict[str, tuple[float, dict[str, Any]]]]:
        h = self.settings.propensity_horizon_days
        return self._classifier(ws, now, h, lambda active, ordered: ordered, "an order",
                                {"horizon_days": h, "outcome": f"an order within {h} days"})  # fmt: skip

    def _churn(self, ws: str, now: datetime) -> tuple[dict[str, Any], dict[str, tuple[float, dict[str, Any]]]]:
        h, on = self.settings.churn_horizon_days, self.settings.churn_on
        return self._classifier(
            ws, now, h, (lambda active, ordered: not ordered) if on == "order" else (lambda active, ordered: not active),
            "no order" if on == "order" else "no activity",
            {"horizon_days": h, "outcome": f"{'no order' if on == 'order' else 'no activity'} within {h} days"},
        )  # fmt: skip

    def _classifier(
        self, ws: str, now: datetime, h: int, outcome: Callable[[bool, bool], bool], what: str, described: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, tuple[float, dict[str, Any]]]]:
        from sklearn.metrics import brier_score_loss, roc_auc_score

        horizon = timedelta(days=h)
        train_at, test_at = now - 2 * horizon, now - horizon
        train = self._examples(ws, train_at, horizon, outcome)
        test = self._examples(ws, test_at, horizon, outcome)
        for label, (ids, _, y), at in (("training", train, train_at), ("evaluation", test, test_at)):
            self._enough(ids, y, label, at, h, what)
        model = _fit(train[1], train[2])
        p = model.predict_proba(test[1])[:, 1]
        y = test[2]
        metrics = {"auc": round(float(roc_auc_score(y, p)), 4), "brier": round(float(brier_score_loss(y, p)), 4),
                   "top_decile_lift": _lift(y, p), "base_rate": round(float(y.mean()), 4),
                   "evaluated_profiles": int(len(y))}  # fmt: skip
        final = _fit(test[1], test[2])
        people = self._people(ws, now)
        ids = sorted(people)
        scores = final.predict_proba(_matrix([people[i] for i in ids]))[:, 1] if ids else np.array([])
        doc = {**described, "features": list(FEATURES), "algorithm": "logistic regression on log1p features "
               "(scikit-learn), missing values imputed with the median and flagged",
               "split": {"trained_on_features_as_of": train_at.isoformat(), "evaluated_on_features_as_of":
                         test_at.isoformat(), "evaluated_until": now.isoformat(), "training_profiles": len(train[0])},
               "metrics": metrics}  # fmt: skip
        details = {"horizon_days": h}
        return doc, {pid: (round(float(s), 4), {"probability": round(float(s), 4), **details})
                     for pid, s in zip(ids, scores)}  # fmt: skip

    def _examples(self, ws: str, at: datetime, horizon: timedelta,
                  outcome: Callable[[bool, bool], bool]) -> tuple[list[str], np.ndarray, np.ndarray]:  # fmt: skip
        people = self._people(ws, at)
        active, ordered, _ = self.store.outcomes(ws, at, at + horizon)
        ids = sorted(people)
        y = np.array([1 if outcome(pid in active, pid in ordered) else 0 for pid in ids], dtype=int)
        return ids, _matrix([people[i] for i in ids]), y

    def _enough(self, ids: list[str], y: np.ndarray, label: str, at: datetime, h: int, what: str) -> None:
        positives = int(y.sum()) if len(y) else 0
        if len(ids) < self.settings.min_people or min(positives, len(ids) - positives) < MIN_OF_EACH_OUTCOME:
            raise _NotEnough(
                f"the {label} cut-off ({at.date().isoformat()}, {h} days before the next one) needs at least "
                f"{self.settings.min_people} people active before it, at least {MIN_OF_EACH_OUTCOME} of them with "
                f"{what} in the {h} days after and {MIN_OF_EACH_OUTCOME} without; it has {len(ids)} people, "
                f"{positives} with. Import more history (`cdp import`) or wait for it to grow"
            )

    # Lifetime value -----------------------------------------------------------------------------

    def _ltv(self, ws: str, now: datetime) -> tuple[dict[str, Any], dict[str, tuple[float, dict[str, Any]]]]:
        span = self.store.history_span(ws)
        if span is None:
            raise _NotEnough("there is no activity yet: BG/NBD needs customers with orders")
        history_days = (now - span[0]).days
        holdout_days = max(7, min(self.settings.ltv_horizon_days, history_days // 3))
        cut = now - timedelta(days=holdout_days)
        fitted_before = self._buyers(ws, cut)
        bg = clv.fit_bgnbd(*fitted_before[1:4])
        _, _, actual_days = self.store.outcomes(ws, cut, now)
        predicted = clv.expected_purchases(bg, float(holdout_days), *fitted_before[1:4])
        actual = np.array([max(actual_days.get(pid, 0), 0) for pid in fitted_before[0]], dtype=float)
        evaluation = {
            "holdout_days": holdout_days, "holdout_from": cut.isoformat(), "customers": len(fitted_before[0]),
            "predicted_purchases": round(float(predicted.sum()), 2), "actual_purchases": int(actual.sum()),
            "mean_absolute_error": round(float(np.abs(predicted - actual).mean()), 4),
            "correlation": _correlation(predicted, actual),
        }  # fmt: skip
        ids, frequency, recency, age, people = self._buyers(ws, now)
        bg = clv.fit_bgnbd(frequency, recency, age)
        horizon = float(self.settings.ltv_horizon_days)
        purchases = clv.expected_purchases(bg, horizon, frequency, recency, age)
        alive = clv.probability_alive(bg, frequency, recency, age)
        spend, spend_models = self._spend(people)
        scores: dict[str, tuple[float, dict[str, Any]]] = {}
        for i, pid in enumerate(ids):
            person = people[i]
            total = sum(person.orders_by_currency.values())
            value = {c: f"{float(purchases[i]) * n / total * spend[c].get(pid, person.mean_order_by_currency[c]):.2f}"
                     for c, n in sorted(person.orders_by_currency.items())}  # fmt: skip
            scores[pid] = (round(float(purchases[i]), 4), {
                "expected_purchases": round(float(purchases[i]), 4), "probability_alive": round(float(alive[i]), 4),
                "value": value, "horizon_days": self.settings.ltv_horizon_days})  # fmt: skip
        doc = {"horizon_days": self.settings.ltv_horizon_days, "time_unit": "days",
               "algorithm": "BG/NBD (Fader, Hardie and Lee 2005) for purchases, Gamma-Gamma (Fader and Hardie 2013) "
                            "for the spend per currency; maximum likelihood with SciPy",
               "parameters": {"bgnbd": {**bg.as_dict(), "log_likelihood": round(bg.log_likelihood, 3),
                                        "customers": bg.customers}, "gamma_gamma": spend_models},
               "evaluation": evaluation}  # fmt: skip
        return doc, scores

    def _buyers(self, ws: str, at: datetime) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, list[Person]]:
        people = [p for p in self._people(ws, at).values() if p.order_days > 0]
        people.sort(key=lambda p: p.profile_id)
        frequency = np.array([p.order_days - 1 for p in people], dtype=float)
        recency = np.array([p.order_span_days for p in people], dtype=float)
        age = np.array([max(p.first_order_days, p.order_span_days) for p in people], dtype=float)
        return [p.profile_id for p in people], frequency, recency, age, people

    def _spend(self, people: list[Person]) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
        """Expected spend per order of each buyer, per currency, where Gamma-Gamma can be fitted."""
        by_currency: dict[str, list[Person]] = {}
        for person in people:
            for currency in person.orders_by_currency:
                by_currency.setdefault(currency, []).append(person)
        spend: dict[str, dict[str, float]] = {c: {} for c in by_currency}
        models: dict[str, Any] = {}
        for currency, buyers in sorted(by_currency.items()):
            n = np.array([p.orders_by_currency[currency] for p in buyers], dtype=float)
            m = np.array([p.mean_order_by_currency[currency] for p in buyers], dtype=float)
            try:
                gg = clv.fit_gamma_gamma(n, m)
            except (clv.NotEnoughData, ValueError) as exc:
                models[currency] = {"status": "not_enough_data", "reason": str(exc),
                                    "instead": "each customer's own mean order value"}  # fmt: skip
                continue
            expected = clv.expected_spend(gg, n, m)
            spend[currency] = {p.profile_id: float(e) for p, e in zip(buyers, expected)}
            models[currency] = {**gg.as_dict(), "log_likelihood": round(gg.log_likelihood, 3), "customers": gg.customers}
        return spend, models

    # The sales forecast -------------------------------------------------------------------------

    def forecast(self, q: GetForecast) -> dict[str, Any]:
        from domain.forecast import NotEnoughHistory, fill_series, forecast  # statsmodels: imported when asked for

        if q.kpi not in FORECAST_KPIS:
            raise NotFound(f"no forecast of {q.kpi!r}; forecasts exist for {', '.join(FORECAST_KPIS)}",
                           code="unknown_forecast")  # fmt: skip
        if q.granularity not in ("week", "month"):
            raise Invalid("granularity must be week or month", code="bad_request")
        now = self.clock()
        periods = q.history_periods + 1  # and the partial one it starts in
        days = 7 * periods if q.granularity == "week" else 31 * periods
        start = now - timedelta(days=days)
        # Money KPIs answer per currency: a forecast per currency, never a sum across them.
        rows = self.store.kpis.kpi(q.kpi, KpiQuery(q.workspace_id, start, now, q.granularity, None, {}, 7.0))
        by_currency: dict[str, dict[Any, float]] = {}
        for row in rows:
            by_currency.setdefault(str(row.get("currency") or ""), {})[_period_day(row["period"])] = float(row["value"])
        answers = []
        for currency, points in sorted(by_currency.items()):
            # The first and the current period are partial (the range starts and ends inside them): whole ones only.
            series = fill_series(points, start.date(), now.date(), q.granularity)[1:-1]
            try:
                made = forecast(series, q.granularity, horizon=q.horizon, level=q.level)
            except NotEnoughHistory as exc:
                answers.append({"currency": currency, "status": "not_enough_data", "reason": str(exc)})
                continue
            answers.append({"currency": currency, "status": "forecast", **made.as_dict()})
        if not answers:
            answers.append({"status": "not_enough_data", "reason": f"no {q.kpi} in the last {q.history_periods} "
                            f"{q.granularity}s: a forecast needs at least 8 {q.granularity}s with some"})  # fmt: skip
        answer = {"kpi": q.kpi, "granularity": q.granularity, "horizon": q.horizon, "level": q.level,
                  "forecasts": answers}  # fmt: skip
        if q.kpi == "won_revenue":
            answer["open_pipeline"] = self._open_pipeline(q.workspace_id, start, now)
        return answer

    def _open_pipeline(self, ws: str, start: datetime, now: datetime) -> list[dict[str, Any]]:
        """What the opportunities open now may still bring, per currency: their amounts weighted by their
        probabilities (the pipeline_value KPI now), how many there are, and how long a won deal took to close
        over the same history (the series forecast says how much is won a period; this, what is in flight)."""
        total = KpiQuery(ws, start, now, "total", None, {}, 7.0)
        pipeline = self.store.kpis.kpi("pipeline_value", total)
        cycle = self.store.kpis.kpi("average_sales_cycle", total)
        rate = self.store.kpis.kpi("win_rate", total)
        days = next((r["value"] for r in cycle if r.get("value") is not None), None)
        won = next((r["value"] for r in rate if r.get("value") is not None), None)
        return [{"currency": r["currency"], "weighted_value": r["value"], "open_opportunities": r["open_opportunities"],
                 "win_rate": won, "average_sales_cycle_days": None if days is None else round(float(days), 1)}
                for r in sorted(pipeline, key=lambda r: r["currency"])]  # fmt: skip


class _NotEnough(ValueError):
    """Too little history for a model; the message says what is needed."""


def _matrix(people: list[Person]) -> np.ndarray:
    if not people:
        return np.zeros((0, len(FEATURES)))
    x = np.array([[p.features[f] for f in FEATURES] for p in people], dtype=float)
    return np.log1p(np.clip(x, 0, None), where=~np.isnan(x), out=np.full_like(x, np.nan))


def _fit(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                          StandardScaler(), LogisticRegression(max_iter=2000))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant feature of a small workspace is not a problem to report
        model.fit(x, y)
    return model


def _lift(y: np.ndarray, p: np.ndarray) -> float | None:
    """The outcome's rate among the top tenth by score, over its rate among all."""
    if not len(y) or not y.mean():
        return None
    top = np.argsort(-p)[: max(1, math.ceil(len(p) / 10))]
    return round(float(y[top].mean() / y.mean()), 3)


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or not a.std() or not b.std():
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 4)


def _period_day(value: Any) -> Any:
    from datetime import date

    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
