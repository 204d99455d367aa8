"""`reports clv`: BG/NBD and Gamma-Gamma maths checked against independent numerics, published
CDNOW figures and simulated data from known parameters; then the command end to end.

scipy is the optional `analytics` extra: tests that fit or integrate skip without it; the
"scipy missing" and --no-forecast tests run everywhere.
"""

from __future__ import annotations

import os

# As the CLI does before loading numpy: single-threaded BLAS for the tiny fits (OpenBLAS
# threads make L-BFGS-B several times slower on a busy machine). Harmless if numpy is
# already loaded.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
from datetime import date, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

import loyaltyctl.cli.reports_rfm  # noqa: E402, F401 - registers `reports rfm` / `reports clv`
from conftest import Club  # noqa: E402
from loyaltyctl.services import clv  # noqa: E402


@pytest.fixture
def scipy() -> Any:
    return pytest.importorskip("scipy")


# CDNOW sample customers (x, t_x, T in weeks; mean repeat spend in $): the first rows of the
# data set Fader, Hardie & Lee use, and published estimates for it.
CDNOW_CUSTOMERS = [(2, 30.43, 38.86), (1, 1.71, 38.86), (0, 0.0, 38.86), (7, 29.43, 38.86),
                   (10, 34.14, 38.86)]
CDNOW_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
CDNOW_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}


# -- independent numerics ------------------------------------------------------------------


def _bgnbd_numeric(x: int, t_x: float, T: float, t: float | None, prm: dict[str, float]) -> dict[str, float]:
    """Likelihood, P(alive) and E[Y(t)] by integrating the individual-level model over the
    gamma (lambda) and beta (p) heterogeneity, without the closed forms.

    Individual level: alive at T with (1-p)^x lambda^x e^(-lambda T); left after the x-th
    repeat purchase with p (1-p)^(x-1) lambda^x e^(-lambda t_x). Alive, the customer makes
    (1 - e^(-lambda p t)) / p purchases in the next t on average.
    """
    import numpy as np
    from scipy import integrate, special

    r, alpha, a, b = prm["r"], prm["alpha"], prm["a"], prm["b"]

    def g(lam: float) -> float:
        return float(np.exp(r * np.log(alpha) + (r - 1) * np.log(lam) - alpha * lam - special.gammaln(r)))

    def h(p: float) -> float:
        return float(np.exp((a - 1) * np.log(p) + (b - 1) * np.log1p(-p) - special.betaln(a, b)))

    def over_lam(f: Any, horizon: float) -> float:
        peak = max((x + r - 1) / (alpha + horizon), 1e-3)
        top = peak * 10 + 60 / (alpha + horizon)
        return integrate.quad(f, 0, top, points=[peak], limit=500, epsabs=0, epsrel=1e-10)[0]

    def over_p(f: Any) -> float:
        return integrate.quad(f, 0, 1, limit=500, epsabs=0, epsrel=1e-10)[0]

    alive = over_p(lambda p: (1 - p) ** x * h(p)) * over_lam(
        lambda lam: lam ** x * np.exp(-lam * T) * g(lam), T)
    left = 0.0
    if x > 0:
        left = over_p(lambda p: p * (1 - p) ** (x - 1) * h(p)) * over_lam(
            lambda lam: lam ** x * np.exp(-lam * t_x) * g(lam), t_x)
    out = {"likelihood": alive + left, "p_alive": alive / (alive + left)}
    if t is not None:
        future = over_p(lambda p: (1 - p) ** x / p * h(p) * over_lam(
            lambda lam: lam ** x * np.exp(-lam * T) * -np.expm1(-lam * p * t) * g(lam), T))
        out["expected"] = future / (alive + left)
    return out


def test_bgnbd_likelihood_and_p_alive_equal_numeric_integration(scipy: Any) -> None:
    model = clv.BgNbd(**CDNOW_BGNBD)
    for x, t_x, T in CDNOW_CUSTOMERS:
        num = _bgnbd_numeric(x, t_x, T, None, CDNOW_BGNBD)
        ll = clv.bgnbd_log_likelihood(**CDNOW_BGNBD, x=[x], t_x=[t_x], T=[T])
        assert ll == pytest.approx(__import__("math").log(num["likelihood"]), rel=1e-9, abs=1e-9)
        p_alive = clv.bgnbd_p_alive(model=model, x=[x], t_x=[t_x], T=[T])[0]
        assert p_alive == pytest.approx(num["p_alive"], rel=1e-9)
    # The sum over customers is the sum of the individual terms (weights = counts).
    xs, txs, Ts = zip(*CDNOW_CUSTOMERS, strict=True)
    total = clv.bgnbd_log_likelihood(**CDNOW_BGNBD, x=xs, t_x=txs, T=Ts)
    assert total == pytest.approx(sum(
        clv.bgnbd_log_likelihood(**CDNOW_BGNBD, x=[x], t_x=[t], T=[T]) for x, t, T in CDNOW_CUSTOMERS))
    doubled = clv.bgnbd_log_likelihood(**CDNOW_BGNBD, x=xs, t_x=txs, T=Ts, weights=[2] * 5)
    assert doubled == pytest.approx(2 * total)


@pytest.mark.parametrize(("x", "t_x", "T"), [(2, 30.43, 38.86), (7, 29.43, 38.86)])
def test_bgnbd_conditional_expectation_equals_numeric_integration(scipy: Any, x: int, t_x: float,
                                                                  T: float) -> None:
    num = _bgnbd_numeric(x, t_x, T, 39.0, CDNOW_BGNBD)
    got = clv.bgnbd_expected_purchases(39.0, model=clv.BgNbd(**CDNOW_BGNBD), x=[x], t_x=[t_x], T=[T])
    assert got[0] == pytest.approx(num["expected"], rel=1e-7)


def test_bgnbd_matches_hardies_published_cdnow_figures(scipy: Any) -> None:
    # Fader & Hardie's BG/NBD spreadsheet (CDNOW, weeks), estimates to 4 decimals:
    # a customer with x=2, t_x=30.43, T=38.86 makes 1.226 purchases in the next 39 weeks,
    # and a new customer E[X(t)] = 0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.8576 purchases
    # by t = 1/7, 1, 3, 31.8571, 32, 78 weeks (E[X(t)] is E[Y(t)] at x = t_x = T = 0).
    model = clv.BgNbd(r=0.2426, alpha=4.4136, a=0.7929, b=2.4259)
    got = clv.bgnbd_expected_purchases(39.0, model=model, x=[2], t_x=[30.43], T=[38.86])[0]
    assert got == pytest.approx(1.226, abs=5e-4)
    for t, expected in [(0.1429, 0.0078), (1.0, 0.0532), (3.0, 0.1506), (31.8571, 1.0405),
                        (32.0, 1.0437), (78.0, 1.8576)]:
        got = clv.bgnbd_expected_purchases(t, model=model, x=[0], t_x=[0], T=[0])[0]
        assert got == pytest.approx(expected, abs=5e-4), t
    # No repeat purchase: the customer cannot have left.
    assert clv.bgnbd_p_alive(model=model, x=[0], t_x=[0], T=[38.86])[0] == 1.0


def _gg_numeric(x: int, m: float, prm: dict[str, float]) -> tuple[float, float]:
    """Density of the mean spend m and E[M | x, m] by integrating over nu ~ Gamma(q, gamma):
    the total of x spends is Gamma(p x, nu), so the mean has density x f_total(x m)."""
    from scipy import integrate, stats

    p, q, gamma = prm["p"], prm["q"], prm["gamma"]

    def joint(nu: float) -> float:
        return x * stats.gamma.pdf(x * m, p * x, scale=1 / nu) * stats.gamma.pdf(nu, q, scale=1 / gamma)

    mode = (q - 1 + p * x) / (gamma + x * m)
    kw = {"points": [mode], "limit": 500, "epsabs": 0, "epsrel": 1e-11}
    dens = integrate.quad(joint, 0, mode * 20, **kw)[0]
    mean = integrate.quad(lambda nu: p / nu * joint(nu), 0, mode * 20, **kw)[0] / dens
    return dens, mean


def test_gamma_gamma_likelihood_and_expectation_equal_numeric_integration(scipy: Any) -> None:
    import math

    model = clv.GammaGamma(**CDNOW_GG)
    for x, m in [(2, 22.35), (1, 11.77), (7, 73.74), (29, 26.26)]:
        dens, mean = _gg_numeric(x, m, CDNOW_GG)
        assert clv.gamma_gamma_log_likelihood(**CDNOW_GG, x=[x], m=[m]) == pytest.approx(
            math.log(dens), rel=1e-9)
        assert clv.gamma_gamma_expected_spend(model=model, x=[x], m=[m])[0] == pytest.approx(mean, rel=1e-9)


def test_gamma_gamma_matches_hardies_published_cdnow_figures(scipy: Any) -> None:
    # Hardie's Gamma-Gamma spreadsheet (note 025): expected average spend of the first ten
    # CDNOW customers at p=6.25, q=3.74, gamma=15.44 (x = 0 gets the population mean).
    x = [2, 1, 0, 0, 0, 7, 1, 0, 2, 0]
    m = [22.35, 11.77, 0, 0, 0, 73.74, 11.77, 0, 25.55, 0]
    expected = [24.65, 18.91, 35.17, 35.17, 35.17, 71.46, 18.91, 35.17, 27.28, 35.17]
    got = clv.gamma_gamma_expected_spend(model=clv.GammaGamma(**CDNOW_GG), x=x, m=m)
    assert list(got) == pytest.approx(expected, abs=0.1)
    assert clv.GammaGamma(**CDNOW_GG).population_mean == pytest.approx(6.25 * 15.44 / 2.74)


# -- recovery of known parameters from simulated data --------------------------------------


def _hessian(f: Any, theta: Any, h: float = 1e-3) -> Any:
    import numpy as np

    k = len(theta)
    H = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            ei, ej = np.eye(k)[i] * h, np.eye(k)[j] * h
            H[i, j] = (f(theta + ei + ej) - f(theta + ei - ej) - f(theta - ei + ej)
                       + f(theta - ei - ej)) / (4 * h * h)
    return H


def _check_recovery(truth: dict[str, float], fitted: dict[str, float], nll: Any,
                    max_se: dict[str, float]) -> None:
    """Each log-estimate is within 3 standard errors (from the observed information) of the
    truth, and those errors are small enough for that to mean something."""
    import numpy as np

    names = list(truth)
    theta = np.log([fitted[n] for n in names])
    se = np.sqrt(np.diag(np.linalg.inv(_hessian(nll, theta))))
    z = (theta - np.log([truth[n] for n in names])) / se
    for n, s, zz in zip(names, se, z, strict=True):
        assert s < max_se[n], f"{n}: standard error {s:.3f} of log {n} is too wide to test"
        assert abs(zz) < 3, f"{n}: fitted {fitted[n]:.4g}, true {truth[n]}, z = {zz:.2f}"


def test_bgnbd_fit_recovers_known_parameters(scipy: Any) -> None:
    import numpy as np

    truth = dict(CDNOW_BGNBD, r=0.24, alpha=4.41, a=0.79, b=2.43)
    rng = np.random.default_rng(23)
    T = rng.uniform(30, 80, size=4000)  # weeks observed, like CDNOW's 27-39 but longer
    x, t_x = clv.simulate_bgnbd(**truth, T=T, seed=1023)
    fit = clv.fit_bgnbd(x=x, t_x=t_x, T=T)
    assert fit.converged and fit.customers == 4000
    got = {"r": fit.r, "alpha": fit.alpha, "a": fit.a, "b": fit.b}
    # The MLE beats the truth on its own sample, and the reported LL is the sum.
    assert fit.log_likelihood >= clv.bgnbd_log_likelihood(**truth, x=x, t_x=t_x, T=T)
    assert fit.log_likelihood == pytest.approx(clv.bgnbd_log_likelihood(**got, x=x, t_x=t_x, T=T))

    def nll(th: Any) -> float:
        r, alpha, a, b = np.exp(th)
        return -clv.bgnbd_log_likelihood(r=r, alpha=alpha, a=a, b=b, x=x, t_x=t_x, T=T)

    _check_recovery(truth, got, nll, {"r": 0.05, "alpha": 0.08, "a": 0.2, "b": 0.25})
    # In plain terms: the purchase rate is pinned down within 10 %; the dropout shape less
    # so, but the mean dropout probability a / (a + b) (0.245) within 15 %.
    for k in ("r", "alpha"):
        assert got[k] == pytest.approx(truth[k], rel=0.1), k
    assert got["a"] / (got["a"] + got["b"]) == pytest.approx(0.79 / (0.79 + 2.43), rel=0.15)


def test_bgnbd_fit_is_unit_free(scipy: Any) -> None:
    # The same customers in days instead of weeks: alpha scales by 7, the rest is unchanged.
    import numpy as np

    rng = np.random.default_rng(5)
    T = rng.uniform(20, 60, size=800)
    x, t_x = clv.simulate_bgnbd(r=0.5, alpha=6.0, a=0.9, b=3.0, T=T, seed=1005)
    weeks = clv.fit_bgnbd(x=x, t_x=t_x, T=T)
    days = clv.fit_bgnbd(x=x, t_x=t_x * 7, T=T * 7)
    assert days.alpha == pytest.approx(weeks.alpha * 7, rel=1e-3)
    for k in ("r", "a", "b"):
        assert getattr(days, k) == pytest.approx(getattr(weeks, k), rel=1e-3)


def test_gamma_gamma_fit_recovers_known_parameters(scipy: Any) -> None:
    import numpy as np

    truth = dict(CDNOW_GG)
    x = np.random.default_rng(31).integers(1, 12, size=4000).astype(float)
    m = clv.simulate_gamma_gamma(**truth, x=x, seed=1031)
    fit = clv.fit_gamma_gamma(x=x, m=m)
    got = {"p": fit.p, "q": fit.q, "gamma": fit.gamma}
    assert fit.converged
    assert fit.log_likelihood >= clv.gamma_gamma_log_likelihood(**truth, x=x, m=m)

    def nll(th: Any) -> float:
        p, q, gamma = np.exp(th)
        return -clv.gamma_gamma_log_likelihood(p=p, q=q, gamma=gamma, x=x, m=m)

    _check_recovery(truth, got, nll, {"p": 0.2, "q": 0.05, "gamma": 0.25})
    for k in truth:
        assert got[k] == pytest.approx(truth[k], rel=0.2), k
    # Money in rials instead of dollars: gamma scales, p and q do not.
    rials = clv.fit_gamma_gamma(x=x, m=m * 1000)
    assert rials.gamma == pytest.approx(fit.gamma * 1000, rel=1e-3)
    assert (rials.p, rials.q) == pytest.approx((fit.p, fit.q), rel=1e-3)


def test_discounting_per_30_day_step(scipy: Any) -> None:
    model = clv.BgNbd(r=0.5, alpha=20.0, a=0.8, b=3.0)
    args = {"x": [3], "t_x": [100.0], "T": [150.0]}
    plain = clv.bgnbd_expected_purchases(365.0, model=model, **args)[0]
    assert clv.discounted_purchases(model=model, horizon_days=365, discount_rate=0.0,
                                    **args)[0] == pytest.approx(plain)
    # By hand: steps end at 30, 60, ..., 360, 365; each step's purchases / 1.1^(end / 365).
    ends = [*range(30, 361, 30), 365]
    cum = [0.0] + [clv.bgnbd_expected_purchases(float(e), model=model, **args)[0] for e in ends]
    by_hand = sum((cum[i + 1] - cum[i]) / 1.1 ** (e / 365) for i, e in enumerate(ends))
    got = clv.discounted_purchases(model=model, horizon_days=365, discount_rate=0.1, **args)[0]
    assert got == pytest.approx(by_hand) and got < plain


# -- the command ---------------------------------------------------------------------------

AS_OF = ("--as-of", "2026-06-30")
AS_OF_DAY = date(2026, 6, 30)
POINT_VALUE = 100  # SIMPLE_CONFIG


def _seed(club: Club, n: int = 150, seed: int = 3) -> list[dict[str, Any]]:
    """Members with purchase days drawn at random, inserted in bulk; returns what was made.

    Member i (id i + 1) first buys T days before the as-of day and then on k later days;
    member 0 buys twice on its first day, member 1 has an extra purchase refunded in full,
    member 2 one refunded in part, and a purchase after the as-of date is ignored.
    """
    from sqlalchemy import insert
    from sqlmodel import Session

    from loyaltyctl.db.models import LedgerEntry, Member, Purchase

    rng = random.Random(seed)
    stamp = datetime(2025, 1, 1)
    people, purchases = [], []
    for i in range(n):
        # The BG/NBD and Gamma-Gamma stories in days: purchase rate ~ Gamma(0.8, 0.03 / 0.8)
        # a day, leaving after a repeat purchase with probability ~ Beta(1, 4); spends
        # ~ Gamma(6, nu) thousand rials with nu ~ Gamma(4, 1 / 0.02).
        T = rng.randint(0, 360)
        rate, leave = rng.gammavariate(0.8, 0.03 / 0.8), rng.betavariate(1, 4)
        nu = rng.gammavariate(4, 0.02)
        days, t = [0], 0.0
        while True:
            t += rng.expovariate(rate)
            if t > T:
                break
            if int(t) > days[-1]:  # a second purchase on the same day adds to that day
                days.append(int(t))
            if rng.random() < leave:
                break
        k = len(days) - 1
        totals = []
        for j, d in enumerate(days):
            amount = max(1, round(rng.gammavariate(6, 1 / nu))) * 1000
            at = datetime.combine(AS_OF_DAY - timedelta(days=T - d), datetime.min.time()) + timedelta(hours=12)
            purchases.append({"member_id": i + 1, "ref": f"P{i}-{j}", "amount": amount,
                              "refunded_amount": 0, "occurred_at": at})
            totals.append(amount)
        first_at = purchases[-len(days)]["occurred_at"]
        if i == 0:  # same day as the first purchase: adds to the first day's total
            purchases.append({"member_id": 1, "ref": "P0-same", "amount": 7000,
                              "refunded_amount": 0, "occurred_at": first_at + timedelta(hours=3)})
            totals[0] += 7000
        if i == 1:  # refunded in full: no effect
            purchases.append({"member_id": 2, "ref": "P1-refunded", "amount": 90000,
                              "refunded_amount": 90000, "occurred_at": first_at + timedelta(days=1)})
        if i == 2 and k:  # refunded in part: the last day counts net
            purchases[-1]["refunded_amount"] = 500
            totals[-1] -= 500
        people.append({"x": k, "t_x": days[-1], "T": T, "totals": totals,
                       "m": sum(totals[1:]) / k if k else 0.0})
    purchases.append({"member_id": 1, "ref": "late", "amount": 123000, "refunded_amount": 0,
                      "occurred_at": datetime(2026, 7, 2, 12)})
    on = datetime(2026, 5, 1)
    ledger = [("earn", 500, on), ("redeem", -200, on), ("reversal", 50, on), ("expire", -100, on),
              ("clawback", -30, on), ("earn", 999, datetime(2026, 7, 5))]
    with Session(club.engine) as s:
        s.execute(insert(Member.__table__), [
            {"id": i + 1, "code": f"M{i:03d}", "name": f"Member {i}", "joined_at": stamp,
             "status": "active", "tags": "", "balance": 0, "pending": 0, "created_at": stamp,
             "updated_at": stamp} for i in range(n)])
        s.execute(insert(Purchase.__table__), [
            {**p, "currency": "IRR", "points": 0, "created_at": stamp} for p in purchases])
        s.execute(insert(LedgerEntry.__table__), [
            {"member_id": 1, "kind": k, "points": pts, "effective_at": at, "actor": "t",
             "created_at": stamp} for k, pts, at in ledger])
        s.commit()
    return people


def _expected(people: list[dict[str, Any]], horizon: int = 365, rate: float = 0.0) -> Any:
    import numpy as np

    return clv.forecast(x=np.array([p["x"] for p in people], dtype=float),
                        t_x=np.array([p["t_x"] for p in people], dtype=float),
                        T=np.array([p["T"] for p in people], dtype=float),
                        m=np.array([p["m"] for p in people], dtype=float),
                        horizon_days=horizon, discount_rate=rate)


def test_clv_json_fits_the_members_purchase_days(club: Club, scipy: Any) -> None:
    people = _seed(club)
    before = club.dump()
    r = club.ok(*AS_OF, "reports", "clv", "--format", "json")
    data = json.loads(r.stdout)
    fc = _expected(people)
    model = data["model"]
    assert model["members"] == 150 and model["repeat_members"] == sum(1 for p in people if p["x"])
    for k in ("r", "alpha", "a", "b", "log_likelihood"):
        assert model["bgnbd"][k] == pytest.approx(getattr(fc.bgnbd, k), rel=1e-6), k
    for k in ("p", "q", "gamma", "log_likelihood"):
        assert model["gamma_gamma"][k] == pytest.approx(getattr(fc.gamma_gamma, k), rel=1e-6), k
    assert model["horizon_days"] == 365 and model["time_unit"] == "day"
    rows = data["members"]
    assert len(rows) == 150
    values = [row["expected_value"] for row in rows]
    assert values == sorted(values, reverse=True)  # default sort: expected value
    for row in rows:
        i = int(row["code"][1:])
        p = people[i]
        assert (row["frequency"], row["recency"], row["age"]) == (p["x"], p["t_x"], p["T"])
        assert row["net_spend"] == sum(p["totals"])
        assert row["p_alive"] == pytest.approx(fc.p_alive[i], abs=1e-4)
        assert row["expected_purchases"] == pytest.approx(fc.expected_purchases[i], abs=1e-4)
        assert row["expected_spend"] == pytest.approx(fc.expected_spend[i], abs=0.5 + 1e-6 * fc.expected_spend[i])
        assert row["expected_value"] == pytest.approx(
            fc.expected_purchases[i] * fc.expected_spend[i], abs=0.5 + 1e-6 * row["expected_value"])
        assert 0 <= row["p_alive"] <= 1
    m0 = next(row for row in rows if row["code"] == "M000")
    # Points kept by M000 up to the as-of date: earn 500, expire -100, clawback -30 (the
    # redemption and its reversal are the member's own use, the July earn is later) = 370.
    assert m0["points_cost"] == 370 * POINT_VALUE
    assert m0["net_value"] == m0["net_spend"] - 370 * POINT_VALUE
    assert club.dump() == before


def test_clv_table_csv_and_discount(club: Club, scipy: Any) -> None:
    people = _seed(club, n=60, seed=8)
    r = club.ok(*AS_OF, "reports", "clv", "--horizon", "26w")
    flat = " ".join(r.stdout.split())  # the caption may wrap
    assert "Customer lifetime value" in flat and "P(alive)" in flat and "M000" in flat
    assert "BG/NBD (days): r=" in flat and "Gamma-Gamma (minor units): p=" in flat
    assert "Horizon 182 days" in flat
    r = club.ok(*AS_OF, "reports", "clv", "--format", "csv", "--sort", "code",
                "--discount-rate", "10%")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["code"] for row in rows] == [f"M{i:03d}" for i in range(60)]
    assert "BG/NBD (days)" in r.stderr and "discounted at 10.00% a year" in r.stderr
    fc = _expected(people, rate=0.1)
    plain = _expected(people)
    for i, row in enumerate(rows):
        assert int(row["expected_value"]) == pytest.approx(fc.expected_value[i], abs=0.5 + 1e-6 * fc.expected_value[i])
        assert fc.expected_value[i] <= plain.expected_value[i]
        # Purchases shown are undiscounted; only the value is discounted.
        assert float(row["expected_purchases"]) == pytest.approx(plain.expected_purchases[i], abs=1e-4)
    # The CSV is written directly (for speed): byte for byte what Output.rows makes of the
    # JSON's member rows, with and without the forecast.
    from loyaltyctl.render import Col, Output

    for extra in ((), ("--no-forecast",)):
        args = (*AS_OF, "reports", "clv", "--sort", "code", "--discount-rate", "10%", *extra)
        text = club.ok(*args, "--format", "csv").stdout
        members = json.loads(club.ok(*args, "--format", "json").stdout)["members"]
        target = club.root / "generic.csv"
        Output(output=target).rows(members, fmt="csv",
                                   columns=[Col(k) for k in text.splitlines()[0].split(",")])
        assert text == target.read_text(encoding="utf-8") and len(members) == 60


def test_clv_without_scipy_names_the_extra(club: Club, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed(club, n=12)
    for mod in ("scipy", "scipy.optimize", "scipy.special"):
        monkeypatch.setitem(sys.modules, mod, None)  # import scipy now raises ImportError
    r = club.run(*AS_OF, "reports", "clv")
    assert r.exit_code == 1
    assert r.stderr.strip() == "Error: reports clv needs scipy: pip install 'loyaltyctl[analytics]'"
    # The historical part needs no scipy.
    r = club.ok(*AS_OF, "reports", "clv", "--no-forecast", "--format", "json", "--sort", "history")
    data = json.loads(r.stdout)
    assert "bgnbd" not in data["model"] and len(data["members"]) == 12
    assert "p_alive" not in data["members"][0]
    nets = [row["net_value"] for row in data["members"]]
    assert nets == sorted(nets, reverse=True)


def test_clv_refuses_too_little_history_and_bad_options(club: Club, scipy: Any) -> None:
    _seed(club, n=5)
    before = club.dump()
    r = club.run(*AS_OF, "reports", "clv")
    assert r.exit_code == 4
    assert "not enough purchase history to fit the forecast: 5 members" in r.stderr
    assert "--no-forecast" in r.stderr
    for args, message in [(("--horizon", "soon"), "--horizon: 'soon' is not a duration"),
                          (("--horizon", "0d"), "--horizon '0d': choose between 1 day"),
                          (("--discount-rate", "1.5"), "--discount-rate '1.5' is not an annual rate"),
                          (("--discount-rate", "abc"), "--discount-rate 'abc'")]:
        r = club.run(*AS_OF, "reports", "clv", *args)
        assert r.exit_code == 4, args
        assert message in r.stderr, r.stderr
    assert club.dump() == before


def test_analytic_gradients_match_finite_differences(scipy: Any) -> None:
    import numpy as np

    def approx_fprime(v: Any, f: Any, h: float) -> Any:  # central differences
        return np.array([(f(v + e) - f(v - e)) / (2 * h) for e in np.eye(len(v)) * h])

    x = np.array([0, 1, 2, 7, 10, 3], dtype=float)
    t_x = np.array([0, 1.71, 30.43, 29.43, 34.14, 5.0])
    T = np.array([38.86, 38.86, 38.86, 38.86, 38.86, 20.0])
    prm = np.array([0.243, 4.414, 0.793, 2.426])
    grad = clv._bgnbd_gradient(*prm, x, t_x, T).sum(axis=1)
    numeric = approx_fprime(prm, lambda v: clv.bgnbd_log_likelihood(
        r=v[0], alpha=v[1], a=v[2], b=v[3], x=x, t_x=t_x, T=T), 1e-5)
    assert grad == pytest.approx(numeric, rel=1e-6, abs=1e-8)
    m = np.array([11.77, 22.35, 73.74, 26.26, 30.0, 15.0])
    xs = np.array([1, 2, 7, 29, 3, 1], dtype=float)
    prm = np.array([6.25, 3.74, 15.44])
    grad = clv._gg_gradient(*prm, xs, m).sum(axis=1)
    numeric = approx_fprime(prm, lambda v: clv.gamma_gamma_log_likelihood(
        p=v[0], q=v[1], gamma=v[2], x=xs, m=m), 1e-5)
    assert grad == pytest.approx(numeric, rel=1e-6, abs=1e-8)
