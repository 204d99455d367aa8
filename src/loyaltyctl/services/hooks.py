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
from typing import TYPE_CHECKING

from sqlmodel import Session

from loyaltyctl.config import Config

if TYPE_CHECKING:
    from loyaltyctl.services.tiers import TierMetrics


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
    *, session: Session, config: Config, purchase_ids: Sequence[int], now: datetime, actor: str,
    member_ids: Sequence[int] | None = None, tier_metrics: TierMetrics | None = None,
) -> None:
    """member_ids: the members of `purchase_ids` (all of them, and no others) when the
    caller knows them, which saves looking them up. tier_metrics: a bulk writer's running
    tier metrics (see tiers.TierMetrics), the same object for every batch."""
    if not purchase_ids:
        return
    from loyaltyctl.services import bonuses, tiers

    tiers.upgrade_members_of_purchases(session=session, config=config, purchase_ids=purchase_ids,
                                       now=now, actor=actor, member_ids=member_ids,
                                       metrics=tier_metrics)
    if config.bonuses.referral.trigger == "first_purchase":
        referred = _purchases_of_referred_members(session, purchase_ids, member_ids)
        if referred:
            bonuses.grant_referrals_on_purchases(session=session, config=config,
                                                 purchase_ids=referred, now=now, actor=actor)
    _expire_members(session)


def _purchases_of_referred_members(session: Session, purchase_ids: Sequence[int],
                                   member_ids: Sequence[int] | None) -> list[int]:
    """The purchases, among `purchase_ids`, of members someone referred: the only ones a
    referral bonus can follow. One or two statements with one array parameter each, where
    the bonus query would take the whole batch 5,000 ids at a time (most members were
    referred by nobody, and a batch of an import is 50,000 purchases)."""
    from sqlalchemy import select

    from loyaltyctl.db.models import Member, Purchase
    from loyaltyctl.services.tiers import ids_param, in_ids

    p, m = Purchase.__table__, Member.__table__  # type: ignore[attr-defined]
    if member_ids is not None:
        # The usual answer, from the members alone: nobody here was referred.
        q = select(m.c.id).where(in_ids(m.c.id, ids_param("mids")),
                                 m.c.referred_by_id.is_not(None)).limit(1)
        if session.execute(q, {"mids": member_ids}).first() is None:
            return []
    q = (select(p.c.id).select_from(p.join(m, m.c.id == p.c.member_id))
         .where(in_ids(p.c.id, ids_param("pids")), m.c.referred_by_id.is_not(None)))
    keep = set(session.execute(q, {"pids": purchase_ids}).scalars())
    return [i for i in purchase_ids if i in keep]  # in the caller's order


def _expire_members(session: Session) -> None:
    """The hooks change tiers and balances with set-based statements, behind the ORM's
    back: members already loaded in the session are reloaded on their next use, so the
    caller shows the new balance and tier."""
    from loyaltyctl.db.models import Member

    for obj in list(session.identity_map.values()):
        if isinstance(obj, Member):
            session.expire(obj)
