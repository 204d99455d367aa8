"""`config validate | show`."""

from __future__ import annotations

from typing import Annotated

import typer

from loyaltyctl.cli.context import get_app

app = typer.Typer(no_args_is_help=True)


@app.command()
def validate(ctx: typer.Context) -> None:
    """Check the program file (and campaigns.toml): exit 4 naming the key if anything is wrong.

    Example: loyaltyctl --config shop/loyalty.toml config validate
    """
    a = get_app(ctx)
    loaded = a.loaded
    c = loaded.config
    a.out().message(
        f"{loaded.path}: OK ({c.program.name}, {c.program.currency}, "
        f"{len(c.tiers.levels)} tiers, {len(c.rewards)} rewards, "
        f"{len(c.events)} events, {len(c.campaigns)} campaigns)"
    )


@app.command()
def show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of TOML.")] = False,
) -> None:
    """Print the effective rules, defaults filled in, as TOML (or JSON).

    Example: loyaltyctl config show --json
    """
    from loyaltyctl.config import config_to_dict
    from loyaltyctl.render import to_json

    a = get_app(ctx)
    data = config_to_dict(a.config)
    if as_json or a.fmt == "json":
        a.out().write_text(to_json(data) + "\n")
    else:
        import tomli_w

        a.out().write_text(tomli_w.dumps(data))
