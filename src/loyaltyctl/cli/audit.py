"""`audit list`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from loyaltyctl.cli.context import get_app
from loyaltyctl.cli.options import FormatOpt, OutputOpt

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    actor: Annotated[Optional[str], typer.Option(help="Only this actor.")] = None,  # noqa: UP007
    command: Annotated[Optional[str], typer.Option(help="Commands starting with this, e.g. 'members'.")] = None,  # noqa: UP007
    target: Annotated[Optional[str], typer.Option(help="Only rows about this member code.")] = None,  # noqa: UP007
    since: Annotated[Optional[str], typer.Option(help="From this date or time.")] = None,  # noqa: UP007
    until: Annotated[Optional[str], typer.Option(help="Up to this date or time.")] = None,  # noqa: UP007
    limit: Annotated[int, typer.Option(min=1, max=10000, help="Rows per page.")] = 50,
    page: Annotated[int, typer.Option(min=1, help="Page number.")] = 1,
    fmt: FormatOpt = None,
    output: OutputOpt = None,
) -> None:
    """Who changed what, newest first.

    Example: loyaltyctl audit list --command points --since 2026-11-01
    """
    from loyaltyctl.render import Col
    from loyaltyctl.render import to_json_line
    from loyaltyctl.services.audit import list_rows

    a = get_app(ctx)
    with a.session() as s:
        rows = list_rows(
            session=s, actor=actor, command=command, target=target,
            since=a.parse_when(since, option="--since") if since else None,
            until=a.parse_when(until, option="--until", date_means="end") if until else None,
            limit=limit, offset=(page - 1) * limit,
        )
    f = a.format(fmt and fmt.value)
    if f == "table":
        for r in rows:
            r["at"] = a.show_time(r["at"])
            d = r["details"]
            r["details"] = ", ".join(f"{k}={to_json_line(v)}" for k, v in d.items()) \
                if isinstance(d, dict) else to_json_line(d)
    a.out(output).rows(rows, fmt=f, empty="no audit rows match", columns=[
        Col("id"), Col("at", no_wrap=True), Col("actor"), Col("command", no_wrap=True),
        Col("target"), Col("rows"), Col("details")])
