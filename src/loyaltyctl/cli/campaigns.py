"""`campaigns list | add | show | end`."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from loyaltyctl.cli.context import AppContext, get_app
from loyaltyctl.cli.options import FormatOpt, OutputOpt

app = typer.Typer(no_args_is_help=True)

CodeArg = Annotated[str, typer.Argument(help="Campaign code.")]


def _money(a: AppContext, text: str | None, option: str) -> int | None:
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.normalize import parse_money

    if text is None:
        return None
    try:
        return parse_money(text, a.config.program.decimals)
    except ValueError as exc:
        raise InvalidInput(f"{option}: {exc}") from None


def _listed(values: list[str] | None) -> list[str]:
    """Repeated or comma-separated values, lower-cased like purchase categories/channels."""
    return [v.strip().lower() for item in (values or []) for v in item.split(",") if v.strip()]


@app.command("list")
def list_(ctx: typer.Context, fmt: FormatOpt = None, output: OutputOpt = None) -> None:
    """Every campaign with its status today (running, upcoming, ended).

    Example: loyaltyctl campaigns list --format csv
    """
    from loyaltyctl.render import Col
    from loyaltyctl.services.campaigns import list_campaigns

    a = get_app(ctx)
    rows = list_campaigns(loaded=a.loaded, today=a.today)
    f = a.format(fmt and fmt.value)
    if f == "table":
        for r in rows:
            r["starts"], r["ends"] = a.show_date(r["starts"]), a.show_date(r["ends"])
    a.out(output).rows(rows, fmt=f, empty="no campaigns (add one with `loyaltyctl campaigns add`)",
                       columns=[Col("code"), Col("name"), Col("status"), Col("starts"), Col("ends"),
                                Col("multiplier", justify="right"),
                                Col("flat_bonus", "Flat bonus", justify="right"),
                                Col("conditions"), Col("source")])


@app.command()
def add(
    ctx: typer.Context,
    code: CodeArg,
    name: Annotated[str, typer.Option("--name", help="What the campaign is called.")],
    starts: Annotated[str, typer.Option("--starts", help="First day (local).")],
    ends: Annotated[str, typer.Option("--ends", help="Last day, inclusive (local).")],
    multiplier: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--multiplier", help="Points multiplier, e.g. 2 or 1.5 (the highest of overlapping campaigns wins).")] = None,
    flat_bonus: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--flat-bonus", help="Extra points per matching purchase (flat bonuses of overlapping campaigns add up).")] = None,
    min_amount: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--min-amount", help="Only purchases of at least this amount (major units, e.g. 500,000).")] = None,
    tier: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        "--tier", help="Only members of these tiers (repeat or comma-separate).")] = None,
    category: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        "--category", help="Only these purchase categories.")] = None,
    channel: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        "--channel", help="Only these sales channels.")] = None,
    budget: Annotated[Optional[str], typer.Option("--budget", help="Budget (money).")] = None,  # noqa: UP007
    expected_revenue: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--expected-revenue", help="Expected sales (money), for the ROI report.")] = None,
    acquisition_code: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--acquisition-code", help="Code new members give when this campaign brought them.")] = None,
) -> None:
    """Add a campaign to campaigns.toml beside the program file (loyalty.toml is never rewritten).

    Example: loyaltyctl campaigns add nowruz --name "Nowruz double points" --starts 2027-03-15 --ends 2027-04-02 --multiplier 2
    """
    from decimal import Decimal, InvalidOperation

    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.normalize import ascii_digits, parse_int
    from loyaltyctl.services import campaigns

    a = get_app(ctx)
    fields: dict[str, Any] = {
        "code": code.strip(), "name": name.strip(),
        "starts": a.parse_day(starts, option="--starts"), "ends": a.parse_day(ends, option="--ends"),
    }
    if multiplier is not None:
        try:
            fields["multiplier"] = Decimal(ascii_digits(multiplier).replace("٫", "."))
        except InvalidOperation:
            raise InvalidInput(f"--multiplier: {multiplier!r} is not a number") from None
        if not fields["multiplier"].is_finite():
            raise InvalidInput(f"--multiplier: {multiplier!r} is not a number")
    if flat_bonus is not None:
        try:
            fields["flat_bonus"] = parse_int(flat_bonus)
        except ValueError as exc:
            raise InvalidInput(f"--flat-bonus: {exc}") from None
    for key, value, option in (("min_amount", min_amount, "--min-amount"), ("budget", budget, "--budget"),
                               ("expected_revenue", expected_revenue, "--expected-revenue")):
        amount = _money(a, value, option)
        if amount is not None:
            fields[key] = amount
    for key, values in (("tiers", tier), ("categories", category), ("channels", channel)):
        if values:
            fields[key] = _listed(values)
    if acquisition_code is not None:
        fields["acquisition_code"] = acquisition_code.strip() or None
    with a.session(write=True) as s:
        c = campaigns.add(loaded=a.loaded, fields=fields)
        a.audit(s, command="campaigns add", target=c.code, rows=1, details={
            "file": str(a.loaded.campaigns_path), **{k: v for k, v in fields.items() if k != "code"}})
    a.out().message(f"campaign {c.code} added to {a.loaded.campaigns_path} "
                    f"({a.show_date(c.starts)} to {a.show_date(c.ends)}, "
                    f"status {campaigns.status(c, a.today)})")


@app.command()
def show(ctx: typer.Context, code: CodeArg, fmt: FormatOpt = None, output: OutputOpt = None) -> None:
    """A campaign's rules, and the members, purchases, revenue and points it brought in.

    Example: loyaltyctl campaigns show nowruz
    """
    from loyaltyctl.normalize import format_money
    from loyaltyctl.services import campaigns

    a = get_app(ctx)
    c = campaigns.get(a.config, code.strip())
    with a.session() as s:
        res = campaigns.results(session=s, config=a.config, campaign=c, now=a.now)
    program = a.config.program
    record: dict[str, Any] = {
        "code": c.code, "name": c.name, "status": campaigns.status(c, a.today),
        "starts": c.starts, "ends": c.ends, "multiplier": c.multiplier, "flat_bonus": c.flat_bonus,
        "min_amount": c.min_amount, "tiers": c.tiers, "categories": c.categories,
        "channels": c.channels, "budget": c.budget, "expected_revenue": c.expected_revenue,
        "acquisition_code": c.acquisition_code, "source": campaigns.source_of(a.loaded, c.code),
        **res,
    }
    f = a.format(fmt and fmt.value)
    if f == "table":
        def money(v: int) -> str:
            return f"{format_money(v, program.decimals)} {program.currency}"

        record.update(
            starts=a.show_date(c.starts), ends=a.show_date(c.ends),
            conditions=campaigns.describe_conditions(c), min_amount=money(c.min_amount),
            budget=money(c.budget), expected_revenue=money(c.expected_revenue),
            revenue=money(res["revenue"]))
        for k in ("tiers", "categories", "channels"):
            record.pop(k)
    elif f == "csv":
        for k in ("tiers", "categories", "channels"):
            record[k] = ",".join(record[k])
    a.out(output).record(record, fmt=f, title=f"Campaign {c.code}" if f == "table" else None)


@app.command()
def end(
    ctx: typer.Context,
    code: CodeArg,
    on: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--on", help="Last day of the campaign (default: today).")] = None,
) -> None:
    """End a campaign early: set its last day in campaigns.toml.

    Campaigns written in loyalty.toml are edited there by hand (exit 4).

    Example: loyaltyctl campaigns end nowruz --on 2027-03-31
    """
    from loyaltyctl.services import campaigns

    a = get_app(ctx)
    day = a.parse_day(on, option="--on") if on else a.today
    with a.session(write=True) as s:
        c, before = campaigns.end(loaded=a.loaded, code=code.strip(), on=day)
        a.audit(s, command="campaigns end", target=c.code, rows=1, details={
            "ends_before": before, "ends": day})
    a.out().message(f"campaign {c.code} now ends on {a.show_date(day)} (was {a.show_date(before)})")
