"""Test harness: every test gets a fresh club (config + database) on the selected backend.

Backend: SQLite by default; PostgreSQL when LOYALTYCTL_TEST_PG is set to a URL such as
postgresql+psycopg://postgres@127.0.0.1:54329/loyalty_test (the same test command, as CI runs it).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
import typer.testing
from typer.testing import CliRunner

from loyaltyctl.cli.main import app
from loyaltyctl.config import sample_config_text
from loyaltyctl.db.engine import SCHEMA_HEAD
from loyaltyctl.db.migrate import upgrade
from loyaltyctl.db.models import TABLES_IN_ORDER

PG_URL = os.environ.get("LOYALTYCTL_TEST_PG")

# Typer rebuilds the whole command tree (~0.4 s) on every CliRunner.invoke; build it once
# per app object for the whole run.
_built: dict[int, Any] = {}
_build = typer.testing._get_command


def _cached_command(typer_app: Any) -> Any:
    key = id(typer_app)
    if key not in _built:
        _built[key] = _build(typer_app)
    return _built[key]


typer.testing._get_command = _cached_command
BACKEND = "postgresql" if PG_URL else "sqlite"

# A minimal, hand-checkable program: 1 point per 1,000 rials, no minimum, UTC, never expires
# unless a test says otherwise. Tests that need more write their own TOML.
SIMPLE_CONFIG = """
[program]
name = "Test Club"
currency = "IRR"
decimals = 0
timezone = "UTC"
phone_region = "IR"
point_value = 100

[earning]
spend = 1000
points = 1

[expiry]
mode = "never"
"""


def pytest_report_header(config: pytest.Config) -> str:
    return f"loyaltyctl test backend: {BACKEND}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_engine() -> Iterator[Any]:
    if not PG_URL:
        yield None
        return
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    upgrade(engine)
    yield engine
    engine.dispose()


class Club:
    """A club under test: its config file, its database, and a CLI runner bound to both."""

    def __init__(self, root: Path, db_url: str) -> None:
        self.root = root
        self.config_path = root / "loyalty.toml"
        self.db_url = db_url
        self.runner = CliRunner()
        self._engine = None

    def write_config(self, toml_text: str) -> Club:
        self.config_path.write_text(toml_text, encoding="utf-8")
        return self

    def run(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
            global_opts: tuple[str, ...] = ()):  # noqa: ANN201
        argv = ["--config", str(self.config_path), "--db", self.db_url, *global_opts, *args]
        full_env = {"COLUMNS": "160", "LOYALTYCTL_CONFIG": "", "LOYALTYCTL_DB": "",
                    **(env or {})}
        return self.runner.invoke(app, argv, input=input, env=full_env, catch_exceptions=False)

    def ok(self, *args: str, **kw: Any):  # noqa: ANN201
        """Run and assert exit 0, with the output in the failure message."""
        result = self.run(*args, **kw)
        assert result.exit_code == 0, (
            f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    @property
    def engine(self):  # noqa: ANN201
        if self._engine is None:
            self._engine = create_engine(self.db_url)
        return self._engine

    def query(self, sql: str, **params: Any) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def dump(self) -> dict[str, list[tuple]]:
        """Every row of every table, for 'the database is unchanged' assertions."""
        return {t: self.query(f"SELECT * FROM {t} ORDER BY 1") for t in TABLES_IN_ORDER}  # noqa: S608

    def balance(self, code: str) -> int:
        return self.scalar("SELECT balance FROM members WHERE code = :c", c=code)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


@pytest.fixture
def club(tmp_path: Path, sqlite_template: Path, pg_engine: Any) -> Iterator[Club]:
    """A fresh club with SIMPLE_CONFIG and an empty, migrated database."""
    if PG_URL:
        with pg_engine.begin() as conn:
            conn.execute(text("TRUNCATE " + ", ".join(TABLES_IN_ORDER) + " RESTART IDENTITY CASCADE"))
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": SCHEMA_HEAD})
        url = PG_URL
    else:
        db = tmp_path / "loyalty.db"
        shutil.copyfile(sqlite_template, db)
        url = f"sqlite:///{db}"
    c = Club(tmp_path, url).write_config(SIMPLE_CONFIG)
    yield c
    c.close()


@pytest.fixture
def sample_club(club: Club) -> Club:
    """A club running the shipped sample program file."""
    return club.write_config(sample_config_text())


@pytest.fixture
def fresh_db_url(tmp_path: Path, pg_engine: Any) -> Iterator[str]:
    """A URL to an empty database (no schema) on the selected backend."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"loyalty_fresh_{uuid.uuid4().hex[:8]}"
    with pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = pg_engine.url.set(database=name)
    yield base.render_as_string(hide_password=False)
    with pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
