"""Forecasts of a KPI series (weekly or monthly revenue, won pipeline value) with prediction intervals.

The model is additive-error exponential smoothing (ETS), chosen by how much
history there is rather than by a search: a search over many models on a few
dozen points mostly fits noise, and its error on held-out periods would flatter
it. The rule, on the periods the model is fitted to:

- fewer than 12: ETS(A,N,N), a level only; a damped trend's five parameters
  (smoothing of level and slope, damping, initial level and slope) would be
  fitted on barely twice as many points;
- 12 or more: ETS(A,Ad,N), a damped trend, which continues a trend without
  extrapolating it for ever;
- two full seasons or more (24 months, 104 weeks): ETS(A,Ad,A) with 12 or 52
  seasons, started from the classical decomposition of the first seasons
  (statsmodels' "heuristic" initialisation) instead of estimating 11 or 51
  initial seasonal states by maximum likelihood.

Before the forecast, the same model is fitted without the last periods of the
history and scored on them (MAPE), so the error shown belongs to the model
that forecasts. Intervals are the model's exact ones with the residual
variance corrected for the degrees of freedom the fit used up (_fit_predict).
They still leave out the uncertainty of the estimated smoothing parameters and
slope, so on a few dozen periods an 80% interval holds about 70–78% of the
futures in simulation, not 80%. Revenue is never negative: forecasts and
bounds are clipped at 0.

Bad arguments raise `Invalid` (domain/errors.py, a ValueError) with a message that names the
fix. Pure functions over plain data; statsmodels (and with it pandas) is imported
on the first forecast only.
"""

from __future__ import annotations

import math
import numbers
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from statistics import NormalDist
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from domain.errors import Invalid

GRANULARITIES = ("week", "month")
MAX_HORIZON = 52
TREND_FROM = 12  # fitted periods from which the damped trend is used
MIN_PERIODS_FLOOR = 4  # below this even the level-only model has nothing left to score it on
_SEASON = {"week": 52, "month": 12}
_ADJECTIVE = {"week": "weekly", "month": "monthly"}
_UNIT = {"week": "a week (a Monday)", "month": "a month (its first day)"}
# catch_warnings swaps the process-wide filter list; one fit at a time keeps two threads from restoring each
# other's filters out of order (the fits hold the GIL anyway).
_FIT_LOCK = threading.Lock()


class NotEnoughHistory(Invalid):
    """The series is too short to fit and score a model; the message says how many periods are needed.

    Like every refusal here, an `Invalid` (so also a ValueError): the edges answer it as an invalid
    request with this message."""


@dataclass(frozen=True)
class ForecastPoint:
    period_start: date
    value: float
    lower: float  # bounds of the prediction interval at the forecast's `level`
    upper: float


@dataclass(frozen=True)
class Forecast:
    granularity: str  # "week" | "month"
    level: float  # of the prediction intervals, e.g. 0.8
    model: str  # the fitted model in ETS notation, e.g. "ETS(A,Ad,N)"
    history: list[tuple[date, float]]
    points: list[ForecastPoint]
    mape: float | None  # a fraction (0.07 is 7 %); None without held-out periods or when all their actuals are 0
    holdout_periods: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: dates as ISO strings, numbers as plain floats."""
        return {
            "granularity": self.granularity,
            "level": self.level,
            "model": self.model,
            "history": [{"period_start": d.isoformat(), "value": v} for d, v in self.history],
            "points": [{"period_start": p.period_start.isoformat(), "value": p.value, "lower": p.lower,
                        "upper": p.upper} for p in self.points],
            "mape": self.mape,
            "holdout_periods": self.holdout_periods,
        }


@dataclass(frozen=True)
class _Spec:
    trend: bool
    seasonal_periods: int | None

    @property
    def name(self) -> str:
        return f"ETS(A,{'Ad' if self.trend else 'N'},{'A' if self.seasonal_periods else 'N'})"


def period_starts(start: date, end: date, granularity: str) -> list[date]:
    """The periods covering [start, end], each by its first day: Mondays for weeks, the 1st for months.

    The same labels as the KPI queries (ClickHouse's toMonday / toStartOfMonth), so that a KPI
    series and its forecast line up."""
    _check_granularity(granularity)
    for name, value in (("start", start), ("end", end)):
        _check_day(value, name)
    if end < start:
        raise Invalid(f"end {end} is before start {start}: swap them")
    last = _period_start(end, granularity)
    out = [_period_start(start, granularity)]
    while out[-1] < last:
        out.append(_next_period(out[-1], granularity))
    return out


def fill_series(points: Mapping[date, float] | Sequence[tuple[date, float]], start: date, end: date,
                granularity: str) -> list[tuple[date, float]]:
    """Every period of [start, end] with its value, 0.0 where `points` has none.

    A KPI query returns no row for a period without sales; to the model a missing period must
    read as 0, not be skipped, or the series would compress time."""
    periods = period_starts(start, end, granularity)
    pairs = list(points.items()) if isinstance(points, Mapping) else list(points)
    values: dict[date, float] = {}
    for pair in pairs:
        day, value = _check_pair(pair, granularity)
        if day in values:
            raise Invalid(f"{day} appears twice: give each period one value (sum them)")
        if not periods[0] <= day <= periods[-1]:
            raise Invalid(f"{day} lies outside the periods {periods[0]}..{periods[-1]}: widen start and end "
                             "or leave it out")
        values[day] = value
    return [(p, values.get(p, 0.0)) for p in periods]


def forecast(series: list[tuple[date, float]], granularity: str, horizon: int = 4, level: float = 0.8,
             holdout: int | None = None, min_periods: int = 8) -> Forecast:
    """The next `horizon` periods of `series` with intervals at `level`, and the model's error on held-out periods.

    `series` is one value per period, consecutive and ascending (fill_series makes one). The
    model is first fitted without the last `holdout` periods (default: the horizon, at most a
    quarter of the series; 0 skips the check) and scored on them by MAPE, over the held-out
    periods with a non-zero actual; then it is refitted on the whole series for the forecast."""
    _check_granularity(granularity)
    _check_whole(horizon, "horizon", 1, MAX_HORIZON, "periods")
    _check_level(level)
    _check_whole(min_periods, "min_periods", MIN_PERIODS_FLOOR, None, "periods")
    history = _check_series(series, granularity)
    n = len(history)
    if n < min_periods:
        raise NotEnoughHistory(f"a forecast needs at least {min_periods} {_ADJECTIVE[granularity]} periods of "
                               f"history, got {n}")
    if holdout is None:
        holdout = min(horizon, n // 4)
    else:
        _check_whole(holdout, "holdout", 0, n // 4, f"periods (a quarter of the {n} periods of history)")
    values = np.array([v for _, v in history], dtype=float)
    spec = _choose(n - holdout, granularity)
    mape = None
    if holdout:
        predicted, _, _ = _fit_predict(values[:-holdout], spec, holdout, level)
        mape = _mape(values[-holdout:], np.maximum(predicted, 0.0))
    mean, lower, upper = _fit_predict(values, spec, horizon, level)
    starts = [history[-1][0]]
    for _ in range(horizon):
        starts.append(_next_period(starts[-1], granularity))
    points = [ForecastPoint(d, max(float(m), 0.0), max(float(lo), 0.0), max(float(hi), 0.0))
              for d, m, lo, hi in zip(starts[1:], mean, lower, upper)]
    return Forecast(granularity, float(level), spec.name, history, points, mape, holdout)


def _choose(fitted: int, granularity: str) -> _Spec:
    """The simplest model the fitted periods can carry (see the module docstring)."""
    season = _SEASON[granularity]
    if fitted >= 2 * season:
        return _Spec(trend=True, seasonal_periods=season)
    return _Spec(trend=fitted >= TREND_FROM, seasonal_periods=None)


def _fit_predict(values: np.ndarray, spec: _Spec, steps: int, level: float) -> tuple[np.ndarray, ...]:
    """Mean, lower and upper bound of the next `steps` periods after `values`, unclipped.

    The series is divided by its mean absolute value before fitting: the likelihood is the
    same up to a constant, but the optimiser finds better optima on values near 1 than on
    revenue in the millions. The forecast variance is statsmodels' exact one with the residual
    variance taken as SSE / (n − k) instead of SSE / n, k counting every state and parameter
    drawn from the data (as R's forecast::ets does; here also the heuristic seasonal start):
    without it, 80% intervals held 54–65% of simulated futures on 2–3 years of monthly data.
    A constant series has no variance to estimate: it gives its value with a zero-width interval."""
    if np.ptp(values) == 0:
        flat = np.full(steps, values[0])
        return flat, flat, flat
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    scale = float(np.mean(np.abs(values)))
    # A pandas series with a RangeIndex: statsmodels 0.15's get_prediction fails on a plain array (it reads
    # .index of the prediction), and an integer index has no frequency to warn about.
    endog = pd.Series(values / scale)
    m = spec.seasonal_periods
    with _quiet():
        model = ETSModel(endog, error="add", trend="add" if spec.trend else None, damped_trend=spec.trend,
                         seasonal="add" if m else None, seasonal_periods=m,
                         initialization_method="heuristic" if m else "estimated")
        fitted = model.fit(disp=False)
        prediction = fitted.get_prediction(start=len(values), end=len(values) + steps - 1)
        mean = np.asarray(prediction.predicted_mean, dtype=float) * scale
        variance = np.asarray(prediction.var_pred_mean, dtype=float) * scale**2
    n = len(values)
    k = len(fitted.params) + (m + 1 if m else 0)  # heuristic start: a level, a slope and m − 1 free seasons
    half = NormalDist().inv_cdf(0.5 + level / 2) * np.sqrt(variance * n / max(n - k, 1))
    if not (np.isfinite(mean).all() and np.isfinite(half).all()):
        raise ArithmeticError(f"{spec.name} gave a non-finite forecast for a series of {n} periods")
    return mean, mean - half, mean + half


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence what statsmodels says while fitting, here only: a fit that stops short of the optimum
    (ConvergenceWarning), index frequencies (ValueWarning), floating-point noise of the optimiser's
    trial steps. The caller judges the result by its held-out error, not by these."""
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, ValueWarning

    with _FIT_LOCK, warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", ValueWarning)
        yield


def _mape(actual: np.ndarray, predicted: np.ndarray) -> float | None:
    """Mean of |actual − predicted| / |actual| over the periods with a non-zero actual (None if there are none)."""
    nonzero = actual != 0
    if not nonzero.any():
        return None
    return float(np.mean(np.abs(actual[nonzero] - predicted[nonzero]) / np.abs(actual[nonzero])))


def _period_start(d: date, granularity: str) -> date:
    return d - timedelta(days=d.weekday()) if granularity == "week" else d.replace(day=1)


def _next_period(d: date, granularity: str) -> date:
    if granularity == "week":
        return d + timedelta(days=7)
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


def _check_granularity(granularity: object) -> None:
    if granularity not in GRANULARITIES:
        raise Invalid(f"granularity must be 'week' or 'month', got {granularity!r}")


def _check_day(value: object, name: str) -> None:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise Invalid(f"{name} must be a date (datetime.date, not a datetime), got {value!r}")


def _check_whole(value: object, name: str, low: int, high: int | None, unit: str) -> None:
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise Invalid(f"{name} must be a whole number {span} {unit}, got {value!r}")


def _check_level(level: object) -> None:
    real = isinstance(level, numbers.Real) and not isinstance(level, bool)
    if not real or not 0 < float(level) < 1:
        raise Invalid(f"level must be a probability strictly between 0 and 1 (0.8 for an 80% interval), "
                         f"got {level!r}")


def _check_pair(pair: object, granularity: str) -> tuple[date, float]:
    """One (period start, value) pair, as a date and a finite float."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise Invalid(f"each point is a (date, value) pair, got {pair!r}")
    day, value = pair
    _check_day(day, "a period start")
    if _period_start(day, granularity) != day:
        raise Invalid(f"{day} is not the start of {_UNIT[granularity]}: label each period by its first day "
                         "(period_starts gives them)")
    number = isinstance(value, (numbers.Real, Decimal)) and not isinstance(value, bool)
    if not number or not math.isfinite(float(value)):
        raise Invalid(f"the value of {day} is {value!r}: every period needs a finite number (0.0 for none)")
    return day, float(value)


def _check_series(series: object, granularity: str) -> list[tuple[date, float]]:
    """The series as (date, float) pairs, after checking that its periods are ascending and consecutive."""
    if not isinstance(series, (list, tuple)):
        raise Invalid(f"series must be a list of (date, value) pairs, got {type(series).__name__}")
    history = [_check_pair(pair, granularity) for pair in series]
    for (before, _), (day, _) in zip(history, history[1:]):
        if day == before:
            raise Invalid(f"{day} appears twice: give each period one value (sum them)")
        if day < before:
            raise Invalid(f"{day} comes after {before}: sort the series by date")
        if day != _next_period(before, granularity):
            raise Invalid(f"the series has a gap between {before} and {day}: fill the missing periods with "
                             "0.0 (fill_series does)")
    return history
