"""`points balance` and `members show` without SQLAlchemy: the read-only path (db/lite.py,
services/lookup.py), its fall-back to the ORM when pending points are due, its errors, and
that it gives what the ORM path gives for every member of a varied club, on both backends.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import pytest

from conftest import PG_URL, SIMPLE_CONFIG, Club
from loyaltyctl.db import lite
from loyaltyctl.db.engine import SCHEMA_HEAD
from loyaltyctl.db.lite import LiteUnavailable, prepare

TIERS = """
[tiers]
metric = "spend"
window_days = 365

[[tiers.levels]]
code = "bronze"
name = "Bronze"
threshold = 0
retention_days = 0

[[tiers.levels]]
code = "silver"
name = "Silver"
threshold = 100000
retention_days = 90

[[tiers.levels]]
code = "gold"
name = "Gold"
threshold = 500000
retention_days = 180
"""
# 1 point per 1,000 IRR (a point is worth 100 IRR), points pending 7 days, then valid 30 days;
# referrals pay on the friend's first purchase; tiers on spend over 365 days.
VARIED = SIMPLE_CONFIG.replace('mode = "never"', 'mode = "rolling"\ndays = 30').replace(
    "points = 1\n", "points = 1\npending_days = 7\n", 1) + """
[bonuses.referral]
referrer_points = 20
referee_points = 10
trigger = "first_purchase"
""" + TIERS

ORM_MODULES = ("sqlalchemy", "sqlmodel", "alembic")
# Runs the CLI in a fresh interpreter and reports which ORM modules it imported.
FRESH = (
    "import sys\n"
    "try:\n"
    "    from loyaltyctl.cli.main import app\n"
    "    app(sys.argv[1:])\n"
    "finally:\n"
    f"    heavy = sorted(m for m in {ORM_MODULES!r} if m in sys.modules)\n"
    "    print('ORM-MODULES', ','.join(heavy) or '-', file=sys.stderr)\n"
)


def fresh(c: Club, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str, str]:
    """(exit code, stdout, stderr, ORM modules imported) of one CLI run in a new process."""
    full_env = {**os.environ, "COLUMNS": "100", "LOYALTYCTL_CONFIG": "", "LOYALTYCTL_DB": "",
                **(env or {})}
    r = subprocess.run([sys.executable, "-c", FRESH, "--config", str(c.config_path),
                        "--db", c.db_url, *args],
                       capture_output=True, text=True, env=full_env, timeout=120, check=False)
    err, _, mods = r.stderr.rpartition("ORM-MODULES ")
    return r.returncode, r.stdout, err, mods.strip()


@pytest.fixture
def ann(club: Club) -> Club:
    """A1 with contact data and a purchase whose 50 points are pending until the end of
    2026-03-08 (bought 2026-03-01, held 7 days); B1 with 30 points, 20 of them expiring."""
    c = club.write_config(VARIED)
    c.ok("--as-of", "2026-03-01", "members", "add", "A1", "Ann Amini", "--phone", "0912 345 6789",
         "--email", "ann@example.com", "--card", "6037-0001")
    c.ok("--as-of", "2026-03-01", "purchases", "record", "A1", "50,000", "--ref", "T1")
    c.ok("--as-of", "2026-03-01", "members", "add", "B1", "Bob Bahrami")
    c.ok("--as-of", "2026-03-01", "points", "adjust", "B1", "+20", "--reason", "welcome",
         "--expires", "2026-03-20")
    c.ok("--as-of", "2026-03-01", "points", "adjust", "B1", "+10", "--reason", "later",
         "--expires", "2026-06-01")
    return c


# -- no ORM in the common case -----------------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [
    (("points", "balance", "B1"), "available  30 points = 3,000 IRR\n"
                                  "expiring   20 points within 30 days (next on 2026-03-20)"),
    (("points", "balance", "۰۹۱۲ ۳۴۵ ۶۷۸۹", "-f", "json"), '"pending": 50'),
    (("members", "show", "6037 0001"), "Ann Amini"),
    (("members", "show", "ANN@example.com", "-f", "json"), '"code": "A1"'),
])
def test_look_ups_do_not_import_the_orm(ann: Club, args: tuple[str, ...], expected: str) -> None:
    before = ann.dump()
    code, out, err, orm = fresh(ann, "--as-of", "2026-03-05", *args)
    assert code == 0, err
    assert expected in out
    assert orm == "-", f"imported {orm}"
    assert ann.dump() == before  # a look-up writes nothing


def test_balance_figures_on_the_fast_path(ann: Club) -> None:
    # B1: 20 points expire on 2026-03-20 (within 30 days of 2026-03-05), 10 on 2026-06-01.
    info = json.loads(ann.ok("--as-of", "2026-03-05", "points", "balance", "B1", "-f", "json").stdout)
    assert info == {"member": "B1", "name": "Bob Bahrami", "status": "active", "tier": "bronze",
                    "available": 30, "pending": 0, "expiring_soon": 20,
                    "expiring_within_days": 30, "next_expiry": "2026-03-20", "value": 3000,
                    "currency": "IRR"}
    # On 2026-03-25 the 20 points are past their date but not yet closed by the nightly
    # expiry: 30 on the books, 10 can be spent, nothing expires within 30 days.
    info = json.loads(ann.ok("--as-of", "2026-03-25", "points", "balance", "B1", "-f", "json").stdout)
    assert (info["available"], info["expiring_soon"], info["next_expiry"]) == (10, 0, "2026-06-01")
    assert ann.balance("B1") == 30


# -- pending points that are due: the ORM path, which activates them ------------------------------


@pytest.mark.parametrize("command", [("points", "balance"), ("members", "show")])
def test_due_pending_points_take_the_orm_path_and_become_available(
        ann: Club, command: tuple[str, str]) -> None:
    # Not due yet on 2026-03-07: the fast path, nothing written.
    before = ann.dump()
    code, out, err, orm = fresh(ann, "--as-of", "2026-03-07", *command, "A1", "-f", "json")
    assert (code, orm) == (0, "-"), err
    assert json.loads(out)["pending"] == 50
    assert ann.dump() == before
    # Due at the end of 2026-03-08: activated through the ledger (the ORM), then shown available.
    code, out, err, orm = fresh(ann, "--as-of", "2026-03-08", *command, "A1", "-f", "json")
    assert code == 0, err
    assert "sqlalchemy" in orm
    data = json.loads(out)
    assert (data["available"], data["pending"]) == (50, 0)
    assert ann.query("SELECT balance, pending FROM members WHERE code = 'A1'") == [(50, 0)]
    assert ann.query("SELECT count(*) FROM ledger_entries le JOIN members m ON m.id = le.member_id"
                     " WHERE m.code = 'A1' AND le.pending_until IS NOT NULL") == [(0,)]
    # Then the next look-up is fast again.
    code, out, err, orm = fresh(ann, "--as-of", "2026-03-09", *command, "A1", "-f", "json")
    assert (code, orm) == (0, "-"), err
    assert json.loads(out)["available"] == 50


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("points", "balance"), ("members", "show")])
def test_unknown_member_exits_3_naming_the_key(ann: Club, command: tuple[str, str]) -> None:
    before = ann.dump()
    for key in ("NOPE", "۰۹۹۹ ۰۰۰ ۰۰۰۰", "nobody@example.com"):
        r = ann.run(*command, key)
        assert r.exit_code == 3, r.output
        assert f"Error: no member matches {key!r}" in r.stderr and r.stdout == ""
        assert "members search" in r.stderr
    assert ann.dump() == before


def _orm_error(c: Club, *global_opts: str) -> Any:
    """The same failure through a command that always uses the engine."""
    return c.run("points", "history", "A1", global_opts=global_opts)


@pytest.mark.parametrize("command", [("points", "balance"), ("members", "show")])
def test_outdated_schema_says_what_the_engine_says(ann: Club, command: tuple[str, str]) -> None:
    with ann.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    r = ann.run(*command, "A1")
    assert r.exit_code == 1 and r.stdout == ""
    assert f"is at schema revision 0000, this loyaltyctl needs {SCHEMA_HEAD}" in r.stderr
    assert "loyaltyctl db upgrade" in r.stderr
    assert r.stderr == _orm_error(ann).stderr


@pytest.mark.parametrize("command", [("points", "balance"), ("members", "show")])
def test_database_not_initialised_or_missing(club: Club, fresh_db_url: str,
                                            command: tuple[str, str]) -> None:
    """A database without tables (a missing SQLite file: the engine's message, as before)."""
    r = club.run(*command, "A1", global_opts=("--db", fresh_db_url))
    assert r.exit_code == 1 and r.stdout == ""
    assert "is not initialised" in r.stderr and "loyaltyctl init" in r.stderr
    assert r.stderr == _orm_error(club, "--db", fresh_db_url).stderr


def test_an_empty_sqlite_file_is_not_initialised(club: Club) -> None:
    empty = club.root / "empty.db"
    empty.write_bytes(b"")
    r = club.run("points", "balance", "A1", global_opts=("--db", str(empty)))
    assert r.exit_code == 1 and "is not initialised" in r.stderr
    assert empty.read_bytes() == b""  # opened read-only
    assert r.stderr == _orm_error(club, "--db", str(empty)).stderr


def test_missing_database_directory_exits_4(club: Club) -> None:
    where = club.root / "no-such-dir" / "loyalty.db"
    r = club.run("members", "show", "A1", global_opts=("--db", str(where)))
    assert r.exit_code == 4
    assert f"database directory {where.parent} does not exist" in r.stderr
    assert not where.parent.exists()


def test_unreachable_server_masks_the_password(club: Club) -> None:
    url = "postgresql+psycopg://loyal:s3cret-pw@127.0.0.1:1/nowhere"
    r = club.run("points", "balance", "A1", global_opts=("--db", url))
    assert r.exit_code == 1
    assert "cannot connect to database postgresql+psycopg://loyal:***@127.0.0.1:1/nowhere" in r.stderr
    assert "s3cret" not in r.output
    assert r.stderr == _orm_error(club, "--db", url).stderr


@pytest.mark.skipif(bool(PG_URL), reason="a SQLite file lock")
def test_a_database_locked_past_the_timeout_exits_6(ann: Club) -> None:
    path = ann.db_url.split(":///", 1)[1]
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        # Exclusive locking mode: once it writes, no other connection may even read.
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE members SET name = name WHERE code = 'A1'")
        r = ann.run("points", "balance", "B1", env={"LOYALTYCTL_BUSY_TIMEOUT": "0.2"})
        assert r.exit_code == 6, r.output
        assert "the database is busy" in r.stderr and "LOYALTYCTL_BUSY_TIMEOUT" in r.stderr
    finally:
        holder.rollback()
        holder.close()


# -- a handful of queries, whatever the ledger size -------------------------------------------------


@pytest.fixture
def lite_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    seen: list[str] = []
    rows = lite.LiteDB.rows

    def counted(self: lite.LiteDB, sql: str, params: Any = None) -> Any:
        if "set_config" not in sql:  # PostgreSQL's lock timeout, once per connection
            seen.append(sql)
        return rows(self, sql, params)

    monkeypatch.setattr(lite.LiteDB, "rows", counted)
    yield seen


def test_a_handful_of_queries_whatever_the_ledger_size(ann: Club, lite_statements: list[str]) -> None:
    asof = ("--as-of", "2026-03-05")
    ann.ok(*asof, "members", "show", "B1")
    small = len(lite_statements)
    for i in range(30):
        ann.ok(*asof, "points", "adjust", "B1", "+1", "--reason", "x", "--ref", f"X{i}")
    lite_statements.clear()
    ann.ok(*asof, "members", "show", "B1")
    # Schema check, look-up (2), referrals, tier metric, balance, expiring, history.
    assert len(lite_statements) == small == 8
    lite_statements.clear()
    ann.ok(*asof, "points", "balance", "B1")
    assert len(lite_statements) == 4  # schema check, look-up (2), balance


# -- the same answers as the ORM path, for every member of a varied club ----------------------------


@pytest.fixture
def varied(club: Club) -> Club:
    """Members in most situations: contact data in odd formats, referrals that bought or were
    refunded, pending points (due and not), partial refunds, redemptions, manual tiers
    (floors), suspended, closed, merged (a chain), a card number equal to another's code."""
    c = club.write_config(VARIED)

    def at(day: str, *args: str) -> None:
        c.ok("--as-of", day, *args)

    at("2026-01-01", "members", "add", "A1", "Ann Amini", "--phone", "0912 345 6789",
       "--email", "Ann@Example.com", "--card", "6037-0001", "--tag", "vip,web",
       "--birth-date", "1990-05-01")
    for code in ("A2", "A3", "A4"):
        at("2026-01-02", "members", "add", code, f"Friend {code}", "--referred-by", "A1")
    at("2026-01-02", "members", "add", "K1", "Card Clash", "--card", "A2")
    for code in ("B1", "M1", "M2", "M3", "F1", "F2", "S1", "X1"):
        at("2026-01-03", "members", "add", code, f"Member {code}")
    at("2026-01-05", "purchases", "record", "A1", "200,000", "--ref", "T1")
    at("2026-01-05", "purchases", "record", "A2", "50,000", "--ref", "T2")
    at("2026-01-05", "purchases", "record", "A3", "30,000", "--ref", "T3")
    at("2026-01-06", "purchases", "refund", "T3", "--ref", "RT3")  # in full, while pending
    at("2026-02-01", "purchases", "record", "A1", "400,000", "--ref", "T4")
    at("2026-02-20", "purchases", "refund", "T4", "--ref", "RT4", "--amount", "100,000")
    for i in range(5):
        at(f"2026-01-1{i}", "purchases", "record", "B1", f"{(i + 1) * 9_000}", "--ref", f"B{i}")
    at("2026-02-15", "points", "redeem", "A1", "20", "--ref", "R1")
    at("2026-02-15", "points", "adjust", "B1", "+7", "--reason", "goodwill",
       "--expires", "2026-02-25")
    at("2026-02-15", "points", "adjust", "B1", "-3", "--reason", "correction")
    for code, amount in (("M1", "10,000"), ("M2", "20,000"), ("M3", "30,000")):
        at("2026-01-20", "purchases", "record", code, amount, "--ref", f"P{code}")
    at("2026-02-01", "members", "merge", "M1", "into", "M2")
    at("2026-02-02", "members", "merge", "M2", "into", "M3")
    at("2026-02-01", "tiers", "set", "F1", "gold", "--until", "2026-06-30", "--reason", "vip")
    at("2026-02-01", "tiers", "set", "F2", "silver", "--until", "2026-02-10", "--reason", "trial")
    at("2026-02-01", "members", "suspend", "S1", "--reason", "card stolen")
    at("2026-02-01", "members", "close", "X1", "--reason", "left")
    at("2026-03-01", "purchases", "record", "B1", "60,000", "--ref", "B9")  # pending to 03-08
    return c


def _codes(c: Club) -> list[str]:
    return [r[0] for r in c.query("SELECT code FROM members ORDER BY id")]


ASOFS = ("2026-03-03", "2026-03-20", "2026-08-01")


def _orm_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(url: str) -> lite.LiteDB:
        raise LiteUnavailable(url)

    monkeypatch.setattr(lite, "connect", unavailable)


def test_fast_path_equals_orm_path_for_every_member(varied: Club,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    codes = _codes(varied)
    assert len(codes) == 13
    commands = [("members", "show", "-f", "json"), ("members", "show"),
                ("members", "show", "-f", "csv"), ("points", "balance", "-f", "json"),
                ("points", "balance")]
    for day in ASOFS:
        # Activate what is due first (the ORM path would on the first look-up anyway).
        for code in codes:
            varied.ok("--as-of", day, "points", "balance", code)
        fast = {(code, cmd): varied.ok("--as-of", day, *cmd[:2], code, *cmd[2:]).stdout
                for code in codes for cmd in commands}
        with monkeypatch.context() as m:
            _orm_only(m)
            slow = {(code, cmd): varied.ok("--as-of", day, *cmd[:2], code, *cmd[2:]).stdout
                    for code in codes for cmd in commands}
        for key in fast:
            assert fast[key] == slow[key], (day, key)
        if day == ASOFS[0]:
            f1 = json.loads(fast[("F1", commands[0])])
            assert (f1["tier"], f1["tier_progress"]["floor"]) == ("gold", "gold")
            # Gold since 2026-02-01, kept 180 days (through 07-30), beyond the floor's 06-30.
            assert f1["tier_kept_through"] == "2026-07-30"
    # The club really is varied (so the comparison above covers these cases).
    a1 = json.loads(fast[("A1", commands[0])])
    assert (a1["referrals"], a1["referred_buyers"], a1["tags"]) == (3, 1, ["vip", "web"])
    m3 = json.loads(fast[("M3", commands[0])])
    assert m3["balance"] == 60 and [e["kind"] for e in m3["recent"]].count("earn") == 3
    assert json.loads(fast[("M1", commands[0])])["merged_into"] == "M2"


@pytest.mark.parametrize("metric", ["spend", "points", "purchases"])
def test_tier_progress_agrees_with_tiers_progress(varied: Club, metric: str) -> None:
    """The screen's progress (lookup.tier_progress, plain SQL) against services.tiers.progress
    (the `tiers progress` command, SQLAlchemy), for every member and several instants."""
    from sqlalchemy import select
    from sqlmodel import Session

    from loyaltyctl.config import parse_config
    from loyaltyctl.db.engine import make_engine
    from loyaltyctl.db.models import Member
    from loyaltyctl.services import lookup, tiers

    import tomllib

    config = parse_config(tomllib.loads(VARIED.replace('metric = "spend"', f'metric = "{metric}"')))
    engine = make_engine(varied.db_url)
    try:
        with lite.connect(varied.db_url) as db, Session(engine) as s:
            members = s.execute(select(Member).order_by(Member.id)).scalars().all()
            for now in (datetime(2026, 1, 5, 12), datetime(2026, 1, 13), datetime(2026, 3, 3),
                        datetime(2026, 6, 30, 23), datetime(2027, 1, 4, 23, 59)):
                values = set()
                for m in members:
                    orm = tiers.progress(session=s, config=config, member=m, now=now)
                    fast = lookup.tier_progress(reader=db, config=config, member=m, now=now)
                    assert fast == {k: orm[k] for k in fast}, (m.code, now)
                    values.add(fast["metric_value"])
                    row = lookup.member_by_id(reader=db, member_id=m.id)
                    assert lookup.tier_progress(reader=db, config=config, member=row, now=now) == fast
                if now == datetime(2026, 3, 3):
                    assert len(values) > 4, values  # the metric does vary between members
    finally:
        engine.dispose()


def test_history_running_balance_matches_the_ledger(varied: Club) -> None:
    """lookup.history against the ledger summed in Python, with and without filters."""
    from loyaltyctl.services import lookup

    varied.ok("--as-of", "2026-03-20", "points", "expire")
    rows = varied.query("SELECT member_id, id, kind, points, pending_until, effective_at"
                        " FROM ledger_entries ORDER BY id")
    ids = [r[0] for r in varied.query("SELECT id FROM members ORDER BY id")]
    since, until = datetime(2026, 1, 6), datetime(2026, 2, 16)
    with lite.connect(varied.db_url) as db:
        for mid in ids:
            running, expected = 0, []
            for member_id, eid, kind, points, pending, at in rows:
                if member_id != mid:
                    continue
                running += points if pending is None else 0
                expected.append((eid, kind, points, running, lookup.as_datetime(at)))
            expected.reverse()
            got = lookup.history(reader=db, member_id=mid, limit=1000)
            assert [(h["id"], h["kind"], h["points"], h["balance"], h["at"]) for h in got] == expected
            got = lookup.history(reader=db, member_id=mid, kinds=["earn", "redeem"],
                                 since=since, until=until, limit=2, offset=1)
            want = [e for e in expected if e[1] in ("earn", "redeem") and since <= e[4] <= until]
            assert [(h["id"], h["balance"]) for h in got] == [(e[0], e[3]) for e in want[1:3]]


def test_keys_resolve_alike_on_both_paths(varied: Club) -> None:
    from sqlmodel import Session

    from loyaltyctl.db.engine import make_engine
    from loyaltyctl.services import lookup
    from loyaltyctl.services.members import resolve_members_bulk

    expected = {
        "A1": "A1", " a1 ": None, "6037 0001": "A1", "6037-0001": "A1", "60370001": "A1",
        "0912 345 6789": "A1", "۰۹۱۲۳۴۵۶۷۸۹": "A1", "+98 912-345-6789": "A1",
        "00989123456789": "A1", "989123456789": "A1", "ANN@example.COM": "A1",
        " ann@example.com ": "A1", "A2": "A2",  # A2 is a code and K1's card: the code wins
        "a2": "K1",  # not a code, but the card number A2
        "K1": "K1", "M1": "M1", "۰۹۹۹ ۰۰۰ ۰۰۰۰": None, "nobody@example.com": None, "": None,
    }
    engine = make_engine(varied.db_url)
    try:
        with lite.connect(varied.db_url) as db, Session(engine) as s:
            code_of = dict(db.rows("SELECT id, code FROM members"))
            for follow in (False, True):
                fast = lookup.resolve_keys(reader=db, keys=list(expected), region="IR",
                                           follow_merged=follow)
                orm = resolve_members_bulk(session=s, keys=list(expected), region="IR",
                                           follow_merged=follow)
                assert fast == orm
                got = {k: code_of[fast[k]] if k in fast else None for k in expected}
                want = dict(expected, M1="M3") if follow else expected
                assert got == want
    finally:
        engine.dispose()
    # Through the CLI: a merged member is shown as itself, with what it was merged into.
    data = json.loads(varied.ok("members", "show", "M1", "-f", "json").stdout)
    assert (data["code"], data["status"], data["merged_into"]) == ("M1", "closed", "M2")


# -- SQL translation ----------------------------------------------------------------------------


def test_prepare_translates_parameters_once_for_both_drivers() -> None:
    sql = "SELECT a::text FROM t WHERE b = :b AND c IN :cs AND d IN :none AND e LIKE '5%' AND f = :b"
    at = datetime(2026, 3, 1, 12, 30)
    text, values = prepare(sql, {"b": at, "cs": [date(2026, 1, 2), "x"], "none": []}, "sqlite")
    assert text == ("SELECT a::text FROM t WHERE b = :b AND c IN (:cs__0, :cs__1)"
                    " AND d IN (NULL) AND e LIKE '5%' AND f = :b")
    # As SQLAlchemy stores them in SQLite, so text comparisons agree.
    assert values == {"b": "2026-03-01 12:30:00.000000", "cs__0": "2026-01-02", "cs__1": "x"}
    text, values = prepare(sql, {"b": at, "cs": (1, 2), "none": []}, "postgresql")
    assert text == ("SELECT a::text FROM t WHERE b = %(b)s AND c IN (%(cs__0)s, %(cs__1)s)"
                    " AND d IN (NULL) AND e LIKE '5%%' AND f = %(b)s")
    assert values == {"b": at, "cs__0": 1, "cs__1": 2}
    with pytest.raises(KeyError, match=":b"):
        prepare("SELECT :b", {}, "sqlite")


def test_connect_leaves_urls_it_does_not_handle_to_the_engine(tmp_path: Any) -> None:
    for url in ("sqlite://", "sqlite:///:memory:", f"sqlite:///{tmp_path / 'missing.db'}",
                "mysql+pymysql://u@h/db", "postgresql+asyncpg://u@h/db"):
        with pytest.raises(LiteUnavailable):
            lite.connect(url)
    assert not (tmp_path / "missing.db").exists()
