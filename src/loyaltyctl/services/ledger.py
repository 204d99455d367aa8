"""The points ledger core: lots, debits with allocations, expiry, cached balances.

Every function here takes the session of the caller's one transaction and never commits.
Invariants kept (and proved by `db check`, services/integrity.py):
- members.balance = sum of available (non-pending) ledger points; members.pending = the rest;
- a lot's remaining = its points - sum of its allocations;
- debits consume the earliest-expiring open lots first (never-expiring last, then oldest);
- only a clawback may leave a shortfall (debt), paid off by the member's next credits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlmodel import Session

from loyaltyctl.db.models import Allocation, LedgerEntry, Member
from loyaltyctl.errors import Refused

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from loyaltyctl.config import Config


def lock_member(session: Session, member_id: int) -> Member:
    """Load a member for a balance change, locking its row on PostgreSQL.

    On SQLite the writer already holds the database write lock (BEGIN IMMEDIATE).
    """
    q = select(Member).where(Member.id == member_id).execution_options(populate_existing=True)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return session.execute(q).scalar_one()


def entry_by_key(session: Session, idem_key: str) -> LedgerEntry | None:
    return session.execute(
        select(LedgerEntry).where(LedgerEntry.idem_key == idem_key)
    ).scalar_one_or_none()


def _add_balance(session: Session, member_id: int, *, balance: int = 0, pending: int = 0) -> None:
    # No ORM session synchronisation: with thousands of members loaded it scans them all.
    # Only the one member's cached columns are expired, so the next read sees the change.
    session.execute(
        update(Member)
        .where(Member.id == member_id)
        .values(balance=Member.balance + balance, pending=Member.pending + pending)
        .execution_options(synchronize_session=False)
    )
    loaded = session.identity_map.get(session.identity_key(Member, member_id))
    if loaded is not None:
        session.expire(loaded, ["balance", "pending"])


def open_lots(session: Session, member_id: int, *, today: date) -> list[tuple[int, int]]:
    """(lot id, remaining) of the member's usable lots, earliest-expiring first."""
    rows = session.execute(
        select(LedgerEntry.id, LedgerEntry.remaining)
        .where(
            LedgerEntry.member_id == member_id,
            LedgerEntry.remaining > 0,
            LedgerEntry.pending_until.is_(None),
            (LedgerEntry.expires_on.is_(None)) | (LedgerEntry.expires_on > today),
        )
        .order_by(LedgerEntry.expires_on.is_(None), LedgerEntry.expires_on, LedgerEntry.id)
    ).all()
    return [(r[0], r[1]) for r in rows]


def _allocate(
    session: Session, member_id: int, debit_id: int, lots: list[tuple[int, int]], points: int
) -> int:
    """Consume up to `points` from `lots` in order; returns how many were allocated."""
    allocs: list[dict] = []
    left = points
    for lot_id, remaining in lots:
        if left <= 0:
            break
        take = min(left, remaining)
        if take <= 0:
            continue
        allocs.append({"member_id": member_id, "debit_id": debit_id, "lot_id": lot_id, "points": take})
        left -= take
    if allocs:
        session.execute(insert(Allocation), allocs)
        session.execute(
            update(LedgerEntry.__table__)
            .where(LedgerEntry.__table__.c.id == bindparam("b_lot"))
            .values(remaining=LedgerEntry.__table__.c.remaining - bindparam("b_take")),
            [{"b_lot": a["lot_id"], "b_take": a["points"]} for a in allocs],
        )
    return points - left


def credit(
    *,
    session: Session,
    member_id: int,
    kind: str,
    points: int,
    effective_at: datetime,
    expires_on: date | None,
    actor: str,
    idem_key: str | None = None,
    ref: str | None = None,
    purchase_id: int | None = None,
    campaign: str | None = None,
    item_code: str | None = None,
    note: str | None = None,
    pending_until: datetime | None = None,
    source_id: int | None = None,
    today: date | None = None,
) -> LedgerEntry:
    """Write a lot of `points` (> 0); a pending lot counts toward the pending balance."""
    if points <= 0:
        raise ValueError("a credit needs positive points")
    entry = LedgerEntry(
        member_id=member_id, kind=kind, points=points, effective_at=effective_at,
        expires_on=expires_on, remaining=points, pending_until=pending_until,
        purchase_id=purchase_id, campaign=campaign, item_code=item_code, ref=ref,
        idem_key=idem_key, source_id=source_id, actor=actor, note=note,
    )
    session.add(entry)
    session.flush()
    if pending_until is not None:
        _add_balance(session, member_id, pending=points)
    else:
        _add_balance(session, member_id, balance=points)
        settle_debt(session=session, member_id=member_id, today=today or effective_at.date())
    return entry


def unpaid_clawbacks(session: Session, member_id: int) -> list[tuple[int, int]]:
    """(clawback id, unpaid points) for the member's clawbacks with a shortfall, oldest first."""
    used = (
        select(Allocation.debit_id, func.sum(Allocation.points).label("used"))
        .group_by(Allocation.debit_id)
        .subquery()
    )
    rows = session.execute(
        select(LedgerEntry.id, -LedgerEntry.points - func.coalesce(used.c.used, 0))
        .outerjoin(used, used.c.debit_id == LedgerEntry.id)
        .where(
            LedgerEntry.member_id == member_id,
            LedgerEntry.kind == "clawback",
            LedgerEntry.pending_until.is_(None),
            -LedgerEntry.points > func.coalesce(used.c.used, 0),
        )
        .order_by(LedgerEntry.id)
    ).all()
    return [(r[0], int(r[1])) for r in rows]


def settle_debt(*, session: Session, member_id: int, today: date) -> int:
    """Pay a member's clawback debt from its open lots; returns points settled.

    The balance already counts the debt (it went below zero), so settling moves no balance:
    it only makes lots and allocations agree with it.
    """
    debts = unpaid_clawbacks(session, member_id)
    if not debts:
        return 0
    settled = 0
    for debit_id, unpaid in debts:
        lots = open_lots(session, member_id, today=today)
        if not lots:
            break
        settled += _allocate(session, member_id, debit_id, lots, unpaid)
    return settled


def debit(
    *,
    session: Session,
    member: Member,
    kind: str,
    points: int,
    effective_at: datetime,
    today: date,
    actor: str,
    idem_key: str | None = None,
    ref: str | None = None,
    item_code: str | None = None,
    note: str | None = None,
    purchase_id: int | None = None,
    source_id: int | None = None,
    allow_debt: bool = False,
    first_lot_id: int | None = None,
) -> LedgerEntry:
    """Take `points` (> 0) from the member's lots, earliest-expiring first.

    Due lots are expired first, so a debit never spends points that are past their date.
    Only a clawback (`allow_debt`) may take more than the balance: the rest is debt.
    `first_lot_id` is consumed before the others (a refund takes from its own lot first).
    """
    if points <= 0:
        raise ValueError("a debit needs positive points")
    if member.pending > 0:
        # Points whose holding period is over are spendable now, even if no look-up or
        # nightly run has activated them yet.
        activate_pending(session=session, now=effective_at, member_ids=[member.id])
    expire_due(session=session, as_of=today, now=effective_at, actor=actor, member_ids=[member.id])
    session.refresh(member)
    if not allow_debt:
        if member.balance <= 0 or member.balance < points:
            raise Refused(
                f"member {member.code} has {member.balance:,} points available, "
                f"{points:,} are needed"
            )
    entry = LedgerEntry(
        member_id=member.id, kind=kind, points=-points, effective_at=effective_at,
        ref=ref, idem_key=idem_key, item_code=item_code, note=note, actor=actor,
        purchase_id=purchase_id, source_id=source_id,
    )
    session.add(entry)
    session.flush()
    lots = open_lots(session, member.id, today=today)
    if first_lot_id is not None:
        lots.sort(key=lambda lot: lot[0] != first_lot_id)
    _allocate(session, member.id, entry.id, lots, points)
    _add_balance(session, member.id, balance=-points)
    return entry


@dataclass(frozen=True)
class ExpiryResult:
    lots: int
    points: int
    members: int


def expire_due(
    *,
    session: Session,
    as_of: date,
    now: datetime,
    actor: str,
    member_ids: list[int] | None = None,
) -> ExpiryResult:
    """Close every open lot with expires_on <= as_of, set-based: one expiry entry per member
    and run, with one allocation for each lot it closes (as a redemption that takes several
    lots), so a member's history shows one line a night however many lots expired.

    The due lots are read once, into a temporary table, and every later statement works
    from that set: the entries, their allocations, the closed lots and the balances always
    agree. Idempotent: a closed lot has remaining 0 and is not picked again.
    """
    import uuid

    if member_ids is not None and not member_ids:
        return ExpiryResult(0, 0, 0)
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    # A token unique to this run marks its entries, so the statements below never pick up
    # expiry entries another transaction committed meanwhile.
    token = f"expire:{as_of.isoformat()}:{uuid.uuid4().hex[:12]}"
    params: dict = {"as_of": as_of, "now": now, "actor": actor[:64], "token": token}
    some = member_ids is not None
    if some:
        params["mids"] = list(member_ids)
    # Most debits find nothing due: no temporary table then (on PostgreSQL, creating one
    # writes to the system catalogs).
    if conn.execute(_ANY_DUE[some], params).first() is None:
        return ExpiryResult(0, 0, 0)
    if pg and not some:
        conn.execute(_EXPIRE_LOCK_MEMBERS, {"as_of": as_of})
    points = members = 0
    with _sqlite_cache(conn, big=not some):
        # (After an error the caller rolls back, which drops the table too.)
        conn.execute(_RUN_DROP[pg])
        conn.execute(_RUN_CREATE[pg])
        lots = conn.execute(_EXPIRE_DUE[(some, pg)], params).rowcount
        if lots:
            if pg:
                # PostgreSQL keeps no statistics of a new temporary table; without them it
                # plans the joins below for a tiny one.
                conn.execute(_RUN_ANALYZE)
            params["first_id"] = conn.execute(
                text("SELECT COALESCE(MAX(id), 0) FROM ledger_entries")).scalar()
            members = conn.execute(_EXPIRE_ENTRIES, params).rowcount
            conn.execute(_EXPIRE_ALLOCATE, {"first_id": params["first_id"], "token": token})
            conn.execute(_EXPIRE_CLOSE_LOTS)
            points = int(conn.execute(_EXPIRE_TOTAL).scalar())
            conn.execute(_EXPIRE_BALANCES)
        conn.execute(_RUN_DROP[pg])
    return ExpiryResult(lots=lots, points=points, members=members)


# While a nightly expiry writes hundreds of thousands of rows, SQLite's default 2 MB page
# cache spills index pages to the WAL again and again; 64 MB keeps them (measured on the
# 1,000,000-purchase benchmark club: 471k lots closed in 6.1 s instead of 9.3 s).
_EXPIRY_CACHE_KIB = 64 * 1024


@contextmanager
def _sqlite_cache(conn: Connection, *, big: bool) -> Iterator[None]:
    """A bigger SQLite page cache for the duration of a bulk statement (not on PostgreSQL)."""
    if not big or conn.dialect.name != "sqlite":
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size = -{_EXPIRY_CACHE_KIB}")  # noqa: S608 - an int
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size = {int(before)}")  # noqa: S608 - an int


@dataclass(frozen=True)
class ActivationResult:
    lots: int
    points: int
    """Net points that moved from pending to available (lots minus their cancellations)."""
    members: int


def activate_pending(
    *,
    session: Session,
    now: datetime,
    member_ids: list[int] | None = None,
    config: Config | None = None,
) -> ActivationResult:
    """Make available every pending lot whose holding period is over (pending_until <= now).

    Set-based: one read of the due entries, then one executemany per kind of update.
    - The lot's expiry clock starts on the day it becomes available: with `config`, its
      expires_on is recomputed by the expiry rules from the local date of pending_until
      (without it, the expires_on the writer stored is kept).
    - A pending `cancel` (a refund inside the holding period) carries its lot's
      pending_until, so it becomes available with it and the two always net out.
    - The net points move from members.pending to members.balance, and a member with a
      clawback debt pays it from the newly available points at once.
    Idempotent: an activated entry has pending_until NULL and is not picked again.
    """
    if member_ids is not None and not member_ids:
        return ActivationResult(0, 0, 0)
    q = select(
        LedgerEntry.id, LedgerEntry.member_id, LedgerEntry.points, LedgerEntry.remaining,
        LedgerEntry.pending_until,
    ).where(LedgerEntry.pending_until.is_not(None), LedgerEntry.pending_until <= now)
    if member_ids is not None:
        q = q.where(LedgerEntry.member_id.in_(list(member_ids)))
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    rows = session.execute(q.order_by(LedgerEntry.id)).all()
    if not rows:
        return ActivationResult(0, 0, 0)
    tz = config.program.timezone if config is not None else "UTC"
    table = LedgerEntry.__table__
    lots = [r for r in rows if r.remaining is not None]
    others = [r for r in rows if r.remaining is None]
    if lots and config is not None:
        from loyaltyctl.rules.expiry import expiry_date
        from loyaltyctl.timeutil import local_date

        expires: dict[date, date | None] = {}
        params = []
        for r in lots:
            day = local_date(r.pending_until, tz)
            if day not in expires:
                expires[day] = expiry_date(day, config.expiry)
            params.append({"b_id": r.id, "b_exp": expires[day]})
        session.execute(
            update(table).where(table.c.id == bindparam("b_id"))
            .values(pending_until=None, expires_on=bindparam("b_exp")),
            params,
        )
    elif lots:
        session.execute(
            update(table).where(table.c.id == bindparam("b_id")).values(pending_until=None),
            [{"b_id": r.id} for r in lots],
        )
    if others:
        session.execute(
            update(table).where(table.c.id == bindparam("b_id")).values(pending_until=None),
            [{"b_id": r.id} for r in others],
        )
    totals: dict[int, int] = {}
    for r in rows:
        totals[r.member_id] = totals.get(r.member_id, 0) + int(r.points)
    mtable = Member.__table__
    session.execute(
        update(mtable).where(mtable.c.id == bindparam("b_mid")).values(
            balance=mtable.c.balance + bindparam("b_d"), pending=mtable.c.pending - bindparam("b_d")),
        [{"b_mid": m, "b_d": d} for m, d in totals.items()],
    )
    if config is not None:
        from loyaltyctl.timeutil import local_date

        today = local_date(now, tz)
    else:
        today = now.date()
    for member_id in debtors(session, totals.keys()):
        settle_debt(session=session, member_id=member_id, today=today)
    return ActivationResult(lots=len(lots), points=sum(totals.values()), members=len(totals))


def debtors(session: Session, member_ids: Iterable[int]) -> list[int]:
    """Which of `member_ids` owe clawback points (one query over the clawbacks, which are few)."""
    wanted = set(member_ids)
    if not wanted:
        return []
    used = (
        select(Allocation.debit_id, func.sum(Allocation.points).label("used"))
        .group_by(Allocation.debit_id)
        .subquery()
    )
    rows = session.execute(
        select(LedgerEntry.member_id)
        .outerjoin(used, used.c.debit_id == LedgerEntry.id)
        .where(
            LedgerEntry.kind == "clawback",
            LedgerEntry.pending_until.is_(None),
            -LedgerEntry.points > func.coalesce(used.c.used, 0),
        )
        .distinct()
    ).all()
    return sorted(r[0] for r in rows if r[0] in wanted)


# The expiry statements, as constants (no SQL is ever assembled from input). The run's due
# lots go to a temporary table keyed by (member_id, lot_id), so each new entry finds its
# member's lots by an index range. Both SQLite and PostgreSQL look a name up in the
# temporary schema first; only the drop names it, so it can never drop another table.
_RUN_COLUMNS = ("(member_id BIGINT NOT NULL, lot_id BIGINT NOT NULL, points BIGINT NOT NULL,"
                " PRIMARY KEY (member_id, lot_id))")
_RUN_CREATE = {
    False: text("CREATE TEMP TABLE expire_run " + _RUN_COLUMNS),
    # Dropped at commit at the latest.
    True: text("CREATE TEMP TABLE expire_run " + _RUN_COLUMNS + " ON COMMIT DROP"),
}
_RUN_ANALYZE = text("ANALYZE pg_temp.expire_run")
_RUN_DROP = {False: text("DROP TABLE IF EXISTS temp.expire_run"),
             True: text("DROP TABLE IF EXISTS pg_temp.expire_run")}
_DUE_LOTS = (" FROM ledger_entries WHERE remaining > 0"
             " AND pending_until IS NULL AND expires_on IS NOT NULL AND expires_on <= :as_of")
_DUE = ("INSERT INTO expire_run (member_id, lot_id, points) SELECT member_id, id, remaining"
        + _DUE_LOTS)
_BY_MEMBER = " AND member_id IN :mids"
# Keyed by only some members?
_ANY_DUE = {
    False: text("SELECT 1" + _DUE_LOTS + " LIMIT 1"),
    True: text("SELECT 1" + _DUE_LOTS + _BY_MEMBER + " LIMIT 1").bindparams(
        bindparam("mids", expanding=True)),
}
# Read in member order, so the rows land in the table's key one after another.
_BY_MEMBER_ORDER = " ORDER BY member_id, id"
# PostgreSQL locks the lots it reads, so a concurrent debit that expires or spends the same
# lot waits, and the lots this run closes are the ones it read.
_LOCK = " FOR UPDATE"
# Keyed by (only some members?, PostgreSQL?).
_EXPIRE_DUE = {
    (False, False): text(_DUE + _BY_MEMBER_ORDER),
    (False, True): text(_DUE + _BY_MEMBER_ORDER + _LOCK),
    (True, False): text(_DUE + _BY_MEMBER).bindparams(bindparam("mids", expanding=True)),
    (True, True): text(_DUE + _BY_MEMBER + _LOCK).bindparams(bindparam("mids", expanding=True)),
}
# One entry per member, written in member order.
_EXPIRE_ENTRIES = text(
    "INSERT INTO ledger_entries (member_id, kind, points, effective_at, ref, note, actor,"
    " created_at) SELECT member_id, 'expire', -SUM(points), :now, :token,"
    " CASE WHEN COUNT(*) = 1 THEN 'expired: 1 lot'"
    " ELSE 'expired: ' || CAST(COUNT(*) AS VARCHAR(20)) || ' lots' END, :actor, :now"
    " FROM expire_run GROUP BY member_id ORDER BY member_id")
# The run's token is unique, so its entries are found by the id range and the token alone
# (adding kind = 'expire' made SQLite walk every past expiry through the kind index).
_EXPIRE_ALLOCATE = text(
    "INSERT INTO allocations (member_id, debit_id, lot_id, points)"
    " SELECT r.member_id, e.id, r.lot_id, r.points FROM ledger_entries e JOIN expire_run r"
    " ON r.member_id = e.member_id WHERE e.id > :first_id AND e.ref = :token")
_EXPIRE_CLOSE_LOTS = text(
    "UPDATE ledger_entries SET remaining = 0 WHERE id IN (SELECT lot_id FROM expire_run)")
_EXPIRE_TOTAL = text("SELECT SUM(points) FROM expire_run")
# One statement for every member touched.
_EXPIRE_BALANCES = text(
    "UPDATE members SET balance = balance - (SELECT SUM(r.points) FROM expire_run r"
    " WHERE r.member_id = members.id) WHERE id IN (SELECT member_id FROM expire_run)")
# PostgreSQL, the nightly run: lock the members first, in id order, then their lots. A debit
# locks its member and then expires that member's due lots; locking all the lots first and
# the members only at the end (the balance update) deadlocks with a debit running meanwhile.
_EXPIRE_LOCK_MEMBERS = text(
    "SELECT id FROM members WHERE id IN (SELECT member_id FROM ledger_entries"
    " WHERE remaining > 0 AND pending_until IS NULL AND expires_on IS NOT NULL"
    " AND expires_on <= :as_of) ORDER BY id FOR UPDATE")
