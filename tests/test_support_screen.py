"""`members show`: the support screen (look-up by any key, masking, tier progress, points,
expiring points, recent history, referrals, JSON), through the CLI on both backends."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from conftest import SIMPLE_CONFIG, Club

# 1 point per 1,000 IRR, a point is worth 100 IRR, lots expire 30 days after they are earned,
# tiers on spend over 365 days: bronze 0, silver 100,000 (kept 90 days), gold 500,000.
TIERED = SIMPLE_CONFIG.replace('mode = "never"', 'mode = "rolling"\ndays = 30') + """
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

SCREEN_KEYS = {
    "id", "code", "name", "status", "phone", "email", "card_number", "birth_date", "joined_at",
    "tier", "balance", "pending", "tags", "acquisition_campaign", "tier_since", "referred_by",
    "referrals", "referred_buyers", "merged_into", "created_at", "updated_at", "tier_name",
    "tier_kept_through", "tier_progress", "available", "value", "currency", "decimals",
    "expiring_within_days", "expiring_soon", "next_expiry", "expiring", "recent",
}
PROGRESS_KEYS = {"metric", "window_days", "value", "next_tier", "next_tier_name",
                 "next_threshold", "needed_for_next", "keep_threshold", "needed_to_keep",
                 "floor", "floor_until"}
ENTRY_KEYS = {"id", "at", "kind", "points", "balance", "pending_until", "expires_on", "ref",
              "note"}

ASOF = ("--as-of", "2026-03-15")


@pytest.fixture
def sara(club: Club) -> Club:
    """C1 with contact data, five ledger entries and three referrals (one of them bought)."""
    c = club.write_config(TIERED)
    c.ok("--as-of", "2026-01-01", "members", "add", "C1", "Sara Ahmadi", "--phone",
         "0912 345 6789", "--email", "sara@example.com", "--card", "6037-0001",
         "--birth-date", "1990-05-01", "--tag", "vip")
    for code in ("C2", "C3", "C4"):
        c.ok("--as-of", "2026-01-02", "members", "add", code, f"Friend {code}",
             "--referred-by", "C1")
    c.ok("--as-of", "2026-01-05", "purchases", "record", "C2", "5000", "--ref", "F2")
    c.ok("--as-of", "2026-01-05", "purchases", "record", "C4", "5000", "--ref", "F4")
    c.ok("--as-of", "2026-01-06", "purchases", "refund", "F4", "--ref", "RF4")  # in full
    # C1's ledger:        points  expires on   running balance
    c.ok("--as-of", "2026-02-11", "purchases", "record", "C1", "10,000", "--ref", "T0")
    #   T0 earn             +10   2026-03-13   10
    c.ok("--as-of", "2026-03-01", "purchases", "record", "C1", "50,000", "--ref", "T1")
    #   T1 earn             +50   2026-03-31   60
    c.ok("--as-of", "2026-03-10", "purchases", "record", "C1", "80,000", "--ref", "T2")
    #   T2 earn             +80   2026-04-09   140 (spend 140,000 >= 100,000: silver)
    c.ok("--as-of", "2026-03-12", "points", "redeem", "C1", "6", "--ref", "R1")
    #   R1 redeem            -6   (from T0, the earliest-expiring lot: 4 left)   134
    #   (T0's 4 are past their date on 2026-03-15; the nightly expiry has not closed them)
    c.ok("--as-of", "2026-03-14", "points", "adjust", "C1", "+5", "--reason", "goodwill",
         "--expires", "2026-06-01", "--ref", "A1")
    #   A1 adjust            +5   2026-06-01   139
    return c


def show(c: Club, *args: str, env: dict[str, str] | None = None):  # noqa: ANN201
    return c.ok(*ASOF, "members", "show", *args, env=env)


def audit_count(c: Club) -> int:
    return c.scalar("SELECT count(*) FROM audit_log")


# -- look-up ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["C1", "6037 0001", "60370001", "0912 345 6789", "+989123456789",
                                 "۰۹۱۲۳۴۵۶۷۸۹", "۰۹۱۲-۳۴۵-۶۷۸۹", "SARA@Example.com"])
def test_found_by_code_card_phone_persian_digits_and_email(sara: Club, key: str) -> None:
    data = json.loads(show(sara, key, "--format", "json").stdout)
    assert (data["code"], data["name"], data["balance"]) == ("C1", "Sara Ahmadi", 139)


def test_not_found_exits_3_naming_the_key_and_changes_nothing(sara: Club) -> None:
    before = sara.dump()
    r = sara.run(*ASOF, "members", "show", "۰۹۹۹ ۰۰۰ ۰۰۰۰")
    assert r.exit_code == 3
    assert "no member matches '۰۹۹۹ ۰۰۰ ۰۰۰۰'" in r.stderr and r.stdout == ""
    r = sara.run(*ASOF, "members", "show", "nobody@example.com", "--show-pii")
    assert r.exit_code == 3 and "nobody@example.com" in r.stderr
    assert sara.dump() == before  # no audit row for a look-up that found nobody


# -- the data, computed by hand -----------------------------------------------------------------


def test_json_keys_and_values(sara: Club) -> None:
    before = sara.dump()
    data = json.loads(show(sara, "C1", "-f", "json").stdout)
    assert set(data) == SCREEN_KEYS
    assert set(data["tier_progress"]) == PROGRESS_KEYS
    assert all(set(e) == ENTRY_KEYS for e in data["recent"])
    # Masked by default; a missing value stays null.
    assert (data["phone"], data["email"], data["birth_date"]) == (
        "+98912***6789", "s***@example.com", "****-**-**")
    assert (data["card_number"], data["tags"], data["status"]) == ("60370001", ["vip"], "active")
    assert data["acquisition_campaign"] is None and data["referred_by"] is None
    # Tier: spend in the window 10,000 + 50,000 + 80,000 = 140,000 >= silver's 100,000,
    # reached with T2 on 2026-03-10 and kept 90 days: through 2026-03-10 + 89 = 2026-06-07.
    assert (data["tier"], data["tier_name"]) == ("silver", "Silver")
    assert data["tier_since"].startswith("2026-03-10 23:59:59")
    assert data["tier_kept_through"] == "2026-06-07"
    assert data["tier_progress"] == {
        "metric": "spend", "window_days": 365, "value": 140000, "next_tier": "gold",
        "next_tier_name": "Gold", "next_threshold": 500000,
        "needed_for_next": 500000 - 140000, "keep_threshold": 100000, "needed_to_keep": 0,
        "floor": None, "floor_until": None,
    }
    # Points: ledger sum 10 + 50 + 80 - 6 + 5 = 139; T0's 4 left are past their date
    # (2026-03-13), so 135 can be spent, worth 135 x 100 = 13,500 IRR.
    assert (data["balance"], data["available"], data["pending"]) == (139, 135, 0)
    assert (data["value"], data["currency"], data["decimals"]) == (13500, "IRR", 0)
    # Expiring after 2026-03-15 and on or before 2026-04-14: T1's 50, T2's 80;
    # A1's 5 (2026-06-01) are outside the 30 days.
    assert data["expiring_within_days"] == 30
    assert data["expiring"] == [{"expires_on": "2026-03-31", "points": 50},
                                {"expires_on": "2026-04-09", "points": 80}]
    assert (data["expiring_soon"], data["next_expiry"]) == (130, "2026-03-31")
    # Newest first with the balance after each entry.
    assert [(e["kind"], e["points"], e["balance"], e["ref"]) for e in data["recent"]] == [
        ("adjust", 5, 139, "A1"), ("redeem", -6, 134, "R1"), ("earn", 80, 140, "T2"),
        ("earn", 50, 60, "T1"), ("earn", 10, 10, "T0")]
    assert data["recent"][0]["note"] == "goodwill"
    assert data["recent"][2]["expires_on"] == "2026-04-09"
    # C2 bought; C3 did not; C4's only purchase was refunded in full.
    assert (data["referrals"], data["referred_buyers"]) == (3, 1)
    assert sara.dump() == before  # a look-up writes nothing (no audit row without --show-pii)


def test_referred_member_shows_its_referrer(sara: Club) -> None:
    data = json.loads(show(sara, "C2", "-f", "json").stdout)
    assert (data["referred_by"], data["referrals"], data["referred_buyers"]) == ("C1", 0, 0)
    # C2 spent 5,000 (5 points): bronze, 95,000 short of silver.
    assert data["tier"] == "bronze" and data["tier_progress"]["needed_for_next"] == 95000
    assert data["phone"] is None and data["email"] is None and data["birth_date"] is None


def test_only_the_last_ten_entries(club: Club) -> None:
    club.ok("members", "add", "C1", "Ann")
    for i in range(1, 13):
        club.ok("points", "adjust", "C1", f"+{i}", "--reason", f"r{i}", "--ref", f"A{i}")
    data = json.loads(club.ok("members", "show", "C1", "-f", "json").stdout)
    # Entries +1 .. +12; the last ten are +12 .. +3, after each the sum 1 + ... + i.
    assert [e["points"] for e in data["recent"]] == list(range(12, 2, -1))
    assert [e["balance"] for e in data["recent"]] == [i * (i + 1) // 2 for i in range(12, 2, -1)]
    assert data["balance"] == data["available"] == 78
    # No tiers in this program, no expiry: nothing to show there.
    assert data["tier_progress"] is None and data["tier_kept_through"] is None
    assert data["expiring"] == [] and data["next_expiry"] is None


PENDING = TIERED.replace("points = 1\n", "points = 1\npending_days = 7\n", 1)


def test_pending_points_shown_then_activated_on_read(club: Club) -> None:
    c = club.write_config(PENDING)
    c.ok("--as-of", "2026-03-01", "members", "add", "C1", "Ann")
    c.ok("--as-of", "2026-03-01", "purchases", "record", "C1", "50,000", "--ref", "T1")
    # Held for 7 days: pending until 2026-03-01 23:59:59.999999 + 7 days, the end of 2026-03-08.
    data = json.loads(c.ok("--as-of", "2026-03-05", "members", "show", "C1", "-f", "json").stdout)
    assert (data["balance"], data["available"], data["pending"]) == (0, 0, 50)
    assert data["recent"][0]["kind"] == "earn" and data["recent"][0]["pending_until"]
    assert data["recent"][0]["balance"] == 0  # pending points do not move the balance
    r = c.ok("--as-of", "2026-03-05", "members", "show", "C1")
    assert "50 points (not yet redeemable)" in r.stdout and "earn (pending)" in r.stdout
    assert c.query("SELECT balance, pending FROM members WHERE code = 'C1'") == [(0, 50)]
    # After the holding period the look-up makes them available, in the database too, and
    # the expiry clock starts on the day they became available: 2026-03-08 + 30 days.
    data = json.loads(c.ok("--as-of", "2026-03-10", "members", "show", "C1", "-f", "json").stdout)
    assert (data["balance"], data["available"], data["pending"]) == (50, 50, 0)
    assert data["recent"][0]["pending_until"] is None
    assert data["recent"][0]["expires_on"] == "2026-04-07"
    assert data["expiring"] == [{"expires_on": "2026-04-07", "points": 50}]
    assert c.query("SELECT balance, pending FROM members WHERE code = 'C1'") == [(50, 0)]
    assert c.run("db", "check").exit_code == 0


# -- the screen ------------------------------------------------------------------------------------


def test_screen_masked_fits_in_40_lines_of_100_columns(sara: Club) -> None:
    r = show(sara, "0912 345 6789", env={"COLUMNS": "100"})
    lines = r.stdout.rstrip("\n").split("\n")
    assert len(lines) <= 40 and max(len(line) for line in lines) <= 100
    out = r.stdout
    assert "Member C1 · Sara Ahmadi" in out
    assert "+98912***6789" in out and "s***@example.com" in out and "****-**-**" in out
    assert "3456789" not in out and "sara@" not in out and "1990" not in out
    assert "Silver since 2026-03-10, kept through 2026-06-07" in out
    # 140,000 / 500,000 = 28 %.
    assert "28% to Gold: 360,000 IRR to go" in out
    assert "140,000 IRR of 500,000 IRR spend in the last 365 days" in out
    assert "135 points = 13,500 IRR (4 past their date" in out
    assert "130 points within 30 days: 50 on 2026-03-31, 80 on 2026-04-09" in out
    assert "3 made, 1 of them bought" in out
    assert "Last 5 ledger entries" in out and "A1 · goodwill" in out
    # One row per entry: the date, kind, signed points and the balance after it.
    assert [line.split()[3:6] for line in lines if "│ 2026" in line] == [
        ["adjust", "+5", "139"], ["redeem", "-6", "134"], ["earn", "+80", "140"],
        ["earn", "+50", "60"], ["earn", "+10", "10"]]


def test_show_pii_unmasks_and_is_audited(sara: Club) -> None:
    n = audit_count(sara)
    show(sara, "C1")
    show(sara, "C1", "-f", "json")
    assert audit_count(sara) == n  # masked look-ups are not audited
    r = sara.ok(*ASOF, "--actor", "desk7", "members", "show", "۰۹۱۲۳۴۵۶۷۸۹", "--show-pii")
    assert "+989123456789" in r.stdout and "sara@example.com" in r.stdout
    assert "1990-05-01" in r.stdout and "***" not in r.stdout
    data = json.loads(sara.ok(*ASOF, "members", "show", "C1", "--show-pii", "-f", "json").stdout)
    assert (data["phone"], data["email"], data["birth_date"]) == (
        "+989123456789", "sara@example.com", "1990-05-01")
    rows = sara.query("SELECT command, target, rows, actor FROM audit_log ORDER BY id")
    assert len(rows) == n + 2
    assert [r[:3] for r in rows[-2:]] == [("members show --show-pii", "C1", 1)] * 2
    assert rows[-2][3] == "desk7"


def test_csv_is_one_row(sara: Club) -> None:
    r = show(sara, "C1", "-f", "csv")
    header, row, *rest = r.stdout.splitlines()
    assert rest == []
    cols = header.split(",")
    assert "tier_progress_needed_for_next" in cols and "recent" in cols

    values = dict(zip(cols, next(csv.reader([row])), strict=True))
    assert values["available"] == "135" and values["tier_progress_next_tier"] == "gold"
    assert json.loads(values["expiring"]) == [{"expires_on": "2026-03-31", "points": 50},
                                              {"expires_on": "2026-04-09", "points": 80}]


# -- speed -----------------------------------------------------------------------------------------


@pytest.fixture
def statements() -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn, cursor, statement, *args):  # noqa: ANN001, ANN202
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    yield seen
    event.remove(Engine, "before_cursor_execute", count)


def test_a_handful_of_queries_whatever_the_ledger_size(sara: Club, statements: list[str]) -> None:
    """The ORM path of the screen (`services.support.member_screen`, used when pending points
    had to be activated first) runs a fixed number of statements through the session, as
    the command's read-only path does (tests/test_lookup_fast.py counts that one)."""
    from datetime import date, datetime

    from sqlmodel import Session, select

    from loyaltyctl.config import load_config
    from loyaltyctl.db.models import Member
    from loyaltyctl.services.support import member_screen

    config = load_config(sara.config_path).config

    def screen() -> dict:
        with Session(sara.engine) as s:
            m = s.exec(select(Member).where(Member.code == "C1")).one()
            statements.clear()
            return member_screen(session=s, config=config, member=m,
                                 now=datetime(2026, 3, 15, 20), today=date(2026, 3, 15))

    screen()
    small = len(statements)
    for i in range(20):
        sara.ok(*ASOF, "points", "adjust", "C1", "+1", "--reason", "x", "--ref", f"B{i}")
    data = screen()
    assert len(data["recent"]) == 10 and data["recent"][0]["points"] == 1
    # Referrals, tier metric, balance, expiring, history (the member is already loaded).
    assert len(statements) == small and 3 <= small <= 9, statements


def test_imports_only_what_it_uses(sara: Club) -> None:
    script = (
        "import sys\n"
        "from loyaltyctl.cli.main import app\n"
        "try:\n"
        "    app(sys.argv[1:])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'scipy', 'numpy')\n"
        "               or m in ('loyaltyctl.services.reports', 'loyaltyctl.services.rfm',\n"
        "                        'loyaltyctl.services.clv'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    env = {**os.environ, "COLUMNS": "100", "LOYALTYCTL_CONFIG": "", "LOYALTYCTL_DB": ""}
    r = subprocess.run([sys.executable, "-c", script, "--config", str(sara.config_path), "--db",
                        sara.db_url, *ASOF, "members", "show", "C1"],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "Sara Ahmadi" in r.stdout
    assert "HEAVY []" in r.stderr
