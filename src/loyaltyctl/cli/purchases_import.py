"""`purchases import FILE`: the bulk path (registered on the `purchases` group)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from loyaltyctl.cli.context import get_app
from loyaltyctl.cli.options import DryRunOpt, FormatOpt, OutputOpt
from loyaltyctl.cli.purchases import app


class OnError(str, Enum):  # noqa: UP042 - the same shape as options.Fmt
    abort = "abort"
    skip = "skip"


class InputFormat(str, Enum):  # noqa: UP042
    csv = "csv"
    jsonl = "jsonl"


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(
        help="CSV (header: ref,member,amount,occurred_at[,category,channel,currency]) "
             "or JSON Lines with the same fields; '-' reads standard input.",
        dir_okay=False)],
    on_error: Annotated[OnError, typer.Option(
        "--on-error", help="abort: any bad row imports nothing (exit 4); "
                           "skip: write bad rows to --rejects and import the rest.")] = OnError.abort,
    rejects: Annotated[Path | None, typer.Option(  # noqa: UP007
        "--rejects", dir_okay=False,
        help="Write rejected rows here (CSV, or JSON Lines for .jsonl) with `row` and `reason`.")] = None,
    create_members: Annotated[bool, typer.Option(
        "--create-members", help="Enrol members the file names by an unknown code, phone or "
                                 "e-mail (instead of rejecting their rows).")] = False,
    input_format: Annotated[InputFormat | None, typer.Option(  # noqa: UP007
        "--input-format", help="csv or jsonl (default: by extension; .jsonl/.ndjson are JSON Lines).")] = None,
    batch_size: Annotated[int | None, typer.Option(  # noqa: UP007
        "--batch-size", min=1, max=1_000_000, hidden=True,
        help="Rows per batch (default 50,000, or $LOYALTYCTL_IMPORT_BATCH).")] = None,
    dry_run: DryRunOpt = False,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Import purchases from a file: points exactly as `purchases record`, in bulk.

    Idempotent by ref: a purchase imported before is skipped ("already imported").

    A ref repeated in the file counts once; a copy with different data is rejected.

    All or nothing by default. Rows are numbered as in a spreadsheet (header = row 1).

    Example: loyaltyctl purchases import pos-2026-11.csv --on-error skip --rejects bad.csv
    """
    import sys

    from loyaltyctl.errors import UsageError
    from loyaltyctl.services.csvio import RowWriter, TableReader
    from loyaltyctl.services.purchase_import import (
        IGNORED,
        OPTIONAL,
        REQUIRED,
        import_purchases,
    )

    a = get_app(ctx)
    if on_error is OnError.skip and rejects is None:
        raise UsageError("--on-error skip needs --rejects FILE, so that the rows left out "
                         "are kept with their reasons")
    if rejects is not None and on_error is OnError.abort:
        raise UsageError("--rejects is written only with --on-error skip "
                         "(by default any bad row stops the import)")
    if rejects is not None and str(file) != "-" and rejects.resolve() == file.resolve():
        raise UsageError("--rejects must not be the file being imported")
    config = a.config
    out = a.out(output)
    f = a.format(fmt and fmt.value)
    now = a.now
    source = "-" if str(file) == "-" else file
    with TableReader(source, required=REQUIRED, optional=OPTIONAL, ignored=IGNORED,
                     fmt=input_format and input_format.value) as reader:
        writer = None
        try:
            if rejects is not None:
                writer = RowWriter(rejects, ["row", *reader.present, "reason"])
                columns = reader.columns

                def on_reject(row: int, values, reason: str) -> None:  # noqa: ANN001
                    data = dict(zip(columns, values, strict=True)) if values else {}
                    writer.write({**data, "row": row, "reason": reason})
            else:
                on_reject = None
            with _progress(out, reader, enabled=sys.stderr.isatty() and not a.quiet) as progress:
                with a.session(write=True) as s:
                    summary = import_purchases(
                        session=s, config=config, reader=reader, now=now, actor=a.actor,
                        on_error=on_error.value, dry_run=dry_run, create_members=create_members,
                        batch_size=batch_size, on_reject=on_reject, progress=progress,
                    )
                    if not dry_run:
                        a.audit(s, command="purchases import", target=Path(reader.name).name[-100:],
                                rows=summary.imported, details={
                                    "file": reader.name, **summary.as_dict(),
                                    "on_error": on_error.value,
                                    "create_members": create_members,
                                    "rejects": str(rejects) if rejects else None})
        finally:
            if writer is not None:
                writer.close()
    out.message(_summary_line(summary, reader.name, rejects))
    if f != "table":
        out.record(summary.as_dict(), fmt=f)


def _summary_line(s, name: str, rejects: Path | None) -> str:  # noqa: ANN001
    verb = "would import" if s.dry_run else "imported"
    parts = [f"{name}: {verb} {s.imported:,} purchase(s)",
             f"{s.points:,} points" + (f" ({s.pending_points:,} pending)" if s.pending_points else ""),
             f"{s.members:,} member(s)"]
    line = ", ".join(parts)
    extra = []
    if s.already_imported:
        extra.append(f"{s.already_imported:,} already imported")
    if s.duplicates:
        extra.append(f"{s.duplicates:,} duplicate(s) in the file")
    if s.members_created:
        extra.append(f"{s.members_created:,} member(s) enrolled")
    if s.rejected:
        extra.append(f"{s.rejected:,} rejected" + (f" (see {rejects})" if rejects else ""))
    if extra:
        line += "; " + ", ".join(extra)
    if s.dry_run:
        line += " (dry run: nothing was changed)"
    return line


class _NoProgress:
    def __enter__(self):  # noqa: ANN204
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(out, reader, *, enabled: bool):  # noqa: ANN001, ANN202
    """A Rich progress bar on stderr by bytes read, only on a terminal."""
    if not enabled:
        return _NoProgress()
    from contextlib import contextmanager

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    @contextmanager
    def bar():  # noqa: ANN202
        with Progress(TextColumn("importing"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TextColumn("{task.fields[rows]:,} rows"), TimeRemainingColumn(),
                      console=out.err, transient=True) as p:
            task = p.add_task("import", total=reader.total_bytes, rows=0)

            def update(done: int, rows: int) -> None:
                p.update(task, completed=done, rows=rows)

            yield update

    return bar()
