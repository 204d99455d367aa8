"""The rewards catalogue (from config) and redeeming a reward for points.

Stock left is counted from the ledger, never stored: a reward's `stock` in config is how
many may ever be redeemed, minus its `redeem` entries that no `reversal` undid (a reversal's
source_id is the redemption it undoes). So the config file never changes after a redemption.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from loyaltyctl.config import Config, Reward
from loyaltyctl.db.models import Member
from loyaltyctl.errors import InvalidInput, NotFound, Refused
from loyaltyctl.services import ledger
from loyaltyctl.services.points import Change, clean_ref, repeat_of

_REDEEMED_SQL = """
SELECT e.item_code, COUNT(*) FROM ledger_entries e
WHERE e.kind = 'redeem' AND e.item_code IS NOT NULL {only}
  AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.kind = 'reversal' AND r.source_id = e.id)
GROUP BY e.item_code
"""


def redeemed_counts(session: Session, code: str | None = None) -> dict[str, int]:
    """Redemptions that stand (not reversed), per reward code."""
    sql = _REDEEMED_SQL.format(only="AND e.item_code = :code" if code else "")
    rows = session.execute(text(sql), {"code": code} if code else {}).all()
    return {r[0]: int(r[1]) for r in rows}


def _window_problem(reward: Reward, today: date) -> str | None:
    if reward.valid_from and today < reward.valid_from:
        return f"reward {reward.code} can be redeemed from {reward.valid_from} on"
    if reward.valid_until and today > reward.valid_until:
        return f"reward {reward.code} could be redeemed until {reward.valid_until}"
    return None


def _tier_problem(reward: Reward, member: Member) -> str | None:
    if reward.tiers and member.tier not in reward.tiers:
        return (f"reward {reward.code} is for tier {', '.join(reward.tiers)} members; "
                f"member {member.code} is {member.tier or 'in no tier'}")
    return None


def _stock_left(reward: Reward, counts: dict[str, int]) -> int | None:
    return None if reward.stock is None else max(0, reward.stock - counts.get(reward.code, 0))


def why_not(reward: Reward, *, member: Member, today: date, left: int | None,
            available: int) -> str | None:
    """The first reason `member` cannot redeem `reward` today, or None if they can."""
    if member.status != "active":
        return f"member {member.code} is {member.status}"
    problem = _window_problem(reward, today) or _tier_problem(reward, member)
    if problem:
        return problem
    if left is not None and left <= 0:
        return f"reward {reward.code} is out of stock (all {reward.stock:,} redeemed)"
    if available < reward.cost:
        return (f"member {member.code} has {available:,} points available, "
                f"reward {reward.code} costs {reward.cost:,}")
    return None


def catalog(
    *, session: Session, config: Config, today: date, member: Member | None = None
) -> list[dict[str, Any]]:
    """Every reward with its stock left; with `member`, only those they can redeem today."""
    counts = redeemed_counts(session)
    available = 0
    if member is not None:
        from loyaltyctl.services.points import balance_summary

        available = balance_summary(session=session, member=member, today=today)["available"]
    rows = []
    for r in config.rewards:
        left = _stock_left(r, counts)
        if member is not None and why_not(r, member=member, today=today, left=left,
                                          available=available):
            continue
        rows.append({
            "code": r.code, "name": r.name, "kind": r.kind, "cost": r.cost, "value": r.value,
            "stock": r.stock, "redeemed": counts.get(r.code, 0), "left": left,
            "valid_from": r.valid_from, "valid_until": r.valid_until, "tiers": list(r.tiers),
            "open": _window_problem(r, today) is None,
        })
    return rows


@dataclass(frozen=True)
class RewardRedemption:
    change: Change
    reward: Reward
    left: int | None


def _lock_reward(session: Session, code: str) -> None:
    """Serialise redemptions of one reward across members (PostgreSQL).

    The member row lock is not enough: two members could both see the last unit in stock.
    A transaction-level advisory lock is released at commit or rollback. SQLite writers
    are already serialised by BEGIN IMMEDIATE.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                        {"k": f"loyaltyctl:reward:{code}"})


def redeem_reward(
    *,
    session: Session,
    config: Config,
    member: Member,
    code: str,
    ref: str,
    now: datetime,
    today: date,
    actor: str,
) -> RewardRedemption:
    """Spend a reward's cost in points; idempotent by `redeem:<ref>`.

    Refused (with the reason) when the member is not active, the reward is outside its
    window, not for the member's tier, out of stock, or the balance is short.
    """
    from loyaltyctl.services.members import ensure_active

    code = code.strip().lower()
    reward = config.reward(code)
    if reward is None:
        known = ", ".join(r.code for r in config.rewards) or "none"
        raise NotFound(f"no reward {code!r} in the catalogue (rewards: {known})",
                       hint="see `loyaltyctl rewards list`")
    ref = clean_ref(ref)
    if not ref:
        raise InvalidInput("--ref: a redemption needs a reference (the order or receipt id)")
    member = ledger.lock_member(session, member.id)
    entry = repeat_of(session, key=f"redeem:{ref}", member=member, points=-reward.cost,
                      item_code=reward.code, what="redemption")
    if entry is not None:
        left = _stock_left(reward, redeemed_counts(session, reward.code))
        return RewardRedemption(
            Change(member.code, reward.cost, entry.id, member.balance, True, item_code=code),
            reward, left)
    ensure_active(member)
    problem = _window_problem(reward, today) or _tier_problem(reward, member)
    if problem:
        raise Refused(problem)
    left = None
    if reward.stock is not None:
        _lock_reward(session, reward.code)
        left = _stock_left(reward, redeemed_counts(session, reward.code))
        if left <= 0:
            raise Refused(f"reward {reward.code} is out of stock (all {reward.stock:,} redeemed)")
    entry = ledger.debit(
        session=session, member=member, kind="redeem", points=reward.cost, effective_at=now,
        today=today, actor=actor, idem_key=f"redeem:{ref}", ref=ref, item_code=reward.code,
        note=reward.name,
    )
    session.refresh(member)
    return RewardRedemption(
        Change(member.code, reward.cost, entry.id, member.balance, False, item_code=code),
        reward, None if left is None else left - 1)
