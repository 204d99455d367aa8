"""Manager reports on a small club built through the CLI; every number checked by hand.

The club (built once per module through the CLI, then copied into each test's fresh
database) runs in UTC with 1 point per 1,000 rials, points worth 100 rials, points expiring
60 days after they are earned, Bronze (0) and Silver (50,000 spent in 365 days) tiers with
no retention, the ladder at 2 / 3 purchases and 30 active days, and two campaigns:

  spring_x  1-28 Feb, x2 on purchases >= 10,000, budget 10,000, expects 100,000 revenue
  springax  15-28 Feb, +5 flat on any purchase (a decoy: "spring_x" as a LIKE pattern with
            an unescaped "_" would match it)

Timeline (purchases at 10:00 UTC; points; lot expiry = day + 60):
  01-05 A joins                                   (tier: none -> bronze, "initial")
  01-10 P1 A 10,000  -> 10 pts, lot L1 expires 03-11
  01-20 B joins, referred by A
  01-25 P4 B  8,000  ->  8 pts, L4 expires 03-26
  02-03 C joins, acquired by spring_x
  02-05 P6 C 50,000  -> x2 = 100 pts "spring_x", L6 expires 04-06; C bronze -> silver
  02-07 P6 refunded in full: clawback 100 (from L6)
  02-15 D joins, born 1990-04-02, never buys
  02-16 P2 A 20,000  -> x2 + 5 = 45 pts "spring_x,springax", L2 expires 04-17
  02-20 P5 B  8,000  -> below spring_x's minimum: 8 + 5 = 13 pts "springax", L5 exp. 04-21
  03-01 tiers recalc: C silver -> bronze (refunded spend no longer counts)
  03-02 E joins
  03-03 P9 E  5,000  ->  5 pts, L9 expires 05-02
  03-05 P7 C  6,000  ->  6 pts, L7 expires 05-04
  03-10 P8 B  4,000  ->  4 pts, L8 expires 05-09
  03-12 P8 refunded 2,000 of 4,000: clawback 4 x 2,000 / 4,000 = 2 (from L8, left 2)
  03-15 points expire: L1 (A, 10) expires
  03-20 P3 A 30,000  -> 30 pts, L3 expires 05-19; A's 365-day spend 60,000: bronze -> silver
  03-25 A redeems 25: earliest-expiring lot first, L2 45 -> 20
  03-28 E's membership is closed (E keeps its lot L9 of 5; closed members leave the base)

Open lots at 03-31: L4 8 (overdue: expired 03-26 but no expire run since), L2 20, L5 13
(April), L9 5, L7 6, L8 2, L3 30 (May): 84 points outstanding = 221 credited - 25 redeemed
- 10 expired - 102 clawed back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.testing
from sqlalchemy import text

from conftest import PG_URL, Club
from loyaltyctl.db.engine import SCHEMA_HEAD
from loyaltyctl.db.models import TABLES_IN_ORDER

CONFIG = """
[program]
name = "Report Club"
currency = "IRR"
decimals = 0
timezone = "UTC"
phone_region = "IR"
point_value = 100

[earning]
spend = 1000
points = 1

[expiry]
mode = "rolling"
days = 60

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
threshold = 50000
retention_days = 0

[ladder]
repeat_min_purchases = 2
loyal_min_purchases = 3
active_days = 30

[[campaigns]]
code = "spring_x"
name = "Spring double points"
starts = 2026-02-01
ends = 2026-02-28
multiplier = 2
min_amount = 10000
budget = 10000
expected_revenue = 100000

[[campaigns]]
code = "springax"
name = "Late-February flat bonus"
starts = 2026-02-15
ends = 2026-02-28
flat_bonus = 5
"""


# -- speed: build the Typer command tree once for the module, not once per invocation -----


@pytest.fixture(scope="module", autouse=True)
def _cached_command() -> Iterator[None]:
    original = typer.testing._get_command
    cache: dict[int, Any] = {}

    def cached(app: Any) -> Any:
        if id(app) not in cache:
            cache[id(app)] = original(app)
        return cache[id(app)]

    typer.testing._get_command = cached
    yield
    typer.testing._get_command = original


# -- the club, built once through the CLI, copied into each test's database ----------------


def build(c: Club) -> None:
    def at(day: str, *args: str) -> None:
        c.ok("--as-of", day, *args)

    at("2026-01-05", "members", "add", "A", "Ann Alavi", "--joined-at", "2026-01-05")
    at("2026-01-10", "purchases", "record", "A", "10,000", "--ref", "P1", "--at", "2026-01-10T10:00")
    at("2026-01-20", "members", "add", "B", "Bahar Bahrami", "--joined-at", "2026-01-20",
       "--referred-by", "A")
    at("2026-01-25", "purchases", "record", "B", "8,000", "--ref", "P4", "--at", "2026-01-25T10:00")
    at("2026-02-03", "members", "add", "C", "Cyrus Cheraghi", "--joined-at", "2026-02-03",
       "--campaign", "spring_x")
    at("2026-02-05", "purchases", "record", "C", "50,000", "--ref", "P6", "--at", "2026-02-05T10:00")
    refund(c, "2026-02-07", "P6", "R6", None)
    at("2026-02-15", "members", "add", "D", "Dara Daneshvar", "--joined-at", "2026-02-15",
       "--birth-date", "1990-04-02", "--phone", "09121234567", "--email", "Dara@Example.com")
    at("2026-02-16", "purchases", "record", "A", "20,000", "--ref", "P2", "--at", "2026-02-16T10:00")
    at("2026-02-20", "purchases", "record", "B", "8,000", "--ref", "P5", "--at", "2026-02-20T10:00")
    at("2026-03-01", "tiers", "recalc")
    at("2026-03-02", "members", "add", "E", "Elham Ebadi", "--joined-at", "2026-03-02")
    at("2026-03-03", "purchases", "record", "E", "5,000", "--ref", "P9", "--at", "2026-03-03T10:00")
    at("2026-03-05", "purchases", "record", "C", "6,000", "--ref", "P7", "--at", "2026-03-05T10:00")
    at("2026-03-10", "purchases", "record", "B", "4,000", "--ref", "P8", "--at", "2026-03-10T10:00")
    refund(c, "2026-03-12", "P8", "R8", 2000)
    at("2026-03-15", "points", "expire")
    at("2026-03-20", "purchases", "record", "A", "30,000", "--ref", "P3", "--at", "2026-03-20T10:00")
    at("2026-03-25", "points", "redeem", "A", "25", "--ref", "ORDER-1")
    at("2026-03-28", "members", "close", "E")


def refund(c: Club, day: str, purchase: str, ref: str, amount: int | None) -> None:
    args = ["--as-of", day, "purchases", "refund", purchase, "--ref", ref]
    c.ok(*args, *(["--amount", f"{amount:,}"] if amount is not None else []))


Snapshot = dict[str, tuple[list[str], list[tuple]]]


def snapshot(c: Club) -> Snapshot:
    out: Snapshot = {}
    with c.engine.connect() as conn:
        for t in TABLES_IN_ORDER:
            res = conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))  # noqa: S608 - constant
            out[t] = (list(res.keys()), [tuple(r) for r in res])
    return out


def restore(c: Club, snap: Snapshot) -> None:
    with c.engine.begin() as conn:
        for t in TABLES_IN_ORDER:
            cols, rows = snap[t]
            if not rows:
                continue
            stmt = text(f"INSERT INTO {t} ({', '.join(cols)}) "  # noqa: S608 - constant names
                        f"VALUES ({', '.join(':' + k for k in cols)})")
            conn.execute(stmt, [dict(zip(cols, r, strict=True)) for r in rows])
            if PG_URL and "id" in cols:
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "  # noqa: S608
                                  f"(SELECT MAX(id) FROM {t}))"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path, pg_engine: Any) -> Snapshot:
    import shutil

    root = tmp_path_factory.mktemp("reports_build")
    if PG_URL:
        with pg_engine.begin() as conn:
            conn.execute(text("TRUNCATE " + ", ".join(TABLES_IN_ORDER) + " RESTART IDENTITY CASCADE"))
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": SCHEMA_HEAD})
        url = PG_URL
    else:
        shutil.copyfile(sqlite_template, root / "build.db")
        url = f"sqlite:///{root / 'build.db'}"
    c = Club(root, url).write_config(CONFIG)
    try:
        build(c)
        return snapshot(c)
    finally:
        c.close()


@pytest.fixture
def rc(club: Club, built: Snapshot) -> Club:
    """A fresh database holding the report club."""
    club.write_config(CONFIG)
    restore(club, built)
    return club


def report(c: Club, *args: str, as_of: str = "2026-03-31") -> Any:
    r = c.ok("--as-of", as_of, "--format", "json", "reports", *args)
    return json.loads(r.stdout)


# -- the club is what the docstring says --------------------------------------------------


def test_the_club_was_built_as_described(rc: Club) -> None:
    rows = rc.query("SELECT ref, amount, refunded_amount, points, campaign FROM purchases ORDER BY ref")
    assert rows == [
        ("P1", 10000, 0, 10, None), ("P2", 20000, 0, 45, "spring_x,springax"),
        ("P3", 30000, 0, 30, None), ("P4", 8000, 0, 8, None), ("P5", 8000, 0, 13, "springax"),
        ("P6", 50000, 50000, 100, "spring_x"), ("P7", 6000, 0, 6, None),
        ("P8", 4000, 2000, 4, None), ("P9", 5000, 0, 5, None),
    ]
    assert {r[0]: r[1] for r in rc.query("SELECT code, balance FROM members")} == {
        "A": 50, "B": 23, "C": 6, "D": 0, "E": 5}
    assert rc.query("SELECT code, status, tier FROM members ORDER BY code") == [
        ("A", "active", "silver"), ("B", "active", "bronze"), ("C", "active", "bronze"),
        ("D", "active", "bronze"), ("E", "closed", "bronze")]


# -- summary ------------------------------------------------------------------------------


def test_summary_all_time(rc: Club) -> None:
    s = report(rc, "summary")
    assert s["from"] is None and s["to"] == "2026-03-31"
    # Base: A, B, C, D (E is closed). Counted purchases: all but P6 (refunded in full).
    assert (s["members_total"], s["members_active"], s["members_new"]) == (4, 4, 4)
    assert s["purchases"] == 8 and s["active_buyers"] == 4  # A, B, C (P7), E
    # 10,000 + 8,000 + 0 + 20,000 + 8,000 + 5,000 + 6,000 + (4,000 - 2,000) + 30,000
    assert s["revenue"] == 89000 and s["refunded"] == 52000
    # 10 + 8 + 100 + 45 + 13 + 5 + 6 + 4 + 30
    assert s["points_issued"] == 221 and s["issued_earn"] == 221 and s["issued_signup"] == 0
    assert (s["points_redeemed"], s["points_expired"], s["points_clawed_back"]) == (25, 10, 102)
    assert s["points_outstanding"] == 84  # 221 - 25 - 10 - 102 = sum of balances 50+23+6+0+5
    assert s["redemption_rate"] == 0.1131  # 25 / 221
    assert s["liability"] == 8400  # 84 x 100


def test_summary_for_a_range_and_for_the_current_month(rc: Club) -> None:
    s = report(rc, "summary", "--from", "2026-02-01", "--to", "2026-03-31")
    assert s["from"] == "2026-02-01"
    assert s["members_new"] == 2  # C and D (E joined in March but is closed)
    # P2, P5, P9, P7, P8, P3 (P6 refunded): 20,000 + 8,000 + 5,000 + 6,000 + 2,000 + 30,000
    assert (s["purchases"], s["revenue"], s["refunded"]) == (6, 71000, 52000)
    assert s["points_issued"] == 203  # 100 + 45 + 13 + 5 + 6 + 4 + 30
    assert s["redemption_rate"] == 0.1232  # 25 / 203
    m = report(rc, "summary", "--period", "month")
    assert (m["from"], m["to"]) == ("2026-03-01", "2026-03-31")
    # March: P9, P7, P8 (net 2,000), P3; P8's refund is March's; P6's was February's.
    assert (m["purchases"], m["revenue"], m["refunded"], m["active_buyers"]) == (4, 43000, 2000, 4)
    assert (m["points_issued"], m["points_redeemed"], m["points_expired"],
            m["points_clawed_back"]) == (45, 25, 10, 2)
    assert m["members_new"] == 0


def test_summary_as_of_a_past_day_ignores_what_came_later(rc: Club) -> None:
    s = report(rc, "summary", as_of="2026-02-28")
    # Members A-D had joined; purchases P1, P4, P6 (refunded), P2, P5.
    assert (s["members_total"], s["purchases"], s["revenue"]) == (4, 4, 46000)
    assert s["points_issued"] == 176  # 10 + 8 + 100 + 45 + 13
    assert s["points_outstanding"] == 76  # 176 - 100 clawed back
    assert s["points_redeemed"] == 0 and s["redemption_rate"] == 0.0


def test_summary_csv_and_table(rc: Club) -> None:
    r = rc.ok("--as-of", "2026-03-31", "reports", "summary", "--format", "csv")
    header, row = r.stdout.splitlines()
    values = dict(zip(header.split(","), row.split(","), strict=True))
    assert values["revenue"] == "89000" and values["from"] == "" and values["liability"] == "8400"
    t = rc.ok("--as-of", "2026-03-31", "reports", "summary").stdout
    assert "Summary, the beginning to 2026-03-31" in t
    assert "89,000" in t and "11.3%" in t and "8,400" in t
    assert "outstanding │" in t  # the points chart
    assert "│" not in rc.ok("--as-of", "2026-03-31", "reports", "summary", "--no-chart").stdout.split(
        "└")[-1]


def test_period_options_are_checked(rc: Club) -> None:
    before = rc.dump()
    r = rc.run("reports", "summary", "--period", "month", "--from", "2026-01-01")
    assert r.exit_code == 4 and "--period cannot be combined with --from/--to" in r.stderr
    r = rc.run("reports", "summary", "--from", "2026-03-01", "--to", "2026-02-01")
    assert r.exit_code == 4 and "--from 2026-03-01 is after --to 2026-02-01" in r.stderr
    r = rc.run("reports", "summary", "--from", "2026-02-30")
    assert r.exit_code == 4 and "--from" in r.stderr and "not a valid date" in r.stderr
    r = rc.run("reports", "summary", "--period", "week")
    assert r.exit_code == 2
    r = rc.run("--as-of", "2026-03-31", "reports", "revenue", "--from", "2000-01-01")
    assert r.exit_code == 4 and "--from/--to: 315 periods is more than 240" in r.stderr
    assert rc.dump() == before


# -- liability ----------------------------------------------------------------------------


def test_liability_by_expiry_month_and_soon(rc: Club) -> None:
    d = report(rc, "liability")
    assert d["outstanding"] == 84 and d["liability"] == 8400
    assert [(r["month"], r["points"], r["money"]) for r in d["by_month"]] == [
        ("overdue", 8, 800),      # L4: expired 03-26, not closed by a run yet
        ("2026-04", 33, 3300),    # L2 20 + L5 13
        ("2026-05", 43, 4300),    # L9 5 + L7 6 + L8 2 + L3 30
    ]
    assert d["by_month"][1]["share"] == 0.3929  # 33 / 84
    # Until 04-30: overdue 8 + April 33; until 05-30 and 06-29: everything.
    assert [(e["within_days"], e["until"], e["points"]) for e in d["expiring"]] == [
        (30, "2026-04-30", 41), (60, "2026-05-30", 84), (90, "2026-06-29", 84)]


def test_liability_as_of_a_past_day_sees_lots_as_they_were(rc: Club) -> None:
    d = report(rc, "liability", as_of="2026-03-20")
    # The 03-25 redemption had not happened: L2 still 45. L1 had expired (03-15), L8 had
    # lost 2 to the refund (03-12); P3 (03-20 10:00) is in.
    assert d["outstanding"] == 109  # 8 + 45 + 13 + 5 + 6 + 2 + 30
    assert [(r["month"], r["points"]) for r in d["by_month"]] == [
        ("2026-03", 8), ("2026-04", 58), ("2026-05", 43)]
    assert d["expiring"][0] == {"within_days": 30, "until": "2026-04-19", "points": 53,
                                "money": 5300, "share": 0.4862}  # 8 + 45 (L5 is 04-21)


def test_liability_csv_parts_and_chart(rc: Club) -> None:
    r = rc.ok("--as-of", "2026-03-31", "reports", "liability", "--format", "csv", "--part", "expiring")
    assert r.stdout.splitlines() == [
        "within_days,until,points,money,share", "30,2026-04-30,41,4100,0.4881",
        "60,2026-05-30,84,8400,1.0", "90,2026-06-29,84,8400,1.0"]
    r = rc.ok("--as-of", "2026-03-31", "reports", "liability", "--format", "csv")
    assert r.stdout.splitlines()[0] == "month,from,to,points,money,share"
    assert r.stdout.splitlines()[1] == "overdue,,2026-03-31,8,800,0.0952"
    t = rc.ok("--as-of", "2026-03-31", "reports", "liability").stdout
    assert "Outstanding points as of 2026-03-31: 84" in t and "Points by expiry month" in t
    bars = {line.split("│")[0].strip(): line for line in t.splitlines() if "│" in line
            and line.split("│")[0].strip() in ("overdue", "2026-04", "2026-05")}
    # The longest bar is May's (43); April's (33) is shorter, overdue (8) shorter still.
    assert bars["2026-05"].count("█") > bars["2026-04"].count("█") > bars["overdue"].count("█") > 0


# -- tiers --------------------------------------------------------------------------------


def test_tiers_distribution_and_changes(rc: Club) -> None:
    d = report(rc, "tiers", "--from", "2026-02-01", "--to", "2026-03-31")
    # At 03-31: A silver; B, C, D bronze (E closed).
    assert [(r["tier"], r["members"], r["share"], r["upgraded_to"], r["downgraded_to"])
            for r in d["distribution"]] == [("bronze", 3, 0.75, 0, 1), ("silver", 1, 0.25, 2, 0)]
    # In Feb-Mar: C, D and E enrolled (initial bronze); C up 02-05 and down 03-01; A up 03-20.
    assert (d["initial"], d["upgrades"], d["downgrades"]) == (3, 2, 1)
    assert [(r["from_tier"], r["to_tier"], r["direction"], r["changes"]) for r in d["changes"]] == [
        (None, "bronze", "initial", 3), ("bronze", "silver", "up", 2),
        ("silver", "bronze", "down", 1)]


def test_tiers_at_a_past_day_come_from_the_history(rc: Club) -> None:
    d = report(rc, "tiers", "--to", "2026-02-10")
    # On 02-10: A and B bronze, C silver (02-05); D had not joined.
    assert [(r["tier"], r["members"]) for r in d["distribution"]] == [("bronze", 2), ("silver", 1)]
    assert (d["initial"], d["upgrades"], d["downgrades"]) == (3, 1, 0)  # A, B, C; C up


# -- ladder -------------------------------------------------------------------------------


def test_ladder_funnel(rc: Club) -> None:
    d = report(rc, "ladder")
    # A: 3 purchases, last 03-20 (within the 30 days from 03-02), referred B who bought:
    # advocate. B: 3 (P8 only partly refunded), last 03-10: loyal. C: 1 counted (P6 refunded
    # in full): customer. D: none: prospect. E: closed, out of the base.
    assert d["members"] == 4
    assert [(r["stage"], r["members"], r["exactly"], r["share"], r["conversion"])
            for r in d["stages"]] == [
        ("prospect", 4, 1, 1.0, None),
        ("customer", 3, 1, 0.75, 0.75),
        ("repeat", 2, 0, 0.5, 0.6667),
        ("loyal", 2, 1, 0.5, 1.0),
        ("advocate", 1, 1, 0.25, 0.5),
    ]


def test_ladder_active_window_moves_with_as_of(rc: Club) -> None:
    d = report(rc, "ladder", as_of="2026-04-15")
    # Active from 03-17: A (03-20) stays loyal and advocate; B (last 03-10) drops to repeat.
    assert [(r["stage"], r["members"], r["exactly"]) for r in d["stages"]] == [
        ("prospect", 4, 1), ("customer", 3, 1), ("repeat", 2, 1), ("loyal", 1, 0),
        ("advocate", 1, 1)]
    out = rc.root / "ladder.csv"
    r = rc.ok("--as-of", "2026-04-15", "reports", "ladder", "--format", "csv", "--output", str(out))
    assert r.stdout == ""
    assert out.read_text().splitlines() == [
        "stage,members,exactly,share,conversion", "prospect,4,1,1.0,", "customer,3,1,0.75,0.75",
        "repeat,2,1,0.5,0.6667", "loyal,1,0,0.25,0.5", "advocate,1,1,0.25,1.0"]
    t = rc.ok("--as-of", "2026-04-15", "reports", "ladder").stdout
    funnel = [line for line in t.splitlines() if line.startswith(("prospect ", "advocate "))]
    assert funnel[0].endswith("4 (100%)") and funnel[1].endswith("1 (25%)")
    assert funnel[0].count("█") > funnel[1].count("█") > 0


# -- retention ----------------------------------------------------------------------------


def test_retention_per_month_and_cohorts(rc: Club) -> None:
    d = report(rc, "retention", "--from", "2026-01-01", "--to", "2026-03-31")
    # Buyers (counted purchases): Jan A, B; Feb A, B (C's P6 refunded); Mar A, B, C, E.
    assert [(r["period"], r["buyers"], r["previous_buyers"], r["retained"], r["retention_rate"],
             r["churn_rate"]) for r in d["periods"]] == [
        ("2026-01", 2, 0, 0, None, None),
        ("2026-02", 2, 2, 2, 1.0, 0.0),
        ("2026-03", 4, 2, 2, 1.0, 0.0),
    ]
    assert all(r["repeat_rate"] == 0.0 for r in d["periods"])  # nobody bought twice in a month
    # Over Jan-Mar: A and B bought 3 times, C and E once: 2 of 4.
    assert (d["buyers"], d["repeat_buyers"], d["repeat_rate"]) == (4, 2, 0.5)
    # Cohorts by join month (closed E stays in its cohort): Jan A, B; Feb C, D; Mar E.
    assert [(c["cohort"], c["members"], c["shares"]) for c in d["cohorts"]] == [
        ("2026-01", 2, [1.0, 1.0, 1.0]),
        ("2026-02", 2, [0.0, 0.5]),   # Feb: nobody (P6 refunded); Mar: C
        ("2026-03", 1, [1.0]),
    ]


def test_retention_by_quarter_and_cohort_csv(rc: Club) -> None:
    d = report(rc, "retention", "--by", "quarter", "--from", "2025-10-01", "--to", "2026-03-31")
    assert [(r["period"], r["buyers"], r["retained"], r["retention_rate"]) for r in d["periods"]] == [
        ("2025-Q4", 0, 0, None), ("2026-Q1", 4, 0, None)]  # no buyers before: undefined
    assert d["periods"][1]["repeat_buyers"] == 2  # A and B bought 3 times in Q1
    r = rc.ok("--as-of", "2026-03-31", "reports", "retention", "--from", "2026-01-01",
              "--format", "csv", "--part", "cohorts")
    assert r.stdout.splitlines() == [
        "cohort,members,offset,buyers,share",
        "2026-01,2,0,2,1.0", "2026-01,2,1,2,1.0", "2026-01,2,2,2,1.0",
        "2026-02,2,0,0,0.0", "2026-02,2,1,1,0.5",
        "2026-03,1,0,1,1.0",
    ]


def test_retention_over_more_than_sixty_months(club: Club) -> None:
    """Periods beyond the 60th sit in a second bit-mask column: counts across the seam."""
    club.write_config(CONFIG)
    club.ok("--as-of", "2021-01-05", "members", "add", "A", "Ann")
    for day in ("2025-11-10", "2025-12-10", "2025-12-20", "2026-01-10"):
        club.ok("--as-of", day, "purchases", "record", "A", "1,000", "--ref", f"P{day}")
    # 2021-01 .. 2026-01 is 61 months, buckets 1..61 (bucket 0 is 2020-12, the period before):
    # 2025-11 is bucket 59, the last bit of the first column; 2025-12 is bucket 60, the first
    # of the second. Shown indexes: 2025-11 = 58, 2025-12 = 59, 2026-01 = 60.
    d = report(club, "retention", "--from", "2021-01-01", "--to", "2026-01-31",
               as_of="2026-01-31")
    assert len(d["periods"]) == 61
    assert [(r["period"], r["buyers"], r["previous_buyers"], r["retained"], r["repeat_buyers"])
            for r in d["periods"][57:]] == [
        ("2025-10", 0, 0, 0, 0), ("2025-11", 1, 0, 0, 0), ("2025-12", 1, 1, 1, 1),
        ("2026-01", 1, 1, 1, 0)]
    assert (d["buyers"], d["repeat_buyers"]) == (1, 1)  # 4 purchases in the range
    (cohort,) = d["cohorts"]
    assert (cohort["cohort"], cohort["members"]) == ("2021-01", 1)
    assert [k for k, n in enumerate(cohort["buyers"]) if n] == [58, 59, 60]


def test_retention_heat_map_in_a_pipe_is_plain_numbers(rc: Club) -> None:
    t = rc.ok("--as-of", "2026-03-31", "reports", "retention", "--from", "2026-01-01").stdout
    assert "\x1b[" not in t
    rows = {line.split()[0]: line.split()[1:] for line in t.splitlines()
            if line.startswith(("2026-01 ", "2026-02 ", "2026-03 ")) and "%" in line
            and "│" not in line}
    assert rows == {"2026-01": ["2", "100%", "100%", "100%"], "2026-02": ["2", "0%", "50%"],
                    "2026-03": ["1", "100%"]}
    assert "Repeat-purchase rate over the range: 2 of 4 buyers (50.0%)" in t


# -- campaigns ----------------------------------------------------------------------------


def test_campaigns_report(rc: Club) -> None:
    rows = {r["code"]: r for r in report(rc, "campaigns")}
    s = rows["spring_x"]
    # Window 1-28 Feb: P6 (refunded in full), P2, P5. Acquired: C.
    assert (s["acquired"], s["purchases"], s["buyers"], s["revenue"]) == (1, 2, 2, 28000)
    # Tagged spring_x: P6 and P2 ("spring_x,springax"), never P5 ("springax").
    assert s["campaign_purchases"] == 1  # P2; P6 does not count (refunded in full)
    assert s["attributable_revenue"] == 20000  # P2 20,000 + P6 (C, acquired) 0
    assert (s["points_issued"], s["points_clawed_back"], s["points_cost"]) == (145, 100, 4500)
    assert (s["budget"], s["total_cost"], s["expected_revenue"]) == (10000, 14500, 100000)
    assert s["revenue_vs_expected"] == 0.2
    assert s["roi"] == 0.3793  # (20,000 - 14,500) / 14,500
    assert s["cost_per_acquisition"] == 14500  # 14,500 / 1
    assert s["status"] == "ended"
    x = rows["springax"]
    # Window 15-28 Feb: P2 and P5, both tagged springax; points 45 + 13.
    assert (x["purchases"], x["campaign_purchases"], x["attributable_revenue"]) == (2, 2, 28000)
    assert (x["points_issued"], x["points_cost"], x["total_cost"]) == (58, 5800, 5800)
    assert x["roi"] == 3.8276  # (28,000 - 5,800) / 5,800
    assert x["revenue_vs_expected"] is None and x["cost_per_acquisition"] is None


def test_campaigns_filter_and_unknown_code(rc: Club) -> None:
    rows = report(rc, "campaigns", "--campaign", "springax")
    assert [r["code"] for r in rows] == ["springax"]
    assert report(rc, "campaigns", "--from", "2026-03-01", "--to", "2026-03-31") == []
    r = rc.run("reports", "campaigns", "--campaign", "summer")
    assert r.exit_code == 3 and "no campaign 'summer'" in r.stderr and "spring_x" in r.stderr


# -- birthdays ----------------------------------------------------------------------------


def test_birthdays_masked_and_shown_with_audit(rc: Club) -> None:
    rows = report(rc, "birthdays", "--within", "7d")
    # D was born 1990-04-02: two days after 03-31, inside [03-31, 04-07).
    assert rows == [{"code": "D", "name": "Dara Daneshvar", "birthday": "2026-04-02",
                     "in_days": 2, "birth_date": "****-**-**", "phone": "+98912***4567",
                     "email": "d***@example.com", "tier": "bronze"}]
    assert report(rc, "birthdays", "--within", "2d") == []  # 03-31 and 04-01 only
    audits = rc.scalar("SELECT COUNT(*) FROM audit_log WHERE command = 'reports birthdays'")
    assert audits == 0
    rows = report(rc, "birthdays", "--within", "1w", "--show-pii")
    assert rows[0]["birth_date"] == "1990-04-02" and rows[0]["phone"] == "+989121234567"
    assert rc.query("SELECT command, rows, details FROM audit_log WHERE command = 'reports birthdays'") == [
        ("reports birthdays", 1, '{"show_pii": true, "within_days": 7}')]
    r = rc.run("reports", "birthdays", "--within", "soon")
    assert r.exit_code == 4 and "--within" in r.stderr


def test_birthdays_long_listing_drawn_without_rich_table(rc: Club, monkeypatch) -> None:  # noqa: ANN001
    import loyaltyctl.charts

    monkeypatch.setattr(loyaltyctl.charts, "FAST_ROWS", 0)  # every listing counts as long
    t = rc.ok("--as-of", "2026-03-31", "reports", "birthdays").stdout
    lines = t.splitlines()
    assert lines[0].split() == ["Code", "Name", "Birthday", "In", "days", "Born", "Phone",
                                "Email", "Tier"]
    assert lines[1].startswith("────  ") and "│" not in t
    assert lines[2].split() == ["D", "Dara", "Daneshvar", "2026-04-02", "2", "****-**-**",
                                "+98912***4567", "d***@example.com", "bronze"]
    assert len(lines) == 3


# -- top ----------------------------------------------------------------------------------


def test_top_by_spend_points_and_referrals(rc: Club) -> None:
    # Spend net of refunds: A 60,000; B 8,000 + 8,000 + 2,000; C 0 + 6,000; E 5,000.
    assert [(r["rank"], r["code"], r["spend"], r["purchases"]) for r in report(
        rc, "top", "--by", "spend", "--limit", "3")] == [
        (1, "A", 60000, 3), (2, "B", 18000, 3), (3, "C", 6000, 1)]
    # Points net of clawbacks: A 85; B 25 - 2; C 106 - 100; E 5.
    assert [(r["code"], r["points"]) for r in report(rc, "top", "--by", "points")] == [
        ("A", 85), ("B", 23), ("C", 6), ("E", 5)]
    # A referred B (joined 01-20, bought).
    assert [(r["code"], r["referrals"], r["referred_buyers"]) for r in report(
        rc, "top", "--by", "referrals")] == [("A", 1, 1)]
    assert report(rc, "top", "--by", "referrals", "--period", "month") == []
    feb = report(rc, "top", "--from", "2026-02-01", "--to", "2026-02-28")
    assert [(r["code"], r["spend"]) for r in feb] == [("A", 20000), ("B", 8000)]  # C's P6: 0


# -- revenue ------------------------------------------------------------------------------


def test_revenue_by_month(rc: Club) -> None:
    rows = report(rc, "revenue", "--from", "2026-01-01", "--to", "2026-03-31")
    assert [(r["period"], r["purchases"], r["buyers"], r["revenue"], r["points_issued"])
            for r in rows] == [
        ("2026-01", 2, 2, 18000, 18),    # P1, P4
        ("2026-02", 2, 2, 28000, 158),   # P2, P5 (P6 refunded; its 100 points were issued)
        ("2026-03", 4, 4, 43000, 45),    # P9, P7, P8 (net 2,000), P3
    ]
    default = report(rc, "revenue")
    assert len(default) == 12 and default[0]["period"] == "2025-04" and default[-1]["period"] == "2026-03"
    assert sum(r["revenue"] for r in default) == 89000
    t = rc.ok("--as-of", "2026-03-31", "reports", "revenue", "--from", "2026-01-01").stdout
    assert "Revenue" in t and "Points issued" in t and "43,000" in t


def test_tables_and_charts_on_a_terminal(rc: Club) -> None:
    def table(*args: str) -> str:
        return rc.ok("--as-of", "2026-03-31", "reports", *args).stdout

    t = table("tiers", "--from", "2026-02-01")
    assert "3 initial, 2 upgrade(s), 1 downgrade(s)" in t and "Members per tier" in t
    bronze = next(line for line in t.splitlines() if line.startswith("Bronze │"))
    silver = next(line for line in t.splitlines() if line.startswith("Silver │"))
    assert bronze.endswith(" 3") and silver.endswith(" 1")
    # 100 columns (the chart's cap) - "Bronze │" - " 3" - 1 spare = 89 cells for 3 members;
    # 1 member: 89/3 = 29 5/8 cells.
    assert bronze.count("█") == 89 and silver.count("█") == 29 and "█▋ " in silver
    t = table("campaigns")
    assert "Attributable revenue" in t and "37.9%" in t and "14,500" in t
    assert next(line for line in t.splitlines() if line.startswith("springax │")).endswith("28,000")
    t = table("top", "--limit", "2")
    assert "Top 2 by spend, the beginning to 2026-03-31" in t
    assert next(line for line in t.splitlines() if line.startswith("A │")).endswith("60,000")
    t = table("birthdays")
    assert "Dara Daneshvar" in t and "2026-04-02" in t and "****-**-**" in t
    assert "1990" not in t and "1234567" not in t


# -- time zone and Jalali calendar ---------------------------------------------------------

TEHRAN_JALALI = CONFIG.replace('timezone = "UTC"', 'timezone = "Asia/Tehran"\ncalendar = "jalali"')


def test_jalali_months_in_tehran_time(club: Club) -> None:
    club.write_config(TEHRAN_JALALI)
    # 1404-11-30 = 2026-02-19 (the last day of Bahman); 1404-12-01 = 2026-02-20.
    club.ok("--as-of", "1404-11-01", "members", "add", "J", "Jalal", "--joined-at", "1404-11-01",
            "--birth-date", "1399-12-30")
    # 23:00 Tehran on 1404-11-30 is 19:30 UTC: still Bahman. 00:30 Tehran on 1404-12-01 is
    # 21:00 UTC of the day before: already Esfand, though UTC still says 2026-02-19.
    club.ok("--as-of", "1404-11-30", "purchases", "record", "J", "7,000", "--ref", "J1",
            "--at", "1404-11-30T23:00")
    club.ok("--as-of", "1404-12-01", "purchases", "record", "J", "3,000", "--ref", "J2",
            "--at", "1404-12-01T00:30")
    stored = {r[0]: str(r[1])[:16] for r in club.query("SELECT ref, occurred_at FROM purchases")}
    assert stored == {"J1": "2026-02-19 19:30", "J2": "2026-02-19 21:00"}
    rows = report(club, "revenue", "--from", "1404-11-01", "--to", "1404-12-10", as_of="1404-12-10")
    assert [(r["period"], r["from"], r["to"], r["revenue"]) for r in rows] == [
        ("1404-11", "2026-01-21", "2026-02-19", 7000),
        ("1404-12", "2026-02-20", "2026-03-20", 3000),
    ]
    s = report(club, "summary", "--period", "month", as_of="1404-12-10")
    assert (s["from"], s["to"], s["revenue"]) == ("2026-02-20", "2026-03-20", 3000)
    y = report(club, "summary", "--period", "year", as_of="1404-12-10")
    assert (y["from"], y["to"], y["revenue"]) == ("2025-03-21", "2026-03-20", 10000)
    # Born 30 Esfand 1399 (a Jalali leap day, = 2021-03-20): in 1404, a common year, the
    # birthday is 29 Esfand 1404 = 2026-03-20.
    rows = report(club, "birthdays", "--within", "7d", as_of="1404-12-25")
    assert [(r["code"], r["birthday"], r["in_days"]) for r in rows] == [("J", "2026-03-20", 4)]
    t = club.ok("--as-of", "1404-12-25", "reports", "birthdays").stdout
    assert "1404-12-29" in t


def test_jalali_birthday_keeps_its_jalali_day(club: Club) -> None:
    club.write_config(TEHRAN_JALALI)
    # Born 1 Farvardin 1370 = 1991-03-21. In 1403 Nowruz fell on 2024-03-20 (2024 is a
    # Gregorian leap year), so the Jalali birthday is 2024-03-20, a day before 21 March.
    club.ok("--as-of", "1402-12-01", "members", "add", "N", "Nowruz", "--birth-date", "1370-01-01")
    rows = report(club, "birthdays", "--within", "7d", as_of="1402-12-25")  # = 2024-03-15
    assert [(r["code"], r["birthday"], r["in_days"]) for r in rows] == [("N", "2024-03-20", 5)]
    assert report(club, "birthdays", "--within", "5d", as_of="1402-12-25") == []


def test_leap_day_birthday_in_a_common_year(club: Club) -> None:
    club.ok("--as-of", "2026-01-01", "members", "add", "F", "Farah", "--birth-date", "2000-02-29")
    club.ok("--as-of", "2026-01-01", "members", "add", "G", "Goli", "--birth-date", "1999-03-01")
    rows = report(club, "birthdays", "--within", "3d", as_of="2026-02-27")
    # 2026 is a common year: 29 Feb is celebrated on 28 Feb; 1 March follows.
    assert [(r["code"], r["birthday"], r["in_days"]) for r in rows] == [
        ("F", "2026-02-28", 1), ("G", "2026-03-01", 2)]


# -- pure period rules --------------------------------------------------------------------


def test_periods_pure_functions() -> None:
    from datetime import date, datetime

    from loyaltyctl.services.periods import (
        birthday_in_year,
        containing,
        last_periods,
        next_birthday,
        periods_covering,
        resolve,
    )

    q = containing(date(2026, 5, 5), "quarter")
    assert (q.start, q.end, q.label) == (date(2026, 4, 1), date(2026, 6, 30), "2026-Q2")
    # Jalali year 1404: 1 Farvardin 1404 (2025-03-21) to 29 Esfand 1404 (2026-03-20).
    y = containing(date(2026, 3, 20), "year", "jalali")
    assert (y.start, y.end, y.label) == (date(2025, 3, 21), date(2026, 3, 20), "1404")
    # Jalali summer quarter: Tir-Shahrivar 1405 = 2026-06-22 .. 2026-09-22.
    jq = containing(date(2026, 8, 1), "quarter", "jalali")
    assert (jq.start, jq.end, jq.label) == (date(2026, 6, 22), date(2026, 9, 22), "1405-Q2")
    assert [p.label for p in periods_covering(date(2025, 12, 31), date(2026, 2, 1), "month")] == [
        "2025-12", "2026-01", "2026-02"]
    assert [p.label for p in last_periods(date(2026, 1, 15), "quarter", 3)] == [
        "2025-Q3", "2025-Q4", "2026-Q1"]
    # UTC bounds in Tehran (+03:30): Esfand 1404 starts 2026-02-19 20:30 UTC.
    lo, hi = containing(date(2026, 3, 1), "month", "jalali").utc_bounds("Asia/Tehran")
    assert (lo, hi) == (datetime(2026, 2, 19, 20, 30), datetime(2026, 3, 20, 20, 30))
    with pytest.raises(ValueError, match="--period cannot be combined"):
        resolve(today=date(2026, 1, 1), start=date(2025, 1, 1), unit="month")
    assert birthday_in_year(date(2000, 2, 29), 2027) == date(2027, 2, 28)
    assert birthday_in_year(date(2000, 2, 29), 2028) == date(2028, 2, 29)
    assert next_birthday(date(1990, 1, 1), date(2026, 1, 2)) == date(2027, 1, 1)
    # Jalali: 1 Farvardin recurs on Nowruz, whichever Gregorian day that is.
    assert birthday_in_year(date(1991, 3, 21), 1405, "jalali") == date(2026, 3, 21)


def test_campaign_code_matching_is_exact() -> None:
    from loyaltyctl.services.reports import campaign_codes, like_pattern

    assert campaign_codes("spring_x,springax") == ["spring_x", "springax"]
    assert campaign_codes(None) == []
    assert like_pattern("spring_x") == "%,spring\\_x,%"
