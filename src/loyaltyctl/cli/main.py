"""The root command: global options, the error funnel, and the command groups.

Start-up stays light: this module imports only Typer, and a command group's module is
imported the first time the group is used (`loyaltyctl points balance` loads the points
group and no other); each command imports the services, the ORM and Rich tables it needs
when it runs. The root help lists the groups from GROUPS without importing them, in click's
plain format (Typer's Rich help would import Rich's markdown and syntax modules first).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

try:  # Typer >= 0.25 vendors its own click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older Typer on the real click
    from click import ClickException

from loyaltyctl import __version__
from loyaltyctl.cli.context import AppContext, default_actor
from loyaltyctl.cli.options import Fmt
from loyaltyctl.errors import ExitCode, LoyaltyError


def _busy_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("database is locked", "database is busy", "lock timeout",
                                   "could not obtain lock", "canceling statement due to lock",
                                   "deadlock detected"))


class LoyaltyGroup(TyperGroup):
    """Turns every known failure into one line on stderr and its documented exit code, and
    loads the command groups named in GROUPS when they are first asked for."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        names = list(super().list_commands(ctx))
        return names + [name for _m, name, _h in GROUPS if name not in names]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _LAZY:
            command = _load_group(*_LAZY[cmd_name])
            if command is not None:
                self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:
        """The command list of the root help, with the groups' short help from GROUPS so
        that `--help` imports no group module."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
            else:
                rows.append((name, _LAZY[name][2]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except LoyaltyError as exc:
            self._fail(ctx, str(exc), exc.exit_code)
        except KeyboardInterrupt:
            self._fail(ctx, "interrupted; nothing was committed", ExitCode.UNEXPECTED)
        except BrokenPipeError:
            # The reader stopped early (`loyaltyctl members show X | head -1`): leave
            # quietly with exit 1, as click does when the pipe breaks on the final flush.
            _silence_stdout()
            raise typer.Exit(int(ExitCode.UNEXPECTED)) from None
        except Exception as exc:  # noqa: BLE001 - the one funnel for the unexpected
            from sqlalchemy.exc import OperationalError

            debug = isinstance(ctx.obj, AppContext) and ctx.obj.debug
            if debug:
                import sys
                import traceback

                # Masked like every other message: no database password in a traceback.
                sys.stderr.write(_scrub(traceback.format_exc(), ctx))
            if isinstance(exc, OperationalError) and _busy_error(exc):
                self._fail(ctx, "the database is busy (locked by another loyaltyctl run or "
                           "another program) past the timeout; nothing was changed. "
                           "Try again, or raise LOYALTYCTL_BUSY_TIMEOUT.", ExitCode.BUSY)
            self._fail(ctx, f"unexpected error: {type(exc).__name__}: {_masked(exc)}"
                       + ("" if debug else " (run with --debug for the traceback)"),
                       ExitCode.UNEXPECTED)
        finally:
            if isinstance(ctx.obj, AppContext):
                ctx.obj.dispose()

    @staticmethod
    def _fail(ctx: typer.Context, message: str, code: int) -> None:
        no_color = isinstance(ctx.obj, AppContext) and ctx.obj.no_color
        message = _scrub(message, ctx)
        typer.secho(f"Error: {message}", err=True, fg=None if no_color else "red")
        raise typer.Exit(int(code))


def _scrub(text: str, ctx: typer.Context) -> str:
    """`text` with any URL password masked, and the database password itself removed
    wherever a library may have copied it (an error message, a traceback)."""
    import os

    from loyaltyctl.db.engine import ENV_DB, mask_url

    text = mask_url(text)
    raw = (ctx.obj.db_opt if isinstance(ctx.obj, AppContext) else None) or os.environ.get(ENV_DB)
    if raw and "://" in raw:
        try:
            from sqlalchemy.engine import make_url

            password = make_url(raw).password
        except Exception:  # noqa: BLE001 - an unparsable URL: mask_url did what it could
            password = None
        if password and len(str(password)) >= 4:
            from urllib.parse import quote

            for form in {str(password), quote(str(password), safe="")}:
                text = text.replace(form, "***")
    return text


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests capture stdout)
        pass


def _masked(exc: BaseException) -> str:
    from loyaltyctl.db.engine import mask_url

    return mask_url(str(exc).splitlines()[0] if str(exc) else "")


app = typer.Typer(
    cls=LoyaltyGroup,
    name="loyaltyctl",
    rich_markup_mode=None,
    help="Administer a customer loyalty program: members, points, tiers, rewards, campaigns, reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"loyaltyctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--config", "-c", envvar="LOYALTYCTL_CONFIG", show_envvar=True,
        help="Program file (default: ./loyalty.toml).")] = None,
    db: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--db", envvar="LOYALTYCTL_DB", show_envvar=True,
        help="Database: a SQLite file or postgresql+psycopg://… (default: loyalty.db beside the config).")] = None,
    as_of: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--as-of", help="Act as of this date or time (backfill, catch-up, reproducible reports).")] = None,
    actor: Annotated[Optional[str], typer.Option(  # noqa: UP007
        "--actor", help="Who is acting, for the audit trail (default: the OS user).")] = None,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="Output format for data.")] = Fmt.table,
    output: Annotated[Optional[Path], typer.Option(  # noqa: UP007
        "--output", "-o", help="Write data to this file instead of stdout.", dir_okay=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr.")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colour, even on a terminal.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Loyalty program administration. Start with `loyaltyctl init` or `loyaltyctl demo`."""
    ctx.obj = AppContext(
        config_opt=config, db_opt=db, as_of_opt=as_of, actor=actor or default_actor(),
        fmt=fmt.value, output_path=output, quiet=quiet, no_color=no_color, debug=debug,
    )


# Command groups, one module each: (module, name, help).
GROUPS = [
    ("config_cmd", "config", "Check and show the program rules."),
    ("db", "db", "Database: upgrade, check, stats, backup."),
    ("members", "members", "Enrol, find, update and import members."),
    ("purchases", "purchases", "Record, import, refund and list purchases."),
    ("points", "points", "Balances, history, adjustments, redemptions, expiry."),
    ("rewards", "rewards", "The rewards catalogue and redemption."),
    ("tiers", "tiers", "Tier ladder: list, recalculate, progress, history."),
    ("campaigns", "campaigns", "Marketing campaigns: add, list, show, end."),
    ("bonuses", "bonuses", "Birthday, referral and event bonuses."),
    ("reports", "reports", "Reports for managers."),
    ("audit", "audit", "The audit trail."),
]

_LAZY = {name: (module, name, help_) for module, name, help_ in GROUPS}


def _load_group(module: str, name: str, help_: str) -> Any:
    """The click group of `loyaltyctl.cli.<module>`, named `name` (None if it has no commands)."""
    from typer.main import get_group_from_info
    from typer.models import TyperInfo

    sub: typer.Typer = importlib.import_module(f"loyaltyctl.cli.{module}").app
    if not (sub.registered_commands or sub.registered_groups):
        return None
    return get_group_from_info(
        TyperInfo(sub, name=name, help=help_),
        pretty_exceptions_short=sub.pretty_exceptions_short,
        rich_markup_mode=sub.rich_markup_mode,
        suggest_commands=sub.suggest_commands,
    )


# Top-level commands (init, demo) live in their own module and register on `app`.
importlib.import_module("loyaltyctl.cli.setup")
importlib.import_module("loyaltyctl.cli.demo")


def run() -> None:
    """Console-script entry point."""
    app()
