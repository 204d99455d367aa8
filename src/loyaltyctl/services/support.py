"""The support screen: everything a support person needs about one member, in one read.

`member_screen` gathers, in one session and a handful of indexed per-member queries (none
per ledger row): the member's record (`members.member_profile`), tier progress (the figures
of `tiers.progress`), available / pending / soon-expiring points (`points.balance_summary`)
with the expiring points per expiry date, the last ledger entries with the running balance
(`points.history`), and the referrals made and how many of them bought.

The queries are `services/lookup.py`'s, which `members show` runs without the ORM in the
common case; these functions run the same ones through an ORM session (after pending points
were activated, with --show-pii, or from a script).

Pending points whose holding period is over are activated before this read by the caller
(`cli.returns.activate_due_pending`), so the screen never writes.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from loyaltyctl.services.lookup import EXPIRING_WITHIN_DAYS, RECENT_ENTRIES

if TYPE_CHECKING:
    from sqlmodel import Session

    from loyaltyctl.config import Config
    from loyaltyctl.db.models import Member


def expiring_by_date(*, session: Session, member_id: int, today: date,
                     within_days: int = EXPIRING_WITHIN_DAYS) -> list[dict[str, Any]]:
    """Available points that expire after `today` and within `within_days`, per expiry date.

    `expires_on` is the first day the points can no longer be used (as on the lots).
    """
    from loyaltyctl.db.lite import SessionReader
    from loyaltyctl.services import lookup

    return lookup.expiring_by_date(reader=SessionReader(session), member_id=member_id,
                                   today=today, within_days=within_days)


def member_screen(
    *,
    session: Session,
    config: Config,
    member: Member,
    now: datetime,
    today: date,
    recent: int = RECENT_ENTRIES,
    within_days: int = EXPIRING_WITHIN_DAYS,
) -> dict[str, Any]:
    """One member's support screen as plain data: see `lookup.member_screen` for the keys."""
    from loyaltyctl.db.lite import SessionReader
    from loyaltyctl.services import lookup

    assert member.id is not None
    return lookup.member_screen(reader=SessionReader(session), config=config, member=member,
                                now=now, today=today, recent=recent, within_days=within_days)
