"""`db backup`: a private, complete copy that restores to exactly the state at backup time.

Round trip on the selected backend: seed rows, back up, change data, restore the way the
command's help says (SQLite: copy the file back; PostgreSQL: pg_restore --clean), and
compare every row of every table with the state at backup time.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import BACKEND, Club
from loyaltyctl.services import dbinfo

MEMBER_SQL = (
    "INSERT INTO members (code, name, phone, email, birth_date, joined_at, status, tags, "
    "balance, pending, created_at, updated_at) VALUES (:code, :name, :phone, :email, :bd, "
    ":t, 'active', '', :bal, 0, :t, :t)"
)

LOT_SQL = (
    "INSERT INTO ledger_entries (member_id, kind, points, effective_at, remaining, actor, "
    "created_at) SELECT id, 'opening', :p, :t, :p, 'test', :t FROM members WHERE code = :code"
)


def add_member(club: Club, code: str, balance: int = 0) -> None:
    n = int(code[1:])
    with club.engine.begin() as conn:
        conn.execute(text(MEMBER_SQL), {
            "code": code, "name": f"Member {code}", "phone": f"+98912000{n:04d}",
            "email": f"{code.lower()}@example.com", "bd": None,
            "t": datetime(2024, 3, 1, 8, 30), "bal": balance,
        })
        if balance:  # the cached balance is backed by a lot, so `db check` holds
            conn.execute(text(LOT_SQL), {"code": code, "p": balance, "t": datetime(2024, 3, 1, 8, 30)})


def seed(club: Club) -> None:
    for i in range(1, 6):
        add_member(club, f"C{i}", balance=100 * i)
    with club.engine.begin() as conn:
        conn.execute(text("INSERT INTO job_locks (name, holder, acquired_at) VALUES "
                          "('tiers recalc', 'seed', :t)"), {"t": datetime(2024, 3, 2)})


def restore(club: Club, backup: Path) -> None:
    """The restore procedure documented in `db backup --help`."""
    club.close()
    club._engine = None
    if BACKEND == "sqlite":
        db = Path(club.db_url.split(":///", 1)[1])
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(backup, db)
        os.chmod(db, 0o600)
        return
    from sqlalchemy import make_url

    pg_restore = dbinfo.find_pg_tool("pg_restore")
    assert pg_restore, "pg_restore not found"
    uri = make_url(club.db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    proc = subprocess.run(
        [pg_restore, "--clean", "--if-exists", "--no-owner", "--single-transaction",
         "-d", uri, str(backup)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_backup_round_trip_restores_the_state_at_backup_time(club: Club, tmp_path: Path) -> None:
    seed(club)
    at_backup = club.dump()
    backup = tmp_path / "nightly.backup"
    r = club.ok("db", "backup", str(backup))
    assert "written to" in r.stderr and str(backup) in r.stderr
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    size = int(r.stderr.rsplit("(", 1)[1].split()[0].replace(",", ""))
    assert size == backup.stat().st_size > 0

    # After the backup: one audit row for it, then more changes that the restore must undo.
    audit = club.query("SELECT command, target, details FROM audit_log")
    assert [(c, t) for c, t, _ in audit] == [("db backup", "nightly.backup")]
    details = json.loads(audit[0][2])
    assert details["file"] == str(backup.resolve()) and details["bytes"] == size
    add_member(club, "C99", balance=5)
    with club.engine.begin() as conn:
        conn.execute(text("UPDATE members SET balance = 0 WHERE code = 'C1'"))
        conn.execute(text("DELETE FROM job_locks"))
    assert club.dump() != at_backup

    restore(club, backup)
    after = club.dump()
    n = sum(len(rows) for rows in after.values())
    # 5 members + 5 lots + 1 job_locks row; the backup's own audit row came after the copy.
    assert n == 11
    assert after == at_backup
    assert club.balance("C1") == 100
    club.ok("db", "check")
    print(f"backup round trip ({BACKEND}): {n} rows in {len(after)} tables compared, "
          f"{size:,} bytes")


def test_existing_file_needs_overwrite(club: Club, tmp_path: Path) -> None:
    backup = tmp_path / "b.backup"
    backup.write_bytes(b"older backup")
    r = club.run("db", "backup", str(backup))
    assert r.exit_code == 4
    assert r.stderr.startswith(f"Error: {backup} already exists") and "--overwrite" in r.stderr
    assert backup.read_bytes() == b"older backup"
    assert club.query("SELECT COUNT(*) FROM audit_log") == [(0,)]

    seed(club)
    club.ok("db", "backup", str(backup), "--overwrite")
    assert backup.read_bytes() != b"older backup"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    restore(club, backup)
    assert club.scalar("SELECT COUNT(*) FROM members") == 5


def test_missing_directory_is_not_found(club: Club, tmp_path: Path) -> None:
    before = club.dump()
    r = club.run("db", "backup", str(tmp_path / "nowhere" / "b.backup"))
    assert r.exit_code == 3
    assert r.stderr.startswith(f"Error: directory {tmp_path / 'nowhere'} does not exist")
    assert club.dump() == before


@pytest.mark.skipif(BACKEND != "sqlite", reason="a SQLite file can be named as its own backup")
def test_sqlite_backup_over_the_database_itself_is_refused(club: Club) -> None:
    db = club.db_url.split(":///", 1)[1]
    before = club.dump()
    r = club.run("db", "backup", db, "--overwrite")
    assert r.exit_code == 4 and "is the database itself" in r.stderr
    assert club.dump() == before


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite online backup")
def test_sqlite_backup_excludes_uncommitted_work(club: Club, tmp_path: Path) -> None:
    seed(club)
    club.ok("db", "stats")  # WAL mode, as in real use: readers and the backup go on
    backup = tmp_path / "b.db"
    conn = club.engine.connect()
    try:
        conn.execute(text("UPDATE members SET balance = 7"))  # open, uncommitted
        # A writer is open in this process, so the command's audit row would wait: the
        # copy alone is what is under test here.
        dbinfo.backup_database(engine=club.engine, url=club.db_url, target=backup)
    finally:
        conn.rollback()
        conn.close()
    import sqlite3

    with sqlite3.connect(backup) as c:
        # 100 + 200 + 300 + 400 + 500, not 5 x 7
        assert c.execute("SELECT SUM(balance) FROM members").fetchone() == (1500,)


@pytest.mark.skipif(BACKEND != "postgresql", reason="pg_dump discovery")
def test_pg_dump_missing_is_a_clear_error(club: Club, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(dbinfo, "PG_BIN_GLOBS", ())
    empty = tmp_path / "bin"
    empty.mkdir()
    backup = tmp_path / "b.backup"
    before = club.dump()
    r = club.run("db", "backup", str(backup), env={"PATH": str(empty)})
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: pg_dump was not found (not on PATH, nor in "
                               "/usr/lib/postgresql/*/bin)")
    assert "apt-get install postgresql-client" in r.stderr
    assert not backup.exists() and list(tmp_path.glob(".b.backup*")) == []
    assert club.dump() == before


@pytest.mark.skipif(BACKEND != "postgresql", reason="pg_dump discovery")
def test_pg_dump_found_in_server_bin_dir_when_not_on_path(club: Club, tmp_path: Path) -> None:
    import glob

    if not glob.glob("/usr/lib/postgresql/*/bin/pg_dump"):
        pytest.skip("no /usr/lib/postgresql/*/bin/pg_dump on this machine")
    empty = tmp_path / "bin"
    empty.mkdir()
    seed(club)
    at_backup = club.dump()
    backup = tmp_path / "b.backup"
    club.ok("db", "backup", str(backup), env={"PATH": str(empty)})
    add_member(club, "C77")
    restore(club, backup)
    assert club.dump() == at_backup
