"""Read-only database access without SQLAlchemy, for the look-ups a customer waits on.

`points balance` and `members show` read a handful of rows; importing SQLAlchemy and
building the models costs more than the whole read (about 0.3-0.5 s of CPU). This module
opens the same database the engine would (`engine.resolve_db_url`: --db, $LOYALTYCTL_DB,
loyalty.db beside the config) with the DB-API driver itself: stdlib `sqlite3` (read-only,
the engine's busy timeout) or `psycopg` (a read-only transaction, the engine's lock
timeout), checks the schema revision with the engine's messages, and runs SQL.

SQL is written once with `:name` parameters and translated per driver by `prepare`
(`%(name)s` for psycopg; a list or tuple value expands to `(:name__0, :name__1, ...)` for
`IN :name`). `SessionReader` runs the same SQL through an ORM session's connection, so the
services used by the other commands share these queries instead of keeping a second copy
(`services/lookup.py`).

Values go in and come out as the driver has them: SQLite keeps dates and times as text,
so parameters are written exactly as SQLAlchemy stores them (`prepare`) and readers convert
results with `lookup.as_date` / `as_datetime`.

`connect` raises `LiteUnavailable` when a URL needs the engine (an in-memory or missing
SQLite file, which the engine creates; a driver or option this module does not handle;
any unexpected error while opening): the caller then takes the ORM path, which behaves
exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, Protocol

from loyaltyctl.db.engine import (
    SCHEMA_HEAD,
    busy_timeout_s,
    cannot_connect,
    not_initialised,
    outdated,
    sqlite_path,
)
from loyaltyctl.errors import DatabaseBusy, SchemaOutdated

# The words of the CLI's error funnel for a lock held past the timeout (cli/main.py): a
# look-up that meets one says the same thing and exits 6 like any other command.
BUSY_MESSAGE = ("the database is busy (locked by another loyaltyctl run or another program) "
                "past the timeout; nothing was changed. Try again, or raise "
                "LOYALTYCTL_BUSY_TIMEOUT.")
_BUSY_WORDS = ("database is locked", "database is busy", "lock timeout", "could not obtain lock",
               "canceling statement due to lock", "deadlock detected")

# `:name` not preceded by ':' or a word character (so `::` casts and `12:30` are left alone).
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


class LiteUnavailable(Exception):
    """This database needs the full engine; use the ORM path instead."""


class Reader(Protocol):
    """What the look-up services need: the dialect name and rows of a parameterised query."""

    dialect: str

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        ...


def _sqlite_value(v: Any) -> Any:
    # As SQLAlchemy's SQLite types store them, so text comparisons agree with the ORM's.
    if isinstance(v, datetime):
        return (f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
                f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}")
    if isinstance(v, date):
        return f"{v.year:04d}-{v.month:02d}-{v.day:02d}"
    return v


def prepare(sql: str, params: Mapping[str, Any] | None, dialect: str) -> tuple[str, dict[str, Any]]:
    """`sql` with `:name` parameters in the driver's style, and the values to bind."""
    params = params or {}
    values: dict[str, Any] = {}
    pg = dialect == "postgresql"
    convert = (lambda v: v) if pg else _sqlite_value

    def mark(name: str) -> str:
        return f"%({name})s" if pg else f":{name}"

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in params:
            raise KeyError(f"SQL parameter :{name} has no value")
        v = params[name]
        if isinstance(v, list | tuple | set | frozenset):
            names = [f"{name}__{i}" for i in range(len(v))]
            values.update(zip(names, (convert(x) for x in v), strict=True))
            # IN (NULL) matches nothing, as an empty IN list should.
            return "(" + ", ".join(mark(n) for n in names) + ")" if names else "(NULL)"
        values[name] = convert(v)
        return mark(name)

    if pg:
        sql = sql.replace("%", "%%")
    return _PARAM.sub(sub, sql), values


def _busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(w in text for w in _BUSY_WORDS)


class LiteDB:
    """One read-only connection and transaction; use as a context manager."""

    def __init__(self, conn: Any, dialect: str, url: str) -> None:
        self._conn = conn
        self.dialect = dialect
        self.url = url

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        text, values = prepare(sql, params, self.dialect)
        try:
            return [tuple(r) for r in self._conn.execute(text, values).fetchall()]
        except Exception as exc:
            if _busy(exc):
                raise DatabaseBusy(BUSY_MESSAGE) from None
            raise

    def close(self) -> None:
        try:
            if self.dialect == "sqlite" and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        finally:
            self._conn.close()

    def __enter__(self) -> LiteDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_schema(self, *, missing_table: type[BaseException] | tuple[type[BaseException], ...]) -> None:
        try:
            found = self.rows("SELECT version_num FROM alembic_version")
        except DatabaseBusy:
            raise
        except missing_table:
            raise not_initialised(self.url) from None
        rev = found[0][0] if found else None
        if rev != SCHEMA_HEAD:
            raise outdated(self.url, rev)


def connect(url: str) -> LiteDB:
    """A read-only connection to the database at `url` (as `engine.resolve_db_url` gives it),
    at this code's schema revision. Raises the engine's SchemaOutdated / connection errors,
    DatabaseBusy, or LiteUnavailable (use the engine)."""
    if url.startswith("sqlite"):
        return _connect_sqlite(url)
    if url.startswith("postgresql"):
        return _connect_pg(url)
    raise LiteUnavailable(url)


def _connect_sqlite(url: str) -> LiteDB:
    import sqlite3
    from urllib.parse import quote

    path = sqlite_path(url)
    if path is None or not path.is_file():
        # In memory, or not there: the engine creates the file and reports what it found.
        raise LiteUnavailable(url)
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True,
                               timeout=busy_timeout_s(), isolation_level=None)
    except sqlite3.Error as exc:
        raise LiteUnavailable(url) from exc
    db = LiteDB(conn, "sqlite", url)
    try:
        # One snapshot for all the reads of the command, as the engine's read session has.
        conn.execute("BEGIN")
        db.check_schema(missing_table=sqlite3.OperationalError)
    except (DatabaseBusy, SchemaOutdated):
        db.close()
        raise
    except Exception as exc:  # anything else: the engine says what it says today
        db.close()
        raise LiteUnavailable(url) from exc
    return db


def _connect_pg(url: str) -> LiteDB:
    try:
        import psycopg
    except ImportError as exc:
        raise LiteUnavailable(url) from exc
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgresql+psycopg", "postgres"):
        raise LiteUnavailable(url)  # another driver's URL: let SQLAlchemy handle it
    lock_timeout_ms = str(max(1, int(busy_timeout_s() * 1000)))
    try:
        conn = psycopg.connect("postgresql://" + rest)
    except psycopg.OperationalError as exc:
        if _busy(exc):
            raise DatabaseBusy(BUSY_MESSAGE) from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        raise cannot_connect(url, reason) from None
    except psycopg.Error as exc:  # e.g. an option in the URL that only SQLAlchemy knows
        raise LiteUnavailable(url) from exc
    db = LiteDB(conn, "postgresql", url)
    try:
        conn.read_only = True
        # As the engine does on connect: a lock wait gives up after the busy timeout.
        db.rows("SELECT set_config('lock_timeout', :ms, false)", {"ms": lock_timeout_ms})
        db.check_schema(missing_table=psycopg.errors.UndefinedTable)
    except (DatabaseBusy, SchemaOutdated):
        db.close()
        raise
    except Exception as exc:  # anything else: the engine says what it says today
        db.close()
        raise LiteUnavailable(url) from exc
    return db


class SessionReader:
    """The same `Reader` over an ORM session's connection and transaction.

    Like `session.execute`, it flushes pending ORM changes first (unless autoflush is off),
    so a service sees what its own command wrote.
    """

    def __init__(self, session: Any) -> None:
        self._session = session
        self.dialect = session.get_bind().dialect.name

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        text, values = prepare(sql, params, self.dialect)
        if self._session.autoflush:
            self._session.flush()
        result = self._session.connection().exec_driver_sql(text, values)
        return [tuple(r) for r in result.fetchall()]
