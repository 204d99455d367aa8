"""`bonuses birthday | event | referral`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from loyaltyctl.cli.context import get_app
from loyaltyctl.cli.options import DryRunOpt, FormatOpt, OutputOpt

app = typer.Typer(no_args_is_help=True)

MemberArg = Annotated[str, typer.Argument(help="Member code, card number, phone or e-mail.")]


@app.command()
def birthday(
    ctx: typer.Context,
    as_of: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--as-of", help="Grant birthdays up to this day (default: today).")] = None,
    since: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--since", help="Also birthdays from this day on (catch-up; default: the as-of day).")] = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Grant the birthday bonus to active members whose birthday falls in [--since, --as-of].

    Once per member per year (the Jalali year with calendar = "jalali"); 29 February is
    celebrated on 28 February in common years. Safe to re-run: a second run for the same
    days grants nothing. Prints one summary line; --format json or csv also lists them.

    Example: loyaltyctl bonuses birthday --quiet    (daily cron; --since 2026-03-01 to catch up)
    """
    from loyaltyctl.cli.tiers import use_as_of
    from loyaltyctl.services.bonuses import grant_birthdays
    from loyaltyctl.services.locks import default_holder, job_lock

    a = get_app(ctx)
    use_as_of(a, as_of)
    now, today = a.now, a.today
    first = a.parse_day(since, option="--since") if since else today
    with job_lock(engine=a.engine(), name="bonuses birthday", holder=default_holder(a.actor)):
        with a.session(write=True) as s:
            res = grant_birthdays(session=s, config=a.config, since=first, until=today, now=now,
                                  actor=a.actor)
            if res.granted:
                a.audit(s, command="bonuses birthday", rows=res.granted, details={
                    "since": first, "as_of": today, "points": res.points})
    f = a.format(fmt and fmt.value)
    out = a.out(output)
    if f != "table":
        out.rows([{"member": code} for code in res.members], fmt=f)
    span = a.show_date(today) if first == today else f"{a.show_date(first)} to {a.show_date(today)}"
    if a.config.bonuses.birthday <= 0:
        out.message("no birthday bonus is configured (bonuses.birthday = 0); nothing granted")
        return
    out.message(f"{res.granted} birthday bonuses granted ({res.points:,} points), "
                f"{res.already} already granted, for birthdays {span}")


@app.command()
def event(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Event name, as under [events.NAME] in the program file.")],
    member: MemberArg,
    ref: Annotated[str, typer.Option("--ref", help="Reference of this occurrence (survey id, review id).")],
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Grant the points of a behaviour (survey, review...), within its limit per period.

    The same --ref twice is a no-op. Over the limit: exit 5, nothing granted.

    Example: loyaltyctl bonuses event survey C1 --ref survey-2026-11-4411
    """
    from loyaltyctl.services.bonuses import grant_event
    from loyaltyctl.services.members import resolve_member

    a = get_app(ctx)
    with a.session(write=True) as s:
        m = resolve_member(session=s, key=member, region=a.config.program.phone_region)
        res = grant_event(session=s, config=a.config, name=name.strip().lower(), member=m,
                          ref=ref, now=a.now, actor=a.actor)
        if not res.already:
            a.audit(s, command="bonuses event", target=m.code, rows=1, details={
                "event": res.event, "ref": res.ref, "points": res.points})
    f = a.format(fmt and fmt.value)
    out = a.out(output)
    record = {"member": res.member, "event": res.event, "ref": res.ref, "points": res.points,
              "already_granted": res.already, "count_in_period": res.count_in_period,
              "max_per_period": res.max_per_period, "period": res.period,
              "expires_on": res.expires_on, "balance": res.balance}
    if f != "table":
        out.record(record, fmt=f)
    if res.already:
        out.message(f"{res.event} ref {res.ref} was already granted to {res.member}; nothing changed")
    else:
        out.message(f"{res.member}: +{res.points:,} points for {res.event} "
                    f"({res.count_in_period} of {res.max_per_period} "
                    f"{'ever' if res.period == 'ever' else 'this ' + res.period}); "
                    f"balance {res.balance:,}")


@app.command()
def referral(
    ctx: typer.Context,
    member: MemberArg,
    dry_run: DryRunOpt = False,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Show the referral bonuses a member takes part in, and grant any that are due (catch-up).

    A bonus is due when its trigger (signup, or the referee's first purchase) has happened
    and the receiving member is active; each is granted exactly once.

    Example: loyaltyctl bonuses referral C1 --dry-run
    """
    from loyaltyctl.render import Col
    from loyaltyctl.services.bonuses import grant_due_referrals, referral_status
    from loyaltyctl.services.members import resolve_member

    a = get_app(ctx)
    with a.session(write=not dry_run) as s:
        m = resolve_member(session=s, key=member, region=a.config.program.phone_region)
        if dry_run:
            rows = referral_status(session=s, config=a.config, member=m)
        else:
            rows = grant_due_referrals(session=s, config=a.config, member=m, now=a.now, actor=a.actor)
            granted = [r for r in rows if r["status"] == "granted now"]
            if granted:
                a.audit(s, command="bonuses referral", target=m.code, rows=len(granted), details={
                    "granted": [{"member": r["member"], "role": r["role"], "points": r["points"]}
                                for r in granted]})
    f = a.format(fmt and fmt.value)
    if f == "table":
        for r in rows:
            r["granted_at"] = a.show_time(r["granted_at"])
    a.out(output).rows(rows, fmt=f, empty=f"{m.code} has no referrals (neither referred nor referring)",
                       columns=[Col("referee"), Col("referrer"), Col("role", "Bonus for"),
                                Col("member", "Member"), Col("points", justify="right"),
                                Col("status"), Col("granted_at", "Granted"), Col("purchase_id")])
    n_now = sum(1 for r in rows if r["status"] == "granted now")
    n_due = sum(1 for r in rows if r["status"] == "due")
    if dry_run:
        a.out().message(f"{n_due} referral bonuses due for {m.code} (dry run: nothing granted)")
    else:
        a.out().message(f"{n_now} referral bonuses granted for {m.code}")
