"""`reports rfm` and `reports clv`: registered on the `reports` group (cli/reports.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from loyaltyctl.cli.context import get_app
from loyaltyctl.cli.options import FormatOpt, OutputOpt
from loyaltyctl.cli.reports import app

if TYPE_CHECKING:
    from datetime import date, datetime

    from loyaltyctl.cli.context import AppContext
    from loyaltyctl.db.lite import Reader


class PeriodUnit(str, Enum):
    month = "month"
    quarter = "quarter"
    year = "year"


class RfmSort(str, Enum):
    code = "code"
    score = "score"
    recency = "recency"
    frequency = "frequency"
    monetary = "monetary"
    spend = "spend"


class ClvSort(str, Enum):
    value = "value"
    history = "history"
    p_alive = "p-alive"
    code = "code"


PeriodOpt = Annotated[Optional[PeriodUnit], typer.Option(  # noqa: UP007
    "--period", help="Only purchases in the current month, quarter or year (calendar of the program).")]
FromOpt = Annotated[Optional[str], typer.Option(  # noqa: UP007
    "--from", help="Only purchases from this local date.")]
ToOpt = Annotated[Optional[str], typer.Option(  # noqa: UP007
    "--to", help="Only purchases up to this local date (default: the as-of date).")]
LimitOpt = Annotated[Optional[int], typer.Option(  # noqa: UP007
    "--limit", min=1, help="Show only the first N members (after sorting).")]

# Minimum history to fit the forecast: a likelihood over fewer customers, or without repeat
# purchases, does not identify the dropout parameters (a, b) at all.
MIN_FIT_CUSTOMERS = 10
MIN_FIT_REPEAT = 3


def _window(a: AppContext, period: PeriodUnit | None, from_: str | None,
            to: str | None) -> tuple[datetime | None, datetime, date, str]:
    """Purchases in [lo, hi) (naive UTC, never past the as-of instant), the reference day
    (the as-of date, or the period's last day when that is earlier) and a label."""
    from datetime import timedelta

    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.services import periods

    tz, cal = a._tz_calendar()
    today = a.today
    try:
        per = periods.resolve(
            today=today,
            start=a.parse_day(from_, option="--from") if from_ else None,
            end=a.parse_day(to, option="--to") if to else None,
            unit=period.value if period else None,
            calendar=cal,
        )
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    lo, hi = per.utc_bounds(tz)
    hi = min(hi, a.now + timedelta(microseconds=1))
    if lo is not None and lo >= hi:
        raise InvalidInput(f"the period starts on {a.show_date(per.start)}, after the as-of date "
                           f"{a.show_date(today)}; choose an earlier --from or a later --as-of")
    reference = min(per.end, today)
    label = (f"{a.show_date(per.start)} to {a.show_date(reference)}" if per.start
             else f"up to {a.show_date(reference)}")
    return lo, hi, reference, label


@contextmanager
def _reader(a: AppContext) -> Iterator[Reader]:
    """The reports only read: a read-only connection without SQLAlchemy (`db/lite.py`, half
    a second less to start on the benchmark club), or the ORM session when the database
    needs the engine."""
    with a.reader() as db:
        if db is not None:
            yield db
            return
    from loyaltyctl.db.lite import SessionReader

    with a.session() as s:
        yield SessionReader(s)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while one row object per member is built and rendered.

    Those objects hold no reference cycles, but creating ~100,000 of them triggers full
    collections that walk every object the CLI has loaded (~0.3 s on the benchmark club)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _money(a: AppContext) -> Any:
    from loyaltyctl.normalize import format_money

    decimals = a.config.program.decimals
    return lambda v: format_money(int(v), decimals)


@app.command("rfm")
def rfm(
    ctx: typer.Context,
    period: PeriodOpt = None,
    from_: FromOpt = None,
    to: ToOpt = None,
    segment: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        "--segment", help="Only members in this segment (repeatable), e.g. 'At risk'.")] = None,
    summary: Annotated[bool, typer.Option(
        "--summary", help="One row per segment (members, share, spend) instead of per member.")] = False,
    sort: Annotated[RfmSort, typer.Option("--sort", help="Order of the members.")] = RfmSort.code,
    limit: LimitOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Recency, frequency and monetary value per member, quintile scores and segments.

    Purchases count net of refunds (a fully refunded one not at all) and are grouped by
    local day: frequency = purchase days - 1, recency = first to last purchase day,
    age = first purchase day to the as-of date, monetary = mean day total of the repeat
    days (0 for one purchase day). R, F and M scores are quintiles 1-5 (NTILE over the
    members ranked worst to best, ties by member id); segments follow the R/F/M rules in
    docs/reports_rfm.md. Money is in minor units in CSV and JSON.

    Example: loyaltyctl --as-of 2026-03-31 reports rfm --segment "At risk" --format csv
    """
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.services import rfm as svc

    a = get_app(ctx)
    wanted: set[str] = set()
    by_lower = {s.lower(): s for s in svc.SEGMENTS}
    for name in segment or []:
        if name.strip().lower() not in by_lower:
            raise InvalidInput(f"--segment {name!r} is not a segment; choose from: "
                               + ", ".join(svc.SEGMENTS))
        wanted.add(by_lower[name.strip().lower()])
    lo, hi, reference, label = _window(a, period, from_, to)
    tz = a._tz_calendar()[0]
    with _gc_paused():
        with _reader(a) as db:
            rows = svc.member_rfm(reader=db, tz=tz, reference_day=reference, start=lo, end=hi)
        _render_rfm(a, rows, wanted=wanted, summary=summary, sort=sort, limit=limit,
                    fmt=a.format(fmt and fmt.value), output=output, label=label)


def _render_rfm(a: AppContext, rows: list[Any], *, wanted: set[str], summary: bool,
                sort: RfmSort, limit: int | None, fmt: str, output: Any, label: str) -> None:
    from datetime import date

    from loyaltyctl.render import Col
    from loyaltyctl.services import rfm as svc

    f = fmt
    money = _money(a)
    currency = a.config.program.currency
    title = f"RFM, purchases {label}" if f == "table" else None
    if summary:
        data = svc.segment_summary(rows)
        if wanted:
            data = [d for d in data if d["segment"] in wanted]
        a.out(output).rows(data, fmt=f, title=title, empty="no members with purchases", columns=[
            Col("segment"), Col("rule"), Col("members", justify="right"),
            Col("share", justify="right", fmt=lambda v: f"{v:.1%}"),
            Col("total_spend", f"Spend ({currency})", justify="right", fmt=money),
            Col("avg_days_since_last", "Avg days since last", justify="right"),
            Col("avg_frequency", "Avg frequency", justify="right")])
        return
    if wanted:
        rows = [r for r in rows if r.segment in wanted]
    keys = {
        RfmSort.code: lambda r: (r.code,),
        RfmSort.score: lambda r: (-r.r_score, -r.f_score, -r.m_score, r.code),
        RfmSort.recency: lambda r: (r.days_since_last, r.code),
        RfmSort.frequency: lambda r: (-r.frequency, r.code),
        RfmSort.monetary: lambda r: (-r.monetary, r.code),
        RfmSort.spend: lambda r: (-r.total_spend, r.code),
    }
    rows = sorted(rows, key=keys[sort])[:limit]
    table = f == "table"
    show = a.show_date if table else date.isoformat
    cols = [
        Col("code"), Col("name"), Col("first_purchase", "First"), Col("last_purchase", "Last"),
        Col("purchase_days", "Days", justify="right"), Col("frequency", "Freq", justify="right"),
        Col("recency", "Recency", justify="right"), Col("age", "Age (T)", justify="right"),
        Col("days_since_last", "Since last", justify="right"),
        Col("monetary", f"Monetary ({currency})", justify="right", fmt=money),
        Col("total_spend", f"Spend ({currency})", justify="right", fmt=money),
        Col("r", "R", justify="right"), Col("f", "F", justify="right"),
        Col("m", "M", justify="right"), Col("rfm", "RFM"), Col("segment")]
    values = [(r.code, r.name, show(r.first_purchase), show(r.last_purchase), r.purchase_days,
               r.frequency, r.recency, r.age, r.days_since_last, r.monetary_minor, r.total_spend,
               r.r_score, r.f_score, r.m_score, r.rfm_score, r.segment) for r in rows]
    o = a.out(output)
    names = [c.key for c in cols]
    if f == "csv":  # every value is a str or an int (tests/test_rfm.py compares)
        o.write_text(_csv_text(names, values))
        return
    if table:  # the three digits of RFM say what R, F and M would on a narrow screen
        cols = [c for c in cols if c.key not in ("r", "f", "m")]
    o.rows([dict(zip(names, v, strict=True)) for v in values], fmt=f, title=title,
           empty="no members with purchases match", columns=cols)


def _csv_text(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    """CSV of plain values (str, int, float, None as empty): byte for byte what the generic
    renderer writes for them, without its per-cell type checks (1.3 million cells for the
    100,000-member benchmark club)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _parse_rate(text: str) -> float:
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.normalize import ascii_digits

    s = ascii_digits(text).replace(" ", "")
    try:
        value = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        value = -1.0
    if not (0 <= value <= 1):
        raise InvalidInput(f"--discount-rate {text!r} is not an annual rate between 0 and 1 "
                           "(e.g. 0.1 or 10%)")
    return value


@app.command("clv")
def clv(
    ctx: typer.Context,
    horizon: Annotated[str, typer.Option(
        "--horizon", help="Forecast horizon: days (365d), weeks (52w) or 30-day months (12m).")] = "365d",
    discount_rate: Annotated[str, typer.Option(
        "--discount-rate", help="Annual discount rate for future value, e.g. 0.1 or 10%.")] = "0",
    period: PeriodOpt = None,
    from_: FromOpt = None,
    to: ToOpt = None,
    no_forecast: Annotated[bool, typer.Option(
        "--no-forecast", help="Historical value only (no model fit, no scipy needed).")] = False,
    sort: Annotated[ClvSort, typer.Option("--sort", help="Order of the members.")] = ClvSort.value,
    limit: LimitOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Customer lifetime value: historical value per member and a BG/NBD + Gamma-Gamma forecast.

    History: net spend, points cost (points kept x point_value) and their difference.
    Forecast (needs the analytics extra): BG/NBD (Fader, Hardie & Lee 2005) fitted by
    maximum likelihood on the members' purchase days gives expected purchases in the
    horizon and P(alive); Gamma-Gamma gives expected spend per purchase day; expected value
    = expected purchases x expected spend, discounted per 30-day step at --discount-rate.
    The fitted parameters (time in days, money in minor units) and log-likelihoods are
    printed with the table (JSON: under "model"; CSV: on stderr).

    Example: loyaltyctl --as-of 2026-03-31 reports clv --horizon 180d --discount-rate 10%
    """
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.normalize import parse_duration_days
    from loyaltyctl.services import clv as model
    from loyaltyctl.services import rfm as svc

    a = get_app(ctx)
    try:
        horizon_days = parse_duration_days(horizon)
    except ValueError as exc:
        raise InvalidInput(f"--horizon: {exc}") from None
    if not 1 <= horizon_days <= 3650:
        raise InvalidInput(f"--horizon {horizon!r}: choose between 1 day and 10 years (3650d)")
    rate = _parse_rate(discount_rate)
    if not no_forecast:
        # A fit has 3-4 parameters: BLAS threads buy nothing there, and OpenBLAS's spinning
        # threads slow L-BFGS-B several times over on a busy machine. Only takes effect if
        # numpy is not loaded yet (a fresh CLI process), and an explicit setting wins.
        import os

        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        model.require_analytics()
    lo, hi, reference, label = _window(a, period, from_, to)
    tz = a._tz_calendar()[0]
    point_value = a.config.program.point_value
    with _gc_paused():
        with _reader(a) as db:
            rows = svc.member_rfm(reader=db, tz=tz, reference_day=reference, start=lo, end=hi)
            kept = svc.points_cost(reader=db, member_ids=[r.member_id for r in rows], before=hi)
        _clv_out(a, rows, kept, point_value=point_value, horizon_days=horizon_days, rate=rate,
                 no_forecast=no_forecast, sort=sort, limit=limit, fmt=a.format(fmt and fmt.value),
                 output=output, label=label)


def _clv_out(a: AppContext, rows: list[Any], kept: dict[int, int], *, point_value: int,
             horizon_days: int, rate: float, no_forecast: bool, sort: ClvSort, limit: int | None,
             fmt: str, output: Any, label: str) -> None:
    from datetime import date

    from loyaltyctl.render import Col, to_json

    f = fmt
    show = a.show_date if f == "table" else date.isoformat
    out: list[dict[str, Any]] = []
    for r in rows:
        cost = kept.get(r.member_id, 0) * point_value
        out.append({
            "code": r.code, "name": r.name,
            "first_purchase": show(r.first_purchase),
            "purchase_days": r.purchase_days, "frequency": r.frequency, "recency": r.recency,
            "age": r.age, "net_spend": r.total_spend, "points_cost": cost,
            "net_value": r.total_spend - cost,
        })
    info: dict[str, Any] = {"period": label, "members": len(rows),
                            "repeat_members": sum(1 for r in rows if r.frequency > 0)}
    if not no_forecast and rows:
        info.update(_forecast(rows, out, horizon_days, rate))
    keys = {
        ClvSort.value: lambda d: (-(d.get("expected_value") or 0), -d["net_value"], d["code"]),
        ClvSort.history: lambda d: (-d["net_value"], d["code"]),
        ClvSort.p_alive: lambda d: (-(d.get("p_alive") or 0), d["code"]),
        ClvSort.code: lambda d: (d["code"],),
    }
    out = sorted(out, key=keys[sort])[:limit]
    o = a.out(output)
    if f == "json":
        o.write_text(to_json({"model": info, "members": out}) + "\n")
        return
    money = _money(a)
    currency = a.config.program.currency
    cols = [Col("code"), Col("name"), Col("first_purchase", "First"),
            Col("purchase_days", "Days", justify="right"), Col("frequency", "Freq", justify="right"),
            Col("recency", "Recency", justify="right"), Col("age", "Age (T)", justify="right"),
            Col("net_spend", f"Net spend ({currency})", justify="right", fmt=money),
            Col("points_cost", f"Points cost ({currency})", justify="right", fmt=money),
            Col("net_value", f"Net value ({currency})", justify="right", fmt=money)]
    if "bgnbd" in info:
        cols += [Col("p_alive", "P(alive)", justify="right", fmt=lambda v: f"{v:.3f}"),
                 Col("expected_purchases", f"Exp. purchases {horizon_days}d", justify="right",
                     fmt=lambda v: f"{v:.2f}"),
                 Col("expected_spend", f"Exp. spend ({currency})", justify="right", fmt=money),
                 Col("expected_value", f"Exp. value ({currency})", justify="right", fmt=money)]
    if f == "table" and "bgnbd" in info:
        # The history columns behind the forecast are in `reports rfm`; keep the screen readable.
        cols = [c for c in cols if c.key not in ("first_purchase", "frequency", "recency", "age")]
    caption = _model_line(info)
    if f == "table":
        o.rows(out, fmt=f, columns=cols, empty="no members with purchases",
               title=f"Customer lifetime value, purchases {label}", caption=caption)
    else:  # CSV, as Output.rows writes it (see _render_rfm)
        from operator import itemgetter

        names = [c.key for c in cols]
        o.write_text(_csv_text(names, list(map(itemgetter(*names), out))))
        o.message(caption)
    for note in info.get("notes", []):
        o.message(f"note: {note}")


def _forecast(rows: list[Any], out: list[dict[str, Any]], horizon_days: int,
              rate: float) -> dict[str, Any]:
    """Fit the models on the members' RFM rows, add the predictions to `out`; the model info."""
    import numpy as np

    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.services import clv as model

    x = np.array([r.frequency for r in rows], dtype=float)
    t_x = np.array([r.recency for r in rows], dtype=float)
    T = np.array([r.age for r in rows], dtype=float)
    m = np.array([r.monetary for r in rows], dtype=float)
    repeat = int((x > 0).sum())
    if len(rows) < MIN_FIT_CUSTOMERS or repeat < MIN_FIT_REPEAT:
        raise InvalidInput(
            f"not enough purchase history to fit the forecast: {len(rows)} members with "
            f"purchases, {repeat} with repeat purchase days (need at least {MIN_FIT_CUSTOMERS} "
            f"and {MIN_FIT_REPEAT})",
            hint="widen the period (--from, --period), or use --no-forecast for the "
                 "historical value only")
    fc = model.forecast(x=x, t_x=t_x, T=T, m=m, horizon_days=horizon_days, discount_rate=rate)
    for i, d in enumerate(out):
        d["p_alive"] = round(float(fc.p_alive[i]), 4)
        d["expected_purchases"] = round(float(fc.expected_purchases[i]), 4)
        if fc.expected_spend is not None:
            d["expected_spend"] = int(round(float(fc.expected_spend[i])))
            d["expected_value"] = int(round(float(fc.expected_value[i])))
        else:
            d["expected_spend"] = d["expected_value"] = None
    bg, gg = fc.bgnbd, fc.gamma_gamma
    info: dict[str, Any] = {
        "time_unit": "day", "money_unit": "minor", "horizon_days": horizon_days,
        "discount_rate": rate,
        "bgnbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b,
                  "log_likelihood": bg.log_likelihood, "customers": bg.customers,
                  "converged": bg.converged},
        "gamma_gamma": None if gg is None else {
            "p": gg.p, "q": gg.q, "gamma": gg.gamma, "log_likelihood": gg.log_likelihood,
            "customers": gg.customers, "converged": gg.converged},
        "expected_purchases": round(float(np.sum(fc.expected_purchases)), 2),
        "expected_value": (None if fc.expected_value is None
                           else int(round(float(np.sum(fc.expected_value))))),
        "notes": fc.notes,
    }
    mask = (x > 0) & (m > 0)
    if mask.sum() >= 3 and np.std(x[mask]) > 0 and np.std(m[mask]) > 0:
        # Gamma-Gamma assumes spend is independent of frequency: show how true that is.
        info["frequency_monetary_correlation"] = round(float(np.corrcoef(x[mask], m[mask])[0, 1]), 3)
    return info


def _model_line(info: dict[str, Any]) -> str:
    head = f"{info['members']} members, {info['repeat_members']} with repeat purchases"
    bg = info.get("bgnbd")
    if not bg:
        return head + "; no forecast"
    text = (f"{head}. BG/NBD (days): r={bg['r']:.4g} alpha={bg['alpha']:.4g} a={bg['a']:.4g} "
            f"b={bg['b']:.4g} LL={bg['log_likelihood']:.2f}")
    gg = info.get("gamma_gamma")
    if gg:
        text += (f". Gamma-Gamma (minor units): p={gg['p']:.4g} q={gg['q']:.4g} "
                 f"gamma={gg['gamma']:.4g} LL={gg['log_likelihood']:.2f}")
    text += f". Horizon {info['horizon_days']} days"
    if info["discount_rate"]:
        text += f", discounted at {info['discount_rate']:.2%} a year"
    return text
