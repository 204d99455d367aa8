"""When a lot expires: a pure function of the expiry rules and the day it became available.

`expires_on` is the first local day on which the points can no longer be used; the nightly
`points expire --as-of D` closes every lot with expires_on <= D.
"""

from __future__ import annotations

from datetime import date, timedelta

from loyaltyctl.config import Expiry

_MONTHS = {"month": 1, "quarter": 3, "year": 12}


def expiry_date(available_on: date, expiry: Expiry) -> date | None:
    if expiry.mode == "never":
        return None
    if expiry.mode == "rolling":
        return available_on + timedelta(days=expiry.days)
    step = _MONTHS[expiry.period]
    # Index of the period that contains the day, counted in months since year 0.
    start_month = (available_on.year * 12 + available_on.month - 1) // step * step
    first_after = start_month + step * (expiry.periods + 1)
    return date(first_after // 12, first_after % 12 + 1, 1)
