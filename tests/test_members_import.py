"""members import / export: CSV and JSON Lines, upsert by code, all-or-nothing or skip with
a rejects file, dry run, idempotent re-runs, and the export -> import round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from conftest import SIMPLE_CONFIG, Club
from loyaltyctl.services.member_io import import_members
from loyaltyctl.services.members import FieldRules

DATA = Path(__file__).parent / "data" / "members"
HEADER = "code,name,phone,email,card_number,birth_date,joined_at,status,referred_by,acquisition_campaign,tags"
JALALI_CONFIG = SIMPLE_CONFIG.replace('timezone = "UTC"', 'timezone = "Asia/Tehran"\ncalendar = "jalali"')
_COMMAND: dict[int, object] = {}


@pytest.fixture(autouse=True)
def _build_cli_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typer rebuilds the Click command tree on every invoke; build it once."""
    import typer.testing

    original = typer.testing._get_command

    def cached(app):  # noqa: ANN001, ANN202
        if id(app) not in _COMMAND:
            _COMMAND[id(app)] = original(app)
        return _COMMAND[id(app)]

    monkeypatch.setattr(typer.testing, "_get_command", cached)


def members(club: Club) -> dict[str, dict]:
    keys = ("id", "code", "name", "phone", "email", "card_number", "birth_date", "joined_at",
            "status", "referred_by_id", "acquisition_campaign", "tags", "updated_at")
    rows = club.query(f"SELECT {', '.join(keys)} FROM members ORDER BY id")  # noqa: S608
    return {r[1]: dict(zip(keys, r, strict=True)) for r in rows}


def ts(value: object) -> str:
    """A stored timestamp to the second, as text, on either backend."""
    return str(value)[:19]


def write(tmp_path: Path, name: str, *lines: str) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def summary(result) -> str:  # noqa: ANN001
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one summary line, got: {result.stderr!r}"
    return lines[0]


# -- a clean import ------------------------------------------------------------------------


def test_import_csv_inserts_and_normalises(club: Club) -> None:
    r = club.ok("--as-of", "2026-06-01", "--actor", "ops", "members", "import",
                str(DATA / "basic.csv"), "--format", "json")
    assert json.loads(r.stdout) == {"rows": 4, "inserted": 4, "updated": 0, "unchanged": 0,
                                    "rejected": 0, "dry_run": False, "rejects": None}
    # No progress bar in a pipe: the one summary line only.
    assert summary(r).startswith("members import basic.csv: 4 inserted, 0 updated, 0 unchanged, "
                                 "0 rejected (4 rows, ")
    m = members(club)
    assert list(m) == ["M1", "M2", "M3", "M4"]
    assert (m["M1"]["phone"], m["M1"]["email"], m["M1"]["card_number"], m["M1"]["tags"]) == \
        ("+989123456789", "sara@example.com", "60370001", ",vip,web,")
    assert ts(m["M1"]["joined_at"]) == "2026-01-05 00:00:00"
    # Persian digits in phone and in a Jalali birth date (1370-05-20 = 1991-08-11).
    assert m["M2"]["phone"] == "+989351112233" and str(m["M2"]["birth_date"]) == "1991-08-11"
    assert ts(m["M2"]["joined_at"]) == "2026-02-01 10:30:00"
    # Empty status: a new member is active; empty joined_at: --as-of (end of 2026-06-01).
    assert m["M2"]["status"] == "active" and m["M3"]["status"] == "suspended"
    assert ts(m["M4"]["joined_at"]) == "2026-06-01 23:59:59"
    assert m["M4"]["tags"] == ",vip,"
    # M2 names M4, which comes later in the file; M3 names M1, which comes earlier.
    assert m["M2"]["referred_by_id"] == m["M4"]["id"]
    assert m["M3"]["referred_by_id"] == m["M1"]["id"]
    assert m["M1"]["referred_by_id"] is None
    audit = club.query("SELECT actor, command, target, rows, details FROM audit_log")
    assert len(audit) == 1
    actor, command, target, rows, details = audit[0]
    assert (actor, command, target, rows) == ("ops", "members import", "basic.csv", 4)
    assert json.loads(details)["inserted"] == 4


def test_reimport_same_file_is_unchanged(club: Club) -> None:
    club.ok("--as-of", "2026-06-01", "members", "import", str(DATA / "basic.csv"))
    before = members(club)
    r = club.ok("--as-of", "2026-07-01", "members", "import", str(DATA / "basic.csv"), "-f", "json")
    assert json.loads(r.stdout)["unchanged"] == 4
    assert "0 inserted, 0 updated, 4 unchanged, 0 rejected" in r.stderr
    assert members(club) == before  # not even updated_at moved


def test_reimport_updates_only_what_differs(club: Club, tmp_path: Path) -> None:
    club.ok("--as-of", "2026-06-01", "members", "import", str(DATA / "basic.csv"))
    before = members(club)
    text = (DATA / "basic.csv").read_text(encoding="utf-8")
    changed = text.replace("Sara Ahmadi", "Sara A. Ahmadi").replace(",suspended,M1,", ",active,,")
    path = tmp_path / "changed.csv"
    path.write_text(changed, encoding="utf-8")
    r = club.ok("members", "import", str(path))
    assert "0 inserted, 2 updated, 2 unchanged, 0 rejected" in r.stderr
    after = members(club)
    assert after["M1"]["name"] == "Sara A. Ahmadi"
    assert after["M3"]["status"] == "active" and after["M3"]["referred_by_id"] is None
    assert after["M2"] == before["M2"] and after["M4"] == before["M4"]
    assert club.scalar("SELECT rows FROM audit_log ORDER BY id DESC LIMIT 1") == 2


def test_bom_and_crlf(club: Club) -> None:
    raw = (DATA / "bom_crlf.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # the fixture really is so
    r = club.ok("members", "import", str(DATA / "bom_crlf.csv"))
    assert "2 inserted" in r.stderr
    m = members(club)
    assert m["W1"]["phone"] == "+989120000009" and m["W1"]["tags"] == ",a,b,"
    assert m["W2"]["phone"] is None and m["W2"]["name"] == "Second User"


def test_jalali_calendar_dates(club: Club, tmp_path: Path) -> None:
    club.write_config(JALALI_CONFIG)
    path = write(tmp_path, "j.csv", "code,name,birth_date,joined_at",
                 "K1,Kaveh,۱۳۷۰-۰۵-۲۰,1405-01-01", "K2,Kian,1369/01/01,1405-01-01T12:00:00Z")
    club.ok("members", "import", str(path))
    m = members(club)
    assert str(m["K1"]["birth_date"]) == "1991-08-11" and str(m["K2"]["birth_date"]) == "1990-03-21"
    # 1405-01-01 00:00 in Tehran is 2026-03-20 20:30 UTC; with Z it is 12:00 UTC on 2026-03-21.
    assert ts(m["K1"]["joined_at"]) == "2026-03-20 20:30:00"
    assert ts(m["K2"]["joined_at"]) == "2026-03-21 12:00:00"


def test_jsonl(club: Club) -> None:
    r = club.ok("members", "import", str(DATA / "members.jsonl"))
    assert "2 inserted" in r.stderr and "(2 rows" in r.stderr
    m = members(club)
    assert m["J1"]["tags"] == ",vip,web," and m["J1"]["phone"] == "+989121234567"
    assert m["J2"]["email"] == "jamileh@example.com" and m["J2"]["card_number"] == "60370002"
    assert m["J2"]["referred_by_id"] == m["J1"]["id"] and m["J2"]["status"] == "suspended"


def test_jsonl_null_clears_and_missing_key_keeps(club: Club, tmp_path: Path) -> None:
    club.ok("members", "import", str(DATA / "members.jsonl"))
    path = write(tmp_path, "c.ndjson", '{"code": "J1", "name": "Jalal", "phone": null}')
    r = club.ok("members", "import", str(path))
    assert "1 updated" in r.stderr
    m = members(club)
    assert m["J1"]["phone"] is None and m["J1"]["tags"] == ",vip,web,"


# -- file-level errors: exit 4 before anything is written ----------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing_name.csv", "missing_name.csv: row 1: missing required column(s) name"),
        ("unknown_columns.csv", "unknown_columns.csv: row 1: unknown column(s) mobile, nick"),
    ],
)
def test_bad_header(club: Club, name: str, message: str) -> None:
    before = club.dump()
    r = club.run("members", "import", str(DATA / name), "--on-error", "skip")
    assert r.exit_code == 4, r.output
    assert message in r.stderr
    assert club.dump() == before


def test_jsonl_unknown_key_and_format_detection(club: Club, tmp_path: Path) -> None:
    before = club.dump()
    path = write(tmp_path, "u.jsonl", '{"code": "A", "name": "A"}', '{"code": "B", "name": "B", "mobile": "1"}')
    r = club.run("members", "import", str(path))
    assert r.exit_code == 4 and "u.jsonl: row 2: unknown column(s) mobile" in r.stderr
    txt = write(tmp_path, "m.txt", "code,name", "T1,Tara")
    r = club.run("members", "import", str(txt))
    assert r.exit_code == 4 and "cannot tell the format from the extension '.txt'" in r.stderr
    assert club.dump() == before
    club.ok("members", "import", str(txt), "--input-format", "csv")
    assert list(members(club)) == ["T1"]


def test_not_utf8(club: Club, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("code,name\nL1,Jos\u00e9\n".encode("latin-1"))
    before = club.dump()
    r = club.run("members", "import", str(path))
    assert r.exit_code == 4 and "latin1.csv: not UTF-8 text" in r.stderr
    assert club.dump() == before


# -- row errors ----------------------------------------------------------------------------


def test_all_or_nothing(club: Club) -> None:
    club.ok("members", "add", "OLD", "Existing")
    before = club.dump()
    r = club.run("members", "import", str(DATA / "mixed.csv"))
    assert r.exit_code == 4, r.output
    assert "mixed.csv: 5 row(s) rejected, nothing was imported:" in r.stderr
    lines = r.stderr.splitlines()
    assert lines[1:6] == [
        "  row 3: phone: '12345' is not a valid phone number for region IR",
        "  row 4: email: g1@example.com duplicates row 2",
        "  row 5: birth_date: '1990-02-30' is not a valid date",
        "  row 6: referred_by: member B1 was rejected (row 3)",
        "  row 8: code: G1 duplicates row 2",
    ]
    assert "--on-error skip" in r.stderr
    assert club.dump() == before


def test_skip_writes_rejects_and_imports_the_rest(club: Club, tmp_path: Path) -> None:
    rejects = tmp_path / "rejects.csv"
    r = club.ok("members", "import", str(DATA / "mixed.csv"), "--on-error", "skip",
                "--rejects", str(rejects), "-f", "json")
    assert json.loads(r.stdout)["inserted"] == 2 and json.loads(r.stdout)["rejected"] == 5
    assert "2 inserted, 0 updated, 0 unchanged, 5 rejected (7 rows" in r.stderr
    assert f"rejects in {rejects}" in r.stderr
    m = members(club)
    assert list(m) == ["G1", "G5"]
    assert m["G5"]["referred_by_id"] == m["G1"]["id"]
    assert rejects.read_text(encoding="utf-8").splitlines() == [
        f"{HEADER},row,reason",
        "B1,Bad Phone,12345,,,,,,,,,3,phone: '12345' is not a valid phone number for region IR",
        "G2,Good Two,09120000002,G1@Example.com,,,,,,,,4,email: g1@example.com duplicates row 2",
        "G3,Good Three,09120000003,,,1990-02-30,,,,,,5,birth_date: '1990-02-30' is not a valid date",
        "G4,Good Four,,,,,,,B1,,,6,referred_by: member B1 was rejected (row 3)",
        "G1,Again,,,,,,,,,,8,code: G1 duplicates row 2",
    ]
    assert club.scalar("SELECT rows FROM audit_log") == 2


def test_skip_default_rejects_path(club: Club, tmp_path: Path) -> None:
    src = tmp_path / "mixed.csv"
    shutil.copy(DATA / "mixed.csv", src)
    club.ok("members", "import", str(src), "--on-error", "skip")
    assert (tmp_path / "mixed.csv.rejects.csv").read_text().count("\n") == 6  # header + 5


def test_duplicates_against_the_database(club: Club, tmp_path: Path) -> None:
    club.ok("members", "add", "C7", "Sara", "--email", "sara@example.com", "--phone", "09123456789",
            "--card", "777")
    before = club.dump()
    path = write(tmp_path, "d.csv", "code,name,email,phone,card_number",
                 "N1,New One,SARA@example.com,,",
                 "N2,New Two,,+989123456789,",
                 "N3,New Three,,,7-7-7",
                 "C7,Sara,sara@example.com,09123456789,777")
    r = club.run("members", "import", str(path))
    assert r.exit_code == 4, r.output
    assert "row 2: email: sara@example.com already belongs to member C7" in r.stderr
    assert "row 3: phone: +989123456789 already belongs to member C7" in r.stderr
    assert "row 4: card_number: 777 already belongs to member C7" in r.stderr
    assert "row 5" not in r.stderr  # C7 itself keeps its own values, over the newcomers'
    assert "3 row(s) rejected" in r.stderr
    assert club.dump() == before


def test_bad_values_name_row_and_column(club: Club, tmp_path: Path) -> None:
    path = write(tmp_path, "v.csv", "code,name,phone,status,tags,joined_at",
                 "V1,,,,,", "V2,Vida,0912,,,", "V3,Vali,,gone,,", "V 4,Vahid,,,,",
                 "V5,Vesal,,,two words,", "V6,Vian,,,,someday", "V7,Only,Two")
    before = club.dump()
    r = club.run("members", "import", str(path))
    assert r.exit_code == 4
    for expected in ("row 2: name: is empty", "row 3: phone: '0912' is not a valid phone number",
                     "row 4: status: 'gone' is not a status", "row 5: code: 'V 4' is not a member code",
                     "row 6: tags: 'two words' is not a tag", "row 7: joined_at: 'someday' is not a date",
                     "row 8: has 3 fields, the header has 6"):
        assert expected in r.stderr
    assert club.dump() == before


def test_closed_member_is_not_changed(club: Club, tmp_path: Path) -> None:
    club.ok("members", "add", "C1", "Closed One")
    club.ok("members", "close", "C1")
    path = write(tmp_path, "c.csv", "code,name,status", "C1,Closed One,closed", "C2,Open,")
    r = club.ok("members", "import", str(path))
    assert "1 inserted, 0 updated, 1 unchanged" in r.stderr
    path = write(tmp_path, "c2.csv", "code,name,status", "C1,Closed One,active")
    r = club.run("members", "import", str(path))
    assert r.exit_code == 4
    assert "row 2: member C1 is closed; a closed membership is final" in r.stderr


def test_dry_run_changes_nothing(club: Club, tmp_path: Path) -> None:
    before = club.dump()
    rejects = tmp_path / "r.csv"
    r = club.ok("members", "import", str(DATA / "mixed.csv"), "--dry-run", "--on-error", "skip",
                "--rejects", str(rejects), "-f", "json")
    assert json.loads(r.stdout) == {"rows": 7, "inserted": 2, "updated": 0, "unchanged": 0,
                                    "rejected": 5, "dry_run": True, "rejects": str(rejects)}
    assert "dry run: nothing was written" in r.stderr
    assert club.dump() == before
    assert rejects.read_text().count("\n") == 6  # the report is still written
    r = club.run("members", "import", str(DATA / "mixed.csv"), "--dry-run")
    assert r.exit_code == 4 and "5 row(s) rejected" in r.stderr


# -- referrers and batches -----------------------------------------------------------------


def test_referrers_across_batches_and_keys(club: Club, tmp_path: Path) -> None:
    club.ok("members", "add", "OLD", "Old Member", "--phone", "09120000100")
    path = write(tmp_path, "ref.csv", "code,name,phone,referred_by",
                 "R1,Ref One,09120000001,R5",       # forward, three batches later
                 "R2,Ref Two,09120000002,0912 000 0100",  # an existing member by phone
                 "R3,Ref Three,09120000003,R1",     # earlier in the file
                 "R4,Ref Four,09120000004,NOBODY",
                 "R5,Ref Five,09120000005,",
                 "R6,Ref Six,09120000001,",         # R1's phone, two batches later
                 "R7,Ref Seven,,R7",
                 "R8,Ref Eight,0912 000 0002,")   # R2's phone, written three batches before
    before = club.dump()
    r = club.run("members", "import", str(path), "--batch-size", "2")
    assert r.exit_code == 4
    assert "row 5: referred_by: no member matches 'NOBODY'" in r.stderr
    assert "row 7: phone: +989120000001 duplicates row 2" in r.stderr
    assert "row 8: referred_by: a member cannot refer themselves" in r.stderr
    assert "row 9: phone: +989120000002 already belongs to member R2 (row 3)" in r.stderr
    assert "4 row(s) rejected" in r.stderr
    assert club.dump() == before
    club.ok("members", "import", str(path), "--batch-size", "2", "--on-error", "skip",
            "--rejects", str(tmp_path / "rej.csv"))
    m = members(club)
    assert sorted(m) == ["OLD", "R1", "R2", "R3", "R5"]
    assert m["R1"]["referred_by_id"] == m["R5"]["id"]
    assert m["R2"]["referred_by_id"] == m["OLD"]["id"]
    assert m["R3"]["referred_by_id"] == m["R1"]["id"]


def test_import_is_set_based(club: Club, tmp_path: Path) -> None:
    lines = ["code,name,phone,email,referred_by"]
    for i in range(1, 41):
        lines.append(f"S{i},Member {i},0912{i:07d},s{i}@example.com,{'S1' if i > 1 else ''}")
    path = write(tmp_path, "s.csv", *lines)
    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # noqa: ANN001, ANN202
        if statement.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE")):
            statements.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        club.ok("members", "import", str(path), "--batch-size", "10")
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert club.scalar("SELECT COUNT(*) FROM members") == 40
    # 4 batches x (existing by code, owners of phones/e-mails/cards, referrers, insert,
    # new ids, referrers within the batch): a fixed number per batch, not per row; then the
    # referral-cycle check: the ids of the 39 referring rows, then one read per step along
    # the referrer chains, all chains at once (S2..S40, then S1, who has no referrer).
    member_statements = [s for s in statements if "members" in s]
    assert len(member_statements) <= 4 * 6 + 3, member_statements


def test_service_reports_inserted_ids(club: Club, tmp_path: Path) -> None:
    club.ok("members", "add", "M1", "Sara Ahmadi")
    with Session(club.engine) as s:
        from datetime import datetime

        calls: list[tuple[int, int]] = []
        result = import_members(session=s, path=DATA / "basic.csv", rules=FieldRules(region="IR"),
                                now=datetime(2026, 6, 1), batch_size=2,
                                progress=lambda done, total: calls.append((done, total)))
        s.commit()
    # The progress callback (the CLI's bar, on a terminal) hears of each batch and the end.
    size = (DATA / "basic.csv").stat().st_size
    assert len(calls) >= 2 and calls[-1] == (size, size)
    m = members(club)
    assert sorted(result.inserted_ids) == sorted([m["M2"]["id"], m["M3"]["id"], m["M4"]["id"]])
    assert (result.inserted, result.updated) == (3, 1)


# -- export --------------------------------------------------------------------------------


def test_export_masks_unless_show_pii(club: Club, tmp_path: Path) -> None:
    club.ok("members", "import", str(DATA / "basic.csv"))
    n = club.scalar("SELECT COUNT(*) FROM audit_log")
    r = club.ok("members", "export", "--status", "active")
    lines = r.stdout.splitlines()
    assert lines[0] == HEADER
    assert lines[1] == "M1,Sara Ahmadi,+98912***6789,s***@example.com,60370001,****-**-**,2026-01-05T00:00:00Z,active,,,\"vip,web\""
    assert [line.split(",")[0] for line in lines[1:]] == ["M1", "M2", "M4"]  # M3 is suspended
    assert "exported 3 members (personal data masked" in r.stderr
    assert club.scalar("SELECT COUNT(*) FROM audit_log") == n  # a masked read is not audited
    out = tmp_path / "all.csv"
    club.ok("members", "export", "--show-pii", "--output", str(out))
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[1] == "M1,Sara Ahmadi,+989123456789,sara@example.com,60370001,1990-05-01,2026-01-05T00:00:00Z,active,,,\"vip,web\""
    assert lines[2].startswith("M2,Ali Karimi,+989351112233,,,1991-08-11,2026-02-01T10:30:00Z,active,M4,,web")
    assert club.query("SELECT command, rows FROM audit_log ORDER BY id DESC LIMIT 1") == \
        [("members export --show-pii", 4)]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("config", [SIMPLE_CONFIG, JALALI_CONFIG], ids=["gregorian", "jalali"])
def test_export_import_round_trip(club: Club, tmp_path: Path, fmt: str, config: str) -> None:
    club.ok("members", "import", str(DATA / "basic.csv"))
    club.write_config(config)  # the same data, then exported in either calendar
    club.ok("members", "add", "A1", "Added By Hand", "--tag", "x")  # joined_at with microseconds
    club.ok("members", "suspend", "M1")
    club.ok("members", "merge", "M4", "into", "M1")
    before = members(club)
    out = tmp_path / f"members.{fmt}"
    club.ok("members", "export", "--show-pii", "--export-format", fmt, "--output", str(out))
    r = club.ok("members", "import", str(out), "-f", "json")
    assert json.loads(r.stdout) == {"rows": 5, "inserted": 0, "updated": 0, "unchanged": 5,
                                    "rejected": 0, "dry_run": False, "rejects": None}
    assert members(club) == before
    if fmt == "jsonl":
        first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
        assert first["tags"] == ["vip", "web"] and first["status"] == "suspended"


def test_export_invalid_options(club: Club) -> None:
    r = club.run("members", "export", "--export-format", "xml")
    assert r.exit_code == 4 and "--export-format: 'xml' is not csv or jsonl" in r.stderr
    r = club.run("members", "export", "--status", "gone")
    assert r.exit_code == 4 and "--status: 'gone'" in r.stderr


def test_fast_phone_path_agrees_with_normalize_phone() -> None:
    """The import's shortcut for common phone spellings gives exactly normalize_phone's answer."""
    import random

    from loyaltyctl.normalize import normalize_phone
    from loyaltyctl.services.member_io import _fast_phone

    rnd = random.Random(5)
    hits = 0
    for region, cc, prefix in (("IR", "98", "0"), ("US", "1", "1"), ("DE", "49", "0"), ("IT", "39", "0")):
        for _ in range(400):
            nsn = str(rnd.randint(10**5, 10**11 - 1))[: rnd.randint(6, 11)]
            for raw in (prefix + nsn, f"+{cc}{nsn}", f"+{cc} {nsn[:3]}-{nsn[3:]}", f"۰{nsn}"):
                fast = _fast_phone(raw, region)
                if fast is None:
                    continue
                hits += 1
                assert fast == normalize_phone(raw, region), (region, raw)
    assert hits > 300  # the shortcut is actually taken


def test_enrolment_hook_runs_once_per_new_member(club: Club) -> None:
    """members add and members import call the enrolment hook for new members only."""
    club.write_config(SIMPLE_CONFIG + "\n[bonuses]\nsignup = 50\n")
    club.ok("members", "add", "M1", "Sara Ahmadi")
    assert club.balance("M1") == 50
    r = club.ok("members", "import", str(DATA / "basic.csv"))
    assert "3 inserted, 1 updated" in r.stderr  # M1 exists: updated, no second bonus
    # M3 is imported suspended: no bonus for a member who cannot earn.
    assert [club.balance(c) for c in ("M1", "M2", "M3", "M4")] == [50, 50, 0, 50]
    club.ok("members", "import", str(DATA / "basic.csv"))
    assert club.scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'signup'") == 3
    club.ok("members", "import", str(DATA / "members.jsonl"), "--dry-run")
    assert club.scalar("SELECT COUNT(*) FROM ledger_entries") == 3
    assert club.run("db", "check").exit_code == 0


# -- referral cycles made by a file ----------------------------------------------------------


def test_a_file_cannot_make_a_referral_cycle(club: Club, tmp_path: Path) -> None:
    """New rows naming each other, or a new row and an existing member updated to name it,
    would go round in a circle: refused naming the rows, nothing written. A chain is fine."""
    club.ok("members", "add", "A", "Ali")
    before = club.dump()
    cases = {
        "update.csv": ("code,name,referred_by", "B,Bita,A", "A,Ali,B"),          # A -> B -> A
        "new.csv": ("code,name,referred_by", "X,Xerxes,Y", "Y,Yas,X"),             # X -> Y -> X
        "three.csv": ("code,name,referred_by", "P,Pari,Q", "Q,Qamar,R", "R,Reza,P"),
    }
    for name, lines in cases.items():
        r = club.run("members", "import", str(write(tmp_path, name, *lines)))
        assert r.exit_code == 4, (name, r.output)
        assert "form a cycle" in r.stderr, name
        assert club.dump() == before, name
    r = club.run("members", "import", str(write(tmp_path, "update.csv", *cases["update.csv"])))
    assert "row 2: referred_by: the referrals form a cycle" in r.stderr
    assert "row 3: referred_by: the referrals form a cycle" in r.stderr
    assert "A -> B -> A" in r.stderr or "B -> A -> B" in r.stderr
    r = club.run("members", "import", str(write(tmp_path, "three.csv", *cases["three.csv"])))
    assert r.stderr.count("form a cycle") == 3
    # --on-error skip cannot import "the rest" of a cycle: the file is refused as a whole.
    r = club.run("members", "import", str(write(tmp_path, "new.csv", *cases["new.csv"])),
                 "--on-error", "skip", "--rejects", str(tmp_path / "rej.csv"))
    assert r.exit_code == 4 and "form a cycle" in r.stderr and "nothing was imported" in r.stderr
    assert club.dump() == before
    # A chain (C referred by B, B by A) and a member naming an existing referrer are fine.
    club.ok("members", "import", str(write(tmp_path, "chain.csv", "code,name,referred_by",
                                           "C,Cyrus,B", "B,Bita,A", "D,Dara,A")))
    refs = dict(club.query("SELECT m.code, r.code FROM members m JOIN members r"
                           " ON r.id = m.referred_by_id"))
    assert refs == {"B": "A", "C": "B", "D": "A"}
    # ... and closing the chain into a circle later is refused too.
    r = club.run("members", "import", str(write(tmp_path, "close.csv", "code,name,referred_by",
                                                "A,Ali,C")))
    assert r.exit_code == 4 and "A -> C -> B -> A" in r.stderr, r.stderr
