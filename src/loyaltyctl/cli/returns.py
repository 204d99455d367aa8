"""The ledger's return paths, registered on other groups' apps:

- `purchases refund | refunds-import`: refunds claw back a purchase's points in proportion;
- `points reverse`: a redemption's points go back to the very lots it consumed;
- `points import`: opening balances migrated from another system, as tagged lots.

Importing this module registers the commands (cli/points.py imports it at its end).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from loyaltyctl.cli.context import AppContext, get_app
from loyaltyctl.cli.options import DryRunOpt, FormatOpt, OutputOpt
from loyaltyctl.cli.points import app as points_app
from loyaltyctl.cli.purchases import app as purchases_app

InputFormatOpt = Annotated[str | None, typer.Option(
    "--input-format", help="csv or jsonl (default: from the extension).")]
OnErrorOpt = Annotated[str, typer.Option(
    "--on-error", help="abort: change nothing if any row is bad; skip: apply the good rows.")]
RejectsOpt = Annotated[Path | None, typer.Option(
    "--rejects", help="Write rejected rows (with row number and reason) to this file "
                      "(default with --on-error skip: FILE.rejects.csv).", dir_okay=False)]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, max=100000, hidden=True)]


@purchases_app.command()
def refund(
    ctx: typer.Context,
    purchase: Annotated[str, typer.Argument(help="The purchase's ref (transaction id).")],
    ref: Annotated[str, typer.Option("--ref", help="The refund's own ref: the same ref twice is a no-op.")],
    amount: Annotated[str | None, typer.Option(
        "--amount", help="Amount refunded, major units (default: all that is left).")] = None,
    note: Annotated[str | None, typer.Option("--note", help="Kept in the ledger.")] = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Refund a purchase (in full or in part) and claw back its points in proportion.

    Points come from the purchase's own lot first, then from the member's other points.

    Points of the purchase that already expired are not taken a second time.

    What the member no longer has is owed (a negative balance): no redemption until paid.

    Inside the returns window the pending points are cancelled instead.

    A full refund also takes back the referral bonuses the purchase triggered.

    Example: loyaltyctl purchases refund POS-7781 --amount 250,000 --ref RET-0091
    """
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.normalize import clean_text, format_money, parse_money
    from loyaltyctl.services.returns import refund_purchase

    a = get_app(ctx)
    program = a.config.program
    minor = None
    if amount is not None:
        try:
            minor = parse_money(amount, program.decimals)
        except ValueError as exc:
            raise InvalidInput(f"--amount: {exc}") from None
        if minor <= 0:
            raise InvalidInput(f"--amount: {amount!r} must be greater than zero")
    try:
        note = clean_text(note, max_len=500, field="--note")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    with a.session(write=True) as s:
        res = refund_purchase(session=s, config=a.config, purchase_ref=purchase, ref=ref,
                              amount=minor, now=a.now, actor=a.actor, note=note or None)
        if not res.duplicate:
            a.audit(s, command="purchases refund", target=res.member_code, rows=1, details={
                "ref": res.ref, "purchase": res.purchase_ref, "amount": res.amount,
                "clawed_back": res.clawed_back, "cancelled": res.cancelled,
                "referral_clawed": res.referral_clawed, "debt": res.debt, "full": res.full})
    out = a.out(output)
    f = a.format(fmt and fmt.value)

    def money(v: int) -> str:
        return format_money(v, program.decimals)

    if res.duplicate:
        out.message(f"already recorded: refund {res.ref} of purchase {res.purchase_ref} "
                    "(nothing changed)")
    data = {
        "member": res.member_code, "ref": res.ref, "purchase": res.purchase_ref,
        "amount": res.amount, "refunded_total": res.refunded_total,
        "purchase_amount": res.purchase_amount, "currency": program.currency,
        "purchase_points": res.purchase_points, "clawed_back": res.clawed_back,
        "cancelled_pending": res.cancelled, "expired_not_taken": res.expired_excluded,
        "referral_clawed": res.referral_clawed, "debt": res.debt, "full": res.full,
        "balance": res.balance_after, "already": res.duplicate,
    }
    if f != "table":
        out.record(data, fmt=f)
        return
    if res.duplicate:
        return
    taken = []
    if res.clawed_back:
        taken.append(f"{res.clawed_back:,} points clawed back")
    if res.cancelled:
        taken.append(f"{res.cancelled:,} pending points cancelled")
    if res.referral_clawed:
        taken.append(f"{res.referral_clawed:,} referral points clawed back"
                     + (f" (from {', '.join(res.referral_members)})" if res.referral_members else ""))
    if not taken:
        taken.append("no points to claw back")
    line = (f"{res.member_code}: refund {res.ref} of {money(res.amount)} {program.currency} on "
            f"{res.purchase_ref} ({money(res.refunded_total)} of {money(res.purchase_amount)} "
            f"refunded{', in full' if res.full else ''}) -> {'; '.join(taken)}; "
            f"balance {res.balance_after:,}")
    out.write_text(line + "\n")
    if res.expired_excluded and (res.clawed_back or res.full):
        out.message(f"{res.expired_excluded:,} points of this purchase had already expired "
                    "and were not taken again")
    if res.balance_after is not None and res.balance_after < 0:
        out.message(f"{res.member_code} now owes {-res.balance_after:,} points: no redemption "
                    "until new points pay them back")


@purchases_app.command("refunds-import")
def refunds_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV or JSON Lines: ref,purchase_ref,amount,occurred_at[,note].",
                                         dir_okay=False)],
    input_format: InputFormatOpt = None,
    on_error: OnErrorOpt = "abort",
    rejects: RejectsOpt = None,
    dry_run: DryRunOpt = False,
    batch_size: BatchOpt = 5000,
    fmt: FormatOpt = None,
) -> None:
    """Apply a file of refunds (idempotent by refund ref: a re-run changes nothing).

    Columns: ref (the refund's own id), purchase_ref, amount (major units), occurred_at; note.

    Each row means what one `purchases refund` means. All or nothing by default.

    Example: loyaltyctl purchases refunds-import returns-2026-03.csv --on-error skip --rejects bad.csv
    """
    from loyaltyctl.services.returns import (
        REFUND_IGNORED,
        REFUND_OPTIONAL,
        REFUND_REQUIRED,
        import_refunds,
    )

    a = get_app(ctx)
    summary, took, rejects = _run_import(
        a, file=file, input_format=input_format, on_error=on_error, rejects=rejects,
        columns=(REFUND_REQUIRED, REFUND_OPTIONAL, REFUND_IGNORED), command="purchases refunds-import",
        dry_run=dry_run,
        work=lambda s, reader, on_reject, progress: import_refunds(
            session=s, config=a.config, reader=reader, now=a.now, actor=a.actor,
            on_error=on_error, dry_run=dry_run, batch_size=batch_size, on_reject=on_reject,
            progress=progress))
    d = summary.as_dict()
    _finish(a, fmt, d, rejects, dry_run, (
        f"refunds import {file.name}: {d['refunded']:,} refunds applied "
        f"({d['full']:,} purchases now refunded in full), {d['clawed_back']:,} points clawed "
        f"back, {d['cancelled']:,} pending points cancelled, {d['referral_clawed']:,} referral "
        f"points clawed back, {d['debt']:,} points of debt; {d['already_imported']:,} already "
        f"imported, {d['duplicates']:,} duplicates, {d['rejected']:,} rejected "
        f"({d['rows']:,} rows, {took:.1f}s)"))


@points_app.command()
def reverse(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The --ref of the redemption (points redeem or rewards redeem).")],
    note: Annotated[str | None, typer.Option("--note", help="Kept in the ledger.")] = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Undo a redemption: its points go back to the very lots it used, with their expiry dates.

    A reward's stock comes back too. Reversing twice changes nothing.

    Points returned to a lot already past its expiry date expire at the next `points expire`.

    Example: loyaltyctl points reverse ORDER-1001 --note "order cancelled"
    """
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.normalize import clean_text
    from loyaltyctl.services.returns import reverse_redemption

    a = get_app(ctx)
    try:
        note = clean_text(note, max_len=500, field="--note")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    with a.session(write=True) as s:
        res = reverse_redemption(session=s, config=a.config, ref=ref, now=a.now, actor=a.actor,
                                 note=note or None)
        if not res.duplicate:
            a.audit(s, command="points reverse", target=res.member_code, rows=1, details={
                "ref": res.ref, "points": res.points, "item": res.item_code, "lots": res.lots,
                "past_expiry": res.past_expiry})
    out = a.out(output)
    f = a.format(fmt and fmt.value)
    if res.duplicate:
        out.message(f"already reversed: redemption {res.ref} (nothing changed)")
    if f != "table":
        out.record({
            "member": res.member_code, "ref": res.ref, "points": res.points,
            "item": res.item_code, "lots": res.lots, "past_expiry": res.past_expiry,
            "balance": res.balance_after, "already": res.duplicate}, fmt=f)
        return
    if res.duplicate:
        return
    what = f" ({res.item_code})" if res.item_code else ""
    out.write_text(f"{res.member_code}: reversed redemption {res.ref}{what}: +{res.points:,} "
                   f"points back to {res.lots:,} lot(s); balance {res.balance_after:,}\n")
    if res.past_expiry:
        out.message(f"{res.past_expiry:,} of these points went back to lots already past their "
                    "expiry date; they expire at the next `points expire` run")


@points_app.command("import")
def import_opening(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV or JSON Lines: member,points,expires_on,ref[,note].",
                                         dir_okay=False)],
    input_format: InputFormatOpt = None,
    on_error: OnErrorOpt = "abort",
    rejects: RejectsOpt = None,
    dry_run: DryRunOpt = False,
    batch_size: BatchOpt = 5000,
    fmt: FormatOpt = None,
) -> None:
    """Import opening balances from another system, as tagged `opening` lots (not purchases).

    Columns: member (code, card, phone or e-mail), points, expires_on, ref; note (optional).

    expires_on: a date, `never`, or empty for the program's expiry rule counted from today.

    ref is unique: importing the same file again adds nothing. All or nothing by default.

    Example: loyaltyctl points import old-system-balances.csv --dry-run
    """
    from loyaltyctl.services.opening import IGNORED, OPTIONAL, REQUIRED, import_opening_balances

    a = get_app(ctx)
    summary, took, rejects = _run_import(
        a, file=file, input_format=input_format, on_error=on_error, rejects=rejects,
        columns=(REQUIRED, OPTIONAL, IGNORED), command="points import", dry_run=dry_run,
        work=lambda s, reader, on_reject, progress: import_opening_balances(
            session=s, config=a.config, reader=reader, now=a.now, actor=a.actor,
            on_error=on_error, dry_run=dry_run, batch_size=batch_size, on_reject=on_reject,
            progress=progress))
    d = summary.as_dict()
    _finish(a, fmt, d, rejects, dry_run, (
        f"points import {file.name}: {d['imported']:,} opening balances, {d['points']:,} "
        f"points for {d['members']:,} members; {d['already_imported']:,} already imported, "
        f"{d['duplicates']:,} duplicates, {d['rejected']:,} rejected ({d['rows']:,} rows, "
        f"{took:.1f}s)"))


# -- shared by the two imports -----------------------------------------------------------


def _run_import(
    a: AppContext, *, file: Path, input_format: str | None, on_error: str,
    rejects: Path | None, columns: tuple, command: str, dry_run: bool,
    work: Callable[..., Any],
) -> tuple[Any, float, Path | None]:
    """Open the file and the rejects file, show a progress bar on a terminal, run `work`
    in one write transaction, audit it; returns (summary, seconds, rejects path)."""
    import time

    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.services.csvio import RowWriter, TableReader

    if on_error not in ("abort", "skip"):
        raise InvalidInput(f"--on-error: {on_error!r} is not abort or skip")
    if on_error == "skip" and rejects is None:
        rejects = file.with_name(file.name + ".rejects.csv")
    required, optional, ignored = columns
    started = time.monotonic()
    writer: RowWriter | None = None
    try:
        with TableReader(file, required=required, optional=optional, ignored=ignored,
                         fmt=input_format) as reader:
            names = list(required) + list(optional)

            def on_reject(row: int, values: Any, reason: str) -> None:
                nonlocal writer
                if rejects is None:
                    return
                if writer is None:
                    writer = RowWriter(rejects, ["row", "reason", *names])
                record = {"row": row, "reason": reason}
                if values is not None:
                    record.update({k: v for k, v in zip(names, values, strict=False)})
                writer.write(record)

            with _progress_bar(a, file) as progress, a.session(write=True) as s:
                summary = work(s, reader, on_reject, progress)
                if not dry_run:
                    d = summary.as_dict()
                    a.audit(s, command=command, target=file.name,
                            rows=d.get("refunded", d.get("imported", 0)),
                            details={"file": str(file), "on_error": on_error, **d})
    finally:
        if writer is not None:
            writer.close()
    return summary, time.monotonic() - started, rejects if writer is not None else None


@contextmanager
def _progress_bar(a: AppContext, file: Path) -> Iterator[Callable[[int, int], None] | None]:
    import sys

    if not sys.stderr.isatty() or a.quiet:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    total = file.stat().st_size if file.exists() else None
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=a.out().err, transient=True) as bar:
        task = bar.add_task(f"importing {file.name}", total=total)

        def progress(done: int, _rows: int) -> None:
            bar.update(task, completed=done)

        yield progress


def _finish(a: AppContext, fmt: Any, counts: dict, rejects: Path | None, dry_run: bool,
            line: str) -> None:
    from loyaltyctl.render import to_json

    out = a.out()
    out.message(line + (f"; rejects in {rejects}" if rejects else "")
                + ("; dry run: nothing was written" if dry_run else ""))
    if a.format(fmt and fmt.value) == "json":
        out.write_text(to_json({**counts, "rejects": str(rejects) if rejects else None}) + "\n")


def activate_due_pending(a: AppContext, member: str) -> None:
    """Make a member's pending points available if their holding period is over.

    For look-ups (`points balance`, `members show`): a short write transaction of its own,
    opened only when the member has pending points that are due, so that an ordinary
    look-up stays a read and never waits for a writer.
    """
    from loyaltyctl.services import ledger
    from loyaltyctl.services.members import resolve_member
    from loyaltyctl.services.returns import has_due_pending

    region = a.config.program.phone_region
    with a.session() as s:
        m = resolve_member(session=s, key=member, region=region)
        due = m.pending != 0 and has_due_pending(session=s, member_id=m.id, now=a.now)
    if due:
        with a.session(write=True) as s:
            ledger.activate_pending(session=s, now=a.now, member_ids=[m.id], config=a.config)
