"""`rewards list | redeem`."""

from __future__ import annotations

from typing import Annotated

import typer

from loyaltyctl.cli.context import get_app
from loyaltyctl.cli.options import FormatOpt, OutputOpt

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    available_for: Annotated[str | None, typer.Option(  # noqa: UP007
        "--available-for", help="Only rewards this member can redeem today.")] = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """The rewards catalogue with cost, stock left, validity window and tiers.

    Example: loyaltyctl rewards list --available-for 09123456789
    """
    from loyaltyctl.render import Col
    from loyaltyctl.services.rewards import catalog

    a = get_app(ctx)
    with a.session() as s:
        m = None
        if available_for:
            from loyaltyctl.services.members import resolve_member

            m = resolve_member(session=s, key=available_for, region=a.config.program.phone_region)
        rows = catalog(session=s, config=a.config, today=a.today, member=m)
    f = a.format(fmt and fmt.value)
    if f == "table":
        for r in rows:
            r["left"] = "unlimited" if r["left"] is None else f"{r['left']:,} of {r['stock']:,}"
            r["window"] = (f"{a.show_date(r['valid_from']) or '…'} to {a.show_date(r['valid_until']) or '…'}"
                           if r["valid_from"] or r["valid_until"] else "always")
            r["tiers"] = ", ".join(r["tiers"]) or "all"
        cols = [Col("code"), Col("name"), Col("cost", justify="right"), Col("left", "Stock left"),
                Col("window", "Valid"), Col("tiers")]
    else:
        cols = [Col(k) for k in ("code", "name", "kind", "cost", "value", "stock", "redeemed",
                                 "left", "valid_from", "valid_until", "tiers", "open")]
    empty = (f"no reward can be redeemed by {available_for} today" if available_for
             else "the catalogue is empty (add [[rewards]] to the program file)")
    a.out(output).rows(rows, fmt=f, columns=cols, empty=empty)


@app.command()
def redeem(
    ctx: typer.Context,
    member: Annotated[str, typer.Argument(help="Member code, card number, phone or e-mail.")],
    reward: Annotated[str, typer.Argument(help="Reward code (see `rewards list`).")],
    ref: Annotated[str, typer.Option("--ref", help="Order or voucher id: the same ref twice is a no-op.")],
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Spend a reward's cost in points (refused with the reason when not allowed).

    Example: loyaltyctl rewards redeem C1 coffee-mug --ref GIFT-0042
    """
    from loyaltyctl.services.members import resolve_member
    from loyaltyctl.services.rewards import redeem_reward

    a = get_app(ctx)
    with a.session(write=True) as s:
        m = resolve_member(session=s, key=member, region=a.config.program.phone_region)
        res = redeem_reward(session=s, config=a.config, member=m, code=reward, ref=ref,
                            now=a.now, today=a.today, actor=a.actor)
        ch = res.change
        if not ch.already:
            a.audit(s, command="rewards redeem", target=ch.member_code, rows=1, details={
                "reward": res.reward.code, "points": res.reward.cost, "ref": ref})
    out = a.out(output)
    if ch.already:
        out.message(f"already redeemed: {ref} (no points taken)")
    f = a.format(fmt and fmt.value)
    if f == "table":
        if not ch.already:
            left = "" if res.left is None else f"; {res.left:,} left in stock"
            out.write_text(f"{ch.member_code}: redeemed {res.reward.name} ({res.reward.code}) for "
                           f"{res.reward.cost:,} points; balance {ch.balance:,}{left}\n")
        return
    out.record({"member": ch.member_code, "reward": res.reward.code, "points": res.reward.cost,
                "ref": ref, "balance": ch.balance, "left": res.left, "already": ch.already},
               fmt=f)
