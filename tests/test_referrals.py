"""Referral bonuses through the CLI: on the first purchase or at signup, exactly once."""

from __future__ import annotations

import json

import pytest

from conftest import SIMPLE_CONFIG, Club


def referral_config(trigger: str = "first_purchase", referrer: int = 200, referee: int = 100) -> str:
    return SIMPLE_CONFIG + f"""
[bonuses.referral]
referrer_points = {referrer}
referee_points = {referee}
trigger = "{trigger}"
"""


@pytest.fixture
def rclub(club: Club) -> Club:
    return club.write_config(referral_config())


def add(club: Club, code: str, *opts: str) -> None:
    club.ok("--as-of", "2026-01-01", "members", "add", code, f"Member {code}", *opts)


def buy(club: Club, code: str, amount: str, ref: str):  # noqa: ANN201
    return club.ok("--as-of", "2026-01-02", "purchases", "record", code, amount, "--ref", ref)


def referrals(club: Club) -> list[tuple]:
    """(member, points, idem key, ref of the triggering purchase)."""
    return club.query(
        "SELECT m.code, e.points, e.idem_key, p.ref FROM ledger_entries e"
        " JOIN members m ON m.id = e.member_id LEFT JOIN purchases p ON p.id = e.purchase_id"
        " WHERE e.kind = 'referral' ORDER BY e.id")


def mid(club: Club, code: str) -> int:
    return club.scalar("SELECT id FROM members WHERE code = :c", c=code)


def test_first_purchase_grants_both_bonuses_once(rclub: Club) -> None:
    add(rclub, "REF")
    add(rclub, "NEW", "--referred-by", "REF")
    assert referrals(rclub) == []  # trigger is the first purchase, not the signup
    buy(rclub, "NEW", "5,000", "p1")
    new = mid(rclub, "NEW")
    assert referrals(rclub) == [("REF", 200, f"referral:referrer:{new}", "p1"),
                                ("NEW", 100, f"referral:referee:{new}", "p1")]
    assert (rclub.balance("REF"), rclub.balance("NEW")) == (200, 5 + 100)
    buy(rclub, "NEW", "5,000", "p2")  # not the first purchase
    buy(rclub, "NEW", "5,000", "p1")  # the first one again: a no-op
    assert len(referrals(rclub)) == 2
    assert rclub.balance("REF") == 200
    rclub.ok("db", "check")


def test_first_purchase_imported_twice_grants_once(rclub: Club) -> None:
    add(rclub, "REF")
    add(rclub, "NEW", "--referred-by", "REF")
    path = rclub.root / "pos.csv"
    path.write_text("ref,member,amount,occurred_at\n"
                    "t1,NEW,10000,2026-01-02 10:00\n"
                    "t2,NEW,20000,2026-01-02 11:00\n", encoding="utf-8")
    rclub.ok("--as-of", "2026-01-03", "purchases", "import", str(path))
    first = referrals(rclub)
    assert first == [("REF", 200, f"referral:referrer:{mid(rclub, 'NEW')}", "t1"),
                     ("NEW", 100, f"referral:referee:{mid(rclub, 'NEW')}", "t1")]
    before = rclub.dump()
    rclub.ok("--as-of", "2026-01-03", "purchases", "import", str(path))
    assert referrals(rclub) == first
    assert rclub.dump()["ledger_entries"] == before["ledger_entries"]
    assert (rclub.balance("REF"), rclub.balance("NEW")) == (200, 10 + 20 + 100)


def test_signup_trigger_grants_at_enrolment(club: Club) -> None:
    club.write_config(referral_config(trigger="signup", referrer=30, referee=0))
    add(club, "REF")
    add(club, "NEW", "--referred-by", "REF")
    # Only the referrer side is configured (referee_points = 0).
    assert referrals(club) == [("REF", 30, f"referral:referrer:{mid(club, 'NEW')}", None)]
    buy(club, "NEW", "5,000", "p1")
    assert len(referrals(club)) == 1


def test_suspended_referrer_gets_nothing_but_the_referee_does(rclub: Club) -> None:
    add(rclub, "REF")
    add(rclub, "NEW", "--referred-by", "REF")
    rclub.ok("members", "suspend", "REF", "--reason", "check")
    buy(rclub, "NEW", "5,000", "p1")
    assert [r[:2] for r in referrals(rclub)] == [("NEW", 100)]
    r = rclub.ok("bonuses", "referral", "NEW", "--dry-run", "--format", "json")
    rows = {row["member"]: row["status"] for row in json.loads(r.stdout)}
    assert rows == {"REF": "not eligible: REF is suspended", "NEW": "granted"}
    assert "0 referral bonuses due for NEW" in r.stderr


def test_referral_catch_up_grants_what_is_due_once(club: Club) -> None:
    # Referral bonuses switched on after NEW's first purchase: nothing was granted then.
    club.write_config(referral_config(referrer=0, referee=0))
    add(club, "REF")
    add(club, "NEW", "--referred-by", "REF")
    add(club, "LATER", "--referred-by", "REF")
    buy(club, "NEW", "5,000", "p1")
    club.write_config(referral_config())
    before = club.dump()
    r = club.ok("bonuses", "referral", "REF", "--dry-run", "--format", "json")
    rows = [(row["referee"], row["member"], row["points"], row["status"]) for row in json.loads(r.stdout)]
    assert rows == [("NEW", "REF", 200, "due"), ("NEW", "NEW", 100, "due"),
                    ("LATER", "REF", 200, "waiting for LATER's first purchase"),
                    ("LATER", "LATER", 100, "waiting for LATER's first purchase")]
    assert "2 referral bonuses due for REF (dry run: nothing granted)" in r.stderr
    assert club.dump() == before
    r = club.ok("--as-of", "2026-01-05", "bonuses", "referral", "REF")
    assert "2 referral bonuses granted for REF" in r.stderr
    assert referrals(club) == [("REF", 200, f"referral:referrer:{mid(club, 'NEW')}", "p1"),
                               ("NEW", 100, f"referral:referee:{mid(club, 'NEW')}", "p1")]
    assert club.query("SELECT command, target, rows FROM audit_log WHERE command = 'bonuses referral'") == [
        ("bonuses referral", "REF", 2)]
    after = club.dump()
    r = club.ok("--as-of", "2026-01-05", "bonuses", "referral", "NEW")
    assert "0 referral bonuses granted for NEW" in r.stderr
    assert club.dump() == after


def test_referral_cycle_earns_nothing(rclub: Club) -> None:
    add(rclub, "A")
    add(rclub, "B", "--referred-by", "A")
    # `members update` refuses a cycle; one made behind its back is still never rewarded.
    with rclub.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("UPDATE members SET referred_by_id = :b WHERE code = 'A'"), {"b": mid(rclub, "B")})
    buy(rclub, "B", "5,000", "p1")
    buy(rclub, "A", "5,000", "p2")
    assert referrals(rclub) == []
    r = rclub.ok("bonuses", "referral", "A")
    statuses = {row for row in r.stdout.split("\n") if "cycle" in row}
    assert statuses and "0 referral bonuses granted for A" in r.stderr
    assert referrals(rclub) == []


def test_referral_for_unknown_member(rclub: Club) -> None:
    r = rclub.run("bonuses", "referral", "NOPE")
    assert r.exit_code == 3 and "no member matches 'NOPE'" in r.stderr
