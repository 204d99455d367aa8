"""The ledger's return paths: refunds (clawbacks and pending cancellations) and reversals.

Refund clawback
---------------
A purchase of amount A earned P points (purchases.points: base and campaign flat bonuses,
all in its own `earn` lot). After refunds totalling R (cumulative, this one included), the
purchase's share of the points that must leave the member is

    target(R) = max(0, floor(P x R / A) - E)
    clawback  = max(0, target(R) - already clawed back for this purchase)

where E is the part of the purchase's own lot that already EXPIRED (the sum of the lot's
allocations to `expire` entries). Why subtract E: the points a purchase gave that expired
unused never benefited the member; the member kept (spent or still holds) P - E of them and
is entitled to floor(P x (A - R) / A) for what was not returned, so the excess is
(P - E) - P x (A - R) / A = P x R / A - E. Expired points therefore count as already given
back, first, and are never taken a second time from the member's other lots. Because the
target is cumulative, partial refunds add up exactly to the full clawback P - E (with E as
it stands at the last refund), whatever the rounding of each step; the max(0, .) keeps a
clawback from turning into a credit when more of the lot expired between two refunds.

The clawback is taken first from what is left of the purchase's own lot, then from the
member's other open lots earliest-expiring first; whatever the member no longer has is
debt: the balance goes below zero (only a clawback can do that), the member cannot redeem
until it is positive again, and the next credits pay the debt first (ledger.settle_debt).

While the purchase's lot is still pending (inside the returns window), the refund cancels
pending points instead: a `cancel` entry that is itself pending (the lot's pending_until)
with an allocation on the lot, so members.pending stays the sum of the pending ledger and
no available point is touched. Pending lots never expire, so E = 0 for them.

A refund that completes the purchase (R = A) also claws back the referral bonuses the
purchase triggered (`referral` lots carrying its purchase_id, possibly another member's):
each lot's points minus what of it expired, minus what was already clawed back from it.
Campaign flat bonuses are inside the earn lot, so the proportional rule covers them.

Every refund writes exactly one entry with idem_key `refund:<ref>` (a zero-point clawback
when there is nothing to take), so the same refund ref twice is a no-op that says so.
Triggered-referral clawbacks carry `refund:<ref>:referral:<lot id>`.

Reversal
--------
A reversed redemption writes a `reversal` entry (+points, not a lot, source_id = the
redemption, the redemption's item_code so reward stock comes back) with NEGATIVE
allocations on exactly the lots the redemption consumed, restoring their `remaining` and so
their original expiry dates. A lot already past its expiry date keeps its date and expires
again at the next `points expire` run. idem_key `reversal:<redemption id>`.

Bulk paths are set-based: one query per kind of fact for a whole batch, the lot allocation
computed in memory, then one executemany per table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlmodel import Session

from loyaltyctl.config import Config
from loyaltyctl.db.models import Allocation, LedgerEntry, Member, Purchase
from loyaltyctl.errors import InvalidInput, LoyaltyError, NotFound, Refused
from loyaltyctl.normalize import format_money
from loyaltyctl.services import ledger
from loyaltyctl.timeutil import local_date, utcnow

REFUND_KEY = "refund:"
REVERSAL_KEY = "reversal:"
# Debits that give points back to the purchase's side of the ledger.
RETURN_KINDS = ("clawback", "cancel")


def refund_key(ref: str) -> str:
    return REFUND_KEY + ref


def referral_clawback_key(ref: str, lot_id: int) -> str:
    return f"{REFUND_KEY}{ref}:referral:{lot_id}"


# -- refunds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RefundRequest:
    ref: str
    purchase_ref: str
    amount: int | None
    """Minor units; None = whatever is left of the purchase."""
    occurred_at: datetime
    row: int | None = None
    """Line of the import file, for messages and the rejects file."""
    note: str | None = None


@dataclass
class RefundOutcome:
    ref: str
    purchase_ref: str
    member_code: str
    amount: int
    refunded_total: int
    purchase_amount: int
    purchase_points: int
    clawed_back: int
    """Available points taken (from lots, or as debt)."""
    cancelled: int
    """Pending points cancelled (refund inside the returns window)."""
    expired_excluded: int
    """E: points of the purchase's lot that had already expired (not taken again)."""
    debt: int
    """Points of this refund's clawbacks the member no longer had (balance went down by them)."""
    referral_clawed: int = 0
    full: bool = False
    duplicate: bool = False
    """Already recorded (by an earlier run, or earlier in the same file): nothing done."""
    repeat_in_file: bool = False
    balance_after: int | None = None
    row: int | None = None
    referral_members: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RowProblem:
    row: int | None
    ref: str
    reason: str
    error: type[LoyaltyError]


@dataclass
class RefundBatch:
    outcomes: list[RefundOutcome]
    problems: list[RowProblem]


@dataclass
class _Lot:
    id: int
    member_id: int
    kind: str
    points: int
    remaining: int
    expires_on: date | None
    pending_until: datetime | None
    purchase_id: int | None


def _for_update(session: Session, q):  # noqa: ANN001, ANN202
    return q.with_for_update() if session.get_bind().dialect.name == "postgresql" else q


def lock_members(session: Session, member_ids: Sequence[int]) -> None:
    """Lock the members' rows in id order (PostgreSQL), so concurrent writers queue."""
    if member_ids and session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(Member.id).where(Member.id.in_(sorted(set(member_ids))))
            .order_by(Member.id).with_for_update()
        ).all()


def apply_refunds(
    *,
    session: Session,
    config: Config,
    requests: Sequence[RefundRequest],
    now: datetime,
    actor: str,
    seen: dict[str, tuple] | None = None,
) -> RefundBatch:
    """Record a batch of refunds set-based; rows that cannot be applied come back as problems.

    Problem rows change nothing; the caller decides whether they abort the whole command
    (all-or-nothing) or are written to a rejects file. `seen` carries the refs accepted by
    earlier batches of the same run (ref -> (row, purchase ref, amount, time)): an identical
    later copy is a duplicate, a different one is rejected.
    """
    tz = config.program.timezone
    today = local_date(now, tz)
    problems: list[RowProblem] = []
    outcomes: list[RefundOutcome] = []
    if seen is None:
        seen = {}

    def reject(r: RefundRequest, reason: str, error: type[LoyaltyError]) -> None:
        problems.append(RowProblem(r.row, r.ref, reason, error))

    # 1. Purchases and earlier refunds with the same refs, in one query each.
    if not requests:
        return RefundBatch(outcomes, problems)
    pt = Purchase.__table__
    purchases = {
        p.ref: p
        for p in session.execute(
            _for_update(session, select(
                pt.c.id, pt.c.ref, pt.c.member_id, pt.c.amount, pt.c.refunded_amount,
                pt.c.points, pt.c.occurred_at,
            ).where(pt.c.ref.in_({r.purchase_ref for r in requests})))
        ).all()
    }
    existing = {
        row.idem_key: row
        for row in session.execute(
            select(LedgerEntry.id, LedgerEntry.idem_key, LedgerEntry.purchase_id)
            .where(LedgerEntry.idem_key.in_({refund_key(r.ref) for r in requests}))
        ).all()
    }
    purchase_by_id = {p.id: p for p in purchases.values()}
    codes = _member_codes(session, [p.member_id for p in purchases.values()])

    # 2. Check each row in order: repeats, the purchase, what is left of it.
    refunded: dict[int, int] = {p.id: p.refunded_amount for p in purchases.values()}
    valid: list[tuple[RefundRequest, Any, int]] = []  # (request, purchase row, amount)
    for r in requests:
        p = purchases.get(r.purchase_ref)
        first = seen.get(r.ref)
        if first is not None:
            if first[1:] == (r.purchase_ref, r.amount, r.occurred_at) and p is not None:
                out = _duplicate_outcome(r, p, codes.get(p.member_id, "?"))
                out.repeat_in_file = True
                outcomes.append(out)
            else:
                where = f"row {first[0]}" if first[0] is not None else "earlier"
                reject(r, f"ref: {r.ref!r} appears earlier ({where}) with different data",
                       InvalidInput)
            continue
        old = existing.get(refund_key(r.ref))
        if old is not None:
            if p is None or old.purchase_id != p.id:
                other = purchase_by_id.get(old.purchase_id)
                other_ref = other.ref if other else _purchase_ref(session, old.purchase_id)
                reject(r, f"refund ref {r.ref!r} was already used for purchase {other_ref!r}; "
                          "use a new ref for a new refund", Refused)
            else:
                outcomes.append(_duplicate_outcome(r, p, codes.get(p.member_id, "?")))
            continue
        if p is None:
            reject(r, f"no purchase with ref {r.purchase_ref!r}", NotFound)
            continue
        left = p.amount - refunded[p.id]
        amount = left if r.amount is None else r.amount
        if r.amount is not None and r.amount <= 0:
            reject(r, f"amount: {r.amount:,} must be greater than zero", InvalidInput)
            continue
        if left <= 0:
            reject(r, f"purchase {p.ref!r} is already refunded in full", Refused)
            continue
        if amount > left:
            reject(r, f"a refund of {amount:,} is more than what is left of purchase {p.ref!r} "
                      f"({left:,} of {p.amount:,})", Refused)
            continue
        if r.occurred_at < p.occurred_at:
            reject(r, f"refund {r.ref!r} is dated before its purchase {p.ref!r}", InvalidInput)
            continue
        refunded[p.id] += amount
        seen[r.ref] = (r.row, r.purchase_ref, r.amount, r.occurred_at)
        valid.append((r, p, amount))
    if not valid:
        return RefundBatch(outcomes, problems)

    # 3. Lock, activate what is due and expire what is due for every member concerned, so
    #    the state below is today's.
    pids = sorted({p.id for _, p, _ in valid})
    full_pids = {pid for pid in pids if refunded[pid] >= purchase_by_id[pid].amount}
    ref_lots_members = [
        row[0] for row in session.execute(
            select(LedgerEntry.member_id, LedgerEntry.kind).where(
                LedgerEntry.purchase_id.in_(sorted(full_pids)), LedgerEntry.remaining.is_not(None))
        ).all() if row[1] == "referral"
    ] if full_pids else []
    member_ids = sorted({p.member_id for _, p, _ in valid} | set(ref_lots_members))
    lock_members(session, member_ids)
    # Only members with pending points can have any that are due (cheap: no ledger scan).
    with_pending = [row[0] for row in session.execute(
        select(Member.id).where(Member.id.in_(member_ids), Member.pending != 0)).all()]
    ledger.activate_pending(session=session, now=now, member_ids=with_pending, config=config)
    ledger.expire_due(session=session, as_of=today, now=now, actor=actor, member_ids=member_ids)
    codes.update(_member_codes(session, member_ids))

    # 4. The purchases' own and referral lots, whatever is left of them; what of them
    #    expired; what refunds already took back.
    lot_cols = (LedgerEntry.id, LedgerEntry.member_id, LedgerEntry.kind, LedgerEntry.points,
                LedgerEntry.remaining, LedgerEntry.expires_on, LedgerEntry.pending_until,
                LedgerEntry.purchase_id)
    lots: dict[int, _Lot] = {}
    own_lot: dict[int, _Lot] = {}
    referral_lots: dict[int, list[_Lot]] = {}
    # (The kinds are picked here, not in SQL: a kind filter lures SQLite onto the kind index.)
    for row in session.execute(
        select(*lot_cols).where(
            LedgerEntry.purchase_id.in_(pids), LedgerEntry.remaining.is_not(None))
        .order_by(LedgerEntry.id)
    ).all():
        if row.kind not in ("earn", "referral"):
            continue
        lot = lots.setdefault(row.id, _Lot(*row))
        if lot.kind == "earn":
            own_lot.setdefault(lot.purchase_id, lot)
        else:
            referral_lots.setdefault(lot.purchase_id, []).append(lot)
    expired = _expired_by_lot(session, list(lots))
    returned_by_lot: dict[int, int] = {}
    returned_own: dict[int, int] = {}
    for pid, source_id, pts in session.execute(
        select(LedgerEntry.purchase_id, LedgerEntry.source_id, func.sum(-LedgerEntry.points))
        .where(LedgerEntry.purchase_id.in_(pids), LedgerEntry.kind.in_(RETURN_KINDS))
        .group_by(LedgerEntry.purchase_id, LedgerEntry.source_id)
    ).all():
        source = lots.get(source_id) if source_id is not None else None
        if source is not None and source.kind == "referral":
            returned_by_lot[source_id] = returned_by_lot.get(source_id, 0) + int(pts)
        else:
            returned_own[pid] = returned_own.get(pid, 0) + int(pts)

    # 5. Plan every entry. A pending cancellation takes from its own lot at once; clawbacks
    #    are allocated afterwards (6), once we know whose lots must be read.
    entries: list[dict] = []
    allocs: list[tuple[int, int, int, int]] = []  # (entry index, member, lot, points)
    claws: list[tuple[int, int, int, _Lot | None, RefundOutcome | None]] = []
    """(entry index, member, points, the lot to take first, the outcome its debt counts in)"""
    lot_taken: dict[int, int] = {}
    balance_delta: dict[int, int] = {}
    pending_delta: dict[int, int] = {}
    refunded_delta: dict[int, int] = {}
    stamp = utcnow()

    def add_entry(*, member_id: int, points: int, lot: _Lot | None, purchase: Any,
                  r: RefundRequest, key: str, note: str, debt_to: RefundOutcome | None) -> None:
        """Plan one clawback (or pending cancellation) of `points`."""
        pending = lot is not None and lot.pending_until is not None and points > 0
        index = len(entries)
        entries.append({
            "member_id": member_id, "kind": "cancel" if pending else "clawback",
            "points": -points, "effective_at": r.occurred_at,
            "pending_until": lot.pending_until if pending else None,
            "purchase_id": purchase.id, "source_id": lot.id if lot is not None else None,
            "ref": r.ref, "idem_key": key, "actor": actor[:64], "note": note,
            "created_at": stamp,
        })
        if points <= 0:
            return
        if pending:
            lot.remaining -= points
            lot_taken[lot.id] = lot_taken.get(lot.id, 0) + points
            allocs.append((index, member_id, lot.id, points))
            pending_delta[member_id] = pending_delta.get(member_id, 0) - points
            return
        balance_delta[member_id] = balance_delta.get(member_id, 0) - points
        claws.append((index, member_id, points, lot, debt_to))

    decimals = config.program.decimals
    for r, p, amount in valid:
        total = p.refunded_amount + refunded_delta.get(p.id, 0) + amount
        refunded_delta[p.id] = refunded_delta.get(p.id, 0) + amount
        lot = own_lot.get(p.id)
        e = expired.get(lot.id, 0) if lot is not None else 0
        target = max(0, p.points * total // p.amount - e) if p.amount > 0 else 0
        take = max(0, target - returned_own.get(p.id, 0))
        pending = lot is not None and lot.pending_until is not None
        if pending:
            take = min(take, lot.remaining)
        returned_own[p.id] = returned_own.get(p.id, 0) + take
        out = RefundOutcome(
            ref=r.ref, purchase_ref=p.ref, member_code=codes.get(p.member_id, "?"),
            amount=amount, refunded_total=total, purchase_amount=p.amount,
            purchase_points=p.points, clawed_back=0 if pending else take,
            cancelled=take if pending else 0, expired_excluded=e, debt=0,
            full=total >= p.amount, row=r.row,
        )
        note = r.note or (f"refund of {format_money(amount, decimals)} "
                          f"({format_money(total, decimals)} of {format_money(p.amount, decimals)})"
                          f" on purchase {p.ref}")
        add_entry(member_id=p.member_id, points=take, lot=lot, purchase=p, r=r,
                  key=refund_key(r.ref), note=note[:2000], debt_to=out)
        if out.full:
            for rl in referral_lots.get(p.id, []):
                q = max(0, rl.points - expired.get(rl.id, 0) - returned_by_lot.get(rl.id, 0))
                if rl.pending_until is not None:
                    q = min(q, rl.remaining)
                if q <= 0:
                    continue
                returned_by_lot[rl.id] = returned_by_lot.get(rl.id, 0) + q
                own_member = rl.member_id == p.member_id
                add_entry(member_id=rl.member_id, points=q, lot=rl, purchase=p, r=r,
                          key=referral_clawback_key(r.ref, rl.id),
                          note=f"referral bonus of fully refunded purchase {p.ref}",
                          debt_to=out if own_member else None)
                out.referral_clawed += q
                if not own_member:
                    out.referral_members.append(codes.get(rl.member_id, "?"))
        outcomes.append(out)

    # 6. Allocate the clawbacks: the lot named first, then the member's other usable lots,
    #    earliest-expiring first (never-expiring last); the rest is debt. Most refunds are
    #    covered by their own lot, so the other lots are read only for the members whose
    #    clawbacks go beyond (found by a dry pass over the first lots alone).
    def usable(lot: _Lot | None) -> bool:
        return (lot is not None and lot.remaining > 0 and lot.pending_until is None
                and (lot.expires_on is None or lot.expires_on > today))

    first_left = {lot.id: lot.remaining for _, _, _, lot, _ in claws if usable(lot)}
    short: set[int] = set()
    for _, member_id, points, lot, _ in claws:
        n = min(points, first_left.get(lot.id, 0)) if lot is not None else 0
        if n:
            first_left[lot.id] -= n
        if n < points:
            short.add(member_id)
    others: dict[int, list[_Lot]] = {}
    if short:
        for row in session.execute(
            select(*lot_cols).where(
                LedgerEntry.member_id.in_(sorted(short)), LedgerEntry.remaining > 0,
                LedgerEntry.pending_until.is_(None),
                LedgerEntry.expires_on.is_(None) | (LedgerEntry.expires_on > today))
        ).all():
            lot = lots.setdefault(row.id, _Lot(*row))
            others.setdefault(lot.member_id, []).append(lot)
        for group in others.values():
            group.sort(key=lambda x: (x.expires_on is None, x.expires_on or date.max, x.id))
    for index, member_id, points, first, debt_to in claws:
        order = [first] if usable(first) else []
        order += [lot for lot in others.get(member_id, ()) if lot is not first]
        left = points
        for lot in order:
            if left <= 0:
                break
            n = min(left, lot.remaining)
            if n <= 0:
                continue
            lot.remaining -= n
            lot_taken[lot.id] = lot_taken.get(lot.id, 0) + n
            allocs.append((index, member_id, lot.id, n))
            left -= n
        if debt_to is not None:
            debt_to.debt += left

    # 7. Write: entries, allocations, lots, balances, purchases., allocations, lots, balances, purchases.
    table = LedgerEntry.__table__
    ids = next_ids(session, "ledger_entries", len(entries))
    for entry_id, entry in zip(ids, entries, strict=True):
        entry["id"] = entry_id
    session.execute(insert(table), entries)
    if allocs:
        session.execute(insert(Allocation.__table__), [
            {"member_id": m, "debit_id": ids[i], "lot_id": lot_id, "points": n}
            for i, m, lot_id, n in allocs])
        session.execute(
            update(table).where(table.c.id == bindparam("b_lot"))
            .values(remaining=table.c.remaining - bindparam("b_take")),
            [{"b_lot": k, "b_take": v} for k, v in lot_taken.items()])
    _move_balances(session, balance_delta, pending_delta)
    ptable = Purchase.__table__
    session.execute(
        update(ptable).where(ptable.c.id == bindparam("b_pid"))
        .values(refunded_amount=ptable.c.refunded_amount + bindparam("b_d")),
        [{"b_pid": k, "b_d": v} for k, v in refunded_delta.items()])
    balances = dict(session.execute(
        select(Member.id, Member.balance).where(Member.id.in_(member_ids))).all())
    mid_by_code = {v: k for k, v in codes.items()}
    for out in outcomes:
        if not out.duplicate:
            out.balance_after = int(balances.get(mid_by_code.get(out.member_code), 0))
    return RefundBatch(outcomes, problems)


def refund_purchase(
    *,
    session: Session,
    config: Config,
    purchase_ref: str,
    ref: str,
    amount: int | None,
    now: datetime,
    actor: str,
    note: str | None = None,
) -> RefundOutcome:
    """Refund one purchase (whole remaining amount when `amount` is None); raises on refusal."""
    ref = (ref or "").strip()
    if not ref:
        raise InvalidInput("--ref: a refund needs a reference (the till's refund number)")
    if len(ref) > 100:
        raise InvalidInput(f"--ref: {len(ref)} characters, at most 100")
    batch = apply_refunds(
        session=session, config=config, now=now, actor=actor,
        requests=[RefundRequest(ref=ref, purchase_ref=purchase_ref.strip(), amount=amount,
                                occurred_at=now, note=note)],
    )
    if batch.problems:
        problem = batch.problems[0]
        hint = None
        if problem.error is Refused and "more than what is left" in problem.reason:
            hint = "refund at most what is left, or check the purchase with `purchases list`"
        raise problem.error(problem.reason, hint=hint)
    out = batch.outcomes[0]
    if out.balance_after is None:  # an earlier refund: nothing done, show where things stand
        out.balance_after = session.execute(
            select(Member.balance).where(Member.code == out.member_code)).scalar()
    return out


def _duplicate_outcome(r: RefundRequest, p: Any, code: str) -> RefundOutcome:
    return RefundOutcome(
        ref=r.ref, purchase_ref=p.ref, member_code=code, amount=0,
        refunded_total=p.refunded_amount, purchase_amount=p.amount, purchase_points=p.points,
        clawed_back=0, cancelled=0, expired_excluded=0, debt=0, duplicate=True, row=r.row,
        full=p.refunded_amount >= p.amount,
    )


def next_ids(session: Session, table: str, n: int) -> list[int]:
    """`n` ids for new rows of `table`, so a batch is one executemany (no RETURNING, which
    SQLite would answer row by row to keep the order).

    PostgreSQL: from the table's sequence. SQLite: after the current maximum, which nobody
    else can take meanwhile: a writer holds the database's write lock from BEGIN IMMEDIATE.
    """
    if n <= 0:
        return []
    if session.get_bind().dialect.name == "postgresql":
        return [int(v) for v in session.execute(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table, "n": n}).scalars()]
    if table not in ("ledger_entries",):
        raise ValueError(f"no id allocation for table {table!r}")
    first = session.execute(text("SELECT COALESCE(MAX(id), 0) + 1 FROM ledger_entries")).scalar_one()
    return list(range(int(first), int(first) + n))


def _member_codes(session: Session, member_ids: Sequence[int]) -> dict[int, str]:
    if not member_ids:
        return {}
    return dict(session.execute(
        select(Member.id, Member.code).where(Member.id.in_(sorted(set(member_ids))))).all())


def _purchase_ref(session: Session, purchase_id: int | None) -> str:
    if purchase_id is None:
        return "(none)"
    ref = session.execute(select(Purchase.ref).where(Purchase.id == purchase_id)).scalar()
    return ref or f"#{purchase_id}"


def _expired_by_lot(session: Session, lot_ids: Sequence[int]) -> dict[int, int]:
    """Points of each lot closed by expiry entries (E in the clawback formula)."""
    if not lot_ids:
        return {}
    d = LedgerEntry.__table__.alias("d")
    rows = session.execute(
        select(Allocation.lot_id, func.sum(Allocation.points))
        .join(d, d.c.id == Allocation.debit_id)
        .where(Allocation.lot_id.in_(sorted(set(lot_ids))), d.c.kind == "expire")
        .group_by(Allocation.lot_id)
    ).all()
    return {lot_id: int(pts) for lot_id, pts in rows}


def _move_balances(session: Session, balance: dict[int, int], pending: dict[int, int]) -> None:
    params = [{"b_mid": m, "b_b": balance.get(m, 0), "b_p": pending.get(m, 0)}
              for m in sorted(set(balance) | set(pending))
              if balance.get(m, 0) or pending.get(m, 0)]
    if not params:
        return
    mt = Member.__table__
    session.execute(
        update(mt).where(mt.c.id == bindparam("b_mid"))
        .values(balance=mt.c.balance + bindparam("b_b"), pending=mt.c.pending + bindparam("b_p")),
        params)


# -- reversals ---------------------------------------------------------------------------


@dataclass
class ReversalOutcome:
    ref: str
    member_code: str
    points: int
    item_code: str | None
    redemption_id: int
    reversal_id: int
    lots: int
    """How many lots got points back."""
    past_expiry: int
    """Points returned to lots already past their expiry date (they expire at the next run)."""
    balance_after: int
    duplicate: bool = False


def find_redemption(*, session: Session, ref: str) -> LedgerEntry:
    """The redemption (`points redeem` or `rewards redeem`) written with --ref `ref`.

    Both write idem_key `redeem:<ref>`, so a ref names at most one redemption.
    """
    found = session.execute(
        select(LedgerEntry).where(LedgerEntry.idem_key == f"redeem:{ref}")
    ).scalar_one_or_none()
    if found is not None and found.kind == "redeem":
        return found
    raise NotFound(f"no redemption with ref {ref!r}",
                   hint="the ref is the --ref given to `points redeem` or `rewards redeem`")


def reverse_redemption(
    *,
    session: Session,
    config: Config,
    ref: str,
    now: datetime,
    actor: str,
    note: str | None = None,
) -> ReversalOutcome:
    """Undo a redemption: its points go back to the very lots it consumed."""
    ref = (ref or "").strip()
    if not ref:
        raise InvalidInput("REF: give the --ref of the redemption to reverse")
    red = find_redemption(session=session, ref=ref)
    member = ledger.lock_member(session, red.member_id)
    key = f"{REVERSAL_KEY}{red.id}"
    done = ledger.entry_by_key(session, key)
    if done is not None:
        return ReversalOutcome(
            ref=ref, member_code=member.code, points=int(done.points), item_code=red.item_code,
            redemption_id=red.id, reversal_id=done.id, lots=0, past_expiry=0,
            balance_after=int(member.balance), duplicate=True)
    table = LedgerEntry.__table__
    consumed = session.execute(
        select(Allocation.lot_id, func.sum(Allocation.points), table.c.expires_on)
        .join(table, table.c.id == Allocation.lot_id)
        .where(Allocation.debit_id == red.id)
        .group_by(Allocation.lot_id, table.c.expires_on)
        .order_by(Allocation.lot_id)
    ).all()
    points = -int(red.points)
    entry = LedgerEntry(
        member_id=member.id, kind="reversal", points=points, effective_at=now,
        source_id=red.id, item_code=red.item_code, ref=ref, idem_key=key, actor=actor[:64],
        note=note or f"reversal of redemption {ref}",
    )
    session.add(entry)
    session.flush()
    rows = [(int(lot_id), int(n), exp) for lot_id, n, exp in consumed if int(n)]
    if rows:
        session.execute(insert(Allocation.__table__), [
            {"member_id": member.id, "debit_id": entry.id, "lot_id": lot_id, "points": -n}
            for lot_id, n, _ in rows])
        session.execute(
            update(table).where(table.c.id == bindparam("b_lot"))
            .values(remaining=table.c.remaining + bindparam("b_n")),
            [{"b_lot": lot_id, "b_n": n} for lot_id, n, _ in rows])
    _move_balances(session, {member.id: points}, {})
    today = local_date(now, config.program.timezone)
    ledger.settle_debt(session=session, member_id=member.id, today=today)
    session.refresh(member)
    past = sum(n for _, n, exp in rows if exp is not None and exp <= today)
    return ReversalOutcome(
        ref=ref, member_code=member.code, points=points, item_code=red.item_code,
        redemption_id=red.id, reversal_id=entry.id, lots=len(rows), past_expiry=past,
        balance_after=int(member.balance))


# -- refunds import ----------------------------------------------------------------------

REFUND_REQUIRED = ("ref", "purchase_ref", "amount", "occurred_at")
REFUND_OPTIONAL = ("note",)
REFUND_IGNORED = ("row", "reason")
REFUND_COLUMNS = REFUND_REQUIRED + REFUND_OPTIONAL
DEFAULT_BATCH = 5_000


@dataclass
class RefundImportSummary:
    rows: int = 0
    refunded: int = 0
    """Refund rows applied."""
    amount: int = 0
    clawed_back: int = 0
    cancelled: int = 0
    referral_clawed: int = 0
    debt: int = 0
    full: int = 0
    """Purchases refunded in full by this import."""
    already_imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    dry_run: bool = False
    errors: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "rows": self.rows, "refunded": self.refunded, "amount": self.amount,
            "clawed_back": self.clawed_back, "cancelled": self.cancelled,
            "referral_clawed": self.referral_clawed, "debt": self.debt, "full": self.full,
            "already_imported": self.already_imported, "duplicates": self.duplicates,
            "rejected": self.rejected, "dry_run": self.dry_run,
        }


def import_refunds(
    *,
    session: Session,
    config: Config,
    reader,  # noqa: ANN001 - an opened services.csvio.TableReader with REFUND_COLUMNS
    now: datetime,
    actor: str,
    on_error: str = "abort",
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
    on_reject=None,  # noqa: ANN001 - on_reject(row, values, reason)
    progress=None,  # noqa: ANN001 - progress(bytes read, rows read)
) -> RefundImportSummary:
    """Apply every refund row of `reader`, batch by batch (see apply_refunds).

    on_error="abort": any rejected row rolls everything back and raises InvalidInput listing
    the first rejected rows (exit 4); "skip": rejected rows go to `on_reject` and the rest is
    applied. dry_run: everything is done, then rolled back. Never commits.
    """
    from loyaltyctl.services.csvio import MAX_LISTED_ERRORS, abort_error

    if on_error not in ("abort", "skip"):
        raise InvalidInput(f"--on-error: {on_error!r} is not abort or skip")
    summary = RefundImportSummary(dry_run=dry_run)
    seen: dict[str, tuple] = {}
    parse = _RefundParser(config, now)

    def rejected(rows: list[tuple[int, Sequence | None, str]]) -> None:
        rows.sort(key=lambda r: r[0])
        for n, values, reason in rows:
            summary.rejected += 1
            if len(summary.errors) < MAX_LISTED_ERRORS:
                summary.errors.append((n, reason))
            if on_reject is not None and on_error == "skip":
                on_reject(n, values, reason)

    savepoint = session.begin_nested()
    try:
        for batch in reader.batches(batch_size):
            summary.rows += len(batch)
            bad: list[tuple[int, Sequence | None, str]] = []
            requests: list[RefundRequest] = []
            values_by_row: dict[int, Sequence | None] = {}
            for n, values, err in batch:
                values_by_row[n] = values
                if err is not None:
                    bad.append((n, values, err))
                    continue
                req = parse.request(n, values, bad)
                if req is not None:
                    requests.append(req)
            result = apply_refunds(session=session, config=config, requests=requests, now=now,
                                   actor=actor, seen=seen)
            for problem in result.problems:
                bad.append((problem.row, values_by_row.get(problem.row), problem.reason))
            for out in result.outcomes:
                if out.duplicate:
                    if out.repeat_in_file:
                        summary.duplicates += 1
                    else:
                        summary.already_imported += 1
                    continue
                summary.refunded += 1
                summary.amount += out.amount
                summary.clawed_back += out.clawed_back
                summary.cancelled += out.cancelled
                summary.referral_clawed += out.referral_clawed
                summary.debt += out.debt
                summary.full += int(out.full)
            rejected(bad)
            if progress is not None:
                progress(reader.bytes_read, summary.rows)
            if on_error == "abort" and len(summary.errors) >= MAX_LISTED_ERRORS:
                break
    except BaseException:
        savepoint.rollback()
        raise
    if dry_run or (on_error == "abort" and summary.rejected):
        savepoint.rollback()
    else:
        savepoint.commit()
    if on_error == "abort" and summary.rejected:
        raise abort_error(reader.name, summary.rejected, summary.errors)
    return summary


class _RefundParser:
    def __init__(self, config: Config, now: datetime) -> None:
        self.config = config
        self.now = now

    def request(self, n: int, values: Sequence, bad: list) -> RefundRequest | None:
        from loyaltyctl.normalize import clean_text, parse_money
        from loyaltyctl.timeutil import parse_instant

        program = self.config.program
        ref = (values[0] or "").strip()
        if not ref:
            bad.append((n, values, "ref: empty (every refund needs its own reference)"))
            return None
        if len(ref) > 100:
            bad.append((n, values, f"ref: {ref[:20]!r}... is longer than 100 characters"))
            return None
        purchase_ref = (values[1] or "").strip()
        if not purchase_ref:
            bad.append((n, values, "purchase_ref: empty (the ref of the refunded purchase)"))
            return None
        raw = (values[2] or "").strip()
        if not raw:
            bad.append((n, values, "amount: empty (give the refunded amount)"))
            return None
        try:
            amount = parse_money(raw, program.decimals)
        except ValueError as exc:
            bad.append((n, values, f"amount: {exc}"))
            return None
        if amount <= 0:
            bad.append((n, values, f"amount: {raw!r} must be greater than zero"))
            return None
        raw_at = (values[3] or "").strip()
        if not raw_at:
            bad.append((n, values, "occurred_at: empty (give the date and time of the refund)"))
            return None
        try:
            at = parse_instant(raw_at, tz=program.timezone, calendar=program.calendar)
        except ValueError as exc:
            bad.append((n, values, f"occurred_at: {exc}"))
            return None
        if at > self.now:
            bad.append((n, values, f"occurred_at: {raw_at!r} is in the future "
                                   f"(now is {self.now:%Y-%m-%d %H:%M} UTC)"))
            return None
        try:
            note = clean_text(values[4], max_len=500, field="note") if len(values) > 4 else None
        except ValueError as exc:
            bad.append((n, values, f"note: {exc}"))
            return None
        return RefundRequest(ref=ref, purchase_ref=purchase_ref, amount=amount, occurred_at=at,
                             row=n, note=note or None)


def has_due_pending(*, session: Session, member_id: int, now: datetime) -> bool:
    """Whether the member has pending entries whose holding period is over."""
    return session.execute(
        select(LedgerEntry.id).where(
            LedgerEntry.member_id == member_id, LedgerEntry.pending_until.is_not(None),
            LedgerEntry.pending_until <= now).limit(1)
    ).first() is not None
