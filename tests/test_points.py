"""`points adjust | balance | history | redeem | expiring | expire`, through the CLI.

Program: 1 point per 1,000 rials, point_value 100 rials, UTC, points expire 365 days after
they are earned (rolling). Lots with chosen expiry days are made with `adjust --expires`.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from conftest import SIMPLE_CONFIG, Club

CONFIG = SIMPLE_CONFIG.replace('[expiry]\nmode = "never"', '[expiry]\nmode = "rolling"\ndays = 365')
DAY = "2026-03-01"  # "today" in these tests unless a test says otherwise


def add_member(club: Club, code: str, n: int) -> None:
    club.ok("--as-of", "2026-01-01", "members", "add", code, f"Member {code}",
            "--phone", f"0912{n:07d}")


def pts(club: Club, *args: str, as_of: str = DAY):  # noqa: ANN201
    return club.run("--as-of", as_of, "points", *args)


def ok(club: Club, *args: str, as_of: str = DAY):  # noqa: ANN201
    r = pts(club, *args, as_of=as_of)
    assert r.exit_code == 0, f"exit {r.exit_code}\n{r.output}"
    return r


def lots(club: Club, code: str) -> list[tuple]:
    """(points, remaining, expires_on) of the member's lots, by id."""
    return [(p, r, str(e) if e else None) for p, r, e in club.query(
        "SELECT e.points, e.remaining, e.expires_on FROM ledger_entries e JOIN members m "
        "ON m.id = e.member_id WHERE m.code = :c AND e.remaining IS NOT NULL ORDER BY e.id",
        c=code)]


@pytest.fixture
def pc(club: Club) -> Club:
    club.write_config(CONFIG)
    add_member(club, "C1", 1)
    add_member(club, "C2", 2)
    return club


def three_lots(club: Club) -> None:
    """C1: 10 expiring 1 May, 10 expiring 1 April, 10 never... (365 days: 2027-03-01)."""
    ok(club, "adjust", "C1", "+10", "--reason", "may lot", "--expires", "2026-05-01")
    ok(club, "adjust", "C1", "10", "--reason", "april lot", "--expires", "2026-04-01")
    ok(club, "adjust", "C1", "10", "--reason", "default lot")


# -- adjust ------------------------------------------------------------------------------


def test_positive_adjust_is_a_lot_with_the_programs_expiry(pc: Club) -> None:
    r = ok(pc, "adjust", "C1", "+۵۰", "--reason", "goodwill, ticket 4411")
    assert r.stdout == "C1: +50 points (goodwill, ticket 4411); balance 50\n"
    # rolling 365 days from 2026-03-01 -> 2027-03-01
    assert lots(pc, "C1") == [(50, 50, "2027-03-01")]
    assert pc.query("SELECT kind, note, actor FROM ledger_entries") == [
        ("adjust", "goodwill, ticket 4411", pc.scalar("SELECT actor FROM audit_log "
                                                       "WHERE command = 'points adjust'"))]
    details = json.loads(pc.scalar("SELECT details FROM audit_log WHERE command = 'points adjust'"))
    assert details["points"] == 50 and details["reason"] == "goodwill, ticket 4411"
    ok(pc, "adjust", "C1", "5", "--reason", "x", "--expires", "2026-03-02")
    assert lots(pc, "C1")[1] == (5, 5, "2026-03-02")
    assert pc.balance("C1") == 55


def test_negative_adjust_takes_earliest_expiring_first(pc: Club) -> None:
    three_lots(pc)
    r = ok(pc, "adjust", "C1", "-15", "--reason", "duplicate credit")
    assert r.stdout == "C1: -15 points (duplicate credit); balance 15\n"
    # April lot first (10), then the May lot (5); the 2027 lot untouched.
    assert lots(pc, "C1") == [(10, 5, "2026-05-01"), (10, 0, "2026-04-01"), (10, 10, "2027-03-01")]
    pc.ok("db", "check")


def test_negative_adjust_never_below_zero(pc: Club) -> None:
    ok(pc, "adjust", "C1", "10", "--reason", "x")
    before = pc.dump()
    r = pts(pc, "adjust", "C1", "-11", "--reason", "too much")
    assert r.exit_code == 5
    assert "member C1 has 10 points available, 11 are needed" in r.stderr
    assert pc.dump() == before


@pytest.mark.parametrize(("args", "code", "message"), [
    (("C1", "0", "--reason", "x"), 4, "an adjustment of 0 points changes nothing"),
    (("C1", "5", "--reason", "  "), 4, "--reason"),
    (("C1", "5"), 2, "--reason"),
    (("C1", "abc", "--reason", "x"), 4, "points: 'abc' is not a whole number"),
    (("C1", "5", "--reason", "x", "--expires", "2026-03-01"), 4, "--expires: 2026-03-01 is not after today"),
    (("C1", "-5", "--reason", "x", "--expires", "2026-09-01"), 4, "--expires: only a positive"),
    (("C9", "5", "--reason", "x"), 3, "no member matches 'C9'"),
])
def test_adjust_bad_input(pc: Club, args: tuple[str, ...], code: int, message: str) -> None:
    before = pc.dump()
    r = pts(pc, "adjust", *args)
    assert r.exit_code == code, r.output
    assert message in r.stderr
    assert pc.dump() == before


def test_adjust_with_ref_is_idempotent(pc: Club) -> None:
    ok(pc, "adjust", "C1", "+20", "--reason", "x", "--ref", "T1")
    before = pc.dump()
    r = ok(pc, "adjust", "C1", "+20", "--reason", "x", "--ref", "T1")
    assert "already adjusted: T1 (no points changed)" in r.stderr
    assert pc.dump() == before
    # The same ref for a different adjustment is refused, naming it.
    r = pts(pc, "adjust", "C1", "+21", "--reason", "x", "--ref", "T1")
    assert r.exit_code == 5
    assert "ref 'T1' is already used by another adjustment (adjust of +20 points for member C1)" \
        in r.stderr
    r = pts(pc, "adjust", "C2", "+20", "--reason", "x", "--ref", "T1")
    assert r.exit_code == 5 and "for member C1" in r.stderr
    # A negative one with a ref: once only.
    ok(pc, "adjust", "C1", "-5", "--reason", "y", "--ref", "T2")
    ok(pc, "adjust", "C1", "-5", "--reason", "y", "--ref", "T2")
    assert pc.balance("C1") == 15
    assert pc.scalar("SELECT idem_key FROM ledger_entries WHERE points = -5") == "adjust:T2"


def test_closed_member_gets_no_points_but_can_be_corrected(pc: Club) -> None:
    ok(pc, "adjust", "C1", "10", "--reason", "x")
    with pc.engine.begin() as conn:
        conn.execute(text("UPDATE members SET status = 'closed' WHERE code = 'C1'"))
    before = pc.dump()
    r = pts(pc, "adjust", "C1", "10", "--reason", "x")
    assert r.exit_code == 5 and "member C1 is closed" in r.stderr
    assert pc.dump() == before
    ok(pc, "adjust", "C1", "-10", "--reason", "close out")
    assert pc.balance("C1") == 0


# -- balance and history -----------------------------------------------------------------


def test_balance_shows_available_pending_value_and_expiring(pc: Club) -> None:
    three_lots(pc)  # 10 expiring 2026-05-01, 10 expiring 2026-04-01, 10 expiring 2027-03-01
    with pc.engine.begin() as conn:  # 7 pending points, as a purchase in its holding period
        conn.execute(text(
            "INSERT INTO ledger_entries (member_id, kind, points, remaining, effective_at,"
            " pending_until, expires_on, actor, created_at) SELECT id, 'adjust', 7, 7,"
            " '2026-03-01', '2026-03-10', '2027-03-10', 't', '2026-03-01' FROM members"
            " WHERE code = 'C1'"))
        conn.execute(text("UPDATE members SET pending = 7 WHERE code = 'C1'"))
    r = pc.ok("--as-of", "2026-03-05", "--format", "json", "points", "balance", "C1")
    data = json.loads(r.stdout)
    # 30 available x 100 rials = 3,000; within 30 days of 5 March (to 4 April) only the
    # April lot (10).
    assert data["available"] == 30 and data["pending"] == 7 and data["value"] == 3000
    assert data["expiring_soon"] == 10 and data["next_expiry"] == "2026-04-01"
    r = pc.ok("--as-of", "2026-03-05", "points", "balance", "0912 000 0001")
    assert r.stdout == (
        "C1  Member C1\n"
        "available  30 points = 3,000 IRR\n"
        "pending    7 points (not yet redeemable)\n"
        "expiring   10 points within 30 days (next on 2026-04-01)\n")
    # On 15 April the April lot is past its day: not available any more, even before the
    # nightly expiry closes it; the 7 pending points became available on 10 March (the
    # look-up activates them); the May lot is now within 30 days: 30 - 10 + 7 = 27.
    data = json.loads(pc.ok("--as-of", "2026-04-15", "-f", "json", "points", "balance",
                            "C1").stdout)
    assert (data["available"], data["pending"], data["expiring_soon"], data["next_expiry"]) \
        == (27, 0, 10, "2026-05-01")
    # The ledger still holds the April lot until the nightly expiry closes it: 30 + 7.
    assert pc.balance("C1") == 37
    pc.ok("db", "check")


def test_balance_is_light(pc: Club) -> None:
    """No Rich and no Alembic are imported to answer a balance in table format."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from loyaltyctl.cli.main import app\n"
        f"sys.argv = ['loyaltyctl', '--config', {str(pc.config_path)!r}, '--db', {pc.db_url!r},"
        " 'points', 'balance', 'C1']\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'alembic'))\n"
        "print('HEAVY', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "LOYALTYCTL_CONFIG": "", "LOYALTYCTL_DB": ""})
    assert out.returncode == 0, out.stderr
    assert "available  0 points" in out.stdout
    assert "HEAVY []" in out.stdout


def test_history_running_balance_filters_and_paging(pc: Club) -> None:
    pc.ok("--as-of", "2026-02-01", "purchases", "record", "C1", "40000", "--ref", "P1",
          "--at", "2026-02-01 09:00")                                  # +40 -> 40
    ok(pc, "adjust", "C1", "-15", "--reason", "fix", as_of="2026-02-10")  # -15 -> 25
    ok(pc, "redeem", "C1", "5", "--ref", "R1", as_of="2026-02-20")      # -5 -> 20
    ok(pc, "adjust", "C1", "+3", "--reason", "gift", as_of="2026-03-01")  # +3 -> 23
    rows = json.loads(ok(pc, "history", "C1", "-f", "json").stdout)
    assert [(r["kind"], r["points"], r["balance"]) for r in rows] == [
        ("adjust", 3, 23), ("redeem", -5, 20), ("adjust", -15, 25), ("earn", 40, 40)]
    assert rows[3]["ref"] == "P1" and rows[3]["expires_on"] == "2027-02-01"
    assert rows[3]["remaining"] == 20  # 40 - 15 - 5
    # Filters keep the true running balance.
    rows = json.loads(ok(pc, "history", "C1", "--kind", "redeem,earn", "-f", "json").stdout)
    assert [(r["kind"], r["balance"]) for r in rows] == [("redeem", 20), ("earn", 40)]
    rows = json.loads(ok(pc, "history", "C1", "--from", "2026-02-10", "--to", "2026-02-20",
                         "-f", "json").stdout)
    assert [r["points"] for r in rows] == [-5, -15]
    rows = json.loads(ok(pc, "history", "C1", "--limit", "1", "--page", "2", "-f", "json").stdout)
    assert [r["points"] for r in rows] == [-5]
    table = ok(pc, "history", "C1").stdout
    assert "2026-02-01 09:00" in table and "+40" in table and "2027-02-01" in table
    r = pts(pc, "history", "C1", "--kind", "bonus")
    assert r.exit_code == 4 and "--kind: unknown kind 'bonus'" in r.stderr
    r = ok(pc, "history", "C2")
    assert "no ledger entries for C2 match" in r.stderr


# -- redeem ------------------------------------------------------------------------------


def test_redeem_for_a_discount_earliest_expiring_first(pc: Club) -> None:
    three_lots(pc)
    r = ok(pc, "redeem", "C1", "15", "--ref", "ORDER-1")
    # 15 points x 100 rials = 1,500 rials discount; 30 - 15 = 15 left.
    assert r.stdout == "C1: redeemed 15 points for a discount of 1,500 IRR; balance 15\n"
    assert lots(pc, "C1") == [(10, 5, "2026-05-01"), (10, 0, "2026-04-01"), (10, 10, "2027-03-01")]
    alloc = pc.query("SELECT l.expires_on, a.points FROM allocations a JOIN ledger_entries l "
                     "ON l.id = a.lot_id ORDER BY a.id")
    assert [(str(d), p) for d, p in alloc] == [("2026-04-01", 10), ("2026-05-01", 5)]
    entry = pc.query("SELECT kind, points, ref, idem_key, item_code FROM ledger_entries "
                     "WHERE kind = 'redeem'")
    assert entry == [("redeem", -15, "ORDER-1", "redeem:ORDER-1", None)]
    data = json.loads(ok(pc, "redeem", "C1", "15", "--ref", "ORDER-1", "-f", "json").stdout)
    assert data["already"] is True and data["balance"] == 15 and data["discount"] == 1500
    assert pc.balance("C1") == 15
    assert pc.scalar("SELECT COUNT(*) FROM audit_log WHERE command = 'points redeem'") == 1
    pc.ok("db", "check")


def test_redeem_skips_points_past_their_day(pc: Club) -> None:
    three_lots(pc)
    # On 2 April the April lot (10) is past its day: redeeming expires it first, so only
    # 20 are spendable; 21 is refused, 20 is fine and takes the May lot then the 2027 lot.
    before = pc.dump()
    r = pts(pc, "redeem", "C1", "21", "--ref", "R1", as_of="2026-04-02")
    assert r.exit_code == 5 and "member C1 has 20 points available, 21 are needed" in r.stderr
    assert pc.dump() == before  # the expiry it started was rolled back with the refusal
    ok(pc, "redeem", "C1", "20", "--ref", "R1", as_of="2026-04-02")
    assert pc.balance("C1") == 0
    assert lots(pc, "C1") == [(10, 0, "2026-05-01"), (10, 0, "2026-04-01"), (10, 0, "2027-03-01")]
    assert pc.scalar("SELECT SUM(points) FROM ledger_entries WHERE kind = 'expire'") == -10


@pytest.mark.parametrize(("setup", "args", "code", "message"), [
    ("short", ("C1", "11", "--ref", "R"), 5, "member C1 has 10 points available, 11 are needed"),
    ("zero", ("C2", "1", "--ref", "R"), 5, "member C2 has 0 points available"),
    ("debt", ("C1", "1", "--ref", "R"), 5, "member C1 has -5 points available"),
    ("suspended", ("C1", "1", "--ref", "R"), 5, "member C1 is suspended"),
    ("short", ("C1", "0", "--ref", "R"), 4, "points: 0 must be greater than zero"),
    ("short", ("C1", "1"), 2, "--ref"),
    ("short", ("C1", "1", "--ref", "P1"), 5, "ref 'P1' is already used by another redemption"),
])
def test_redeem_refusals_change_nothing(pc: Club, setup: str, args: tuple[str, ...], code: int,
                                        message: str) -> None:
    ok(pc, "adjust", "C1", "10", "--reason", "x")
    ok(pc, "adjust", "C2", "3", "--reason", "x")
    ok(pc, "redeem", "C2", "3", "--ref", "P1")
    with pc.engine.begin() as conn:
        if setup == "debt":  # a refund clawback took 15 from 10: the member owes 5
            conn.execute(text(
                "INSERT INTO ledger_entries (member_id, kind, points, effective_at, actor, created_at)"
                " SELECT id, 'clawback', -15, '2026-03-01', 't', '2026-03-01' FROM members"
                " WHERE code = 'C1'"))
            conn.execute(text(
                "INSERT INTO allocations (member_id, debit_id, lot_id, points) SELECT member_id,"
                " (SELECT MAX(id) FROM ledger_entries), id, 10 FROM ledger_entries WHERE"
                " kind = 'adjust' AND remaining = 10"))
            conn.execute(text("UPDATE ledger_entries SET remaining = 0 WHERE kind = 'adjust'"
                              " AND remaining = 10"))
            conn.execute(text("UPDATE members SET balance = -5 WHERE code = 'C1'"))
        if setup == "suspended":
            conn.execute(text("UPDATE members SET status = 'suspended' WHERE code = 'C1'"))
    pc.ok("db", "check")
    before = pc.dump()
    r = pts(pc, "redeem", *args)
    assert r.exit_code == code, r.output
    assert message in r.stderr
    assert pc.dump() == before


def test_redeem_needs_a_point_value(pc: Club) -> None:
    pc.write_config(CONFIG.replace("point_value = 100", "point_value = 0"))
    ok(pc, "adjust", "C1", "10", "--reason", "x")
    before = pc.dump()
    r = pts(pc, "redeem", "C1", "5", "--ref", "R1")
    assert r.exit_code == 5 and "program.point_value is 0" in r.stderr
    assert pc.dump() == before


# -- expiring and expire -----------------------------------------------------------------


def test_expiring_lists_who_loses_what_and_when(pc: Club) -> None:
    three_lots(pc)  # C1: 2026-04-01 (10), 2026-05-01 (10), 2027-03-01 (10)
    ok(pc, "adjust", "C2", "7", "--reason", "x", "--expires", "2026-03-20")
    ok(pc, "adjust", "C2", "4", "--reason", "x", "--expires", "2026-03-20")
    ok(pc, "adjust", "C2", "9", "--reason", "x", "--expires", "2026-03-31")
    ok(pc, "redeem", "C2", "2", "--ref", "R")  # takes 2 of the first 20 March lot
    rows = json.loads(ok(pc, "expiring", "--within", "30d", "-f", "json").stdout)
    # Window: after 1 March up to 31 March inclusive.
    assert rows == [
        {"expires_on": "2026-03-20", "member": "C2", "name": "Member C2", "points": 9, "lots": 2},
        {"expires_on": "2026-03-31", "member": "C2", "name": "Member C2", "points": 9, "lots": 1},
    ]
    # "۲m" = 2 x 30 days: up to 30 April, so C1's 1 April lot joins, its 1 May lot does not.
    rows = json.loads(ok(pc, "expiring", "--within", "۲m", "-f", "json").stdout)
    assert [(r["expires_on"], r["member"], r["points"]) for r in rows] == [
        ("2026-03-20", "C2", 9), ("2026-03-31", "C2", 9), ("2026-04-01", "C1", 10)]
    table = ok(pc, "expiring").stdout
    assert "2026-03-20" in table and "C2" in table and "2026-04-01" not in table
    r = pts(pc, "expiring", "--within", "soon")
    assert r.exit_code == 4 and "--within: 'soon' is not a duration" in r.stderr
    r = ok(pc, "expiring", "--within", "1d")
    assert "no points expire within 1 days after 2026-03-01" in r.stderr


def test_expire_summary_is_idempotent_and_audited(pc: Club) -> None:
    three_lots(pc)
    ok(pc, "adjust", "C2", "7", "--reason", "x", "--expires", "2026-04-01")
    ok(pc, "redeem", "C1", "4", "--ref", "R")  # 4 of C1's April lot: 6 of it left
    r = pc.ok("points", "expire", "--as-of", "2026-03-31")
    assert r.stderr.strip() == "nothing to expire as of 2026-03-31"
    # On 1 April: C1's April lot (6 left) and C2's (7): 13 points, 2 lots, 2 members.
    r = pc.ok("points", "expire", "--as-of", "2026-04-01")
    assert r.stderr.strip() == "expired 13 points from 2 lots of 2 members as of 2026-04-01"
    assert (pc.balance("C1"), pc.balance("C2")) == (20, 0)
    audit = pc.query("SELECT command, rows, details FROM audit_log WHERE command = 'points expire'")
    assert [(c, n, json.loads(d)) for c, n, d in audit] == [
        ("points expire", 2, {"as_of": "2026-04-01", "points": 13, "lots": 2, "members": 2})]
    before = pc.dump()
    r = pc.ok("points", "expire", "--as-of", "2026-04-01")
    assert r.stderr.strip() == "nothing to expire as of 2026-04-01"
    assert pc.dump() == before
    # The global --as-of works the same; JSON for scripts; --quiet for cron.
    r = pc.ok("--as-of", "2026-05-01", "-f", "json", "points", "expire")
    assert json.loads(r.stdout) == {"as_of": "2026-05-01", "points": 10, "lots": 1, "members": 1}
    r = pc.ok("--quiet", "points", "expire", "--as-of", "2026-05-02")
    assert r.output == ""
    pc.ok("db", "check")


def test_expire_writes_one_entry_per_member_with_an_allocation_per_lot(pc: Club) -> None:
    """A member whose three lots expire the same night gets one expiry entry (one history
    line), and each lot's remainder is an allocation of it, as a redemption's would be."""
    three_lots(pc)
    ok(pc, "adjust", "C1", "5", "--reason", "x", "--expires", "2026-04-15")
    ok(pc, "adjust", "C2", "7", "--reason", "y", "--expires", "2026-04-10")
    ok(pc, "redeem", "C1", "4", "--ref", "R")  # 4 of C1's April lot: 6 of it left
    r = pc.ok("points", "expire", "--as-of", "2026-05-01")
    # C1: April 6 + mid-April 5 + May 10 = 21 in 3 lots; C2: 7 in 1 lot.
    assert r.stderr.strip() == "expired 28 points from 4 lots of 2 members as of 2026-05-01"
    entries = pc.query(
        "SELECT m.code, e.id, e.points, e.note, e.source_id FROM ledger_entries e"
        " JOIN members m ON m.id = e.member_id WHERE e.kind = 'expire' ORDER BY m.code")
    assert [(c, p, n, s) for c, _, p, n, s in entries] == [
        ("C1", -21, "expired: 3 lots", None), ("C2", -7, "expired: 1 lot", None)]
    c1_entry = entries[0][1]
    taken = pc.query(
        "SELECT l.expires_on, a.points, l.remaining FROM allocations a"
        " JOIN ledger_entries l ON l.id = a.lot_id WHERE a.debit_id = :d ORDER BY l.expires_on",
        d=c1_entry)
    assert [(str(d), p, rem) for d, p, rem in taken] == [
        ("2026-04-01", 6, 0), ("2026-04-15", 5, 0), ("2026-05-01", 10, 0)]
    assert (pc.balance("C1"), pc.balance("C2")) == (10, 0)
    # One history line for the night.
    r = pc.ok("points", "history", "C1")
    assert r.stdout.count("expired: 3 lots") == 1
    pc.ok("db", "check")
    # db check proves an expiry takes only from lots with an expiry date, and from at least
    # one: here, by hand, the first lot C1's entry took loses its date, and C2's entry its
    # allocation.
    with pc.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_entries SET expires_on = NULL WHERE id ="
                          " (SELECT MIN(lot_id) FROM allocations WHERE debit_id = :d)"),
                     {"d": c1_entry})
        conn.execute(text("DELETE FROM allocations WHERE debit_id ="
                          " (SELECT id FROM ledger_entries WHERE kind = 'expire' AND points = -7)"))
    r = pc.run("db", "check")
    assert r.exit_code == 1
    assert r.stdout.count("expire_source: an expiry entry takes only from lots of its member") == 2


def test_expiry_entries_of_the_earlier_shape_still_pass_db_check(pc: Club) -> None:
    """Clubs expired before one entry per member kept one entry per lot, its source_id the
    lot: db check accepts those, and a later run adds entries of the new shape beside them."""
    three_lots(pc)
    ok(pc, "adjust", "C1", "5", "--reason", "x", "--expires", "2026-04-15")
    pc.ok("points", "expire", "--as-of", "2026-04-20")  # C1: the April and mid-April lots
    # Rewrite the run's one entry as the earlier code wrote it: an entry per lot.
    with pc.engine.begin() as conn:
        entry, member, token, at, actor = conn.execute(text(
            "SELECT id, member_id, ref, effective_at, actor FROM ledger_entries"
            " WHERE kind = 'expire'")).one()
        allocs = conn.execute(text("SELECT id, lot_id, points FROM allocations"
                                   " WHERE debit_id = :d ORDER BY lot_id"), {"d": entry}).all()
        assert len(allocs) == 2
        first, second = allocs
        conn.execute(text("UPDATE ledger_entries SET points = :p, source_id = :lot,"
                          " note = 'expired: adjust lot' WHERE id = :d"),
                     {"p": -first.points, "lot": first.lot_id, "d": entry})
        conn.execute(text(
            "INSERT INTO ledger_entries (member_id, kind, points, effective_at, source_id, ref,"
            " note, actor, created_at) VALUES (:m, 'expire', :p, :at, :lot, :ref,"
            " 'expired: adjust lot', :actor, :at)"),
            {"m": member, "p": -second.points, "at": at, "lot": second.lot_id, "ref": token,
             "actor": actor})
        new_id = conn.execute(text("SELECT MAX(id) FROM ledger_entries")).scalar()
        conn.execute(text("UPDATE allocations SET debit_id = :n WHERE id = :a"),
                     {"n": new_id, "a": second.id})
    pc.ok("db", "check")
    assert pc.balance("C1") == 20
    r = pc.ok("points", "expire", "--as-of", "2026-05-01")  # the May lot, in the new shape
    assert "expired 10 points from 1 lots of 1 members" in r.stderr
    assert pc.query("SELECT points, source_id IS NULL FROM ledger_entries WHERE kind = 'expire'"
                    " ORDER BY id") == [(-10, False), (-5, False), (-10, True)]
    assert pc.balance("C1") == 10
    pc.ok("db", "check")


def test_expire_refuses_while_another_run_holds_the_lock(pc: Club) -> None:
    from loyaltyctl.db.engine import make_engine
    from loyaltyctl.services.locks import job_lock

    ok(pc, "adjust", "C1", "5", "--reason", "x", "--expires", "2026-03-02")
    before = pc.dump()
    engine = make_engine(pc.db_url)
    try:
        with job_lock(engine=engine, name="points expire", holder="cron on host-a"):
            r = pc.run("points", "expire", "--as-of", "2026-03-05")
            assert r.exit_code == 5, r.output
            assert "points expire is already running (held by cron on host-a" in r.stderr
            assert {t: v for t, v in pc.dump().items() if t != "job_locks"} == \
                {t: v for t, v in before.items() if t != "job_locks"}
    finally:
        engine.dispose()
    r = pc.ok("points", "expire", "--as-of", "2026-03-05")
    assert "expired 5 points from 1 lots of 1 members" in r.stderr


def test_bad_as_of_for_expire(pc: Club) -> None:
    before = pc.dump()
    r = pc.run("points", "expire", "--as-of", "2026-13-01")
    assert r.exit_code == 4 and "--as-of" in r.stderr
    assert pc.dump() == before
