"""`members add | show | list | search | update | suspend | reactivate | close | merge | import | export`.

Members are named on the command line by any key `resolve_member` understands: code, card
number, phone (0912..., +98..., Persian digits) or e-mail.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from loyaltyctl.cli.context import get_app
from loyaltyctl.cli.options import DryRunOpt, FormatOpt, OutputOpt, ShowPiiOpt

if TYPE_CHECKING:
    from loyaltyctl.cli.context import AppContext

app = typer.Typer(no_args_is_help=True)
Opt = Optional  # Typer reads Optional[...] for options that may be left out

MemberArg = Annotated[str, typer.Argument(
    metavar="MEMBER", help="Member code, card number, phone or e-mail.")]
ReasonOpt = Annotated[Opt[str], typer.Option(
    "--reason", help="Why (kept in the audit trail).")]


def _rules(a: AppContext) -> Any:
    from loyaltyctl.services.members import FieldRules

    return FieldRules.from_config(a.config, a.today)


def _region(a: AppContext) -> str:
    return a.config.program.phone_region


def _for_display(a: AppContext, row: dict[str, Any], *, show_pii: bool, fmt: str) -> dict[str, Any]:
    """Mask personal data unless asked; on a terminal, dates in the program's calendar."""
    from loyaltyctl.pii import mask_record
    from loyaltyctl.timeutil import local_date

    out = dict(row)
    if fmt == "table":
        if out.get("birth_date"):
            out["birth_date"] = a.show_date(out["birth_date"])
        if out.get("joined_at"):
            out["joined_at"] = a.show_date(local_date(out["joined_at"], a.config.program.timezone))
        for k in ("tier_since", "created_at", "updated_at"):
            if out.get(k):
                out[k] = a.show_time(out[k])
        if isinstance(out.get("tags"), list):
            out["tags"] = ", ".join(out["tags"])
    return out if show_pii else mask_record(out)


def _render_profile(a: AppContext, profile: dict[str, Any], *, show_pii: bool, fmt: str,
                    output: Path | None) -> None:
    shown = _for_display(a, profile, show_pii=show_pii, fmt=fmt)
    if fmt == "table":
        order = ["code", "name", "status", "phone", "email", "card_number", "birth_date",
                 "joined_at", "tier", "tier_since", "balance", "pending", "tags",
                 "referred_by", "referrals", "acquisition_campaign", "merged_into"]
        shown = {k: shown[k] for k in order if shown.get(k) not in (None, "")}
    a.out(output).record(shown, fmt=fmt, title=f"Member {profile['code']}",
                         labels={"card_number": "Card", "acquisition_campaign": "Campaign",
                                 "joined_at": "Joined"})


def _list_columns() -> list[Any]:
    from loyaltyctl.render import Col

    return [Col("code"), Col("name"), Col("status"), Col("tier"), Col("phone"), Col("email"),
            Col("card_number", "Card"), Col("balance", justify="right"),
            Col("joined_at", "Joined"), Col("tags")]


def _audit_pii(a: AppContext, command: str, target: str | None, rows: int,
               details: dict[str, Any] | None = None) -> None:
    """Unmasked personal data was shown: the one kind of read that is audited."""
    with a.session(write=True) as s:
        a.audit(s, command=f"{command} --show-pii", target=target, rows=rows, details=details)


@app.command()
def add(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="The new member's code (unique).")],
    name: Annotated[str, typer.Argument(help="Full name.")],
    phone: Annotated[Opt[str], typer.Option(help="Mobile number, any format (stored E.164).")] = None,
    email: Annotated[Opt[str], typer.Option(help="E-mail address.")] = None,
    card: Annotated[Opt[str], typer.Option(help="Loyalty card number.")] = None,
    birth_date: Annotated[Opt[str], typer.Option(
        help="YYYY-MM-DD (a Jalali date such as 1370-05-20 is recognised).")] = None,
    joined_at: Annotated[Opt[str], typer.Option(help="When they joined (default: now / --as-of).")] = None,
    referred_by: Annotated[Opt[str], typer.Option(help="The member who referred them.")] = None,
    campaign: Annotated[Opt[str], typer.Option(help="Campaign (or acquisition) code that brought them.")] = None,
    tag: Annotated[Opt[list[str]], typer.Option(help="A tag; repeat or comma-separate.")] = None,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Enrol a new member.

    A phone, e-mail, card or code that already belongs to a member is refused (exit 5);
    an invalid value stops with exit 4 naming the option.

    Example: loyaltyctl members add C1001 "Sara Ahmadi" --phone 0912-345-6789 --tag vip
    """
    from loyaltyctl.services import hooks
    from loyaltyctl.services.members import add_member, member_profile

    a = get_app(ctx)
    f = a.format(fmt and fmt.value)
    with a.session(write=True) as s:
        m = add_member(session=s, code=code, name=name, phone=phone, email=email,
                       card_number=card, birth_date=birth_date, joined_at=joined_at,
                       referred_by=referred_by, campaign=campaign, tags=tag or [],
                       rules=_rules(a), now=a.now)
        # Starting tier, signup and referral bonuses: one call, in this transaction.
        hooks.after_enrolment(session=s, config=a.config, member_ids=[m.id], now=a.now,
                              actor=a.actor)
        a.audit(s, command="members add", target=m.code, rows=1,
                details={"name": m.name, "phone": m.phone, "email": m.email,
                         "referred_by_id": m.referred_by_id, "campaign": m.acquisition_campaign})
        assert m.id is not None
        profile = member_profile(session=s, member_id=m.id)
    a.out().message(f"added member {m.code} ({m.name})")
    _render_profile(a, profile, show_pii=False, fmt=f, output=output)


@app.command()
def show(ctx: typer.Context, member: MemberArg, show_pii: ShowPiiOpt = False,
         fmt: FormatOpt = None, output: OutputOpt = None) -> None:
    """The support screen: who, tier and progress, points, what expires soon, recent history.

    Finds the member by code, card, phone (any format, Persian digits too) or e-mail and
    shows contact data (masked unless --show-pii, which is audited), status, tier with the
    progress to the next one and how long it is kept, the balance and its money value,
    pending points, points expiring within 30 days per date, the last 10 ledger entries
    with the running balance, and the referrals made. --format json: the same as one object.

    Example: loyaltyctl members show 0912 345 6789
    """
    # Kept light for support staff: no SQLAlchemy, a handful of indexed per-member queries
    # through the read-only connection (the ORM only when pending points are due).
    from loyaltyctl.services.lookup import screen_lookup

    a = get_app(ctx)
    f = a.format(fmt and fmt.value)
    data = None
    with a.reader() as r:
        if r is not None:
            data = screen_lookup(reader=r, config=a.config, key=member, now=a.now, today=a.today)
    if data is None:
        # Pending points whose holding period is over become available first (a short
        # write of their own, only when some are due), then the screen is read afresh.
        from loyaltyctl.cli.returns import activate_due_pending
        from loyaltyctl.services.members import resolve_member
        from loyaltyctl.services.support import member_screen

        activate_due_pending(a, member)
        with a.session() as s:
            m = resolve_member(session=s, key=member, region=_region(a))
            data = member_screen(session=s, config=a.config, member=m, now=a.now, today=a.today)
    if show_pii:
        _audit_pii(a, "members show", data["code"], 1)
    _render_screen(a, data, show_pii=show_pii, fmt=f, output=output)


def _render_screen(a: AppContext, data: dict[str, Any], *, show_pii: bool, fmt: str,
                   output: Path | None) -> None:
    from loyaltyctl.pii import mask_record

    # Masked, but a value that is not there stays null (not an empty string).
    shown = data if show_pii else {k: (None if data.get(k) is None else v)
                                   for k, v in mask_record(data).items()}
    out = a.out(output)
    if fmt == "json":
        out.record(shown, fmt=fmt)
    elif fmt == "csv":
        # One row: nested figures flattened (tier_progress_*), lists as JSON text.
        from loyaltyctl.render import to_json_line

        flat: dict[str, Any] = {}
        for k, v in shown.items():
            if isinstance(v, dict):
                flat.update({f"{k}_{kk}": vv for kk, vv in v.items()})
            elif isinstance(v, list) and k != "tags":
                flat[k] = to_json_line(v)
            elif isinstance(v, list):
                flat[k] = ",".join(v)
            else:
                flat[k] = v
        out.rows([flat], fmt=fmt)
    else:
        from loyaltyctl.support_screen import render_member_screen

        out.print(render_member_screen(shown, show_date=a.show_date, show_time=a.show_time))


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[Opt[str], typer.Option(help="active, suspended or closed.")] = None,
    tier: Annotated[Opt[str], typer.Option(help="Only members in this tier (code).")] = None,
    tag: Annotated[Opt[str], typer.Option(help="Only members with this tag (a,b: with both).")] = None,
    joined_from: Annotated[Opt[str], typer.Option(help="Joined on or after this day.")] = None,
    joined_to: Annotated[Opt[str], typer.Option(help="Joined on or before this day.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100000, help="Members per page.")] = 50,
    page: Annotated[int, typer.Option(min=1, help="Page number.")] = 1,
    show_pii: ShowPiiOpt = False,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Members in enrolment order, filtered and paged.

    Example: loyaltyctl members list --status active --tag vip --joined-from 2026-01-01 --page 2
    """
    from loyaltyctl.services.members import list_members
    from loyaltyctl.timeutil import end_of_local_day_utc, local_midnight_utc

    a = get_app(ctx)
    f = a.format(fmt and fmt.value)
    tz = a.config.program.timezone
    start = local_midnight_utc(a.parse_day(joined_from, option="--joined-from"), tz) \
        if joined_from else None
    end = end_of_local_day_utc(a.parse_day(joined_to, option="--joined-to"), tz) \
        if joined_to else None
    with a.session() as s:
        rows, total = list_members(session=s, status=status, tier=tier, tag=tag,
                                   joined_from=start, joined_to=end, limit=limit,
                                   offset=(page - 1) * limit)
    if show_pii:
        _audit_pii(a, "members list", None, len(rows),
                   {"status": status, "tier": tier, "tag": tag, "page": page})
    first = (page - 1) * limit + 1
    caption = f"{first:,}-{first + len(rows) - 1:,} of {total:,}" if rows else None
    a.out(output).rows([_for_display(a, r, show_pii=show_pii, fmt=f) for r in rows], fmt=f,
                       columns=_list_columns(), caption=caption,
                       empty=f"no members match (page {page}, {total:,} in all)")


@app.command()
def search(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="Part of a name, the last digits of a phone, "
                                             "part of an e-mail, a code or a card number.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
    show_pii: ShowPiiOpt = False,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Find members by part of a name, a phone's last digits, e-mail, code or card.

    Example: loyaltyctl members search 6789
    """
    from loyaltyctl.services.members import search_members

    a = get_app(ctx)
    f = a.format(fmt and fmt.value)
    with a.session() as s:
        rows = search_members(session=s, text=text, region=_region(a), limit=limit)
    if show_pii:
        _audit_pii(a, "members search", None, len(rows), {"text": text})
    a.out(output).rows([_for_display(a, r, show_pii=show_pii, fmt=f) for r in rows], fmt=f,
                       columns=_list_columns(), empty=f"no member matches {text!r}")


@app.command()
def update(
    ctx: typer.Context,
    member: MemberArg,
    name: Annotated[Opt[str], typer.Option(help="New name.")] = None,
    code: Annotated[Opt[str], typer.Option(help="New member code.")] = None,
    phone: Annotated[Opt[str], typer.Option(help="New phone.")] = None,
    email: Annotated[Opt[str], typer.Option(help="New e-mail.")] = None,
    card: Annotated[Opt[str], typer.Option(help="New card number.")] = None,
    birth_date: Annotated[Opt[str], typer.Option(help="New birth date.")] = None,
    joined_at: Annotated[Opt[str], typer.Option(help="Corrected join date.")] = None,
    referred_by: Annotated[Opt[str], typer.Option(help="The member who referred them.")] = None,
    campaign: Annotated[Opt[str], typer.Option(help="Acquisition campaign code.")] = None,
    tag: Annotated[Opt[list[str]], typer.Option(help="Replace all tags with these.")] = None,
    add_tag: Annotated[Opt[list[str]], typer.Option(help="Add a tag.")] = None,
    remove_tag: Annotated[Opt[list[str]], typer.Option(help="Remove a tag.")] = None,
    clear_phone: Annotated[bool, typer.Option("--clear-phone", help="Remove the phone.")] = False,
    clear_email: Annotated[bool, typer.Option("--clear-email", help="Remove the e-mail.")] = False,
    clear_card: Annotated[bool, typer.Option("--clear-card", help="Remove the card.")] = False,
    clear_birth_date: Annotated[bool, typer.Option("--clear-birth-date", help="Remove the birth date.")] = False,
    clear_referred_by: Annotated[bool, typer.Option("--clear-referred-by", help="Remove the referrer.")] = False,
    clear_campaign: Annotated[bool, typer.Option("--clear-campaign", help="Remove the campaign.")] = False,
    clear_tags: Annotated[bool, typer.Option("--clear-tags", help="Remove all tags.")] = False,
) -> None:
    """Change a member's details; only what is given changes.

    Example: loyaltyctl members update C1001 --email sara@example.com --add-tag vip
    """
    from loyaltyctl.errors import UsageError
    from loyaltyctl.services.members import resolve_member, update_member

    a = get_app(ctx)
    changes: dict[str, Any] = {}
    for field, value, clear, opt in (
        ("phone", phone, clear_phone, "phone"), ("email", email, clear_email, "email"),
        ("card_number", card, clear_card, "card"),
        ("birth_date", birth_date, clear_birth_date, "birth-date"),
        ("referred_by", referred_by, clear_referred_by, "referred-by"),
        ("acquisition_campaign", campaign, clear_campaign, "campaign"),
        ("tags", tag, clear_tags, "tags"),
    ):
        if value is not None and clear:
            raise UsageError(f"--{opt if opt != 'tags' else 'tag'} and --clear-{opt} "
                             "contradict each other; give one")
        if clear:
            changes[field] = None
        elif value is not None:
            changes[field] = value
    for field, value in (("name", name), ("code", code), ("joined_at", joined_at)):
        if value is not None:
            changes[field] = value
    if not changes and not add_tag and not remove_tag:
        raise UsageError("nothing to change: give at least one option (see --help)")
    with a.session(write=True) as s:
        m = resolve_member(session=s, key=member, region=_region(a))
        before_code = m.code
        diff = update_member(session=s, member=m, changes=changes, rules=_rules(a),
                             add_tags=add_tag or [], remove_tags=remove_tag or [])
        if diff:
            a.audit(s, command="members update", target=before_code, rows=1,
                    details={"changed": {f: {"from": old, "to": new}
                                         for f, (old, new) in diff.items()}})
    out = a.out()
    if diff:
        out.message(f"updated member {m.code}: {', '.join(diff)}")
    else:
        out.message(f"member {m.code}: nothing changed (the values were already so)")


def _status_command(ctx: typer.Context, member: str, action: str, reason: str | None) -> None:
    from loyaltyctl.services.members import change_status, resolve_member

    a = get_app(ctx)
    with a.session(write=True) as s:
        m = resolve_member(session=s, key=member, region=_region(a))
        old, new = change_status(session=s, member=m, action=action)
        a.audit(s, command=f"members {action}", target=m.code, rows=1,
                details={"from": old, "to": new, "reason": reason})
    a.out().message(f"member {m.code} is now {new} (was {old})")


@app.command()
def suspend(ctx: typer.Context, member: MemberArg, reason: ReasonOpt = None) -> None:
    """Suspend an active member: no earning or redeeming until reactivated.

    Example: loyaltyctl members suspend C1001 --reason "card reported stolen"
    """
    _status_command(ctx, member, "suspend", reason)


@app.command()
def reactivate(ctx: typer.Context, member: MemberArg, reason: ReasonOpt = None) -> None:
    """Lift a suspension.

    Example: loyaltyctl members reactivate C1001 --reason "new card issued"
    """
    _status_command(ctx, member, "reactivate", reason)


@app.command()
def close(ctx: typer.Context, member: MemberArg, reason: ReasonOpt = None) -> None:
    """Close a membership for good (it cannot be reopened).

    Example: loyaltyctl members close C1001 --reason "asked to leave the club"
    """
    _status_command(ctx, member, "close", reason)


@app.command()
def merge(
    ctx: typer.Context,
    members: Annotated[list[str], typer.Argument(
        metavar="DUPLICATE [into] SURVIVOR",
        help="The duplicate member, then (optionally the word 'into' and) the one to keep.")],
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Fold a duplicate member into another and close the duplicate.

    Purchases, points (with their lots and expiry dates), tier history and referrals move
    to the survivor; the survivor takes the duplicate's contact details it lacks.

    Example: loyaltyctl members merge C2002 into C1001
    """
    from loyaltyctl.errors import UsageError
    from loyaltyctl.services.members import merge_members, resolve_member

    if len(members) == 3 and members[1].lower() == "into":
        members = [members[0], members[2]]
    if len(members) != 2:
        raise UsageError("give two members: DUPLICATE [into] SURVIVOR")
    a = get_app(ctx)
    with a.session(write=True) as s:
        dup = resolve_member(session=s, key=members[0], region=_region(a))
        surv = resolve_member(session=s, key=members[1], region=_region(a))
        counts = merge_members(session=s, duplicate=dup, survivor=surv)
        moved = sum(counts[k] for k in ("purchases", "ledger_entries", "allocations",
                                        "tier_history", "referrals"))
        a.audit(s, command="members merge", target=dup.code, rows=moved,
                details={"into": surv.code, **counts})
    f = a.format(fmt and fmt.value)
    a.out().message(
        f"merged member {dup.code} into {surv.code}: moved {counts['purchases']} purchases, "
        f"{counts['ledger_entries']} ledger entries, {counts['allocations']} allocations, "
        f"{counts['tier_history']} tier changes, {counts['referrals']} referrals; "
        f"balance +{counts['balance']:,}, pending +{counts['pending']:,}; {dup.code} is closed")
    if f != "table":
        a.out(output).record({"duplicate": dup.code, "survivor": surv.code, **counts}, fmt=f)


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV or JSON Lines file.", dir_okay=False)],
    input_format: Annotated[Opt[str], typer.Option(
        "--input-format", help="csv or jsonl (default: from the extension).")] = None,
    on_error: Annotated[str, typer.Option(
        "--on-error", help="abort: import nothing if any row is bad; skip: import the good rows.")] = "abort",
    rejects: Annotated[Opt[Path], typer.Option(
        help="Write rejected rows (with row number and reason) to this CSV "
             "(default with --on-error skip: FILE.rejects.csv).", dir_okay=False)] = None,
    dry_run: DryRunOpt = False,
    batch_size: Annotated[int, typer.Option(min=1, max=50000, hidden=True)] = 5000,
    fmt: FormatOpt = None,
) -> None:
    """Add or update members from a file, matched by code (idempotent: a re-run changes nothing).

    Columns: code,name (required), phone, email, card_number, birth_date, joined_at, status,
    referred_by, acquisition_campaign, tags. An empty cell clears that value.

    Example: loyaltyctl members import crm-export.csv --on-error skip --rejects bad.csv
    """
    import sys
    import time
    from contextlib import ExitStack

    from loyaltyctl.render import to_json
    from loyaltyctl.services import hooks
    from loyaltyctl.services.member_io import import_members

    a = get_app(ctx)
    out = a.out()
    if on_error == "skip" and rejects is None:
        rejects = file.with_name(file.name + ".rejects.csv")
    started = time.monotonic()
    with ExitStack() as stack:
        progress = None
        if sys.stderr.isatty() and not a.quiet:
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

            bar = stack.enter_context(Progress(
                "[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                TimeRemainingColumn(), console=out.err, transient=True))
            task = bar.add_task(f"importing {file.name}", total=file.stat().st_size
                                if file.exists() else None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

        with a.session(write=True) as s:
            result = import_members(session=s, path=file, rules=_rules(a), now=a.now,
                                    input_format=input_format, on_error=on_error,
                                    rejects_path=rejects, batch_size=batch_size,
                                    progress=progress)
            # Starting tier, signup and referral bonuses for the new members, set-based in
            # slices (each slice is one IN list), after every referrer is in place.
            ids = result.inserted_ids
            for start in range(0, len(ids), 5000):
                hooks.after_enrolment(session=s, config=a.config, member_ids=ids[start:start + 5000],
                                      now=a.now, actor=a.actor)
            if dry_run:
                s.rollback()
            else:
                a.audit(s, command="members import", target=file.name,
                        rows=result.inserted + result.updated,
                        details={"file": str(file), "on_error": on_error, **result.counts()})
    counts = result.counts()
    took = time.monotonic() - started
    out.message(
        f"members import {file.name}: {counts['inserted']:,} inserted, {counts['updated']:,} "
        f"updated, {counts['unchanged']:,} unchanged, {counts['rejected']:,} rejected "
        f"({counts['rows']:,} rows, {took:.1f}s)"
        + (f"; rejects in {rejects}" if result.rejected and rejects else "")
        + ("; dry run: nothing was written" if dry_run else ""))
    if a.format(fmt and fmt.value) == "json":
        a.out().write_text(to_json({**counts, "dry_run": dry_run,
                                    "rejects": str(rejects) if rejects else None}) + "\n")


@app.command()
def export(
    ctx: typer.Context,
    output: OutputOpt = None,
    export_format: Annotated[str, typer.Option(
        "--export-format", help="csv or jsonl.")] = "csv",
    status: Annotated[Opt[str], typer.Option(help="Only members with this status.")] = None,
    show_pii: ShowPiiOpt = False,
) -> None:
    """Write every member in the import's columns (stream; any size).

    Phone, e-mail and birth date are masked unless --show-pii (audited): an export meant
    to be imported again (a backup, a move) needs --show-pii.

    Example: loyaltyctl members export --show-pii --output members.csv
    """
    import json
    import sys

    from loyaltyctl.db.models import MEMBER_STATUSES
    from loyaltyctl.errors import InvalidInput
    from loyaltyctl.render import iter_csv_rows
    from loyaltyctl.services.member_io import IMPORT_COLUMNS, export_members

    a = get_app(ctx)
    if export_format not in ("csv", "jsonl"):
        raise InvalidInput(f"--export-format: {export_format!r} is not csv or jsonl")
    if status and status not in MEMBER_STATUSES:
        raise InvalidInput(f"--status: {status!r} is not one of {', '.join(MEMBER_STATUSES)}")
    target = output or a.output_path
    n = 0
    with a.session(write=show_pii) as s:
        rows = export_members(session=s, calendar=a.config.program.calendar, status=status,
                              show_pii=show_pii, tags_as_list=export_format == "jsonl")
        fh = target.open("w", encoding="utf-8", newline="") if target else sys.stdout
        try:
            if export_format == "csv":
                lines = iter_csv_rows(rows, IMPORT_COLUMNS)
            else:
                lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            for line in lines:
                fh.write(line)
                n += 1
        finally:
            if target:
                fh.close()
            else:
                fh.flush()
        n -= 1 if export_format == "csv" else 0  # the header line
        if show_pii:
            a.audit(s, command="members export --show-pii", target=str(target) if target else None,
                    rows=n, details={"status": status, "format": export_format})
    a.out().message(f"exported {n:,} members" + (f" to {target}" if target else "")
                    + ("" if show_pii else " (personal data masked; --show-pii to include it)"))
