"""`purchases record | list`."""

from __future__ import annotations

from typing import Annotated

import typer

from loyaltyctl.cli.context import get_app
from loyaltyctl.cli.options import FormatOpt, OutputOpt

app = typer.Typer(no_args_is_help=True)


@app.command()
def record(
    ctx: typer.Context,
    member: Annotated[str, typer.Argument(help="Member code, card number, phone or e-mail.")],
    amount: Annotated[str, typer.Argument(help="Amount in major units (1,250.50; Persian digits ok).")],
    ref: Annotated[str, typer.Option("--ref", help="Transaction id: the same ref twice is a no-op.")],
    at: Annotated[str | None, typer.Option(  # noqa: UP007
        "--at", help="When it happened (local date or date-time; default: now).")] = None,
    category: Annotated[str | None, typer.Option(help="Product category.")] = None,  # noqa: UP007
    channel: Annotated[str | None, typer.Option(help="Sales channel (store, web, app...).")] = None,  # noqa: UP007
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Record one purchase and credit its points; prints the points earned and the new balance.

    Example: loyaltyctl purchases record 09123456789 1,250,000 --ref POS-7781 --category groceries
    """
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.normalize import format_money, parse_money
    from loyaltyctl.services.members import resolve_member
    from loyaltyctl.services.purchases import record_purchase

    a = get_app(ctx)
    program = a.config.program
    try:
        minor = parse_money(amount, program.decimals)
    except ValueError as exc:
        raise InvalidInput(f"amount: {exc}") from None
    occurred_at = a.parse_when(at, option="--at") if at else None
    with a.session(write=True) as s:
        m = resolve_member(session=s, key=member, region=program.phone_region)
        res = record_purchase(
            session=s, config=a.config, member=m, amount=minor, ref=ref, occurred_at=occurred_at,
            category=category, channel=channel, actor=a.actor, now=a.now,
        )
        if not res.already_recorded:
            a.audit(s, command="purchases record", target=res.member_code, rows=1, details={
                "ref": res.ref, "amount": res.amount, "points": res.points,
                "campaign": res.campaign})
    out = a.out(output)
    f = a.format(fmt and fmt.value)
    money = f"{format_money(res.amount, program.decimals)} {res.currency}"
    if res.already_recorded:
        out.message(f"already recorded: {res.ref} (no points added)")
    data = {
        "member": res.member_code, "ref": res.ref, "amount": res.amount,
        "currency": res.currency, "occurred_at": res.occurred_at, "points": res.points,
        "campaign": res.campaign, "pending_until": res.pending_until,
        "expires_on": res.expires_on, "balance": res.balance, "pending": res.pending,
        "already_recorded": res.already_recorded,
    }
    if f == "table":
        if res.already_recorded:
            return
        earned = f"{res.points:,} points" + (f" ({res.campaign})" if res.campaign else "")
        if res.pending_until:
            earned += f", pending until {a.show_time(res.pending_until)}"
        out.write_text(f"{res.member_code}: {money} -> {earned}; balance {res.balance:,}"
                       + (f" (+{res.pending:,} pending)" if res.pending else "") + "\n")
        return
    out.record(data, fmt=f)


@app.command("list")
def list_(
    ctx: typer.Context,
    member: Annotated[str | None, typer.Option(help="Only this member (code, card, phone, e-mail).")] = None,  # noqa: UP007
    from_: Annotated[str | None, typer.Option("--from", help="From this date or time.")] = None,  # noqa: UP007
    to: Annotated[str | None, typer.Option("--to", help="Up to this date (inclusive) or time.")] = None,  # noqa: UP007
    category: Annotated[str | None, typer.Option(help="Only this category.")] = None,  # noqa: UP007
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,  # noqa: UP007
    limit: Annotated[int, typer.Option(min=1, max=100000, help="Rows per page.")] = 50,
    page: Annotated[int, typer.Option(min=1, help="Page number.")] = 1,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Purchases, newest first.

    Example: loyaltyctl purchases list --member C1 --from 2026-01-01 --format csv
    """
    from loyaltyctl.normalize import format_money
    from loyaltyctl.render import Col
    from loyaltyctl.services.purchases import list_purchases

    a = get_app(ctx)
    program = a.config.program
    with a.session() as s:
        member_id = None
        if member:
            from loyaltyctl.services.members import resolve_member

            member_id = resolve_member(session=s, key=member, region=program.phone_region).id
        rows = list_purchases(
            session=s, member_id=member_id,
            since=a.parse_when(from_, option="--from") if from_ else None,
            until=a.parse_when(to, option="--to", date_means="end") if to else None,
            category=category, channel=channel, limit=limit, offset=(page - 1) * limit,
        )
    f = a.format(fmt and fmt.value)
    if f == "table":
        for r in rows:
            r["occurred_at"] = a.show_time(r["occurred_at"])

    def money(v: int) -> str:
        return format_money(v, program.decimals)

    a.out(output).rows(rows, fmt=f, empty="no purchases match", columns=[
        Col("ref"), Col("member"), Col("occurred_at", "At"),
        Col("amount", justify="right", fmt=money), Col("refunded", justify="right", fmt=money),
        Col("currency"), Col("category"), Col("channel"), Col("points", justify="right"),
        Col("campaign"),
    ])


# `purchases import` lives in its own module (the bulk path) and registers on this group.
from loyaltyctl.cli import purchases_import as _import  # noqa: E402,F401
# `purchases refund` and `refunds-import` live with the other return paths (cli/returns.py),
# which registers them on this group (and `points reverse`/`points import` on points).
from loyaltyctl.cli import returns as _returns  # noqa: E402,F401
