"""`demo`: build a realistic demo club and show its dashboard (the README's quick start)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loyaltyctl.cli.context import get_app
from loyaltyctl.cli.main import app


@app.command()
def demo(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(
        help="Where to build the club (loyalty.toml, campaigns.toml, loyalty.db, data/).",
        file_okay=False)] = Path("loyalty-demo"),
    members: Annotated[int, typer.Option("--members", min=50, max=200_000,
                                         help="How many members to enrol.")] = 3000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed and --as-of, same club.")] = 42,
    force: Annotated[bool, typer.Option("--force", help="Rebuild an existing demo club.")] = False,
) -> None:
    """Build a demo club from a seed (members, a year of purchases, campaigns, referrals,
    refunds, redemptions, expiries, tiers) and print the manager's dashboard.

    An existing demo club is shown again without rebuilding (use --force to rebuild).

    Example: loyaltyctl demo && cd loyalty-demo && loyaltyctl members show M000042
    """
    import time

    from loyaltyctl.config import CONFIG_FILENAME
    from loyaltyctl.db.engine import resolve_db_url
    from loyaltyctl.services.demo import build_demo

    a = get_app(ctx)
    out = a.out()
    cfg = directory / CONFIG_FILENAME
    # Point the context at the demo club first, so --as-of is read in its timezone.
    a.config_opt = cfg
    for cached in ("loaded", "db_url", "now"):
        a.__dict__.pop(cached, None)
    if not cfg.exists():
        import tomllib

        from loyaltyctl.config import parse_config, sample_config_text
        from loyaltyctl.timeutil import parse_instant, utcnow

        tz = parse_config(tomllib.loads(sample_config_text())).program.timezone
        try:
            a.__dict__["now"] = (parse_instant(a.as_of_opt, tz=tz, date_means="end")
                                 if a.as_of_opt else utcnow())
        except ValueError as exc:
            from loyaltyctl.errors import InvalidInput

            raise InvalidInput(f"--as-of: {exc}") from None
    db_url = resolve_db_url(a.db_opt, directory.resolve())
    built = False
    if force or not cfg.exists():
        started = time.perf_counter()
        out.message(f"building the demo club in {directory}/ (seed {seed}, {members:,} members)...")
        result = build_demo(directory=directory, db_url=db_url, seed=seed, n_members=members,
                            now=a.now, actor=a.actor, force=force)
        c = result.counts
        out.message(
            f"built in {time.perf_counter() - started:.1f} s: {c['members']:,} members, "
            f"{c['purchases']:,} purchases, {c['refunds']:,} refunds, "
            f"{c['redemptions']:,} redemptions, {c['points_expired']:,} points expired")
        built = True
    else:
        out.message(f"{directory}/ already holds a demo club; showing it (--force rebuilds it)")
    # Show the dashboard of that club: the same reports a manager would run.
    a.db_opt = db_url
    for cached in ("loaded", "db_url", "now"):
        a.__dict__.pop(cached, None)
    a.dispose()
    from loyaltyctl.cli import reports as r

    r.summary(ctx, from_=None, to=None, period=None, fmt=None, output=None, no_chart=False)
    r.ladder(ctx, fmt=None, output=None, no_chart=False)
    r.tiers_(ctx, from_=None, to=None, period=None, fmt=None, output=None, part=None,
             no_chart=False)
    if built or not a.quiet:
        out.message(
            f"\nTry it: cd {directory} && loyaltyctl members show M000042 "
            "&& loyaltyctl reports liability && loyaltyctl reports rfm")
