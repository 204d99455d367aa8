"""Pending points: held for `earning.pending_days`, visible, not redeemable, activated when due
(on a look-up, by the nightly `points expire`, before a refund), cancelled by a refund inside
the window.

Program: 1 point per 1,000 rials, points pending 14 days, then valid 30 days (rolling), UTC.
"""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest

from conftest import SIMPLE_CONFIG, Club

PENDING = SIMPLE_CONFIG.replace('mode = "never"', 'mode = "rolling"\ndays = 30').replace(
    "points = 1\n", "points = 1\npending_days = 14\n", 1)


def asof(day: str) -> tuple[str, str]:
    return ("--as-of", day)


def as_date(v) -> date:  # noqa: ANN001 - SQLite gives text, PostgreSQL a date
    return date.fromisoformat(v) if isinstance(v, str) else v


def as_time(v) -> datetime | None:  # noqa: ANN001
    return datetime.fromisoformat(v) if isinstance(v, str) else v


def lot(club: Club, ref: str) -> tuple:
    """(points, remaining, pending_until, expires_on) of a purchase's earn lot."""
    p, r, pu, e = club.query("SELECT points, remaining, pending_until, expires_on FROM ledger_entries "
                             "WHERE idem_key = :k", k=f"purchase:{ref}")[0]
    return p, r, as_time(pu), as_date(e) if e is not None else None


def cached(club: Club, code: str = "C1") -> tuple[int, int]:
    return tuple(club.query("SELECT balance, pending FROM members WHERE code = :c", c=code)[0])


def check_ok(club: Club) -> None:
    r = club.run("db", "check")
    assert r.exit_code == 0, r.stdout + r.stderr


@pytest.fixture
def club14(club: Club) -> Club:
    club.write_config(PENDING)
    club.ok("members", "add", "C1", "Ann")
    return club


def test_pending_points_are_visible_not_redeemable_and_activate_when_due(club14: Club) -> None:
    c = club14
    c.ok(*asof("2026-03-01 10:00"), "purchases", "record", "C1", "100000", "--ref", "T1")
    # Pending until 2026-03-15 10:00; the expiry clock starts that day: 03-15 + 30 = 04-14.
    assert lot(c, "T1") == (100, 100, datetime(2026, 3, 15, 10, 0), date(2026, 4, 14))
    assert cached(c) == (0, 100)
    r = c.ok(*asof("2026-03-10"), "points", "balance", "C1", "--format", "json")
    info = json.loads(r.stdout)
    assert (info["available"], info["pending"]) == (0, 100)
    before = c.dump()
    r = c.run(*asof("2026-03-10"), "points", "redeem", "C1", "10", "--ref", "O1")
    assert r.exit_code == 5 and "0 points available" in r.stderr
    assert c.dump() == before
    # A look-up just before they are due changes nothing ...
    c.ok(*asof("2026-03-15 09:59"), "points", "balance", "C1")
    assert c.dump() == before
    # ... one after makes them available.
    r = c.ok(*asof("2026-03-15 10:00"), "points", "balance", "C1", "--format", "json")
    info = json.loads(r.stdout)
    assert (info["available"], info["pending"]) == (100, 0)
    assert lot(c, "T1") == (100, 100, None, date(2026, 4, 14))
    assert cached(c) == (100, 0)
    c.ok(*asof("2026-03-16"), "points", "redeem", "C1", "10", "--ref", "O1")
    assert cached(c) == (90, 0)
    check_ok(c)


def test_members_show_activates_due_points(club14: Club) -> None:
    c = club14
    c.ok(*asof("2026-03-01 10:00"), "purchases", "record", "C1", "100000", "--ref", "T1")
    c.ok(*asof("2026-03-20"), "members", "show", "C1")
    assert cached(c) == (100, 0)
    check_ok(c)


def test_expiry_clock_starts_on_the_day_points_become_available(club14: Club) -> None:
    c = club14
    c.write_config(PENDING.replace('mode = "rolling"\ndays = 30',
                                   'mode = "end_of_period"\nperiod = "month"\nperiods = 0'))
    # Bought in March, available on April 5: expires at the end of April, not of March.
    c.ok(*asof("2026-03-22 08:00"), "purchases", "record", "C1", "100000", "--ref", "T1")
    assert lot(c, "T1")[2:] == (datetime(2026, 4, 5, 8, 0), date(2026, 5, 1))
    c.ok("points", "expire", "--as-of", "2026-03-31")  # March's lots expire: not this one
    assert cached(c) == (0, 100)
    c.ok("points", "expire", "--as-of", "2026-04-05")  # activates it, with its April expiry
    assert lot(c, "T1") == (100, 100, None, date(2026, 5, 1))
    assert cached(c) == (100, 0)
    c.ok("points", "expire", "--as-of", "2026-05-01")
    assert cached(c) == (0, 0)
    check_ok(c)


def test_nightly_expire_activates_every_due_lot_once(club14: Club) -> None:
    c = club14
    c.ok("members", "add", "C2", "Bob")
    c.ok(*asof("2026-03-01 10:00"), "purchases", "record", "C1", "100000", "--ref", "T1")
    c.ok(*asof("2026-03-02 10:00"), "purchases", "record", "C2", "50000", "--ref", "T2")
    c.ok(*asof("2026-03-03 10:00"), "purchases", "record", "C2", "70000", "--ref", "T3")
    c.ok("points", "expire", "--as-of", "2026-03-16")  # T1 and T2 are due, T3 on the 17th
    assert (cached(c, "C1"), cached(c, "C2")) == ((100, 0), (50, 70))
    snapshot = {k: v for k, v in c.dump().items() if k != "audit_log"}
    c.ok("points", "expire", "--as-of", "2026-03-16")  # the same night again: nothing
    assert {k: v for k, v in c.dump().items() if k != "audit_log"} == snapshot
    c.ok("points", "expire", "--as-of", "2026-03-17")
    assert cached(c, "C2") == (120, 0)
    check_ok(c)


def test_refund_inside_the_window_cancels_pending_points_only(club14: Club) -> None:
    c = club14
    c.ok(*asof("2026-03-01"), "points", "adjust", "C1", "+50", "--reason", "welcome")  # available
    c.ok(*asof("2026-03-01 10:00"), "purchases", "record", "C1", "100000", "--ref", "T1")
    assert cached(c) == (50, 100)
    # 40% refunded inside the window: 40 pending points cancelled, the available 50 untouched.
    r = c.ok(*asof("2026-03-05"), "purchases", "refund", "T1", "--amount", "40000", "--ref", "R1")
    assert "40 pending points cancelled; balance 50" in r.stdout
    assert cached(c) == (50, 60)
    assert lot(c, "T1")[:2] == (100, 60)
    cancel = c.query("SELECT kind, points, pending_until FROM ledger_entries WHERE idem_key = 'refund:R1'")
    assert [(k, p, as_time(pu)) for k, p, pu in cancel] == [
        ("cancel", -40, datetime(2026, 3, 15, 10, 0))]
    check_ok(c)
    # When due, the lot and its cancellation become available together: +60.
    c.ok(*asof("2026-03-16"), "points", "balance", "C1")
    assert cached(c) == (110, 0)
    assert c.query("SELECT COUNT(*) FROM ledger_entries WHERE pending_until IS NOT NULL") == [(0,)]
    check_ok(c)
    # The rest refunded after the window: a clawback of 100 - 40 = 60 from the lot itself.
    r = c.ok(*asof("2026-03-17"), "purchases", "refund", "T1", "--ref", "R2")
    assert "60 points clawed back; balance 50" in r.stdout
    assert lot(c, "T1")[:2] == (100, 0)
    check_ok(c)


def test_full_refund_inside_the_window_leaves_nothing(club14: Club) -> None:
    c = club14
    c.ok(*asof("2026-03-01 10:00"), "purchases", "record", "C1", "100000", "--ref", "T1")
    r = c.ok(*asof("2026-03-02"), "purchases", "refund", "T1", "--ref", "R1")
    assert "100 pending points cancelled; balance 0" in r.stdout
    assert cached(c) == (0, 0)
    c.ok("points", "expire", "--as-of", "2026-03-20")
    assert cached(c) == (0, 0)
    assert lot(c, "T1")[:3] == (100, 0, None)
    check_ok(c)


def test_refund_after_the_window_claws_back_even_before_activation_ran(club14: Club) -> None:
    c = club14
    c.ok(*asof("2026-03-01 10:00"), "purchases", "record", "C1", "100000", "--ref", "T1")
    # Nobody looked at the member since: the refund activates the lot first, then claws back.
    r = c.ok(*asof("2026-03-20"), "purchases", "refund", "T1", "--amount", "50000", "--ref", "R1")
    assert "50 points clawed back; balance 50" in r.stdout
    assert c.query("SELECT kind FROM ledger_entries WHERE idem_key = 'refund:R1'") == [("clawback",)]
    assert lot(c, "T1")[:3] == (100, 50, None)
    check_ok(c)


def test_activation_pays_clawback_debt_first(club: Club) -> None:
    club.ok("members", "add", "C1", "Ann")
    club.ok(*asof("2026-03-01"), "purchases", "record", "C1", "100000", "--ref", "T1")  # 100 at once
    club.ok(*asof("2026-03-01"), "points", "redeem", "C1", "70", "--ref", "O1")
    club.ok(*asof("2026-03-02"), "purchases", "refund", "T1", "--ref", "R1")
    assert cached(club) == (-70, 0)
    club.write_config(PENDING)  # from now on points wait 14 days
    club.ok(*asof("2026-03-03 10:00"), "purchases", "record", "C1", "120000", "--ref", "T2")
    assert cached(club) == (-70, 120)  # pending points pay no debt
    check_ok(club)
    club.ok("points", "expire", "--as-of", "2026-03-17")
    assert cached(club) == (50, 0)
    assert lot(club, "T2")[:3] == (120, 50, None)  # 70 of it settled the clawback
    check_ok(club)


def test_due_pending_points_are_spendable_before_any_activation_ran(club14: Club) -> None:
    """A redemption right after the holding period, with no look-up or nightly run between,
    spends the points (the debit activates them itself)."""
    c = club14
    c.ok(*asof("2026-03-01 10:00"), "purchases", "record", "C1", "100000", "--ref", "T1")
    assert cached(c) == (0, 100)
    r = c.ok(*asof("2026-03-16"), "points", "redeem", "C1", "40", "--ref", "O1")
    assert "balance 60" in r.stdout or "60" in r.stdout
    assert cached(c) == (60, 0)
    assert lot(c, "T1") == (100, 60, None, date(2026, 4, 14))
    check_ok(c)
