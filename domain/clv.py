"""Customer lifetime value: the BG/NBD purchase model and the Gamma-Gamma spend model.

Both are "buy till you die" models fitted by maximum likelihood to one row per customer:

* ``frequency`` (x): the number of *repeat* purchases, that is purchases after the first;
* ``recency`` (t_x): the time of the last purchase, counted from the first purchase (0 when x = 0);
* ``T``: the customer's age, the time from the first purchase to the end of the observation;
* ``monetary`` (m_x): the mean value of the repeat purchases (only read where x > 0).

Time is in any unit (days, weeks) as long as all three use the same one; ``alpha`` and the
horizon ``t`` of the predictions are then in that unit too.

References:

* P. S. Fader, B. G. S. Hardie and K. L. Lee (2005), "'Counting Your Customers' the Easy Way:
  An Alternative to the Pareto/NBD Model", Marketing Science 24(2):275-284 (BG/NBD: the
  likelihood is their eq. 6, the conditional expectation their eq. 10, whose denominator is
  1/P(alive); see also their note "Computing P(alive) Using the BG/NBD Model").
* P. S. Fader and B. G. S. Hardie (2013), "The Gamma-Gamma Model of Monetary Value", a note at
  brucehardie.com, after R. Colombo and W. Jiang (1999), "A stochastic RFM model", Journal of
  Interactive Marketing 13(3):2-12.

Everything is pure numpy/scipy: no I/O, no pandas. The fits work in log-parameters (so the
parameters stay positive without constraints) with analytic gradients, add the likelihood's two
terms with ``logaddexp`` and use ``gammaln``/``betaln`` so that large frequencies and ages do not
overflow. The conditional expectation evaluates eq. 10's Gauss hypergeometric function in
whichever of two equivalent forms stays bounded, and integrates numerically where scipy's
``hyp2f1`` gives up or cancels (long horizons for young customers, a near 1); see
`_alive_purchases`. Checked against mpmath to about 1e-10 over a wide grid of parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1, logsumexp, polygamma

from domain.errors import Invalid

__all__ = [
    "BgNbd",
    "GammaGamma",
    "InvalidSummary",
    "NotEnoughData",
    "expected_purchases",
    "expected_spend",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "predicted_ltv",
    "probability_alive",
    "simulate_bgnbd",
]

# The fits search log-parameters in [-_LOG_BOUND, _LOG_BOUND] (parameters in about [2e-9, 5e8]).
# A shape and its scale may run off together with their ratio held, and b may run off alone: those
# are limits of the model that predict well (r and alpha: every customer buys at one rate; b: nobody
# drops out, the NBD model; q and v: one mean spend). What the data cannot identify is a mean that
# runs off: a purchase rate or a mean spend beyond e^±_LOG_EDGE (about [6e-6, 1.6e5]), or a dropout
# chance within e^-_LOG_EDGE of 1 (nobody alive after a purchase). The likelihood is then a ridge,
# and where on it the optimiser stops varies between SciPy releases (1.17.1 stops short of the
# bound), so the fit says so rather than report a point of that ridge.
_LOG_BOUND = 20.0
_LOG_EDGE = 12.0


class NotEnoughData(Invalid):
    """The data cannot support a fit: too few customers or repeat buyers, or parameters not identified."""

    code = "not_enough_data"


class InvalidSummary(Invalid):
    """The per-customer summaries are malformed: non-finite, negative, inconsistent or of different lengths."""

    code = "invalid_clv_summary"


@dataclass(frozen=True)
class BgNbd:
    """Fitted BG/NBD parameters (Fader, Hardie & Lee 2005).

    Purchase rates λ ~ Gamma(shape r, rate alpha); after each repeat purchase the customer drops
    out with probability p ~ Beta(a, b). `log_likelihood` is that of the fit on `customers` rows
    (NaN and 0 for parameters that were not fitted here, e.g. restored from storage).
    """

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = float("nan")
    customers: int = 0

    def __post_init__(self) -> None:
        _check_parameters("BG/NBD", self.as_dict())

    def as_dict(self) -> dict[str, float]:
        """The four parameters alone, as stored and as `simulate_bgnbd` accepts them."""
        return {"r": float(self.r), "alpha": float(self.alpha), "a": float(self.a), "b": float(self.b)}


@dataclass(frozen=True)
class GammaGamma:
    """Fitted Gamma-Gamma spend parameters (Colombo & Jiang 1999; Fader & Hardie 2013).

    Each transaction's value ~ Gamma(shape p, rate ν) with ν ~ Gamma(shape q, rate v) across
    customers; v is the paper's γ. The mean spend of the population is p·v/(q - 1) (q > 1).
    """

    p: float
    q: float
    v: float
    log_likelihood: float = float("nan")
    customers: int = 0

    def __post_init__(self) -> None:
        _check_parameters("Gamma-Gamma", self.as_dict())

    def as_dict(self) -> dict[str, float]:
        """The three parameters alone, as stored."""
        return {"p": float(self.p), "q": float(self.q), "v": float(self.v)}


# ---------------------------------------------------------------------------------------------
# BG/NBD


def fit_bgnbd(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    min_customers: int = 20,
    min_repeaters: int = 5,
) -> BgNbd:
    """Fit the BG/NBD by maximum likelihood (FHL 2005 eq. 6).

    Needs at least `min_customers` customers, `min_repeaters` of them with a repeat purchase:
    the dropout distribution is only seen through repeat buyers. Identical (x, t_x, T) rows are
    pooled, so the cost grows with the number of distinct summaries, not of customers.
    Raises `NotEnoughData` when the data are too few or leave a parameter unidentified.
    """
    x, tx, age = _summaries(frequency=frequency, recency=recency, T=T)
    repeaters = int(np.count_nonzero(x))
    if x.size < max(min_customers, 1) or repeaters < max(min_repeaters, 1):
        raise NotEnoughData(
            f"fitting the BG/NBD needs at least {min_customers} customers, {min_repeaters} of them with a "
            f"repeat purchase; got {x.size} customers, {repeaters} with a repeat purchase"
        )
    rows, weights = _pool(x, tx, age)
    x, tx, age = rows
    total = float(weights.sum())

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        ll, grad = _bgnbd_loglik(np.exp(theta), x, tx, age, weights)
        return -ll / total, -grad / total

    # r = 1 and alpha matching the mean repeat rate r/alpha; a = 1, b = 3 (a dropout chance of 1/4).
    rate = max(float(np.sum(weights * x)), 1.0) / max(float(np.sum(weights * age)), 1e-12)
    start = np.log([1.0, 1.0 / rate, 1.0, 3.0])
    theta = _maximise(objective, start, _bgnbd_unidentified, "BG/NBD")
    r, alpha, a, b = np.exp(theta)
    ll, _ = _bgnbd_loglik(np.exp(theta), x, tx, age, weights)
    return BgNbd(float(r), float(alpha), float(a), float(b), float(ll), int(total))


def _bgnbd_loglik(
    params: np.ndarray, x: np.ndarray, tx: np.ndarray, age: np.ndarray, weights: np.ndarray
) -> tuple[float, np.ndarray]:
    """Weighted log-likelihood of FHL 2005 eq. 6 and its gradient in the log-parameters."""
    r, alpha, a, b = params
    rx = r + x
    repeat = x > 0
    log_alive = -rx * np.log(alpha + age)  # still active at T: (1/(alpha+T))^(r+x)
    log_dead = np.full_like(log_alive, -np.inf)  # dropped out right after the x-th purchase
    bx1 = b + np.where(repeat, x, 1.0) - 1.0
    log_dead[repeat] = np.log(a) - np.log(bx1[repeat]) - rx[repeat] * np.log(alpha + tx[repeat])
    mix = np.logaddexp(log_alive, log_dead)
    w_alive = np.exp(log_alive - mix)
    w_dead = np.exp(log_dead - mix)

    ll_i = gammaln(rx) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b) + mix
    log_a_tx = np.log(alpha + tx)
    d_r = digamma(rx) - digamma(r) + np.log(alpha) - w_alive * np.log(alpha + age) - w_dead * log_a_tx
    d_alpha = r / alpha - rx * (w_alive / (alpha + age) + w_dead / (alpha + tx))
    d_a = digamma(a + b) - digamma(a + b + x) + w_dead / a
    d_b = digamma(b + x) - digamma(b) + digamma(a + b) - digamma(a + b + x) - w_dead / bx1
    grad = np.array([weights @ d_r * r, weights @ d_alpha * alpha, weights @ d_a * a, weights @ d_b * b])
    return float(weights @ ll_i), grad


def probability_alive(model: BgNbd, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
    """P(still active at T | x, t_x, T): whom to treat as a live customer rather than a lapsed one.

    1 for customers with no repeat purchase (in the BG/NBD dropout happens only after a repeat
    purchase); otherwise 1 / (1 + a/(b+x-1) · ((alpha+T)/(alpha+t_x))^(r+x)), computed as a
    logistic of the log-odds so that it neither overflows nor rounds to 0/0. Inputs broadcast.
    """
    x, tx, age = _summaries(frequency=frequency, recency=recency, T=T, broadcast=True)
    return expit(-_log_dead_odds(model, x, tx, age))


def _log_dead_odds(model: BgNbd, x: np.ndarray, tx: np.ndarray, age: np.ndarray) -> np.ndarray:
    """log(P(dropped out) / P(alive)) given the history; -inf where x = 0."""
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    repeat = x > 0
    odds = np.full(x.shape, -np.inf)
    xr = x[repeat]
    odds[repeat] = (
        np.log(a) - np.log(b + xr - 1.0) + (r + xr) * (np.log(alpha + age[repeat]) - np.log(alpha + tx[repeat]))
    )
    return odds


def expected_purchases(
    model: BgNbd, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> np.ndarray:
    """Expected number of purchases in (T, T+t] given the history (FHL 2005 eq. 10).

    This is what a lifetime value multiplies by the spend per purchase: P(alive) times what an
    active customer buys, (a+b+x-1)/(a-1) · (1 - u·F). See `_alive_purchases` for how u·F is
    kept finite and accurate for large x, long horizons and young customers.
    Inputs broadcast against each other; t is the horizon in the unit of T.
    """
    horizon = _as_float("t", t)
    x, tx, age, horizon = _summaries(frequency=frequency, recency=recency, T=T, t=horizon, broadcast=True)
    alive = _alive_purchases(model, x, horizon / (model.alpha + age))
    return alive * expit(-_log_dead_odds(model, x, tx, age))


# Up to this w = t/(alpha+T+t) scipy's 2F1, in whichever form keeps it bounded, agreed with mpmath
# to 3e-11 (1e-12 at the 99th percentile) over 6,000 random parameter sets with x up to 30,000;
# beyond it scipy returns NaN or loses digits in places, so the quadrature takes over.
_SERIES_W = 0.9


def _alive_purchases(model: BgNbd, x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Expected purchases in the next t of a customer active at T; s = t/(alpha+T).

    Eq. 10's numerator is 1 - u·F with u = (1-w)^(r+x), F = 2F1(r+x, b+x; a+b+x-1; w),
    w = t/(alpha+T+t). For large x that F overflows while u underflows; Euler's transformation
    gives the same u·F as (1-w)^(a-1) · 2F1(a+b-1-r, a-1; a+b+x-1; w). Of the two, the one whose
    c - a - b is non-negative (x + r + 1 - a >= 0 picks Euler's) has a bounded F, so it is the
    one evaluated. For w > 0.9, wherever scipy's 2F1 gives up, and where 1 - u·F cancels (short
    horizons, a near 1), the expectation is integrated numerically over the dropout probability
    instead (`_alive_purchases_by_quadrature`), which is accurate to about 1e-10 everywhere.
    """
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    c = a + b + x - 1.0
    w = s / (1.0 + s)
    euler = x + r + 1.0 - a >= 0
    series = w <= _SERIES_W
    ws = np.where(series, w, 0.0)
    f = np.empty(w.shape)
    f[euler] = hyp2f1(a + b - 1.0 - r, a - 1.0, c[euler], ws[euler])
    f[~euler] = hyp2f1(r + x[~euler], b + x[~euler], c[~euler], ws[~euler])
    log_u = np.where(euler, a - 1.0, r + x) * np.log1p(-ws)
    with np.errstate(invalid="ignore", divide="ignore"):
        remaining = -np.expm1(log_u + np.log(f))
        alive = c / (a - 1.0) * remaining
    # 1 - u·F cancels for short horizons and for a near 1 (where the ratio is 0/0); its rounding
    # error is about 1e-15 absolute, so below 1e-4 the quadrature is the more accurate of the two.
    redo = ~(series & np.isfinite(alive) & (f > 0) & (np.abs(remaining) >= 1e-4))
    alive[s == 0] = 0.0  # no horizon, no purchases
    redo &= s > 0
    if np.any(redo):
        alive[redo] = _alive_purchases_by_quadrature(a, r + x[redo], b + x[redo], s[redo])
    return alive


def _alive_purchases_by_quadrature(a: float, k: np.ndarray, beta: np.ndarray, s: np.ndarray) -> np.ndarray:
    """E[(1 - (1 + s·p)^-k) / p] for p ~ Beta(a, beta): the purchases of an active customer.

    Given alive at T, λ ~ Gamma(r+x, alpha+T) and p ~ Beta(a, b+x) independently (FHL 2005),
    an active customer makes (1 - e^(-λpt))/p purchases in expectation, and averaging over λ
    gives the integrand, with s = t/(alpha+T) and k = r+x. In y = logit(p) the integrand is
    smooth, decays exponentially at both ends and is analytic within |Im y| < pi, so the
    trapezoid rule converges geometrically once the step is also small against the spread of
    logit(p) (the step is at most 0.3 and 0.4 standard deviations of it). Each row's range is
    where the log-integrand is within 45 of its peak, found on a coarser grid first.
    """
    # Customers with the same (x, T) share their integral; cohorts repeat those a lot.
    (k, beta, s), back = _distinct(k, beta, s)
    out = np.empty(k.shape)
    log_ks = np.log(k) + np.log(s)
    log_b = betaln(a, beta)
    spread = np.sqrt(polygamma(1, a) + polygamma(1, beta))  # sd of logit(p) for p ~ Beta(a, beta)
    coarse_step = np.minimum(1.0, spread)
    fine_step = np.minimum(0.3, 0.4 * spread)
    # The peak lies between logit(1/(s·k·beta)) and 0 or so; tails fall at rate a (left) and beta (right).
    lo = -(40.0 + np.logaddexp(0.0, log_ks) + np.log1p(beta) + 45.0 / a)
    hi = 40.0 + 45.0 / beta
    # Chunks of rows keep the (rows x nodes) arrays to a few million entries.
    nodes = int(np.ceil(np.max((hi - lo) / np.minimum(coarse_step, fine_step)))) + 2
    per_chunk = int(np.clip(4_000_000 // nodes, 1, 4096))
    for rows in np.array_split(np.arange(k.size), max(1, int(np.ceil(k.size / per_chunk)))):
        kr, lr, br, lb = k[rows, None], log_ks[rows, None], beta[rows, None], log_b[rows, None]
        steps = int(np.ceil(np.max((hi[rows] - lo[rows]) / coarse_step[rows]))) + 2
        coarse = lo[rows, None] + coarse_step[rows, None] * np.arange(steps)[None, :]
        log_i = np.where(coarse <= hi[rows, None] + 1.0, _log_integrand(coarse, a, kr, lr, br, lb), -np.inf)
        inside = log_i >= np.max(log_i, axis=1, keepdims=True) - 45.0
        first = np.argmax(inside, axis=1)
        last = inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)
        start = coarse[np.arange(rows.size), first] - coarse_step[rows]
        stop = coarse[np.arange(rows.size), last] + coarse_step[rows]
        count = int(np.max(np.ceil((stop - start) / fine_step[rows]))) + 1
        fine = start[:, None] + fine_step[rows, None] * np.arange(count)[None, :]
        log_f = np.where(fine <= stop[:, None], _log_integrand(fine, a, kr, lr, br, lb), -np.inf)
        out[rows] = np.exp(logsumexp(log_f, axis=1)) * fine_step[rows]
    return out[back]


def _log_integrand(
    y: np.ndarray, a: float, k: np.ndarray, log_ks: np.ndarray, beta: np.ndarray, log_b: np.ndarray
) -> np.ndarray:
    """log of h(p) · p^a · (1-p)^beta / B(a, beta) at p = logistic(y), h(p) = (1 - (1+sp)^-k)/p."""
    log_p = -np.logaddexp(0.0, -y)
    log_q = -np.logaddexp(0.0, y)
    sp = np.exp(log_ks - np.log(k) + log_p)
    with np.errstate(divide="ignore"):
        log_h = np.where(sp > 1e-200, np.log(-np.expm1(-k * np.log1p(sp))) - log_p, log_ks)
    return log_h + a * log_p + beta * log_q - log_b


def simulate_bgnbd(
    model_params: dict[str, float] | BgNbd,
    customers: int,
    T: float | np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw (frequency, recency, T) for `customers` customers from the BG/NBD itself.

    For tests, power calculations and checks of a fit. Each customer gets λ ~ Gamma(r, alpha),
    p ~ Beta(a, b); purchases after the first arrive as a Poisson process of rate λ and the
    customer drops out right after each repeat purchase with probability p. So x = min(J, N)
    with J ~ Geometric(p) and N ~ Poisson(λT), and given N the x-th arrival time is
    T · Beta(x, N - x + 1) (an order statistic of N uniforms). `T` is one age for all or one each.
    """
    params = model_params.as_dict() if isinstance(model_params, BgNbd) else dict(model_params)
    missing = {"r", "alpha", "a", "b"} - params.keys()
    if missing:
        raise Invalid(
            f"BG/NBD parameters need r, alpha, a and b; missing {', '.join(sorted(missing))}",
            code="invalid_clv_parameters",
        )
    model = BgNbd(float(params["r"]), float(params["alpha"]), float(params["a"]), float(params["b"]))
    if isinstance(customers, bool) or not isinstance(customers, (int, np.integer)) or customers < 0:
        raise InvalidSummary(f"customers must be a non-negative whole number; got {customers!r}")
    n = int(customers)
    age = _as_float("T", T)
    if age.ndim == 0:
        age = np.full(n, float(age))
    if age.shape != (n,):
        raise InvalidSummary(f"T must be one number or one per customer ({n}); got shape {age.shape}")
    if not np.all(np.isfinite(age)) or np.any(age < 0):
        raise InvalidSummary("T must be finite and non-negative")

    lam = rng.gamma(model.r, 1.0 / model.alpha, size=n)
    drop = np.clip(rng.beta(model.a, model.b, size=n), 1e-12, 1.0)
    lives = rng.geometric(drop)  # repeat purchases until (and including) the one after which it drops out
    arrivals = rng.poisson(lam * age)
    x = np.minimum(lives, arrivals)
    tx = np.zeros(n)
    repeat = x > 0
    tx[repeat] = age[repeat] * rng.beta(x[repeat], arrivals[repeat] - x[repeat] + 1)
    return x.astype(float), tx, age.copy()


# ---------------------------------------------------------------------------------------------
# Gamma-Gamma


def fit_gamma_gamma(frequency: ArrayLike, monetary: ArrayLike, *, min_customers: int = 10) -> GammaGamma:
    """Fit the Gamma-Gamma spend model by maximum likelihood on the customers with x > 0.

    A customer's mean spend over x repeat purchases has density
    Γ(px+q)/(Γ(px)Γ(q)) · v^q · m^(px-1) · x^(px) / (v + x·m)^(px+q) (Fader & Hardie 2013,
    written as a density of the mean); customers without a repeat purchase carry no spend information
    and are left out, so `customers` and the `min_customers` check count repeat buyers only.
    The model assumes spend is independent of frequency; check that before relying on it.
    """
    x, m = _spend_summaries(frequency, monetary)
    repeat = x > 0
    x, m = x[repeat], m[repeat]
    if x.size < max(min_customers, 2):
        raise NotEnoughData(
            f"fitting the Gamma-Gamma model needs at least {min_customers} customers with a repeat purchase; "
            f"got {x.size}"
        )
    if np.ptp(m) == 0:
        raise NotEnoughData("fitting the Gamma-Gamma model needs spends that vary between customers; all are equal")
    (x, m), weights = _pool(x, m)
    total = float(weights.sum())

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        ll, grad = _gamma_gamma_loglik(np.exp(theta), x, m, weights)
        return -ll / total, -grad / total

    # Start from the method of moments on the spends taken as single transactions: with p = 2 and
    # q = 3, E[m] = p·v/(q-1) gives v = mean(m).
    start = np.log([2.0, 3.0, float(np.average(m, weights=weights))])
    theta = _maximise(objective, start, _gamma_gamma_unidentified, "Gamma-Gamma")
    ll, _ = _gamma_gamma_loglik(np.exp(theta), x, m, weights)
    p, q, v = np.exp(theta)
    return GammaGamma(float(p), float(q), float(v), float(ll), int(total))


def _gamma_gamma_loglik(
    params: np.ndarray, x: np.ndarray, m: np.ndarray, weights: np.ndarray
) -> tuple[float, np.ndarray]:
    """Weighted log-likelihood of the mean spends and its gradient in the log-parameters."""
    p, q, v = params
    px = p * x
    log_total = np.log(v + x * m)
    ll_i = (
        gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v)
        + (px - 1.0) * np.log(m) + px * np.log(x) - (px + q) * log_total
    )
    d_p = x * (digamma(px + q) - digamma(px) + np.log(m) + np.log(x) - log_total)
    d_q = digamma(px + q) - digamma(q) + np.log(v) - log_total
    d_v = q / v - (px + q) / (v + x * m)
    grad = np.array([weights @ d_p * p, weights @ d_q * q, weights @ d_v * v])
    return float(weights @ ll_i), grad


def expected_spend(model: GammaGamma, frequency: ArrayLike, monetary: ArrayLike) -> np.ndarray:
    """Expected spend per transaction given x purchases averaging m: p(v + x·m)/(px + q - 1).

    A weighted mean of the population mean p·v/(q-1) and the customer's own mean, trusting
    the latter more the more purchases it rests on. Customers with x = 0 get the population
    mean (their `monetary` is ignored), which is infinite when q <= 1. Inputs broadcast.
    """
    x, m = _spend_summaries(frequency, monetary, broadcast=True)
    p, q, v = model.p, model.q, model.v
    denominator = p * x + q - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        spend = p * (v + x * m) / denominator
    return np.where(denominator > 0, spend, np.inf)


def predicted_ltv(
    bgnbd: BgNbd,
    gg: GammaGamma,
    t: ArrayLike,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary: ArrayLike,
) -> np.ndarray:
    """Undiscounted value of the next t time units: expected purchases × expected spend per purchase.

    Multiplying is what the two models license because Gamma-Gamma assumes spend independent
    of the purchase process. No discounting and no margin: apply those where the money is known.
    """
    purchases = expected_purchases(bgnbd, t, frequency, recency, T)
    spend = expected_spend(gg, frequency, monetary)
    return purchases * spend


# ---------------------------------------------------------------------------------------------
# Shared checks and numerics


def _check_parameters(model: str, params: dict[str, float]) -> None:
    bad = [name for name, value in params.items() if not (np.isfinite(value) and value > 0)]
    if bad:
        shown = ", ".join(f"{name}={params[name]!r}" for name in bad)
        raise Invalid(f"{model} parameters must be finite and positive; got {shown}", code="invalid_clv_parameters")


def _as_float(name: str, values: Any) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidSummary(f"{name} must be numbers; {exc}") from None
    if array.ndim > 1:
        raise InvalidSummary(f"{name} must be one number or a one-dimensional array; got shape {array.shape}")
    return array


def _broadcast(named: dict[str, np.ndarray], broadcast: bool) -> list[np.ndarray]:
    if broadcast:
        try:
            return [np.atleast_1d(a) for a in np.broadcast_arrays(*named.values())]
        except ValueError:
            shapes = ", ".join(f"{name} {a.shape}" for name, a in named.items())
            raise InvalidSummary(f"the inputs must have the same length or be single numbers; got {shapes}") from None
    lengths = {name: (a.shape[0] if a.ndim else None) for name, a in named.items()}
    if None in lengths.values() or len(set(lengths.values())) != 1:
        shown = ", ".join(f"{name} {'a single number' if n is None else n}" for name, n in lengths.items())
        raise InvalidSummary(
            f"the inputs must be arrays of one value per customer, all of the same length; got {shown}"
        )
    return list(named.values())


def _summaries(*, broadcast: bool = False, **arrays: ArrayLike) -> list[np.ndarray]:
    """Frequency, recency, T (and t) as float arrays, checked for the BG/NBD's assumptions."""
    named = {name: _as_float(name, values) for name, values in arrays.items()}
    out = _broadcast(named, broadcast)
    for name, a in zip(named, out):
        if not np.all(np.isfinite(a)):
            raise InvalidSummary(f"{name} must be finite; {int(np.count_nonzero(~np.isfinite(a)))} values are not")
        if np.any(a < 0):
            raise InvalidSummary(f"{name} must be non-negative; {int(np.count_nonzero(a < 0))} values are negative")
    x, tx, age = out[:3]
    if np.any(x != np.round(x)):
        raise InvalidSummary("frequency counts repeat purchases and must be whole numbers")
    if np.any(tx > age):
        raise InvalidSummary(
            f"recency (time of the last purchase) cannot exceed T (age); {int(np.count_nonzero(tx > age))} "
            "customers have recency > T"
        )
    if np.any((x == 0) & (tx > 0)):
        raise InvalidSummary(
            "recency must be 0 for customers without a repeat purchase (their last purchase is the first); "
            f"{int(np.count_nonzero((x == 0) & (tx > 0)))} customers have frequency 0 and recency > 0"
        )
    return out


def _spend_summaries(frequency: ArrayLike, monetary: ArrayLike, broadcast: bool = False) -> list[np.ndarray]:
    """Frequency and monetary as float arrays; monetary is only read (and checked) where x > 0.

    Where x = 0 there is no repeat purchase to average, so whatever stands there (0, NaN) is
    replaced by 0.
    """
    named = {"frequency": _as_float("frequency", frequency), "monetary": _as_float("monetary", monetary)}
    x, m = _broadcast(named, broadcast)
    if not np.all(np.isfinite(x)):
        raise InvalidSummary(f"frequency must be finite; {int(np.count_nonzero(~np.isfinite(x)))} values are not")
    if np.any(x < 0):
        raise InvalidSummary(f"frequency must be non-negative; {int(np.count_nonzero(x < 0))} values are negative")
    if np.any(x != np.round(x)):
        raise InvalidSummary("frequency counts repeat purchases and must be whole numbers")
    repeat = x > 0
    bad = repeat & ~(np.isfinite(m) & (m > 0))
    if np.any(bad):
        raise InvalidSummary(
            "monetary (mean spend per repeat purchase) must be a positive number for every customer with a "
            f"repeat purchase; {int(np.count_nonzero(bad))} are not"
        )
    return [x, np.where(repeat, m, 0.0)]


def _distinct(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct rows of the columns and, for each original row, the index of its distinct row."""
    unique, back = np.unique(np.column_stack(columns), axis=0, return_inverse=True)
    return [unique[:, i] for i in range(unique.shape[1])], back.reshape(-1)


def _pool(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows and how many customers share each: the likelihood is a sum over customers."""
    unique, counts = np.unique(np.column_stack(columns), axis=0, return_counts=True)
    return [unique[:, i] for i in range(unique.shape[1])], counts.astype(float)


def _bgnbd_unidentified(theta: np.ndarray) -> list[str]:
    log_r, log_alpha, log_a, log_b = theta
    return (["r", "alpha"] if abs(log_r - log_alpha) > _LOG_EDGE else []) + (
        ["a", "b"] if log_a - log_b > _LOG_EDGE else [])  # fmt: skip


def _gamma_gamma_unidentified(theta: np.ndarray) -> list[str]:
    log_p, log_q, log_v = theta
    return (["p"] if abs(log_p) > _LOG_EDGE else []) + (["q", "v"] if abs(log_q - log_v) > _LOG_EDGE else [])


def _maximise(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    start: np.ndarray,
    unidentified: Callable[[np.ndarray], list[str]],
    model: str,
) -> np.ndarray:
    """Minimise the mean negative log-likelihood over bounded log-parameters (`unidentified` names the
    parameters whose optimum the data do not identify).

    L-BFGS-B with the analytic gradient, restarted once from its own answer (cheap, and it
    removes the occasional early stop on a flat ridge). Raises `NotEnoughData` when a mean runs off
    (see _LOG_EDGE: the likelihood keeps improving as it runs to 0 or infinity)
    or the result is not finite.
    """
    bounds = [(-_LOG_BOUND, _LOG_BOUND)] * len(start)
    theta = np.clip(start, -_LOG_BOUND + 1, _LOG_BOUND - 1)
    for _ in range(2):
        result = minimize(
            objective, theta, jac=True, method="L-BFGS-B", bounds=bounds,
            options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10},
        )
        theta = result.x
    value, grad = objective(theta)
    if not (np.isfinite(value) and np.all(np.isfinite(theta)) and np.all(np.isfinite(grad))):
        raise NotEnoughData(f"the {model} fit did not reach a finite optimum on these data")
    edge = unidentified(theta)
    if edge:
        raise NotEnoughData(
            f"the {model} fit cannot identify {', '.join(edge)} from these data (the likelihood keeps "
            "improving as it runs to 0 or infinity); more customers or a longer observation window are needed"
        )
    return theta

