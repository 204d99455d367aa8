"""Signup, birthday and event bonuses through the CLI."""

from __future__ import annotations

import json

import pytest

from conftest import SIMPLE_CONFIG, Club

BONUSES = """
[bonuses]
signup = 50
birthday = 100

[events.survey]
name = "Completed a survey"
points = 20
max_per_period = 1
period = "month"

[events.review]
name = "Wrote a review"
points = 10
max_per_period = 2
period = "day"

[events.app]
name = "Installed the app"
points = 30
period = "ever"
"""


@pytest.fixture
def bclub(club: Club) -> Club:
    return club.write_config(SIMPLE_CONFIG + BONUSES)


def add(club: Club, code: str, on: str, *opts: str) -> None:
    club.ok("--as-of", on, "members", "add", code, f"Member {code}", *opts)


def entries(club: Club, kind: str) -> list[tuple]:
    return club.query(
        "SELECT m.code, e.points, e.idem_key FROM ledger_entries e JOIN members m"
        " ON m.id = e.member_id WHERE e.kind = :k ORDER BY e.id", k=kind)


def mid(club: Club, code: str) -> int:
    return club.scalar("SELECT id FROM members WHERE code = :c", c=code)


# -- signup ----------------------------------------------------------------------------------


def test_signup_bonus_once_per_member(bclub: Club) -> None:
    r = bclub.ok("--as-of", "2026-01-01", "members", "add", "A", "Ann", "--format", "json")
    assert json.loads(r.stdout)["balance"] == 50  # the new member's card shows the bonus
    assert entries(bclub, "signup") == [("A", 50, f"signup:{mid(bclub, 'A')}")]
    assert bclub.balance("A") == 50
    r = bclub.run("--as-of", "2026-01-01", "members", "add", "A", "Again")
    assert r.exit_code == 5  # the code is taken: no second member, no second bonus
    assert entries(bclub, "signup") == [("A", 50, f"signup:{mid(bclub, 'A')}")]


def test_signup_bonus_for_an_imported_batch(bclub: Club) -> None:
    path = bclub.root / "members.csv"
    path.write_text("code,name\nA,Ann\nB,Bob\nC,Cy\n", encoding="utf-8")
    bclub.ok("--as-of", "2026-01-01", "members", "import", str(path))
    assert sorted(e[:2] for e in entries(bclub, "signup")) == [("A", 50), ("B", 50), ("C", 50)]
    assert bclub.ok("db", "check")


# -- birthdays -------------------------------------------------------------------------------


def birthday_run(club: Club, as_of: str, *opts: str):  # noqa: ANN201
    return club.ok("bonuses", "birthday", "--as-of", as_of, *opts)


def test_birthday_on_the_day_and_twice_changes_nothing(bclub: Club) -> None:
    add(bclub, "A", "2026-01-01", "--birth-date", "1990-03-05")
    add(bclub, "B", "2026-01-01", "--birth-date", "1985-03-06")
    add(bclub, "C", "2026-01-01")  # no birth date
    r = birthday_run(bclub, "2026-03-05", "--format", "json")
    assert json.loads(r.stdout) == [{"member": "A"}]
    assert "1 birthday bonuses granted (100 points), 0 already granted, for birthdays 2026-03-05" in r.stderr
    assert entries(bclub, "birthday") == [("A", 100, f"birthday:{mid(bclub, 'A')}:2026")]
    assert bclub.balance("A") == 150  # signup 50 + birthday 100
    before = bclub.dump()
    r = birthday_run(bclub, "2026-03-05")
    assert "0 birthday bonuses granted (0 points), 1 already granted" in r.stderr
    assert bclub.dump() == before
    # A catch-up over the whole week grants B's and nothing more for A.
    r = birthday_run(bclub, "2026-03-08", "--since", "2026-03-01")
    assert "1 birthday bonuses granted (100 points), 1 already granted, for birthdays 2026-03-01 to 2026-03-08" in r.stderr
    assert [e[0] for e in entries(bclub, "birthday")] == ["A", "B"]
    # The next year is a new bonus.
    birthday_run(bclub, "2027-03-05")
    assert entries(bclub, "birthday")[-1] == ("A", 100, f"birthday:{mid(bclub, 'A')}:2027")


def test_29_february_birthday_in_a_common_year_is_on_28_february(bclub: Club) -> None:
    add(bclub, "LEAP", "2026-01-01", "--birth-date", "2000-02-29")
    add(bclub, "MAR1", "2026-01-01", "--birth-date", "2000-03-01")
    r = birthday_run(bclub, "2027-02-27")
    assert r.stderr.startswith("0 birthday bonuses granted")
    r = birthday_run(bclub, "2027-02-28", "--format", "json")  # 2027 has no 29 February
    assert json.loads(r.stdout) == [{"member": "LEAP"}]
    r = birthday_run(bclub, "2027-03-01", "--format", "json")
    assert json.loads(r.stdout) == [{"member": "MAR1"}]  # LEAP is not granted again
    # In a leap year the birthday is the 29th itself, not the 28th.
    assert birthday_run(bclub, "2028-02-28").stderr.startswith("0 birthday bonuses granted")
    birthday_run(bclub, "2028-02-29")
    keys = [e[2] for e in entries(bclub, "birthday") if e[0] == "LEAP"]
    assert keys == [f"birthday:{mid(bclub, 'LEAP')}:2027", f"birthday:{mid(bclub, 'LEAP')}:2028"]


def test_birthdays_skip_inactive_members_and_days_before_joining(bclub: Club) -> None:
    add(bclub, "SUS", "2026-01-01", "--birth-date", "1990-03-05")
    bclub.ok("members", "suspend", "SUS", "--reason", "fraud check")
    add(bclub, "NEW", "2026-03-10", "--birth-date", "1990-03-05")  # joined after the birthday
    r = birthday_run(bclub, "2026-03-31", "--since", "2026-03-01")
    assert r.stderr.startswith("0 birthday bonuses granted")
    assert entries(bclub, "birthday") == []


def test_birthday_bad_since_is_rejected(bclub: Club) -> None:
    before = bclub.dump()
    r = bclub.run("bonuses", "birthday", "--as-of", "2026-03-05", "--since", "2026-03-06")
    assert r.exit_code == 4 and "--since: 2026-03-06 is after the as-of day 2026-03-05" in r.stderr
    r = bclub.run("bonuses", "birthday", "--as-of", "2026-03-05", "--since", "yesterday")
    assert r.exit_code == 4 and "--since" in r.stderr
    assert bclub.dump() == before


JALALI = SIMPLE_CONFIG.replace('timezone = "UTC"', 'timezone = "Asia/Tehran"\ncalendar = "jalali"')


def test_jalali_birthday_recurs_on_its_jalali_day(club: Club) -> None:
    club.write_config(JALALI + BONUSES)
    # Born 1 Farvardin 1369 (21 March 1990). 1 Farvardin 1407 is 20 March 2028, so the
    # Jalali birthday comes a day before the Gregorian anniversary that year.
    add(club, "NOWRUZ", "1406-01-01", "--birth-date", "1369-01-01")
    # Born 30 Esfand 1403 (a leap year; 20 March 2025): in common 1404 it is 29 Esfand.
    add(club, "ESF30", "1404-01-01", "--birth-date", "1403-12-30")
    r = club.ok("bonuses", "birthday", "--as-of", "1404-12-29", "--format", "json")
    assert json.loads(r.stdout) == [{"member": "ESF30"}]
    assert "for birthdays 1404-12-29" in r.stderr
    # 1406 is a common year too: ESF30 again on 29 Esfand (19 March 2028), NOWRUZ not yet.
    r = club.ok("bonuses", "birthday", "--as-of", "1406-12-29", "--format", "json")
    assert json.loads(r.stdout) == [{"member": "ESF30"}]
    r = club.ok("bonuses", "birthday", "--as-of", "1407-01-01", "--format", "json")
    assert json.loads(r.stdout) == [{"member": "NOWRUZ"}]
    # The Gregorian anniversary (21 March 2028 = 2 Farvardin 1407) grants nothing more.
    assert club.ok("bonuses", "birthday", "--as-of", "1407-01-02").stderr.startswith("0 birthday")
    keys = club.query("SELECT m.code, e.idem_key, e.ref FROM ledger_entries e JOIN members m"
                      " ON m.id = e.member_id WHERE e.kind = 'birthday' ORDER BY e.id")
    assert keys == [("ESF30", f"birthday:{mid(club, 'ESF30')}:1404", "2026-03-20"),
                    ("ESF30", f"birthday:{mid(club, 'ESF30')}:1406", "2028-03-19"),
                    ("NOWRUZ", f"birthday:{mid(club, 'NOWRUZ')}:1407", "2028-03-20")]


def test_birthday_job_refuses_while_locked(bclub: Club) -> None:
    from loyaltyctl.db.engine import make_engine
    from loyaltyctl.services.locks import job_lock

    add(bclub, "A", "2026-01-01", "--birth-date", "1990-03-05")
    engine = make_engine(bclub.db_url)
    try:
        with job_lock(engine=engine, name="bonuses birthday", holder="other run"):
            before = bclub.dump()
            r = bclub.run("bonuses", "birthday", "--as-of", "2026-03-05")
            assert r.exit_code == 5 and "bonuses birthday is already running" in r.stderr
            assert bclub.dump() == before
    finally:
        engine.dispose()


# -- events ----------------------------------------------------------------------------------


def event(club: Club, name: str, code: str, ref: str, on: str, *opts: str):  # noqa: ANN201
    return club.run("--as-of", on, "bonuses", "event", name, code, "--ref", ref, *opts)


def test_event_points_with_a_limit_per_month(bclub: Club) -> None:
    add(bclub, "A", "2026-01-01")
    r = event(bclub, "survey", "A", "s1", "2026-01-10")
    assert r.exit_code == 0 and "A: +20 points for survey (1 of 1 this month); balance 70" in r.stderr
    assert bclub.query("SELECT kind, points, item_code, ref, idem_key FROM ledger_entries"
                       " WHERE kind = 'event'") == [("event", 20, "survey", "s1", "event:survey:s1")]
    # The same ref again: a no-op that says so, exit 0.
    before = bclub.dump()
    r = event(bclub, "survey", "A", "s1", "2026-01-10", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["already_granted"] is True
    assert "already granted" in r.stderr
    assert bclub.dump() == before
    # A second survey in January is over the limit: exit 5, nothing written.
    r = event(bclub, "survey", "A", "s2", "2026-01-31")
    assert r.exit_code == 5
    assert "member A already has 1 'survey' bonus(es) this month (max 1)" in r.stderr
    assert bclub.dump() == before
    # February is a new period.
    assert event(bclub, "survey", "A", "s2", "2026-02-01").exit_code == 0
    assert bclub.balance("A") == 50 + 20 + 20


def test_event_limits_per_day_and_ever(bclub: Club) -> None:
    add(bclub, "A", "2026-01-01")
    assert event(bclub, "review", "A", "r1", "2026-01-10").exit_code == 0
    assert event(bclub, "review", "A", "r2", "2026-01-10").exit_code == 0
    assert event(bclub, "review", "A", "r3", "2026-01-10").exit_code == 5  # max 2 a day
    assert event(bclub, "review", "A", "r3", "2026-01-11").exit_code == 0
    assert event(bclub, "app", "A", "install", "2026-01-10").exit_code == 0
    r = event(bclub, "app", "A", "reinstall", "2027-06-01")
    assert r.exit_code == 5 and "1 'app' bonus(es) ever (max 1)" in r.stderr
    assert [e[1] for e in entries(bclub, "event")] == [10, 10, 10, 30]


@pytest.mark.parametrize(("args", "code", "message"), [
    (("quiz", "A", "--ref", "q1"), 4, "unknown event 'quiz' (events: app, review, survey)"),
    (("survey", "NOPE", "--ref", "q1"), 3, "no member matches 'NOPE'"),
    (("survey", "B", "--ref", "s1"), 5, "'s1' was already used for 'survey' by member A"),
    (("survey", "SUS", "--ref", "s9"), 5, "member SUS is suspended"),
])
def test_event_bad_input_changes_nothing(bclub: Club, args: tuple, code: int, message: str) -> None:
    add(bclub, "A", "2026-01-01")
    add(bclub, "B", "2026-01-01")
    add(bclub, "SUS", "2026-01-01")
    bclub.ok("members", "suspend", "SUS", "--reason", "x")
    assert event(bclub, "survey", "A", "s1", "2026-01-05").exit_code == 0
    before = bclub.dump()
    r = bclub.run("--as-of", "2026-01-06", "bonuses", "event", *args)
    assert r.exit_code == code, r.output
    assert message in r.stderr
    assert bclub.dump() == before


@pytest.mark.parametrize(("period", "calendar", "today", "start"), [
    ("week", "gregorian", "2026-01-07", "2026-01-05"),  # a Wednesday: weeks start on Monday
    ("week", "jalali", "2026-01-07", "2026-01-03"),     # Jalali weeks start on Saturday
    ("week", "jalali", "2026-01-03", "2026-01-03"),
    ("month", "gregorian", "2026-03-21", "2026-03-01"),
    ("month", "jalali", "2026-03-22", "2026-03-21"),    # 2 Farvardin 1405 -> 1 Farvardin
    ("year", "jalali", "2026-03-20", "2025-03-21"),     # 29 Esfand 1404 -> 1 Farvardin 1404
    ("day", "gregorian", "2026-03-20", "2026-03-20"),
])
def test_event_periods_follow_the_calendar(period: str, calendar: str, today: str, start: str) -> None:
    from datetime import date

    from loyaltyctl.services.bonuses import period_start

    assert period_start(period, date.fromisoformat(today), calendar) == date.fromisoformat(start)
    assert period_start("ever", date.fromisoformat(today), calendar) is None
