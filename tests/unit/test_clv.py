"""The BG/NBD and Gamma-Gamma lifetime value models (domain/clv.py) against their papers and themselves.

The CDNOW figures come from the copies of the papers' data sets that the `lifetimes` package ships;
the package itself is never imported (it is unmaintained, so its import may break with a future
numpy, scipy or pandas), only its data files are read through the installed distribution's metadata.
"""

from __future__ import annotations

import csv
import importlib.metadata
import time
import warnings

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import approx_fprime
from scipy.special import betaln

from domain import clv
from domain.clv import (
    BgNbd,
    GammaGamma,
    InvalidSummary,
    NotEnoughData,
    expected_purchases,
    expected_spend,
    fit_bgnbd,
    fit_gamma_gamma,
    predicted_ltv,
    probability_alive,
    simulate_bgnbd,
)
from domain.errors import Invalid

# Fader, Hardie & Lee (2005), Marketing Science 24(2):275-284: the CDNOW estimates (time in weeks).
FHL_2005 = BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426)


def _lifetimes_csv(name: str) -> dict[str, np.ndarray]:
    path = importlib.metadata.distribution("lifetimes").locate_file(f"lifetimes/datasets/{name}")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {column: np.array([float(row[column]) for row in rows]) for column in rows[0]}


@pytest.fixture(scope="module")
def cdnow() -> dict[str, np.ndarray]:
    return _lifetimes_csv("cdnow_customers_summary.csv")


@pytest.fixture(scope="module")
def cdnow_spend() -> dict[str, np.ndarray]:
    # Columns are the papers' names: ID, x (frequency), t_x (recency), T, zbar (mean repeat spend).
    data = _lifetimes_csv("cdnow_customers_summary_with_transactions.csv")
    assert {"x", "t_x", "T", "zbar"} <= data.keys()
    return data


@pytest.fixture(scope="module")
def cdnow_fit(cdnow: dict[str, np.ndarray]) -> BgNbd:
    return fit_bgnbd(cdnow["frequency"], cdnow["recency"], cdnow["T"])


# ---------------------------------------------------------------------------------------------
# The papers


def test_bgnbd_reproduces_fader_hardie_lee_2005_on_cdnow(cdnow: dict[str, np.ndarray]) -> None:
    """Fader, Hardie & Lee (2005), "'Counting Your Customers' the Easy Way: An Alternative to the
    Pareto/NBD Model", Marketing Science 24(2):275-284: on the CDNOW cohort (2,357 customers, 39
    weeks of calibration) they report r = 0.243, alpha = 4.414, a = 0.793, b = 2.426 and a
    log-likelihood of -9582.4. Asserted to the precision they are published with."""
    assert cdnow["frequency"].size == 2357
    started = time.perf_counter()
    model = fit_bgnbd(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    elapsed = time.perf_counter() - started

    assert model.r == pytest.approx(0.243, abs=0.001)
    assert model.alpha == pytest.approx(4.414, abs=0.01)
    assert model.a == pytest.approx(0.793, abs=0.01)
    assert model.b == pytest.approx(2.426, abs=0.01)
    assert model.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    assert model.customers == 2357
    assert model.as_dict() == {"r": model.r, "alpha": model.alpha, "a": model.a, "b": model.b}
    assert elapsed < 5.0  # about 0.2 s here; generous so a loaded machine does not fail it


def test_expected_purchases_of_the_papers_customer(cdnow_fit: BgNbd) -> None:
    """FHL (2005) work through a customer with x = 2, t_x = 30.43, T = 38.86 weeks, who is expected to
    make 1.226 purchases in the next 39 weeks. Recomputed here from eq. 10 with the published (rounded)
    parameters it is 1.22603; with our unrounded fit 1.22591. Both round to the paper's figure."""
    assert expected_purchases(FHL_2005, 39, 2, 30.43, 38.86)[0] == pytest.approx(1.226, abs=5e-4)
    assert expected_purchases(cdnow_fit, 39, 2, 30.43, 38.86)[0] == pytest.approx(1.226, abs=5e-4)


def _expected_purchases_by_quadrature(model: BgNbd, t: float, x: float, tx: float, T: float) -> float:
    """Eq. 10 without hypergeometric functions, as an independent check.

    Given alive at T, λ | history ~ Gamma(r+x, alpha+T) and p | history ~ Beta(a, b+x), and an active
    customer makes (1 - e^{-λpt})/p purchases in expectation (FHL 2005); averaging over λ in
    closed form leaves a one-dimensional integral over p, done with quad's algebraic weight.
    """
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    rx = r + x

    def integrand(p: float) -> float:
        gain = -np.expm1(-rx * np.log1p(p * t / (alpha + T))) / p if p > 0 else rx * t / (alpha + T)
        return gain * np.exp((b + x - 1.0) * np.log1p(-p) - betaln(a, b + x))

    top = min(1.0, 100.0 / (b + x))  # the Beta(a, b+x) mass beyond is below e^-100
    alive, _ = quad(integrand, 0.0, top, weight="alg", wvar=(a - 1.0, 0.0), limit=200, epsrel=1e-11)
    return alive * float(probability_alive(model, x, tx, T)[0])


@pytest.mark.parametrize(
    ("t", "x", "tx", "T"),
    [
        (39.0, 2, 30.43, 38.86),
        (39.0, 0, 0.0, 38.86),
        (1e-3, 3, 10.0, 20.0),
        (365.0, 50, 364.0, 365.0),
        (1.0, 500, 300.0, 365.0),  # long dead: about 7.7e-40, far below where 1 - 2F1 could cancel
        (5000.0, 10_000, 3640.0, 3650.0),  # a direct evaluation of eq. 10 overflows 2F1 here
    ],
)
def test_expected_purchases_agree_with_quadrature_for_small_and_large_histories(
    t: float, x: int, tx: float, T: float
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = expected_purchases(FHL_2005, t, x, tx, T)[0]
    assert got == pytest.approx(_expected_purchases_by_quadrature(FHL_2005, t, x, tx, T), rel=1e-8)


# (r, alpha, a, b, x, T, t, purchases of a customer active at T) with the last figure from eq. 10
# evaluated by mpmath at 50 digits (mpmath is not a dependency; the figures were computed once).
# The rows are where scipy's 2F1 fails or misleads in a direct evaluation: it returns NaN for the
# first three (w = t/(alpha+T+t) near 1, integer parameters), the 0/0 at a = 1, a large a with x = 0
# where Euler's form is 1e-16 times 2e15, w near 1 with large x, a tiny w, and x = 25,090.
MPMATH = [
    (0.053450434967420045, 26.11800706410093, 0.7790405106914661, 480.0930039359044, 0, 12.796568740223902,
     79358.99435867829, 60.45169871439961),
    (0.07509205309963636, 0.06374279514172117, 1.613494435568558, 289.956699934238, 0, 77.97139645494397,
     36551.708383942416, 18.878442500595575),
    (1.0, 0.18942327782751522, 15.0, 1.0, 136, 56.10031995727725, 3144.6718957473445, 10.785714285714286),
    (3.0, 2.9306501879019295, 1.0, 72.0, 98, 317.87522159210823, 282.7413475088473, 71.54540960599772),
    (0.4375812624997691, 16.552996995176393, 19.193803971055434, 0.17167075567511889, 0, 74.03045937364085,
     581.0126887865787, 0.5877842536937888),
    (0.022243265651770528, 0.19087989991504936, 0.774037471387301, 36.57798931686141, 2133, 0.38319593372698024,
     10793.687751904223, 78799.13240573846),
    (0.11113626504019858, 0.9215044405702375, 4.842386547718198, 0.15591605278030676, 717, 4397.217532902626,
     0.037676928934618416, 0.006143049984658533),
    (13.0, 87.88043879571838, 1.0, 1.0, 25090, 0.39200656520406313, 169.03305019499794, 26851.139065229545),
    # lifetimes issue #302: a one-time buyer one day old, 30 days ahead; lifetimes returns NaN.
    (0.11, 2.24, 0.31, 0.50, 0, 1.0, 30.0, 0.5645886155327847),
    (0.243, 4.414, 0.793, 2.426, 2, 38.86, 39.0, 1.687399305805313),  # the paper's customer, before P(alive)
]


@pytest.mark.parametrize(("r", "alpha", "a", "b", "x", "T", "t", "expected"), MPMATH)
def test_active_customers_purchases_match_mpmath(
    r: float, alpha: float, a: float, b: float, x: int, T: float, t: float, expected: float
) -> None:
    """x = 0 makes P(alive) = 1, and recency = T makes it 1/(1 + a/(b+x-1)); both isolate eq. 10's rest."""
    model = BgNbd(r, alpha, a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = expected_purchases(model, t, x, T if x else 0.0, T)[0]
    alive = 1.0 if x == 0 else 1.0 / (1.0 + a / (b + x - 1.0))
    assert got == pytest.approx(expected * alive, rel=1e-9)


def test_hypergeometric_and_quadrature_paths_agree_where_both_apply(cdnow: dict[str, np.ndarray]) -> None:
    """The 2F1 path serves w <= 0.9 and the quadrature the rest; on the CDNOW customers over horizons
    where both work they must give the same numbers, so the switch between them is seamless."""
    model = FHL_2005
    x, T = cdnow["frequency"], cdnow["T"]
    for horizon in (1.0, 10.0, 39.0, 52.0):
        s = horizon / (model.alpha + T)
        by_series = clv._alive_purchases(model, x, s)
        by_quadrature = clv._alive_purchases_by_quadrature(model.a, model.r + x, model.b + x, s)
        np.testing.assert_allclose(by_series, by_quadrature, rtol=1e-10)
    # Just either side of the switch (w = 0.9 is t = 9·(alpha+T)) the two paths meet.
    switch = 9.0 * (model.alpha + 20.0)
    below, above = expected_purchases(model, switch * np.array([1 - 1e-12, 1 + 1e-12]), 3, 15.0, 20.0)
    assert above == pytest.approx(below, rel=1e-10)


def test_expected_purchases_grow_with_the_horizon_and_start_at_zero() -> None:
    horizons = np.array([0.0, 1.0, 10.0, 39.0, 100.0, 1000.0])
    values = expected_purchases(FHL_2005, horizons, 2, 30.43, 38.86)
    assert values[0] == 0.0
    assert np.all(np.diff(values) > 0)
    # Broadcasting: one horizon over many customers keeps the customers' shape.
    assert expected_purchases(FHL_2005, 39, [0, 2, 7], [0, 30.43, 29.43], 38.86).shape == (3,)


def test_expected_purchases_are_continuous_through_a_equal_to_one() -> None:
    """(a+b+x-1)/(a-1) · (1 - 2F1) is 0/0 at a = 1; the limit must match its neighbours."""
    values = [
        expected_purchases(BgNbd(0.5, 5.0, a, 2.5), [10.0, 100.0], [3, 0], [20.0, 0.0], [30.0, 30.0])
        for a in (1 - 1e-5, 1.0, 1 + 1e-5)
    ]
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values[1], values[0], rtol=1e-4)
    np.testing.assert_allclose(values[1], values[2], rtol=1e-4)


def test_probability_alive_properties() -> None:
    # In the BG/NBD a customer can only drop out right after a repeat purchase.
    assert np.all(probability_alive(FHL_2005, [0, 0], [0.0, 0.0], [1.0, 1e4]) == 1.0)
    ages = np.array([30.43, 38.86, 52.0, 104.0, 520.0])
    by_age = probability_alive(FHL_2005, 2, 30.43, ages)
    assert by_age[0] == pytest.approx(1.0 / (1.0 + 0.793 / (2.426 + 1.0)))  # just bought: only the dropout coin
    assert np.all(np.diff(by_age) < 0)  # silence since the last purchase makes death likelier
    by_recency = probability_alive(FHL_2005, 2, np.array([1.0, 10.0, 30.43, 38.86]), 38.86)
    assert np.all(np.diff(by_recency) > 0)
    # Large counts and long silences stay in [0, 1] with no overflow warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extreme = probability_alive(FHL_2005, [10_000, 10_000, 1], [3650.0, 1.0, 0.0], [3650.0, 3650.0, 1e6])
    assert np.all((extreme >= 0) & (extreme <= 1)) and extreme[1] == 0.0 and extreme[0] > 0.99


def test_gamma_gamma_reproduces_fader_hardie_2013_on_cdnow(cdnow_spend: dict[str, np.ndarray]) -> None:
    """Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary Value" (after Colombo & Jiang 1999):
    on the 946 CDNOW customers with at least one repeat purchase they report p = 6.25, q = 3.74,
    gamma = 15.44 (our v)."""
    started = time.perf_counter()
    model = fit_gamma_gamma(cdnow_spend["x"], cdnow_spend["zbar"])
    elapsed = time.perf_counter() - started
    assert model.customers == 946
    assert model.p == pytest.approx(6.25, abs=0.01)
    assert model.q == pytest.approx(3.74, abs=0.01)
    assert model.v == pytest.approx(15.44, abs=0.02)
    assert np.isfinite(model.log_likelihood)
    assert model.as_dict() == {"p": model.p, "q": model.q, "v": model.v}
    assert elapsed < 5.0


def test_expected_spend_shrinks_towards_the_population_mean() -> None:
    model = GammaGamma(p=6.25, q=3.74, v=15.44)
    population = 6.25 * 15.44 / (3.74 - 1.0)
    spend = expected_spend(model, [0, 1, 10, 1000], [0.0, 100.0, 100.0, 100.0])
    assert spend[0] == pytest.approx(population)  # no repeat purchase: monetary is not looked at
    assert np.all(np.diff(spend[1:]) > 0) and np.all((spend[1:] > population) & (spend[1:] < 100.0))
    assert spend[-1] == pytest.approx(100.0, rel=0.01)
    assert expected_spend(model, 1, 20.0)[0] == pytest.approx(6.25 * (15.44 + 20.0) / (6.25 + 3.74 - 1.0))
    # Without a finite population mean (q <= 1) a newcomer's expected spend is infinite, not an error.
    assert expected_spend(GammaGamma(2.0, 0.5, 10.0), [0, 3], [0.0, 20.0])[0] == np.inf


def test_predicted_ltv_is_purchases_times_spend(cdnow: dict[str, np.ndarray]) -> None:
    gg = GammaGamma(p=6.25, q=3.74, v=15.44)
    x, tx, T = cdnow["frequency"][:50], cdnow["recency"][:50], cdnow["T"][:50]
    m = np.where(x > 0, 20.0 + x, 0.0)
    ltv = predicted_ltv(FHL_2005, gg, 52, x, tx, T, m)
    np.testing.assert_allclose(ltv, expected_purchases(FHL_2005, 52, x, tx, T) * expected_spend(gg, x, m))
    assert ltv.shape == (50,) and np.all(ltv > 0)


# ---------------------------------------------------------------------------------------------
# Recovery from the models' own data

TRUTH = {"r": 0.5, "alpha": 5.0, "a": 0.8, "b": 2.5}


def test_simulated_summaries_are_consistent_and_reproducible() -> None:
    x, tx, T = simulate_bgnbd(TRUTH, 2000, 52.0, np.random.default_rng(7))
    again = simulate_bgnbd(BgNbd(**TRUTH), 2000, 52.0, np.random.default_rng(7))
    for mine, theirs in zip((x, tx, T), again):
        np.testing.assert_array_equal(mine, theirs)
    assert x.shape == tx.shape == T.shape == (2000,)
    assert np.all(x == np.round(x)) and np.all(x >= 0)
    assert np.all(tx[x == 0] == 0) and np.all((tx[x > 0] > 0) & (tx[x > 0] <= T[x > 0]))
    ages = np.linspace(1.0, 100.0, 300)
    _, tx_aged, T_aged = simulate_bgnbd(TRUTH, 300, ages, np.random.default_rng(8))
    np.testing.assert_array_equal(T_aged, ages)
    assert np.all(tx_aged <= T_aged)


def test_simulated_frequencies_follow_the_models_marginal_distribution() -> None:
    """FHL (2005) eq. 8 gives P(X(T) = x); 200,000 draws must match it to sampling error."""
    r, alpha, a, b, T = 0.5, 5.0, 0.8, 2.5, 52.0
    x, _, _ = simulate_bgnbd(TRUTH, 200_000, T, np.random.default_rng(11))
    from scipy.special import gammaln

    def pmf(k: int) -> float:
        nbd = lambda j: np.exp(  # noqa: E731
            gammaln(r + j) - gammaln(r) - gammaln(j + 1) + r * np.log(alpha / (alpha + T)) + j * np.log(T / (alpha + T))
        )
        value = np.exp(betaln(a, b + k) - betaln(a, b)) * nbd(k)
        if k > 0:
            value += np.exp(betaln(a + 1, b + k - 1) - betaln(a, b)) * (1.0 - sum(nbd(j) for j in range(k)))
        return float(value)

    for k in range(6):
        expected = pmf(k)
        standard_error = np.sqrt(expected * (1 - expected) / x.size)
        assert abs(np.mean(x == k) - expected) < 4 * standard_error


def test_bgnbd_recovers_the_parameters_it_simulated() -> None:
    """5,000 customers observed for 52 periods. Over 40 seeds the estimates' spread (relative sd)
    was r 2.6%, alpha 4.1%, a 6.9%, b 10.2% (dropout is only seen through repeat buyers, and a, b
    are 0.93 correlated), with no visible bias at 200,000 customers; the tolerances are about
    three of those standard deviations."""
    x, tx, T = simulate_bgnbd(TRUTH, 5000, 52.0, np.random.default_rng(0))
    started = time.perf_counter()
    model = fit_bgnbd(x, tx, T)
    assert time.perf_counter() - started < 5.0
    tolerance = {"r": 0.08, "alpha": 0.12, "a": 0.20, "b": 0.30}
    for name, value in model.as_dict().items():
        assert value == pytest.approx(TRUTH[name], rel=tolerance[name]), name
    assert model.customers == 5000


def test_bgnbd_fits_large_counts_in_days_without_overflow() -> None:
    """Daily buyers over up to two years: frequencies in the thousands, ages in the hundreds."""
    truth = {"r": 2.0, "alpha": 0.5, "a": 0.5, "b": 200.0}
    ages = np.random.default_rng(1).uniform(30.0, 730.0, 3000)
    x, tx, T = simulate_bgnbd(truth, 3000, ages, np.random.default_rng(2))
    assert x.max() > 5000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = fit_bgnbd(x, tx, T)
        purchases = expected_purchases(model, 365.0, x, tx, T)
    assert model.r == pytest.approx(2.0, rel=0.1) and model.alpha == pytest.approx(0.5, rel=0.15)
    assert model.a == pytest.approx(0.5, rel=0.3) and model.b == pytest.approx(200.0, rel=0.4)
    assert np.all(np.isfinite(purchases)) and np.all(purchases >= 0)


def _simulate_spend(
    frequency: np.ndarray, p: float, q: float, v: float, rng: np.random.Generator
) -> np.ndarray:
    """Mean of x Gamma(p, ν) spends with ν ~ Gamma(q, v): the sum is Gamma(p·x, ν)."""
    nu = rng.gamma(q, 1.0 / v, size=frequency.size)
    count = np.maximum(frequency, 1.0)
    return np.where(frequency > 0, rng.gamma(p * count, 1.0 / nu) / count, 0.0)


def test_gamma_gamma_recovers_the_parameters_it_simulated() -> None:
    """Spends for the repeat buyers of 5,000 simulated customers (about 3,500 of them). p and v trade
    off against each other (over 40 seeds: relative sd p 10%, q 3.8%, v 12%) while the population
    mean p·v/(q-1) is pinned down (sd 1.6%); tolerances are about three standard deviations."""
    rng = np.random.default_rng(0)
    x, _, _ = simulate_bgnbd(TRUTH, 5000, 52.0, rng)
    m = _simulate_spend(x, 6.0, 4.0, 15.0, rng)
    model = fit_gamma_gamma(x, m)
    assert model.customers == int(np.count_nonzero(x))
    assert model.p == pytest.approx(6.0, rel=0.30)
    assert model.q == pytest.approx(4.0, rel=0.12)
    assert model.v == pytest.approx(15.0, rel=0.40)
    assert model.p * model.v / (model.q - 1) == pytest.approx(30.0, rel=0.05)


@pytest.mark.parametrize("where", [np.log([0.3, 3.0, 1.2, 2.0]), np.log([2.0, 40.0, 0.5, 9.0])])
def test_bgnbd_gradient_matches_finite_differences(where: np.ndarray) -> None:
    x, tx, T = simulate_bgnbd(TRUTH, 500, 52.0, np.random.default_rng(3))
    weights = np.ones_like(x)
    value = lambda theta: clv._bgnbd_loglik(np.exp(theta), x, tx, T, weights)[0]  # noqa: E731
    _, gradient = clv._bgnbd_loglik(np.exp(where), x, tx, T, weights)
    np.testing.assert_allclose(gradient, approx_fprime(where, value, 1e-7), rtol=1e-4, atol=1e-3)


def test_gamma_gamma_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(1, 20, size=300).astype(float)
    m = _simulate_spend(x, 6.0, 4.0, 15.0, rng)
    weights = np.ones_like(x)
    where = np.log([2.0, 3.0, 10.0])
    value = lambda theta: clv._gamma_gamma_loglik(np.exp(theta), x, m, weights)[0]  # noqa: E731
    _, gradient = clv._gamma_gamma_loglik(np.exp(where), x, m, weights)
    np.testing.assert_allclose(gradient, approx_fprime(where, value, 1e-7), rtol=1e-4, atol=1e-3)


def test_pooling_identical_customers_changes_nothing(cdnow: dict[str, np.ndarray]) -> None:
    """The fit pools identical rows; fitting a shuffled copy gives the same answer."""
    order = np.random.default_rng(5).permutation(cdnow["frequency"].size)
    shuffled = fit_bgnbd(cdnow["frequency"][order], cdnow["recency"][order], cdnow["T"][order])
    straight = fit_bgnbd(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    for name, value in straight.as_dict().items():
        assert shuffled.as_dict()[name] == pytest.approx(value, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# What it refuses, and how it says so


def test_not_enough_customers_or_repeaters() -> None:
    with pytest.raises(NotEnoughData, match=r"at least 20 customers, 5 of them with a repeat purchase; "
                                            r"got 10 customers, 3 with a repeat purchase"):
        fit_bgnbd([1, 2, 1] + [0] * 7, [1.0, 2.0, 3.0] + [0.0] * 7, [10.0] * 10)
    with pytest.raises(NotEnoughData, match=r"got 30 customers, 2 with a repeat purchase"):
        fit_bgnbd([1, 1] + [0] * 28, [1.0, 2.0] + [0.0] * 28, [10.0] * 30)
    with pytest.raises(NotEnoughData, match=r"at least 3 customers, 1 of them"):
        fit_bgnbd([1, 0], [1.0, 0.0], [2.0, 2.0], min_customers=3, min_repeaters=1)
    with pytest.raises(NotEnoughData, match=r"got 0 customers, 0 with a repeat purchase"):
        fit_bgnbd([], [], [], min_customers=0, min_repeaters=0)
    with pytest.raises(NotEnoughData, match=r"needs at least 10 customers with a repeat purchase; got 4"):
        fit_gamma_gamma([1, 2, 3, 4, 0, 0], [5.0, 6.0, 7.0, 8.0, 0.0, 0.0])
    with pytest.raises(NotEnoughData, match=r"spends that vary"):
        fit_gamma_gamma([1] * 12, [5.0] * 12)


def test_unidentified_fit_says_so() -> None:
    """Five customers who bought again on day 1 and never after, over 52 days: the likelihood keeps improving
    as the dropout chance runs to 1 (a to infinity, b to 0), a point no data of a real history identify."""
    x = np.r_[np.zeros(15), np.ones(5)]
    tx = np.r_[np.zeros(15), np.full(5, 1.0)]
    with pytest.raises(NotEnoughData, match=r"cannot identify a, b"):
        fit_bgnbd(x, tx, np.full(20, 52.0))


def test_a_homogeneous_limit_is_a_fit() -> None:
    """Five repeaters who all bought again on the last day: the rates' shape and scale run off together with
    their ratio, the purchase rate, held; that is every customer buying at one rate, and it predicts."""
    x = np.r_[np.zeros(15), np.ones(5)]
    tx = np.r_[np.zeros(15), np.full(5, 52.0)]
    fit = fit_bgnbd(x, tx, np.full(20, 52.0))
    assert fit.r > 1e3 and 1e-3 < fit.r / fit.alpha < 1e-1


def test_errors_are_value_errors_with_a_code() -> None:
    for error in (NotEnoughData("x"), InvalidSummary("x")):
        assert isinstance(error, ValueError) and isinstance(error, Invalid) and error.kind == "invalid"
    assert NotEnoughData("x").code == "not_enough_data"
    assert InvalidSummary("x").code == "invalid_clv_summary"


X, TX, T20 = [2, 0, 1] * 10, [5.0, 0.0, 1.0] * 10, [10.0, 10.0, 10.0] * 10


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "message"),
    [
        (X, TX[:-1] + [11.0], T20, r"recency \(time of the last purchase\) cannot exceed T \(age\); 1 customers"),
        (X[:-1] + [-1], TX, T20, r"frequency must be non-negative; 1 values are negative"),
        (X, TX, T20[:-1] + [-1.0], r"T must be non-negative"),
        (X, TX[:-1] + [float("nan")], T20, r"recency must be finite; 1 values are not"),
        (X, TX, T20[:-1] + [float("inf")], r"T must be finite"),
        (X, TX[:-1], T20, r"all of the same length; got frequency 30, recency 29, T 30"),
        (X, TX, 10.0, r"got frequency 30, recency 30, T a single number"),
        (X[:-1] + [1.5], TX, T20, r"frequency counts repeat purchases and must be whole numbers"),
        (X[:-2] + [0, 1], TX[:-2] + [3.0, 1.0], T20, r"recency must be 0 for customers without a repeat purchase"),
        ([[1, 2]] * 15, [[1.0, 2.0]] * 15, [[3.0, 3.0]] * 15, r"one-dimensional"),
        (["a"] * 30, TX, T20, r"frequency must be numbers"),
    ],
)
def test_inconsistent_summaries_are_refused(frequency: object, recency: object, T: object, message: str) -> None:
    with pytest.raises(InvalidSummary, match=message):
        fit_bgnbd(frequency, recency, T)  # type: ignore[arg-type]


def test_predictions_check_their_inputs_too() -> None:
    with pytest.raises(InvalidSummary, match=r"recency \(time of the last purchase\) cannot exceed T"):
        probability_alive(FHL_2005, 2, 40.0, 38.86)
    lengths = r"the same length or be single numbers; got frequency \(2,\), recency \(3,\)"
    with pytest.raises(InvalidSummary, match=lengths):
        expected_purchases(FHL_2005, 39, [1, 2], [1.0, 2.0, 3.0], 38.86)
    with pytest.raises(InvalidSummary, match=r"t must be non-negative"):
        expected_purchases(FHL_2005, -1.0, 2, 30.43, 38.86)
    positive = r"monetary \(mean spend per repeat purchase\) must be a positive number for every customer with a " \
        r"repeat purchase; 1 are not"
    with pytest.raises(InvalidSummary, match=positive):
        expected_spend(GammaGamma(6.25, 3.74, 15.44), [1, 0], [0.0, 0.0])
    for bad in (0.0, -3.0, float("nan")):
        with pytest.raises(InvalidSummary, match=positive):
            fit_gamma_gamma([1] * 12, [5.0] * 11 + [bad])
    with pytest.raises(InvalidSummary, match=r"frequency must be non-negative"):
        fit_gamma_gamma([1] * 11 + [-1], [5.0] * 12)
    # Where there is no repeat purchase, monetary is not read: NaN (0/0 upstream) is fine there.
    rng = np.random.default_rng(6)
    repeats = rng.integers(1, 10, size=200).astype(float)
    frequency = np.r_[repeats, 0.0, 0.0]
    spends = np.r_[_simulate_spend(repeats, 6.0, 4.0, 15.0, rng), np.nan, np.nan]
    fitted = fit_gamma_gamma(frequency, spends)
    assert fitted.customers == 200
    assert np.isfinite(expected_spend(fitted, [0, 1], [np.nan, 20.0])).all()


def test_parameters_and_simulation_arguments_are_checked() -> None:
    with pytest.raises(Invalid, match=r"BG/NBD parameters must be finite and positive; got alpha=-1.0") as caught:
        BgNbd(r=0.2, alpha=-1.0, a=0.8, b=2.0)
    assert caught.value.code == "invalid_clv_parameters"
    with pytest.raises(Invalid, match=r"Gamma-Gamma parameters must be finite and positive; got q=nan"):
        GammaGamma(p=1.0, q=float("nan"), v=2.0)
    rng = np.random.default_rng(0)
    with pytest.raises(Invalid, match=r"missing b"):
        simulate_bgnbd({"r": 0.5, "alpha": 5.0, "a": 0.8}, 10, 52.0, rng)
    with pytest.raises(InvalidSummary, match=r"one per customer \(10\); got shape \(3,\)"):
        simulate_bgnbd(TRUTH, 10, np.array([1.0, 2.0, 3.0]), rng)
    with pytest.raises(InvalidSummary, match=r"customers must be a non-negative whole number"):
        simulate_bgnbd(TRUTH, -1, 52.0, rng)
