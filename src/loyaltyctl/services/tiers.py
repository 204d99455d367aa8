"""Tiers: the qualifying metric, set-based upgrades and recalculation, progress, history.

The qualifying metric is measured over a rolling window of `tiers.window_days` ending at the
as-of instant, apart from the spendable balance:
- spend: purchase amount minus refunded amount;
- points: points earned by purchases (earn lots, net of their clawbacks and cancellations),
  not counting purchases whose points are still pending; bonuses and adjustments never count;
- purchases: the number of purchases not refunded in full.
Redemptions, reversals and expiries never touch it.

Writers take the caller's session and never commit (one transaction per command).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, and_, bindparam, exists, func, insert, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Select
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Session

from loyaltyctl.config import Config
from loyaltyctl.db.models import LedgerEntry, Member, Purchase, TierChange
from loyaltyctl.errors import InvalidInput
from loyaltyctl.rules import tiers as rules
from loyaltyctl.timeutil import local_date

# Ids per statement: well under SQLite's and PostgreSQL's bound-parameter limits.
CHUNK = 5000

_m = Member.__table__
_p = Purchase.__table__
_le = LedgerEntry.__table__
_th = TierChange.__table__

METRIC_UNITS = {"spend": "money", "points": "points", "purchases": "purchases"}


def chunks(ids: Sequence[int], size: int = CHUNK) -> Iterable[list[int]]:
    ids = list(ids)
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def window_start(config: Config, now: datetime) -> datetime:
    """The window is (now - window_days, now]."""
    return now - timedelta(days=config.tiers.window_days)


class unindexed(FunctionElement):  # noqa: N801 - reads like a SQL function
    """A column the SQLite planner must not pick an index for (`+col`); plain elsewhere.

    For all members, SQLite (without ANALYZE statistics) would range-scan the occurred_at
    index and look up every purchase row, then sort for GROUP BY; scanning the covering
    (member_id, occurred_at, amount, refunded_amount) index in order is ten times faster.
    """

    type = DateTime()
    inherit_cache = True
    name = "unindexed"


@compiles(unindexed)
def _unindexed(element: unindexed, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + compiler.process(element.clauses, **kw)


def metric_select(config: Config, *, now: datetime, member_ids: Sequence[int] | None = None) -> Select:
    """One aggregate over purchases: (member_id, value) for members with any activity."""
    start = window_start(config, now)
    at = _p.c.occurred_at if member_ids is not None else unindexed(_p.c.occurred_at)
    in_window = and_(at > start, at <= now)
    metric = config.tiers.metric
    if metric == "spend":
        q = select(_p.c.member_id, func.sum(_p.c.amount - _p.c.refunded_amount).label("value"))
        q = q.where(in_window)
    elif metric == "purchases":
        q = select(_p.c.member_id, func.count().label("value"))
        q = q.where(in_window, _p.c.refunded_amount < _p.c.amount)
    else:
        pending = _le.alias("pending_earn")
        still_pending = exists().where(
            pending.c.purchase_id == _p.c.id,
            pending.c.kind == "earn",
            pending.c.pending_until.is_not(None),
            pending.c.pending_until > now,
        )
        # The purchase's own earn lot and what refunds took back from that lot; not the
        # referral bonuses it triggered (nor their clawbacks), which carry its id too.
        source = _le.alias("source_lot")
        q = (
            select(_p.c.member_id, func.sum(_le.c.points).label("value"))
            .select_from(
                _p.join(_le, and_(_le.c.purchase_id == _p.c.id, _le.c.member_id == _p.c.member_id))
                .outerjoin(source, source.c.id == _le.c.source_id))
            .where(in_window, ~still_pending,
                   (_le.c.kind == "earn")
                   | (_le.c.kind.in_(("clawback", "cancel")) & (source.c.kind == "earn")))
        )
    if member_ids is not None:
        q = q.where(_p.c.member_id.in_(bindparam("mids", expanding=True)))
    return q.group_by(_p.c.member_id)


@dataclass(frozen=True)
class MemberTierFacts:
    id: int
    code: str
    tier: str | None
    tier_since: datetime | None
    tier_floor: str | None
    tier_floor_until: date | None
    metric: int


def _facts(session: Session, config: Config, *, now: datetime,
           member_ids: Sequence[int] | None) -> list[MemberTierFacts]:
    """Members (not closed) with their metric: one query per chunk of ids, or one in all."""
    sub = metric_select(config, now=now, member_ids=member_ids).subquery()
    q = (
        select(_m.c.id, _m.c.code, _m.c.tier, _m.c.tier_since, _m.c.tier_floor,
               _m.c.tier_floor_until, func.coalesce(sub.c.value, 0))
        .select_from(_m.outerjoin(sub, sub.c.member_id == _m.c.id))
        .where(_m.c.status != "closed", _m.c.merged_into_id.is_(None))
        .order_by(_m.c.id)
    )
    if member_ids is None:
        return [MemberTierFacts(*r[:6], int(r[6])) for r in session.execute(q)]
    out: list[MemberTierFacts] = []
    q = q.where(_m.c.id.in_(bindparam("ids", expanding=True)))
    for part in chunks(sorted(set(member_ids))):
        rows = session.execute(q, {"ids": part, "mids": part})
        out.extend(MemberTierFacts(*r[:6], int(r[6])) for r in rows)
    return out


@dataclass(frozen=True)
class TierMove:
    member_id: int
    member: str
    from_tier: str | None
    to_tier: str | None
    direction: str
    metric: int

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("member_id")
        return d


def _decide_all(config: Config, facts: list[MemberTierFacts], *, now: datetime,
                allow_downgrade: bool) -> list[TierMove]:
    tz = config.program.timezone
    today = local_date(now, tz)
    levels = config.tiers.levels
    moves = []
    for f in facts:
        if not f.tier_floor and f.tier is not None:
            # The common case, cheaply: already at the tier the metric qualifies for.
            q = rules.qualifying_tier(levels, f.metric)
            if q is not None and q.code == f.tier:
                continue
        move = rules.decide(
            levels=levels, current=f.tier,
            since_day=local_date(f.tier_since, tz) if f.tier_since else None,
            floor=f.tier_floor, floor_until=f.tier_floor_until, metric_value=f.metric,
            today=today, allow_downgrade=allow_downgrade,
        )
        if move is not None:
            moves.append(TierMove(f.id, f.code, move.from_tier, move.to_tier, move.direction, f.metric))
    return moves


def apply_moves(*, session: Session, moves: Sequence[TierMove], now: datetime, actor: str,
                reason: str | None = None, only_if_unchanged: bool = False) -> list[TierMove]:
    """Write the moves: one UPDATE per target tier (and 5,000 members), one executemany of
    tier history rows. Returns the moves written.

    only_if_unchanged: for callers that read tiers without locking the members (`recalc`):
    a member whose tier is no longer the move's from_tier (a purchase upgraded it after the
    read, on PostgreSQL) is left as it is, and its move is dropped.
    """
    if not moves:
        return []
    if only_if_unchanged:
        by_change: dict[tuple[str | None, str | None], list[int]] = {}
        for mv in moves:
            by_change.setdefault((mv.from_tier, mv.to_tier), []).append(mv.member_id)
        guarded = (update(_m).where(_m.c.id.in_(bindparam("ids", expanding=True)),
                                    _m.c.tier.is_not_distinct_from(bindparam("b_from")))
                   .values(tier=bindparam("b_tier"), tier_since=now, updated_at=now)
                   .returning(_m.c.id))
        done: set[int] = set()
        for (from_tier, to_tier), ids in by_change.items():
            for part in chunks(ids):
                done.update(session.execute(
                    guarded, {"ids": part, "b_from": from_tier, "b_tier": to_tier}).scalars())
        moves = [mv for mv in moves if mv.member_id in done]
        if not moves:
            return []
    else:
        by_tier: dict[str | None, list[int]] = {}
        for mv in moves:
            by_tier.setdefault(mv.to_tier, []).append(mv.member_id)
        stmt = (update(_m).where(_m.c.id.in_(bindparam("ids", expanding=True)))
                .values(tier=bindparam("b_tier"), tier_since=now, updated_at=now))
        for to_tier, ids in by_tier.items():
            for part in chunks(ids):
                session.execute(stmt, {"ids": part, "b_tier": to_tier})
    session.execute(insert(_th), [
        {"member_id": mv.member_id, "from_tier": mv.from_tier, "to_tier": mv.to_tier,
         "changed_at": now, "reason": reason or mv.direction, "metric_value": mv.metric,
         "actor": actor[:64]}
        for mv in moves
    ])
    return list(moves)


def upgrade_members(*, session: Session, config: Config, member_ids: Sequence[int],
                    now: datetime, actor: str) -> list[TierMove]:
    """Lift the given members to the tier their metric (or floor) reaches; never lowers one.

    Called after purchases are recorded; members without a tier get the one they qualify for.
    """
    if not member_ids or not config.tiers.levels:
        return []
    facts = _facts(session, config, now=now, member_ids=member_ids)
    moves = _decide_all(config, facts, now=now, allow_downgrade=False)
    apply_moves(session=session, moves=moves, now=now, actor=actor)
    return moves


def upgrade_members_of_purchases(*, session: Session, config: Config, purchase_ids: Sequence[int],
                                 now: datetime, actor: str) -> list[TierMove]:
    if not purchase_ids or not config.tiers.levels:
        return []
    member_ids: set[int] = set()
    q = select(_p.c.member_id).where(_p.c.id.in_(bindparam("pids", expanding=True))).distinct()
    for part in chunks(purchase_ids):
        member_ids.update(r[0] for r in session.execute(q, {"pids": part}))
    return upgrade_members(session=session, config=config, member_ids=sorted(member_ids),
                           now=now, actor=actor)


def assign_initial(*, session: Session, config: Config, member_ids: Sequence[int],
                   now: datetime, actor: str) -> int:
    """New members get the tier a metric of zero qualifies for (a threshold-0 tier), if any."""
    base = rules.qualifying_tier(config.tiers.levels, 0)
    if base is None or not member_ids:
        return 0
    n = 0
    pick = select(_m.c.id).where(_m.c.id.in_(bindparam("ids", expanding=True)),
                                 _m.c.tier.is_(None), _m.c.status != "closed")
    for part in chunks(member_ids):
        ids = [r[0] for r in session.execute(pick, {"ids": part})]
        if not ids:
            continue
        apply_moves(session=session, now=now, actor=actor, reason="enrolment",
                    moves=[TierMove(i, "", None, base.code, "upgrade", 0) for i in ids])
        n += len(ids)
    return n


@dataclass(frozen=True)
class RecalcResult:
    moves: list[TierMove]
    members: int

    @property
    def upgrades(self) -> int:
        return sum(1 for m in self.moves if m.direction == "upgrade")

    @property
    def downgrades(self) -> int:
        return sum(1 for m in self.moves if m.direction == "downgrade")

    @property
    def unchanged(self) -> int:
        return self.members - len(self.moves)


def recalc(*, session: Session, config: Config, now: datetime, actor: str) -> RecalcResult:
    """Every member's tier as of `now`: upgrades, and downgrades once retention is over.

    One aggregate query for all members, then one executemany per table. Idempotent: a
    second run for the same instant finds nothing to move.
    """
    if not config.tiers.levels:
        return RecalcResult([], 0)
    facts = _facts(session, config, now=now, member_ids=None)
    moves = _decide_all(config, facts, now=now, allow_downgrade=True)
    moves = apply_moves(session=session, moves=moves, now=now, actor=actor, only_if_unchanged=True)
    return RecalcResult(moves, len(facts))


def metric_of(*, session: Session, config: Config, member_id: int, now: datetime) -> int:
    value = session.execute(
        metric_select(config, now=now, member_ids=[member_id]), {"mids": [member_id]}
    ).first()
    return int(value[1]) if value else 0


def progress(*, session: Session, config: Config, member: Member, now: datetime) -> dict[str, Any]:
    """Where a member stands: metric now, the next tier and what is missing, and how long
    the current tier is kept."""
    tz = config.program.timezone
    levels = config.tiers.levels
    today = local_date(now, tz)
    value = metric_of(session=session, config=config, member_id=member.id, now=now)
    current = config.tiers.get(member.tier)
    nxt = rules.next_tier(levels, member.tier if current else None)
    since_day = local_date(member.tier_since, tz) if member.tier_since else None
    kept = rules.retained_through(since_day, current.retention_days) if current else None
    floor = member.tier_floor if rules.floor_active(
        member.tier_floor, member.tier_floor_until, today) else None
    floor_until = member.tier_floor_until if floor else None
    kept_through = kept
    if floor and current and rules.rank(levels, floor) >= rules.rank(levels, current.code):
        kept_through = max(kept or floor_until, floor_until)
    return {
        "member": member.code,
        "tier": member.tier,
        "tier_name": current.name if current else None,
        "tier_since": member.tier_since,
        "metric": config.tiers.metric,
        "window_days": config.tiers.window_days,
        "window_start": window_start(config, now),
        "metric_value": value,
        "next_tier": nxt.code if nxt else None,
        "next_threshold": nxt.threshold if nxt else None,
        "needed_for_next": max(0, nxt.threshold - value) if nxt else None,
        "kept_through": kept_through,
        "keep_threshold": current.threshold if current else None,
        "needed_to_keep": max(0, current.threshold - value) if current else None,
        "floor": floor,
        "floor_until": floor_until,
    }


def history(*, session: Session, member_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(_th.c.changed_at, _th.c.from_tier, _th.c.to_tier, _th.c.reason,
               _th.c.metric_value, _th.c.actor)
        .where(_th.c.member_id == member_id).order_by(_th.c.changed_at, _th.c.id)
    )
    return [
        {"changed_at": r[0], "from_tier": r[1], "to_tier": r[2], "reason": r[3],
         "metric": r[4], "actor": r[5]}
        for r in rows
    ]


def level_counts(*, session: Session, config: Config) -> list[dict[str, Any]]:
    """The configured levels with how many (not closed) members hold each."""
    counts = dict(session.execute(
        select(_m.c.tier, func.count()).where(_m.c.status != "closed").group_by(_m.c.tier)
    ).all())
    rows = [
        {"code": t.code, "name": t.name, "threshold": t.threshold, "multiplier": t.multiplier,
         "retention_days": t.retention_days, "members": int(counts.pop(t.code, 0)),
         "benefits": t.benefits}
        for t in config.tiers.levels
    ]
    none = int(counts.pop(None, 0))
    if none:
        rows.append({"code": None, "name": "(no tier)", "members": none})
    for code, n in sorted(counts.items()):
        rows.append({"code": code, "name": "(not in the program file)", "members": int(n)})
    return rows


def set_manual(*, session: Session, config: Config, member: Member, tier: str, until: date,
               now: datetime, actor: str) -> TierMove | None:
    """Give a member `tier` as a floor through `until` (inclusive).

    A member below it is lifted to it now; a member at or above it stays (a floor, not a
    freeze). Returns the move, if any.
    """
    level = config.tiers.get(tier)
    if level is None:
        known = ", ".join(t.code for t in config.tiers.levels) or "none configured"
        raise InvalidInput(f"TIER: unknown tier {tier!r} (tiers: {known})")
    today = local_date(now, config.program.timezone)
    if until < today:
        raise InvalidInput(f"--until: {until.isoformat()} is before today ({today.isoformat()})")
    session.execute(
        update(_m).where(_m.c.id == member.id)
        .values(tier_floor=tier, tier_floor_until=until, updated_at=now)
    )
    levels = config.tiers.levels
    if rules.rank(levels, member.tier) >= rules.rank(levels, tier):
        return None
    metric = metric_of(session=session, config=config, member_id=member.id, now=now)
    move = TierMove(member.id, member.code, member.tier, tier, "upgrade", metric)
    apply_moves(session=session, moves=[move], now=now, actor=actor, reason="manual")
    return move
