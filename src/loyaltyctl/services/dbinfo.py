"""Database facts and backups."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from loyaltyctl.db.engine import current_revision, mask_url, sqlite_path
from loyaltyctl.db.models import TABLES_IN_ORDER
from loyaltyctl.errors import DatabaseBusy, InvalidInput, LoyaltyError, NotFound


def database_stats(*, engine: Engine, url: str) -> dict[str, Any]:
    info: dict[str, Any] = {"database": mask_url(url), "dialect": engine.dialect.name,
                            "revision": current_revision(engine)}
    with engine.connect() as conn:
        for table in TABLES_IN_ORDER:
            # Table names come from our own constant list, never from input.
            info[f"{table}_rows"] = conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar()  # noqa: S608
        if engine.dialect.name == "postgresql":
            info["size_bytes"] = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
    path = sqlite_path(url)
    if path is not None:
        size = path.stat().st_size if path.exists() else 0
        wal = Path(str(path) + "-wal")
        info["size_bytes"] = size + (wal.stat().st_size if wal.exists() else 0)
    return info


# Where Debian/Ubuntu put the PostgreSQL client tools when they are not on PATH.
PG_BIN_GLOBS = ("/usr/lib/postgresql/*/bin",)


def find_pg_tool(name: str) -> str | None:
    """`pg_dump`/`pg_restore` on PATH, else the newest /usr/lib/postgresql/<version>/bin one."""
    found = shutil.which(name)
    if found:
        return found
    import glob

    candidates = []
    for pattern in PG_BIN_GLOBS:
        for d in glob.glob(pattern):
            tool = Path(d) / name
            if tool.is_file() and os.access(tool, os.X_OK):
                version = Path(d).parent.name
                candidates.append((int(version) if version.isdigit() else 0, str(tool)))
    return max(candidates)[1] if candidates else None


def libpq_uri(engine: Engine) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password, and the environment carrying it.

    The password goes through PGPASSWORD so that it never shows on a command line (`ps`).
    """
    u = engine.url
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    # URL.set() ignores None, so drop the password with the named tuple's _replace.
    uri = u.set(drivername="postgresql")._replace(password=None).render_as_string(
        hide_password=False)
    return uri, env


def backup_database(*, engine: Engine, url: str, target: Path, overwrite: bool = False) -> int:
    """Write a consistent copy of the database to `target` (mode 0600); returns its size."""
    with prepared_backup(engine=engine, url=url, target=target, overwrite=overwrite) as size:
        return size


@contextmanager
def prepared_backup(*, engine: Engine, url: str, target: Path,
                    overwrite: bool = False) -> Iterator[int]:
    """Copy the database to a temporary file beside `target`; yield its size; then rename it.

    SQLite: the online backup API, while other runs keep reading and writing. PostgreSQL:
    `pg_dump --format=custom` (restore with `pg_restore`). If the `with` body raises (the
    audit row could not be written, say), the copy is deleted and `target` is untouched:
    a failed backup leaves no partial file and never destroys an older backup.
    """
    if target.exists() and not overwrite:
        raise InvalidInput(f"{target} already exists", hint="use --overwrite to replace it")
    if target.is_dir():
        raise InvalidInput(f"{target} is a directory", hint="give a file name for the backup")
    if not target.parent.exists():
        raise NotFound(f"directory {target.parent} does not exist")
    src_path = sqlite_path(url) if engine.dialect.name == "sqlite" else None
    if engine.dialect.name == "sqlite":
        if src_path is None:
            raise InvalidInput("an in-memory database cannot be backed up")
        if target.exists() and target.resolve() == src_path.resolve():
            raise InvalidInput(f"{target} is the database itself", hint="choose another file")
    elif engine.dialect.name != "postgresql":  # pragma: no cover - make_engine refuses others
        raise InvalidInput(f"cannot back up a {engine.dialect.name} database")
    import tempfile

    # Created by us, readable by the owner only: a backup holds the same personal data.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)
        if src_path is not None:
            os.close(fd)
            fd = -1
            _sqlite_backup(src_path, tmp)
        else:
            _pg_dump(engine, fd)
            os.close(fd)
            fd = -1
        os.chmod(tmp, 0o600)
        yield tmp.stat().st_size
        os.replace(tmp, target)
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)


def _sqlite_backup(src_path: Path, dst_path: Path) -> None:
    import sqlite3

    from loyaltyctl.db.engine import busy_timeout_s

    src = sqlite3.connect(str(src_path), timeout=busy_timeout_s())
    try:
        dst = sqlite3.connect(str(dst_path))
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _pg_dump(engine: Engine, fd: int) -> None:
    from loyaltyctl.db.engine import busy_timeout_s

    pg_dump = find_pg_tool("pg_dump")
    if pg_dump is None:
        raise LoyaltyError(
            "pg_dump was not found (not on PATH, nor in /usr/lib/postgresql/*/bin), so a "
            "PostgreSQL backup cannot be taken",
            hint="install the PostgreSQL client tools (apt-get install postgresql-client) of "
                 "the server's major version or newer",
        )
    uri, env = libpq_uri(engine)
    lock_wait_ms = max(1, int(busy_timeout_s() * 1000))
    cmd = [pg_dump, "--format=custom", "--no-owner", "--no-privileges",
           f"--lock-wait-timeout={lock_wait_ms}", f"--dbname={uri}"]
    proc = subprocess.run(cmd, env=env, stdout=fd, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        detail = mask_url(proc.stderr.strip())
        if engine.url.password:
            detail = detail.replace(str(engine.url.password), "***")
        if "lock" in detail.lower() and "timeout" in detail.lower():
            raise DatabaseBusy(f"pg_dump could not lock a table within the busy timeout: {detail}",
                               hint="try again when the other run has finished, or raise "
                                    "LOYALTYCTL_BUSY_TIMEOUT")
        raise LoyaltyError(f"pg_dump failed (exit {proc.returncode}): {detail}")
