"""The per-invocation application context: global options, config, engine, clock, output."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from loyaltyctl.errors import ConfigError, InvalidInput

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlmodel import Session

    from loyaltyctl.config import Config, LoadedConfig
    from loyaltyctl.db.lite import LiteDB
    from loyaltyctl.render import Output


def default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return os.environ.get("USER", "unknown")


@dataclass
class AppContext:
    config_opt: Path | None = None
    db_opt: str | None = None
    as_of_opt: str | None = None
    actor: str = field(default_factory=default_actor)
    fmt: str = "table"
    output_path: Path | None = None
    quiet: bool = False
    no_color: bool = False
    debug: bool = False
    _engine: Any = None

    # -- config ----------------------------------------------------------------------------

    @cached_property
    def loaded(self) -> LoadedConfig:
        from loyaltyctl.config import CONFIG_FILENAME, find_config, load_config

        path = find_config(self.config_opt)
        if path is None:
            raise ConfigError(
                Path.cwd() / CONFIG_FILENAME,
                None,
                "no program file found (looked at --config, $LOYALTYCTL_CONFIG and ./loyalty.toml); "
                "run `loyaltyctl init` to create one",
            )
        return load_config(path)

    @property
    def config(self) -> Config:
        return self.loaded.config

    def config_dir(self) -> Path | None:
        from loyaltyctl.config import find_config

        path = find_config(self.config_opt)
        return path.parent if path else None

    # -- database --------------------------------------------------------------------------

    @cached_property
    def db_url(self) -> str:
        from loyaltyctl.db.engine import resolve_db_url

        return resolve_db_url(self.db_opt, self.config_dir())

    def engine(self, *, check_schema: bool = True) -> Engine:
        from loyaltyctl.db.engine import ensure_current, make_engine

        if self._engine is None:
            self._engine = make_engine(self.db_url)
        if check_schema:
            ensure_current(self._engine, self.db_url)
        return self._engine

    @contextmanager
    def session(self, *, write: bool = False, trusted_bulk: bool = False) -> Iterator[Session]:
        from loyaltyctl.db.engine import session_scope

        with session_scope(self.engine(), write=write, trusted_bulk=trusted_bulk) as s:
            yield s

    @contextmanager
    def reader(self) -> Iterator[LiteDB | None]:
        """A read-only connection without SQLAlchemy (`db/lite.py`) for quick look-ups, or
        None when this database needs the engine (then use `session()`)."""
        from loyaltyctl.db.lite import LiteUnavailable, connect

        try:
            db = connect(self.db_url)
        except LiteUnavailable:
            yield None
            return
        with db:
            yield db

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- time ------------------------------------------------------------------------------

    @cached_property
    def now(self) -> datetime:
        """--as-of (a date means the end of that local day) or the current time, naive UTC."""
        from loyaltyctl.timeutil import parse_instant, utcnow

        if not self.as_of_opt:
            return utcnow()
        tz, cal = self._tz_calendar()
        try:
            return parse_instant(self.as_of_opt, tz=tz, calendar=cal, date_means="end")
        except ValueError as exc:
            raise InvalidInput(f"--as-of: {exc}") from None

    @property
    def today(self) -> date:
        from loyaltyctl.timeutil import local_date

        return local_date(self.now, self._tz_calendar()[0])

    def _tz_calendar(self) -> tuple[str, str]:
        try:
            p = self.config.program
            return p.timezone, p.calendar
        except ConfigError:
            return "UTC", "gregorian"

    def parse_when(self, text: str, *, option: str, date_means: str = "start") -> datetime:
        from loyaltyctl.timeutil import parse_instant

        tz, cal = self._tz_calendar()
        try:
            return parse_instant(text, tz=tz, calendar=cal, date_means=date_means)
        except ValueError as exc:
            raise InvalidInput(f"{option}: {exc}") from None

    def parse_day(self, text: str, *, option: str) -> date:
        from loyaltyctl.normalize import parse_date

        try:
            return parse_date(text, self._tz_calendar()[1])
        except ValueError as exc:
            raise InvalidInput(f"{option}: {exc}") from None

    def show_date(self, d: date | None) -> str:
        from loyaltyctl.timeutil import format_date

        return format_date(d, self._tz_calendar()[1])

    def show_time(self, dt: datetime | None) -> str:
        from loyaltyctl.timeutil import format_datetime

        tz, cal = self._tz_calendar()
        return format_datetime(dt, tz, cal)

    # -- output ----------------------------------------------------------------------------

    def out(self, output: Path | None = None) -> Output:
        from loyaltyctl.render import Output

        return Output(output=output or self.output_path, no_color=self.no_color, quiet=self.quiet)

    def format(self, fmt: str | None) -> str:
        return fmt or self.fmt

    def audit(self, session: Session, *, command: str, target: str | None = None,
              rows: int = 0, details: dict[str, Any] | None = None) -> None:
        from loyaltyctl.services import audit

        audit.record(session=session, actor=self.actor, command=command, target=target,
                     rows=rows, details=details, at=None)


def get_app(ctx: typer.Context) -> AppContext:
    """The AppContext of this invocation (set by the root callback)."""
    root = ctx.find_root()
    if not isinstance(root.obj, AppContext):
        root.obj = AppContext()
    return root.obj
