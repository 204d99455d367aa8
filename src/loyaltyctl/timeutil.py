"""Time: everything is stored as naive UTC; display uses the program's zone and calendar."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from loyaltyctl.normalize import ascii_digits, parse_date


def utcnow() -> datetime:
    """The current time as naive UTC (freezegun-friendly)."""
    return datetime.now(UTC).replace(tzinfo=None)


@lru_cache(maxsize=16)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def to_local(dt_utc: datetime, tz: str) -> datetime:
    return dt_utc.replace(tzinfo=UTC).astimezone(zone(tz))


def local_date(dt_utc: datetime, tz: str) -> date:
    """The calendar date in the program's timezone of a stored UTC instant."""
    return to_local(dt_utc, tz).date()


def local_midnight_utc(d: date, tz: str) -> datetime:
    """The UTC instant at which local day `d` begins."""
    return datetime.combine(d, time.min, zone(tz)).astimezone(UTC).replace(tzinfo=None)


def end_of_local_day_utc(d: date, tz: str) -> datetime:
    """The last microsecond of local day `d`, in UTC."""
    return local_midnight_utc(d + timedelta(days=1), tz) - timedelta(microseconds=1)


_DT_RE = re.compile(
    r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2})[T ](\d{1,2}):(\d{2})(?::(\d{2}))?(Z|[+-]\d{2}:?\d{2})?$"
)


def parse_instant(
    text: str | datetime | date, *, tz: str, calendar: str = "gregorian", date_means: str = "start"
) -> datetime:
    """A date or date-time in local time (or with an explicit offset) to naive UTC.

    A bare date means the start of that local day, or its end with date_means="end" (so
    that `--as-of 2026-03-31` includes everything that happened on the 31st).
    """
    if isinstance(text, datetime):
        if text.tzinfo is None:
            return text
        return text.astimezone(UTC).replace(tzinfo=None)
    if isinstance(text, date):
        d = text
    else:
        s = ascii_digits(str(text))
        m = _DT_RE.match(s)
        if m:
            d = parse_date(m.group(1), calendar)
            hh, mm, ss = int(m.group(2)), int(m.group(3)), int(m.group(4) or 0)
            off = m.group(5)
            try:
                local = datetime.combine(d, time(hh, mm, ss))
            except ValueError as exc:
                raise ValueError(f"{text!r} is not a valid time") from exc
            if off:
                if off == "Z":
                    return local
                sign = 1 if off[0] == "+" else -1
                digits = off[1:].replace(":", "")
                delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
                return local - sign * delta
            return local.replace(tzinfo=zone(tz)).astimezone(UTC).replace(tzinfo=None)
        d = parse_date(s, calendar)
    if date_means == "end":
        return end_of_local_day_utc(d, tz)
    return local_midnight_utc(d, tz)


def format_date(d: date | None, calendar: str = "gregorian") -> str:
    if d is None:
        return ""
    if calendar == "jalali":
        import jdatetime

        return jdatetime.date.fromgregorian(date=d).strftime("%Y-%m-%d")
    return d.isoformat()


def format_datetime(dt_utc: datetime | None, tz: str, calendar: str = "gregorian") -> str:
    if dt_utc is None:
        return ""
    local = to_local(dt_utc, tz)
    return f"{format_date(local.date(), calendar)} {local:%H:%M}"
