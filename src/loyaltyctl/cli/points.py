"""`points balance | history | adjust | redeem | expiring | expire`."""

from __future__ import annotations

from typing import Annotated

import typer

from loyaltyctl.cli.context import get_app
from loyaltyctl.cli.options import FormatOpt, OutputOpt

app = typer.Typer(no_args_is_help=True)

MemberArg = Annotated[str, typer.Argument(help="Member code, card number, phone or e-mail.")]
# Lets `points adjust C1 -50` read -50 as the amount instead of an unknown option.
_SIGNED = {"ignore_unknown_options": True}


def _points_arg(text: str, *, name: str = "points") -> int:
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.normalize import parse_int

    try:
        return parse_int(text)
    except ValueError as exc:
        raise InvalidInput(f"{name}: {exc}") from None


@app.command()
def balance(ctx: typer.Context, member: MemberArg, fmt: FormatOpt = None,
            output: OutputOpt = None) -> None:
    """Available and pending points, their money value, and what expires in the next 30 days.

    Example: loyaltyctl points balance 09123456789
    """
    # Kept light for support staff: no SQLAlchemy, no Rich, a few indexed queries through
    # the read-only connection; the ORM only when pending points are due (a ledger write).
    from loyaltyctl.normalize import format_money
    from loyaltyctl.services.lookup import balance_lookup

    a = get_app(ctx)
    program = a.config.program
    info = None
    with a.reader() as r:
        if r is not None:
            info = balance_lookup(reader=r, key=member, region=program.phone_region,
                                  now=a.now, today=a.today)
    if info is None:
        from loyaltyctl.cli.returns import activate_due_pending
        from loyaltyctl.services.members import resolve_member
        from loyaltyctl.services.points import balance_summary

        activate_due_pending(a, member)  # pending points whose holding period is over
        with a.session() as s:
            m = resolve_member(session=s, key=member, region=program.phone_region)
            info = balance_summary(session=s, member=m, today=a.today)
    value = info["available"] * program.point_value if info["available"] > 0 else 0
    info["value"] = value
    info["currency"] = program.currency
    f = a.format(fmt and fmt.value)
    out = a.out(output)
    if f != "table":
        out.record(info, fmt=f)
        return
    lines = [
        f"{info['member']}  {info['name']}" + (f"  [{info['status']}]" if info["status"] != "active" else "")
        + (f"  tier {info['tier']}" if info["tier"] else ""),
        f"available  {info['available']:,} points"
        + (f" = {format_money(value, program.decimals)} {program.currency}" if program.point_value else ""),
    ]
    if info["pending"]:
        lines.append(f"pending    {info['pending']:,} points (not yet redeemable)")
    if info["expiring_soon"]:
        lines.append(f"expiring   {info['expiring_soon']:,} points within {info['expiring_within_days']} days"
                     f" (next on {a.show_date(info['next_expiry'])})")
    out.write_text("\n".join(lines) + "\n")


@app.command()
def history(
    ctx: typer.Context,
    member: MemberArg,
    kind: Annotated[list[str] | None, typer.Option(  # noqa: UP007
        "--kind", help="Only these kinds (repeat or comma-separate: earn,redeem,expire...).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="From this date or time.")] = None,  # noqa: UP007
    to: Annotated[str | None, typer.Option("--to", help="Up to this date (inclusive) or time.")] = None,  # noqa: UP007
    limit: Annotated[int, typer.Option(min=1, max=100000, help="Rows per page.")] = 50,
    page: Annotated[int, typer.Option(min=1, help="Page number.")] = 1,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """The member's ledger, newest first, with the balance after each entry.

    Example: loyaltyctl points history C1 --kind redeem,expire --from 2026-01-01
    """
    from loyaltyctl.db.models import ENTRY_KINDS
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.render import Col
    from loyaltyctl.services.members import resolve_member
    from loyaltyctl.services.points import history as ledger_history

    a = get_app(ctx)
    kinds = [k.strip().lower() for item in (kind or []) for k in item.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in ENTRY_KINDS]
    if unknown:
        raise InvalidInput(f"--kind: unknown kind {unknown[0]!r} (kinds: {', '.join(ENTRY_KINDS)})")
    with a.session() as s:
        m = resolve_member(session=s, key=member, region=a.config.program.phone_region)
        rows = ledger_history(
            session=s, member=m, kinds=kinds or None,
            since=a.parse_when(from_, option="--from") if from_ else None,
            until=a.parse_when(to, option="--to", date_means="end") if to else None,
            limit=limit, offset=(page - 1) * limit,
        )
    f = a.format(fmt and fmt.value)
    if f == "table":
        for r in rows:
            r["at"] = a.show_time(r["at"])
            r["expires_on"] = a.show_date(r["expires_on"])
            if r["pending_until"]:
                r["kind"] += f" (pending until {a.show_time(r['pending_until'])})"
    a.out(output).rows(rows, fmt=f, empty=f"no ledger entries for {member} match", columns=[
        Col("id"), Col("at"), Col("kind"), Col("points", justify="right",
                                              fmt=lambda v: f"{v:+,}"),
        Col("balance", justify="right"), Col("expires_on", "Expires"),
        Col("remaining", justify="right"), Col("ref"), Col("detail"), Col("actor"),
        *([Col("pending_until")] if f != "table" else []),
    ])


@app.command(context_settings=_SIGNED)
def adjust(
    ctx: typer.Context,
    member: MemberArg,
    points: Annotated[str, typer.Argument(help="+N to add, -N to take away.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the ledger and audit).")],
    ref: Annotated[str | None, typer.Option(  # noqa: UP007
        "--ref", help="Reference: the same ref twice is a no-op.")] = None,
    expires: Annotated[str | None, typer.Option(  # noqa: UP007
        "--expires", help="Expiry day of added points (default: the program's expiry rule).")] = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Add or take away points by hand, with a reason (never below zero).

    Example: loyaltyctl points adjust C1 +200 --reason "goodwill, ticket 4411" --ref T4411
    """
    from loyaltyctl.services.members import resolve_member
    from loyaltyctl.services.points import adjust as do_adjust

    a = get_app(ctx)
    n = _points_arg(points)
    expires_on = a.parse_day(expires, option="--expires") if expires else None
    with a.session(write=True) as s:
        m = resolve_member(session=s, key=member, region=a.config.program.phone_region)
        ch = do_adjust(session=s, config=a.config, member=m, points=n, reason=reason, ref=ref,
                       expires_on=expires_on, now=a.now, today=a.today, actor=a.actor)
        if not ch.already:
            a.audit(s, command="points adjust", target=ch.member_code, rows=1, details={
                "points": n, "reason": reason, "ref": ref, "expires_on": ch.expires_on})
    out = a.out(output)
    if ch.already:
        out.message(f"already adjusted: {ref} (no points changed)")
    _show_change(a, out, fmt, {
        "member": ch.member_code, "points": n, "ref": ref, "expires_on": ch.expires_on,
        "balance": ch.balance, "already": ch.already,
    }, f"{ch.member_code}: {n:+,} points ({reason}); balance {ch.balance:,}")


def _show_change(a, out, fmt, data: dict, line: str) -> None:  # noqa: ANN001
    f = a.format(fmt and fmt.value)
    if f == "table":
        if not data.get("already"):
            out.write_text(line + "\n")
        return
    out.record(data, fmt=f)


@app.command()
def redeem(
    ctx: typer.Context,
    member: MemberArg,
    points: Annotated[str, typer.Argument(help="Points to spend as a discount.")],
    ref: Annotated[str, typer.Option("--ref", help="Order or receipt id: the same ref twice is a no-op.")],
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Spend points as a cash discount worth points x program.point_value.

    Example: loyaltyctl points redeem C1 500 --ref ORDER-1001
    """
    from loyaltyctl.normalize import format_money
    from loyaltyctl.services.members import resolve_member
    from loyaltyctl.services.points import redeem_points

    a = get_app(ctx)
    program = a.config.program
    n = _points_arg(points)
    with a.session(write=True) as s:
        m = resolve_member(session=s, key=member, region=program.phone_region)
        ch = redeem_points(session=s, config=a.config, member=m, points=n, ref=ref, now=a.now,
                           today=a.today, actor=a.actor)
        discount = n * program.point_value
        if not ch.already:
            a.audit(s, command="points redeem", target=ch.member_code, rows=1,
                    details={"points": n, "ref": ref, "discount": discount})
    out = a.out(output)
    money = f"{format_money(discount, program.decimals)} {program.currency}"
    if ch.already:
        out.message(f"already redeemed: {ref} (no points taken)")
    _show_change(a, out, fmt, {
        "member": ch.member_code, "points": n, "ref": ref, "discount": discount,
        "currency": program.currency, "balance": ch.balance, "already": ch.already,
    }, f"{ch.member_code}: redeemed {n:,} points for a discount of {money}; balance {ch.balance:,}")


@app.command()
def expiring(
    ctx: typer.Context,
    within: Annotated[str, typer.Option("--within", help="Window after today: 30d, 4w, 3m.")] = "30d",
    limit: Annotated[int, typer.Option(min=1, max=1000000, help="Rows per page.")] = 1000,
    page: Annotated[int, typer.Option(min=1, help="Page number.")] = 1,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Who loses how many points, and when, in the window after today (earliest first).

    Example: loyaltyctl points expiring --within 30d --format csv > reminders.csv
    """
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.normalize import parse_duration_days
    from loyaltyctl.render import Col
    from loyaltyctl.services.points import expiring as expiring_rows

    a = get_app(ctx)
    try:
        days = parse_duration_days(within)
    except ValueError as exc:
        raise InvalidInput(f"--within: {exc}") from None
    today = a.today
    with a.session() as s:
        rows = expiring_rows(session=s, today=today, within_days=days, limit=limit,
                             offset=(page - 1) * limit)
    f = a.format(fmt and fmt.value)
    if f == "table":
        for r in rows:
            r["expires_on"] = a.show_date(r["expires_on"])
    a.out(output).rows(
        rows, fmt=f, empty=f"no points expire within {days} days after {a.show_date(today)}",
        columns=[Col("expires_on", "Expires"), Col("member"), Col("name"),
                 Col("points", justify="right"), Col("lots", justify="right")])


@app.command()
def expire(
    ctx: typer.Context,
    as_of: Annotated[str | None, typer.Option(  # noqa: UP007
        "--as-of", help="Expire what is due on or before this day (default: today).")] = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Close every lot whose expiry day has come; safe to re-run for the same day.

    Example: loyaltyctl points expire --quiet    (nightly cron; or --as-of 2026-03-31 to catch up)
    """
    from loyaltyctl.services.locks import default_holder, job_lock
    from loyaltyctl.services.points import expire as do_expire

    a = get_app(ctx)
    if as_of:
        a.as_of_opt = as_of
        a.__dict__.pop("now", None)  # `now` is cached from the global --as-of
    day = a.today
    with job_lock(engine=a.engine(), name="points expire", holder=default_holder(a.actor)):
        # Every entry and allocation it writes copies a member and lot id it reads in the
        # same statement: SQLite's per-row foreign-key look-ups are skipped (see session_scope).
        with a.session(write=True, trusted_bulk=True) as s:
            res = do_expire(session=s, config=a.config, as_of=day, now=a.now, actor=a.actor)
            if res.lots:
                a.audit(s, command="points expire", rows=res.lots, details={
                    "as_of": day, "points": res.points, "lots": res.lots, "members": res.members})
    when = a.show_date(day)
    line = (f"expired {res.points:,} points from {res.lots:,} lots of {res.members:,} members "
            f"as of {when}" if res.lots else f"nothing to expire as of {when}")
    f = a.format(fmt and fmt.value)
    out = a.out(output)
    if f == "table":
        out.message(line)
    else:
        out.record({"as_of": day, "points": res.points, "lots": res.lots,
                    "members": res.members}, fmt=f)


from loyaltyctl.cli import returns as _returns  # noqa: E402,F401  (registers refund/reverse/import)
