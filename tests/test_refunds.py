"""Refunds: `purchases refund` and `purchases refunds-import` claw back points in proportion.

Program (SIMPLE_CONFIG unless a test says otherwise): 1 point per 1,000 rials, floor,
points never expire, UTC, point_value 100.
"""

from __future__ import annotations

import json

import pytest

from conftest import SIMPLE_CONFIG, Club

ROLLING_30 = SIMPLE_CONFIG.replace('mode = "never"', 'mode = "rolling"\ndays = 30')


def asof(day: str) -> tuple[str, str]:
    return ("--as-of", day)


def ledger(club: Club, code: str = "C1") -> list[tuple]:
    return club.query(
        "SELECT e.kind, e.points, e.remaining, p.ref FROM ledger_entries e "
        "JOIN members m ON m.id = e.member_id LEFT JOIN purchases p ON p.id = e.purchase_id "
        "WHERE m.code = :c ORDER BY e.id", c=code)


def lot_remaining(club: Club, purchase_ref: str) -> int:
    return club.scalar("SELECT remaining FROM ledger_entries WHERE idem_key = :k",
                       k=f"purchase:{purchase_ref}")


def check_ok(club: Club) -> None:
    r = club.run("db", "check")
    assert r.exit_code == 0, r.stdout + r.stderr


@pytest.fixture
def c1(club: Club) -> Club:
    club.ok("members", "add", "C1", "Ann")
    return club


def test_partial_refunds_add_up_exactly_to_the_full_clawback(c1: Club) -> None:
    c1.ok("purchases", "record", "C1", "100,000", "--ref", "T1")  # 100 points
    # cumulative 33,333 -> floor(100 x 33,333 / 100,000) = 33
    r = c1.ok("purchases", "refund", "T1", "--amount", "33,333", "--ref", "R1")
    assert "33 points clawed back; balance 67" in r.stdout
    # cumulative 66,666 -> floor(66.666) = 66, minus 33 already = 33
    r = c1.ok("purchases", "refund", "T1", "--amount", "۳۳۳۳۳", "--ref", "R2")  # Persian digits
    assert "33 points clawed back; balance 34" in r.stdout
    # the rest (33,334) by default: cumulative 100,000 -> 100, minus 66 = 34
    r = c1.ok("purchases", "refund", "T1", "--ref", "R3")
    assert "(100,000 of 100,000 refunded, in full) -> 34 points clawed back; balance 0" in r.stdout
    assert c1.balance("C1") == 0
    assert c1.query("SELECT refunded_amount FROM purchases WHERE ref = 'T1'") == [(100_000,)]
    assert ledger(c1) == [("earn", 100, 0, "T1"), ("clawback", -33, None, "T1"),
                          ("clawback", -33, None, "T1"), ("clawback", -34, None, "T1")]
    # every clawback is allocated on the purchase's own lot
    assert c1.query("SELECT lot_id, points FROM allocations ORDER BY id") == [
        (1, 33), (1, 33), (1, 34)]
    check_ok(c1)


def test_refund_beyond_what_is_left_is_refused_and_changes_nothing(c1: Club) -> None:
    c1.ok("purchases", "record", "C1", "100000", "--ref", "T1")
    c1.ok("purchases", "refund", "T1", "--amount", "60000", "--ref", "R1")
    before = c1.dump()
    r = c1.run("purchases", "refund", "T1", "--amount", "40001", "--ref", "R2")
    assert r.exit_code == 5
    assert "more than what is left of purchase 'T1' (40,000 of 100,000)" in r.stderr
    assert c1.dump() == before
    c1.ok("purchases", "refund", "T1", "--ref", "R2")  # the 40,000 that is left
    before = c1.dump()
    r = c1.run("purchases", "refund", "T1", "--ref", "R3")
    assert r.exit_code == 5 and "already refunded in full" in r.stderr
    assert c1.dump() == before


def test_same_refund_ref_twice_is_a_noop_that_says_so(c1: Club) -> None:
    c1.ok("purchases", "record", "C1", "100000", "--ref", "T1")
    c1.ok("purchases", "refund", "T1", "--amount", "50000", "--ref", "R1")
    before = c1.dump()
    r = c1.ok("purchases", "refund", "T1", "--amount", "50000", "--ref", "R1")
    assert "already recorded: refund R1 of purchase T1 (nothing changed)" in r.stderr
    assert r.stdout == ""
    assert c1.dump() == before
    assert c1.balance("C1") == 50


def test_refund_ref_used_for_another_purchase_is_refused(c1: Club) -> None:
    c1.ok("purchases", "record", "C1", "100000", "--ref", "T1")
    c1.ok("purchases", "record", "C1", "100000", "--ref", "T2")
    c1.ok("purchases", "refund", "T1", "--amount", "10000", "--ref", "R1")
    before = c1.dump()
    r = c1.run("purchases", "refund", "T2", "--amount", "10000", "--ref", "R1")
    assert r.exit_code == 5
    assert "refund ref 'R1' was already used for purchase 'T1'" in r.stderr
    assert c1.dump() == before


@pytest.mark.parametrize(("args", "code", "message"), [
    (("NOPE", "--ref", "R1"), 3, "no purchase with ref 'NOPE'"),
    (("T1", "--amount", "0", "--ref", "R1"), 4, "--amount: '0' must be greater than zero"),
    (("T1", "--amount", "12x", "--ref", "R1"), 4, "--amount: '12x' is not an amount"),
    (("T1", "--amount", "-5", "--ref", "R1"), 4, "--amount: '-5' must be greater than zero"),
    (("T1", "--ref", "  "), 4, "--ref: a refund needs a reference"),
])
def test_bad_refunds_name_the_problem_and_change_nothing(c1: Club, args, code, message) -> None:
    c1.ok("purchases", "record", "C1", "100000", "--ref", "T1")
    before = c1.dump()
    r = c1.run("purchases", "refund", *args)
    assert r.exit_code == code, r.stderr
    assert message in r.stderr
    assert c1.dump() == before


def test_refund_without_ref_is_a_usage_error(c1: Club) -> None:
    c1.ok("purchases", "record", "C1", "100000", "--ref", "T1")
    r = c1.run("purchases", "refund", "T1")
    assert r.exit_code == 2 and "--ref" in r.stderr


def test_clawback_takes_the_purchases_own_lot_first_then_earliest_expiring(club: Club) -> None:
    club.write_config(ROLLING_30.replace("days = 30", "days = 365"))
    club.ok("members", "add", "C1", "Ann")
    club.ok(*asof("2026-01-10"), "purchases", "record", "C1", "100000", "--ref", "P1")  # exp 2027-01-10
    club.ok(*asof("2026-02-10"), "purchases", "record", "C1", "50000", "--ref", "P2")   # exp 2027-02-10
    club.ok(*asof("2026-03-10"), "purchases", "record", "C1", "80000", "--ref", "P3")   # exp 2027-03-10
    # 200 = P1 100 + P2 50 + 50 of P3 (earliest-expiring first): P3 keeps 30
    club.ok(*asof("2026-03-11"), "points", "redeem", "C1", "200", "--ref", "O1")
    club.ok(*asof("2026-04-10"), "purchases", "record", "C1", "60000", "--ref", "P4")   # exp 2027-04-10
    club.ok(*asof("2026-05-10"), "purchases", "record", "C1", "40000", "--ref", "P5")   # exp 2027-05-10
    assert club.balance("C1") == 130  # 30 + 60 + 40
    # Full refund of P3 claws back 80: its own 30 first, then 50 from P4 (expires before P5).
    r = club.ok(*asof("2026-05-11"), "purchases", "refund", "P3", "--ref", "R1")
    assert "80 points clawed back; balance 50" in r.stdout
    assert [lot_remaining(club, p) for p in ("P1", "P2", "P3", "P4", "P5")] == [0, 0, 0, 10, 40]
    assert club.query(
        "SELECT l.ref, a.points FROM allocations a JOIN ledger_entries d ON d.id = a.debit_id "
        "JOIN ledger_entries l ON l.id = a.lot_id WHERE d.kind = 'clawback' ORDER BY a.id"
    ) == [("P3", 30), ("P4", 50)]
    check_ok(club)


def test_points_that_expired_are_not_taken_a_second_time(club: Club) -> None:
    club.write_config(ROLLING_30)
    club.ok("members", "add", "C1", "Ann")
    club.ok(*asof("2026-01-01"), "purchases", "record", "C1", "100000", "--ref", "P1")  # 100, exp 01-31
    club.ok(*asof("2026-01-02"), "points", "redeem", "C1", "30", "--ref", "O1")  # P1 keeps 70
    club.ok("points", "expire", "--as-of", "2026-01-31")  # the 70 left of P1 expire
    club.ok(*asof("2026-02-01"), "purchases", "record", "C1", "50000", "--ref", "P2")  # 50
    assert club.balance("C1") == 50
    # Half refunded: target = max(0, floor(100 x 1/2) - 70 expired) = 0: the member spent only
    # 30 of the 100, less than the 50 the kept half is worth. Nothing is taken.
    r = club.ok(*asof("2026-02-02"), "purchases", "refund", "P1", "--amount", "50000", "--ref", "R1")
    assert "no points to claw back; balance 50" in r.stdout
    assert "70 points of this purchase had already expired" not in r.stderr  # nothing was taken
    # The rest: target = 100 - 70 = 30, exactly what was spent; taken from P2 (P1 is empty).
    r = club.ok(*asof("2026-02-03"), "purchases", "refund", "P1", "--ref", "R2")
    assert "30 points clawed back; balance 20" in r.stdout
    assert "70 points of this purchase had already expired and were not taken again" in r.stderr
    assert lot_remaining(club, "P2") == 20
    assert ledger(club)[-2:] == [("clawback", 0, None, "P1"), ("clawback", -30, None, "P1")]
    check_ok(club)


def test_earn_redeem_refund_cannot_keep_the_points(c1: Club) -> None:
    """The exploit "earn, refund, keep the points" fails: the member owes what was spent."""
    c1.ok("purchases", "record", "C1", "100000", "--ref", "T1")  # +100
    c1.ok("points", "redeem", "C1", "70", "--ref", "O1")  # spent 70, lot keeps 30
    r = c1.ok("purchases", "refund", "T1", "--ref", "R1")
    # clawback 100: 30 from the lot, 70 the member no longer has -> balance -70
    assert "100 points clawed back; balance -70" in r.stdout
    assert "C1 now owes 70 points" in r.stderr
    assert c1.balance("C1") == -70
    before = c1.dump()
    r = c1.run("points", "redeem", "C1", "1", "--ref", "O2")
    assert r.exit_code == 5
    assert c1.dump() == before
    check_ok(c1)
    # The next purchase pays the debt first: +120, of which 70 settle the clawback.
    c1.ok("purchases", "record", "C1", "120000", "--ref", "T2")
    assert c1.balance("C1") == 50
    assert lot_remaining(c1, "T2") == 50
    assert c1.query("SELECT SUM(a.points) FROM allocations a JOIN ledger_entries d "
                    "ON d.id = a.debit_id WHERE d.kind = 'clawback'") == [(100,)]
    c1.ok("points", "redeem", "C1", "50", "--ref", "O3")
    assert c1.balance("C1") == 0
    check_ok(c1)


def test_campaign_flat_bonus_is_clawed_back_with_the_purchase(club: Club) -> None:
    club.write_config(SIMPLE_CONFIG + """
[[campaigns]]
code = "spring"
name = "Spring"
starts = 2026-03-01
ends = 2026-03-31
flat_bonus = 20
""")
    club.ok("members", "add", "C1", "Ann")
    club.ok(*asof("2026-03-05"), "purchases", "record", "C1", "100000", "--ref", "T1")
    assert club.balance("C1") == 120  # 100 + flat 20, one lot
    # a quarter refunded: floor(120 x 1/4) = 30
    r = club.ok(*asof("2026-03-06"), "purchases", "refund", "T1", "--amount", "25000", "--ref", "R1")
    assert "30 points clawed back; balance 90" in r.stdout
    # the rest: 120 - 30 = 90, the flat bonus with it
    club.ok(*asof("2026-03-07"), "purchases", "refund", "T1", "--ref", "R2")
    assert club.balance("C1") == 0
    check_ok(club)


REFERRAL_CONFIG = SIMPLE_CONFIG + """
[bonuses.referral]
referrer_points = 200
referee_points = 100
trigger = "first_purchase"
"""


def test_full_refund_claws_back_the_referral_bonuses_it_triggered(club: Club) -> None:
    club.write_config(REFERRAL_CONFIG)
    club.ok("members", "add", "C1", "Ann")
    club.ok("members", "add", "C2", "Bob", "--referred-by", "C1")
    club.ok("purchases", "record", "C2", "100000", "--ref", "T1")  # C2: 100 + referee 100
    assert (club.balance("C1"), club.balance("C2")) == (200, 200)
    assert club.query("SELECT m.code, e.points FROM ledger_entries e JOIN members m "
                      "ON m.id = e.member_id WHERE e.kind = 'referral' ORDER BY m.code") == [
        ("C1", 200), ("C2", 100)]
    # A partial refund leaves the referral alone: floor(100 x 1/2) = 50 from C2 only.
    r = club.ok("purchases", "refund", "T1", "--amount", "50000", "--ref", "R1")
    assert "50 points clawed back; balance 150" in r.stdout
    assert club.balance("C1") == 200
    club.ok("points", "redeem", "C1", "150", "--ref", "O1")  # C1 spends most of the bonus
    # The full refund: the other 50 from C2's lot, both referral bonuses from their lots;
    # C1 has only 50 left of its 200, so it owes 150.
    r = club.ok("purchases", "refund", "T1", "--ref", "R2")
    assert "50 points clawed back; 300 referral points clawed back (from C1); balance 0" in r.stdout
    assert (club.balance("C1"), club.balance("C2")) == (-150, 0)
    keys = club.query("SELECT idem_key, points FROM ledger_entries WHERE kind = 'clawback' "
                      "ORDER BY id")
    assert [k for k, _ in keys][:2] == ["refund:R1", "refund:R2"]
    assert sorted(p for _, p in keys[2:]) == [-200, -100]
    assert all(k.startswith("refund:R2:referral:") for k, _ in keys[2:])
    check_ok(club)
    # Running it again takes nothing more.
    before = club.dump()
    club.ok("purchases", "refund", "T1", "--ref", "R2")
    assert club.dump() == before


def test_refund_json_output_and_audit(c1: Club) -> None:
    c1.ok("purchases", "record", "C1", "100000", "--ref", "T1")
    r = c1.ok("purchases", "refund", "T1", "--amount", "50000", "--ref", "R1", "--format", "json")
    data = json.loads(r.stdout)
    assert data["clawed_back"] == 50 and data["balance"] == 50 and data["full"] is False
    assert data["refunded_total"] == 50000 and data["already"] is False
    audit = c1.query("SELECT command, target, rows FROM audit_log WHERE command = 'purchases refund'")
    assert audit == [("purchases refund", "C1", 1)]
    r = c1.ok("purchases", "refund", "T1", "--amount", "50000", "--ref", "R1", "--format", "json")
    again = json.loads(r.stdout)
    assert again["already"] is True and again["balance"] == 50 and again["clawed_back"] == 0


# -- refunds-import ------------------------------------------------------------------------


def write(club: Club, name: str, text: str):  # noqa: ANN201
    path = club.root / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def shop(club: Club) -> Club:
    club.ok("members", "add", "C1", "Ann")
    club.ok("members", "add", "C2", "Bob")
    club.ok(*asof("2026-03-01"), "purchases", "record", "C1", "100000", "--ref", "T1")  # 100
    club.ok(*asof("2026-03-01"), "purchases", "record", "C1", "200000", "--ref", "T2")  # 200
    club.ok(*asof("2026-03-01"), "purchases", "record", "C2", "50000", "--ref", "T3")   # 50
    return club


REFUNDS = """ref,purchase_ref,amount,occurred_at
R1,T1,"30,000",2026-03-02 10:00
R2,T1,70000,2026-03-03
R3,T2,50001,2026-03-02
R4,T3,50000,2026-03-02
"""


def test_refunds_import_applies_every_row_and_a_rerun_changes_nothing(shop: Club) -> None:
    path = write(shop, "refunds.csv", REFUNDS)
    r = shop.ok(*asof("2026-03-05"), "purchases", "refunds-import", str(path), "--format", "json")
    data = json.loads(r.stdout)
    # T1: 30 + 70 (in full); T2: floor(200 x 50,001 / 200,000) = 50; T3: 50 (in full)
    assert data["refunded"] == 4 and data["clawed_back"] == 200 and data["full"] == 2
    assert data["rejected"] == 0 and data["already_imported"] == 0
    assert (shop.balance("C1"), shop.balance("C2")) == (150, 0)
    assert shop.query("SELECT ref, refunded_amount FROM purchases ORDER BY ref") == [
        ("T1", 100000), ("T2", 50001), ("T3", 50000)]
    assert shop.query("SELECT effective_at FROM ledger_entries WHERE idem_key = 'refund:R1'")[0][0] \
        .__str__().startswith("2026-03-02 10:00")
    check_ok(shop)
    before = shop.dump()
    r = shop.ok(*asof("2026-03-05"), "purchases", "refunds-import", str(path), "--format", "json")
    data = json.loads(r.stdout)
    assert data["already_imported"] == 4 and data["refunded"] == 0
    after = shop.dump()
    assert {k: v for k, v in after.items() if k != "audit_log"} == \
        {k: v for k, v in before.items() if k != "audit_log"}


def test_refunds_import_dry_run_reports_and_changes_nothing(shop: Club) -> None:
    path = write(shop, "refunds.csv", REFUNDS)
    before = shop.dump()
    r = shop.ok(*asof("2026-03-05"), "purchases", "refunds-import", str(path), "--dry-run")
    assert "4 refunds applied (2 purchases now refunded in full), 200 points clawed back" in r.stderr
    assert "dry run: nothing was written" in r.stderr
    assert shop.dump() == before


BAD_REFUNDS = """ref,purchase_ref,amount,occurred_at
R1,T1,30000,2026-03-02
R2,NOPE,1000,2026-03-02
R3,T1,80000,2026-03-02
R4,T2,abc,2026-03-02
R5,T2,1000,2026-02-01
R1,T2,1000,2026-03-02
R6,T3,1000,2026-04-01
R7,T3,1000,2026-03-02
R7,T3,1000,2026-03-02
"""


def test_refunds_import_rejects_bad_rows_naming_them_and_imports_nothing(shop: Club) -> None:
    path = write(shop, "refunds.csv", BAD_REFUNDS)
    before = shop.dump()
    r = shop.run(*asof("2026-03-05"), "purchases", "refunds-import", str(path))
    assert r.exit_code == 4
    err = r.stderr
    assert "6 row(s) rejected; nothing was imported" in err
    assert "row 3: no purchase with ref 'NOPE'" in err
    assert "row 4: a refund of 80,000 is more than what is left of purchase 'T1' (70,000 of 100,000)" in err
    assert "row 5: amount: 'abc' is not an amount" in err
    assert "row 6: refund 'R5' is dated before its purchase 'T2'" in err
    assert "row 7: ref: 'R1' appears earlier (row 2) with different data" in err
    assert "row 8: occurred_at: '2026-04-01' is in the future" in err
    assert shop.dump() == before


def test_refunds_import_skip_writes_rejects_and_applies_the_rest(shop: Club) -> None:
    path = write(shop, "refunds.csv", BAD_REFUNDS)
    rejects = shop.root / "bad.csv"
    r = shop.ok(*asof("2026-03-05"), "purchases", "refunds-import", str(path), "--on-error", "skip",
                "--rejects", str(rejects), "--format", "json")
    data = json.loads(r.stdout)
    # applied: R1 (T1 30,000 -> 30 points), R7 (T3 1,000 -> 1 point); R7 again is a duplicate
    assert (data["refunded"], data["duplicates"], data["rejected"]) == (2, 1, 6)
    assert (shop.balance("C1"), shop.balance("C2")) == (270, 49)
    lines = rejects.read_text().splitlines()
    assert lines[0] == "row,reason,ref,purchase_ref,amount,occurred_at,note"
    assert [ln.split(",")[0] for ln in lines[1:]] == ["3", "4", "5", "6", "7", "8"]
    check_ok(shop)
    # The rejects file, fixed, imports as it is (its row and reason columns are ignored).
    fixed = rejects.read_text().replace("NOPE", "T2").replace("80000", "20000") \
        .replace(",abc,", ",1000,").replace("2026-02-01", "2026-03-02") \
        .replace("R1,T2", "R8,T2").replace("2026-04-01", "2026-03-03")
    rejects.write_text(fixed)
    r = shop.ok(*asof("2026-03-05"), "purchases", "refunds-import", str(rejects), "--format", "json")
    assert json.loads(r.stdout)["refunded"] == 6
    check_ok(shop)


def test_refunds_import_header_problems_stop_before_anything(shop: Club) -> None:
    path = write(shop, "refunds.csv", "ref,purchase,amount,occurred_at\nR1,T1,1000,2026-03-02\n")
    before = shop.dump()
    r = shop.run(*asof("2026-03-05"), "purchases", "refunds-import", str(path))
    assert r.exit_code == 4
    assert "missing column(s) purchase_ref" in r.stderr and "unknown column(s) purchase" in r.stderr
    assert shop.dump() == before


def test_refunds_import_jsonl_and_batches(shop: Club) -> None:
    lines = [json.dumps({"ref": f"R{i}", "purchase_ref": "T2", "amount": 10000,
                         "occurred_at": "2026-03-02"}) for i in range(1, 21)]
    path = write(shop, "refunds.jsonl", "\n".join(lines) + "\n")
    r = shop.ok(*asof("2026-03-05"), "purchases", "refunds-import", str(path), "--batch-size", "3",
                "--format", "json")
    data = json.loads(r.stdout)
    # 20 x 10,000 = the whole 200,000: 20 x 10 points, across 7 batches
    assert data["refunded"] == 20 and data["clawed_back"] == 200 and data["full"] == 1
    assert shop.balance("C1") == 100
    check_ok(shop)
