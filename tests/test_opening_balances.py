"""`points import FILE`: opening balances from another system, as tagged `opening` lots.

Program: 1 point per 1,000 rials, UTC, points valid 365 days (rolling); the imports run as of
2026-03-01, so the program's default expiry for an empty expires_on is 2027-03-01.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from conftest import SIMPLE_CONFIG, Club

DATA = Path(__file__).parent / "data" / "returns"
ROLLING = SIMPLE_CONFIG.replace('mode = "never"', 'mode = "rolling"\ndays = 365')
AS_OF = ("--as-of", "2026-03-01")


def opening_lots(club: Club) -> list[tuple]:
    rows = club.query(
        "SELECT m.code, e.points, e.remaining, e.expires_on, e.ref, e.note, e.idem_key "
        "FROM ledger_entries e JOIN members m ON m.id = e.member_id "
        "WHERE e.kind = 'opening' ORDER BY e.id")
    return [(c, p, r, date.fromisoformat(x) if isinstance(x, str) else x, ref, note, key)
            for c, p, r, x, ref, note, key in rows]


def check_ok(club: Club) -> None:
    r = club.run("db", "check")
    assert r.exit_code == 0, r.stdout + r.stderr


@pytest.fixture
def members(club: Club) -> Club:
    club.write_config(ROLLING)
    club.ok("members", "add", "C1", "Ann")
    club.ok("members", "add", "C2", "Bob", "--phone", "0912 123 4567", "--email", "Bob@Example.com")
    club.ok("members", "add", "C9", "Gone")
    club.ok("members", "close", "C9")
    return club


def copy(club: Club, name: str) -> Path:
    target = club.root / name
    shutil.copyfile(DATA / name, target)
    return target


def test_opening_balances_become_tagged_lots_not_purchases(members: Club) -> None:
    c = members
    path = copy(c, "opening.csv")
    r = c.ok(*AS_OF, "points", "import", str(path), "--format", "json")
    data = json.loads(r.stdout)
    assert (data["imported"], data["points"], data["members"], data["rejected"]) == (4, 1650, 2, 0)
    assert "4 opening balances, 1,650 points for 2 members" in r.stderr
    assert opening_lots(c) == [
        ("C1", 1200, 1200, date(2026, 12, 31), "OLD-1", "migrated from the old POS", "opening:OLD-1"),
        ("C2", 300, 300, date(2027, 3, 1), "OLD-2", "opening balance", "opening:OLD-2"),  # the rule
        ("C2", 50, 50, None, "OLD-3", "opening balance", "opening:OLD-3"),  # never
        ("C1", 100, 100, date(2027, 6, 30), "OLD-4", "second lot", "opening:OLD-4"),
    ]
    assert (c.balance("C1"), c.balance("C2")) == (1300, 350)
    assert c.query("SELECT COUNT(*) FROM purchases") == [(0,)]  # nothing invented
    assert c.query("SELECT command, target, rows FROM audit_log WHERE command = 'points import'") == [
        ("points import", "opening.csv", 4)]
    check_ok(c)
    # Opening lots are spent like any other: earliest-expiring first, never-expiring last.
    c.ok(*AS_OF, "points", "redeem", "C2", "320", "--ref", "O1")
    assert [lot[2] for lot in opening_lots(c) if lot[0] == "C2"] == [0, 30]
    check_ok(c)


def test_import_again_changes_nothing(members: Club) -> None:
    path = copy(members, "opening.csv")
    members.ok(*AS_OF, "points", "import", str(path))
    before = members.dump()
    r = members.ok(*AS_OF, "points", "import", str(path), "--format", "json")
    data = json.loads(r.stdout)
    assert (data["imported"], data["already_imported"]) == (0, 4)
    after = members.dump()
    assert {k: v for k, v in after.items() if k != "audit_log"} == \
        {k: v for k, v in before.items() if k != "audit_log"}


def test_dry_run_reports_and_changes_nothing(members: Club) -> None:
    path = copy(members, "opening.csv")
    before = members.dump()
    r = members.ok(*AS_OF, "points", "import", str(path), "--dry-run")
    assert "4 opening balances, 1,650 points for 2 members" in r.stderr
    assert "dry run: nothing was written" in r.stderr
    assert members.dump() == before


BAD_REASONS = {
    3: "member: no member matches 'NOPE'",
    4: "points: '0' must be greater than zero",
    5: "points: 'ten' is not a whole number",
    6: "expires_on: 2026-01-01 is not after today (2026-03-01)",
    7: "expires_on: '31/12/2026' is not a date",
    8: "ref: empty",
    9: "member C9 is closed",
    10: "ref: 'OLD-1' appears earlier in the file with different data",
}


def test_bad_rows_abort_the_whole_import_naming_each_row(members: Club) -> None:
    path = copy(members, "opening_bad.csv")
    before = members.dump()
    r = members.run(*AS_OF, "points", "import", str(path))
    assert r.exit_code == 4
    assert "8 row(s) rejected; nothing was imported" in r.stderr
    for row, reason in BAD_REASONS.items():
        assert f"row {row}: {reason}" in r.stderr
    assert members.dump() == before


def test_skip_imports_the_good_rows_and_writes_the_rejects(members: Club) -> None:
    path = copy(members, "opening_bad.csv")
    rejects = members.root / "rejects.csv"
    r = members.ok(*AS_OF, "points", "import", str(path), "--on-error", "skip",
                   "--rejects", str(rejects), "--format", "json")
    data = json.loads(r.stdout)
    # row 2 imported; row 11 repeats row 2 exactly: a duplicate, not an error
    assert (data["imported"], data["duplicates"], data["rejected"]) == (1, 1, 8)
    assert members.balance("C1") == 100
    lines = rejects.read_text().splitlines()
    assert lines[0] == "row,reason,member,points,expires_on,ref,note"
    assert [int(ln.split(",")[0]) for ln in lines[1:]] == sorted(BAD_REASONS)
    check_ok(members)


def test_header_problems_stop_before_anything(members: Club) -> None:
    path = members.root / "x.csv"
    path.write_text("member,pts,expires_on,ref\nC1,1,,R\n")
    before = members.dump()
    r = members.run(*AS_OF, "points", "import", str(path))
    assert r.exit_code == 4
    assert "missing column(s) points" in r.stderr and "unknown column(s) pts" in r.stderr
    assert members.dump() == before
    r = members.run(*AS_OF, "points", "import", str(members.root / "missing.csv"))
    assert r.exit_code == 4 and "file not found" in r.stderr


def test_jsonl_and_small_batches(members: Club) -> None:
    path = members.root / "open.jsonl"
    path.write_text("".join(json.dumps({"member": "C1", "points": 10 * i, "expires_on": "",
                                        "ref": f"J{i}"}) + "\n" for i in range(1, 12)))
    r = members.ok(*AS_OF, "points", "import", str(path), "--batch-size", "4", "--format", "json")
    assert json.loads(r.stdout)["imported"] == 11
    assert members.balance("C1") == 660  # 10 + 20 + ... + 110
    check_ok(members)


def test_an_opening_balance_pays_clawback_debt_first(members: Club) -> None:
    c = members
    c.ok(*AS_OF, "purchases", "record", "C1", "100000", "--ref", "T1")
    c.ok(*AS_OF, "points", "redeem", "C1", "70", "--ref", "O1")
    c.ok(*AS_OF, "purchases", "refund", "T1", "--ref", "R1")
    assert c.balance("C1") == -70
    path = c.root / "open.csv"
    path.write_text("member,points,expires_on,ref\nC1,100,,OLD-1\n")
    c.ok(*AS_OF, "points", "import", str(path))
    assert c.balance("C1") == 30
    assert opening_lots(c)[0][2] == 30  # 70 of the lot paid the clawback
    check_ok(c)
