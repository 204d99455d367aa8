"""`tiers list | recalc | progress | history | set`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from loyaltyctl.cli.context import AppContext, get_app
from loyaltyctl.cli.options import FormatOpt, OutputOpt

app = typer.Typer(no_args_is_help=True)

MemberArg = Annotated[str, typer.Argument(help="Member code, card number, phone or e-mail.")]


def use_as_of(a: AppContext, as_of: str | None) -> None:
    """A command's own --as-of overrides the global one."""
    if as_of:
        a.as_of_opt = as_of
        a.__dict__.pop("now", None)  # `now` is cached from the global --as-of


def _money_or_count(a: AppContext):  # noqa: ANN202
    """Display formatter for metric values: money for spend, plain numbers otherwise."""
    from loyaltyctl.normalize import format_money

    program = a.config.program
    if a.config.tiers.metric == "spend":
        return lambda v: f"{format_money(v, program.decimals)} {program.currency}"
    return lambda v: f"{v:,}"


@app.command("list")
def list_(ctx: typer.Context, fmt: FormatOpt = None, output: OutputOpt = None) -> None:
    """The tier ladder: thresholds, multipliers, retention, and how many members hold each.

    Example: loyaltyctl tiers list --format json
    """
    from loyaltyctl.render import Col
    from loyaltyctl.services.tiers import level_counts

    a = get_app(ctx)
    with a.session() as s:
        rows = level_counts(session=s, config=a.config)
    tiers = a.config.tiers
    f = a.format(fmt and fmt.value)
    money = _money_or_count(a)
    a.out(output).rows(
        rows, fmt=f, empty="no tiers are configured ([[tiers.levels]] in the program file)",
        caption=f"metric: {tiers.metric} over {tiers.window_days} days" if f == "table" else None,
        columns=[Col("code"), Col("name"), Col("threshold", justify="right", fmt=money),
                 Col("multiplier", justify="right", fmt=lambda v: f"x{v}"),
                 Col("retention_days", "Retention (days)", justify="right"),
                 Col("members", justify="right"), Col("benefits")],
    )


@app.command()
def recalc(
    ctx: typer.Context,
    as_of: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--as-of", help="Recalculate as of this day or time (default: now).")] = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Recalculate every member's tier: upgrades, and downgrades once retention is over.

    Safe to re-run: a second run for the same as-of changes nothing. Prints one summary
    line; --format json or csv also lists the moves.

    Example: loyaltyctl tiers recalc --quiet    (nightly cron; --as-of 2026-03-31 to catch up)
    """
    from loyaltyctl.services.locks import default_holder, job_lock
    from loyaltyctl.services.tiers import recalc as do_recalc

    a = get_app(ctx)
    use_as_of(a, as_of)
    now, today = a.now, a.today
    with job_lock(engine=a.engine(), name="tiers recalc", holder=default_holder(a.actor)):
        with a.session(write=True) as s:
            res = do_recalc(session=s, config=a.config, now=now, actor=a.actor)
            if res.moves:
                a.audit(s, command="tiers recalc", rows=len(res.moves), details={
                    "as_of": today, "upgrades": res.upgrades, "downgrades": res.downgrades,
                    "unchanged": res.unchanged})
    f = a.format(fmt and fmt.value)
    out = a.out(output)
    if f != "table":
        out.rows([m.as_dict() for m in res.moves], fmt=f)
    out.message(f"{res.upgrades} upgrades, {res.downgrades} downgrades, {res.unchanged} unchanged "
                f"as of {a.show_date(today)}")


@app.command()
def progress(ctx: typer.Context, member: MemberArg, fmt: FormatOpt = None,
             output: OutputOpt = None) -> None:
    """Where a member stands: the metric now, what the next tier still needs, and until when
    the current tier is kept.

    Example: loyaltyctl tiers progress 09123456789
    """
    from loyaltyctl.services.members import resolve_member
    from loyaltyctl.services.tiers import progress as tier_progress

    a = get_app(ctx)
    with a.session() as s:
        m = resolve_member(session=s, key=member, region=a.config.program.phone_region)
        info = tier_progress(session=s, config=a.config, member=m, now=a.now)
    f = a.format(fmt and fmt.value)
    out = a.out(output)
    if f != "table":
        out.record(info, fmt=f)
        return
    money = _money_or_count(a)
    lines = [f"{info['member']}  tier {info['tier'] or '(none)'}"
             + (f" ({info['tier_name']}) since {a.show_time(info['tier_since'])}" if info["tier_name"] else "")]
    lines.append(f"{info['metric']} in the last {info['window_days']} days: {money(info['metric_value'])}")
    if info["next_tier"]:
        lines.append(f"next tier  {info['next_tier']} at {money(info['next_threshold'])}: "
                     f"{money(info['needed_for_next'])} to go")
    elif info["tier"]:
        lines.append("top tier reached")
    if info["tier_name"]:
        keep = f"keep {info['tier']}: {money(info['keep_threshold'])} in the window"
        keep += (f", {money(info['needed_to_keep'])} short" if info["needed_to_keep"] else ", met")
        if info["kept_through"]:
            keep += f"; kept at least through {a.show_date(info['kept_through'])}"
        lines.append(keep)
    if info["floor"]:
        lines.append(f"manual floor {info['floor']} through {a.show_date(info['floor_until'])}")
    out.write_text("\n".join(lines) + "\n")


@app.command()
def history(ctx: typer.Context, member: MemberArg, fmt: FormatOpt = None,
            output: OutputOpt = None) -> None:
    """Every tier change of a member, oldest first.

    Example: loyaltyctl tiers history C1
    """
    from loyaltyctl.render import Col
    from loyaltyctl.services.members import resolve_member
    from loyaltyctl.services.tiers import history as tier_history

    a = get_app(ctx)
    with a.session() as s:
        m = resolve_member(session=s, key=member, region=a.config.program.phone_region)
        rows = tier_history(session=s, member_id=m.id)
    f = a.format(fmt and fmt.value)
    if f == "table":
        for r in rows:
            r["changed_at"] = a.show_time(r["changed_at"])
    a.out(output).rows(rows, fmt=f, empty=f"no tier changes for {m.code}", columns=[
        Col("changed_at", "When"), Col("from_tier", "From"), Col("to_tier", "To"),
        Col("reason"), Col("metric", justify="right"), Col("actor")])


@app.command("set")
def set_(
    ctx: typer.Context,
    member: MemberArg,
    tier: Annotated[str, typer.Argument(help="Tier code.")],
    until: Annotated[str, typer.Option("--until", help="Last day the manual tier holds.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")],
) -> None:
    """Give a member a tier by hand until a date: a floor, not a freeze.

    The member is lifted to TIER now if below it; purchases can still lift them higher,
    and `tiers recalc` never moves them below TIER up to and including --until.

    Example: loyaltyctl tiers set C1 gold --until 2026-12-31 --reason "VIP complaint resolution"
    """
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.services.members import resolve_member
    from loyaltyctl.services.tiers import set_manual

    a = get_app(ctx)
    day = a.parse_day(until, option="--until")
    reason = reason.strip()
    if not reason:
        raise InvalidInput("--reason: say why the tier is set by hand (it goes to the audit trail)")
    with a.session(write=True) as s:
        m = resolve_member(session=s, key=member, region=a.config.program.phone_region)
        before = m.tier
        move = set_manual(session=s, config=a.config, member=m, tier=tier.strip().lower(),
                          until=day, now=a.now, actor=a.actor)
        a.audit(s, command="tiers set", target=m.code, rows=1, details={
            "tier": tier, "until": day, "reason": reason, "from": before,
            "to": move.to_tier if move else before})
    if move:
        a.out().message(f"{m.code}: {before or '(none)'} -> {move.to_tier}, "
                        f"kept at least through {a.show_date(day)}")
    else:
        a.out().message(f"{m.code} stays {before} (at or above {tier}); "
                        f"floor {tier} holds through {a.show_date(day)}")
