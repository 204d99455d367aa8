"""`points reverse REF`: a redemption's points go back to the very lots it consumed, with their
original expiry dates; reward stock comes back; twice is a no-op.

Program: 1 point per 1,000 rials, UTC, point_value 100; expiry as each test says.
"""

from __future__ import annotations

import json
from datetime import date

import pytest

from conftest import SIMPLE_CONFIG, Club

ROLLING = SIMPLE_CONFIG.replace('mode = "never"', 'mode = "rolling"\ndays = 365')
ROLLING_30 = SIMPLE_CONFIG.replace('mode = "never"', 'mode = "rolling"\ndays = 30')


def asof(day: str) -> tuple[str, str]:
    return ("--as-of", day)


def lots(club: Club) -> dict[str, tuple[int, date]]:
    """{purchase ref: (remaining, expires_on)} of every earn lot."""
    out = {}
    for ref, rem, exp in club.query("SELECT ref, remaining, expires_on FROM ledger_entries "
                                    "WHERE kind = 'earn' ORDER BY id"):
        out[ref] = (rem, date.fromisoformat(exp) if isinstance(exp, str) else exp)
    return out


def check_ok(club: Club) -> None:
    r = club.run("db", "check")
    assert r.exit_code == 0, r.stdout + r.stderr


@pytest.fixture
def spent(club: Club) -> Club:
    """C1 earned P1 100 (exp 2027-01-10) and P2 50 (exp 2027-02-10), then redeemed 120 (O1):
    100 from P1, 20 from P2; then P3 80 (exp 2027-04-01)."""
    club.write_config(ROLLING)
    club.ok("members", "add", "C1", "Ann")
    club.ok(*asof("2026-01-10"), "purchases", "record", "C1", "100000", "--ref", "P1")
    club.ok(*asof("2026-02-10"), "purchases", "record", "C1", "50000", "--ref", "P2")
    club.ok(*asof("2026-03-01"), "points", "redeem", "C1", "120", "--ref", "O1")
    club.ok(*asof("2026-04-01"), "purchases", "record", "C1", "80000", "--ref", "P3")
    return club


def test_reversal_returns_points_to_the_very_lots_with_their_dates(spent: Club) -> None:
    c = spent
    assert lots(c) == {"P1": (0, date(2027, 1, 10)), "P2": (30, date(2027, 2, 10)),
                       "P3": (80, date(2027, 4, 1))}
    assert c.balance("C1") == 110
    r = c.ok(*asof("2026-04-02"), "points", "reverse", "O1", "--note", "order cancelled")
    assert r.stdout == "C1: reversed redemption O1: +120 points back to 2 lot(s); balance 230\n"
    # P1 and P2 are whole again, with the dates they always had; P3 untouched.
    assert lots(c) == {"P1": (100, date(2027, 1, 10)), "P2": (50, date(2027, 2, 10)),
                       "P3": (80, date(2027, 4, 1))}
    assert c.balance("C1") == 230
    red_id = c.scalar("SELECT id FROM ledger_entries WHERE idem_key = 'redeem:O1'")
    rev = c.query("SELECT id, points, remaining, source_id, note FROM ledger_entries "
                  "WHERE kind = 'reversal'")
    assert [row[1:] for row in rev] == [(120, None, red_id, "order cancelled")]
    assert c.query("SELECT l.ref, a.points FROM allocations a JOIN ledger_entries l ON l.id = a.lot_id "
                   "WHERE a.debit_id = :d ORDER BY l.id", d=rev[0][0]) == [("P1", -100), ("P2", -20)]
    assert c.query("SELECT command, target FROM audit_log WHERE command = 'points reverse'") == [
        ("points reverse", "C1")]
    check_ok(c)
    # The restored points are spent again earliest-expiring first: P1 before P3.
    c.ok(*asof("2026-04-03"), "points", "redeem", "C1", "110", "--ref", "O2")
    assert lots(c)["P1"][0] == 0 and lots(c)["P2"][0] == 40
    check_ok(c)


def test_reversing_twice_is_a_noop_that_says_so(spent: Club) -> None:
    spent.ok(*asof("2026-04-02"), "points", "reverse", "O1")
    before = spent.dump()
    r = spent.ok(*asof("2026-04-03"), "points", "reverse", "O1")
    assert "already reversed: redemption O1 (nothing changed)" in r.stderr
    assert r.stdout == ""
    assert spent.dump() == before
    r = spent.ok(*asof("2026-04-03"), "points", "reverse", "O1", "--format", "json")
    assert json.loads(r.stdout)["already"] is True
    assert spent.dump() == before


def test_unknown_redemption_is_not_found(spent: Club) -> None:
    before = spent.dump()
    r = spent.run("points", "reverse", "NOPE")
    assert r.exit_code == 3 and "no redemption with ref 'NOPE'" in r.stderr
    assert spent.dump() == before
    # A purchase ref is not a redemption.
    r = spent.run("points", "reverse", "P1")
    assert r.exit_code == 3
    assert spent.dump() == before


def test_points_returned_to_an_expired_lot_expire_again_at_the_next_run(club: Club) -> None:
    club.write_config(ROLLING_30)
    club.ok("members", "add", "C1", "Ann")
    club.ok(*asof("2026-01-01"), "purchases", "record", "C1", "100000", "--ref", "P1")  # exp 01-31
    club.ok(*asof("2026-01-02"), "points", "redeem", "C1", "30", "--ref", "O1")
    club.ok("points", "expire", "--as-of", "2026-01-31")  # the other 70 expire
    assert club.balance("C1") == 0
    r = club.ok(*asof("2026-02-05"), "points", "reverse", "O1")
    assert "+30 points back to 1 lot(s); balance 30" in r.stdout
    assert "30 of these points went back to lots already past their expiry date" in r.stderr
    assert lots(club)["P1"] == (30, date(2026, 1, 31))  # the original date, already past
    r = club.ok(*asof("2026-02-05"), "points", "balance", "C1", "--format", "json")
    assert json.loads(r.stdout)["available"] == 0  # past its date: not spendable
    check_ok(club)
    club.ok("points", "expire", "--as-of", "2026-02-05")
    assert club.balance("C1") == 0 and lots(club)["P1"][0] == 0
    assert club.query("SELECT points FROM ledger_entries WHERE kind = 'expire' ORDER BY id") == [
        (-70,), (-30,)]
    check_ok(club)


def test_reward_stock_comes_back(club: Club) -> None:
    club.write_config(SIMPLE_CONFIG + """
[[rewards]]
code = "mug"
name = "Mug"
cost = 40
stock = 1
""")
    for code in ("C1", "C2"):
        club.ok("members", "add", code, code)
        club.ok("purchases", "record", code, "100000", "--ref", f"T-{code}")
    club.ok("rewards", "redeem", "C1", "mug", "--ref", "G1")
    assert club.run("rewards", "redeem", "C2", "mug", "--ref", "G2").exit_code == 5  # sold out
    r = club.ok("points", "reverse", "G1")
    assert "C1: reversed redemption G1 (mug): +40 points" in r.stdout
    assert club.balance("C1") == 100
    row = json.loads(club.ok("rewards", "list", "--format", "json").stdout)[0]
    assert (row["redeemed"], row["left"]) == (0, 1)
    club.ok("rewards", "redeem", "C2", "mug", "--ref", "G2")
    assert club.balance("C2") == 60
    check_ok(club)


def test_reversal_pays_a_clawback_debt_first(club: Club) -> None:
    club.ok("members", "add", "C1", "Ann")
    club.ok("purchases", "record", "C1", "100000", "--ref", "P1")
    club.ok("points", "redeem", "C1", "80", "--ref", "O1")
    club.ok("purchases", "refund", "P1", "--ref", "R1")  # 20 from the lot, 80 owed
    assert club.balance("C1") == -80
    # The order is cancelled too: the 80 go back to P1's lot and pay the debt at once.
    r = club.ok("points", "reverse", "O1")
    assert "balance 0" in r.stdout
    assert club.balance("C1") == 0
    assert lots(club)["P1"][0] == 0
    assert club.query("SELECT SUM(a.points) FROM allocations a JOIN ledger_entries d "
                      "ON d.id = a.debit_id WHERE d.kind = 'clawback'") == [(100,)]
    check_ok(club)
