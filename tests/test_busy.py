"""A database locked by someone else: a writing command gives up after the busy timeout
with exit 6 and "database is busy", changes nothing, and works once the lock is gone.

SQLite: another process holds a write transaction (BEGIN IMMEDIATE). PostgreSQL: another
session holds a table lock; our connections set `lock_timeout` from the same variable.
The writing command is `db backup` (it writes an audit row).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import BACKEND, Club
from loyaltyctl.db.engine import make_engine

SQLITE_WRITER = r"""
import sqlite3, sys, time
from pathlib import Path
db, d = sys.argv[1], Path(sys.argv[2])
c = sqlite3.connect(db, isolation_level=None)
c.execute("BEGIN IMMEDIATE")
c.execute("INSERT INTO job_locks (name, holder, acquired_at) VALUES ('other', 'x', '2024-01-01')")
(d / "held").write_text("1")
for _ in range(6000):  # at most 60 s; the test says when to let go
    if (d / "release").exists():
        break
    time.sleep(0.01)
c.execute("ROLLBACK")
c.close()
"""

BUSY_ENV = {"LOYALTYCTL_BUSY_TIMEOUT": "0.5"}


def _no_backup_left(target: Path) -> None:
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}")] == []


def _assert_busy(club: Club, target: Path, *, timed: bool = True) -> float:
    before = club.dump()
    t0 = time.monotonic()
    r = club.run("db", "backup", str(target), env=BUSY_ENV)
    elapsed = time.monotonic() - t0
    assert r.exit_code == 6, (r.exit_code, r.stderr)
    assert r.stderr.startswith("Error: the database is busy"), r.stderr
    assert "LOYALTYCTL_BUSY_TIMEOUT" in r.stderr and "Traceback" not in r.output
    _no_backup_left(target)
    assert club.dump() == before
    if timed:  # the 0.5 s from the environment was used, not the 10 s default
        assert 0.4 <= elapsed < 8, elapsed
    return elapsed


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite write lock held by another process")
@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_write_lock_held_elsewhere_gives_exit_6(club: Club, tmp_path: Path, journal) -> None:
    signals = tmp_path / "signals"
    signals.mkdir()
    db = club.db_url.split(":///", 1)[1]
    if journal == "wal":
        club.ok("db", "stats")  # as after `init`: our connections switch the file to WAL
    # "delete": a file last written by another tool; switching it to WAL needs the lock too,
    # and SQLite reports that at once rather than after the busy timeout.
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA journal_mode").fetchone() == (journal,)
    proc = subprocess.Popen([sys.executable, "-c", SQLITE_WRITER, db, str(signals)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (signals / "held").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "writer never took the lock"
            time.sleep(0.01)
        target = tmp_path / "backup.db"
        elapsed = _assert_busy(club, target, timed=journal == "wal")
        print(f"sqlite busy ({journal}): exit 6 after {elapsed:.2f} s, LOYALTYCTL_BUSY_TIMEOUT=0.5")
    finally:
        (signals / "release").write_text("1")
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0
    # Lock gone: the same command succeeds and records itself.
    club.ok("db", "backup", str(target), env=BUSY_ENV)
    assert target.exists()
    assert club.query("SELECT command, target FROM audit_log") == [("db backup", target.name)]


@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL lock_timeout")
def test_postgres_table_lock_held_elsewhere_gives_exit_6(club: Club, tmp_path: Path) -> None:
    target = tmp_path / "backup.dump"
    conn = club.engine.connect()
    try:
        # EXCLUSIVE lets pg_dump read but blocks the audit row's INSERT.
        conn.execute(text("LOCK TABLE audit_log IN EXCLUSIVE MODE"))
        elapsed = _assert_busy(club, target)
        print(f"postgres busy: exit 6 after {elapsed:.2f} s (lock_timeout 500ms)")
    finally:
        conn.rollback()
        conn.close()
    club.ok("db", "backup", str(target), env=BUSY_ENV)
    assert club.query("SELECT command, target FROM audit_log") == [("db backup", target.name)]


@pytest.mark.skipif(BACKEND != "postgresql", reason="pg_dump's own lock wait")
def test_postgres_pg_dump_blocked_by_an_exclusive_lock_gives_exit_6(club: Club, tmp_path: Path) -> None:
    target = tmp_path / "backup.dump"
    conn = club.engine.connect()
    try:
        conn.execute(text("LOCK TABLE members IN ACCESS EXCLUSIVE MODE"))
        before_audit = club.query("SELECT COUNT(*) FROM audit_log")
        r = club.run("db", "backup", str(target), env=BUSY_ENV)
        assert r.exit_code == 6, (r.exit_code, r.stderr)
        assert r.stderr.startswith("Error: pg_dump could not lock a table within the busy timeout")
        _no_backup_left(target)
    finally:
        conn.rollback()
        conn.close()
    assert club.query("SELECT COUNT(*) FROM audit_log") == before_audit == [(0,)]


def test_connections_carry_the_busy_timeout(club: Club, monkeypatch) -> None:
    monkeypatch.setenv("LOYALTYCTL_BUSY_TIMEOUT", "2.5")
    engine = make_engine(club.db_url)
    try:
        with engine.connect() as conn:
            if BACKEND == "postgresql":
                assert conn.execute(text("SHOW lock_timeout")).scalar() == "2500ms"
            else:
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
    finally:
        engine.dispose()


def test_bad_busy_timeout_is_invalid_input(club: Club) -> None:
    r = club.run("db", "stats", env={"LOYALTYCTL_BUSY_TIMEOUT": "soon"})
    assert r.exit_code == 4
    assert r.stderr.startswith("Error: LOYALTYCTL_BUSY_TIMEOUT='soon' is not a number of seconds")
