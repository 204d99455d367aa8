"""Database facts and backups."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from loyaltyctl.db.engine import current_revision, mask_url, sqlite_path
from loyaltyctl.db.models import TABLES_IN_ORDER
from loyaltyctl.errors import InvalidInput, LoyaltyError, NotFound


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


def backup_database(*, engine: Engine, url: str, target: Path, overwrite: bool = False) -> int:
    """Write a consistent copy of the database to `target`; returns its size in bytes."""
    if target.exists() and not overwrite:
        raise InvalidInput(f"{target} already exists", hint="use --overwrite to replace it")
    if not target.parent.exists():
        raise NotFound(f"directory {target.parent} does not exist")
    if engine.dialect.name == "sqlite":
        import sqlite3

        src_path = sqlite_path(url)
        if src_path is None:
            raise InvalidInput("an in-memory database cannot be backed up")
        if target.exists():
            target.unlink()
        fd = os.open(target, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
        src = sqlite3.connect(str(src_path))
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        return target.stat().st_size
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise LoyaltyError(
            "pg_dump is not installed, so a PostgreSQL backup cannot be taken",
            hint="install the PostgreSQL client tools (apt-get install postgresql-client)",
        )
    u = engine.url
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = u.password
    cmd = [pg_dump, "--format=custom", "--file", str(target), "--no-owner"]
    if u.host:
        cmd += ["--host", u.host]
    if u.port:
        cmd += ["--port", str(u.port)]
    if u.username:
        cmd += ["--username", u.username]
    cmd.append(u.database or "")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LoyaltyError(f"pg_dump failed: {mask_url(proc.stderr.strip())}")
    os.chmod(target, 0o600)
    return target.stat().st_size
