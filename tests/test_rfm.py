"""`reports rfm`: per-member RFM through the CLI, local days, refunds, NTILE scores, segments."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import loyaltyctl.cli.reports_rfm  # noqa: F401 - registers `reports rfm` / `reports clv`
from conftest import PG_URL, SIMPLE_CONFIG, Club
from loyaltyctl.db import lite
from loyaltyctl.db.lite import SessionReader
from loyaltyctl.db.migrate import upgrade
from loyaltyctl.services import rfm
from loyaltyctl.timeutil import local_date, local_midnight_utc

TEHRAN = SIMPLE_CONFIG.replace('timezone = "UTC"', 'timezone = "Asia/Tehran"')
AS_OF = ("--as-of", "2026-03-31")


def _buy(club: Club, code: str, amount: str, at: str, ref: str) -> None:
    club.ok("purchases", "record", code, amount, "--ref", ref, "--at", at)


def _refund(club: Club, ref: str, amount: str | None = None) -> None:
    club.ok("purchases", "refund", ref, "--ref", f"RET-{ref}",
            *(("--amount", amount) if amount else ()))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path,
         pg_engine: Any) -> Iterator[Club]:
    """Members A..I (ids 1..9 in this order) with purchases in Tehran time (+03:30).

    Built once through the CLI into a database of its own (the reports only read it, and
    each test checks that they changed nothing), so the function-scoped `club` of other
    tests never truncates it.
    """
    root = tmp_path_factory.mktemp("shop")
    name = None
    if PG_URL:
        name = f"loyalty_rfm_shop_{uuid.uuid4().hex[:8]}"
        with pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = pg_engine.url.set(database=name).render_as_string(hide_password=False)
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
    else:
        shutil.copyfile(sqlite_template, root / "loyalty.db")
        url = f"sqlite:///{root / 'loyalty.db'}"
    club = Club(root, url).write_config(TEHRAN)
    members = root / "members.csv"
    members.write_text("code,name\n" + "".join(f"{c},Member {c}\n" for c in "ABCDEFGHI"))
    club.ok("members", "import", str(members))
    buys = [
        # A: two purchases on 10 Jan (one day, 150,000), 23:00 on 1 Feb and 01:00 on 2 Feb:
        # the same UTC day (19:30 and 21:30 UTC on 1 Feb) but two local days.
        ("A", "100,000", "2026-01-10 10:00", "A1"), ("A", "50,000", "2026-01-10 20:00", "A2"),
        ("A", "200,000", "2026-02-01 23:00", "A3"), ("A", "300,000", "2026-02-02 01:00", "A4"),
        ("B", "80,000", "2026-03-30 12:00", "B1"),
        # C: 1 Mar refunded in full (does not count), 20 Mar refunded 10,000 of 40,000.
        ("C", "100,000", "2026-01-05 12:00", "C1"), ("C", "100,000", "2026-03-01 12:00", "C2"),
        ("C", "40,000", "2026-03-20 12:00", "C3"),
        # D: one purchase on the as-of day, one after it (not counted).
        ("D", "500,000", "2026-03-31 09:00", "D1"), ("D", "999,999", "2026-04-02 09:00", "D2"),
        ("E", "60,000", "2026-02-10 12:00", "E1"), ("E", "60,000", "2026-02-20 12:00", "E2"),
        ("E", "60,000", "2026-03-10 12:00", "E3"),
        # F: only a fully refunded purchase, so no RFM row; G never buys.
        ("F", "70,000", "2026-03-01 12:00", "F1"),
        ("H", "80,000", "2026-03-30 18:00", "H1"),
        ("I", "250,000", "2026-02-15 12:00", "I1"), ("I", "250,000", "2026-03-15 12:00", "I2"),
    ]
    for code, amount, at, ref in buys:
        _buy(club, code, amount, at, ref)
    _refund(club, "C2")  # in full
    _refund(club, "C3", "10,000")
    _refund(club, "F1")  # in full
    assert club.query("SELECT ref, refunded_amount FROM purchases WHERE refunded_amount > 0"
                      " ORDER BY ref") == [("C2", 100_000), ("C3", 10_000), ("F1", 70_000)]
    assert club.query("SELECT code FROM members ORDER BY id") == [(c,) for c in "ABCDEFGHI"]
    yield club
    club.close()
    if name:
        with pg_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# Expected rows, as-of 2026-03-31 (the reference day), by hand:
#   day totals                 days freq recency age since monetary total
# A 01-10:150k 02-01:200k 02-02:300k  3  2  23 (01-10..02-02) 80  57  (200k+300k)/2=250k 650k
# B 03-30:80k                          1  0   0                1   1   0                  80k
# C 01-05:100k 03-20:30k               2  1  74               85  11   30k               130k
# D 03-31:500k                         1  0   0                0   0   0                 500k
# E 02-10:60k 02-20:60k 03-10:60k      3  2  28               49  21   60k               180k
# H 03-30:80k                          1  0   0                1   1   0                  80k
# I 02-15:250k 03-15:250k              2  1  28               44  16   250k              500k
# Scores: 7 members, NTILE(5) buckets of 2,2,1,1,1 over the ranking worst -> best, ties by id:
# F: (freq,id) B(0,2) D(0,4) | H(0,8) C(1,3) | I(1,9) | A(2,1) | E(2,5)  -> B1 D1 H2 C2 I3 A4 E5
# R: (-since,id) A(-57) E(-21) | I(-16) C(-11) | B(-1,2) | H(-1,8) | D(0) -> A1 E1 I2 C2 B3 H4 D5
# M: (mon,id) B(0,2) D(0,4) | H(0,8) C(30k) | E(60k) | A(250k,1) | I(250k,9) -> B1 D1 H2 C2 E3 A4 I5
# Segments (first rule that matches): A 1-4-4 Can't lose them (R<=2,F>=4,M>=4); B 3-1-1
# Hibernating (R=3); C 2-2-2 Hibernating (R=2,F=2); D 5-1-1 New; E 1-5-3 At risk (R<=2,F>=3,
# M<4); H 4-2-2 Potential loyalist; I 2-3-5 At risk.
EXPECTED = {
    "A": ("2026-01-10", "2026-02-02", 3, 2, 23, 80, 57, 250_000, 650_000, 1, 4, 4, "Can't lose them"),
    "B": ("2026-03-30", "2026-03-30", 1, 0, 0, 1, 1, 0, 80_000, 3, 1, 1, "Hibernating"),
    "C": ("2026-01-05", "2026-03-20", 2, 1, 74, 85, 11, 30_000, 130_000, 2, 2, 2, "Hibernating"),
    "D": ("2026-03-31", "2026-03-31", 1, 0, 0, 0, 0, 0, 500_000, 5, 1, 1, "New"),
    "E": ("2026-02-10", "2026-03-10", 3, 2, 28, 49, 21, 60_000, 180_000, 1, 5, 3, "At risk"),
    "H": ("2026-03-30", "2026-03-30", 1, 0, 0, 1, 1, 0, 80_000, 4, 2, 2, "Potential loyalist"),
    "I": ("2026-02-15", "2026-03-15", 2, 1, 28, 44, 16, 250_000, 500_000, 2, 3, 5, "At risk"),
}
FIELDS = ("first_purchase", "last_purchase", "purchase_days", "frequency", "recency", "age",
          "days_since_last", "monetary", "total_spend", "r", "f", "m", "segment")


def test_rfm_json_matches_hand_computed_rows(shop: Club) -> None:
    before = shop.dump()
    r = shop.ok(*AS_OF, "reports", "rfm", "--format", "json")
    rows = json.loads(r.stdout)
    assert [row["code"] for row in rows] == list(EXPECTED)
    for row in rows:
        assert tuple(row[k] for k in FIELDS) == EXPECTED[row["code"]], row["code"]
        assert all(type(row[k]) is int for k in FIELDS[2:12]), row  # 650000, not 650000.0
        assert row["rfm"] == "".join(str(row[k]) for k in "rfm")
        assert row["name"] == f"Member {row['code']}"
    assert shop.dump() == before  # a report changes nothing


def test_rfm_local_days_differ_from_utc_days(shop: Club) -> None:
    # The premise of A's 3 purchase days: A3 and A4 share a UTC date.
    stored = shop.query("SELECT occurred_at FROM purchases WHERE ref IN ('A3', 'A4') ORDER BY ref")
    as_dt = [v if isinstance(v, datetime) else datetime.fromisoformat(v) for (v,) in stored]
    assert [d.date() for d in as_dt] == [date(2026, 2, 1), date(2026, 2, 1)]
    assert [local_date(d, "Asia/Tehran") for d in as_dt] == [date(2026, 2, 1), date(2026, 2, 2)]


def test_rfm_period_limits_purchases_and_csv(shop: Club) -> None:
    r = shop.ok(*AS_OF, "reports", "rfm", "--from", "2026-02-01", "--format", "csv")
    rows = {row["code"]: row for row in csv.DictReader(io.StringIO(r.stdout))}
    assert set(rows) == set(EXPECTED)
    # A keeps 1 and 2 Feb: first 02-01, 1 repeat day of 300k, age 02-01..03-31 = 58.
    a = rows["A"]
    assert (a["first_purchase"], a["purchase_days"], a["frequency"], a["recency"], a["age"],
            a["monetary"], a["total_spend"]) == ("2026-02-01", "2", "1", "1", "58", "300000", "500000")
    # C keeps only 20 Mar (net 30k).
    c = rows["C"]
    assert (c["first_purchase"], c["frequency"], c["monetary"], c["total_spend"]) == (
        "2026-03-20", "0", "0", "30000")


def test_rfm_period_ending_before_as_of_measures_to_its_end(shop: Club) -> None:
    # Purchases up to 28 Feb; the reference day is 28 Feb, not the as-of date.
    r = shop.ok(*AS_OF, "reports", "rfm", "--to", "2026-02-28", "--format", "json")
    rows = {row["code"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"A", "C", "E", "I"}
    # A: days 01-10, 02-01, 02-02; age 01-10..02-28 = 49, since 02-02..02-28 = 26.
    assert (rows["A"]["age"], rows["A"]["days_since_last"]) == (49, 26)
    # E: 02-10 and 02-20: freq 1, recency 10, age 18, since 8.
    assert (rows["E"]["frequency"], rows["E"]["recency"], rows["E"]["age"],
            rows["E"]["days_since_last"]) == (1, 10, 18, 8)


def test_rfm_segment_filter_sort_summary_and_table(shop: Club) -> None:
    r = shop.ok(*AS_OF, "reports", "rfm", "--segment", "at risk", "--format", "json")
    assert [row["code"] for row in json.loads(r.stdout)] == ["E", "I"]
    r = shop.ok(*AS_OF, "reports", "rfm", "--sort", "spend", "--limit", "3", "--format", "json")
    # Spend: A 650k, then D and I 500k (by code), ...
    assert [row["code"] for row in json.loads(r.stdout)] == ["A", "D", "I"]
    r = shop.ok(*AS_OF, "reports", "rfm", "--summary", "--format", "json")
    summary = {row["segment"]: row for row in json.loads(r.stdout)}
    assert list(summary) == list(rfm.SEGMENTS)
    assert {k: v["members"] for k, v in summary.items() if v["members"]} == {
        "Can't lose them": 1, "At risk": 2, "New": 1, "Potential loyalist": 1, "Hibernating": 2}
    assert summary["At risk"]["total_spend"] == 180_000 + 500_000
    assert summary["Hibernating"]["share"] == round(2 / 7, 4)
    r = shop.ok(*AS_OF, "reports", "rfm")
    assert "Can't lose them" in r.stdout and "650,000" in r.stdout and "2026-02-02" in r.stdout


def test_rfm_csv_is_what_the_generic_renderer_writes(shop: Club, tmp_path: Path) -> None:
    # `reports rfm --format csv` writes its rows itself (for speed): byte for byte what
    # Output.rows(fmt="csv") makes of the same rows, for every sort.
    from loyaltyctl.render import Col, Output

    for sort in ("code", "score", "monetary"):
        r = shop.ok(*AS_OF, "reports", "rfm", "--sort", sort, "--format", "csv")
        rows = json.loads(shop.ok(*AS_OF, "reports", "rfm", "--sort", sort, "--format", "json").stdout)
        assert len(rows) == 7
        target = tmp_path / f"{sort}.csv"
        Output(output=target).rows(rows, fmt="csv", columns=[Col(k) for k in rows[0]])
        assert r.stdout == target.read_text(encoding="utf-8")
    r = shop.ok("--as-of", "2025-12-31", "reports", "rfm", "--format", "csv")
    assert r.stdout == ",".join(rows[0]) + "\n"  # no purchases yet: the header only


def test_rfm_reads_without_sqlalchemy_and_falls_back_to_the_engine(
        shop: Club, monkeypatch: pytest.MonkeyPatch) -> None:
    # The report runs over the read-only DB-API connection: no SQLAlchemy import at all ...
    script = ("import sys\nfrom loyaltyctl.cli.main import app\n"
              "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
              "orm = [m for m in ('sqlalchemy', 'sqlmodel', 'loyaltyctl.db.models') if m in sys.modules]\n"
              "print('ORM', orm, file=sys.stderr)\n")
    env = {**os.environ, "LOYALTYCTL_CONFIG": "", "LOYALTYCTL_DB": ""}
    args = ("--config", str(shop.config_path), "--db", shop.db_url, *AS_OF, "reports", "rfm",
            "--format", "csv")
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                       env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "ORM []" in r.stderr
    expected = shop.ok(*AS_OF, "reports", "rfm", "--format", "csv").stdout
    assert r.stdout == expected and len(expected.splitlines()) == 8
    # ... and through the ORM session, with the same result, when that connection cannot be
    # had (a database URL only the engine handles).
    def unavailable(url: str) -> None:
        raise lite.LiteUnavailable(url)

    monkeypatch.setattr(lite, "connect", unavailable)
    assert shop.ok(*AS_OF, "reports", "rfm", "--format", "csv").stdout == expected


def test_rfm_bad_input_is_refused(shop: Club) -> None:
    before = shop.dump()
    r = shop.run(*AS_OF, "reports", "rfm", "--segment", "Whales")
    assert r.exit_code == 4
    assert "--segment 'Whales' is not a segment" in r.stderr and "Champions" in r.stderr
    r = shop.run(*AS_OF, "reports", "rfm", "--period", "month", "--from", "2026-01-01")
    assert r.exit_code == 4 and "--period cannot be combined" in r.stderr
    r = shop.run(*AS_OF, "reports", "rfm", "--from", "2026-13-01")
    assert r.exit_code == 4 and "--from" in r.stderr
    assert shop.dump() == before


def test_rfm_empty_club(club: Club) -> None:
    r = club.ok(*AS_OF, "reports", "rfm", "--format", "json")
    assert json.loads(r.stdout) == []
    r = club.ok(*AS_OF, "reports", "rfm")
    assert "no members with purchases" in r.stderr


# -- pure parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "expected"), [
    (1, [1]), (3, [1, 2, 3]), (5, [1, 2, 3, 4, 5]), (7, [1, 1, 2, 2, 3, 4, 5]),
    (11, [1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]), (10, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]),
])
def test_ntile_matches_sql_semantics(count: int, expected: list[int]) -> None:
    assert [rfm.ntile(i, count) for i in range(count)] == expected


def test_ntiles_is_ntile_of_every_position() -> None:
    for n in range(0, 32):
        assert rfm.ntiles(n) == [rfm.ntile(i, n) for i in range(n)], n


def test_ntile_agrees_with_the_database(club: Club) -> None:
    # The same NTILE(5) the database computes, for 1..23 rows.
    for n in range(1, 24):
        values = " UNION ALL ".join(f"SELECT {i} AS v" for i in range(n))
        got = [row[0] for row in club.query(
            f"SELECT NTILE(5) OVER (ORDER BY v) FROM ({values}) AS t ORDER BY v")]  # noqa: S608
        assert got == [rfm.ntile(i, n) for i in range(n)], n


def test_every_score_triple_has_exactly_the_documented_segment() -> None:
    seen = {}
    for r in range(1, 6):
        for f in range(1, 6):
            for m in range(1, 6):
                seen[(r, f, m)] = rfm.segment_of(r, f, m)
    assert set(seen.values()) == set(rfm.SEGMENTS)
    assert seen[(5, 5, 5)] == seen[(4, 4, 4)] == "Champions"
    assert seen[(3, 5, 5)] == seen[(5, 4, 3)] == "Loyal"
    assert seen[(2, 4, 4)] == seen[(1, 5, 5)] == "Can't lose them"
    assert seen[(1, 4, 3)] == seen[(2, 3, 5)] == "At risk"
    assert seen[(5, 1, 5)] == seen[(4, 1, 1)] == "New"
    assert seen[(4, 2, 1)] == seen[(3, 3, 5)] == "Potential loyalist"
    assert seen[(3, 1, 5)] == seen[(2, 2, 1)] == "Hibernating"
    assert seen[(2, 1, 5)] == seen[(1, 2, 1)] == seen[(1, 1, 1)] == "Lost"
    # Counts per segment over the 125 triples, from the rules in order:
    # Champions 2*2*2=8; Loyal R3-5,F4-5 minus Champions = 3*2*5-8 = 22; Can't lose 2*2*2=8;
    # At risk R1-2,F3-5 minus Can't lose = 2*3*5-8 = 22; New R4-5,F1 = 2*5 = 10;
    # Potential loyalist R3-5,F2-3 = 3*2*5 = 30; Hibernating R3,F1 (5) + R2,F2 (5) = 10;
    # Lost R2,F1 (5) + R1,F1-2 (10) = 15.
    counts = {s: sum(1 for v in seen.values() if v == s) for s in rfm.SEGMENTS}
    assert counts == {"Champions": 8, "Loyal": 22, "Can't lose them": 8, "At risk": 22,
                      "New": 10, "Potential loyalist": 30, "Hibernating": 10, "Lost": 15}


def test_offset_segments_fixed_and_dst_zones() -> None:
    lo, hi = datetime(2026, 1, 1), datetime(2026, 12, 31)
    assert rfm.utc_offset_segments("UTC", lo, hi) == [(None, 0)]
    assert rfm.utc_offset_segments("Asia/Tehran", lo, hi) == [(None, 12600)]
    # Berlin: CEST from 01:00 UTC on 29 March to 01:00 UTC on 25 October 2026.
    assert rfm.utc_offset_segments("Europe/Berlin", lo, hi) == [
        (None, 3600), (datetime(2026, 3, 29, 1, 0), 7200), (datetime(2026, 10, 25, 1, 0), 3600)]
    # Tehran still had DST in 2021: +04:30 from 00:00 local on 22 March (20:30 UTC on 21 March)
    # to 00:00 local (+04:30) on 22 September (19:30 UTC on 21 September).
    assert rfm.utc_offset_segments("Asia/Tehran", datetime(2021, 1, 1), datetime(2021, 12, 31)) == [
        (None, 12600), (datetime(2021, 3, 21, 20, 30), 16200), (datetime(2021, 9, 21, 19, 30), 12600)]


def test_local_days_monotone_only_without_a_clock_set_back_across_midnight() -> None:
    # DST ends at 00:00 -> 23:00 (Tehran 2021), 03:00 -> 02:00 (Berlin): the date never goes
    # back. Sitka in 1867 went from +14:58:47 to -09:01:13 at 15:30 local: back a whole day.
    for tz, lo, hi in [("Asia/Tehran", datetime(2021, 1, 1), datetime(2021, 12, 31)),
                       ("Europe/Berlin", datetime(2026, 1, 1), datetime(2026, 12, 31)),
                       ("Pacific/Apia", datetime(2011, 12, 1), datetime(2012, 1, 31))]:
        assert rfm.local_days_monotone(rfm.utc_offset_segments(tz, lo, hi)), tz
    sitka = rfm.utc_offset_segments("America/Sitka", datetime(1867, 10, 1), datetime(1867, 11, 1))
    assert sitka == [(None, 53927), (datetime(1867, 10, 19, 0, 31, 13), -32473)]
    assert not rfm.local_days_monotone(sitka)


def _insert_purchases(club: Club, members: list[list[tuple[datetime, int]]]) -> None:
    """Members 1..n, member i + 1 buying at the (instant, amount) pairs of members[i]."""
    from sqlalchemy import insert
    from sqlmodel import Session

    from loyaltyctl.db.models import Member, Purchase

    stamp = datetime(2020, 1, 1)
    with Session(club.engine) as s:
        s.execute(insert(Member.__table__), [
            {"id": i + 1, "code": f"M{i:04d}", "name": "x", "joined_at": stamp, "status": "active",
             "tags": "", "balance": 0, "pending": 0, "created_at": stamp, "updated_at": stamp}
            for i in range(len(members))])
        s.execute(insert(Purchase.__table__), [
            {"member_id": i + 1, "ref": f"P{i}-{k}", "amount": amount, "currency": "IRR",
             "occurred_at": at, "refunded_amount": 0, "points": 0, "created_at": stamp}
            for i, buys in enumerate(members) for k, (at, amount) in enumerate(buys)])
        s.commit()


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Asia/Tehran",
                                "Australia/Lord_Howe", "Pacific/Chatham", "America/Sitka"])
def test_sql_local_days_equal_python_local_days(club: Club, tz: str) -> None:
    """Around offset changes and to the microsecond at local midnight, SQL's purchase days,
    first and last day and first-day total (what monetary leaves out) are Python's."""
    from sqlmodel import Session

    centres = [datetime(2021, 3, 21, 20, 0), datetime(2021, 9, 21, 19, 0),
               datetime(2026, 3, 29, 0, 30), datetime(2026, 10, 25, 0, 30),
               datetime(2026, 3, 8, 6, 30), datetime(2026, 11, 1, 5, 30),
               datetime(2026, 4, 4, 14, 30), datetime(2026, 10, 3, 15, 0),
               datetime(2026, 9, 26, 13, 30), datetime(2026, 4, 5, 13, 30),
               datetime(1867, 10, 19, 0, 30)]  # Sitka's day back
    singles = sorted({c + timedelta(minutes=15 * k) for c in centres for k in range(-8, 9)})
    # Local midnight to the microsecond (SQLite's own date() rounds to the millisecond).
    midnight = local_midnight_utc(date(2026, 6, 1), tz)
    edges = [midnight + timedelta(microseconds=us) for us in (-1000, -400, -1, 0, 1)]
    members = [[(at, 1000)] for at in singles + edges]
    # Groups: every 45 minutes for 24 hours around each centre (two or three local days),
    # different amounts; and two purchases either side of local midnight.
    members += [[(c + timedelta(minutes=45 * k), 1000 + 37 * (k + 16)) for k in range(-16, 17)]
                for c in centres]
    members.append([(at, 100 * (i + 1)) for i, at in enumerate(edges)])
    _insert_purchases(club, members)
    with Session(club.engine) as s:
        rows = rfm.member_rfm(reader=SessionReader(s), tz=tz, reference_day=date(2027, 1, 1),
                              start=None, end=datetime(2027, 1, 1))
    with lite.connect(club.db_url) as db:  # the CLI's read-only connection: the same rows
        assert rfm.member_rfm(reader=db, tz=tz, reference_day=date(2027, 1, 1),
                              start=None, end=datetime(2027, 1, 1)) == rows
    assert len(rows) == len(members)
    for row, buys in zip(rows, members, strict=True):
        totals: dict[date, int] = {}
        for at, amount in buys:
            totals[local_date(at, tz)] = totals.get(local_date(at, tz), 0) + amount
        first, last = min(totals), max(totals)
        got = (row.first_purchase, row.last_purchase, row.purchase_days, row.total_spend,
               row.repeat_spend)
        assert got == (first, last, len(totals), sum(totals.values()),
                       sum(totals.values()) - totals[first]), (row.member_id, buys)
    # The premise: the groups span several local days, and the edges straddle midnight.
    assert all(r.purchase_days >= 2 for r in rows[-len(centres) - 1:])
    assert [local_date(at, tz) for at in edges] == [date(2026, 5, 31)] * 3 + [date(2026, 6, 1)] * 2


def test_first_day_total_stops_at_the_as_of_instant(club: Club) -> None:
    """A period ending inside a member's first day counts only that day's earlier purchases."""
    from sqlmodel import Session

    club.write_config(TEHRAN)
    # Tehran +03:30: 10:00, 11:30 and 16:00 local on 31 March; 09:00 local on 2 April.
    at = [datetime(2026, 3, 31, 6, 30), datetime(2026, 3, 31, 8, 0), datetime(2026, 3, 31, 12, 30),
          datetime(2026, 4, 2, 5, 30)]
    _insert_purchases(club, [[(at[0], 100), (at[1], 20), (at[2], 3), (at[3], 4000)]])
    with Session(club.engine) as s:
        # Up to 12:00 local on 31 March (08:30 UTC): 100 + 20 on one day.
        (row,) = rfm.member_rfm(reader=SessionReader(s), tz="Asia/Tehran",
                                reference_day=date(2026, 3, 31),
                                start=None, end=datetime(2026, 3, 31, 8, 30))
        assert (row.purchase_days, row.total_spend, row.repeat_spend) == (1, 120, 0)
        # From 11:00 local (07:30 UTC), to the end: 20 + 3 on 31 March, 4,000 on 2 April.
        (row,) = rfm.member_rfm(reader=SessionReader(s), tz="Asia/Tehran",
                                reference_day=date(2026, 4, 30),
                                start=datetime(2026, 3, 31, 7, 30), end=datetime(2026, 4, 30))
        assert (row.first_purchase, row.purchase_days, row.total_spend, row.repeat_spend) == (
            date(2026, 3, 31), 2, 4023, 4000)
    r = club.ok("--as-of", "2026-03-31T12:00", "reports", "rfm", "--format", "json")
    (row,) = json.loads(r.stdout)
    assert (row["purchase_days"], row["total_spend"], row["monetary"]) == (1, 120, 0)
