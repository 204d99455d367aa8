"""members add | show | list | search | update | suspend | reactivate | close | merge, and the
member look-up every other command uses. Through the CLI, asserting output, exit code and
the database afterwards."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import event
from sqlmodel import Session

from conftest import SIMPLE_CONFIG, Club
from loyaltyctl.errors import Refused
from loyaltyctl.services.members import ensure_active, resolve_member, resolve_members_bulk

JALALI_CONFIG = SIMPLE_CONFIG.replace('timezone = "UTC"', 'timezone = "Asia/Tehran"\ncalendar = "jalali"')
CAMPAIGN_CONFIG = SIMPLE_CONFIG + """
[[campaigns]]
code = "spring"
name = "Spring"
starts = 2026-03-01
ends = 2026-03-31
acquisition_code = "insta-26"
"""


_COMMAND: dict[int, object] = {}


@pytest.fixture(autouse=True)
def _build_cli_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typer rebuilds the whole Click command tree on every invoke (~0.4 s with every group
    registered); build it once so this file stays fast."""
    import typer.testing

    original = typer.testing._get_command

    def cached(app):  # noqa: ANN001, ANN202
        if id(app) not in _COMMAND:
            _COMMAND[id(app)] = original(app)
        return _COMMAND[id(app)]

    monkeypatch.setattr(typer.testing, "_get_command", cached)


def member_row(club: Club, code: str) -> dict:
    rows = club.query("SELECT code, name, phone, email, card_number, birth_date, status, tags,"
                      " referred_by_id, acquisition_campaign, merged_into_id, balance, pending,"
                      " joined_at FROM members WHERE code = :c", c=code)
    assert len(rows) == 1, f"no member {code}"
    keys = ("code", "name", "phone", "email", "card_number", "birth_date", "status", "tags",
            "referred_by_id", "acquisition_campaign", "merged_into_id", "balance", "pending",
            "joined_at")
    return dict(zip(keys, rows[0], strict=True))


def mid(club: Club, code: str) -> int:
    return club.scalar("SELECT id FROM members WHERE code = :c", c=code)


def audit_rows(club: Club) -> list[tuple]:
    return club.query("SELECT command, target, rows, details FROM audit_log ORDER BY id")


@pytest.fixture
def three(club: Club) -> Club:
    """C1 Sara (phone, e-mail, card, tags vip,web), C2 Ali (phone), C3 Reza (nothing)."""
    club.ok("--as-of", "2026-01-10", "members", "add", "C1", "Sara Ahmadi", "--phone", "09123456789",
            "--email", "sara@example.com", "--card", "6037-0001", "--tag", "vip,web",
            "--birth-date", "1990-05-01")
    club.ok("--as-of", "2026-02-10", "members", "add", "C2", "Ali Karimi", "--phone", "09351112233",
            "--tag", "web")
    club.ok("--as-of", "2026-03-10", "members", "add", "C3", "Reza Sadeghi")
    return club


# -- add ------------------------------------------------------------------------------------


def test_add_normalises_and_stores(club: Club) -> None:
    r = club.ok("--as-of", "2026-05-01", "--actor", "sara", "members", "add", "C1", "  Sara Ahmadi ",
                "--phone", "۰۹۱۲ ۳۴۵-۶۷۸۹", "--email", "Sara@Example.COM", "--card", "6037 9911",
                "--birth-date", "۱۹۹۰-۰۵-۰۱", "--tag", "VIP", "--tag", "web,vip", "--format", "json")
    assert "added member C1 (Sara Ahmadi)" in r.stderr
    out = json.loads(r.stdout)
    # Masked on output: the operator's screen is not the place for contact data by default.
    assert out["phone"] == "+98912***6789" and out["email"] == "s***@example.com"
    assert out["birth_date"] == "****-**-**" and out["tags"] == ["vip", "web"]
    m = member_row(club, "C1")
    assert m["name"] == "Sara Ahmadi"
    assert m["phone"] == "+989123456789"
    assert m["email"] == "sara@example.com"
    assert m["card_number"] == "60379911"
    assert str(m["birth_date"]) == "1990-05-01"
    assert m["tags"] == ",vip,web,"
    assert m["status"] == "active" and m["balance"] == 0
    # --as-of 2026-05-01 is the end of that (UTC) day, stored to the second.
    assert str(m["joined_at"]).startswith("2026-05-01 23:59:59")
    (command, target, rows, details), = audit_rows(club)
    assert (command, target, rows) == ("members add", "C1", 1)
    details = json.loads(details)
    assert details["phone"] == "[redacted]" and details["email"] == "[redacted]"
    assert "0912" not in json.dumps(details) and "sara@" not in json.dumps(details)


def test_add_jalali_birth_date(club: Club) -> None:
    club.write_config(JALALI_CONFIG)
    club.ok("members", "add", "C1", "Sara", "--birth-date", "۱۳۷۰/۰۵/۲۰")
    # Jalali 1370-05-20 is Gregorian 1991-08-11.
    assert str(member_row(club, "C1")["birth_date"]) == "1991-08-11"
    r = club.ok("members", "show", "C1", "--show-pii")
    assert "1370-05-20" in r.stdout and "1991" not in r.stdout


def test_add_jalali_year_recognised_in_gregorian_program(club: Club) -> None:
    club.ok("members", "add", "C1", "Sara", "--birth-date", "1370-05-20")
    assert str(member_row(club, "C1")["birth_date"]) == "1991-08-11"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["C9", "X", "--phone", "0912-345-6789"], "phone +989123456789 already belongs to member C1"),
        (["C9", "X", "--email", "SARA@example.com"], "e-mail sara@example.com already belongs to member C1"),
        (["C9", "X", "--card", "60370001"], "card 60370001 already belongs to member C1"),
        (["C2", "X"], "member code C2 is already taken"),
    ],
)
def test_add_duplicate_is_refused(three: Club, args: list[str], message: str) -> None:
    before = three.dump()
    r = three.run("members", "add", *args)
    assert r.exit_code == 5, r.output
    assert message in r.stderr
    assert three.dump() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--phone", "0912"], "--phone: '0912' is not a valid phone number for region IR"),
        (["--email", "sara@"], "--email: 'sara@' is not a valid e-mail address"),
        (["--birth-date", "1990-13-01"], "--birth-date: '1990-13-01' is not a valid date"),
        (["--birth-date", "2030-01-01"], "--birth-date: 2030-01-01 is not a plausible birth date"),
        (["--joined-at", "yesterday"], "--joined-at: 'yesterday' is not a date"),
        (["--campaign", "nope"], "--campaign: unknown campaign 'nope' (known: insta-26, spring)"),
        (["--tag", "two words"], "--tag: 'two words' is not a tag"),
        (["--card", "12#4"], "--card: '12#4' is not a card number"),
    ],
)
def test_add_invalid_value_names_the_option(club: Club, args: list[str], message: str) -> None:
    club.write_config(CAMPAIGN_CONFIG)
    before = club.dump()
    r = club.run("--as-of", "2026-06-01", "members", "add", "C1", "Sara", *args)
    assert r.exit_code == 4, r.output
    assert message in r.stderr
    assert club.dump() == before


def test_add_invalid_code_and_empty_name(club: Club) -> None:
    r = club.run("members", "add", "A B", "Sara")
    assert r.exit_code == 4 and "CODE: 'A B' is not a member code" in r.stderr
    r = club.run("members", "add", "C1", "  ")
    assert r.exit_code == 4 and "--name: is empty" in r.stderr
    assert club.query("SELECT * FROM members") == []


def test_add_with_campaign_and_referrer(three: Club) -> None:
    three.write_config(CAMPAIGN_CONFIG)
    three.ok("members", "add", "C4", "Mina", "--referred-by", "+98 935 111 2233",
             "--campaign", "insta-26")
    m = member_row(three, "C4")
    assert m["referred_by_id"] == mid(three, "C2") and m["acquisition_campaign"] == "insta-26"
    r = three.run("members", "add", "C5", "Nima", "--referred-by", "C99")
    assert r.exit_code == 3 and "--referred-by: no member matches 'C99'" in r.stderr
    assert three.scalar("SELECT COUNT(*) FROM members") == 4


# -- look-up --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["C1", "6037-0001", "6037 0001", "09123456789", "+989123456789", "989123456789",
     "۰۹۱۲۳۴۵۶۷۸۹", "0912 345 6789", "0912-345-6789", "SARA@Example.com"],
)
def test_show_finds_member_by_any_key(three: Club, key: str) -> None:
    r = three.ok("members", "show", key, "--format", "json")
    data = json.loads(r.stdout)
    assert data["code"] == "C1" and data["name"] == "Sara Ahmadi"
    assert data["phone"] == "+98912***6789"


def test_show_not_found_names_the_key(three: Club) -> None:
    r = three.run("members", "show", "0999 000 0000")
    assert r.exit_code == 3
    assert "no member matches '0999 000 0000'" in r.stderr


def test_lookup_priority_code_then_card_then_phone(three: Club) -> None:
    # C4's code is C1's card number: the exact code wins over the card.
    three.ok("members", "add", "60370001", "Code Looks Like A Card")
    r = three.ok("members", "show", "60370001", "--format", "json")
    assert json.loads(r.stdout)["name"] == "Code Looks Like A Card"


def test_resolve_members_bulk_few_queries(three: Club) -> None:
    keys = ["C1", "09351112233", "sara@example.com", "60370001", "C3", "nobody", "x@y.com"]
    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # noqa: ANN001, ANN202
        statements.append(statement)

    event.listen(three.engine, "before_cursor_execute", count)
    try:
        with Session(three.engine) as s:
            found = resolve_members_bulk(session=s, keys=keys, region="IR")
    finally:
        event.remove(three.engine, "before_cursor_execute", count)
    assert found == {"C1": mid(three, "C1"), "09351112233": mid(three, "C2"),
                     "sara@example.com": mid(three, "C1"), "60370001": mid(three, "C1"),
                     "C3": mid(three, "C3")}
    # One query for the e-mails, one for codes / cards / phones: not one per key.
    assert len(statements) == 2


def test_resolve_member_and_follow_merged(three: Club) -> None:
    three.ok("members", "merge", "C2", "into", "C1")
    with Session(three.engine) as s:
        assert resolve_member(session=s, key="C2", region="IR").code == "C2"
        assert resolve_member(session=s, key="C2", region="IR", follow_merged=True).code == "C1"
        assert resolve_members_bulk(session=s, keys=["C2"], region="IR",
                                    follow_merged=True) == {"C2": mid(three, "C1")}


def test_ensure_active(three: Club) -> None:
    three.ok("members", "suspend", "C2")
    three.ok("members", "merge", "C3", "C1")
    with Session(three.engine) as s:
        ensure_active(resolve_member(session=s, key="C1", region="IR"))
        with pytest.raises(Refused, match="member C2 is suspended"):
            ensure_active(resolve_member(session=s, key="C2", region="IR"))
        with pytest.raises(Refused, match="member C3 is closed: it was merged"):
            ensure_active(resolve_member(session=s, key="C3", region="IR"))


# -- show -----------------------------------------------------------------------------------


def test_show_masks_unless_show_pii_which_is_audited(three: Club) -> None:
    r = three.ok("members", "show", "C1")
    assert "+98912***6789" in r.stdout and "s***@example.com" in r.stdout
    assert "****-**-**" in r.stdout and "1990" not in r.stdout
    assert "Sara Ahmadi" in r.stdout and "vip, web" in r.stdout
    n = len(audit_rows(three))
    r = three.ok("--actor", "support1", "members", "show", "C1", "--show-pii")
    assert "+989123456789" in r.stdout and "sara@example.com" in r.stdout and "1990-05-01" in r.stdout
    rows = audit_rows(three)
    assert len(rows) == n + 1
    assert rows[-1][:3] == ("members show --show-pii", "C1", 1)
    assert three.scalar("SELECT actor FROM audit_log ORDER BY id DESC LIMIT 1") == "support1"


def test_show_uses_program_calendar(club: Club) -> None:
    club.write_config(JALALI_CONFIG)
    # With calendar = "jalali" input dates are Jalali: 1405-01-01 00:00 in Tehran (UTC+3:30)
    # is 2026-03-20 20:30 UTC.
    club.ok("members", "add", "C1", "Sara", "--joined-at", "۱۴۰۵-۰۱-۰۱")
    assert str(member_row(club, "C1")["joined_at"]).startswith("2026-03-20 20:30:00")
    r = club.ok("members", "show", "C1")
    assert "Joined" in r.stdout and "1405-01-01" in r.stdout and "2026" not in r.stdout


def test_show_referrals_and_referrer(three: Club) -> None:
    three.ok("members", "add", "C4", "Mina", "--referred-by", "C1")
    data = json.loads(three.ok("members", "show", "C1", "-f", "json").stdout)
    assert data["referrals"] == 1 and data["referred_by"] is None
    data = json.loads(three.ok("members", "show", "C4", "-f", "json").stdout)
    assert data["referred_by"] == "C1"


# -- list -----------------------------------------------------------------------------------


def test_list_filters_and_pages(three: Club) -> None:
    three.ok("members", "add", "C4", "Mina", "--tag", "vip", "--joined-at", "2026-04-01")
    three.ok("members", "suspend", "C4")
    with three.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("UPDATE members SET tier = 'gold' WHERE code IN ('C1', 'C3')"))

    def codes(*args: str) -> list[str]:
        return [m["code"] for m in json.loads(three.ok("members", "list", "-f", "json", *args).stdout)]

    assert codes() == ["C1", "C2", "C3", "C4"]
    assert codes("--status", "active") == ["C1", "C2", "C3"]
    assert codes("--status", "suspended") == ["C4"]
    assert codes("--tier", "gold") == ["C1", "C3"]
    assert codes("--tag", "VIP") == ["C1", "C4"]
    assert codes("--tag", "web") == ["C1", "C2"]
    assert codes("--tag", "vip,web") == ["C1"]
    # C2 joined 2026-02-10 (end of day), C3 2026-03-10, C4 2026-04-01.
    assert codes("--joined-from", "2026-02-10", "--joined-to", "2026-03-10") == ["C2", "C3"]
    assert codes("--limit", "3") == ["C1", "C2", "C3"]
    assert codes("--limit", "3", "--page", "2") == ["C4"]
    assert codes("--limit", "3", "--page", "3") == []
    r = three.run("members", "list", "--status", "gone")
    assert r.exit_code == 4 and "--status: 'gone' is not a status" in r.stderr


def test_list_table_masks_and_show_pii_audited(three: Club) -> None:
    r = three.ok("members", "list", "--limit", "2")
    assert "+98912***6789" in r.stdout and "+98935***2233" in r.stdout
    assert "C3" not in r.stdout and "1-2 of 3" in r.stdout
    assert not any(c.startswith("members list") for c, *_ in audit_rows(three))
    r = three.ok("members", "list", "--show-pii", "-f", "csv")
    lines = r.stdout.splitlines()
    assert lines[0] == "code,name,status,tier,phone,email,card_number,balance,joined_at,tags"
    assert lines[1].startswith("C1,Sara Ahmadi,active,,+989123456789,sara@example.com,60370001,0,")
    assert audit_rows(three)[-1][:3] == ("members list --show-pii", None, 3)


# -- search ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sara", ["C1"]),
        ("KARIMI", ["C2"]),
        ("a", ["C1", "C2", "C3"]),
        ("6789", ["C1"]),
        ("۲۲۳۳", ["C2"]),
        ("0935 111 2233", ["C2"]),
        ("example.com", ["C1"]),
        ("C3", ["C3"]),
        ("6037-0001", ["C1"]),
        ("zzz", []),
    ],
)
def test_search(three: Club, text: str, expected: list[str]) -> None:
    r = three.ok("members", "search", text, "-f", "json")
    assert [m["code"] for m in json.loads(r.stdout)] == expected


def test_search_show_pii_is_audited(three: Club) -> None:
    r = three.ok("members", "search", "sara", "-f", "json")
    assert json.loads(r.stdout)[0]["email"] == "s***@example.com"
    assert audit_rows(three)[-1][0] == "members add"
    r = three.ok("members", "search", "sara", "--show-pii", "-f", "json")
    assert json.loads(r.stdout)[0]["email"] == "sara@example.com"
    assert audit_rows(three)[-1][:3] == ("members search --show-pii", None, 1)


def test_search_name_with_like_wildcards_is_literal(three: Club) -> None:
    r = three.ok("members", "search", "%", "-f", "json")
    assert json.loads(r.stdout) == []
    r = three.ok("members", "search", "_", "-f", "json")
    assert json.loads(r.stdout) == []


# -- update ---------------------------------------------------------------------------------


def test_update_fields_and_tags(three: Club) -> None:
    r = three.ok("members", "update", "C2", "--email", "ALI@x.org", "--name", "Ali K.",
                 "--add-tag", "VIP", "--remove-tag", "web", "--card", "۱۱۱۱")
    assert "updated member C2: email, card_number, name, tags" in r.stderr
    m = member_row(three, "C2")
    assert (m["email"], m["name"], m["tags"], m["card_number"]) == ("ali@x.org", "Ali K.", ",vip,", "1111")
    (command, target, rows, details) = audit_rows(three)[-1]
    assert (command, target, rows) == ("members update", "C2", 1)
    details = json.loads(details)["changed"]
    assert details["email"] == "[redacted]" and details["name"] == "[redacted]"
    assert details["tags"] == {"from": ",web,", "to": ",vip,"}
    three.ok("members", "update", "C2", "--clear-phone", "--clear-tags", "--code", "C2B")
    m = member_row(three, "C2B")
    assert m["phone"] is None and m["tags"] == ""


def test_update_nothing_changed_writes_no_audit(three: Club) -> None:
    n = len(audit_rows(three))
    r = three.ok("members", "update", "C1", "--email", "SARA@example.com")
    assert "member C1: nothing changed" in r.stderr
    assert len(audit_rows(three)) == n


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["C2", "--phone", "09123456789"], 5, "phone +989123456789 already belongs to member C1"),
        (["C2", "--code", "C1"], 5, "member code C1 is already taken"),
        (["C2", "--email", "bad"], 4, "--email: 'bad' is not a valid e-mail address"),
        (["C2", "--referred-by", "C2"], 4, "--referred-by: a member cannot refer themselves"),
        (["C2", "--referred-by", "C404"], 3, "--referred-by: no member matches 'C404'"),
        (["C2", "--phone", "0912", "--clear-phone"], 2, "--phone and --clear-phone contradict"),
        (["C2"], 2, "nothing to change"),
        (["C404", "--name", "X"], 3, "no member matches 'C404'"),
    ],
)
def test_update_errors(three: Club, args: list[str], code: int, message: str) -> None:
    before = three.dump()
    r = three.run("members", "update", *args)
    assert r.exit_code == code, r.output
    assert message in r.stderr
    assert three.dump() == before


def test_update_refuses_referral_cycle(three: Club) -> None:
    three.ok("members", "update", "C2", "--referred-by", "C1")
    three.ok("members", "update", "C3", "--referred-by", "C2")
    before = three.dump()
    r = three.run("members", "update", "C1", "--referred-by", "C3")
    assert r.exit_code == 4 and "referrals cannot form a cycle" in r.stderr
    assert three.dump() == before
    three.ok("members", "update", "C3", "--clear-referred-by")
    assert member_row(three, "C3")["referred_by_id"] is None


# -- status ---------------------------------------------------------------------------------


def test_status_transitions(three: Club) -> None:
    r = three.ok("members", "suspend", "C2", "--reason", "card stolen")
    assert "member C2 is now suspended (was active)" in r.stderr
    assert member_row(three, "C2")["status"] == "suspended"
    command, target, rows, details = audit_rows(three)[-1]
    assert (command, target) == ("members suspend", "C2")
    assert json.loads(details) == {"from": "active", "to": "suspended", "reason": "card stolen"}
    three.ok("members", "reactivate", "C2")
    assert member_row(three, "C2")["status"] == "active"
    three.ok("members", "suspend", "C2")
    three.ok("members", "close", "C2")
    assert member_row(three, "C2")["status"] == "closed"


@pytest.mark.parametrize(
    ("setup", "action", "message"),
    [
        ([], "reactivate", "member C2 is already active"),
        (["suspend"], "suspend", "member C2 is already suspended"),
        (["close"], "close", "member C2 is already closed"),
        (["close"], "reactivate", "cannot reactivate member C2: it is closed"),
        (["close"], "suspend", "cannot suspend member C2: it is closed"),
    ],
)
def test_invalid_transitions_exit_5(three: Club, setup: list[str], action: str, message: str) -> None:
    for s in setup:
        three.ok("members", s, "C2")
    before = three.dump()
    r = three.run("members", action, "C2")
    assert r.exit_code == 5, r.output
    assert message in r.stderr
    assert three.dump() == before


def test_closed_member_cannot_be_updated(three: Club) -> None:
    three.ok("members", "close", "C3")
    r = three.run("members", "update", "C3", "--name", "X")
    assert r.exit_code == 5 and "member C3 is closed" in r.stderr


# -- merge ----------------------------------------------------------------------------------


def _insert_history(club: Club) -> None:
    """C2 (the duplicate): purchase P1 with a 100-point lot of which 30 were redeemed,
    purchase P2 with 10 points still pending, a tier change, and a member it referred (C4).
    C1: a 50-point adjustment lot."""
    c1, c2 = mid(club, "C1"), mid(club, "C2")
    club.ok("members", "add", "C4", "Mina", "--referred-by", "C2")
    with club.engine.begin() as conn:
        from sqlalchemy import text

        t = "2026-04-01 10:00:00"
        for ref, points in (("P1", 100), ("P2", 10)):
            conn.execute(text("INSERT INTO purchases (member_id, ref, amount, currency, occurred_at,"
                              " refunded_amount, points, created_at) VALUES"
                              " (:m, :ref, :amount, 'IRR', :t, 0, :p, :t)"),
                         {"m": c2, "t": t, "ref": ref, "amount": points * 1000, "p": points})
        p1, p2 = conn.execute(text("SELECT id FROM purchases ORDER BY ref")).scalars().all()
        rows = [
            (c2, "earn", 100, 70, None, p1, None),
            (c2, "redeem", -30, None, None, None, "R1"),
            (c2, "earn", 10, 10, "2026-12-01 00:00:00", p2, None),
            (c1, "adjust", 50, 50, None, None, None),
        ]
        for member, kind, points, remaining, pending_until, purchase, ref in rows:
            conn.execute(text(
                "INSERT INTO ledger_entries (member_id, kind, points, effective_at, remaining,"
                " pending_until, purchase_id, ref, actor, created_at)"
                " VALUES (:m, :k, :p, :t, :r, :pu, :pid, :ref, 'test', :t)"),
                {"m": member, "k": kind, "p": points, "t": t, "r": remaining, "pu": pending_until,
                 "pid": purchase, "ref": ref})
        lot, debit = (conn.execute(text("SELECT id FROM ledger_entries WHERE member_id = :m"
                                        " AND points IN (100, -30) ORDER BY id"), {"m": c2})
                      .scalars().all())
        conn.execute(text("INSERT INTO allocations (member_id, debit_id, lot_id, points)"
                          " VALUES (:m, :d, :l, 30)"), {"m": c2, "d": debit, "l": lot})
        conn.execute(text("INSERT INTO tier_history (member_id, from_tier, to_tier, changed_at,"
                          " reason, actor) VALUES (:m, NULL, 'silver', :t, 'upgrade', 'test')"),
                     {"m": c2, "t": t})
        conn.execute(text("UPDATE members SET balance = 70, pending = 10 WHERE id = :m"), {"m": c2})
        conn.execute(text("UPDATE members SET balance = 50 WHERE id = :m"), {"m": c1})


def test_merge_moves_everything(three: Club) -> None:
    _insert_history(three)
    three.ok("db", "check")
    c1, c2 = mid(three, "C1"), mid(three, "C2")
    r = three.ok("members", "merge", "C2", "into", "C1", "-f", "json")
    assert ("merged member C2 into C1: moved 2 purchases, 3 ledger entries, 1 allocations, "
            "1 tier changes, 1 referrals; balance +70, pending +10; C2 is closed") in r.stderr
    counts = json.loads(r.stdout)
    assert counts["purchases"] == 2 and counts["ledger_entries"] == 3
    for table in ("purchases", "ledger_entries", "allocations", "tier_history"):
        assert three.scalar(f"SELECT COUNT(*) FROM {table} WHERE member_id = :m", m=c2) == 0  # noqa: S608
    assert three.scalar("SELECT COUNT(*) FROM ledger_entries WHERE member_id = :m", m=c1) == 4
    assert member_row(three, "C4")["referred_by_id"] == c1
    survivor, dup = member_row(three, "C1"), member_row(three, "C2")
    # 50 own + 70 moved; pending 0 + 10.
    assert (survivor["balance"], survivor["pending"]) == (120, 10)
    assert (dup["balance"], dup["pending"], dup["status"], dup["merged_into_id"]) == (0, 0, "closed", c1)
    # C1 had a phone already, so C2's phone stays with the closed duplicate; tags are united.
    assert survivor["phone"] == "+989123456789" and dup["phone"] == "+989351112233"
    assert survivor["tags"] == ",vip,web,"
    assert three.run("db", "check").exit_code == 0
    command, target, rows, details = audit_rows(three)[-1]
    # 2 purchases + 3 ledger entries + 1 allocation + 1 tier change + 1 referral = 8
    assert (command, target, rows) == ("members merge", "C2", 8)
    assert json.loads(details)["into"] == "C1"


def test_merge_survivor_takes_missing_contact_data(three: Club) -> None:
    three.ok("members", "merge", "C2", "C3")  # without the word "into"
    c3 = member_row(three, "C3")
    assert c3["phone"] == "+989351112233" and c3["tags"] == ",web,"
    assert member_row(three, "C2")["phone"] is None
    r = three.ok("members", "show", "09351112233", "-f", "json")
    assert json.loads(r.stdout)["code"] == "C3"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["C1", "into", "C1"], 5, "cannot merge member C1 into itself"),
        (["C1", "into", "C3"], 5, "the survivor C3 is closed"),
        (["C3", "into", "C1"], 5, "the duplicate C3 is closed"),
        (["C1", "C404"], 3, "no member matches 'C404'"),
        (["C1"], 2, "give two members"),
        (["C1", "onto", "C2"], 2, "give two members"),
    ],
)
def test_merge_refusals(three: Club, args: list[str], code: int, message: str) -> None:
    three.ok("members", "close", "C3")
    before = three.dump()
    r = three.run("members", "merge", *args)
    assert r.exit_code == code, r.output
    assert message in r.stderr
    assert three.dump() == before
