"""Hostile input for the bulk imports: `purchases import`, `members import`, `points import`
and `purchases refunds-import`, on SQLite and PostgreSQL.

The corpus is tests/data/bad/<command>/ (small text files, byte-exact: see its
.gitattributes); encodings, binary garbage and 10 MB fields are generated here. Every bad
file must give exit 4, a message naming the row (and the column where there is one), a
short message (a 10 MB value is never echoed back), and leave the database exactly as it
was. The files that must be ACCEPTED (byte-order mark, Windows line ends, Persian digits,
header only, identical duplicate rows, SQL-looking text) are checked row by row.

Counts are printed at the end (run with -s).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import BACKEND, Club

DATA = Path(__file__).parent / "data" / "bad"
AS_OF = "2026-03-31"
COMMANDS = {
    "purchases": ("purchases", "import"),
    "members": ("members", "import"),
    "points": ("points", "import"),
    "refunds": ("purchases", "refunds-import"),
}
BIG = 10 * 1024 * 1024  # a 10 MB field
TOTALS = {"bad inputs": 0, "bad rows": 0, "accepted inputs": 0, "rows compared": 0}


@pytest.fixture(scope="module", autouse=True)
def _report():  # noqa: ANN202
    yield
    print(f"\nhostile input ({BACKEND}): {TOTALS['bad inputs']} bad inputs "
          f"({TOTALS['bad rows']} bad rows named) refused with exit 4 and the database "
          f"unchanged; {TOTALS['accepted inputs']} awkward but valid inputs accepted; "
          f"{TOTALS['rows compared']} database rows compared before/after")


@pytest.fixture
def shop(club: Club) -> Club:
    """Three members (C3 suspended) and two purchases to refund."""
    people = club.root / "people.csv"
    people.write_text("code,name,phone,status\nC1,Member 1,09120000001,active\n"
                      "C2,Member 2,09120000002,active\nC3,Member 3,09120000003,suspended\n",
                      encoding="utf-8")
    club.ok("--as-of", "2026-01-01", "members", "import", str(people))
    club.ok("--as-of", "2026-03-01", "purchases", "record", "C1", "100000", "--ref", "PR1")
    club.ok("--as-of", "2026-03-02", "purchases", "record", "C2", "50000", "--ref", "PR2")
    return club


def refused(club: Club, kind: str, path: Path, expected: list[str], *args: str) -> str:
    """Run the import of `path`: exit 4, every expected line in the message, nothing changed."""
    before = club.dump()
    r = club.run("--as-of", AS_OF, *COMMANDS[kind], str(path), *args)
    assert r.exit_code == 4, (path.name, r.exit_code, r.stderr[:2000])
    err = r.stderr
    assert err.startswith("Error: "), err[:2000]
    assert "Traceback" not in err and "unexpected error" not in err
    assert len(err) < 3000, f"{len(err):,} characters of message"  # nothing huge echoed back
    for line in expected:
        assert line in err, (line, err)
    after = club.dump()
    assert after == before
    TOTALS["bad inputs"] += 1
    TOTALS["bad rows"] += sum(1 for line in expected if line.lstrip().startswith("row "))
    TOTALS["rows compared"] += sum(len(rows) for rows in after.values())
    return err


# -- the committed corpus: refused -------------------------------------------------------------

REFUSED: dict[str, list[str]] = {
    "purchases/empty.csv": ["empty.csv: the file is empty (expected a header row: ref, member, "
                            "amount, occurred_at)"],
    "purchases/blank_lines.csv": ["row 1: missing column(s) ref, member, amount, occurred_at"],
    "purchases/missing_column.csv": ["row 1: missing column(s) amount",
                                     "expected columns: ref, member, amount, occurred_at"],
    "purchases/extra_column.csv": ["row 1: unknown column(s) discount"],
    "purchases/field_count.csv": ["2 row(s) rejected; nothing was imported",
                                  "row 2: has 3 fields, the header has 4",
                                  "row 3: has 6 fields, the header has 4"],
    "purchases/amounts.csv": [
        "7 row(s) rejected; nothing was imported",
        "row 2: amount: '99999999999999999999999' is too large",
        "row 3: amount: '1e9' is not an amount",
        "row 4: amount: 'NaN' is not an amount",
        "row 5: amount: '12.5' has more than 0 decimal places",
        "row 6: amount: '-5000' must be greater than zero",
        "row 7: amount: '0' must be greater than zero",
        "row 8: amount: '' is not an amount"],
    "purchases/dates.csv": [
        "6 row(s) rejected",
        "row 2: occurred_at: '2026-02-30' is not a valid date",
        "row 3: occurred_at: '2100-01-01' is in the future",
        "row 4: occurred_at: '31/12/2025' is not a date",
        "row 5: occurred_at: 'yesterday' is not a date",
        "row 6: occurred_at: empty",
        "row 7: occurred_at: '2026-03-01 25:00' is not a valid time"],
    "purchases/duplicates.csv": ["1 row(s) rejected",
                                 "row 5: ref: 'R2' appears earlier in the file with different data"],
    "purchases/injection_member.csv": [
        "row 2: member: no member matches \"x' OR '1'='1\"",
        "row 3: member: no member matches 'C1; DROP TABLE members'"],
    "purchases/control.csv": ["row 2: category: contains a control character (U+001B)",
                              "row 3: ref: contains a control character (U+0000)",
                              "row 4: member: contains a control character (U+0007)"],
    "purchases/unclosed_quote.csv": ["row 3: unexpected end of data", "check the quoting"],
    "purchases/currency.csv": ["row 2: currency: 'USD' is not the program's currency IRR"],
    "purchases/members.csv": ["row 2: member: no member matches 'NOPE'",
                              "row 3: member C3 is suspended"],
    "purchases/bad.jsonl": ["row 1: not valid JSON", "row 2: not a JSON object",
                            "row 3: missing field(s) occurred_at", "row 4: unknown field(s) discount",
                            "row 5: true/false where text or a number was expected",
                            "row 6: a list or object where text or a number was expected"],
    "members/empty.csv": ["empty.csv: the file is empty (no header row)"],
    "members/missing_column.csv": ["row 1: missing required column(s) name"],
    "members/extra_column.csv": ["row 1: unknown column(s) shoe_size"],
    "members/field_count.csv": ["row 2: has 2 fields, the header has 3",
                                "row 3: has 4 fields, the header has 3"],
    "members/values.csv": [
        "9 row(s) rejected, nothing was imported",
        "row 2: phone: '12' is not a valid phone number for region IR",
        "row 3: email: 'a@' is not a valid e-mail address",
        "row 4: birth_date: '2026-02-30' is not a valid date",
        "row 5: birth_date: '2999-01-01' is out of range: dates run from 1900-01-01",
        "row 6: status: 'vip' is not a status",
        "row 7: card_number: '#!' is not a card number",
        "row 8: joined_at: 'tomorrow' is not a date",
        "row 9: name: is empty",
        "row 10: code: is empty"],
    "members/enormous.csv": [
        "row 2: phone: '" + "9" * 40 + "' is not a phone number",
        "row 3: card_number: '" + "7" * 100 + "' is not a card number",
        "row 4: code: '" + "N" * 65 + "' is not a member code (up to 64 characters",
        "row 5: name: name is longer than 200 characters"],
    "members/duplicates.csv": ["row 3: code: N1 duplicates row 2",
                               "row 4: phone: +989121111111 duplicates row 2"],
    "members/control.csv": ["row 2: name: contains a control character (U+001B)",
                            "row 3: code: contains a control character (U+0000)",
                            "row 4: tags: contains a control character (U+0007)"],
    "members/bad.jsonl": ["row 1: not valid JSON", "row 2: not a JSON object",
                          "row 3: name: {\"first\": \"Sara\"} is not text", "row 4: missing name"],
    "points/numbers.csv": [
        "6 row(s) rejected; nothing was imported",
        "row 2: points: '9223372036854775807' is implausibly large",
        "row 3: points: '1000000000000000000000000000000' is implausibly large",
        "row 4: points: '-5' must be greater than zero",
        "row 5: points: '0' must be greater than zero",
        "row 6: points: '1.5' is not a whole number",
        "row 7: points: '' is not a whole number"],
    "points/dates.csv": ["row 2: expires_on: 2020-01-01 is not after today (2026-03-31)",
                         "row 3: expires_on: '2026-02-30' is not a valid date",
                         "row 4: expires_on: 'soon' is not a date"],
    "points/control.csv": ["row 2: note: contains a control character (U+0000)"],
    "points/duplicates.csv": ["row 3: ref: 'O1' appears earlier in the file with different data"],
    "refunds/amounts.csv": [
        "row 2: a refund of 200,000 is more than what is left of purchase 'PR1' (100,000 of 100,000)",
        "row 3: amount: '99999999999999999999999' is too large",
        "row 4: amount: '-5' must be greater than zero",
        "row 5: amount: '0' must be greater than zero"],
    "refunds/refs.csv": ["row 2: no purchase with ref 'NOPE'",
                         "row 4: ref: 'F2' appears earlier (row 3) with different data"],
    "refunds/dates.csv": ["row 2: refund 'F1' is dated before its purchase 'PR1'",
                          "row 3: occurred_at: '2100-01-01' is in the future",
                          "row 4: occurred_at: '2026-13-01' is not a valid date"],
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_corpus_file_is_refused_naming_its_rows(shop: Club, name: str) -> None:
    kind = name.split("/", 1)[0]
    refused(shop, kind, DATA / name, REFUSED[name])


def test_every_corpus_file_is_tested() -> None:
    files = {str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file()} - {".gitattributes"}
    assert files == set(REFUSED) | set(ACCEPTED)


def test_skip_mode_imports_the_good_row_and_lists_the_bad_ones(shop: Club, tmp_path: Path) -> None:
    """--on-error skip: the one good row of amounts.csv is imported, the seven others are in
    the rejects file with their row number and reason."""
    rejects = tmp_path / "rejects.csv"
    r = shop.run("--as-of", AS_OF, "purchases", "import", str(DATA / "purchases/amounts.csv"),
                 "--on-error", "skip", "--rejects", str(rejects))
    assert r.exit_code == 0, r.stderr
    assert "imported 1 purchase(s), 5 points" in r.stderr and "7 rejected" in r.stderr
    assert shop.query("SELECT ref, amount FROM purchases WHERE ref = 'R8'") == [("R8", 5000)]
    lines = rejects.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "row,ref,member,amount,occurred_at,category,reason"
    assert [ln.split(",", 1)[0] for ln in lines[1:]] == ["2", "3", "4", "5", "6", "7", "8"]
    assert lines[1].endswith("amount: '99999999999999999999999' is too large")
    shop.ok("db", "check")


# -- the committed corpus: accepted ------------------------------------------------------------


def _accept_purchases_bom(club: Club) -> None:
    # B-1: 12,500 -> 12 points for C1; B-2: C2 by phone in Persian digits, 3,000 -> 3 points.
    assert club.query("SELECT p.ref, m.code, p.amount, p.occurred_at, p.category, p.points "
                      "FROM purchases p JOIN members m ON m.id = p.member_id "
                      "WHERE p.ref LIKE 'B-%' ORDER BY p.ref") == [
        ("B-1", "C1", 12500, _ts(club, "2026-03-01 10:00:00"), "groceries", 12),
        ("B-2", "C2", 3000, _ts(club, "2026-03-02 00:00:00"), None, 3)]
    assert (club.balance("C1"), club.balance("C2")) == (100 + 12, 50 + 3)


def _accept_purchases_duplicates(club: Club) -> None:
    assert club.query("SELECT ref, amount, points FROM purchases WHERE ref = 'D1'") == [("D1", 4000, 4)]
    assert club.balance("C1") == 104


def _accept_purchases_injection(club: Club) -> None:
    # The text is data: stored as it is (the category normalised like any other).
    assert club.query("SELECT ref, amount, category FROM purchases WHERE amount = 5000") == [
        ("R1'; DROP TABLE purchases;--", 5000, "x'); delete from members;--")]
    assert club.scalar("SELECT COUNT(*) FROM members") == 3


def _accept_members_bom(club: Club) -> None:
    assert club.query("SELECT code, name, phone, birth_date FROM members WHERE code LIKE 'N%' "
                      "ORDER BY code") == [
        ("N1", "Sara Ahmadi", "+989123456789", _day(club, "1990-05-14")),
        ("N2", "Ali", None, None)]


def _accept_members_injection(club: Club) -> None:
    assert club.query("SELECT code, name, tags FROM members WHERE code LIKE 'N%'") == [
        ("N1'--", "Robert'); DROP TABLE members;--", ",x'or'1'='1,")]  # tags are lower-cased
    assert club.scalar("SELECT COUNT(*) FROM members") == 4


def _accept_points_bom(club: Club) -> None:
    assert club.query("SELECT m.code, l.kind, l.points, l.expires_on, l.ref FROM ledger_entries l "
                      "JOIN members m ON m.id = l.member_id WHERE l.kind = 'opening' "
                      "ORDER BY l.ref") == [
        ("C1", "opening", 100, None, "O-1"), ("C2", "opening", 25, _day(club, "2027-01-01"), "O-2")]
    assert (club.balance("C1"), club.balance("C2")) == (200, 75)


def _nothing(club: Club) -> None:
    return None


# file -> (what the summary says, rows it adds per table, check of the rows)
ACCEPTED: dict[str, tuple[str, dict[str, int], Callable[[Club], None]]] = {
    "purchases/bom_crlf_persian.csv": ("imported 2 purchase(s), 15 points, 2 member(s)",
                                       {"purchases": 2, "ledger_entries": 2},
                                       _accept_purchases_bom),
    "purchases/header_only.csv": ("imported 0 purchase(s), 0 points, 0 member(s)", {}, _nothing),
    "purchases/duplicates_same.csv": ("imported 1 purchase(s), 4 points, 1 member(s); "
                                      "1 duplicate(s) in the file",
                                      {"purchases": 1, "ledger_entries": 1},
                                      _accept_purchases_duplicates),
    "purchases/injection.csv": ("imported 1 purchase(s), 5 points, 1 member(s)",
                                {"purchases": 1, "ledger_entries": 1}, _accept_purchases_injection),
    "members/bom_crlf_persian.csv": ("2 inserted, 0 updated, 0 unchanged, 0 rejected (2 rows",
                                     {"members": 2}, _accept_members_bom),
    "members/header_only.csv": ("0 inserted, 0 updated, 0 unchanged, 0 rejected (0 rows", {},
                                _nothing),
    "members/injection.csv": ("1 inserted", {"members": 1}, _accept_members_injection),
    "points/bom_crlf_persian.csv": ("2 opening balances, 125 points for 2 members",
                                    {"ledger_entries": 2}, _accept_points_bom),
}


def _ts(club: Club, text: str):  # noqa: ANN202
    from datetime import datetime

    return text + ".000000" if BACKEND == "sqlite" else datetime.fromisoformat(text)


def _day(club: Club, text: str):  # noqa: ANN202
    from datetime import date

    return text if BACKEND == "sqlite" else date.fromisoformat(text)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_awkward_but_valid_file_is_accepted(shop: Club, name: str) -> None:
    kind = name.split("/", 1)[0]
    summary, added, check = ACCEPTED[name]
    before = shop.dump()
    r = shop.run("--as-of", AS_OF, *COMMANDS[kind], str(DATA / name))
    assert r.exit_code == 0, (name, r.stderr)
    assert summary in r.stderr, r.stderr
    after = shop.dump()
    # Exactly the rows it should add, one audit row, nothing else touched.
    grown = {t: len(after[t]) - len(before[t]) for t in after if len(after[t]) != len(before[t])}
    assert grown == {**added, "audit_log": 1}, grown
    for table in ("purchases", "allocations", "tier_history", "job_locks"):
        if table not in added:
            assert after[table] == before[table]
    check(shop)
    shop.ok("db", "check")
    TOTALS["accepted inputs"] += 1
    TOTALS["rows compared"] += sum(len(rows) for rows in after.values())


# -- generated: encodings, binary, 10 MB fields ----------------------------------------------

P_HEADER = "ref,member,amount,occurred_at,category\n"
M_HEADER = "code,name,phone\n"
JSON_ROWS = {
    "purchases": {"ref": "R1", "member": "C1", "amount": "5000", "occurred_at": "2026-03-01",
                  "category": "toys"},
    "members": {"code": "N1", "name": "Sara", "phone": "09121234567"},
    "points": {"member": "C1", "points": "10", "expires_on": "never", "ref": "O1", "note": "x"},
    "refunds": {"ref": "F1", "purchase_ref": "PR1", "amount": "5000",
                "occurred_at": "2026-03-10", "note": "x"},
}


GENERATED: dict[str, tuple[str, str, Callable[[], bytes], list[str]]] = {
    # name: (command kind, file name, content, expected lines)
    "purchases latin-1": ("purchases", "latin1.csv", lambda: (
        P_HEADER + "R1,C1,1000,2026-03-01,food\nR2,C2,1000,2026-03-01,caf\u00e9\n").encode("latin-1"),
        # offset: header 39 bytes + row 2 27 bytes + "R2,C2,1000,2026-03-01,caf" 25 = 91
        ["latin1.csv: not UTF-8 text (line 3: byte 0xE9 at offset 91)",
         "save the file as UTF-8"]),
    "purchases utf-16": ("purchases", "utf16.csv", lambda: (
        P_HEADER + "R1,C1,1000,2026-03-01,food\n").encode("utf-16"),
        ["utf16.csv: not UTF-8 text (it is UTF-16)"]),
    "purchases latin-1 late in a big file": ("purchases", "late.csv", lambda: (
        P_HEADER + "".join(f"R{i},C1,1000,2026-03-01,food\n" for i in range(2, 40000))
        + "R40000,C1,1000,2026-03-01,\u00e9t\u00e9\n").encode("latin-1"),
        ["late.csv: not UTF-8 text (line 40,000: byte 0xE9"]),
    "purchases binary garbage": ("purchases", "garbage.csv",
                                 lambda: random.Random(8).randbytes(64 * 1024),
                                 ["garbage.csv: not UTF-8 text (line "]),
    "purchases 10 MB CSV field": ("purchases", "huge.csv", lambda: (
        P_HEADER + "R1,C1,1000,2026-03-01,food\nR2,C1," + "9" * BIG + ",2026-03-01,\n").encode(),
        ["row 3: field larger than field limit"]),
    "purchases 900 KB amount": ("purchases", "long.csv", lambda: (
        P_HEADER + "R1,C1," + "9" * 900_000 + ",2026-03-01,\n").encode(),
        ["row 2: amount: 900,000 characters, longer than any valid value (1,000)"]),
    "purchases unpaired surrogate": ("purchases", "surrogate.jsonl", lambda: (
        b'{"ref": "R\\ud800", "member": "C1", "amount": "5000", "occurred_at": "2026-03-01"}\n'),
        ["row 1: ref: contains an unpaired surrogate (U+D800)"]),
    "members latin-1": ("members", "latin1.csv", lambda: (
        M_HEADER + "N1,Sara,\nN2,Jos\u00e9,\n").encode("latin-1"),
        ["latin1.csv: not UTF-8 text (line 3: byte 0xE9 at offset 31)"]),  # 16 + 9 + 6
    "members utf-16": ("members", "utf16.csv", lambda: (M_HEADER + "N1,Sara,\n").encode("utf-16"),
                       ["utf16.csv: not UTF-8 text (it is UTF-16)"]),
    "members 10 MB CSV field": ("members", "huge.csv", lambda: (
        M_HEADER + "N1," + "x" * BIG + ",\n").encode(),
        ["row 2: not valid CSV: field larger than field limit"]),
    "members unpaired surrogate": ("members", "surrogate.jsonl",
                                   lambda: b'{"code": "N1", "name": "Sara\\udc00"}\n',
                                   ["row 1: name: contains an unpaired surrogate (U+DC00)"]),
    "points latin-1": ("points", "latin1.csv", lambda: (
        "member,points,expires_on,ref,note\nC1,10,never,O1,migr\u00e9\n").encode("latin-1"),
        ["latin1.csv: not UTF-8 text (line 2: byte 0xE9"]),
    "refunds utf-16": ("refunds", "utf16.csv", lambda: (
        "ref,purchase_ref,amount,occurred_at\nF1,PR1,5000,2026-03-10\n").encode("utf-16"),
        ["utf16.csv: not UTF-8 text (it is UTF-16)"]),
}
for _kind, _row in JSON_ROWS.items():
    for _column in _row:
        GENERATED[f"{_kind} 10 MB JSON {_column}"] = (
            _kind, f"huge-{_column}.jsonl",
            (lambda row=_row, column=_column: (json.dumps({**row, column: "9" * BIG}) + "\n").encode()),
            [f"row 1: {_column}: 10,485,760 characters, longer than any valid value (1,000)"])


@pytest.mark.parametrize("case", sorted(GENERATED))
def test_generated_bad_file_is_refused(shop: Club, tmp_path: Path, case: str) -> None:
    kind, name, content, expected = GENERATED[case]
    path = tmp_path / name
    path.write_bytes(content())
    refused(shop, kind, path, expected)


def test_standard_input_that_is_not_utf8_is_refused(shop: Club) -> None:
    """From a pipe the file cannot be read twice to find the line: the message says so much."""
    before = shop.dump()
    r = shop.run("--as-of", AS_OF, "purchases", "import", "-",
                 input=(P_HEADER + "R1,C1,1000,2026-03-01,caf\u00e9\n").encode("latin-1"))
    assert r.exit_code == 4 and r.stderr.startswith("Error: standard input: not UTF-8 text"), r.stderr
    assert shop.dump() == before
    TOTALS["bad inputs"] += 1
