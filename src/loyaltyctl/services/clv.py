"""Customer lifetime value: BG/NBD purchases and P(alive), Gamma-Gamma spend, fitted by MLE.

Pure mathematics over arrays, no database. numpy and scipy are the optional `analytics`
extra, so they are imported inside the functions (`require_analytics()` says what to install).

Models (time in any unit; `reports clv` uses days, money in minor units):

- BG/NBD, Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing
  Science 24(2). While alive a customer buys at Poisson rate lambda ~ Gamma(r, alpha)
  (alpha is a rate: the mean of lambda is r / alpha); after each repeat purchase they
  leave for good with probability p ~ Beta(a, b). A customer is summarised by
  x (repeat purchases), t_x (time of the last purchase, from the first) and T (time from
  the first purchase to the end of observation). Likelihood: their equation (6);
  conditional expectation: equation (10); P(alive): Fader, Hardie & Lee (2008),
  "Computing P(alive) using the BG/NBD model".
- Gamma-Gamma, Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves for
  customer base analysis", JMR 42(4), and Fader & Hardie's note "The Gamma-Gamma model of
  monetary value" (2013). A customer's spends are Gamma(p, nu), nu ~ Gamma(q, gamma); the
  model is fitted on the mean spend m_x of customers with x >= 1 repeat purchases, and
  assumes spend is independent of purchase frequency.

Both fits maximise the log-likelihood over log-parameters (so every parameter stays
positive) with L-BFGS-B and analytic gradients, from several starting points, keeping the
best. Times and money are rescaled to order one before fitting (the models are
scale-equivariant: alpha and gamma carry the unit) and the log-likelihood is reported on
the original scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from loyaltyctl.errors import InvalidInput, LoyaltyError

ANALYTICS_HINT = "reports clv needs scipy: pip install 'loyaltyctl[analytics]'"

# Log-parameters are kept inside [-LOG_BOUND, LOG_BOUND]: e^15 ~ 3.3 million, far beyond any
# sensible estimate on rescaled data, and it keeps gammaln/pow finite while searching.
LOG_BOUND = 15.0


def require_analytics() -> None:
    """Fail with the install hint (exit 1) when numpy or scipy is missing."""
    try:
        import numpy  # noqa: F401
        import scipy.optimize  # noqa: F401
        import scipy.special  # noqa: F401
    except ImportError:
        raise LoyaltyError(ANALYTICS_HINT) from None


def _np() -> Any:
    import numpy as np

    return np


# -- BG/NBD --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = float("nan")
    customers: int = 0
    converged: bool = True
    edge_note: str | None = None
    """Set when a parameter ran to the edge of the search range (a limiting case)."""


def _bgnbd_terms(r: float, alpha: float, a: float, b: float, x: Any, t_x: Any, T: Any) -> Any:
    """Per-customer log-likelihood, equation (6) of the BG/NBD paper, in log space."""
    np = _np()
    from scipy.special import gammaln

    ln_a1 = gammaln(r + x) - gammaln(r) + r * math.log(alpha)
    ln_a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    ln_a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        # The second term exists only for x > 0 (the customer may have left after the
        # last repeat purchase); b + x - 1 > 0 there.
        ln_a4 = np.where(
            x > 0,
            math.log(a) - np.log(np.where(x > 0, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return ln_a1 + ln_a2 + np.logaddexp(ln_a3, ln_a4)


def bgnbd_log_likelihood(
    *, r: float, alpha: float, a: float, b: float, x: Any, t_x: Any, T: Any, weights: Any = None
) -> float:
    """The BG/NBD log-likelihood of a customer base (sum over customers, optionally weighted)."""
    np = _np()
    x, t_x, T = _bgnbd_arrays(x, t_x, T)
    terms = _bgnbd_terms(r, alpha, a, b, x, t_x, T)
    return float(np.sum(terms if weights is None else terms * np.asarray(weights, dtype=float)))


def _bgnbd_arrays(x: Any, t_x: Any, T: Any) -> tuple[Any, Any, Any]:
    np = _np()
    x = np.asarray(x, dtype=float)
    t_x = np.asarray(t_x, dtype=float)
    T = np.asarray(T, dtype=float)
    if not (x.shape == t_x.shape == T.shape):
        raise InvalidInput("BG/NBD: x, t_x and T must have the same length")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T):
        raise InvalidInput("BG/NBD: need x >= 0 and 0 <= t_x <= T for every customer")
    return x, t_x, T


def _grouped(*columns: Any) -> tuple[list[Any], Any]:
    """Identical customers collapsed into one row with a count (big speed-up with day units)."""
    np = _np()
    stacked = np.column_stack(columns)
    uniq, counts = np.unique(stacked, axis=0, return_counts=True)
    return [uniq[:, i] for i in range(uniq.shape[1])], counts.astype(float)


def _minimise(objective: Any, starts: list[list[float]]) -> tuple[Any, bool]:
    """The best of L-BFGS-B runs (analytic gradient) from several starting points."""
    np = _np()
    from scipy.optimize import minimize

    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(starts[0])
    best = None
    for s in starts:
        res = minimize(objective, np.asarray(s, dtype=float), jac=True, method="L-BFGS-B",
                       bounds=bounds, options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9})
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun - 1e-12):
            best = res
    if best is None:
        raise InvalidInput("the model could not be fitted: the likelihood is not finite anywhere")
    # ABNORMAL_TERMINATION after reaching the optimum to machine precision is success too.
    ok = bool(best.success) or float(np.max(np.abs(best.jac))) < 1e-5
    return best.x, ok


def _bgnbd_gradient(r: float, alpha: float, a: float, b: float, x: Any, t_x: Any, T: Any) -> Any:
    """Per-customer derivatives of the log-likelihood by r, alpha, a, b (4 x n)."""
    np = _np()
    from scipy.special import digamma

    ln_a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        b1 = np.where(x > 0, b + x - 1, 1.0)
        ln_a4 = np.where(x > 0, math.log(a) - np.log(b1) - (r + x) * np.log(alpha + t_x), -np.inf)
    top = np.maximum(ln_a3, ln_a4)
    w3 = np.exp(ln_a3 - top)
    w4 = np.exp(ln_a4 - top)
    w3, w4 = w3 / (w3 + w4), w4 / (w3 + w4)  # shares of the two terms of the likelihood
    d_r = (digamma(r + x) - digamma(r) + math.log(alpha)
           - w3 * np.log(alpha + T) - w4 * np.log(alpha + t_x))
    d_alpha = r / alpha - (r + x) * (w3 / (alpha + T) + w4 / (alpha + t_x))
    d_a = digamma(a + b) - digamma(a + b + x) + w4 / a
    d_b = digamma(a + b) + digamma(b + x) - digamma(b) - digamma(a + b + x) - w4 / b1
    return np.vstack([d_r, d_alpha, d_a, d_b])


def _edge_note(model: str, names: tuple[str, ...], theta: Any, values: tuple[float, ...]) -> str | None:
    edge = [f"{n} = {v:.3g}" for n, t, v in zip(names, theta, values, strict=True)
            if abs(t) >= LOG_BOUND - 1e-6]
    if not edge:
        return None
    return (f"{model}: {', '.join(edge)} reached the edge of the search range; the data fit a "
            "limiting case of the model (too little history?), treat the forecast with care")


def fit_bgnbd(*, x: Any, t_x: Any, T: Any, starts: list[list[float]] | None = None) -> BgNbd:
    """Maximum-likelihood BG/NBD parameters for customers (x, t_x, T)."""
    np = _np()
    x, t_x, T = _bgnbd_arrays(x, t_x, T)
    if x.size == 0:
        raise InvalidInput("BG/NBD: no customers to fit")
    scale = float(np.mean(T)) or 1.0
    (gx, gt, gT), w = _grouped(x, t_x / scale, T / scale)
    n = float(w.sum())

    def objective(theta: Any) -> tuple[float, Any]:
        params = np.exp(theta)
        with np.errstate(all="ignore"):
            v = -float(np.dot(_bgnbd_terms(*params, gx, gt, gT), w)) / n
            g = -(_bgnbd_gradient(*params, gx, gt, gT) @ w) * params / n
        if not (math.isfinite(v) and np.all(np.isfinite(g))):
            return 1e300, np.zeros(4)
        return v, g

    starts = starts or [
        [0.0, 0.0, 0.0, 0.0],
        [math.log(0.25), math.log(0.1), math.log(0.8), math.log(2.5)],
        [math.log(2.0), math.log(3.0), math.log(0.3), math.log(0.5)],
        [math.log(0.5), math.log(0.5), math.log(2.0), math.log(8.0)],
    ]
    theta, ok = _minimise(objective, starts)
    r, alpha_s, a, b = (float(v) for v in np.exp(theta))
    alpha = alpha_s * scale
    ll = bgnbd_log_likelihood(r=r, alpha=alpha, a=a, b=b, x=x, t_x=t_x, T=T)
    edge = _edge_note("BG/NBD", ("r", "alpha", "a", "b"), theta, (r, alpha, a, b))
    return BgNbd(r=r, alpha=alpha, a=a, b=b, log_likelihood=ll, customers=int(x.size),
                 converged=ok, edge_note=edge)


def bgnbd_expected_purchases(t: float, *, model: BgNbd, x: Any, t_x: Any, T: Any) -> Any:
    """E[Y(t) | x, t_x, T]: expected purchases in the next `t` time units, equation (10).

    With x = t_x = T = 0 this is E[X(t)], the expected purchases of a new customer in
    their first `t` time units (equation 9).
    """
    np = _np()
    from scipy.special import hyp2f1

    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    x, t_x, T = _bgnbd_arrays(x, t_x, T)
    if t <= 0:
        return np.zeros_like(x)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        head = (a + b + x - 1) / (a - 1)
        body = 1 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t))) * hyp
        out = head * body / _alive_denominator(model, x, t_x, T)
    return np.where(np.isfinite(out), out, 0.0)


def _alive_denominator(model: BgNbd, x: Any, t_x: Any, T: Any) -> Any:
    """1 + [x > 0] a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x), in log space."""
    np = _np()
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ln = (math.log(a) - np.log(np.where(x > 0, b + x - 1, 1.0))
              + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x)))
        return 1 + np.where(x > 0, np.exp(ln), 0.0)


def bgnbd_p_alive(*, model: BgNbd, x: Any, t_x: Any, T: Any) -> Any:
    """P(alive | x, t_x, T): 1 for a customer without repeat purchases (they cannot have left)."""
    x, t_x, T = _bgnbd_arrays(x, t_x, T)
    return 1.0 / _alive_denominator(model, x, t_x, T)


# -- Gamma-Gamma ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    gamma: float
    log_likelihood: float = float("nan")
    customers: int = 0
    converged: bool = True
    edge_note: str | None = None
    """Set when a parameter ran to the edge of the search range (a limiting case)."""

    @property
    def population_mean(self) -> float:
        """E[M] = p gamma / (q - 1): infinite (None-worthy) when q <= 1."""
        return self.p * self.gamma / (self.q - 1) if self.q > 1 else math.inf


def _gg_arrays(x: Any, m: Any) -> tuple[Any, Any]:
    np = _np()
    x = np.asarray(x, dtype=float)
    m = np.asarray(m, dtype=float)
    if x.shape != m.shape:
        raise InvalidInput("Gamma-Gamma: x and m must have the same length")
    if np.any(x <= 0) or np.any(m <= 0):
        raise InvalidInput("Gamma-Gamma: fit only customers with x >= 1 and a positive mean spend")
    return x, m


def _gg_terms(p: float, q: float, gamma: float, x: Any, m: Any) -> Any:
    """log f(m_x | p, q, gamma, x): the density of a customer's mean spend."""
    np = _np()
    from scipy.special import gammaln

    px = p * x
    return (gammaln(px + q) - gammaln(px) - gammaln(q) + q * math.log(gamma)
            + (px - 1) * np.log(m) + px * np.log(x) - (px + q) * np.log(gamma + m * x))


def gamma_gamma_log_likelihood(*, p: float, q: float, gamma: float, x: Any, m: Any,
                               weights: Any = None) -> float:
    np = _np()
    x, m = _gg_arrays(x, m)
    terms = _gg_terms(p, q, gamma, x, m)
    return float(np.sum(terms if weights is None else terms * np.asarray(weights, dtype=float)))


def fit_gamma_gamma(*, x: Any, m: Any, starts: list[list[float]] | None = None) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma parameters from repeat customers (x >= 1, mean spend m)."""
    np = _np()
    x, m = _gg_arrays(x, m)
    if x.size == 0:
        raise InvalidInput("Gamma-Gamma: no repeat customers to fit")
    scale = float(np.median(m)) or 1.0
    (gx, gm), w = _grouped(x, m / scale)
    n = float(w.sum())

    def objective(theta: Any) -> tuple[float, Any]:
        params = np.exp(theta)
        with np.errstate(all="ignore"):
            v = -float(np.dot(_gg_terms(*params, gx, gm), w)) / n
            g = -(_gg_gradient(*params, gx, gm) @ w) * params / n
        if not (math.isfinite(v) and np.all(np.isfinite(g))):
            return 1e300, np.zeros(3)
        return v, g

    starts = starts or [
        [0.0, 0.0, 0.0],
        [math.log(5.0), math.log(3.0), math.log(2.0)],
        [math.log(1.0), math.log(5.0), math.log(4.0)],
        [math.log(10.0), math.log(2.0), math.log(0.3)],
    ]
    theta, ok = _minimise(objective, starts)
    p, q, gamma_s = (float(v) for v in np.exp(theta))
    gamma = gamma_s * scale
    ll = gamma_gamma_log_likelihood(p=p, q=q, gamma=gamma, x=x, m=m)
    edge = _edge_note("Gamma-Gamma", ("p", "q", "gamma"), theta, (p, q, gamma))
    return GammaGamma(p=p, q=q, gamma=gamma, log_likelihood=ll, customers=int(x.size),
                      converged=ok, edge_note=edge)


def _gg_gradient(p: float, q: float, gamma: float, x: Any, m: Any) -> Any:
    """Per-customer derivatives of the Gamma-Gamma log-likelihood by p, q, gamma (3 x n)."""
    np = _np()
    from scipy.special import digamma

    px = p * x
    ln_total = np.log(gamma + m * x)
    d_p = x * (digamma(px + q) - digamma(px) + np.log(m) + np.log(x) - ln_total)
    d_q = digamma(px + q) - digamma(q) + math.log(gamma) - ln_total
    d_gamma = q / gamma - (px + q) / (gamma + m * x)
    return np.vstack([d_p, d_q, d_gamma])


def gamma_gamma_expected_spend(*, model: GammaGamma, x: Any, m: Any) -> Any:
    """E[M | x, m_x]: a weighted mean of the population mean and the customer's own mean.

    (q - 1) / (p x + q - 1) * p gamma / (q - 1) + p x / (p x + q - 1) * m_x; a customer
    without repeat purchases (x = 0) gets the population mean. Infinite when q <= 1.
    """
    np = _np()
    x = np.asarray(x, dtype=float)
    m = np.where(x > 0, np.asarray(m, dtype=float), 0.0)
    p, q, gamma = model.p, model.q, model.gamma
    if q <= 1:
        return np.full_like(x, np.inf)
    return (p * (gamma + x * m)) / (p * x + q - 1)


# -- value over a horizon ------------------------------------------------------------------

STEP_DAYS = 30
YEAR_DAYS = 365


@dataclass(frozen=True)
class Forecast:
    bgnbd: BgNbd
    gamma_gamma: GammaGamma | None
    horizon_days: int
    discount_rate: float
    expected_purchases: Any
    p_alive: Any
    expected_spend: Any
    expected_value: Any
    notes: list[str] = field(default_factory=list)


def discounted_purchases(*, model: BgNbd, horizon_days: int, discount_rate: float,
                         x: Any, t_x: Any, T: Any) -> Any:
    """Expected purchases in the horizon, each 30-day step discounted at its end.

    sum_k (E[Y(t_k)] - E[Y(t_(k-1))]) / (1 + d)^(t_k / 365) with t_k = min(30 k, horizon);
    with d = 0 it telescopes to E[Y(horizon)]. `discount_rate` is annual (0.1 = 10 %).
    """
    np = _np()
    x = np.asarray(x, dtype=float)
    total = np.zeros_like(x)
    prev = np.zeros_like(x)
    t = 0
    while t < horizon_days:
        t = min(t + STEP_DAYS, horizon_days)
        cur = bgnbd_expected_purchases(t, model=model, x=x, t_x=t_x, T=T)
        total = total + (cur - prev) / (1 + discount_rate) ** (t / YEAR_DAYS)
        prev = cur
    return total


def forecast(*, x: Any, t_x: Any, T: Any, m: Any, horizon_days: int,
             discount_rate: float = 0.0) -> Forecast:
    """Fit both models on one customer base and predict each customer's next `horizon_days`.

    x, t_x, T in days (frequency, recency, age); m the mean spend of the repeat purchase
    days (0 when x = 0). Expected value = discounted expected purchases x expected spend.
    """
    np = _np()
    x, t_x, T = _bgnbd_arrays(x, t_x, T)
    m = np.asarray(m, dtype=float)
    notes: list[str] = []
    bg = fit_bgnbd(x=x, t_x=t_x, T=T)
    if not bg.converged:
        notes.append("BG/NBD: the optimiser did not fully converge")
    if bg.edge_note:
        notes.append(bg.edge_note)
    repeat = (x > 0) & (m > 0)
    gg: GammaGamma | None = None
    if int(repeat.sum()) >= 2 and np.unique(m[repeat]).size >= 2:
        gg = fit_gamma_gamma(x=x[repeat], m=m[repeat])
        if not gg.converged:
            notes.append("Gamma-Gamma: the optimiser did not fully converge")
        if gg.edge_note:
            notes.append(gg.edge_note)
        if gg.q <= 1:
            notes.append(f"Gamma-Gamma: q = {gg.q:.3f} <= 1, the mean spend is unbounded; "
                         "no expected spend or value")
    else:
        notes.append("Gamma-Gamma: fewer than two repeat customers with different spends; "
                     "no expected spend or value")
    expected = bgnbd_expected_purchases(float(horizon_days), model=bg, x=x, t_x=t_x, T=T)
    p_alive = bgnbd_p_alive(model=bg, x=x, t_x=t_x, T=T)
    if gg is not None and gg.q > 1:
        spend = gamma_gamma_expected_spend(model=gg, x=x, m=m)
        if discount_rate:
            count = discounted_purchases(model=bg, horizon_days=horizon_days,
                                         discount_rate=discount_rate, x=x, t_x=t_x, T=T)
        else:
            count = expected
        value = count * spend
    else:
        spend = value = None
    return Forecast(bgnbd=bg, gamma_gamma=gg, horizon_days=horizon_days,
                    discount_rate=discount_rate, expected_purchases=expected, p_alive=p_alive,
                    expected_spend=spend, expected_value=value, notes=notes)


# -- simulation (for tests and for checking a fit by eye) ----------------------------------


def simulate_bgnbd(*, r: float, alpha: float, a: float, b: float, T: Any, seed: int) -> tuple[Any, Any]:
    """Draw (x, t_x) for customers observed for T each, from the BG/NBD story itself.

    lambda ~ Gamma(r, rate alpha), p ~ Beta(a, b); the customer can leave after each repeat
    purchase, so x = min(N(T), D) with N(T) ~ Poisson(lambda T) and D ~ Geometric(p); given
    N(T) = n, purchase times are n sorted uniforms on (0, T], so the x-th is T * Beta(x, n - x + 1).
    """
    np = _np()
    rng = np.random.default_rng(seed)
    T = np.asarray(T, dtype=float)
    lam = rng.gamma(r, 1.0 / alpha, size=T.shape)
    p = rng.beta(a, b, size=T.shape)
    n = rng.poisson(lam * T)
    d = rng.geometric(p)
    x = np.minimum(n, d)
    t_x = np.zeros_like(T)
    has = x > 0
    t_x[has] = T[has] * rng.beta(x[has], n[has] - x[has] + 1)
    return x.astype(float), t_x


def simulate_gamma_gamma(*, p: float, q: float, gamma: float, x: Any, seed: int) -> Any:
    """Mean spend of x purchases per customer: nu ~ Gamma(q, rate gamma), spends ~ Gamma(p, rate nu)."""
    np = _np()
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=float)
    nu = rng.gamma(q, 1.0 / gamma, size=x.shape)
    total = rng.gamma(p * x, 1.0 / nu)
    return total / x
