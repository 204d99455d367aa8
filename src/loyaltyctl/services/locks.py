"""Job locks: two runs of the same cron job (`points expire`, `tiers recalc`,
`bonuses birthday`) never overlap.

The authority is a lock the operating system or the server drops by itself when the holder
dies, so a crashed run can never leave the job blocked:

- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a dedicated
  connection, held for the whole job and released on exit or when the connection ends.
- SQLite: `flock(LOCK_EX | LOCK_NB)` on `<dbfile>.<job>.lock` beside the database file.
- In-memory or unknown SQLite paths: a lock inside this process.

The `job_locks` table only shows who holds a job for people and for the refusal message.
Its row is written after the real lock is taken (replacing whatever a crashed run left) and
deleted on release, each in its own short transaction; it never decides anything, so a stale
row cannot block a run.

Use it around the job's write session, not inside it (on SQLite the visibility row needs
the write lock for a moment):

    with job_lock(engine=a.engine(), name="points expire", holder=default_holder(a.actor)):
        with a.session(write=True) as s:
            ...
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from loyaltyctl.errors import LoyaltyError, Refused
from loyaltyctl.timeutil import utcnow

POLL_INTERVAL_S = 0.05
# Namespaces our advisory locks so they do not collide with another application's.
_PG_NAMESPACE = "loyaltyctl:"

_local_locks: dict[tuple[str, str], threading.Lock] = {}
_local_guard = threading.Lock()


@dataclass(frozen=True)
class JobLockInfo:
    name: str
    holder: str
    acquired_at: datetime
    mechanism: str
    """`advisory` (PostgreSQL), `flock:<path>` (SQLite file) or `process` (in-memory)."""


def default_holder(actor: str) -> str:
    """Who holds a lock, as shown to the next run: actor, process and machine."""
    return f"{actor} (pid {os.getpid()} on {socket.gethostname()})"


def lock_file_path(database: str | Path, name: str) -> Path:
    """`<dbfile>.<job>.lock`, with the job name made safe for a file name."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-").lower() or "job"
    return Path(f"{database}.{slug}.lock")


@contextmanager
def job_lock(*, engine: Engine, name: str, holder: str,
             wait_seconds: float = 0.0) -> Iterator[JobLockInfo]:
    """Hold the lock for job `name` for the duration of the `with` block.

    If another run holds it, poll for up to `wait_seconds`, then raise `Refused` naming the
    holder and when it started; nothing has been done at that point.
    """
    holder = holder[:200]
    deadline = time.monotonic() + max(0.0, wait_seconds)
    if engine.dialect.name == "postgresql":
        acquire = _pg_lock
    else:
        database = engine.url.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            acquire = _process_lock
        else:
            acquire = _file_lock
    with acquire(engine=engine, name=name, holder=holder, deadline=deadline) as info:
        _record_holder(engine, info)
        try:
            yield info
        finally:
            _clear_holder(engine, info)


# -- the real locks ------------------------------------------------------------------------


def _wait_or_refuse(*, engine: Engine, name: str, deadline: float,
                    describe: Callable[[], dict[str, Any] | None] | None = None) -> None:
    """Sleep one poll interval if time is left, else raise the refusal.

    `describe` reads who holds the lock from the lock itself (the SQLite lock file), which
    is fresher than the `job_locks` row.
    """
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(min(POLL_INTERVAL_S, remaining))
        return
    who = (describe() if describe else None) or _read_holder(engine, name)
    if who:
        since = who["acquired_at"]
        when = since.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(since, datetime) else str(since)
        held = f"held by {who['holder']} since {when}"
    else:
        held = "held by another process"
    raise Refused(
        f"{name} is already running ({held}); nothing was done",
        hint="wait for that run to finish (or pass a longer wait); the lock is released "
             "automatically if that process dies",
    )


@contextmanager
def _pg_lock(*, engine: Engine, name: str, holder: str, deadline: float) -> Iterator[JobLockInfo]:
    key = _PG_NAMESPACE + name
    # Autocommit: the lock belongs to the session, so no transaction stays open while we hold it.
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        while not conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": key}).scalar():
            _wait_or_refuse(engine=engine, name=name, deadline=deadline)
        try:
            yield JobLockInfo(name, holder, utcnow(), "advisory")
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key})
            except Exception:  # noqa: BLE001 - the server drops it with the connection anyway
                conn.invalidate()
    finally:
        conn.close()


@contextmanager
def _file_lock(*, engine: Engine, name: str, holder: str, deadline: float) -> Iterator[JobLockInfo]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system
        with _process_lock(engine=engine, name=name, holder=holder, deadline=deadline) as info:
            yield info
        return
    path = lock_file_path(engine.url.database or "", name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise LoyaltyError(
            f"cannot create the job lock file {path}: {exc.strerror}",
            hint="the directory of the database must be writable by this user",
        ) from None
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                _wait_or_refuse(engine=engine, name=name, deadline=deadline,
                                describe=lambda: _read_lock_file(fd))
        info = JobLockInfo(name, holder, utcnow(), f"flock:{path}")
        # The file also says who holds it, in case the database row could not be written.
        # The file is never deleted: removing a lock file races with the next run's flock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder}\t{info.acquired_at.isoformat(sep=' ')}\n".encode(), 0)
        try:
            yield info
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_lock_file(fd: int) -> dict[str, Any] | None:
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        return None
    holder, _, since = raw.partition("\t")
    if not holder:
        return None
    try:
        at: Any = datetime.fromisoformat(since)
    except ValueError:
        at = since or "an unknown time"
    return {"holder": holder, "acquired_at": at}


@contextmanager
def _process_lock(*, engine: Engine, name: str, holder: str,
                  deadline: float) -> Iterator[JobLockInfo]:
    key = (str(engine.url), name)
    with _local_guard:
        lock = _local_locks.setdefault(key, threading.Lock())
    while not lock.acquire(blocking=False):
        _wait_or_refuse(engine=engine, name=name, deadline=deadline)
    try:
        yield JobLockInfo(name, holder, utcnow(), "process")
    finally:
        lock.release()


# -- the visibility row --------------------------------------------------------------------


@contextmanager
def _short_write(engine: Engine) -> Iterator[Connection]:
    """A short transaction of its own; on SQLite it waits at most a moment for the write lock."""
    with engine.connect() as conn:
        # On the driver's connection, so that no transaction is begun by the PRAGMA itself.
        raw = conn.connection.driver_connection if engine.dialect.name == "sqlite" else None
        if raw is not None:
            raw.execute("PRAGMA busy_timeout=1000")
        try:
            with conn.begin():
                yield conn
        finally:
            if raw is not None:
                # The connection goes back to the pool: restore the engine's own timeout.
                from loyaltyctl.db.engine import busy_timeout_s

                ms = int(busy_timeout_s() * 1000)
                raw.execute(f"PRAGMA busy_timeout={ms}")  # noqa: S608 - an int, not input


def _record_holder(engine: Engine, info: JobLockInfo) -> None:
    from sqlalchemy.exc import DBAPIError

    # We hold the real lock, so any row under this name was left by a run that died.
    try:
        with _short_write(engine) as conn:
            conn.execute(text("DELETE FROM job_locks WHERE name = :n"), {"n": info.name[:64]})
            conn.execute(
                text("INSERT INTO job_locks (name, holder, acquired_at) VALUES (:n, :h, :t)"),
                {"n": info.name[:64], "h": info.holder, "t": info.acquired_at},
            )
    except DBAPIError:
        pass  # visibility only: the real lock is held, the job may go ahead


def _clear_holder(engine: Engine, info: JobLockInfo) -> None:
    from sqlalchemy.exc import DBAPIError

    try:
        with _short_write(engine) as conn:
            conn.execute(text("DELETE FROM job_locks WHERE name = :n AND holder = :h"),
                         {"n": info.name[:64], "h": info.holder})
    except DBAPIError:
        pass  # a leftover row is replaced by the next holder and never blocks anyone


def _read_holder(engine: Engine, name: str) -> dict[str, Any] | None:
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT holder, acquired_at FROM job_locks WHERE name = :n"), {"n": name[:64]}
            ).first()
    except DBAPIError:
        return None
    return {"holder": row[0], "acquired_at": row[1]} if row else None


def current_holders(*, engine: Engine) -> list[dict[str, Any]]:
    """Rows of `job_locks` (who says they are running what), for display."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, holder, acquired_at FROM job_locks ORDER BY name"))
        return [{"name": n, "holder": h, "acquired_at": t} for n, h, t in rows]
