"""Recording purchases: the purchase row, its earn lot, and the after-purchase hooks.

Points come from the pure rules (`rules.earning.purchase_points` with the member's tier
multiplier and the campaigns running on the purchase's LOCAL date); the lot goes through
`services.ledger.credit`, so balances, pending points and clawback debt stay consistent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from loyaltyctl.config import Config
from loyaltyctl.db.models import Member, Purchase
from loyaltyctl.errors import InvalidInput, Refused
from loyaltyctl.rules.campaigns import matching_campaigns
from loyaltyctl.rules.earning import norm_category, purchase_points
from loyaltyctl.rules.expiry import expiry_date
from loyaltyctl.services import hooks, ledger
from loyaltyctl.timeutil import local_date


@dataclass(frozen=True)
class PurchaseResult:
    purchase_id: int
    ref: str
    member_code: str
    amount: int
    currency: str
    occurred_at: datetime
    points: int
    """Points this purchase earned (0 for a no-op repeat: nothing was added this time)."""
    campaign: str | None
    pending_until: datetime | None
    expires_on: date | None
    balance: int
    pending: int
    already_recorded: bool


def _norm_channel(channel: str | None) -> str | None:
    return channel.strip().lower() if channel and channel.strip() else None


def earn_lot_terms(
    *, config: Config, occurred_at: datetime, now: datetime
) -> tuple[datetime | None, date | None]:
    """(pending_until, expires_on) of a purchase's earn lot.

    Pending points wait `pending_days` after the purchase; their expiry clock starts on the
    local day they become available. A backdated purchase whose pending window has already
    passed is available at once (pending_until None), with the same expiry date.
    """
    tz = config.program.timezone
    available_at = occurred_at
    pending_until = None
    if config.earning.pending_days > 0:
        available_at = occurred_at + timedelta(days=config.earning.pending_days)
        if available_at > now:
            pending_until = available_at
    return pending_until, expiry_date(local_date(available_at, tz), config.expiry)


def record_purchase(
    *,
    session: Session,
    config: Config,
    member: Member,
    amount: int,
    ref: str,
    occurred_at: datetime | None,
    category: str | None,
    channel: str | None,
    actor: str,
    now: datetime,
) -> PurchaseResult:
    """Record one purchase and credit its points; the same ref twice is a no-op.

    `occurred_at` None means "now" (and a repeat of the ref is then not compared on time,
    so re-running the same command without --at stays a no-op).

    Raises Refused for a ref already used for different data, or an inactive member;
    InvalidInput for a non-positive amount or an empty ref.
    """
    from loyaltyctl.services.members import ensure_active

    ref = (ref or "").strip()
    if not ref:
        raise InvalidInput("--ref: a purchase needs a reference (the transaction id)")
    if len(ref) > 100:
        raise InvalidInput(f"--ref: {ref[:20]!r}... is longer than 100 characters")
    if amount <= 0:
        raise InvalidInput(f"amount: {amount:,} must be greater than zero (refunds have their own command)")

    # The member's row lock serialises this member's writes on PostgreSQL, so a second run
    # with the same ref waits here and then sees the first one's purchase.
    member = ledger.lock_member(session, member.id)
    existing = session.execute(select(Purchase).where(Purchase.ref == ref)).scalar_one_or_none()
    if existing is not None:
        return _repeat(session=session, existing=existing, member=member, amount=amount,
                       occurred_at=occurred_at)
    ensure_active(member)
    if occurred_at is None:
        occurred_at = now
    elif occurred_at > now:
        raise InvalidInput(
            f"--at: {occurred_at:%Y-%m-%d %H:%M} UTC is in the future (now is {now:%Y-%m-%d %H:%M} UTC)",
            hint="give the time the purchase happened, or --as-of to act as of a later time",
        )

    tz = config.program.timezone
    cat, ch = norm_category(category), _norm_channel(channel)
    for option, value in (("--category", cat), ("--channel", ch)):
        # The columns hold 64 characters; the bulk import refuses longer values the same way.
        if value is not None and (len(value) > 64 or any(ord(c) < 32 for c in value)):
            raise InvalidInput(f"{option}: at most 64 characters, no control characters")
    tier = config.tiers.get(member.tier)
    campaigns = matching_campaigns(
        config.campaigns, day=local_date(occurred_at, tz), amount=amount, category=cat,
        channel=ch, tier=member.tier,
    )
    earned = purchase_points(
        earning=config.earning, amount=amount, category=cat,
        tier_multiplier=tier.multiplier if tier else Decimal(1), campaigns=campaigns,
    )
    purchase = Purchase(
        member_id=member.id, ref=ref, amount=amount, currency=config.program.currency,
        occurred_at=occurred_at, category=cat, channel=ch, points=earned.points,
        campaign=earned.campaign, created_at=now,
    )
    session.add(purchase)
    try:
        session.flush()
    except IntegrityError:
        # Another run recorded the same ref for another member at the same moment.
        raise Refused(
            f"purchase ref {ref!r} was just recorded by another run; nothing was changed",
            hint="run the command again to see whether it matches",
        ) from None

    pending_until = expires_on = None
    if earned.points > 0:
        pending_until, expires_on = earn_lot_terms(config=config, occurred_at=occurred_at, now=now)
        ledger.credit(
            session=session, member_id=member.id, kind="earn", points=earned.points,
            effective_at=occurred_at, expires_on=expires_on, actor=actor,
            idem_key=f"purchase:{ref}", ref=ref, purchase_id=purchase.id,
            campaign=earned.campaign, pending_until=pending_until, today=local_date(now, tz),
        )
    hooks.after_purchases(session=session, config=config, purchase_ids=[purchase.id],
                          now=now, actor=actor)
    session.refresh(member)
    return PurchaseResult(
        purchase_id=purchase.id, ref=ref, member_code=member.code, amount=amount,
        currency=purchase.currency, occurred_at=occurred_at, points=earned.points,
        campaign=earned.campaign, pending_until=pending_until, expires_on=expires_on,
        balance=member.balance, pending=member.pending, already_recorded=False,
    )


def _repeat(*, session: Session, existing: Purchase, member: Member, amount: int,
            occurred_at: datetime | None) -> PurchaseResult:
    """The same ref again: a no-op if it is the same purchase, else refused."""
    diffs = []
    if existing.member_id != member.id:
        other = session.get(Member, existing.member_id)
        diffs.append(f"member {other.code if other else existing.member_id}")
    if existing.amount != amount:
        diffs.append(f"amount {existing.amount:,}")
    if occurred_at is not None and (
        existing.occurred_at.replace(microsecond=0) != occurred_at.replace(microsecond=0)
    ):
        diffs.append(f"time {existing.occurred_at:%Y-%m-%d %H:%M:%S} UTC")
    if diffs:
        raise Refused(
            f"purchase ref {existing.ref!r} is already recorded with different data "
            f"({', '.join(diffs)}); nothing was changed",
            hint="use a new --ref for a new purchase, or `purchases refund` to correct one",
        )
    return PurchaseResult(
        purchase_id=existing.id, ref=existing.ref, member_code=member.code,
        amount=existing.amount, currency=existing.currency, occurred_at=existing.occurred_at,
        points=0, campaign=existing.campaign, pending_until=None, expires_on=None,
        balance=member.balance, pending=member.pending, already_recorded=True,
    )


def list_purchases(
    *,
    session: Session,
    member_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    category: str | None = None,
    channel: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Purchases, newest first, with the member's code."""
    q = select(
        Purchase.id, Member.code, Purchase.ref, Purchase.occurred_at, Purchase.amount,
        Purchase.refunded_amount, Purchase.currency, Purchase.category, Purchase.channel,
        Purchase.points, Purchase.campaign,
    ).join(Member, Member.id == Purchase.member_id)
    if member_id is not None:
        q = q.where(Purchase.member_id == member_id)
    if since is not None:
        q = q.where(Purchase.occurred_at >= since)
    if until is not None:
        q = q.where(Purchase.occurred_at <= until)
    if category:
        q = q.where(Purchase.category == norm_category(category))
    if channel:
        q = q.where(Purchase.channel == _norm_channel(channel))
    q = q.order_by(Purchase.occurred_at.desc(), Purchase.id.desc()).offset(offset).limit(limit)
    keys = ("id", "member", "ref", "occurred_at", "amount", "refunded", "currency", "category",
            "channel", "points", "campaign")
    return [dict(zip(keys, row, strict=True)) for row in session.execute(q)]

