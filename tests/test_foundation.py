"""init, config validate/show, db upgrade/stats/check, audit list, the error funnel."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import BACKEND, Club
from loyaltyctl.cli.main import app
from loyaltyctl.db.engine import SCHEMA_HEAD, mask_url
from loyaltyctl.db.migrate import head_revision


def test_schema_head_constant_matches_alembic() -> None:
    assert head_revision() == SCHEMA_HEAD


def test_init_creates_config_and_database(tmp_path, fresh_db_url) -> None:
    runner = CliRunner()
    target = tmp_path / "club"
    r = runner.invoke(app, ["--db", fresh_db_url, "init", str(target)], env={"LOYALTYCTL_CONFIG": ""})
    assert r.exit_code == 0, r.output
    assert (target / "loyalty.toml").read_text().startswith("# loyaltyctl program file")
    assert f"created at schema {SCHEMA_HEAD}" in r.stderr
    # Second run keeps the file and says the database is current.
    r2 = runner.invoke(app, ["--db", fresh_db_url, "init", str(target)], env={"LOYALTYCTL_CONFIG": ""})
    assert r2.exit_code == 0
    assert "kept existing" in r2.stderr and f"already at schema {SCHEMA_HEAD}" in r2.stderr
    r3 = runner.invoke(app, ["--config", str(target / "loyalty.toml"), "--db", fresh_db_url,
                             "--format", "json", "db", "stats"])
    assert r3.exit_code == 0, r3.output
    info = json.loads(r3.stdout)
    assert info["revision"] == SCHEMA_HEAD and info["members_rows"] == 0
    assert info["audit_log_rows"] == 1


@pytest.mark.skipif(BACKEND != "sqlite", reason="file permissions are a SQLite matter")
def test_default_sqlite_file_beside_config_is_private(tmp_path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["init", str(tmp_path)], env={"LOYALTYCTL_CONFIG": "", "LOYALTYCTL_DB": ""})
    assert r.exit_code == 0, r.output
    db = tmp_path / "loyalty.db"
    assert db.exists()
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_commands_refuse_an_uninitialised_database(club: Club, fresh_db_url) -> None:
    r = club.runner.invoke(app, ["--config", str(club.config_path), "--db", fresh_db_url, "db", "check"])
    assert r.exit_code == 1
    assert "not initialised" in r.stderr and "db upgrade" in r.stderr


def test_db_upgrade_on_empty_then_current(club: Club, fresh_db_url) -> None:
    args = ["--config", str(club.config_path), "--db", fresh_db_url, "db", "upgrade"]
    r = club.runner.invoke(app, args)
    assert r.exit_code == 0 and f"upgraded schema (empty) -> {SCHEMA_HEAD}" in r.stderr
    r = club.runner.invoke(app, args)
    assert r.exit_code == 0 and "nothing to do" in r.stderr


def test_older_revision_asks_for_upgrade(club: Club) -> None:
    with club.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    r = club.run("db", "stats")
    assert r.exit_code == 1
    assert "revision 0000" in r.stderr and "loyaltyctl db upgrade" in r.stderr


def test_config_validate_ok_and_show(sample_club: Club) -> None:
    r = sample_club.ok("config", "validate")
    assert "OK (Demo Club, IRR, 4 tiers, 3 rewards, 2 events, 0 campaigns)" in r.stderr
    r = sample_club.ok("config", "show", "--json")
    data = json.loads(r.stdout)
    assert data["tiers"]["levels"][1]["multiplier"] == 1.25
    assert data["earning"]["category_multipliers"]["electronics"] == 0.5
    r = sample_club.ok("config", "show")
    assert '[program]\nname = "Demo Club"' in r.stdout


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[program]\nnmae = 'x'\n", "loyalty.toml: program.nmae: unknown key"),
        ("[earning]\nspend = '100'\n", "loyalty.toml: earning.spend: Input should be a valid integer"),
        ("[earning]\nspend = 0\n", "earning.spend: Input should be greater than 0"),
        ("[program]\ntimezone = 'Mars/Base'\n", "program.timezone: unknown timezone 'Mars/Base'"),
        ("[[tiers.levels]]\ncode='a'\nname='A'\nthreshold=10\n[[tiers.levels]]\ncode='b'\nname='B'\nthreshold=5\n",
         "tiers.levels[1].threshold: 5 must be greater than the threshold of 'a' (10)"),
        ("[[tiers.levels]]\ncode='a'\nname='A'\nthreshold=0\n[[tiers.levels]]\ncode='a'\nname='B'\nthreshold=5\n",
         "tiers.levels[1].code: duplicate tier code 'a'"),
        ("[[rewards]]\ncode='r'\nname='R'\ncost=5\ntiers=['gold']\n", "rewards[0].tiers: unknown tier 'gold'"),
        ("[earning.category_multipliers]\nfood = -1\n", "earning.category_multipliers.food"),
        ("[program\n", "not valid TOML"),
        ("bogus = 1\n", "loyalty.toml: bogus: unknown key"),
    ],
)
def test_config_errors_name_file_and_key(club: Club, toml: str, expected: str) -> None:
    before = club.dump()
    club.write_config(toml)
    r = club.run("config", "validate")
    assert r.exit_code == 4, r.output
    assert expected in r.stderr
    assert "Traceback" not in r.output
    assert club.dump() == before


def test_missing_config_is_explained(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["config", "validate"], env={"LOYALTYCTL_CONFIG": ""})
    assert r.exit_code == 4
    assert "no program file found" in r.stderr and "loyaltyctl init" in r.stderr


def test_db_check_passes_on_empty_and_reports_violation(club: Club) -> None:
    r = club.ok("db", "check")
    assert "invariants hold" in r.stderr
    with club.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("INSERT INTO members (code, name, joined_at, status, tags, balance, pending,"
                          " created_at, updated_at) VALUES ('M1', 'X', '2026-01-01', 'active', '', 5, 0,"
                          " '2026-01-01', '2026-01-01')"))
    r = club.run("db", "check")
    assert r.exit_code == 1
    assert "balance: cached balance equals the sum of the available ledger: M1, 5, 0" in r.stdout


@pytest.mark.skipif(BACKEND != "sqlite", reason="PostgreSQL always enforces foreign keys")
def test_db_check_finds_a_dangling_reference(club: Club) -> None:
    """The nightly expiry writes without SQLite's per-row foreign-key checks; `db check`
    proves the references instead (here one broken by hand, with the checks off)."""
    import sqlite3

    club.ok("members", "add", "M1", "Ali")
    club.ok("purchases", "record", "M1", "250000", "--ref", "T1")
    club.ok("points", "redeem", "M1", "100", "--ref", "R1")
    raw = sqlite3.connect(club.db_url.removeprefix("sqlite:///"))
    raw.execute("UPDATE allocations SET lot_id = 999")
    raw.execute("UPDATE ledger_entries SET purchase_id = 777 WHERE purchase_id IS NOT NULL")
    raw.commit()
    raw.close()
    r = club.run("db", "check")
    assert r.exit_code == 1
    assert "references: every member, lot, purchase" in r.stdout
    assert "allocations, 1, lot_id, 999" in r.stdout and "purchase_id, 777" in r.stdout


@pytest.mark.skipif(BACKEND != "sqlite", reason="a SQLite pragma")
def test_only_a_trusted_bulk_transaction_skips_foreign_key_checks(club: Club) -> None:
    from loyaltyctl.db.engine import make_engine, session_scope

    engine = make_engine(club.db_url)
    try:
        def fk(**kw: bool) -> object:
            with session_scope(engine, **kw) as s:
                return s.connection().exec_driver_sql("PRAGMA foreign_keys").scalar()

        assert fk(write=True, trusted_bulk=True) == 0
        assert fk(write=True) == 1  # the same pooled connection: checked again
        assert fk() == 1
    finally:
        engine.dispose()


def test_audit_list_shows_init_like_rows(club: Club) -> None:
    club.ok("--actor", "sara", "db", "upgrade")  # at head: no row
    r = club.ok("audit", "list", "--format", "json")
    assert json.loads(r.stdout) == []


def test_mask_url_hides_password() -> None:
    assert mask_url("postgresql+psycopg://bob:s3cret@db:5432/x") == "postgresql+psycopg://bob:***@db:5432/x"


def test_unexpected_errors_have_no_traceback_unless_debug(club: Club) -> None:
    r = club.run("--as-of", "not-a-date", "db", "stats")
    assert r.exit_code in (0, 4)


def _command_tree() -> dict[str, Any]:
    """{"loyaltyctl members add": click command, ...}: every leaf command, through the
    click API (list_commands / get_command), which loads the lazily imported groups."""
    from typer.main import get_command

    leaves: dict[str, Any] = {}

    def walk(cmd, path: str, parent) -> None:  # noqa: ANN001
        ctx = cmd.context_class(cmd, info_name=path.rsplit(" ", 1)[-1], parent=parent)
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), f"{path} {name}", ctx)
        else:
            leaves[path] = cmd

    walk(get_command(app), "loyaltyctl", None)
    return leaves


def test_every_command_has_help_with_example() -> None:
    leaves = _command_tree()
    # Every group of the root help is there (loaded on demand), with its commands.
    assert {"loyaltyctl members add", "loyaltyctl points balance", "loyaltyctl reports rfm",
            "loyaltyctl db check", "loyaltyctl init", "loyaltyctl demo"} <= set(leaves)
    assert len(leaves) > 50
    missing = [path for path, cmd in leaves.items() if not cmd.help or "Example:" not in cmd.help]
    assert not missing, f"commands without help and an example line: {missing}"


def test_root_help_lists_every_group_without_importing_them() -> None:
    """`loyaltyctl --help` names every group with its short help and imports no group
    module (start-up: the groups load on first use)."""
    import subprocess
    import sys

    from loyaltyctl.cli.main import GROUPS

    code = ("import sys; sys.argv = ['loyaltyctl', '--help']\n"
            "from loyaltyctl.cli.main import run\n"
            "try:\n    run()\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m.startswith('loyaltyctl.cli.')"
            " or m.split('.')[0] in ('sqlalchemy', 'sqlmodel', 'rich')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    for _module, name, help_ in GROUPS:
        assert f"  {name}" in out and help_ in out, name
    loaded = out.split("LOADED", 1)[1]
    for module, _name, _help in GROUPS:
        assert f"'loyaltyctl.cli.{module}'" not in loaded, module
    assert "sqlalchemy" not in loaded and "sqlmodel" not in loaded and "'rich" not in loaded


_GROUP_COMMANDS = """
import importlib, json, sys
from typer.main import get_command
from loyaltyctl.cli.main import GROUPS, app
if sys.argv[1] == "--all":
    for module, _name, _help in GROUPS:
        importlib.import_module("loyaltyctl.cli." + module)
    names = [name for _m, name, _h in GROUPS]
else:
    names = sys.argv[1:]
root = get_command(app)
ctx = root.context_class(root, info_name="loyaltyctl")
out = {}
for name in names:
    group = root.get_command(ctx, name)
    out[name] = sorted(group.list_commands(root.context_class(group, parent=ctx)))
print(json.dumps(out))
"""


def test_each_group_alone_has_all_its_commands() -> None:
    """Loaded on its own (as `loyaltyctl purchases ...` loads it), every group has the same
    commands as with every module imported: commands that another module registers on a
    group (`purchases refunds-import`, `points reverse`) are not lost."""
    import json
    import subprocess
    import sys

    from loyaltyctl.cli.main import GROUPS

    def run(*args: str) -> dict[str, list[str]]:
        return json.loads(subprocess.run([sys.executable, "-c", _GROUP_COMMANDS, *args],
                                         capture_output=True, text=True, check=True).stdout)

    everything = run("--all")
    assert "refunds-import" in everything["purchases"] and "reverse" in everything["points"]
    for _module, name, _help in GROUPS:
        assert run(name) == {name: everything[name]}, name


def test_a_group_loads_on_first_use(club: Club) -> None:
    """A lazily loaded group runs its commands and its own help like any other."""
    r = club.ok("points", "--help")
    assert "balance" in r.stdout and "expire" in r.stdout
    r = club.run("nosuch")
    assert r.exit_code == 2 and "No such command 'nosuch'" in r.output


def test_migrations_match_the_models(club: Club) -> None:
    """The Alembic head creates exactly the schema models.py describes (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    import loyaltyctl.db.models  # noqa: F401

    with club.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == []


def test_unreachable_server_is_named_not_called_uninitialised(club: Club) -> None:
    r = club.run("--db", "postgresql+psycopg://bob:s3cretpw@127.0.0.1:1/nowhere", "db", "stats")
    assert r.exit_code == 1
    assert "cannot connect to database postgresql+psycopg://bob:***@127.0.0.1:1/nowhere" in r.stderr
    assert "not initialised" not in r.stderr and "s3cretpw" not in r.output


def test_lock_conflicts_are_recognised_as_busy() -> None:
    from loyaltyctl.cli.main import _busy_error

    for text in ("database is locked", "canceling statement due to lock timeout",
                 "deadlock detected\nDETAIL: Process 1 waits for ShareLock"):
        assert _busy_error(Exception(text)), text
    assert not _busy_error(Exception("no such table: members"))


def test_a_reader_that_stops_early_ends_the_command_quietly(club: Club) -> None:
    """`loyaltyctl members show X | head -1`: the closed pipe ends the command with exit 1
    (click's own code for it) and no message or traceback, whichever write meets it."""
    import subprocess
    import sys

    club.ok("members", "add", "M1", "Ali Rezaei")
    for fmt in ("table", "csv"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "loyaltyctl", "--config", str(club.config_path), "--db",
             club.db_url, "--format", fmt, "members", "show", "M1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the first line is written
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 1, err
        assert err == "", (fmt, err)


def test_upgrade_from_the_first_schema_keeps_the_data(club: Club) -> None:
    """A club made by loyaltyctl 0.1.0 (schema 0001) upgrades in place: the data stays, the
    pending index appears, and the commands work again."""
    from sqlalchemy import inspect, text

    from loyaltyctl.db.migrate import alembic_config

    club.ok("members", "add", "M1", "Ali")
    club.ok("purchases", "record", "M1", "250000", "--ref", "T1")
    cfg = alembic_config()
    from alembic import command

    with club.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert "ix_ledger_pending" not in {i["name"] for i in inspect(club.engine).get_indexes("ledger_entries")}
    r = club.run("points", "balance", "M1")
    assert r.exit_code == 1 and "loyaltyctl db upgrade" in r.stderr
    r = club.ok("db", "upgrade")
    assert f"0001 -> {SCHEMA_HEAD}" in r.stderr
    assert "ix_ledger_pending" in {i["name"] for i in inspect(club.engine).get_indexes("ledger_entries")}
    assert club.balance("M1") == 250
    with club.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_HEAD
