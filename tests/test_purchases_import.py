"""`purchases import FILE`: the bulk path, through the CLI, on SQLite and PostgreSQL.

SIMPLE_CONFIG (conftest): 1 point per 1,000 rials, no minimum, floor, UTC, never expires.
Rows are numbered as in a spreadsheet: the header is row 1.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Club

HEADER = "ref,member,amount,occurred_at,category,channel"
AS_OF = "2026-03-31"


def add_member(club: Club, code: str, n: int, *extra: str) -> None:
    club.ok("--as-of", "2026-01-01", "members", "add", code, f"Member {code}",
            "--phone", f"0912{n:07d}", *extra)


@pytest.fixture
def members(club: Club) -> Club:
    add_member(club, "C1", 1)
    add_member(club, "C2", 2, "--email", "two@example.com")
    add_member(club, "C3", 3)
    return club


def write(club: Club, name: str, *lines: str, header: str = HEADER) -> Path:
    path = club.root / name
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def imp(club: Club, path: Path | str, *args: str, as_of: str = AS_OF, env=None):  # noqa: ANN001, ANN201
    return club.run("--as-of", as_of, "purchases", "import", str(path), *args, env=env)


def counts(result) -> dict:  # noqa: ANN001
    return json.loads(result.stdout)


def without_audit(dump: dict) -> dict:
    return {k: v for k, v in dump.items() if k != "audit_log"}


def test_import_credits_points_balances_and_audits(members: Club) -> None:
    f = write(members, "p.csv",
              "R1,C1,\"12,500\",2026-03-01 10:00,Groceries,Store",   # 12 points
              "R2,09120000001,3000,2026-03-02,,",                     # C1 by phone: 3 points
              "R3,TWO@example.com,5000,2026-03-03 10:00:00,,web",     # C2 by e-mail: 5 points
              "R4,C3,999,2026-03-04 10:00,,")                         # 999/1000 -> 0 points
    r = imp(members, f, "--format", "json")
    assert r.exit_code == 0, r.output
    assert counts(r) == {"rows": 4, "imported": 4, "points": 20, "pending_points": 0,
                         "members": 3, "amount": 21499, "already_imported": 0,
                         "duplicates": 0, "rejected": 0, "members_created": 0,
                         "dry_run": False}
    assert "imported 4 purchase(s), 20 points, 3 member(s)" in r.stderr
    assert members.query("SELECT ref, amount, currency, points, category, channel FROM purchases "
                         "ORDER BY ref") == [
        ("R1", 12500, "IRR", 12, "groceries", "store"), ("R2", 3000, "IRR", 3, None, None),
        ("R3", 5000, "IRR", 5, None, "web"), ("R4", 999, "IRR", 0, None, None)]
    # One earn lot per purchase with points (none for R4), keyed by ref.
    assert members.query("SELECT p.ref, l.kind, l.points, l.remaining, l.idem_key FROM ledger_entries l "
                         "JOIN purchases p ON p.id = l.purchase_id ORDER BY p.ref") == [
        ("R1", "earn", 12, 12, "purchase:R1"), ("R2", "earn", 3, 3, "purchase:R2"),
        ("R3", "earn", 5, 5, "purchase:R3")]
    assert [members.balance(c) for c in ("C1", "C2", "C3")] == [15, 5, 0]
    audit = members.query("SELECT target, rows, details FROM audit_log "
                          "WHERE command = 'purchases import'")
    assert len(audit) == 1 and audit[0][:2] == ("p.csv", 4)
    assert json.loads(audit[0][2])["points"] == 20
    members.ok("db", "check")


# -- the same points as `purchases record` ---------------------------------------------------

RICH_CONFIG = """
[program]
name = "Rich Club"
currency = "IRR"
timezone = "Asia/Tehran"
phone_region = "IR"

[earning]
spend = 100000
points = 1
min_purchase = 200000
rounding = "half_up"
excluded_categories = ["tobacco"]
pending_days = 14

[earning.category_multipliers]
cosmetics = 2
electronics = 0.5

[expiry]
mode = "end_of_period"
period = "quarter"
periods = 1

[tiers]
metric = "spend"
window_days = 365

[[tiers.levels]]
code = "bronze"
name = "Bronze"
threshold = 0

[[tiers.levels]]
code = "silver"
name = "Silver"
threshold = 3000000
multiplier = 1.5
retention_days = 90

[[campaigns]]
code = "nowruz"
name = "Nowruz double"
starts = 2026-03-15
ends = 2026-03-25
multiplier = 2
flat_bonus = 5
categories = ["groceries", "cosmetics"]

[[campaigns]]
code = "web-bonus"
name = "Web bonus"
starts = 2026-03-01
ends = 2026-03-31
flat_bonus = 3
channels = ["web"]
"""

# (ref suffix, amount, local time, category, channel): crossing the silver threshold
# (3,000,000 spent) half-way, a campaign window, a local-midnight edge (2026-03-14 23:30
# Tehran is 20:00 UTC the same day; 2026-03-15 00:10 Tehran is still 14 March in UTC),
# an excluded category, amounts under the minimum, and purchases inside the 14-day
# pending window (as of 2026-03-31) and before it.
ROWS = [
    ("01", "1,250,000", "2026-03-01 09:15", "groceries", "store"),
    ("02", "150000", "2026-03-02 10:00", "groceries", "store"),
    ("03", "900000", "2026-03-05 18:00", "tobacco", "web"),
    ("04", "1049999", "2026-03-14 23:30", "cosmetics", "store"),
    ("05", "2000000", "2026-03-15 00:10", "cosmetics", "web"),
    ("06", "760000", "2026-03-20 12:00", "electronics", "web"),
    ("07", "330000", "2026-03-25 23:59", "Groceries", " Store "),
    ("08", "4500000", "2026-03-26 08:00", "", "app"),
    ("09", "250000", "2026-03-30 17:45", "groceries", "web"),
]


def test_points_equal_purchases_record(club: Club) -> None:
    """Import for members I1, I2 and `purchases record` the same rows for R1, R2: every
    purchase, lot, balance and tier must come out the same (batch size 1, so tier upgrades
    between purchases happen at the same points as with one record per purchase)."""
    club.write_config(RICH_CONFIG)
    for i, code in enumerate(("I1", "I2", "R1", "R2"), start=1):
        add_member(club, code, i)
    lines = []
    for who in ("1", "2"):
        for suffix, amount, at, cat, ch in ROWS:
            lines.append(f"I{who}-{suffix},I{who},\"{amount}\",{at},{cat},{ch}")
            r = club.run("--as-of", AS_OF, "purchases", "record", f"R{who}", amount,
                         "--ref", f"R{who}-{suffix}", "--at", at, "--category", cat,
                         "--channel", ch)
            assert r.exit_code == 0, r.output
    r = imp(club, write(club, "p.csv", *lines), "--batch-size", "1", "--format", "json")
    assert r.exit_code == 0, r.output
    assert counts(r)["imported"] == 2 * len(ROWS)

    def view(prefix: str) -> dict:
        purchases = club.query(
            "SELECT p.ref, p.amount, p.occurred_at, p.category, p.channel, p.points, p.campaign, "
            "p.currency FROM purchases p JOIN members m ON m.id = p.member_id "
            "WHERE m.code LIKE :c ORDER BY p.ref", c=prefix + "%")
        lots = club.query(
            "SELECT l.ref, l.kind, l.points, l.remaining, l.effective_at, l.expires_on, "
            "l.pending_until, l.campaign, l.idem_key FROM ledger_entries l "
            "JOIN members m ON m.id = l.member_id WHERE m.code LIKE :c ORDER BY l.ref, l.kind",
            c=prefix + "%")
        people = club.query("SELECT balance, pending, tier FROM members WHERE code LIKE :c "
                            "ORDER BY code", c=prefix + "%")
        tiers = club.query("SELECT m.code, t.from_tier, t.to_tier, t.reason FROM tier_history t "
                           "JOIN members m ON m.id = t.member_id WHERE m.code LIKE :c "
                           "ORDER BY m.code, t.id", c=prefix + "%")
        rename = {f"{prefix}{w}": f"X{w}" for w in ("1", "2")}

        def strip(row: tuple) -> tuple:
            return tuple(rename.get(str(v)[:2], str(v)[:2]) + str(v)[2:]
                         if isinstance(v, str) and v[:2] in rename else v for v in row)

        def norm(rows: list) -> list:
            out = []
            for row in rows:
                out.append(tuple(v.replace(f"{prefix}1-", "X1-").replace(f"{prefix}2-", "X2-")
                                 if isinstance(v, str) else v for v in row))
            return out

        return {"purchases": norm(purchases), "lots": norm(lots), "people": people,
                "tiers": [strip(t) for t in tiers]}

    imported, recorded = view("I"), view("R")
    assert imported == recorded
    # Not vacuous: pending and available lots, a campaign, a tier upgrade, zero-point rows.
    lots = imported["lots"]
    assert any(lot[6] is not None for lot in lots) and any(lot[6] is None for lot in lots)
    assert any(lot[7] == "nowruz" for lot in lots)
    assert any(p[5] == 0 for p in imported["purchases"])
    assert [t[2] for t in imported["tiers"]].count("silver") == 2
    club.ok("db", "check")


def test_default_batches_use_the_tier_at_import_time(club: Club) -> None:
    club.write_config(SIMPLE_CONFIG_WITH_SILVER)
    add_member(club, "C1", 1)
    # 4,000,000 then 1,000,000 in one batch: both at bronze (x1): 4,000 + 1,000 points; the
    # upgrade to silver (threshold 3,000,000) happens after the batch.
    f = write(club, "p.csv", "A,C1,4000000,2026-03-01 10:00,,", "B,C1,1000000,2026-03-02 10:00,,")
    r = imp(club, f)
    assert r.exit_code == 0, r.output
    assert club.query("SELECT ref, points FROM purchases ORDER BY ref") == [("A", 4000), ("B", 1000)]
    assert club.query("SELECT tier FROM members") == [("silver",)]
    # The next import sees silver (x2): 1,000,000 -> 2,000 points.
    r = imp(club, write(club, "q.csv", "C,C1,1000000,2026-03-03 10:00,,"))
    assert r.exit_code == 0, r.output
    assert club.scalar("SELECT points FROM purchases WHERE ref = 'C'") == 2000


SIMPLE_CONFIG_WITH_SILVER = """
[program]
currency = "IRR"
timezone = "UTC"

[earning]
spend = 1000
points = 1

[expiry]
mode = "never"

[[tiers.levels]]
code = "bronze"
name = "Bronze"
threshold = 0

[[tiers.levels]]
code = "silver"
name = "Silver"
threshold = 3000000
multiplier = 2
"""


# -- idempotency -----------------------------------------------------------------------------


def test_reimport_skips_every_row(members: Club) -> None:
    f = write(members, "p.csv", "R1,C1,12000,2026-03-01 10:00,,", "R2,C2,3000,2026-03-02 10:00,,")
    assert imp(members, f).exit_code == 0
    before = members.dump()
    r = imp(members, f, "--format", "json")
    assert r.exit_code == 0, r.output
    c = counts(r)
    assert (c["rows"], c["imported"], c["already_imported"], c["points"]) == (2, 0, 2, 0)
    assert "imported 0 purchase(s)" in r.stderr and "2 already imported" in r.stderr
    assert without_audit(members.dump()) == without_audit(before)
    # A file mixing old and new rows imports only the new ones.
    g = write(members, "q.csv", "R1,C1,12000,2026-03-01 10:00,,", "R3,C3,7000,2026-03-03 10:00,,")
    c = counts(imp(members, g, "--format", "json"))
    assert (c["imported"], c["already_imported"], c["points"]) == (1, 1, 7)
    assert members.balance("C3") == 7


def test_ref_repeated_in_the_file(members: Club, tmp_path: Path) -> None:
    f = write(members, "p.csv",
              "R1,C1,12000,2026-03-01 10:00,,",
              "R2,C2,3000,2026-03-02 10:00,,",
              "R1,09120000001,\"12,000\",2026-03-01 10:00:00,,",   # the same purchase: duplicate
              "R2,C2,3001,2026-03-02 10:00,,")                    # R2 with another amount
    before = members.dump()
    r = imp(members, f)
    assert r.exit_code == 4
    assert "row 5: ref: 'R2' appears earlier in the file with different data" in r.stderr
    assert members.dump() == before
    rejects = tmp_path / "rejects.csv"
    r = imp(members, f, "--on-error", "skip", "--rejects", str(rejects), "--format", "json")
    assert r.exit_code == 0, r.output
    c = counts(r)
    assert (c["imported"], c["duplicates"], c["rejected"], c["points"]) == (2, 1, 1, 15)
    assert [row["row"] for row in csv.DictReader(rejects.open())] == ["5"]
    assert members.query("SELECT ref, amount FROM purchases ORDER BY ref") == [
        ("R1", 12000), ("R2", 3000)]


def test_batch_boundaries(members: Club, tmp_path: Path) -> None:
    """Batches of 2 rows: duplicates and conflicts across batches, members over batches."""
    f = write(members, "p.csv",
              "R1,C1,1000,2026-03-01 10:00,,",     # batch 1
              "R2,C2,2000,2026-03-01 11:00,,",
              "R3,C3,3000,2026-03-01 12:00,,",     # batch 2
              "R1,C1,1000,2026-03-01 10:00,,",     # duplicate of row 2, an earlier batch
              "R4,C1,4000,2026-03-01 13:00,,",     # batch 3
              "R2,C3,2000,2026-03-01 11:00,,",     # R2 for another member: rejected
              "R5,C2,5000,2026-03-01 14:00,,")     # batch 4
    rejects = tmp_path / "rejects.csv"
    r = imp(members, f, "--on-error", "skip", "--rejects", str(rejects), "--format", "json",
            env={"LOYALTYCTL_IMPORT_BATCH": "2"})
    assert r.exit_code == 0, r.output
    c = counts(r)
    assert (c["rows"], c["imported"], c["duplicates"], c["rejected"], c["points"],
            c["members"]) == (7, 5, 1, 1, 15, 3)
    assert list(csv.DictReader(rejects.open()))[0]["row"] == "7"
    # C1: 1 + 4, C2: 2 + 5, C3: 3
    assert [members.balance(m) for m in ("C1", "C2", "C3")] == [5, 7, 3]
    # The hidden --batch-size gives the same result; the ids run in file order.
    assert members.query("SELECT ref FROM purchases ORDER BY id") == [
        ("R1",), ("R2",), ("R3",), ("R4",), ("R5",)]
    members.ok("db", "check")


def test_member_cache_full_keeps_the_batch_keys(
        members: Club, monkeypatch: pytest.MonkeyPatch) -> None:
    """The member-key cache is bounded: when a batch fills it, keys the batch found in it
    are kept (found on the 1,000,000-purchase benchmark: clearing it all rejected later rows
    of members it had just looked up as 'no member matches')."""
    from loyaltyctl.services import purchase_import

    monkeypatch.setattr(purchase_import, "_KEY_CACHE_LIMIT", 2)
    f = write(members, "p.csv",
              "R1,C1,1000,2026-03-01 10:00,,",                 # batch 1: C1, C2 cached
              "R2,C2,2000,2026-03-01 11:00,,",
              "R3,C1,3000,2026-03-01 12:00,,",                 # batch 2: C1 cached, C3 new
              "R4,C3,4000,2026-03-01 13:00,,",                 #   -> the cache is full
              "R5,09120000002,5000,2026-03-01 14:00,,",        # batch 3: C2 by phone, C3
              "R6,C3,6000,2026-03-01 15:00,,")
    r = imp(members, f, "--format", "json", env={"LOYALTYCTL_IMPORT_BATCH": "2"})
    assert r.exit_code == 0, r.output
    c = counts(r)
    assert (c["imported"], c["rejected"], c["points"]) == (6, 0, 21)
    assert [members.balance(m) for m in ("C1", "C2", "C3")] == [4, 7, 10]
    members.ok("db", "check")


def test_batch_size_env_must_be_a_number(members: Club) -> None:
    f = write(members, "p.csv", "R1,C1,1000,2026-03-01 10:00,,")
    r = imp(members, f, env={"LOYALTYCTL_IMPORT_BATCH": "lots"})
    assert r.exit_code == 4 and "LOYALTYCTL_IMPORT_BATCH" in r.stderr


# -- bad rows --------------------------------------------------------------------------------

BAD_ROWS = [
    "G1,C1,12000,2026-03-01 10:00,,",          # row 2: good
    "B1,C1,12x00,2026-03-01 10:00,,",          # row 3: amount
    "B2,C1,1000,2026-02-30 10:00,,",           # row 4: date
    "B3,NOBODY,1000,2026-03-01 10:00,,",       # row 5: unknown member
    "B4,C3,1000,2026-03-01 10:00,,",           # row 6: suspended member
    "B5,C1,1000,2026-04-02 10:00,,",           # row 7: after --as-of
    "B6,C1,-500,2026-03-01 10:00,,",           # row 8: negative amount
    ",C1,1000,2026-03-01 10:00,,",             # row 9: no ref
    "G2,C2,3000,2026-03-01 10:00,,",           # row 10: good
    "B7,C1,1000,2026-03-01 10:00,,,extra",     # row 11: too many fields
]


def test_all_or_nothing_lists_the_bad_rows(members: Club) -> None:
    members.ok("members", "suspend", "C3")
    before = members.dump()
    r = imp(members, write(members, "p.csv", *BAD_ROWS))
    assert r.exit_code == 4
    err = r.stderr
    assert "p.csv: 8 row(s) rejected; nothing was imported" in err
    for line in ("row 3: amount: '12x00' is not an amount",
                 "row 4: occurred_at: '2026-02-30' is not a valid date",
                 "row 5: member: no member matches 'NOBODY'",
                 "row 6: member C3 is suspended",
                 "row 7: occurred_at: '2026-04-02 10:00' is in the future",
                 "row 8: amount: '-500' must be greater than zero",
                 "row 9: ref: empty",
                 "row 11: has 7 fields, the header has 6"):
        assert line in err, line
    assert "--on-error skip" in err
    assert members.dump() == before


def test_skip_writes_rejects_and_imports_the_rest(members: Club, tmp_path: Path) -> None:
    members.ok("members", "suspend", "C3")
    rejects = tmp_path / "rejects.csv"
    r = imp(members, write(members, "p.csv", *BAD_ROWS), "--on-error", "skip",
            "--rejects", str(rejects), "--format", "json")
    assert r.exit_code == 0, r.output
    c = counts(r)
    assert (c["rows"], c["imported"], c["rejected"], c["points"]) == (10, 2, 8, 15)
    assert "8 rejected (see" in r.stderr
    rows = list(csv.DictReader(rejects.open(encoding="utf-8")))
    assert list(rows[0]) == ["row", "ref", "member", "amount", "occurred_at", "category",
                             "channel", "reason"]
    assert [r_["row"] for r_ in rows] == ["3", "4", "5", "6", "7", "8", "9", "11"]
    assert rows[0]["ref"] == "B1" and rows[0]["amount"] == "12x00"
    assert rows[0]["reason"] == "amount: '12x00' is not an amount"
    assert rows[3]["member"] == "C3" and rows[3]["reason"] == "member C3 is suspended"
    assert rows[7]["ref"] == "" and rows[7]["reason"] == "has 7 fields, the header has 6"
    assert members.query("SELECT ref FROM purchases ORDER BY ref") == [("G1",), ("G2",)]
    assert members.balance("C1") == 12 and members.balance("C2") == 3
    # The rejects file, fixed, imports as it is (its row and reason columns are ignored).
    text = rejects.read_text(encoding="utf-8").replace("12x00", "1200")
    fixed = tmp_path / "fixed.csv"
    fixed.write_text(text, encoding="utf-8")
    c = counts(imp(members, fixed, "--on-error", "skip", "--rejects", str(tmp_path / "r2.csv"),
                   "--format", "json"))
    assert (c["imported"], c["rejected"]) == (1, 7)
    assert members.balance("C1") == 13


def test_skip_needs_a_rejects_file(members: Club) -> None:
    f = write(members, "p.csv", "R1,C1,1000,2026-03-01 10:00,,")
    r = imp(members, f, "--on-error", "skip")
    assert r.exit_code == 2 and "--rejects" in r.stderr
    r = imp(members, f, "--on-error", "skip", "--rejects", str(f))
    assert r.exit_code == 2 and "must not be the file being imported" in r.stderr
    assert f.read_text().count("\n") == 2
    assert members.query("SELECT COUNT(*) FROM purchases") == [(0,)]


def test_other_currency_is_rejected(members: Club) -> None:
    f = write(members, "p.csv", "R1,C1,1000,2026-03-01 10:00,,,irr", "R2,C1,1000,2026-03-01 10:00,,,USD",
              header=HEADER + ",currency")
    r = imp(members, f)
    assert r.exit_code == 4
    assert "row 3: currency: 'USD' is not the program's currency IRR" in r.stderr


@pytest.mark.parametrize(("header", "message"), [
    ("ref,member,occurred_at,category,channel", "row 1: missing column(s) amount"),
    ("ref,member,amount,occurred_at,category,channel,store_id,note",
     "row 1: unknown column(s) store_id, note"),
    ("ref,member,amount,when", "row 1: missing column(s) occurred_at; unknown column(s) when"),
    ("ref,member,amount,amount,occurred_at", "row 1: repeated column(s) amount"),
])
def test_missing_and_unknown_columns(members: Club, header: str, message: str) -> None:
    before = members.dump()
    r = imp(members, write(members, "p.csv", "R1,C1,1000,2026-03-01 10:00", header=header))
    assert r.exit_code == 4
    assert f"p.csv: {message}" in r.stderr
    assert "expected columns: ref, member, amount, occurred_at" in r.stderr
    assert members.dump() == before


def test_empty_file_and_missing_file(members: Club, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    r = imp(members, empty)
    assert r.exit_code == 4 and "empty.csv: the file is empty" in r.stderr
    r = imp(members, tmp_path / "nope.csv")
    assert r.exit_code == 4 and "nope.csv: file not found" in r.stderr
    header_only = write(members, "h.csv")
    c = counts(imp(members, header_only, "--format", "json"))
    assert (c["rows"], c["imported"]) == (0, 0)


# -- dry run, members ------------------------------------------------------------------------


def test_dry_run_reports_and_changes_nothing(members: Club) -> None:
    f = write(members, "p.csv", "R1,C1,12000,2026-03-01 10:00,,", "R2,C2,3000,2026-03-02 10:00,,",
              "R1,C1,12000,2026-03-01 10:00,,")
    before = members.dump()
    r = imp(members, f, "--dry-run", "--format", "json")
    assert r.exit_code == 0, r.output
    c = counts(r)
    assert (c["imported"], c["points"], c["members"], c["duplicates"], c["dry_run"]) == (
        2, 15, 2, 1, True)
    assert "would import 2 purchase(s), 15 points, 2 member(s)" in r.stderr
    assert "dry run: nothing was changed" in r.stderr
    assert members.dump() == before  # no audit row either


def test_unknown_members_rejected_or_created(members: Club, tmp_path: Path) -> None:
    f = write(members, "p.csv",
              "R1,NEW1,5000,2026-03-01 10:00,,",
              "R2,0935 111 2233,6000,2026-03-02 10:00,,",
              "R3,New@Example.com,7000,2026-03-03 10:00,,",
              "R4,NEW1,1000,2026-03-04 10:00,,",
              "R5,+989351112233,2000,2026-03-05 10:00,,",   # the same person as row 3's phone
              "R6,bad key!,1000,2026-03-05 10:00,,")
    before = members.dump()
    r = imp(members, f)
    assert r.exit_code == 4
    assert "row 2: member: no member matches 'NEW1' (--create-members" in r.stderr
    assert members.dump() == before

    rejects = tmp_path / "rejects.csv"
    r = imp(members, f, "--create-members", "--on-error", "skip", "--rejects", str(rejects),
            "--format", "json")
    assert r.exit_code == 0, r.output
    c = counts(r)
    assert (c["imported"], c["members_created"], c["rejected"], c["points"]) == (5, 3, 1, 21)
    assert "3 member(s) enrolled" in r.stderr
    new = members.query("SELECT code, name, phone, email, status, balance, joined_at FROM members "
                        "WHERE code NOT IN ('C1', 'C2', 'C3') ORDER BY code")
    assert [row[:6] for row in new] == [
        ("989351112233", "989351112233", "+989351112233", None, "active", 8),
        ("E" + __import__("hashlib").sha1(b"new@example.com").hexdigest()[:10].upper(),
         "E" + __import__("hashlib").sha1(b"new@example.com").hexdigest()[:10].upper(),
         None, "new@example.com", "active", 7),
        ("NEW1", "NEW1", None, None, "active", 6),
    ]
    # Joined when their first purchase in the file happened.
    assert str(new[2][6]).startswith("2026-03-01 10:00")
    assert list(csv.DictReader(rejects.open()))[0]["reason"].startswith(
        "member: cannot enrol 'bad key!'")
    members.ok("db", "check")


def test_members_created_get_the_enrolment_hooks(club: Club) -> None:
    club.write_config(club.config_path.read_text() + "\n[bonuses]\nsignup = 50\n")
    f = write(club, "p.csv", "R1,NEW1,5000,2026-03-01 10:00,,")
    r = imp(club, f, "--create-members")
    assert r.exit_code == 0, r.output
    # 50 signup points (after_enrolment) + 5 purchase points.
    assert club.balance("NEW1") == 55
    assert sorted(k for (k,) in club.query("SELECT kind FROM ledger_entries")) == ["earn", "signup"]


def test_debt_is_settled_from_imported_points(members: Club) -> None:
    """A clawback left C1 at -100: the import's lot pays the debt (allocations agree)."""
    members.ok("--as-of", "2026-03-01", "purchases", "record", "C1", "100000", "--ref", "P1",
               "--at", "2026-03-01 09:00")
    members.ok("--as-of", "2026-03-01", "points", "adjust", "C1", "-100", "--reason", "test")
    members.ok("--as-of", "2026-03-02", "purchases", "refund", "P1", "--ref", "RF1")
    assert members.balance("C1") == -100
    r = imp(members, write(members, "p.csv", "R1,C1,150000,2026-03-10 10:00,,"))
    assert r.exit_code == 0, r.output
    assert members.balance("C1") == 50
    assert members.scalar("SELECT remaining FROM ledger_entries WHERE idem_key = 'purchase:R1'") == 50
    members.ok("db", "check")


@pytest.mark.parametrize("flush_after", [200_000, 0])
def test_balances_added_up_over_batches_still_settle_debt(
        members: Club, flush_after: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The import adds up the balance changes of its batches and writes them once at the
    end (or whenever more than BALANCE_FLUSH members wait: 0 = after every batch). C1 owes
    100: the first lot pays 60 of it, the next one the 40 left, the last one nothing."""
    from loyaltyctl.services import purchase_import

    monkeypatch.setattr(purchase_import, "BALANCE_FLUSH", flush_after)
    members.ok("--as-of", "2026-03-01", "purchases", "record", "C1", "100000", "--ref", "P1",
               "--at", "2026-03-01 09:00")
    members.ok("--as-of", "2026-03-01", "points", "adjust", "C1", "-100", "--reason", "test")
    members.ok("--as-of", "2026-03-02", "purchases", "refund", "P1", "--ref", "RF1")
    assert members.balance("C1") == -100
    f = write(members, "p.csv", "R1,C1,60000,2026-03-10 10:00,,",   # 60 points: -100 -> -40
              "R2,C2,5000,2026-03-10 11:00,,",                      # 5
              "R3,C1,70000,2026-03-10 12:00,,",                     # 70: -40 -> 30
              "R4,C1,10000,2026-03-10 13:00,,")                     # 10: 30 -> 40
    r = imp(members, f, "--batch-size", "1")
    assert r.exit_code == 0, r.output
    assert (members.balance("C1"), members.balance("C2")) == (40, 5)
    assert members.query("SELECT ref, remaining FROM ledger_entries WHERE kind = 'earn' "
                         "AND ref LIKE 'R%' ORDER BY ref") == [
        ("R1", 0), ("R2", 5), ("R3", 30), ("R4", 10)]
    members.ok("db", "check")


def test_ref_look_up_with_any_characters(members: Club) -> None:
    """The batch's refs travel as one parameter (on PostgreSQL joined by a separator); a ref
    holding the separator is looked up all the same. (A file cannot carry one: control
    characters are refused; the look-up does not rely on that.)"""
    from sqlmodel import Session

    from loyaltyctl.services.purchase_import import _Store

    assert imp(members, write(members, "p.csv", "R1,C1,1000,2026-03-01 10:00,,")).exit_code == 0
    rid = members.scalar("SELECT id FROM purchases WHERE ref = 'R1'")
    with Session(members.engine) as s:
        store = _Store(s)
        try:
            assert store.existing_refs(["R1", "X\x1fY"]) == {"R1": rid}
            assert store.existing_refs(["R1", "R2"]) == {"R1": rid}
            assert store.existing_refs(["R2"]) == {}
        finally:
            store.close()


# -- formats and text ------------------------------------------------------------------------


def test_persian_digits_and_jalali_dates(members: Club) -> None:
    members.write_config(members.config_path.read_text().replace(
        'timezone = "UTC"', 'timezone = "UTC"\ncalendar = "jalali"'))
    f = write(members, "p.csv",
              "R۱,۰۹۱۲۰۰۰۰۰۰۱,\"۱۲٬۵۰۰\",۱۴۰۴-۱۲-۱۰ ۱۰:۰۰,,",   # C1 by phone; 1404-12-10 = 2026-03-01
              "R2,C2,٣٠٠٠,1404-12-11,,")                        # Arabic-Indic digits
    r = imp(members, f, "--format", "json", as_of="1405-01-11")  # 2026-03-31
    assert r.exit_code == 0, r.output
    assert counts(r)["points"] == 15
    rows = members.query("SELECT ref, amount, occurred_at FROM purchases ORDER BY id")
    assert [(ref, amount, str(at)[:16]) for ref, amount, at in rows] == [
        ("R۱", 12500, "2026-03-01 10:00"), ("R2", 3000, "2026-03-02 00:00")]


DATA = Path(__file__).parent / "data" / "purchases"


def test_bom_and_crlf(members: Club) -> None:
    """An Excel "CSV UTF-8" file: byte-order mark, CRLF, headers in another case with spaces,
    quoted thousands, a phone in Persian digits, an ISO 'T' time."""
    raw = (DATA / "excel-bom-crlf.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # the file is what it claims
    r = imp(members, DATA / "excel-bom-crlf.csv", "--format", "json")
    assert r.exit_code == 0, r.output
    assert counts(r)["points"] == 15  # 12,500 -> 12 and 3,000 -> 3
    assert members.query("SELECT p.ref, m.code, p.category, p.channel FROM purchases p "
                         "JOIN members m ON m.id = p.member_id ORDER BY p.ref") == [
        ("X1", "C1", "groceries", "store"), ("X2", "C2", None, "web")]


def test_json_lines_input(members: Club, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join([
        json.dumps({"ref": "J1", "member": "C1", "amount": 12000, "occurred_at": "2026-03-01 10:00",
                    "category": "Food"}),
        json.dumps({"ref": "J2", "member": "C2", "amount": "3,000.0", "occurred_at": "2026-03-02"}),
        "",
        "{not json",
        json.dumps({"ref": "J3", "member": "C1", "amount": 5, "occurred_at": "2026-03-02",
                    "shop": 7}),
        json.dumps({"ref": "J4", "member": "C1", "occurred_at": "2026-03-02"}),
        json.dumps(["J5"]),
        json.dumps({"ref": "J6", "member": "C3", "amount": 7000.5, "occurred_at": "2026-03-02"}),
    ]) + "\n", encoding="utf-8")
    before = members.dump()
    r = imp(members, path)
    assert r.exit_code == 4
    for line in ("row 4: not valid JSON", "row 5: unknown field(s) shop",
                 "row 6: missing field(s) amount", "row 7: not a JSON object",
                 "row 8: amount: '7000.5' has more than 0 decimal places"):
        assert line in r.stderr, line
    assert members.dump() == before
    rejects = tmp_path / "rejects.jsonl"
    r = imp(members, path, "--on-error", "skip", "--rejects", str(rejects), "--format", "json")
    assert r.exit_code == 0, r.output
    assert (counts(r)["imported"], counts(r)["points"]) == (2, 15)
    bad = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [b["row"] for b in bad] == [4, 5, 6, 7, 8]
    assert bad[4]["ref"] == "J6" and bad[4]["amount"] == "7000.5"
    assert members.query("SELECT ref, category FROM purchases ORDER BY ref") == [
        ("J1", "food"), ("J2", None)]


def test_standard_input(members: Club) -> None:
    data = f"{HEADER}\nR1,C1,12000,2026-03-01 10:00,,\n"
    r = members.run("--as-of", AS_OF, "purchases", "import", "-", "--format", "json", input=data)
    assert r.exit_code == 0, r.output
    assert counts(r)["imported"] == 1 and members.balance("C1") == 12


# -- the memoised parsers give exactly what the shared ones give ----------------------------

ZONES = ["UTC", "Asia/Tehran", "Europe/London", "America/New_York", "Australia/Lord_Howe"]


@given(
    zone=st.sampled_from(ZONES),
    when=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 12, 31)),
    sep=st.sampled_from([" ", "T"]),
    seconds=st.booleans(),
    pending_days=st.sampled_from([0, 3]),
)
@settings(max_examples=300, deadline=None)
def test_memoised_parsers_agree_with_the_shared_ones(zone: str, when: datetime, sep: str,
                                                      seconds: bool, pending_days: int) -> None:
    from loyaltyctl.config import parse_config
    from loyaltyctl.services.purchase_import import _Parsers
    from loyaltyctl.services.purchases import earn_lot_terms
    from loyaltyctl.timeutil import local_date, parse_instant

    config = parse_config({"program": {"timezone": zone},
                           "earning": {"pending_days": pending_days},
                           "expiry": {"mode": "end_of_period", "period": "month"}})
    now = datetime(2041, 1, 1)
    fast = _Parsers(config, now)
    text = when.strftime(f"%Y-%m-%d{sep}%H:%M" + (":%S" if seconds else ""))
    # Twice: the second call is answered from the memo.
    for _ in range(2):
        utc = fast.instant(text)
        assert utc == parse_instant(text, tz=zone)
        assert fast.local_date(utc) == local_date(utc, zone)
        assert fast.lot_terms(utc) == earn_lot_terms(config=config, occurred_at=utc, now=now)
    amount = str(when.microsecond)
    assert fast.money(amount) == int(amount)


@pytest.mark.parametrize(("zone", "text"), [
    ("Europe/London", "2026-03-29 01:30"),        # a local hour that does not exist
    ("Europe/London", "2026-10-25 01:30:15"),     # a local hour that happens twice
    ("America/New_York", "2026-03-08 02:59:59"),
    ("America/New_York", "2026-11-01 01:00"),
    ("Australia/Lord_Howe", "2026-04-05 01:45"),  # a half-hour shift inside the hour
    ("Australia/Lord_Howe", "2026-04-05 01:15"),
    ("Australia/Lord_Howe", "2026-10-04 02:15"),
    ("Asia/Tehran", "2022-03-22 00:30"),          # Tehran's last spring-forward
])
def test_memoised_parsers_around_clock_changes(zone: str, text: str) -> None:
    from loyaltyctl.config import parse_config
    from loyaltyctl.services.purchase_import import _Parsers
    from loyaltyctl.timeutil import local_date, parse_instant

    fast = _Parsers(parse_config({"program": {"timezone": zone}}), datetime(2041, 1, 1))
    for _ in range(2):
        assert fast.instant(text) == parse_instant(text, tz=zone)
        for minutes in (0, 29, 30, 59):
            utc = parse_instant(text, tz=zone).replace(minute=minutes)
            assert fast.local_date(utc) == local_date(utc, zone)


def test_memoised_parsers_fall_back_for_unusual_text() -> None:
    from loyaltyctl.config import parse_config
    from loyaltyctl.services.purchase_import import _Parsers

    fast = _Parsers(parse_config({"program": {"timezone": "Asia/Tehran", "decimals": 2}}),
                    datetime(2030, 1, 1))
    assert fast.instant("2026-03-01 10:00+02:00") == datetime(2026, 3, 1, 8, 0)
    assert fast.instant("۲۰۲۶-۰۳-۰۱ ۱۰:۰۰") == datetime(2026, 3, 1, 6, 30)
    assert fast.instant("2026-03-01") == datetime(2026, 2, 28, 20, 30)
    assert fast.money("12") == 1200 and fast.money("12.5") == 1250
    with pytest.raises(ValueError):
        fast.instant("2026-03-01 10:60")
    with pytest.raises(ValueError):
        fast.money("9" * 16)


def test_a_ref_recorded_meanwhile_by_another_run(members: Club, monkeypatch) -> None:
    """The look-up said R1 was new, but another run wrote it before our insert (possible on
    PostgreSQL only, where writers do not queue for one lock): refused, nothing imported."""
    from loyaltyctl.services import purchase_import

    members.ok("--as-of", AS_OF, "purchases", "record", "C2", "3000", "--ref", "R1",
               "--at", "2026-03-01 10:00")
    before = members.dump()
    monkeypatch.setattr(purchase_import._Store, "existing_refs", lambda self, refs: {})
    r = imp(members, write(members, "p.csv", "R0,C1,1000,2026-03-01 09:00,,",
                           "R1,C1,12000,2026-03-01 10:00,,"))
    assert r.exit_code == 5
    assert "another run recorded some of these purchases" in r.stderr
    assert "run the import again" in r.stderr
    assert members.dump() == before


def test_a_broken_file_late_in_the_file_changes_nothing(members: Club, tmp_path: Path) -> None:
    """Rows are read one batch ahead in a second thread: a file that breaks after the first
    batches were written still stops the import with its message, and nothing stays."""
    good = [f"R{i},C1,1000,2026-03-01 10:00,," for i in range(6)]
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(("\n".join([HEADER, *good, "R9,C1,1000,2026-03-01 10:00,caf\xe9,"]) + "\n")
                    .encode("latin-1"))
    before = members.dump()
    r = imp(members, bad, "--batch-size", "2")
    assert r.exit_code == 4
    assert "latin1.csv: not UTF-8 text (line 8" in r.stderr
    assert members.dump() == before
    quote = write(members, "quote.csv", *good, 'R9,C1,1000,"2026-03-01 10:00,,')
    r = imp(members, quote, "--batch-size", "2", "--on-error", "skip", "--rejects",
            str(tmp_path / "rejects.csv"))
    assert r.exit_code == 4 and "quote.csv: row 8: unexpected end of data" in r.stderr
    assert members.dump() == before
