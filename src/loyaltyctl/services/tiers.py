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

from sqlalchemy import DateTime, Text, and_, bindparam, exists, func, insert, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Select
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import NullType, TypeDecorator
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

    def __init__(self, column: Any) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(unindexed)
def _unindexed(element: unindexed, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + compiler.process(element.clauses, **kw)


class IdList(TypeDecorator):
    """A list of integer ids bound as ONE parameter (see `in_ids`): "1,2,3" on PostgreSQL,
    a JSON array "[1,2,3]" on SQLite."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        text = ",".join([str(int(v)) for v in value])
        return text if dialect.name == "postgresql" else "[" + text + "]"


def ids_param(name: str) -> Any:
    """A bound parameter taking a list of ids, for `in_ids`."""
    return bindparam(name, type_=IdList())


class in_ids(FunctionElement):  # noqa: N801 - reads like a SQL operator
    """`column IN (the ids bound as one parameter)`.

    The statement text is the same for 1 id or 50,000: PostgreSQL plans it like any other
    statement, and nobody builds and parses thousands of placeholders (an expanding IN
    list in the per-batch hooks cost the purchase import more than its COPY did).

    PostgreSQL: `= ANY(CAST(string_to_array(:ids, ',') AS INTEGER[]))`. Both functions are
    immutable, so the planner folds the array into a constant and knows its length: index
    probes, or one pass with a hash of the ids. (A text parameter cast straight to
    INTEGER[] stays an opaque expression, and such a pass compares every row with every
    id: minutes. A generic plan, made without the parameter's value, may do the same, so
    bulk writers plan every statement for its values: see purchase_import.unprepared. A
    semi-join with `unnest` never compares that way, but with the statistics of a table
    that was nearly empty it made members the outer side of a nested loop over the ids:
    30 s per batch.)
    SQLite: `IN (SELECT value FROM json_each(:ids))`, index probes for each id.
    """

    # No Boolean type: SQLite (no native booleans) would get `WHERE (... IN ...) = 1`,
    # which no index serves.
    type = NullType()
    inherit_cache = True
    name = "in_ids"


@compiles(in_ids)
def _in_ids(element: in_ids, compiler: Any, **kw: Any) -> str:
    column, ids = list(element.clauses)
    return (f"{compiler.process(column, **kw)} = ANY(CAST(string_to_array("
            f"{compiler.process(ids, **kw)}, ',') AS INTEGER[]))")


@compiles(in_ids, "sqlite")
def _in_ids_sqlite(element: in_ids, compiler: Any, **kw: Any) -> str:
    column, ids = list(element.clauses)
    col, param = compiler.process(column, **kw), compiler.process(ids, **kw)
    return f"{col} IN (SELECT value FROM json_each({param}))"  # noqa: S608 - compiled; ids are bound


def metric_select(config: Config, *, now: datetime, member_ids: Sequence[int] | None = None,
                  only_purchases: str | None = None) -> Select:
    """One aggregate over purchases: (member_id, value) for members with any activity.

    member_ids: only these members (bound as "mids"). only_purchases: only some purchases
    (what they add to their members' metrics): "ids", those whose ids are bound as "pids";
    "range", those from id "p_lo" to id "p_hi".
    """
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
        # For some members or purchases, SQLite must start from their ids (below), not from
        # every lot of these kinds.
        kind = unindexed(_le.c.kind) if member_ids is not None or only_purchases else _le.c.kind
        q = (
            select(_p.c.member_id, func.sum(_le.c.points).label("value"))
            .select_from(
                _p.join(_le, and_(_le.c.purchase_id == _p.c.id, _le.c.member_id == _p.c.member_id))
                .outerjoin(source, source.c.id == _le.c.source_id))
            .where(in_window, ~still_pending,
                   (kind == "earn")
                   | (kind.in_(("clawback", "cancel")) & (source.c.kind == "earn")))
        )
    if member_ids is not None:
        q = q.where(in_ids(_p.c.member_id, ids_param("mids")))
    if only_purchases == "ids":
        q = q.where(in_ids(_p.c.id, ids_param("pids")))
    elif only_purchases == "range":
        q = q.where(_p.c.id.between(bindparam("p_lo"), bindparam("p_hi")))
    elif only_purchases is not None:
        raise ValueError(f"only_purchases={only_purchases!r}")
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


class TierMetrics:
    """Members' tier metrics as of one instant, kept from batch to batch by a bulk writer
    (`purchases import`), so that each batch of upgrades costs what the batch holds.

    Measured afresh for every batch, a member's metric sums all of its purchases in the
    window again, the ones the import wrote in earlier batches included: the work grows
    with the square of the file. Here a member is measured once, in the first batch that
    needs it; each later batch adds what that batch's purchases contribute, measured by the
    same aggregate (`metric_select`) restricted to them. That equals measuring afresh
    because, meanwhile, nothing but the import changes these members' purchases: it holds
    their rows locked (PostgreSQL) or the database's write lock (SQLite), and its hooks
    write no purchases (bonuses count for no metric).
    """

    LIMIT = 100_000
    """Members remembered at most (memory stays flat); past it, they are measured again."""

    def __init__(self, config: Config, now: datetime) -> None:
        self.config = config
        self.now = now
        self.values: dict[int, int] = {}

    def add_purchases(self, session: Session, purchase_ids: Sequence[int]) -> None:
        """Count new purchases (just written) for the members already measured."""
        values = self.values
        if not values or not purchase_ids:
            return
        lo, hi = min(purchase_ids), max(purchase_ids)
        if hi - lo + 1 == len(purchase_ids) == len(set(purchase_ids)):
            # The usual batch, a block of new ids: one range of the primary key, where
            # PostgreSQL would rather scan the table than probe it 50,000 times.
            q = metric_select(self.config, now=self.now, only_purchases="range")
            rows = session.execute(q, {"p_lo": lo, "p_hi": hi})
        else:
            q = metric_select(self.config, now=self.now, only_purchases="ids")
            rows = session.execute(q, {"pids": purchase_ids})
        for mid, value in rows:
            if mid in values:
                values[mid] += int(value or 0)

    def of(self, session: Session, member_ids: Sequence[int]) -> dict[int, int]:
        """{member id: metric} for `member_ids`, measuring those not measured yet."""
        values = self.values
        new = [m for m in member_ids if m not in values]
        if new:
            if len(values) + len(new) > self.LIMIT:
                values.clear()
                new = list(member_ids)
            q = metric_select(self.config, now=self.now, member_ids=new)
            measured = dict(session.execute(q, {"mids": new}).all())
            for m in new:
                values[m] = int(measured.get(m) or 0)
        return {m: values[m] for m in member_ids}


def _facts(session: Session, config: Config, *, now: datetime,
           member_ids: Sequence[int] | None, below: str | None = None,
           metrics: TierMetrics | None = None,
           purchase_ids: Sequence[int] = ()) -> list[MemberTierFacts]:
    """Members (not closed) with their metric, in id order: all of them, or `member_ids`.

    below: leave out members already at this tier (the top one, for upgrades: nothing can
    lift them), so their purchases are not even summed.
    metrics: measure through it (see TierMetrics), after telling it of `purchase_ids`.
    """
    cols = (_m.c.id, _m.c.code, _m.c.tier, _m.c.tier_since, _m.c.tier_floor,
            _m.c.tier_floor_until)
    live = (_m.c.status != "closed", _m.c.merged_into_id.is_(None))
    if member_ids is None:
        sub = metric_select(config, now=now).subquery()
        q = (select(*cols, func.coalesce(sub.c.value, 0))
             .select_from(_m.outerjoin(sub, sub.c.member_id == _m.c.id))
             .where(*live).order_by(_m.c.id))
        return [MemberTierFacts(*r[:6], int(r[6])) for r in session.execute(q)]
    if metrics is not None:
        if metrics.now != now or metrics.config is not config:
            raise ValueError("TierMetrics kept for another instant or program")
        metrics.add_purchases(session, purchase_ids)
    # Two simple statements, each with one array parameter: the members first, then the
    # metric of those that can still move (the aggregate is the costly part).
    q = select(*cols).where(in_ids(_m.c.id, ids_param("ids")), *live).order_by(_m.c.id)
    if below is not None:
        q = q.where(_m.c.tier.is_distinct_from(below))
    members = session.execute(q, {"ids": member_ids}).all()
    if not members:
        return []
    ids = [r[0] for r in members]
    if metrics is not None:
        metric = metrics.of(session, ids)
    else:
        metric = dict(session.execute(metric_select(config, now=now, member_ids=ids),
                                      {"mids": ids}).all())
    return [MemberTierFacts(*r, int(metric.get(r[0]) or 0)) for r in members]


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
        guarded = (update(_m).where(in_ids(_m.c.id, ids_param("ids")),
                                    _m.c.tier.is_not_distinct_from(bindparam("b_from")))
                   .values(tier=bindparam("b_tier"), tier_since=now, updated_at=now)
                   .returning(_m.c.id))
        done: set[int] = set()
        for (from_tier, to_tier), ids in by_change.items():
            done.update(session.execute(
                guarded, {"ids": ids, "b_from": from_tier, "b_tier": to_tier}).scalars())
        moves = [mv for mv in moves if mv.member_id in done]
        if not moves:
            return []
    else:
        by_tier: dict[str | None, list[int]] = {}
        for mv in moves:
            by_tier.setdefault(mv.to_tier, []).append(mv.member_id)
        stmt = (update(_m).where(in_ids(_m.c.id, ids_param("ids")))
                .values(tier=bindparam("b_tier"), tier_since=now, updated_at=now))
        for to_tier, ids in by_tier.items():
            session.execute(stmt, {"ids": ids, "b_tier": to_tier})
    session.execute(insert(_th), [
        {"member_id": mv.member_id, "from_tier": mv.from_tier, "to_tier": mv.to_tier,
         "changed_at": now, "reason": reason or mv.direction, "metric_value": mv.metric,
         "actor": actor[:64]}
        for mv in moves
    ])
    return list(moves)


def upgrade_members(*, session: Session, config: Config, member_ids: Sequence[int],
                    now: datetime, actor: str, metrics: TierMetrics | None = None,
                    purchase_ids: Sequence[int] = ()) -> list[TierMove]:
    """Lift the given members to the tier their metric (or floor) reaches; never lowers one.

    Called after purchases are recorded; members without a tier get the one they qualify for.
    metrics, purchase_ids: see TierMetrics (the purchases just recorded, which it counts).
    """
    levels = config.tiers.levels
    if not member_ids or not levels:
        return []
    # Nothing lifts a member above the top tier: those are not even measured.
    facts = _facts(session, config, now=now, member_ids=member_ids, below=levels[-1].code,
                   metrics=metrics, purchase_ids=purchase_ids)
    moves = _decide_all(config, facts, now=now, allow_downgrade=False)
    apply_moves(session=session, moves=moves, now=now, actor=actor)
    return moves


def upgrade_members_of_purchases(*, session: Session, config: Config, purchase_ids: Sequence[int],
                                 now: datetime, actor: str, member_ids: Sequence[int] | None = None,
                                 metrics: TierMetrics | None = None) -> list[TierMove]:
    """upgrade_members for the members of `purchase_ids` (member_ids: them, if known)."""
    if not purchase_ids or not config.tiers.levels:
        return []
    if member_ids is None:
        q = select(_p.c.member_id).where(in_ids(_p.c.id, ids_param("pids"))).distinct()
        member_ids = session.execute(q, {"pids": purchase_ids}).scalars().all()
    return upgrade_members(session=session, config=config, member_ids=sorted(set(member_ids)),
                           now=now, actor=actor, metrics=metrics, purchase_ids=purchase_ids)


def assign_initial(*, session: Session, config: Config, member_ids: Sequence[int],
                   now: datetime, actor: str) -> int:
    """New members get the tier a metric of zero qualifies for (a threshold-0 tier), if any."""
    base = rules.qualifying_tier(config.tiers.levels, 0)
    if base is None or not member_ids:
        return 0
    pick = select(_m.c.id).where(in_ids(_m.c.id, ids_param("ids")),
                                 _m.c.tier.is_(None), _m.c.status != "closed").order_by(_m.c.id)
    ids = session.execute(pick, {"ids": member_ids}).scalars().all()
    if not ids:
        return 0
    apply_moves(session=session, now=now, actor=actor, reason="enrolment",
                moves=[TierMove(i, "", None, base.code, "upgrade", 0) for i in ids])
    return len(ids)


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
