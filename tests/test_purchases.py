"""`purchases record | list`: idempotency by ref, refusals, output, filters, hooks.

SIMPLE_CONFIG (conftest): 1 point per 1,000 rials, no minimum, floor, UTC, never expires.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from conftest import Club


def add_member(club: Club, code: str, n: int) -> None:
    club.ok("--as-of", "2026-01-01", "members", "add", code, f"Member {code}",
            "--phone", f"0912{n:07d}")


@pytest.fixture
def two(club: Club) -> Club:
    add_member(club, "C1", 1)
    add_member(club, "C2", 2)
    return club


def record(club: Club, *args: str, as_of: str = "2026-03-31"):  # noqa: ANN201
    return club.run("--as-of", as_of, "purchases", "record", *args)


def test_record_prints_points_and_balance_and_audits(two: Club) -> None:
    r = record(two, "C1", "25,500", "--ref", "T1", "--at", "2026-03-02 10:00")
    assert r.exit_code == 0, r.output
    # 25,500 / 1000 = 25.5 -> floor 25
    assert r.stdout == "C1: 25,500 IRR -> 25 points; balance 25\n"
    assert two.query("SELECT ref, amount, currency, points, category, channel FROM purchases") == [
        ("T1", 25500, "IRR", 25, None, None)]
    lot = two.query("SELECT kind, points, remaining, idem_key, purchase_id FROM ledger_entries")
    assert lot == [("earn", 25, 25, "purchase:T1", 1)]
    audit = two.query("SELECT command, target, rows, details FROM audit_log "
                      "WHERE command = 'purchases record'")
    assert len(audit) == 1 and audit[0][:3] == ("purchases record", "C1", 1)
    assert json.loads(audit[0][3]) == {"ref": "T1", "amount": 25500, "points": 25, "campaign": None}


def test_json_output_is_an_object(two: Club) -> None:
    r = record(two, "C1", "3000", "--ref", "T1", "--at", "2026-03-02 10:00", "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data == {
        "member": "C1", "ref": "T1", "amount": 3000, "currency": "IRR",
        "occurred_at": "2026-03-02 10:00:00", "points": 3, "campaign": None,
        "pending_until": None, "expires_on": None, "balance": 3, "pending": 0,
        "already_recorded": False,
    }


def test_same_ref_twice_is_a_noop_that_says_so(two: Club) -> None:
    record(two, "C1", "10000", "--ref", "T1", "--at", "2026-03-02 10:00")
    before = two.dump()
    r = record(two, "C1", "10,000", "--ref", "T1", "--at", "2026-03-02 10:00")
    assert r.exit_code == 0
    assert "already recorded: T1 (no points added)" in r.stderr
    assert r.stdout == ""
    assert two.dump() == before  # no second lot, no audit row
    assert two.balance("C1") == 10
    # JSON says so too.
    r = record(two, "C1", "10000", "--ref", "T1", "--at", "2026-03-02 10:00", "-f", "json")
    assert json.loads(r.stdout)["already_recorded"] is True
    assert json.loads(r.stdout)["points"] == 0
    # Without --at ("now"), re-running the very same command stays a no-op.
    record(two, "C2", "5000", "--ref", "T2")
    before = two.dump()
    r = record(two, "C2", "5000", "--ref", "T2")
    assert r.exit_code == 0 and "already recorded: T2" in r.stderr
    assert two.dump() == before


@pytest.mark.parametrize(("args", "named"), [
    (("C1", "10001", "--at", "2026-03-02 10:00"), "amount 10,000"),
    (("C2", "10000", "--at", "2026-03-02 10:00"), "member C1"),
    (("C1", "10000", "--at", "2026-03-02 11:00"), "time 2026-03-02 10:00:00 UTC"),
])
def test_same_ref_with_different_data_is_refused(two: Club, args: tuple[str, ...],
                                                 named: str) -> None:
    record(two, "C1", "10000", "--ref", "T1", "--at", "2026-03-02 10:00")
    before = two.dump()
    r = record(two, args[0], args[1], "--ref", "T1", *args[2:])
    assert r.exit_code == 5
    assert "purchase ref 'T1' is already recorded with different data" in r.stderr
    assert named in r.stderr
    assert two.dump() == before


@pytest.mark.parametrize("status", ["suspended", "closed"])
def test_inactive_member_is_refused(two: Club, status: str) -> None:
    with two.engine.begin() as conn:
        conn.execute(text("UPDATE members SET status = :s WHERE code = 'C1'"), {"s": status})
    before = two.dump()
    r = record(two, "C1", "10000", "--ref", "T1")
    assert r.exit_code == 5
    assert f"member C1 is {status}" in r.stderr
    assert two.dump() == before


@pytest.mark.parametrize(("amount", "code", "message"), [
    ("0", 4, "amount: 0 must be greater than zero"),
    ("-100", 4, "amount: -100 must be greater than zero"),
    ("12x", 4, "amount: '12x' is not an amount"),
    ("1.5", 4, "has more than 0 decimal places"),
])
def test_bad_amount(two: Club, amount: str, code: int, message: str) -> None:
    before = two.dump()
    r = two.run("purchases", "record", "C1", "--ref", "T1", "--", amount)
    assert r.exit_code == code, r.output
    assert message in r.stderr
    assert two.dump() == before


def test_unknown_member_future_time_and_bad_ref(two: Club) -> None:
    before = two.dump()
    r = record(two, "NOPE", "10000", "--ref", "T1")
    assert r.exit_code == 3 and "no member matches 'NOPE'" in r.stderr
    r = record(two, "C1", "10000", "--ref", "T1", "--at", "2026-04-02 10:00")
    assert r.exit_code == 4 and "--at: 2026-04-02 10:00 UTC is in the future" in r.stderr
    r = record(two, "C1", "10000", "--ref", "  ")
    assert r.exit_code == 4 and "--ref" in r.stderr
    r = record(two, "C1", "10000", "--ref", "T1", "--at", "yesterday")
    assert r.exit_code == 4 and "--at:" in r.stderr
    assert two.dump() == before


def test_member_found_by_phone_and_currency_is_the_programs(two: Club) -> None:
    r = record(two, "+98 912 000 0002", "7000", "--ref", "T1", "--at", "2026-03-03")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("C2: 7,000 IRR -> 7 points")
    assert two.query("SELECT m.code, p.currency FROM purchases p JOIN members m "
                     "ON m.id = p.member_id") == [("C2", "IRR")]


def test_hook_runs_once_with_the_purchase_ids(two: Club, monkeypatch) -> None:
    from loyaltyctl.services import hooks

    calls = []
    monkeypatch.setattr(hooks, "after_purchases",
                        lambda **kw: calls.append((list(kw["purchase_ids"]), kw["actor"])))
    record(two, "C1", "1000", "--ref", "T1")
    record(two, "C1", "1000", "--ref", "T1")  # a repeat records nothing, calls nothing
    ids = [r[0] for r in two.query("SELECT id FROM purchases")]
    assert len(calls) == 1 and calls[0][0] == ids


def test_list_filters_and_paging(two: Club) -> None:
    rows = [("C1", "10000", "A", "2026-01-05 10:00", "food", "store"),
            ("C1", "20000", "B", "2026-02-05 10:00", "cosmetics", "web"),
            ("C2", "30000", "C", "2026-02-06 10:00", "food", "web"),
            ("C2", "40000", "D", "2026-03-07 10:00", "Food", "store")]
    for member, amount, ref, at, cat, ch in rows:
        r = record(two, member, amount, "--ref", ref, "--at", at, "--category", cat,
                   "--channel", ch)
        assert r.exit_code == 0, r.output

    def refs(*args: str) -> list[str]:
        r = two.ok("purchases", "list", "--format", "json", *args)
        return [p["ref"] for p in json.loads(r.stdout)]

    assert refs() == ["D", "C", "B", "A"]  # newest first
    assert refs("--member", "C1") == ["B", "A"]
    assert refs("--category", "FOOD") == ["D", "C", "A"]
    assert refs("--channel", "web") == ["C", "B"]
    assert refs("--from", "2026-02-01", "--to", "2026-02-28") == ["C", "B"]
    assert refs("--to", "2026-02-05") == ["B", "A"]  # --to a date includes that whole day
    assert refs("--limit", "3", "--page", "2") == ["A"]
    data = json.loads(two.ok("purchases", "list", "-f", "json", "--member", "C2",
                             "--limit", "1").stdout)
    assert data == [{"member": "C2", "ref": "D", "occurred_at": "2026-03-07 10:00:00",
                     "amount": 40000, "refunded": 0, "currency": "IRR", "category": "food",
                     "channel": "store", "points": 40, "campaign": None}]
    table = two.ok("purchases", "list", "--member", "C1").stdout
    assert "2026-02-05 10:00" in table and "20,000" in table
    r = two.run("purchases", "list", "--member", "C9")
    assert r.exit_code == 3
    r = two.ok("purchases", "list", "--category", "toys")
    assert "no purchases match" in r.stderr


def test_db_check_holds_after_purchases(two: Club) -> None:
    for i in range(5):
        record(two, "C1" if i % 2 else "C2", str(1000 * (i + 1)), "--ref", f"T{i}")
    r = two.ok("db", "check")
    assert "invariants hold" in r.stderr
    # The purchase/lot invariant catches a purchase whose points disagree with its lot.
    with two.engine.begin() as conn:
        conn.execute(text("UPDATE purchases SET points = points + 1 WHERE ref = 'T3'"))
    r = two.run("db", "check")
    assert r.exit_code == 1
    assert "purchase_points: a purchase's recorded points equal the points of its earn lot: " \
           "T3, 5, 4" in r.stdout


def test_overlong_category_is_refused_naming_the_option(club: Club) -> None:
    club.ok("members", "add", "L1", "Long")
    before = club.dump()
    r = club.run("purchases", "record", "L1", "5000", "--ref", "T-LONG", "--category", "x" * 65)
    assert r.exit_code == 4
    assert "--category: at most 64 characters" in r.stderr
    assert club.dump() == before
