"""Shared by test_crash.py, test_concurrency.py and test_hostile_input.py: databases made
and copied per trial, the CLI in a real subprocess, and per-member figures to compare.

Also a worker program for the concurrency tests (`python reliability_helpers.py worker
SPEC.json`): one process that runs a list of CLI commands in-process (the full command
path: parsing, the error funnel, exit codes) and logs, for each, its exit code, output and
time. Workers start together on a signal file, so their commands really overlap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENV_CLEAR = {"LOYALTYCTL_CONFIG": "", "LOYALTYCTL_DB": "", "COLUMNS": "160"}


# -- the CLI in a subprocess ---------------------------------------------------------------


def cli_argv(config: Path, db_url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "loyaltyctl", "--config", str(config), "--db", db_url, *args]


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment without the variables that would point the CLI elsewhere."""
    env = {**os.environ, **ENV_CLEAR}
    for name in ("LOYALTYCTL_BUSY_TIMEOUT", "LOYALTYCTL_IMPORT_BATCH"):
        env.pop(name, None)
    env.update(extra)
    return env


# -- databases -----------------------------------------------------------------------------


def pg_db_name(base_url: str, purpose: str) -> str:
    """A database of our own beside the test database: loyalty_test_rel_<hash>_<purpose>.

    The hash of the test database's URL keeps two test runs against different test
    databases (two engineers, SQLite and PostgreSQL CI) from sharing these databases.
    """
    tag = hashlib.sha1(base_url.encode()).hexdigest()[:6]  # noqa: S324 - a name, not security
    return f"loyalty_test_rel_{tag}_{purpose}"[:63]


def pg_url(base_url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(base_url).set(database=database).render_as_string(hide_password=False)


@contextmanager
def pg_admin(base_url: str) -> Iterator[Any]:
    """An autocommit connection to the test database, for CREATE/DROP DATABASE."""
    from sqlalchemy import create_engine

    engine = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def pg_create(base_url: str, name: str, *, template: str | None = None) -> str:
    """(Re)create database `name`, empty or as a copy of `template`; returns its URL."""
    from sqlalchemy import text

    with pg_admin(base_url) as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if template:
            # The template must have no connections: end any (a killed client's backend
            # may linger for a moment).
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": template})
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        else:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    return pg_url(base_url, name)


def pg_drop(base_url: str, *names: str) -> None:
    from sqlalchemy import text

    with pg_admin(base_url) as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sqlite_checkpoint(path: Path) -> None:
    """Fold the WAL into the database file, so that copying the one file copies it all."""
    c = sqlite3.connect(path)
    try:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        c.close()


def sqlite_restore(template: Path, target: Path) -> None:
    """`target` becomes a copy of `template` (a checkpointed file), WAL and locks removed."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(f"{target}{suffix}")
        if p.exists():
            p.unlink()
    shutil.copyfile(template, target)


def migrate(url: str) -> None:
    from sqlalchemy import create_engine

    from loyaltyctl.db.migrate import upgrade

    engine = create_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


# -- figures to compare --------------------------------------------------------------------

MEMBER_FIGURES = """
SELECT m.code, m.balance, m.pending, m.tier,
       (SELECT COALESCE(SUM(l.points), 0) FROM ledger_entries l WHERE l.member_id = m.id),
       (SELECT COUNT(*) FROM ledger_entries l WHERE l.member_id = m.id),
       (SELECT COUNT(*) FROM purchases p WHERE p.member_id = m.id),
       (SELECT COALESCE(SUM(p.amount), 0) FROM purchases p WHERE p.member_id = m.id),
       (SELECT COUNT(*) FROM tier_history t WHERE t.member_id = m.id)
FROM members m ORDER BY m.code
"""
"""Per member: balance, pending, tier, ledger sum and entries, purchases and their amount,
tier changes. Nothing that depends on ids or on the time a row was written."""

LEDGER_FIGURES = """
SELECT kind, COUNT(*), SUM(points), SUM(COALESCE(remaining, 0)) FROM ledger_entries
GROUP BY kind ORDER BY kind
"""


def member_figures(club: Any) -> list[tuple]:
    return [tuple(int(v) if isinstance(v, int) else v for v in r) for r in club.query(MEMBER_FIGURES)]


def ledger_figures(club: Any) -> list[tuple]:
    return [tuple(int(v) if not isinstance(v, str) else v for v in r)
            for r in club.query(LEDGER_FIGURES)]


# -- the concurrency worker ----------------------------------------------------------------


def wait_for_file(path: Path, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"worker: {path} never appeared")
        time.sleep(0.005)


def worker_main(spec_path: str) -> None:
    """Run the commands of a spec in this process and write the log (JSON Lines).

    spec: {"config", "db", "env": {...}, "go": path, "ready": path, "log": path,
           "ops": [{"id", "kind", "args": [...]}, ...], "mark_start": path prefix (optional)}
    With mark_start, the file <prefix><op id> is written as each command starts.
    """
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    os.environ.update({**ENV_CLEAR, **spec.get("env", {})})
    from typer.testing import CliRunner

    from loyaltyctl.cli.main import app

    runner = CliRunner()
    base = ["--config", spec["config"], "--db", spec["db"]]
    # Warm up the imports (Typer builds the command tree, commands import their services)
    # before the start signal, so that the workers' commands overlap in time.
    runner.invoke(app, [*base, "db", "stats"], catch_exceptions=False)
    Path(spec["ready"]).write_text("1")
    wait_for_file(Path(spec["go"]))
    with open(spec["log"], "w", encoding="utf-8") as log:
        for op in spec["ops"]:
            if spec.get("mark_start"):
                Path(f"{spec['mark_start']}{op['id']}").write_text("1")
            t0 = time.monotonic()
            r = runner.invoke(app, [*base, *op["args"]], catch_exceptions=True)
            took = time.monotonic() - t0
            crashed = None
            if r.exception is not None and not isinstance(r.exception, SystemExit):
                crashed = f"{type(r.exception).__name__}: {r.exception}"
            log.write(json.dumps({
                **op, "exit": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
                "seconds": round(took, 4), "crashed": crashed,
            }) + "\n")
            log.flush()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        worker_main(sys.argv[2])
    else:
        raise SystemExit("usage: reliability_helpers.py worker SPEC.json")
