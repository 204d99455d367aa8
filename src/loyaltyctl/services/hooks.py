"""Extension points between modules, called once per batch (never once per row).

- after_enrolment: members were inserted (members add / members import / purchases import
  --create-members): the starting tier (a threshold-0 tier), signup bonuses, referral
  bonuses with trigger = "signup" (none for a self-referral or a referral cycle).
- after_purchases: purchases were recorded (purchases record / purchases import): tier
  upgrades (never downgrades: those wait for `tiers recalc`), referral bonuses with
  trigger = "first_purchase" for referees whose first purchase is in the batch.

Callers pass ids; each hook queries what it needs set-based.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session

from loyaltyctl.config import Config


def after_enrolment(
    *, session: Session, config: Config, member_ids: Sequence[int], now: datetime, actor: str
) -> None:
    if not member_ids:
        return
    from loyaltyctl.services import bonuses, tiers

    tiers.assign_initial(session=session, config=config, member_ids=member_ids, now=now, actor=actor)
    bonuses.grant_signup(session=session, config=config, member_ids=member_ids, now=now, actor=actor)
    bonuses.grant_referrals_on_signup(session=session, config=config, member_ids=member_ids,
                                      now=now, actor=actor)
    _expire_members(session)


def after_purchases(
    *, session: Session, config: Config, purchase_ids: Sequence[int], now: datetime, actor: str
) -> None:
    if not purchase_ids:
        return
    from loyaltyctl.services import bonuses, tiers

    tiers.upgrade_members_of_purchases(session=session, config=config, purchase_ids=purchase_ids,
                                       now=now, actor=actor)
    bonuses.grant_referrals_on_purchases(session=session, config=config,
                                         purchase_ids=purchase_ids, now=now, actor=actor)
    _expire_members(session)


def _expire_members(session: Session) -> None:
    """The hooks change tiers and balances with set-based statements, behind the ORM's
    back: members already loaded in the session are reloaded on their next use, so the
    caller shows the new balance and tier."""
    from loyaltyctl.db.models import Member

    for obj in list(session.identity_map.values()):
        if isinstance(obj, Member):
            session.expire(obj)
