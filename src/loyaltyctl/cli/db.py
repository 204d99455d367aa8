"""`db upgrade | check | stats | backup`."""

from __future__ import annotations

from typing import Annotated

import typer

from loyaltyctl.cli.context import get_app
from loyaltyctl.cli.options import FormatOpt, OutputOpt

app = typer.Typer(no_args_is_help=True)


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Apply schema migrations up to this version of loyaltyctl.

    Example: loyaltyctl db backup before.db && loyaltyctl db upgrade
    """
    from loyaltyctl.db.engine import mask_url
    from loyaltyctl.db.migrate import upgrade as do_upgrade

    a = get_app(ctx)
    engine = a.engine(check_schema=False)
    before, after = do_upgrade(engine)
    if before != after:
        with a.session(write=True) as s:
            a.audit(s, command="db upgrade", details={"from": before, "to": after})
        a.out().message(f"{mask_url(a.db_url)}: upgraded schema {before or '(empty)'} -> {after}")
    else:
        a.out().message(f"{mask_url(a.db_url)}: already at schema {after}, nothing to do")


@app.command()
def check(ctx: typer.Context) -> None:
    """Verify every ledger invariant; print each violation; exit 1 if there is any.

    Example: loyaltyctl db check || alert-oncall
    """
    from loyaltyctl.services.integrity import run_checks

    a = get_app(ctx)
    with a.session() as s:
        violations, n = run_checks(session=s)
    out = a.out()
    if not violations:
        out.message(f"OK: {n} invariants hold")
        return
    for v in violations:
        typer.echo(f"{v.check}: {v.description}: {v.detail}")
    out.message(f"{len(violations)} violation(s) of {n} invariants")
    raise typer.Exit(1)


@app.command()
def stats(ctx: typer.Context, fmt: FormatOpt = None, output: OutputOpt = None) -> None:
    """Row counts, file size and schema revision.

    Example: loyaltyctl db stats --format json
    """
    from loyaltyctl.services.dbinfo import database_stats

    a = get_app(ctx)
    info = database_stats(engine=a.engine(), url=a.db_url)
    a.out(output).record(info, fmt=a.format(fmt and fmt.value), title="Database")


@app.command()
def backup(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="Backup file to write.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
) -> None:
    """Copy the database while it is in use (SQLite online backup; pg_dump for PostgreSQL).

    Example: loyaltyctl db backup /backups/loyalty-$(date +%F).db
    Restore SQLite by copying the file back over the database (with no loyaltyctl running);
    restore PostgreSQL with `pg_restore -d DBNAME FILE`.
    """
    from pathlib import Path

    from loyaltyctl.services.dbinfo import backup_database

    a = get_app(ctx)
    path = Path(target)
    result = backup_database(engine=a.engine(), url=a.db_url, target=path, overwrite=overwrite)
    with a.session(write=True) as s:
        a.audit(s, command="db backup", details={"target": str(path), "bytes": result})
    a.out().message(f"backup written to {path} ({result:,} bytes)")
