"""Input normalisation: Persian/Arabic-Indic digits, money, phones, e-mails, dates.

Every function raises `ValueError` with a short reason; callers add the file, row or
option name and turn it into `InvalidInput`.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache

# Persian (U+06F0..U+06F9) and Arabic-Indic (U+0660..U+0669) digits, plus the Arabic
# decimal and thousands separators, mapped to ASCII.
_DIGITS = {ord(c): str(i) for i, c in enumerate("۰۱۲۳۴۵۶۷۸۹")}
_DIGITS.update({ord(c): str(i) for i, c in enumerate("٠١٢٣٤٥٦٧٨٩")})
_DIGITS.update({0x066B: ".", 0x066C: ",", 0x060C: ","})

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# No number we accept has more digits than this; longer text is refused before parsing.
_MAX_DIGITS = 40


def _shown(text: object) -> str:
    """`text` quoted for a message, cut short if it is long."""
    s = str(text)
    return repr(s) if len(s) <= 40 else f"{s[:20]!r}... ({len(s):,} characters)"


def ascii_digits(text: str) -> str:
    """Replace Persian and Arabic-Indic digits with ASCII ones and strip the ends."""
    return text.translate(_DIGITS).strip()


def parse_int(text: str | int) -> int:
    """An integer, accepting Persian digits, thousands separators and stray spaces."""
    if isinstance(text, bool):
        raise ValueError("not a whole number")
    if isinstance(text, int):
        return text
    s = ascii_digits(str(text)).replace(",", "").replace("_", "").replace(" ", "")
    s = s.replace("\u200c", "").replace("\u00a0", "")
    if not re.fullmatch(r"[+-]?\d+", s):
        raise ValueError(f"{_shown(text)} is not a whole number")
    if len(s) > _MAX_DIGITS:  # int() of thousands of digits is slow, then refused by Python
        raise ValueError(f"{_shown(text)} is too large")
    return int(s)


def parse_money(text: str | int | float | Decimal, decimals: int) -> int:
    """An amount in major units ("1,250.50", "۱۲۵۰") to integer minor units.

    Refuses more fraction digits than the currency has, so no amount is ever rounded.
    """
    if isinstance(text, bool):
        raise ValueError("not an amount")
    if isinstance(text, int):
        value = Decimal(text)
    elif isinstance(text, float):
        value = Decimal(repr(text))
    elif isinstance(text, Decimal):
        value = text
    else:
        s = ascii_digits(text).replace(",", "").replace("_", "").replace(" ", "")
        s = s.replace("\u200c", "").replace("\u00a0", "")
        if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", s):
            raise ValueError(f"{_shown(text)} is not an amount")
        if len(s) > _MAX_DIGITS:  # a million digits overflow Decimal's exponent
            raise ValueError(f"{_shown(text)} is too large")
        try:
            value = Decimal(s)
        except InvalidOperation as exc:  # pragma: no cover - regex guards this
            raise ValueError(f"{text!r} is not an amount") from exc
    minor = value.scaleb(decimals)
    if minor != minor.to_integral_value():
        raise ValueError(f"{text!r} has more than {decimals} decimal places")
    result = int(minor)
    if abs(result) > 10**15:
        raise ValueError(f"{text!r} is too large")
    return result


def format_money(minor: int, decimals: int) -> str:
    """Integer minor units to a display string with thousands separators."""
    if decimals == 0:
        return f"{minor:,}"
    sign = "-" if minor < 0 else ""
    q, r = divmod(abs(minor), 10**decimals)
    return f"{sign}{q:,}.{r:0{decimals}d}"


@lru_cache(maxsize=4096)
def normalize_phone(text: str, region: str) -> str:
    """A phone number in any common format (Persian digits too) to E.164."""
    import phonenumbers

    s = ascii_digits(str(text))
    if not s:
        raise ValueError("empty phone number")
    if s.startswith("00"):
        s = "+" + s[2:]
    try:
        parsed = phonenumbers.parse(s, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{text!r} is not a phone number") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"{text!r} is not a valid phone number for region {region}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(text: str) -> str:
    """Trim and lower-case an e-mail address and check its shape.

    A syntactic check only: a loyalty import must not stop on a DNS look-up.
    """
    s = ascii_digits(str(text)).lower()
    if not _EMAIL_RE.match(s) or len(s) > 254:
        raise ValueError(f"{text!r} is not a valid e-mail address")
    local, _, domain = s.rpartition("@")
    if ".." in s or domain.startswith(".") or domain.endswith(".") or local.endswith("."):
        raise ValueError(f"{text!r} is not a valid e-mail address")
    return s


_DATE_RE = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})$")


# Dates a loyalty program can mean: birth dates from 1900, expiry dates up to 2199. Outside
# this range a date is a typo (0001-01-01, 9999-12-31 for "never") and is refused.
DATE_MIN = date(1900, 1, 1)
DATE_MAX = date(2199, 12, 31)
_JALALI_BELOW = 1700  # a year below this is a Jalali year (1279-1578 is 1900-2199)


def parse_date(text: str | date, calendar: str = "gregorian") -> date:
    """A date as YYYY-MM-DD (or with / or .), Persian digits accepted.

    The year tells the calendar, whatever the program's: a year below 1700 (1405-01-01)
    is Jalali and is converted to Gregorian, any other (2026-03-21) is Gregorian, so ISO
    dates from a POS export mean the same in a Jalali program. `calendar` is kept for the
    callers' signature; it is how dates are shown, not how they are read. Dates outside
    1900-01-01..2199-12-31 are refused.
    """
    if isinstance(text, datetime):
        return text.date()
    if isinstance(text, date):
        return text
    s = ascii_digits(str(text))
    m = _DATE_RE.match(s)
    if not m:
        raise ValueError(f"{text!r} is not a date (expected YYYY-MM-DD)")
    y, mo, d = (int(g) for g in m.groups())
    if y < _JALALI_BELOW:
        import jdatetime

        try:
            day = jdatetime.date(y, mo, d).togregorian()
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid Jalali date") from exc
    else:
        try:
            day = date(y, mo, d)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid date") from exc
    if not DATE_MIN <= day <= DATE_MAX:
        raise ValueError(f"{text!r} is out of range: dates run from 1900-01-01 to 2199-12-31 "
                         f"(Jalali 1278-10-11 to 1578-10-10)")
    return day


def parse_duration_days(text: str) -> int:
    """'30d', '4w', '3m' (30-day months) or a bare number of days."""
    s = ascii_digits(text).lower()
    m = re.fullmatch(r"(\d+)\s*([dwm]?)", s)
    if not m:
        raise ValueError(f"{text!r} is not a duration (use e.g. 30d, 4w, 3m)")
    n, unit = int(m.group(1)), m.group(2) or "d"
    return n * {"d": 1, "w": 7, "m": 30}[unit]


def clean_text(text: str | None, *, max_len: int = 200, field: str = "text") -> str | None:
    """Strip, drop control characters, refuse absurd lengths."""
    if text is None:
        return None
    s = str(text).strip()
    if any(ord(c) < 32 and c not in "\t" for c in s):
        raise ValueError(f"{field} contains control characters")
    if len(s) > max_len:
        raise ValueError(f"{field} is longer than {max_len} characters")
    return s or None
