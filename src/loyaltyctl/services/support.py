"""The support screen: everything a support person needs about one member, in one read.

`member_screen` gathers, in one session and a handful of indexed per-member queries (none
per ledger row): the member's record (`members.member_profile`), tier progress
(`tiers.progress`), available / pending / soon-expiring points (`points.balance_summary`)
with the expiring points per expiry date, the last ledger entries with the running balance
(`points.history`), and the referrals made and how many of them bought.

Pending points whose holding period is over are activated before this read by the caller
(`cli.returns.activate_due_pending`), so the screen never writes.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from loyaltyctl.config import Config
from loyaltyctl.db.models import LedgerEntry, Member

RECENT_ENTRIES = 10
EXPIRING_WITHIN_DAYS = 30


def _as_date(v: Any) -> date:
    return date.fromisoformat(v) if isinstance(v, str) else v


def expiring_by_date(*, session: Session, member_id: int, today: date,
                     within_days: int = EXPIRING_WITHIN_DAYS) -> list[dict[str, Any]]:
    """Available points that expire after `today` and within `within_days`, per expiry date.

    `expires_on` is the first day the points can no longer be used (as on the lots).
    """
    e = LedgerEntry
    rows = session.execute(
        select(e.expires_on, func.sum(e.remaining))
        .where(e.member_id == member_id, e.remaining > 0, e.pending_until.is_(None),
               e.expires_on > today, e.expires_on <= today + timedelta(days=within_days))
        .group_by(e.expires_on)
        .order_by(e.expires_on)
    ).all()
    return [{"expires_on": _as_date(d), "points": int(p)} for d, p in rows]


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
    """One member's support screen as plain data (stable keys; personal data unmasked).

    Keys: the `member_profile` record (code, name, status, phone, email, card_number,
    birth_date, joined_at, tags, acquisition_campaign, referred_by, merged_into, referrals,
    referred_buyers, tier, tier_since, balance, pending, ...), then
    - tier_name, tier_kept_through (last local day the tier is kept whatever the metric
      says, None if not retained) and tier_progress (the `tiers.progress` figures, or None
      when the program has no tiers);
    - available (balance less lots past their date that the nightly expiry has not closed),
      value (available x point_value, in minor units), currency, decimals;
    - expiring_within_days, expiring_soon (their sum), next_expiry (the first expiry date
      after today, even beyond the window) and expiring ([{expires_on, points}]);
    - recent: the last `recent` ledger entries, newest first, each with the available
      balance after it (pending entries do not move it).
    """
    from loyaltyctl.services import tiers
    from loyaltyctl.services.members import member_profile
    from loyaltyctl.services.points import balance_summary
    from loyaltyctl.services.points import history as ledger_history

    assert member.id is not None
    program = config.program
    data = member_profile(session=session, member_id=member.id, now=now)
    levels = config.tiers.levels
    progress = tiers.progress(session=session, config=config, member=member, now=now) \
        if levels else None
    current = config.tiers.get(member.tier)
    data["tier_name"] = current.name if current else None
    data["tier_kept_through"] = progress["kept_through"] if progress else None
    data["tier_progress"] = None if progress is None else {
        "metric": progress["metric"],
        "window_days": progress["window_days"],
        "value": progress["metric_value"],
        "next_tier": progress["next_tier"],
        "next_tier_name": (config.tiers.get(progress["next_tier"]).name  # type: ignore[union-attr]
                           if progress["next_tier"] else None),
        "next_threshold": progress["next_threshold"],
        "needed_for_next": progress["needed_for_next"],
        "keep_threshold": progress["keep_threshold"],
        "needed_to_keep": progress["needed_to_keep"],
        "floor": progress["floor"],
        "floor_until": progress["floor_until"],
    }
    bal = balance_summary(session=session, member=member, today=today, within_days=within_days)
    available = int(bal["available"])
    data["available"] = available
    data["value"] = available * program.point_value if available > 0 else 0
    data["currency"] = program.currency
    data["decimals"] = program.decimals
    data["expiring_within_days"] = within_days
    data["expiring_soon"] = int(bal["expiring_soon"])
    data["next_expiry"] = bal["next_expiry"]
    data["expiring"] = expiring_by_date(session=session, member_id=member.id, today=today,
                                        within_days=within_days) if bal["expiring_soon"] else []
    data["recent"] = [
        {"id": r["id"], "at": r["at"], "kind": r["kind"], "points": r["points"],
         "balance": r["balance"], "pending_until": r["pending_until"],
         "expires_on": r["expires_on"], "ref": r["ref"], "note": r["detail"]}
        for r in ledger_history(session=session, member=member, limit=recent)
    ]
    return data
