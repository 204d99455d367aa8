"""Engine and session: SQLite (default, embedded) or PostgreSQL, one engine per process."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from loyaltyctl.errors import InvalidInput, LoyaltyError, SchemaOutdated

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlmodel import Session

ENV_DB = "LOYALTYCTL_DB"
DEFAULT_DB_FILENAME = "loyalty.db"
ENV_BUSY_TIMEOUT = "LOYALTYCTL_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT_S = 10.0

# The newest schema revision this code knows. Kept here (and checked against Alembic's head
# by a test) so that ordinary commands need not import Alembic just to compare revisions.
SCHEMA_HEAD = "0002"


def resolve_db_url(explicit: str | None, config_dir: Path | None) -> str:
    """--db, then $LOYALTYCTL_DB, then loyalty.db beside the config file."""
    raw = explicit or os.environ.get(ENV_DB)
    if not raw:
        base = config_dir or Path.cwd()
        return f"sqlite:///{(base / DEFAULT_DB_FILENAME).resolve()}"
    if "://" not in raw:  # a bare path means a SQLite file
        return f"sqlite:///{Path(raw).expanduser().resolve()}"
    if raw.startswith(("postgresql://", "postgres://")):
        raw = "postgresql+psycopg://" + raw.split("://", 1)[1]
    return raw


def mask_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def busy_timeout_s() -> float:
    """Seconds to wait for a lock held by another writer ($LOYALTYCTL_BUSY_TIMEOUT, default 10).

    Read when an engine is made, not at import, so a caller (or a test) can set it per run.
    """
    raw = os.environ.get(ENV_BUSY_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_BUSY_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value <= 86_400):
        raise InvalidInput(
            f"{ENV_BUSY_TIMEOUT}={raw!r} is not a number of seconds between 0 and 86400",
            hint=f"set {ENV_BUSY_TIMEOUT} to, for example, 10 (or unset it for the default)",
        )
    return value


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path == ":memory:":
        return None
    return Path(path)


# The errors of the schema check, shared with the read-only path (`db/lite.py`) so that
# both say the same thing.


def cannot_connect(url: str, reason: str) -> LoyaltyError:
    return LoyaltyError(
        f"cannot connect to database {mask_url(url)}: {mask_url(reason)}",
        hint="check --db / $LOYALTYCTL_DB and that the server is running",
    )


def not_initialised(url: str) -> SchemaOutdated:
    return SchemaOutdated(
        f"database {mask_url(url)} is not initialised",
        hint="run `loyaltyctl init` (new club) or `loyaltyctl db upgrade`",
    )


def outdated(url: str, rev: object) -> SchemaOutdated:
    return SchemaOutdated(
        f"database {mask_url(url)} is at schema revision {rev}, this loyaltyctl needs {SCHEMA_HEAD}",
        hint="run `loyaltyctl db upgrade` (back the database up first with `loyaltyctl db backup`)",
    )


def make_engine(url: str) -> Engine:
    from sqlalchemy import create_engine, event

    timeout_s = busy_timeout_s()
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None and not path.exists():
            if not path.parent.exists():
                raise InvalidInput(f"database directory {path.parent} does not exist")
            # Created by us, readable by the owner only: the file holds personal data.
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        engine = create_engine(url, connect_args={"timeout": timeout_s})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # noqa: ANN001
            # Take over transaction control so writers can BEGIN IMMEDIATE (see below).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # PRAGMA takes no bound parameters; the value is an int we computed.
            cur.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")  # noqa: S608 - int, not input
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # noqa: ANN001
            # Foreign keys are checked in every transaction but those of a bulk job whose
            # rows are copies of ids it reads in the same statement (see session_scope);
            # the pragma only takes effect outside a transaction, so it is set here.
            options = conn.get_execution_options()
            conn.exec_driver_sql("PRAGMA foreign_keys=" + (
                "OFF" if options.get("trusted_bulk") else "ON"))
            # A writer takes the write lock at BEGIN, so two writers queue on the busy
            # timeout instead of one failing at its first write after reading.
            if options.get("write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine
    if url.startswith("postgresql"):
        engine = create_engine(url, pool_pre_ping=False)
        lock_timeout_ms = str(max(1, int(timeout_s * 1000)))

        @event.listens_for(engine, "connect")
        def _on_pg_connect(dbapi_conn, _record):  # noqa: ANN001
            # A statement waiting for a lock (another run's row or table lock) gives up after
            # the busy timeout with "canceling statement due to lock timeout": exit 6, not a hang.
            autocommit = dbapi_conn.autocommit
            dbapi_conn.autocommit = True
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT set_config('lock_timeout', %s, false)", (lock_timeout_ms,))
            dbapi_conn.autocommit = autocommit

        return engine
    raise InvalidInput(
        f"unsupported database URL {mask_url(url)!r}",
        hint="use a SQLite file path or postgresql+psycopg://user:pass@host/dbname",
    )


def current_revision(engine: Engine) -> str | None:
    from sqlalchemy import inspect, text

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def ensure_current(engine: Engine, url: str) -> None:
    """Stop with a clear message unless the database is at this code's schema revision."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        conn = engine.connect()
    except OperationalError as exc:
        if "locked" in str(exc).lower():
            raise
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
        raise cannot_connect(url, reason) from None
    try:
        with conn:
            rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError) as exc:
        if "locked" in str(exc).lower():
            raise
        raise not_initialised(url) from None
    if rev != SCHEMA_HEAD:
        raise outdated(url, rev)


@contextmanager
def session_scope(engine: Engine, *, write: bool = False,
                  trusted_bulk: bool = False) -> Iterator[Session]:
    """One transaction per command: commit once at the end, roll back on any error.

    trusted_bulk (SQLite): no foreign-key checks in this transaction. Only for a writer
    whose every referencing value is an id it reads from the database in the same
    statement, under the write lock (the nightly expiry copies member and lot ids into
    hundreds of thousands of entries and allocations; the checks were half its time).
    `db check` still proves the references afterwards.
    """
    from sqlmodel import Session

    options = {"write": True} if write else {}
    if trusted_bulk:
        options["trusted_bulk"] = True
    bind = engine.execution_options(**options) if options else engine
    session = Session(bind, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
