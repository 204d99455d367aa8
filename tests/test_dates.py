"""Dates typed by people and found in exports: the year tells the calendar, and a date no
loyalty program can mean is refused (exit 4, naming the option or row, nothing written)."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from conftest import SIMPLE_CONFIG, Club
from loyaltyctl.normalize import parse_date

JALALI_CONFIG = SIMPLE_CONFIG.replace('timezone = "UTC"', 'timezone = "UTC"\ncalendar = "jalali"')


def _occurred(club: Club, ref: str) -> datetime:
    value = club.scalar("SELECT occurred_at FROM purchases WHERE ref = :r", r=ref)
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


@pytest.mark.parametrize("text, expected", [
    ("2026-03-04", date(2026, 3, 4)),          # Gregorian in either program
    ("1405-01-01", date(2026, 3, 21)),         # Nowruz 1405
    ("۱۴۰۵/۰۱/۰۱", date(2026, 3, 21)),         # Persian digits and slashes
    ("1900-01-01", date(1900, 1, 1)),
    ("2199-12-31", date(2199, 12, 31)),
    ("1278-10-11", date(1900, 1, 1)),          # the same first day, in Jalali
])
def test_the_year_tells_the_calendar(text: str, expected: date) -> None:
    assert parse_date(text, "gregorian") == expected
    assert parse_date(text, "jalali") == expected


@pytest.mark.parametrize("text", ["0001-01-01", "9999-12-31", "1899-12-31", "2200-01-01",
                                  "1200-05-05", "1650-01-01"])
def test_dates_no_program_can_mean_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_date(text)


def test_an_iso_date_in_a_jalali_program_is_gregorian(club: Club) -> None:
    """A POS export's 2026-03-04 is 4 March 2026 in a Jalali program too (it was read as
    the Jalali year 2026, that is 2647), and is shown back in Jalali."""
    club.write_config(JALALI_CONFIG)
    club.ok("members", "add", "M1", "Ali")
    club.ok("--as-of", "2026-03-05", "purchases", "record", "M1", "100000", "--ref", "T1",
            "--at", "2026-03-04T10:00")
    assert _occurred(club, "T1") == datetime(2026, 3, 4, 10, 0)
    club.ok("--as-of", "1404-12-15", "purchases", "record", "M1", "100000", "--ref", "T2",
            "--at", "1404-12-14T10:00")  # 1404-12-14 = 2026-03-05
    assert _occurred(club, "T2") == datetime(2026, 3, 5, 10, 0)
    r = club.ok("--as-of", "2026-03-06", "purchases", "list", "--member", "M1")
    assert "1404-12-13" in r.stdout and "1404-12-14" in r.stdout  # 4 and 5 March, in Jalali


def test_a_jalali_date_in_a_gregorian_program(club: Club) -> None:
    club.ok("members", "add", "M1", "Ali")
    club.ok("--as-of", "2026-03-22", "purchases", "record", "M1", "100000", "--ref", "T1",
            "--at", "1405-01-01T09:30")
    assert _occurred(club, "T1") == datetime(2026, 3, 21, 9, 30)


def test_an_impossible_date_is_refused_and_nothing_written(club: Club) -> None:
    club.ok("members", "add", "M1", "Ali")
    before = club.dump()
    r = club.run("purchases", "record", "M1", "100000", "--ref", "T1", "--at", "0001-01-01T10:00")
    assert r.exit_code == 4, r.output
    assert "--at" in r.output and "out of range" in r.output
    r = club.run("members", "add", "M2", "Sara", "--birth-date", "9999-12-31")
    assert r.exit_code == 4, r.output
    assert "birth" in r.output and "out of range" in r.output
    r = club.run("--as-of", "0001-01-01", "points", "balance", "M1")
    assert r.exit_code == 4, r.output
    assert "--as-of" in r.output
    assert club.dump() == before


def test_an_impossible_date_in_an_import_names_the_row(club: Club) -> None:
    club.ok("members", "add", "M1", "Ali")
    before = club.dump()
    path = club.root / "p.csv"
    path.write_text("ref,member,amount,occurred_at\nT1,M1,100000,2026-03-04T10:00\n"
                    "T2,M1,100000,0001-01-01T10:00\n", encoding="utf-8")
    r = club.run("--as-of", "2026-03-05", "purchases", "import", str(path))
    assert r.exit_code == 4, r.output
    assert "row 3" in r.output or "line 3" in r.output, r.output
    assert "out of range" in r.output
    assert club.dump() == before
    members = club.root / "m.csv"
    members.write_text("code,name,birth_date\nM7,Reza,1990-02-03\nM8,Mina,0001-01-01\n",
                       encoding="utf-8")
    r = club.run("members", "import", str(members))
    assert r.exit_code == 4, r.output
    assert "out of range" in r.output and ("row 3" in r.output or "line 3" in r.output), r.output
    assert club.dump() == before
