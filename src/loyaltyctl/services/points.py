"""Points: balances, history, manual adjustments, cash-value redemptions, expiry.

Every balance change goes through `services.ledger` (lots, allocations, cached balances);
this module adds the business rules around it: references for idempotency, reasons,
who may redeem, and read models for support staff and cron jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from loyaltyctl.config import Config
from loyaltyctl.db.models import LedgerEntry, Member
from loyaltyctl.errors import InvalidInput, Refused
from loyaltyctl.services import ledger

EXPIRING_SOON_DAYS = 30


def clean_ref(ref: str | None, *, option: str = "--ref") -> str | None:
    if ref is None:
        return None
    ref = ref.strip()
    if not ref:
        raise InvalidInput(f"{option}: must not be empty")
    if len(ref) > 100:
        raise InvalidInput(f"{option}: {ref[:20]!r}... is longer than 100 characters")
    return ref


def repeat_of(
    session: Session, *, key: str, member: Member, points: int, item_code: str | None = None,
    what: str,
) -> LedgerEntry | None:
    """The entry already written under idempotency `key`, if it is the same request.

    Returns None when the key is unused; raises Refused when it was used for another member,
    amount or reward (a reference is never reused for a different operation).
    """
    entry = ledger.entry_by_key(session, key)
    if entry is None:
        return None
    ref = key.split(":", 1)[1]
    if entry.member_id != member.id or entry.points != points or entry.item_code != item_code:
        other = session.get(Member, entry.member_id)
        used = f"{entry.kind} of {entry.points:+,} points for member {other.code if other else '?'}"
        if entry.item_code:
            used += f" ({entry.item_code})"
        raise Refused(
            f"ref {ref!r} is already used by another {what} ({used}); nothing was changed",
            hint="use a new --ref for a new operation",
        )
    return entry


# -- adjustments ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """The outcome of one balance-changing command."""

    member_code: str
    points: int
    entry_id: int
    balance: int
    already: bool
    expires_on: date | None = None
    item_code: str | None = None


def adjust(
    *,
    session: Session,
    config: Config,
    member: Member,
    points: int,
    reason: str,
    ref: str | None,
    expires_on: date | None,
    now: datetime,
    today: date,
    actor: str,
) -> Change:
    """A manual correction: +N writes an `adjust` lot, -N debits (never below zero).

    With `ref` the adjustment is idempotent (`adjust:<ref>`).
    """
    from loyaltyctl.normalize import clean_text
    from loyaltyctl.rules.expiry import expiry_date

    try:
        reason_text = clean_text(reason, max_len=500, field="--reason")
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if not reason_text:
        raise InvalidInput("--reason: say why the points are adjusted (it is kept in the ledger)")
    if points == 0:
        raise InvalidInput("points: an adjustment of 0 points changes nothing; give +N or -N")
    ref = clean_ref(ref)
    key = f"adjust:{ref}" if ref else None
    member = ledger.lock_member(session, member.id)
    if key:
        entry = repeat_of(session, key=key, member=member, points=points, what="adjustment")
        if entry is not None:
            return Change(member.code, points, entry.id, member.balance, True, entry.expires_on)
    if points > 0:
        if member.status == "closed":
            raise Refused(f"member {member.code} is closed; points cannot be added")
        if expires_on is None:
            expires_on = expiry_date(today, config.expiry)
        elif expires_on <= today:
            raise InvalidInput(
                f"--expires: {expires_on} is not after today ({today}); the points would be "
                "expired at once"
            )
        entry = ledger.credit(
            session=session, member_id=member.id, kind="adjust", points=points,
            effective_at=now, expires_on=expires_on, actor=actor, idem_key=key, ref=ref,
            note=reason_text, today=today,
        )
    else:
        if expires_on is not None:
            raise InvalidInput("--expires: only a positive adjustment creates points that expire")
        entry = ledger.debit(
            session=session, member=member, kind="adjust", points=-points, effective_at=now,
            today=today, actor=actor, idem_key=key, ref=ref, note=reason_text,
        )
    session.refresh(member)
    return Change(member.code, points, entry.id, member.balance, False, expires_on)


# -- redemption for a cash discount --------------------------------------------------------


def redeem_points(
    *,
    session: Session,
    config: Config,
    member: Member,
    points: int,
    ref: str,
    now: datetime,
    today: date,
    actor: str,
) -> Change:
    """Spend `points` as a discount worth points x point_value; idempotent by `redeem:<ref>`."""
    from loyaltyctl.services.members import ensure_active

    ref = clean_ref(ref)
    if not ref:
        raise InvalidInput("--ref: a redemption needs a reference (the order or receipt id)")
    if points <= 0:
        raise InvalidInput(f"points: {points:,} must be greater than zero")
    if config.program.point_value <= 0:
        raise Refused(
            "points have no cash value in this program (program.point_value is 0); "
            "redeem a reward with `rewards redeem` instead"
        )
    member = ledger.lock_member(session, member.id)
    entry = repeat_of(session, key=f"redeem:{ref}", member=member, points=-points,
                      what="redemption")
    if entry is not None:
        return Change(member.code, points, entry.id, member.balance, True)
    ensure_active(member)
    entry = ledger.debit(
        session=session, member=member, kind="redeem", points=points, effective_at=now,
        today=today, actor=actor, idem_key=f"redeem:{ref}", ref=ref,
        note=f"discount of {points * config.program.point_value} minor units",
    )
    session.refresh(member)
    return Change(member.code, points, entry.id, member.balance, False)


# -- read models ---------------------------------------------------------------------------


def balance_summary(
    *, session: Session, member: Member, today: date, within_days: int = EXPIRING_SOON_DAYS
) -> dict[str, Any]:
    """Available, pending and soon-expiring points of one member, from one query.

    `available` leaves out lots already past their date that the nightly expiry has not
    closed yet: they can no longer be spent. (The SQL is `lookup.balance_summary`, shared
    with the read-only path of `points balance`.)
    """
    from loyaltyctl.db.lite import SessionReader
    from loyaltyctl.services import lookup

    return lookup.balance_summary(reader=SessionReader(session), member=member, today=today,
                                  within_days=within_days)


def history(
    *,
    session: Session,
    member: Member,
    kinds: list[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """The member's ledger, newest first, each entry with the available balance after it.

    The running balance is computed over the whole ledger before the filters apply, so it
    stays the true balance whatever is shown. Pending entries do not move it until they
    become available. (The SQL is `lookup.history`, shared with the support screen.)
    """
    from loyaltyctl.db.lite import SessionReader
    from loyaltyctl.services import lookup

    return lookup.history(reader=SessionReader(session), member_id=member.id, kinds=kinds,
                          since=since, until=until, limit=limit, offset=offset)


def expiring(
    *, session: Session, today: date, within_days: int, limit: int = 1000, offset: int = 0
) -> list[dict[str, Any]]:
    """Who loses how many points on which day, within `within_days` after `today`."""
    e = LedgerEntry
    q = (
        select(e.expires_on, Member.code, Member.name, func.sum(e.remaining), func.count())
        .join(Member, Member.id == e.member_id)
        .where(
            e.remaining > 0,
            e.pending_until.is_(None),
            e.expires_on > today,
            e.expires_on <= today + timedelta(days=within_days),
        )
        .group_by(e.expires_on, Member.code, Member.name)
        .order_by(e.expires_on, Member.code)
        .offset(offset)
        .limit(limit)
    )
    return [
        {"expires_on": _as_date(r[0]), "member": r[1], "name": r[2], "points": int(r[3]),
         "lots": int(r[4])}
        for r in session.execute(q)
    ]


def _as_date(v: Any) -> date:
    return date.fromisoformat(v) if isinstance(v, str) else v


def expire(*, session: Session, config: Config, as_of: date, now: datetime,
           actor: str) -> ledger.ExpiryResult:
    """The nightly expiry (idempotent): first make available the pending points whose holding
    period is over at `now` (their expiry clock starts then), then close every lot due on or
    before `as_of`, for all members."""
    ledger.activate_pending(session=session, now=now, config=config)
    return ledger.expire_due(session=session, as_of=as_of, now=now, actor=actor)

