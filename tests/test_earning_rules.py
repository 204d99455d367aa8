"""Every earning rule through `purchases record`, with the expected points worked by hand.

Program below: 1 point per 1,000 rials, min purchase 5,000, floor rounding, tobacco
excluded, cosmetics x2 and electronics x0.5, tier gold x1.5. Expected values are in the
comments as amount x 1/1000 x multipliers, then the rounding.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from conftest import Club

RULES = """
[program]
name = "Rules Club"
currency = "IRR"
decimals = 0
timezone = "{tz}"
phone_region = "IR"
point_value = 100

[earning]
spend = 1000
points = 1
min_purchase = 5000
rounding = "{rounding}"
excluded_categories = ["tobacco"]
pending_days = {pending}

[earning.category_multipliers]
cosmetics = 2
electronics = 0.5

[expiry]
mode = "{expiry}"
days = 30

[[tiers.levels]]
code = "bronze"
name = "Bronze"
threshold = 0

[[tiers.levels]]
code = "gold"
name = "Gold"
threshold = 1000000000000
multiplier = 1.5
"""

CAMPAIGNS = """
[[campaigns]]
code = "double"
name = "Double points in March"
starts = 2026-03-01
ends = 2026-03-31
multiplier = 2

[[campaigns]]
code = "triple-web"
name = "Triple on the web"
starts = 2026-03-10
ends = 2026-03-20
multiplier = 3
channels = ["web"]

[[campaigns]]
code = "flat50"
name = "50 extra on the 15th"
starts = 2026-03-15
ends = 2026-03-15
flat_bonus = 50

[[campaigns]]
code = "flat20"
name = "20 extra on 10,000 and more"
starts = 2026-03-01
ends = 2026-03-31
flat_bonus = 20
min_amount = 10000
"""


def rules(club: Club, *, rounding: str = "floor", tz: str = "UTC", pending: int = 0,
          expiry: str = "never", extra: str = "") -> Club:
    return club.write_config(RULES.format(rounding=rounding, tz=tz, pending=pending,
                                          expiry=expiry) + extra)


def add_member(club: Club, code: str, n: int) -> None:
    club.ok("--as-of", "2026-01-01", "members", "add", code, f"Member {code}",
            "--phone", f"0912{n:07d}")


def earn(club: Club, member: str, amount: str, ref: str, *opts: str,
         at: str = "2026-03-05 12:00") -> int:
    """Record a purchase and return the points stored on it (checked against its lot)."""
    club.ok("--as-of", "2026-06-30", "purchases", "record", member, amount, "--ref", ref,
            "--at", at, *opts)
    points = club.scalar("SELECT points FROM purchases WHERE ref = :r", r=ref)
    lot = club.scalar("SELECT COALESCE(SUM(points), 0) FROM ledger_entries WHERE ref = :r "
                      "AND kind = 'earn'", r=ref)
    assert lot == points
    return points


@pytest.fixture
def ruled(club: Club) -> Club:
    rules(club)
    add_member(club, "C1", 1)
    return club


def test_min_purchase_boundary(ruled: Club) -> None:
    # 4,999 < min 5,000: nothing; 5,000 x 1/1000 = 5.
    assert earn(ruled, "C1", "4999", "T-below") == 0
    assert earn(ruled, "C1", "5000", "T-at") == 5
    assert ruled.balance("C1") == 5
    # The purchase below the minimum is still recorded (spend counts for tiers) but has no lot.
    assert ruled.query("SELECT amount, points FROM purchases WHERE ref = 'T-below'") == [(4999, 0)]
    assert ruled.scalar("SELECT COUNT(*) FROM ledger_entries WHERE ref = 'T-below'") == 0


def test_excluded_category_earns_nothing(ruled: Club) -> None:
    # tobacco is excluded, any case and stray spaces: 0 points for 100,000.
    assert earn(ruled, "C1", "100000", "T-tob", "--category", " Tobacco ") == 0
    assert ruled.query("SELECT category FROM purchases WHERE ref = 'T-tob'") == [("tobacco",)]
    assert ruled.balance("C1") == 0


@pytest.mark.parametrize(("category", "expected"), [
    ("cosmetics", 24),     # 12,345 x 2 / 1000 = 24.69 -> 24
    ("COSMETICS", 24),     # categories compare case-insensitively
    ("electronics", 6),    # 12,345 x 0.5 / 1000 = 6.1725 -> 6
    ("groceries", 12),     # no multiplier: 12.345 -> 12
])
def test_category_multiplier(ruled: Club, category: str, expected: int) -> None:
    assert earn(ruled, "C1", "12345", "T1", "--category", category) == expected


def test_tier_multiplier(ruled: Club) -> None:
    with ruled.engine.begin() as conn:
        conn.execute(text("UPDATE members SET tier = 'gold' WHERE code = 'C1'"))
    # gold x1.5: 12,345 x 1.5 / 1000 = 18.5175 -> 18
    assert earn(ruled, "C1", "12345", "T1") == 18
    # gold x1.5 x cosmetics x2: 12,345 x 3 / 1000 = 37.035 -> 37 (one rounding, at the end)
    assert earn(ruled, "C1", "12345", "T2", "--category", "cosmetics") == 37
    # gold x1.5 x electronics x0.5 = x0.75: 9,999 x 0.75 / 1000 = 7.49925 -> 7
    assert earn(ruled, "C1", "9999", "T3", "--category", "electronics") == 7
    assert ruled.balance("C1") == 18 + 37 + 7


@pytest.mark.parametrize(("mode", "amounts", "expected"), [
    # 12,500 -> 12.5; 12,499 -> 12.499; 12,000 -> 12 exactly; 5,001 x 0.5 = 2.5005
    ("floor", ["12500", "12499", "12000"], [12, 12, 12]),
    ("half_up", ["12500", "12499", "12000"], [13, 12, 12]),
    ("ceil", ["12500", "12499", "12000"], [13, 13, 12]),
])
def test_rounding_modes(club: Club, mode: str, amounts: list[str], expected: list[int]) -> None:
    rules(club, rounding=mode)
    add_member(club, "C1", 1)
    got = [earn(club, "C1", a, f"T{i}") for i, a in enumerate(amounts)]
    assert got == expected
    assert club.balance("C1") == sum(expected)


def test_rounding_applies_once_after_all_multipliers(ruled: Club) -> None:
    # 12,600 cosmetics: 12.6 x 2 = 25.2 -> 25 (rounding 12.6 to 12 first would give 24).
    assert earn(ruled, "C1", "12600", "T1", "--category", "cosmetics") == 25
    # 39,990 electronics: 39.99 x 0.5 = 19.995 -> 19 (rounding 39.99 up first would give 20).
    assert earn(ruled, "C1", "39990", "T2", "--category", "electronics") == 19


def test_overlapping_campaigns_highest_multiplier_wins_flats_add(club: Club) -> None:
    rules(club, extra=CAMPAIGNS)
    add_member(club, "C1", 1)
    # 15 March on the web: double (x2), triple-web (x3), flat50 and flat20 all match.
    # Highest multiplier 3 (never 2 x 3): 10,000 x 3 / 1000 = 30; flats 50 + 20 = 70 -> 100.
    assert earn(club, "C1", "10000", "W15", "--channel", "Web", at="2026-03-15 10:00") == 100
    # Same day in a store: x2 -> 20, + 70 -> 90.
    assert earn(club, "C1", "10000", "S15", "--channel", "store", at="2026-03-15 10:00") == 90
    # 5 March, 9,999: only double (flat20 needs 10,000): 9,999 x 2 / 1000 = 19.998 -> 19.
    assert earn(club, "C1", "9999", "S05", at="2026-03-05 10:00") == 19
    # April: no campaign: 10.
    assert earn(club, "C1", "10000", "A01", at="2026-04-01 10:00") == 10
    # Below min_purchase nothing, not even a flat bonus: 4,000 on 15 March -> 0.
    assert earn(club, "C1", "4000", "S15b", at="2026-03-15 11:00") == 0
    campaigns = dict(club.query("SELECT ref, campaign FROM purchases"))
    assert campaigns == {"W15": "triple-web,flat50,flat20", "S15": "double,flat50,flat20",
                         "S05": "double", "A01": None, "S15b": None}
    # The lot carries the campaign too (for campaign reports).
    assert club.scalar("SELECT campaign FROM ledger_entries WHERE ref = 'W15'") == \
        "triple-web,flat50,flat20"
    assert club.balance("C1") == 100 + 90 + 19 + 10


def test_campaigns_match_on_the_local_date(club: Club) -> None:
    rules(club, tz="Asia/Tehran", extra=CAMPAIGNS)
    add_member(club, "C1", 1)
    # 2026-03-31 22:00 UTC is 2026-04-01 01:30 in Tehran (+03:30): after "double" ended.
    assert earn(club, "C1", "10000", "LATE", at="2026-03-31T22:00Z") == 10
    # 2026-02-28 21:00 UTC is 2026-03-01 00:30 in Tehran: double applies: 20, + flat20 = 40.
    assert earn(club, "C1", "10000", "EARLY", at="2026-02-28T21:00Z") == 40


def test_persian_digits_and_separators_in_amount(ruled: Club) -> None:
    # "۱۲٬۳۴۵" (Persian digits, Arabic thousands separator) = 12,345 -> 12 points.
    assert earn(ruled, "C1", "۱۲٬۳۴۵", "T-fa") == 12
    assert ruled.scalar("SELECT amount FROM purchases WHERE ref = 'T-fa'") == 12345
    # Persian digits in the member's phone resolve the member too.
    r = ruled.ok("--as-of", "2026-06-30", "purchases", "record", "۰۹۱۲۰۰۰۰۰۰۱", "۵۰۰۰",
                 "--ref", "T-fa2", "--at", "2026-03-05")
    assert "C1: 5,000 IRR -> 5 points; balance 17" in r.stdout


def test_decimal_currency_amounts(club: Club) -> None:
    club.write_config(RULES.format(rounding="floor", tz="UTC", pending=0, expiry="never")
                      .replace('currency = "IRR"\ndecimals = 0', 'currency = "USD"\ndecimals = 2')
                      .replace("spend = 1000\n", "spend = 100\n"))
    add_member(club, "C1", 1)
    # $52.99 = 5,299 cents; 1 point per 100 cents: 52.99 -> 52.
    assert earn(club, "C1", "52.99", "U1") == 52
    assert club.query("SELECT amount, currency FROM purchases") == [(5299, "USD")]
    before = club.dump()
    r = club.run("purchases", "record", "C1", "12.345", "--ref", "U2")
    assert r.exit_code == 4 and "amount: '12.345' has more than 2 decimal places" in r.stderr
    assert club.dump() == before


def test_rolling_expiry_date_of_the_lot(club: Club) -> None:
    rules(club, expiry="rolling", tz="Asia/Tehran")
    add_member(club, "C1", 1)
    # 2026-03-09 21:00 UTC is 2026-03-10 00:30 in Tehran: the lot counts from 10 March,
    # so with days = 30 it expires on 2026-04-09 (first day it can no longer be used).
    earn(club, "C1", "10000", "T1", at="2026-03-09T21:00Z")
    assert str(club.scalar("SELECT expires_on FROM ledger_entries WHERE ref = 'T1'")) == "2026-04-09"


def test_pending_points_start_their_expiry_when_available(club: Club) -> None:
    rules(club, pending=14, expiry="rolling")
    add_member(club, "C1", 1)
    r = club.ok("--as-of", "2026-03-05 13:00", "--format", "json", "purchases", "record", "C1",
                "10000", "--ref", "P1", "--at", "2026-03-05 12:00")
    data = json.loads(r.stdout)
    # Pending 14 days: available at 2026-03-19 12:00; expiry 30 days after 19 March.
    assert data["points"] == 10 and data["balance"] == 0 and data["pending"] == 10
    assert data["pending_until"] == "2026-03-19 12:00:00"
    assert data["expires_on"] == "2026-04-18"
    row = club.query("SELECT remaining, pending_until, expires_on FROM ledger_entries WHERE ref = 'P1'")
    assert [(row[0][0], str(row[0][1])[:16], str(row[0][2]))] == [(10, "2026-03-19 12:00", "2026-04-18")]
    assert club.query("SELECT balance, pending FROM members WHERE code = 'C1'") == [(0, 10)]
    # A purchase recorded after its pending window is available at once, same expiry rule:
    # bought 1 March, available 15 March, expires 14 April.
    club.ok("--as-of", "2026-03-20", "purchases", "record", "C1", "20000", "--ref", "P2",
            "--at", "2026-03-01 09:00")
    row = club.query("SELECT pending_until, expires_on FROM ledger_entries WHERE ref = 'P2'")
    assert [(a, str(b)) for a, b in row] == [(None, "2026-04-14")]
    assert club.query("SELECT balance, pending FROM members WHERE code = 'C1'") == [(20, 10)]
    club.ok("db", "check")
