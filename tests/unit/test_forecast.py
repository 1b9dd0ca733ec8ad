"""The KPI forecast (domain/forecast.py): model choice, intervals, the held-out MAPE, the period helpers.

Every series is simulated from a fixed seed, so the runs are the same each time.
"""

from __future__ import annotations

import json
import math
import warnings
from datetime import date, datetime, timedelta

import numpy as np
import pytest

from domain.errors import Invalid
from domain.forecast import (
    Forecast,
    ForecastPoint,
    NotEnoughHistory,
    fill_series,
    forecast,
    period_starts,
)

MONDAY = date(2024, 1, 1)


def weeks(values: list[float] | np.ndarray, start: date = MONDAY) -> list[tuple[date, float]]:
    return [(start + timedelta(days=7 * i), float(v)) for i, v in enumerate(values)]


def months(values: list[float] | np.ndarray, year: int = 2022) -> list[tuple[date, float]]:
    return [(date(year + i // 12, i % 12 + 1, 1), float(v)) for i, v in enumerate(values)]


def trend(n: int, seed: int, level: float = 1000.0, slope: float = 25.0, noise: float = 50.0) -> np.ndarray:
    """A linear trend plus Gaussian noise: what the damped-trend model should continue."""
    return level + slope * np.arange(n) + np.random.default_rng(seed).normal(0.0, noise, n)


# --- the forecast on a known trend -------------------------------------------------------------------------------

def test_a_linear_trend_is_continued_with_widening_intervals_around_it() -> None:
    n, horizon = 40, 4
    result = forecast(weeks(trend(n, seed=7)), "week", horizon=horizon, level=0.8)

    assert result.model == "ETS(A,Ad,N)"
    assert result.granularity == "week" and result.level == 0.8
    assert [p.period_start for p in result.points] == [MONDAY + timedelta(weeks=n + h) for h in range(horizon)]
    values = [p.value for p in result.points]
    assert all(b > a for a, b in zip(values, values[1:])), values  # still rising
    for h, p in enumerate(result.points):
        truth = 1000.0 + 25.0 * (n + h)  # the noise-free line
        assert abs(p.value - truth) < 2 * 50.0, (h, p)
        assert p.lower < truth < p.upper, (h, p)
    widths = [p.upper - p.lower for p in result.points]
    assert all(b >= a - 1e-9 for a, b in zip(widths, widths[1:])), widths
    assert result.holdout_periods == horizon
    assert result.mape is not None and result.mape < 0.05  # noise of 50 on values near 2,000


def test_intervals_widen_with_the_horizon_when_the_level_wanders() -> None:
    walk = 500.0 + np.cumsum(np.random.default_rng(3).normal(0.0, 20.0, 30))
    result = forecast(weeks(walk), "week", horizon=6)
    widths = [p.upper - p.lower for p in result.points]
    assert all(b > a for a, b in zip(widths, widths[1:])), widths


def test_80_percent_intervals_hold_about_80_percent_of_simulated_futures() -> None:
    """Over 60 simulated trends, the share of the 240 future values inside the 80% intervals.

    The intervals leave out the uncertainty of the estimated parameters, so on 48 points the
    share sits a little under 80% (76% over 200 seeds, 72.5% over these 60; the module docstring
    says so); far under would mean intervals that are too narrow, near 100% too wide."""
    n, horizon, seeds = 48, 4, 60
    inside = 0
    for seed in range(seeds):
        y = trend(n + horizon, seed=100 + seed)
        result = forecast(weeks(y[:n]), "week", horizon=horizon, level=0.8, holdout=0)
        inside += sum(p.lower <= actual <= p.upper for p, actual in zip(result.points, y[n:]))
    share = inside / (seeds * horizon)
    assert 0.65 <= share <= 0.9, share


def test_a_wider_level_gives_wider_intervals_around_the_same_forecast() -> None:
    series = weeks(trend(30, seed=11))
    narrow, wide = forecast(series, "week", level=0.8), forecast(series, "week", level=0.95)
    for a, b in zip(narrow.points, wide.points):
        assert a.value == pytest.approx(b.value)
        assert b.lower < a.lower < a.value < a.upper < b.upper


# --- the held-out evaluation -------------------------------------------------------------------------------------

def test_mape_by_hand_on_a_series_flat_until_its_held_out_periods() -> None:
    """Six weeks of 100, then 80 and 125: the fit on the first six forecasts 100 for both held-out weeks.

    MAPE = (|80 − 100| / 80 + |125 − 100| / 125) / 2 = (0.25 + 0.2) / 2 = 0.225."""
    result = forecast(weeks([100.0] * 6 + [80.0, 125.0]), "week")
    assert result.holdout_periods == 2  # the horizon (4), at most a quarter of 8
    assert result.mape == pytest.approx(0.225)


def test_held_out_periods_with_a_zero_actual_are_left_out_of_the_mape() -> None:
    assert forecast(weeks([100.0] * 6 + [0.0, 125.0]), "week").mape == pytest.approx(0.2)
    assert forecast(weeks([100.0] * 6 + [0.0, 0.0]), "week").mape is None


def test_a_constant_series_is_forecast_exactly() -> None:
    result = forecast(weeks([250.0] * 12), "week", horizon=3)
    assert result.mape == 0.0
    assert [(p.value, p.lower, p.upper) for p in result.points] == [(250.0, 250.0, 250.0)] * 3


def test_mape_is_the_error_of_the_fit_without_the_held_out_periods_on_exactly_those() -> None:
    """Recomputed independently: a forecast of the series minus its last 5 periods, scored on those 5."""
    y = trend(30, seed=5)
    y[-2] = 0.0  # a held-out period without sales: not part of the mean
    series = weeks(y)
    result = forecast(series, "week", horizon=4, holdout=5)
    assert result.holdout_periods == 5

    earlier = forecast(series[:-5], "week", horizon=5, holdout=0)  # the same model, fitted on the first 25
    assert earlier.model == result.model
    actual = y[-5:]
    predicted = np.array([p.value for p in earlier.points])
    keep = actual != 0
    assert keep.sum() == 4
    assert result.mape == pytest.approx(float(np.mean(np.abs(actual[keep] - predicted[keep]) / actual[keep])))


def test_the_default_holdout_is_the_horizon_at_most_a_quarter_of_the_series() -> None:
    series = weeks(trend(20, seed=1))
    assert forecast(series, "week", horizon=3).holdout_periods == 3
    assert forecast(series, "week", horizon=12).holdout_periods == 5
    zero = forecast(series, "week", holdout=0)
    assert zero.holdout_periods == 0 and zero.mape is None


# --- the model the history can carry ------------------------------------------------------------------------------

@pytest.mark.parametrize(("series", "granularity", "model"), [
    (weeks(trend(11, seed=2)), "week", "ETS(A,N,N)"),  # 9 fitted periods after 2 held out: no trend
    (weeks(trend(16, seed=2)), "week", "ETS(A,Ad,N)"),  # 12 fitted
    (weeks(trend(104, seed=2)), "week", "ETS(A,Ad,N)"),  # 100 fitted: under two years of weeks
    (months(trend(24, seed=2)), "month", "ETS(A,Ad,N)"),  # 20 fitted: under two years of months
])
def test_the_model_follows_the_length_of_the_fitted_history(series: list, granularity: str, model: str) -> None:
    assert forecast(series, granularity).model == model


def test_two_years_of_monthly_history_forecast_the_season() -> None:
    t = np.arange(40)
    y = 10_000 + 50 * t + 3_000 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(4).normal(0, 300, 40)
    result = forecast(months(y), "month", horizon=12)
    assert result.model == "ETS(A,Ad,A)"
    assert result.points[0].period_start == date(2025, 5, 1)
    by_month = {p.period_start.month: p.value for p in result.points}
    assert by_month[4] - by_month[10] > 4_000  # the sine's peak (April) against its trough (October)
    assert result.mape is not None and result.mape < 0.1


# --- clipping, the returned shape, warnings ----------------------------------------------------------------------

def test_forecasts_and_bounds_of_a_falling_series_are_clipped_at_zero() -> None:
    result = forecast(weeks(trend(24, seed=9, level=1000.0, slope=-35.0, noise=20.0)), "week", horizon=12)
    assert all(p.value >= 0 and p.lower >= 0 and p.upper >= 0 for p in result.points)
    assert result.points[-1].value == 0.0 and result.points[-1].lower == 0.0
    assert result.points[0].value > 0.0  # the first week is still above zero


def test_as_dict_is_json_ready() -> None:
    result = forecast(weeks(trend(12, seed=6)), "week", horizon=2)
    document = json.loads(json.dumps(result.as_dict()))
    assert set(document) == {"granularity", "level", "model", "history", "points", "mape", "holdout_periods"}
    assert document["history"][0] == {"period_start": "2024-01-01", "value": result.history[0][1]}
    assert [p["period_start"] for p in document["points"]] == ["2024-03-25", "2024-04-01"]
    assert set(document["points"][0]) == {"period_start", "value", "lower", "upper"}
    assert isinstance(result, Forecast) and isinstance(result.points[0], ForecastPoint)
    assert result.history == weeks(trend(12, seed=6))


def test_statsmodels_warnings_stay_inside_and_the_global_filters_are_untouched() -> None:
    lumpy = np.random.default_rng(0).choice([0.0, 0.0, 0.0, 5e6], 30)
    before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forecast(weeks(lumpy), "week", horizon=6)
        forecast(weeks([0.0] * 10), "week")
        forecast(weeks([100.0] * 19 + [100.0000001]), "week")
    assert warnings.filters == before


def test_the_same_series_gives_the_same_forecast() -> None:
    series = weeks(trend(30, seed=8))
    assert forecast(series, "week") == forecast(series, "week")


# --- period_starts and fill_series -------------------------------------------------------------------------------

def test_weeks_start_on_mondays_and_cover_both_ends() -> None:
    # Wednesday 2025-12-31 to Tuesday 2026-01-13: the weeks of Monday 29 December, 5 and 12 January
    assert period_starts(date(2025, 12, 31), date(2026, 1, 13), "week") == [
        date(2025, 12, 29), date(2026, 1, 5), date(2026, 1, 12)]
    assert period_starts(date(2026, 1, 5), date(2026, 1, 5), "week") == [date(2026, 1, 5)]


def test_months_start_on_the_first_and_cover_both_ends() -> None:
    assert period_starts(date(2025, 11, 15), date(2026, 2, 1), "month") == [
        date(2025, 11, 1), date(2025, 12, 1), date(2026, 1, 1), date(2026, 2, 1)]
    assert period_starts(date(2024, 2, 29), date(2024, 2, 29), "month") == [date(2024, 2, 1)]


def test_fill_series_fills_a_gap_with_zero() -> None:
    weekly = {date(2026, 1, 5): 10.0, date(2026, 1, 19): 30.0}
    assert fill_series(weekly, date(2026, 1, 1), date(2026, 1, 25), "week") == [
        (date(2025, 12, 29), 0.0), (date(2026, 1, 5), 10.0), (date(2026, 1, 12), 0.0), (date(2026, 1, 19), 30.0)]
    monthly = [(date(2025, 1, 1), 5), (date(2025, 3, 1), 7.5)]
    assert fill_series(monthly, date(2025, 1, 1), date(2025, 4, 30), "month") == [
        (date(2025, 1, 1), 5.0), (date(2025, 2, 1), 0.0), (date(2025, 3, 1), 7.5), (date(2025, 4, 1), 0.0)]


def test_a_filled_series_can_be_forecast() -> None:
    points = {d: float(i + 1) * 100 for i, d in enumerate(period_starts(date(2025, 1, 1), date(2025, 3, 31), "week"))
              if i % 4}
    filled = fill_series(points, date(2025, 1, 1), date(2025, 3, 31), "week")
    assert len(filled) == 14 and filled[0] == (date(2024, 12, 30), 0.0)
    assert len(forecast(filled, "week").points) == 4


@pytest.mark.parametrize(("call", "message"), [
    (lambda: period_starts(date(2026, 2, 1), date(2026, 1, 1), "week"), "end 2026-01-01 is before start 2026-02-01"),
    (lambda: period_starts(date(2026, 1, 1), date(2026, 2, 1), "day"), "granularity must be 'week' or 'month'"),
    (lambda: period_starts(datetime(2026, 1, 1), date(2026, 2, 1), "week"), "start must be a date"),
    (lambda: fill_series([(date(2026, 1, 5), 1.0), (date(2026, 1, 5), 2.0)], date(2026, 1, 1), date(2026, 2, 1),
                         "week"), "2026-01-05 appears twice"),
    (lambda: fill_series({date(2025, 12, 1): 1.0}, date(2026, 1, 1), date(2026, 2, 1), "month"),
     "2025-12-01 lies outside the periods 2026-01-01..2026-02-01: widen start and end"),
    (lambda: fill_series({date(2026, 1, 7): 1.0}, date(2026, 1, 1), date(2026, 2, 1), "week"),
     "2026-01-07 is not the start of a week (a Monday)"),
    (lambda: fill_series({date(2026, 1, 5): math.nan}, date(2026, 1, 1), date(2026, 2, 1), "week"),
     "the value of 2026-01-05 is nan: every period needs a finite number"),
])
def test_period_helpers_refuse_what_they_cannot_label(call, message: str) -> None:
    with pytest.raises(Invalid, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        call()


# --- what forecast refuses ---------------------------------------------------------------------------------------

def test_too_short_a_history_says_how_much_is_needed() -> None:
    with pytest.raises(NotEnoughHistory, match="at least 8 weekly periods of history, got 3"):
        forecast(weeks([1.0, 2.0, 3.0]), "week")
    with pytest.raises(NotEnoughHistory, match="at least 12 monthly periods of history, got 10"):
        forecast(months([1.0] * 10), "month", min_periods=12)
    with pytest.raises(NotEnoughHistory, match="got 0"):
        forecast([], "month")
    assert issubclass(NotEnoughHistory, Invalid) and issubclass(Invalid, ValueError)


SERIES = weeks(trend(12, seed=0))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"granularity": "day"}, "granularity must be 'week' or 'month', got 'day'"),
    ({"horizon": 0}, "horizon must be a whole number from 1 to 52 periods, got 0"),
    ({"horizon": 53}, "horizon must be a whole number from 1 to 52 periods, got 53"),
    ({"horizon": 2.5}, "horizon must be a whole number from 1 to 52 periods, got 2.5"),
    ({"horizon": True}, "horizon must be a whole number"),
    ({"level": 0.0}, r"level must be a probability strictly between 0 and 1 \(0.8 for an 80% interval\), got 0.0"),
    ({"level": 1}, "level must be a probability strictly between 0 and 1"),
    ({"level": 80}, "got 80"),
    ({"level": math.nan}, "level must be a probability"),
    ({"level": "0.8"}, "level must be a probability"),
    ({"holdout": 4}, r"holdout must be a whole number from 0 to 3 periods \(a quarter of the 12 periods"),
    ({"holdout": -1}, "holdout must be a whole number from 0 to 3"),
    ({"min_periods": 3}, "min_periods must be a whole number of at least 4 periods, got 3"),
])
def test_forecast_refuses_bad_parameters_naming_the_fix(kwargs: dict, message: str) -> None:
    arguments = {"series": SERIES, "granularity": "week"} | kwargs
    with pytest.raises(Invalid, match=message):
        forecast(**arguments)


def _with(index: int, pair: tuple) -> list[tuple]:
    series: list[tuple] = list(SERIES)
    series[index] = pair
    return series


@pytest.mark.parametrize(("series", "message"), [
    (_with(3, (SERIES[3][0], math.nan)), "the value of 2024-01-22 is nan: every period needs a finite number"),
    (_with(3, (SERIES[3][0], math.inf)), "the value of 2024-01-22 is inf"),
    (_with(3, (SERIES[3][0], "12")), "the value of 2024-01-22 is '12'"),
    (_with(3, (SERIES[3][0], None)), "the value of 2024-01-22 is None"),
    ([SERIES[1], SERIES[0], *SERIES[2:]], "2024-01-01 comes after 2024-01-08: sort the series by date"),
    ([SERIES[0], *SERIES], "2024-01-01 appears twice: give each period one value"),
    (SERIES[:5] + SERIES[6:], "the series has a gap between 2024-01-29 and 2024-02-12: fill the missing periods"),
    (_with(0, (date(2024, 1, 3), 1.0)), r"2024-01-03 is not the start of a week \(a Monday\)"),
    (_with(0, (datetime(2024, 1, 1), 1.0)), "a period start must be a date"),
    (_with(0, (date(2024, 1, 1),)), "each point is a \\(date, value\\) pair"),
    ({d: v for d, v in SERIES}, "series must be a list of \\(date, value\\) pairs, got dict"),
])
def test_forecast_refuses_a_malformed_series_naming_the_fix(series: object, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        forecast(series, "week")  # type: ignore[arg-type]


def test_a_monthly_series_must_be_labelled_by_first_days() -> None:
    with pytest.raises(Invalid, match=r"2024-03-31 is not the start of a month \(its first day\)"):
        forecast([(date(2024, 3, 31), 1.0)] * 9, "month")
