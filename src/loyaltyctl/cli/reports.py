"""`reports summary | liability | tiers | ladder | retention | campaigns | birthdays | top |
revenue`: read-only manager reports, with terminal charts for --format table.

Every report takes the global --as-of; period reports take --from/--to (Jalali accepted) or
--period month|quarter|year (the current one). JSON and CSV carry raw numbers (money in
minor units, rates as fractions); tables show formatted money and percentages. Reports
with two tables print both on a terminal and in JSON; in CSV, --part picks one.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loyaltyctl.cli.context import AppContext, get_app
from loyaltyctl.cli.options import FormatOpt, OutputOpt, ShowPiiOpt

if TYPE_CHECKING:
    from loyaltyctl.services.periods import Period

app = typer.Typer(no_args_is_help=True)


class Unit(StrEnum):
    month = "month"
    quarter = "quarter"
    year = "year"


class By(StrEnum):
    month = "month"
    quarter = "quarter"


class TopBy(StrEnum):
    spend = "spend"
    points = "points"
    referrals = "referrals"


class LiabilityPart(StrEnum):
    by_month = "by_month"
    expiring = "expiring"


class TiersPart(StrEnum):
    distribution = "distribution"
    changes = "changes"


class RetentionPart(StrEnum):
    periods = "periods"
    cohorts = "cohorts"


FromOpt = Annotated[str | None, typer.Option(
    "--from", help="First day of the period (YYYY-MM-DD; Jalali dates accepted).", show_default=False)]
ToOpt = Annotated[str | None, typer.Option(
    "--to", help="Last day of the period (default: the --as-of day).", show_default=False)]
PeriodOpt = Annotated[Unit | None, typer.Option(
    "--period", help="The current month, quarter or year (the one containing --as-of; Jalali "
    "with calendar = \"jalali\").", show_default=False)]
NoChartOpt = Annotated[bool, typer.Option("--no-chart", help="Tables only, no chart.")]


# -- helpers ------------------------------------------------------------------------------


def _period(a: AppContext, from_: str | None, to: str | None, unit: Unit | None) -> Period:
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.services.periods import resolve

    start = a.parse_day(from_, option="--from") if from_ else None
    end = a.parse_day(to, option="--to") if to else None
    try:
        return resolve(today=a.today, start=start, end=end, unit=unit and unit.value,
                       calendar=a.config.program.calendar)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _periods(a: AppContext, from_: str | None, to: str | None, unit: Unit | None, by: str,
             default_count: int) -> list[Period]:
    """Whole periods of `by` for per-period reports: those covering --from..--to, the ones
    of the current --period up to today, or the last `default_count` ending with today."""
    from loyaltyctl.services.periods import last_periods, periods_covering

    cal = a.config.program.calendar
    per = _period(a, from_, to, unit)
    end = min(per.end, a.today) if unit else per.end
    if per.start is None:
        return last_periods(end, by, default_count, cal)
    return periods_covering(per.start, end, by, cal)


def _span(a: AppContext, start: Any, end: Any) -> str:
    return f"{a.show_date(start) if start else 'the beginning'} to {a.show_date(end)}"


def _money(a: AppContext):  # noqa: ANN202
    from loyaltyctl.normalize import format_money

    decimals = a.config.program.decimals
    return lambda v: format_money(int(v), decimals)


def _pct(v: Any) -> str:
    return f"{v:.1%}"


def _width(out: Any) -> int:
    return max(40, min(out.console().width, 100))


def _emit_table(a: AppContext, output: Path | None, *parts: Any) -> None:
    from loyaltyctl.charts import stack

    a.out(output).print(stack(*parts))


def _emit_data(a: AppContext, output: Path | None, f: str, data: Any, rows: list[dict] | None,
               columns: list[Any] | None = None) -> None:
    """JSON: the whole object; CSV: the chosen rows."""
    out = a.out(output)
    if f == "json":
        out.record(data, fmt="json") if isinstance(data, dict) else out.rows(data, fmt="json",
                                                                              columns=columns)
    else:
        out.rows(rows or [], fmt="csv", columns=columns)


# -- commands -----------------------------------------------------------------------------


@app.command()
def summary(
    ctx: typer.Context,
    from_: FromOpt = None,
    to: ToOpt = None,
    period: PeriodOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    no_chart: NoChartOpt = False,
) -> None:
    """Members, purchases, revenue, points issued / redeemed / expired / outstanding, and the
    liability, for a period (default: everything up to --as-of).

    Example: loyaltyctl --as-of 2026-03-31 reports summary --period quarter
    """
    from loyaltyctl.services import reports

    a = get_app(ctx)
    per = _period(a, from_, to, period)
    with a.session() as s:
        data = reports.summary(session=s, config=a.config, period=per, now=a.now)
    f = a.format(fmt and fmt.value)
    if f != "table":
        a.out(output).record(data, fmt=f)
        return
    from loyaltyctl.charts import bar_chart, data_table
    from loyaltyctl.render import Col

    money = _money(a)
    shown = {
        "revenue": money, "refunded": money, "liability": money, "point_value": money,
        "redemption_rate": _pct,
    }
    rows = [{"metric": k.replace("_", " "),
             "value": (shown[k](v) if k in shown and v is not None else
                       (f"{v:,}" if isinstance(v, int) else ("n/a" if v is None else str(v))))}
            for k, v in data.items() if k not in ("from", "to")]
    table = data_table(rows, [Col("metric"), Col("value", justify="right")],
                       title=f"Summary, {_span(a, data['from'], data['to'])}")
    chart = None
    if not no_chart:
        chart = bar_chart(
            [("issued", data["points_issued"]), ("redeemed", data["points_redeemed"]),
             ("expired", data["points_expired"]), ("clawed back", data["points_clawed_back"]),
             ("outstanding", data["points_outstanding"])],
            width=_width(a.out()), title="Points")
    _emit_table(a, output, table, chart)


@app.command()
def liability(
    ctx: typer.Context,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    part: Annotated[LiabilityPart | None, typer.Option(
        "--part", help="CSV: which table (default by_month).")] = None,
    no_chart: NoChartOpt = False,
) -> None:
    """Outstanding points in open lots by expiry month, and what expires in 30/60/90 days.

    Example: loyaltyctl reports liability --format csv --part expiring -o expiring.csv
    """
    from loyaltyctl.services import reports

    a = get_app(ctx)
    with a.session() as s:
        data = reports.liability(session=s, config=a.config, now=a.now, today=a.today)
    f = a.format(fmt and fmt.value)
    if f != "table":
        which = (part or LiabilityPart.by_month).value
        _emit_data(a, output, f, data if part is None else data[which], data[which])
        return
    from loyaltyctl.charts import bar_chart, data_table
    from loyaltyctl.render import Col

    money = _money(a)
    for r in data["by_month"]:
        r["from"], r["to"] = a.show_date(r["from"]), a.show_date(r["to"])
    for r in data["expiring"]:
        r["until"] = a.show_date(r["until"])
    title = (f"Outstanding points as of {a.show_date(data['as_of'])}: {data['outstanding']:,} "
             f"(liability {money(data['liability'])})")
    months = data_table(data["by_month"], [
        Col("month", "Expires"), Col("from"), Col("to"), Col("points"),
        Col("money", fmt=money), Col("share", fmt=_pct)], title=title)
    soon = data_table(data["expiring"], [
        Col("within_days", "Within days"), Col("until", "Until"), Col("points"),
        Col("money", fmt=money), Col("share", fmt=_pct)], title="Expiring soon")
    chart = None
    if not no_chart and data["by_month"]:
        chart = bar_chart([(r["month"], r["points"]) for r in data["by_month"]],
                          width=_width(a.out()), title="Points by expiry month")
    _emit_table(a, output, months, soon, chart)


@app.command("tiers")
def tiers_(
    ctx: typer.Context,
    from_: FromOpt = None,
    to: ToOpt = None,
    period: PeriodOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    part: Annotated[TiersPart | None, typer.Option(
        "--part", help="CSV: which table (default distribution).")] = None,
    no_chart: NoChartOpt = False,
) -> None:
    """Members per tier at the end of the period, and upgrades and downgrades within it.

    Example: loyaltyctl reports tiers --period month --format json
    """
    from loyaltyctl.services import reports

    a = get_app(ctx)
    per = _period(a, from_, to, period)
    with a.session() as s:
        data = reports.tiers(session=s, config=a.config, period=per, now=a.now)
    f = a.format(fmt and fmt.value)
    if f != "table":
        which = (part or TiersPart.distribution).value
        _emit_data(a, output, f, data if part is None else data[which], data[which])
        return
    from loyaltyctl.charts import bar_chart, data_table
    from loyaltyctl.render import Col

    dist = data_table(data["distribution"], [
        Col("tier"), Col("name"), Col("members"), Col("share", fmt=_pct),
        Col("upgraded_to", "Upgraded to"), Col("downgraded_to", "Downgraded to")],
        title=f"Tiers at {a.show_date(data['to'])}: {data['members']:,} members; "
              f"{data['initial']:,} initial, {data['upgrades']:,} upgrade(s), "
              f"{data['downgrades']:,} downgrade(s) from {_span(a, data['from'], data['to'])}")
    changes = None
    if data["changes"]:
        changes = data_table(data["changes"], [
            Col("from_tier", "From"), Col("to_tier", "To"), Col("direction"), Col("changes"),
            Col("members")], title="Tier changes")
    chart = None
    if not no_chart and data["distribution"]:
        chart = bar_chart([(r["name"], r["members"]) for r in data["distribution"]],
                          width=_width(a.out()), title="Members per tier")
    _emit_table(a, output, dist, changes, chart)


@app.command()
def ladder(
    ctx: typer.Context,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    no_chart: NoChartOpt = False,
) -> None:
    """The loyalty ladder: prospect, customer, repeat, loyal, advocate, as a funnel.

    Example: loyaltyctl --as-of 2026-06-30 reports ladder
    """
    from loyaltyctl.services import reports

    a = get_app(ctx)
    with a.session() as s:
        data = reports.ladder(session=s, config=a.config, now=a.now, today=a.today)
    f = a.format(fmt and fmt.value)
    if f != "table":
        _emit_data(a, output, f, data, data["stages"])
        return
    from loyaltyctl.charts import data_table, funnel
    from loyaltyctl.render import Col

    table = data_table(data["stages"], [
        Col("stage"), Col("members", "At or above"), Col("exactly", "Exactly"),
        Col("share", fmt=_pct), Col("conversion", "From previous", fmt=_pct)],
        title=f"Loyalty ladder as of {a.show_date(data['as_of'])}: {data['members']:,} members")
    chart = None
    if not no_chart:
        chart = funnel([(r["stage"], r["members"]) for r in data["stages"]],
                       width=_width(a.out()), title="Funnel")
    _emit_table(a, output, table, chart)


@app.command()
def retention(
    ctx: typer.Context,
    by: Annotated[By, typer.Option("--by", help="Period length.")] = By.month,
    from_: FromOpt = None,
    to: ToOpt = None,
    period: PeriodOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    part: Annotated[RetentionPart | None, typer.Option(
        "--part", help="CSV: which table (default periods; cohorts is one row per cell).")] = None,
    no_chart: NoChartOpt = False,
) -> None:
    """Retention and churn per month (or quarter), repeat-purchase rate, and the cohort
    matrix by join month (default: the last 12 months, or 4 quarters).

    Example: loyaltyctl reports retention --by quarter --from 2025-01-01 --to 2025-12-31
    """
    from loyaltyctl.services import reports

    a = get_app(ctx)
    shown = _periods(a, from_, to, period, by.value, 12 if by is By.month else 4)
    with a.session() as s:
        data = reports.retention(session=s, config=a.config, shown=shown, unit=by.value, now=a.now)
    f = a.format(fmt and fmt.value)
    if f != "table":
        which = (part or RetentionPart.periods).value
        rows = data["periods"]
        if which == "cohorts":
            rows = [{"cohort": c["cohort"], "members": c["members"], "offset": k,
                     "buyers": c["buyers"][k], "share": c["shares"][k]}
                    for c in data["cohorts"] for k in range(len(c["shares"]))]
        _emit_data(a, output, f, data if part is None else rows, rows)
        return
    from loyaltyctl.charts import data_table, heat_map
    from loyaltyctl.render import Col

    table = data_table(data["periods"], [
        Col("period"), Col("buyers"), Col("previous_buyers", "Previous"), Col("retained"),
        Col("retention_rate", "Retention", fmt=_pct), Col("churn_rate", "Churn", fmt=_pct),
        Col("repeat_rate", "Repeat (2+)", fmt=_pct)],
        title=f"Retention by {by.value}, {_span(a, data['from'], data['to'])}",
        caption=(f"Repeat-purchase rate over the range: {data['repeat_buyers']:,} of "
                 f"{data['buyers']:,} buyers"
                 + (f" ({data['repeat_rate']:.1%})" if data["repeat_rate"] is not None else "")))
    chart = None
    if not no_chart and data["cohorts"]:
        n = max(len(c["shares"]) for c in data["cohorts"])
        chart = heat_map(
            [c["cohort"] for c in data["cohorts"]], [f"+{k}" for k in range(n)],
            [c["shares"] for c in data["cohorts"]], sizes=[c["members"] for c in data["cohorts"]],
            width=_width(a.out()), row_header="joined",
            title=f"Cohorts: share of each join {by.value}'s members buying, {by.value}s after joining")
    _emit_table(a, output, table, chart)


@app.command("campaigns")
def campaigns_(
    ctx: typer.Context,
    campaign: Annotated[list[str] | None, typer.Option(
        "--campaign", help="Only this campaign code (repeatable).")] = None,
    from_: FromOpt = None,
    to: ToOpt = None,
    period: PeriodOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    no_chart: NoChartOpt = False,
) -> None:
    """Per campaign: members acquired, purchases and revenue in its window, points issued and
    their cost, budget, expected vs actual revenue, ROI and cost per acquisition. A period
    keeps the campaigns whose window overlaps it.

    Example: loyaltyctl reports campaigns --campaign nowruz --format json
    """
    from loyaltyctl.errors import NotFound
    from loyaltyctl.services import reports

    a = get_app(ctx)
    codes = campaign or []
    known = {c.code for c in a.config.campaigns}
    for code in codes:
        if code not in known:
            raise NotFound(f"--campaign: no campaign {code!r} in the program file "
                           f"(known: {', '.join(sorted(known)) or 'none'})")
    per = _period(a, from_, to, period) if (from_ or to or period) else None
    with a.session() as s:
        rows = reports.campaigns(session=s, config=a.config, now=a.now, today=a.today,
                                 codes=codes, period=per)
    f = a.format(fmt and fmt.value)
    if f != "table":
        a.out(output).rows(rows, fmt=f)
        return
    from loyaltyctl.charts import bar_chart, data_table
    from loyaltyctl.render import Col

    if not rows:
        a.out(output).message("no campaigns to report (add them with `loyaltyctl campaigns add`)")
        return
    money = _money(a)
    for r in rows:
        r["starts"], r["ends"] = a.show_date(r["starts"]), a.show_date(r["ends"])
    table = data_table(rows, [
        Col("code"), Col("starts"), Col("ends"), Col("status"), Col("acquired"),
        Col("purchases"), Col("revenue", fmt=money), Col("attributable_revenue", "Attributable",
                                                         fmt=money),
        Col("expected_revenue", "Expected", fmt=money), Col("points_issued", "Points"),
        Col("points_cost", "Points cost", fmt=money), Col("budget", fmt=money),
        Col("roi", "ROI", fmt=_pct), Col("cost_per_acquisition", "CPA", fmt=money)],
        title="Campaigns")
    chart = None
    if not no_chart:
        chart = bar_chart([(r["code"], r["attributable_revenue"]) for r in rows],
                          width=_width(a.out()), fmt=money, title="Attributable revenue")
    _emit_table(a, output, table, chart)


@app.command()
def birthdays(
    ctx: typer.Context,
    within: Annotated[str, typer.Option(
        "--within", help="How far ahead, counting today: 7d, 2w, 1m (30 days).")] = "7d",
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    show_pii: ShowPiiOpt = False,
) -> None:
    """Active members whose birthday falls within the next N days (today included).

    Example: loyaltyctl reports birthdays --within 14d --format csv -o greetings.csv
    """
    from loyaltyctl.charts import FAST_ROWS, fast_table
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.normalize import parse_duration_days
    from loyaltyctl.pii import mask_record
    from loyaltyctl.render import Col
    from loyaltyctl.services import reports

    a = get_app(ctx)
    try:
        days = parse_duration_days(within)
    except ValueError as exc:
        raise InvalidInput(f"--within: {exc}") from None
    if not 1 <= days <= 366:
        raise InvalidInput(f"--within: {days} days is outside 1..366")
    with a.session(write=show_pii) as s:
        rows = reports.birthdays(session=s, config=a.config, today=a.today, days=days)
        if show_pii:
            a.audit(s, command="reports birthdays", rows=len(rows),
                    details={"show_pii": True, "within_days": days})
    if not show_pii:
        rows = [mask_record(r) for r in rows]
    f = a.format(fmt and fmt.value)
    if f == "table":
        for r in rows:
            r["birthday"] = a.show_date(r["birthday"])
            if show_pii:
                r["birth_date"] = a.show_date(r["birth_date"])
    columns = [Col("code"), Col("name"), Col("birthday"), Col("in_days", "In days"),
               Col("birth_date", "Born"), Col("phone"), Col("email"), Col("tier")]
    if f == "table" and len(rows) > FAST_ROWS:
        a.out(output).print(fast_table(rows, columns))  # thousands of rows: no Rich Table
        return
    a.out(output).rows(rows, fmt=f, empty=f"no birthdays in the next {days} day(s)",
                       columns=columns)


@app.command("top")
def top_(
    ctx: typer.Context,
    by: Annotated[TopBy, typer.Option("--by", help="Rank by spend (net of refunds), points "
                                      "earned, or members referred.")] = TopBy.spend,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10000,
                                       help="How many members.")] = 10,
    from_: FromOpt = None,
    to: ToOpt = None,
    period: PeriodOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    no_chart: NoChartOpt = False,
) -> None:
    """Top members by spend, points earned or referrals in the period (ties: lower code).

    Example: loyaltyctl reports top --by referrals --limit 20 --period year
    """
    from loyaltyctl.services import reports

    a = get_app(ctx)
    per = _period(a, from_, to, period)
    with a.session() as s:
        rows = reports.top(session=s, config=a.config, period=per, now=a.now, by=by.value,
                           limit=limit)
    f = a.format(fmt and fmt.value)
    if f != "table":
        a.out(output).rows(rows, fmt=f)
        return
    from loyaltyctl.charts import bar_chart, data_table
    from loyaltyctl.render import Col

    if not rows:
        a.out(output).message("no members to rank in this period")
        return
    fmt_value = _money(a) if by is TopBy.spend else None
    count_key = [k for k in rows[0] if k not in ("rank", "code", "name", "tier", by.value)][0]
    table = data_table(rows, [Col("rank"), Col("code"), Col("name"), Col("tier"),
                              Col(by.value, fmt=fmt_value), Col(count_key)],
                       title=f"Top {limit} by {by.value}, {_span(a, per.start, per.end)}")
    chart = None
    if not no_chart:
        chart = bar_chart([(r["code"], r[by.value]) for r in rows], width=_width(a.out()),
                          fmt=fmt_value)
    _emit_table(a, output, table, chart)


@app.command("revenue")
def revenue_(
    ctx: typer.Context,
    by: Annotated[Unit, typer.Option("--by", help="Period length.")] = Unit.month,
    from_: FromOpt = None,
    to: ToOpt = None,
    period: PeriodOpt = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
    no_chart: NoChartOpt = False,
) -> None:
    """Revenue (net of refunds), purchases and points issued per month (default: the last 12).

    Example: loyaltyctl reports revenue --period year
    """
    from loyaltyctl.services import reports

    a = get_app(ctx)
    shown = _periods(a, from_, to, period, by.value, {"month": 12, "quarter": 4, "year": 3}[by.value])
    with a.session() as s:
        rows = reports.revenue(session=s, config=a.config, shown=shown, now=a.now)
    f = a.format(fmt and fmt.value)
    if f != "table":
        a.out(output).rows(rows, fmt=f)
        return
    from loyaltyctl.charts import bar_chart, data_table
    from loyaltyctl.render import Col

    money = _money(a)
    table = data_table(rows, [Col("period"), Col("purchases"), Col("buyers"),
                              Col("revenue", fmt=money), Col("points_issued", "Points issued")],
                       title=f"Revenue and points by {by.value}")
    parts: list[Any] = [table]
    if not no_chart:
        w = _width(a.out())
        parts.append(bar_chart([(r["period"], r["revenue"]) for r in rows], width=w, fmt=money,
                               title="Revenue"))
        parts.append(bar_chart([(r["period"], r["points_issued"]) for r in rows], width=w,
                               title="Points issued", style="yellow"))
    _emit_table(a, output, *parts)


from loyaltyctl.cli import reports_rfm as _reports_rfm  # noqa: E402,F401  (registers rfm and clv)
