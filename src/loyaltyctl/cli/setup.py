"""Top-level commands: init (a new club)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from loyaltyctl.cli.context import get_app
from loyaltyctl.cli.main import app


@app.command()
def init(
    ctx: typer.Context,
    directory: Annotated[Optional[Path], typer.Argument(  # noqa: UP007
        help="Where to create loyalty.toml (default: the current directory).",
        file_okay=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing loyalty.toml.")] = False,
) -> None:
    """Create a club: copy the sample program file and create (or upgrade) the database.

    Example: loyaltyctl init myclub && cd myclub && loyaltyctl members add C1 "Sara Ahmadi"
    """
    from loyaltyctl.config import CONFIG_FILENAME, load_config, sample_config_text
    from loyaltyctl.db.engine import mask_url
    from loyaltyctl.db.migrate import upgrade

    a = get_app(ctx)
    target_dir = directory or (a.config_opt.parent if a.config_opt else Path.cwd())
    target_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = a.config_opt or (target_dir / CONFIG_FILENAME)
    out = a.out()
    wrote = not cfg_path.exists() or force
    if wrote:
        cfg_path.write_text(sample_config_text(), encoding="utf-8")
        out.message(f"wrote {cfg_path}")
    else:
        out.message(f"kept existing {cfg_path}")
    a.config_opt = cfg_path
    a.loaded  # noqa: B018 - validate before touching the database
    load_config(cfg_path)
    engine = a.engine(check_schema=False)
    before, after = upgrade(engine)
    if wrote or before != after:
        with a.session(write=True) as s:
            a.audit(s, command="init", details={"config": str(cfg_path), "wrote_config": wrote,
                                                "schema_before": before, "schema_after": after})
    if before == after:
        out.message(f"database {mask_url(a.db_url)} already at schema {after}")
    else:
        out.message(f"database {mask_url(a.db_url)} created at schema {after}")
