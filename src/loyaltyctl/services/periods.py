"""Report periods: calendar months, quarters and years (Gregorian or Jalali) as local dates.

Pure functions, no database. A period is a closed range of LOCAL dates [start, end]; the
instants it covers are [local midnight of start, local midnight of end + 1) in UTC, which
is how every report compares the naive-UTC times the database stores.

With calendar = "jalali" a month is a Jalali month (Farvardin 1..31 and so on), a quarter is
a Jalali season (months 1-3, 4-6, 7-9, 10-12) and a year starts on 1 Farvardin (Nowruz).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from loyaltyctl.timeutil import local_midnight_utc

UNITS = {"month": 1, "quarter": 3, "year": 12}


@dataclass(frozen=True)
class Period:
    """Local dates [start, end], both inclusive; start None means "since the beginning"."""

    start: date | None
    end: date
    label: str = ""

    def utc_bounds(self, tz: str) -> tuple[datetime | None, datetime]:
        """[lo, hi) in naive UTC; lo is None for an open start."""
        lo = local_midnight_utc(self.start, tz) if self.start else None
        return lo, local_midnight_utc(self.end + timedelta(days=1), tz)

    def contains(self, d: date) -> bool:
        return (self.start is None or self.start <= d) and d <= self.end


# -- calendar months as a running index ---------------------------------------------------


def month_index(d: date, calendar: str = "gregorian") -> int:
    """year * 12 + month - 1 of `d` in the calendar (Jalali year and month for jalali)."""
    if calendar == "jalali":
        import jdatetime

        j = jdatetime.date.fromgregorian(date=d)
        return j.year * 12 + j.month - 1
    return d.year * 12 + d.month - 1


def month_start(index: int, calendar: str = "gregorian") -> date:
    """The Gregorian date on which calendar month `index` (see month_index) begins."""
    year, month0 = divmod(index, 12)
    if calendar == "jalali":
        import jdatetime

        return jdatetime.date(year, month0 + 1, 1).togregorian()
    return date(year, month0 + 1, 1)


def period_label(index: int, unit: str, calendar: str = "gregorian") -> str:
    """2026-02, 2026-Q1 or 2026 (Jalali: 1404-11, 1404-Q4, 1404) for the period starting at
    calendar month `index`."""
    year, month0 = divmod(index, 12)
    if unit == "month":
        return f"{year:04d}-{month0 + 1:02d}"
    if unit == "quarter":
        return f"{year:04d}-Q{month0 // 3 + 1}"
    return f"{year:04d}"


def period_at(index: int, unit: str, calendar: str = "gregorian") -> Period:
    """The period of `unit` that starts at calendar month `index` (aligned by the caller)."""
    step = UNITS[unit]
    return Period(
        month_start(index, calendar),
        month_start(index + step, calendar) - timedelta(days=1),
        period_label(index, unit, calendar),
    )


def containing(day: date, unit: str, calendar: str = "gregorian") -> Period:
    """The month, quarter or year (in the calendar) that contains local date `day`."""
    if unit not in UNITS:
        raise ValueError(f"{unit!r} is not one of {', '.join(UNITS)}")
    step = UNITS[unit]
    return period_at(month_index(day, calendar) // step * step, unit, calendar)


def periods_covering(start: date, end: date, unit: str, calendar: str = "gregorian") -> list[Period]:
    """Consecutive whole periods of `unit` from the one containing `start` to the one
    containing `end`."""
    if end < start:
        raise ValueError("the end is before the start")
    step = UNITS[unit]
    first = month_index(start, calendar) // step * step
    last = month_index(end, calendar) // step * step
    return [period_at(i, unit, calendar) for i in range(first, last + 1, step)]


def last_periods(day: date, unit: str, count: int, calendar: str = "gregorian") -> list[Period]:
    """The `count` periods of `unit` ending with the one that contains `day`."""
    step = UNITS[unit]
    last = month_index(day, calendar) // step * step
    return [period_at(last - step * k, unit, calendar) for k in range(count - 1, -1, -1)]


def resolve(
    *,
    today: date,
    start: date | None = None,
    end: date | None = None,
    unit: str | None = None,
    calendar: str = "gregorian",
) -> Period:
    """The report period from --from/--to or --period (they exclude each other).

    --period month|quarter|year: the current one, containing `today` (the as-of day).
    --from/--to: those local dates; --to defaults to `today`, --from to the beginning.
    Nothing: everything up to `today`.
    Raises ValueError naming the option at fault.
    """
    if unit is not None:
        if start is not None or end is not None:
            raise ValueError("--period cannot be combined with --from/--to; use one or the other")
        return containing(today, unit, calendar)
    last = end or today
    if start is not None and start > last:
        raise ValueError(f"--from {start.isoformat()} is after --to {last.isoformat()}")
    return Period(start, last, "")


# -- birthdays ----------------------------------------------------------------------------


def birthday_in_year(birth: date, year: int, calendar: str = "gregorian") -> date:
    """The Gregorian date of the birthday in calendar year `year`.

    Gregorian: 29 February falls on 28 February in common years. Jalali: the birthday keeps
    its Jalali month and day; 30 Esfand (leap day) falls on 29 Esfand in common years.
    """
    if calendar == "jalali":
        import jdatetime

        jb = jdatetime.date.fromgregorian(date=birth)
        try:
            return jdatetime.date(year, jb.month, jb.day).togregorian()
        except ValueError:
            return jdatetime.date(year, jb.month, jb.day - 1).togregorian()
    try:
        return date(year, birth.month, birth.day)
    except ValueError:
        return date(year, birth.month, birth.day - 1)


def next_birthday(birth: date, on_or_after: date, calendar: str = "gregorian") -> date:
    """The first birthday on or after local date `on_or_after`."""
    if calendar == "jalali":
        import jdatetime

        year = jdatetime.date.fromgregorian(date=on_or_after).year
    else:
        year = on_or_after.year
    this = birthday_in_year(birth, year, calendar)
    return this if this >= on_or_after else birthday_in_year(birth, year + 1, calendar)


def birthday_candidates(first: date, days: int) -> set[tuple[int, int]]:
    """Gregorian (month, day) pairs a birth date may have if its birthday (in either
    calendar) falls within [first, first + days): a superset that a SQL filter can use
    before next_birthday decides exactly.

    Jalali month/day maps to a Gregorian month/day that shifts by one day between years,
    and 29 February celebrates on 28 February, so each day brings two neighbours each side.
    """
    out: set[tuple[int, int]] = set()
    for k in range(-2, days + 2):
        d = first + timedelta(days=k)
        out.add((d.month, d.day))
        if (d.month, d.day) == (2, 28):
            out.add((2, 29))
    return out
