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
    target: Annotated[str, typer.Argument(help="Backup file to write (created with mode 0600).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
) -> None:
    """Copy the database while it is in use: SQLite online backup, or pg_dump for PostgreSQL.

    Example: loyaltyctl db backup /backups/loyalty-$(date +%F).db

    The file is readable by its owner only and appears only when complete. pg_dump is taken
    from PATH, else from /usr/lib/postgresql/<version>/bin; it must be the server's major
    version or newer. The backup is recorded in the audit trail.

    Restore, SQLite: stop every loyaltyctl run (and cron), delete loyalty.db-wal and
    loyalty.db-shm beside the database if they exist, copy the backup over the database
    file (cp backup.db loyalty.db && chmod 600 loyalty.db), then run `loyaltyctl db check`.

    Restore, PostgreSQL (a custom-format dump): stop every loyaltyctl run, then
    `pg_restore --clean --if-exists --no-owner --single-transaction -d DBNAME FILE`
    (DBNAME may be a URI such as postgresql://user@host:5432/loyalty; the password comes
    from PGPASSWORD or ~/.pgpass), then `loyaltyctl db upgrade` and `loyaltyctl db check`.
    """
    from pathlib import Path

    from loyaltyctl.db.engine import mask_url
    from loyaltyctl.services.dbinfo import prepared_backup

    a = get_app(ctx)
    path = Path(target).expanduser()
    # The copy takes its final name only once the audit row is committed: if that fails
    # (the database is busy, say) no unrecorded backup appears and an older one survives.
    with prepared_backup(engine=a.engine(), url=a.db_url, target=path, overwrite=overwrite) as size:
        with a.session(write=True) as s:
            a.audit(s, command="db backup", target=path.name[:100],
                    details={"file": str(path.resolve()), "database": mask_url(a.db_url),
                             "bytes": size})
    a.out().message(f"backup of {mask_url(a.db_url)} written to {path} ({size:,} bytes)")
