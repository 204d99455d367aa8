"""Security: private files, no database password in any output, personal data redacted in
the audit trail, and no SQL built by formatting input into a string."""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from typer.testing import CliRunner

from conftest import Club
from loyaltyctl.cli.context import AppContext
from loyaltyctl.cli.main import app
from loyaltyctl.errors import LoyaltyError
from loyaltyctl.pii import redact
from loyaltyctl.services import dbinfo

SRC = Path(__file__).resolve().parent.parent / "src" / "loyaltyctl"
SECRET = "s3cretpw"
BAD_URL = f"postgresql+psycopg://user:{SECRET}@127.0.0.1:1/x"  # nothing listens on port 1


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# -- files readable by their owner only ----------------------------------------------------


def test_new_sqlite_file_from_init_is_private_even_with_an_open_umask(tmp_path: Path) -> None:
    db = tmp_path / "newfile.db"
    with umask(0):
        r = CliRunner().invoke(app, ["--db", str(db), "init", str(tmp_path / "club")],
                               env={"LOYALTYCTL_CONFIG": "", "LOYALTYCTL_DB": ""},
                               catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_backup_file_is_private_even_with_an_open_umask(club: Club, tmp_path: Path) -> None:
    target = tmp_path / "b.backup"
    with umask(0):
        club.ok("db", "backup", str(target))
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


# -- database passwords never shown --------------------------------------------------------

COMMANDS = [
    ("db", "stats"),
    ("db", "check"),
    ("db", "upgrade"),
    ("db", "backup", "{tmp}/b.dump"),
    ("init", "{tmp}/club"),
    ("audit", "list"),
]


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("via", ["option", "env"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_password_never_appears_in_output(club: Club, tmp_path: Path, command, via, debug) -> None:
    args = [a.format(tmp=tmp_path) for a in command]
    argv = ["--config", str(club.config_path)] + (["--debug"] if debug else [])
    env = {"LOYALTYCTL_CONFIG": "", "LOYALTYCTL_DB": BAD_URL if via == "env" else ""}
    if via == "option":
        argv += ["--db", BAD_URL]
    r = CliRunner().invoke(app, argv + args, env=env, catch_exceptions=False)
    assert r.exit_code == 1, (r.exit_code, r.output)
    out = r.stdout + r.stderr
    assert SECRET not in out, out
    assert "Error: " in r.stderr
    # Where the URL is named, it is named masked.
    for url in re.findall(r"postgresql\+psycopg://\S+", out):
        assert url.startswith("postgresql+psycopg://user:***@"), url


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_password_copied_into_an_exception_by_a_library_is_scrubbed(
        club: Club, monkeypatch, debug) -> None:
    """Even if a driver put the URL or the bare password in its message (and traceback)."""
    import loyaltyctl.db.engine as engine_mod

    def leaky_make_engine(url: str):  # noqa: ANN202
        raise RuntimeError(f"cannot reach {url} (password {SECRET!r} rejected)")

    monkeypatch.setattr(engine_mod, "make_engine", leaky_make_engine)
    argv = ["--config", str(club.config_path), "--db", BAD_URL] + (["--debug"] if debug else [])
    r = CliRunner().invoke(app, argv + ["db", "stats"], env={"LOYALTYCTL_CONFIG": ""},
                           catch_exceptions=False)
    assert r.exit_code == 1
    assert SECRET not in r.stdout + r.stderr, r.stderr
    assert "Error: unexpected error: RuntimeError: cannot reach postgresql+psycopg://user:***@" in r.stderr
    assert ("Traceback (most recent call last)" in r.stderr) is debug


def test_pg_dump_gets_the_password_by_environment_and_its_errors_are_masked(
        tmp_path: Path, monkeypatch) -> None:
    engine = create_engine(BAD_URL)  # never connects here
    uri, env = dbinfo.libpq_uri(engine)
    assert SECRET not in uri and uri == "postgresql://user@127.0.0.1:1/x"
    assert env["PGPASSWORD"] == SECRET
    seen: list[list[str]] = []

    def fake_run(cmd, **kw):  # noqa: ANN001, ANN202
        seen.append(cmd)
        assert kw["env"]["PGPASSWORD"] == SECRET
        return subprocess.CompletedProcess(cmd, 1, None,
                                           f"pg_dump: error: {BAD_URL} password={SECRET} failed")

    monkeypatch.setattr(dbinfo.subprocess, "run", fake_run)
    monkeypatch.setattr(dbinfo, "find_pg_tool", lambda name: "/usr/bin/" + name)
    target = tmp_path / "b.dump"
    with pytest.raises(LoyaltyError) as info:
        dbinfo.backup_database(engine=engine, url=BAD_URL, target=target)
    assert SECRET not in " ".join(seen[0])  # not visible to `ps`
    assert SECRET not in str(info.value) and "pg_dump failed (exit 1)" in str(info.value)
    assert not target.exists() and list(tmp_path.iterdir()) == []


# -- personal data redacted in the audit trail ---------------------------------------------

PII_DETAILS = {
    "phone": "+989121234567",
    "email": "sara@example.com",
    "birth_date": "1990-05-01",
    "name": "Sara Ahmadi",
    "tier": "gold",
    "changes": [{"field": "email", "email": "old@example.com"}, {"phone": None}],
    "before": {"phone": "+989120000000", "points": 40},
}


def test_redact_removes_personal_data_at_any_depth() -> None:
    assert redact(PII_DETAILS) == {
        "phone": "[redacted]",
        "email": "[redacted]",
        "birth_date": "[redacted]",
        "name": "[redacted]",
        "tier": "gold",
        "changes": [{"field": "email", "email": "[redacted]"}, {"phone": None}],
        "before": {"phone": "[redacted]", "points": 40},
    }


RAW_VALUES = ["+989121234567", "9121234567", "sara@example.com", "1990-05-01", "Sara Ahmadi",
              "old@example.com", "+989120000000"]


def test_audit_row_written_through_the_app_redacts_personal_data(club: Club) -> None:
    a = AppContext(config_opt=club.config_path, db_opt=club.db_url, actor="support-7")
    try:
        with a.session(write=True) as s:
            a.audit(s, command="members update", target="C1", rows=1, details=PII_DETAILS)
    finally:
        a.dispose()
    rows = club.query("SELECT actor, command, target, rows, details FROM audit_log")
    assert [r[:4] for r in rows] == [("support-7", "members update", "C1", 1)]
    stored = json.loads(rows[0][4])
    assert stored == json.loads(json.dumps(redact(PII_DETAILS)))
    row_text = repr(rows)
    for value in RAW_VALUES:
        assert value not in row_text


def test_real_command_audit_row_has_no_personal_data(club: Club) -> None:
    club.ok("members", "add", "C1", "Sara Ahmadi", "--phone", "0912-123-4567",
            "--email", "Sara@Example.com", "--birth-date", "1990-05-01")
    rows = club.query("SELECT command, target, details FROM audit_log")
    assert [(c, t) for c, t, _ in rows] == [("members add", "C1")]
    for value in RAW_VALUES + ["0912-123-4567", "Sara@Example.com"]:
        assert value not in repr(rows), value
    # The member itself is stored in full: only the audit trail is redacted.
    assert club.query("SELECT phone, email FROM members") == [("+989121234567", "sara@example.com")]


# -- SQL is parameterised ------------------------------------------------------------------

SQL_CALLS = {"text", "execute", "executemany", "executescript", "exec_driver_sql", "copy"}
NOQA = re.compile(r"#\s*noqa:[^#]*\bS608\b(?P<reason>.*)$")


def _is_formatted(node: ast.AST) -> bool:
    """A string built by formatting: an f-string with values, `%` or `.format(`."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return isinstance(node.left, (ast.Constant, ast.JoinedStr)) and isinstance(
            getattr(node.left, "value", ""), str)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "format" and isinstance(node.func.value, (ast.Constant, ast.JoinedStr))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_formatted(node.left) or _is_formatted(node.right)
    return False


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _excused(lines: list[str], node: ast.AST) -> bool:
    """`# noqa: S608` on the statement, with a reason after it or in a comment just above."""
    for no in range(node.lineno, (node.end_lineno or node.lineno) + 1):
        m = NOQA.search(lines[no - 1])
        if not m:
            continue
        if re.search(r"\w", m.group("reason")):
            return True
        above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
        return above.startswith("#")
    return False


def formatted_sql(root: Path) -> tuple[list[str], int]:
    """Every call passing a formatted string to text()/execute()/..., unless excused."""
    found, calls = [], 0
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if not isinstance(node, ast.Call) or _call_name(node) not in SQL_CALLS or not node.args:
                continue
            calls += 1
            if _is_formatted(node.args[0]) and not _excused(lines, node):
                rel = path.relative_to(root.parent)
                found.append((str(rel), node.lineno, lines[node.lineno - 1].strip()))
    return [f"{f}:{no}: {line}" for f, no, line in sorted(found)], calls


def test_the_checker_catches_formatted_sql(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "bad.py").write_text(
        "conn.execute(text(f'SELECT * FROM members WHERE code = {code}'))\n"
        "conn.exec_driver_sql(f'DELETE FROM t WHERE id = {i}')\n"
        "text('SELECT * FROM m WHERE code = %s' % code)\n"
        "text('SELECT * FROM m WHERE code = {}'.format(code))\n"
        "text('SELECT * FROM m WHERE ' + f'code = {code}')\n"
        "conn.execute(text(f'SELECT COUNT(*) FROM {t}'))  # noqa: S608\n"
        "# table names from our constant list\n"
        "conn.execute(text(f'SELECT COUNT(*) FROM {t}'))  # noqa: S608\n"
        "conn.execute(text(f'SELECT COUNT(*) FROM {t}'))  # noqa: S608 - constant table name\n"
        "conn.execute(text('SELECT * FROM m WHERE code = :c'), {'c': code})\n"
    )
    found, calls = formatted_sql(pkg)
    assert [f.split(":")[1] for f in found] == ["1", "2", "3", "4", "5", "6"], found
    assert calls == 14  # execute() and text() on lines 1, 6, 8, 9, 10


# Found when this check was added, in other engineers' modules: fragments joined from
# constants and ints (safe), but not yet marked `# noqa: S608 - reason`. Keyed by file and
# the flagged line's text, so any NEW formatted SQL fails at once. Empty this list as the
# owners annotate their lines.
KNOWN_UNANNOTATED = {
    ("loyaltyctl/services/purchase_import.py",
     'return f"{column} IN (SELECT value FROM json_each(:{name}))"'),
    ("loyaltyctl/services/purchase_import.py",
     'text("SELECT id, code, status, tier, balance, merged_into_id FROM members WHERE "'),
    ("loyaltyctl/services/purchase_import.py",
     'text("SELECT code FROM members WHERE " + self.store._in("code", "codes")),'),
    ("loyaltyctl/services/purchase_import.py",
     'rows = self._fetch("SELECT id, code, status, tier, balance, merged_into_id FROM members "'),
    ("loyaltyctl/services/purchase_import.py",
     'self.conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")'),
    ("loyaltyctl/services/purchase_import.py",
     'self.conn.exec_driver_sql(f"PRAGMA cache_size = {int(self._cache_size)}")'),
    ("loyaltyctl/services/purchase_import.py",
     'with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:  # noqa: S608'),
    ("loyaltyctl/services/purchase_import.py", "self.conn.exec_driver_sql("),
    ("loyaltyctl/services/purchase_import.py",
     'text(f"SELECT COUNT(DISTINCT member_id) FROM purchases WHERE {clause}"),  # noqa: S608'),
}


def _split_known(found: list[str]) -> tuple[list[str], list[str]]:
    new, known = [], []
    for item in found:
        rel, _line, text = item.split(":", 2)
        (known if (rel, text.strip()) in KNOWN_UNANNOTATED else new).append(item)
    return new, known


def test_no_sql_is_built_by_formatting_in_src() -> None:
    found, calls = formatted_sql(SRC)
    new, known = _split_known(found)
    print(f"sql formatting check: {calls} SQL calls scanned in src/, {len(new)} new, "
          f"{len(known)} known unannotated")
    assert not new, "SQL built by string formatting (parameterise it, or mark a constant " \
                    "with `# noqa: S608 - reason`):\n" + "\n".join(new)


def test_ruff_s608_is_clean_on_src() -> None:
    import importlib.util

    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed")
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "S608",
         "--output-format", "concise", str(SRC)],
        capture_output=True, text=True, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    flagged = []
    for m in re.finditer(r"^(?P<file>\S+?\.py):(?P<line>\d+):\d+: S608", proc.stdout, re.M):
        path = Path(m.group("file"))
        text = path.read_text(encoding="utf-8").splitlines()[int(m.group("line")) - 1]
        flagged.append(f"{path.resolve().relative_to(SRC.parent)}:{m.group('line')}:{text}")
    assert proc.returncode == 0 or flagged, proc.stdout
    new, known = _split_known(flagged)
    print(f"ruff S608: {len(new)} new, {len(known)} known unannotated")
    assert not new, "ruff S608:\n" + "\n".join(new)
