"""Opening balances: points migrated from another system, as tagged `opening` lots.

`points import FILE` (columns member, points, expires_on, ref, optional note) writes one
`opening` lot per row: not a purchase (nothing is invented in `purchases`, so spend, tiers
and reports stay true), idempotent by `opening:<ref>`.

- expires_on: a date (in the program's calendar) after today; empty = the program's expiry
  rule counted from today; `never` = never expires.
- The member may be active or suspended (a suspended member still owns points); closed
  and merged members are rejected (import into the surviving member).
- A member who owes points (a clawback took the balance below zero) pays the debt from
  the new lot at once, as with any credit.

Streaming and set-based, batch by batch: the refs already imported in one query, members
resolved in one or two queries, lots inserted with one executemany, balances moved with one
statement. The whole import runs in a savepoint of the caller's transaction: all-or-nothing
unless on_error="skip"; a dry run does all the work and rolls it back.

Refs: the first valid row with a ref wins; a later identical copy is a duplicate (counted,
skipped), a later copy with different data is rejected; a ref imported by an earlier run is
"already imported".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlmodel import Session

from loyaltyctl.config import Config
from loyaltyctl.db.models import LedgerEntry, Member
from loyaltyctl.errors import InvalidInput
from loyaltyctl.services.csvio import (
    MAX_LISTED_ERRORS,
    Progress,
    Reject,
    Row,
    TableReader,
    abort_error,
)
from loyaltyctl.timeutil import local_date, utcnow

REQUIRED = ("member", "points", "expires_on", "ref")
OPTIONAL = ("note",)
IGNORED = ("row", "reason")
"""A rejects file (rows plus `row` and `reason`) can be fixed and imported as it is."""
COLUMNS = REQUIRED + OPTIONAL
_MEMBER, _POINTS, _EXPIRES, _REF, _NOTE = range(5)
KEY_PREFIX = "opening:"
MAX_POINTS = 10**12
DEFAULT_BATCH = 5_000



@dataclass
class OpeningSummary:
    rows: int = 0
    imported: int = 0
    points: int = 0
    members: int = 0
    debt_settled: int = 0
    """Points of the new lots that paid clawback debt at once."""
    already_imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    dry_run: bool = False
    errors: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "imported": self.imported, "points": self.points,
            "members": self.members, "debt_settled": self.debt_settled,
            "already_imported": self.already_imported, "duplicates": self.duplicates,
            "rejected": self.rejected, "dry_run": self.dry_run,
        }


@dataclass
class _Parsed:
    row: int
    values: tuple
    ref: str
    key: str
    points: int
    expires_on: date | None
    note: str | None
    member_id: int = 0


def import_opening_balances(
    *,
    session: Session,
    config: Config,
    reader: TableReader,
    now: datetime,
    actor: str,
    on_error: str = "abort",
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
    on_reject: Reject | None = None,
    progress: Progress | None = None,
) -> OpeningSummary:
    """Import every row of `reader` (an opened TableReader with COLUMNS).

    on_error="abort": any rejected row rolls everything back and raises InvalidInput listing
    the first rejected rows (exit 4). on_error="skip": rejected rows go to
    `on_reject(row, values, reason)` and the rest is imported. Never commits.
    """
    if on_error not in ("abort", "skip"):
        raise InvalidInput(f"--on-error: {on_error!r} is not abort or skip")
    job = _OpeningImport(session=session, config=config, now=now, actor=actor,
                         on_error=on_error, on_reject=on_reject)
    job.summary.dry_run = dry_run
    savepoint = session.begin_nested()
    try:
        for batch in reader.batches(batch_size):
            job.batch(batch)
            if progress is not None:
                progress(reader.bytes_read, job.summary.rows)
            if on_error == "abort" and len(job.summary.errors) >= MAX_LISTED_ERRORS:
                break
        job.summary.members = len(job.members_seen)
    except BaseException:
        savepoint.rollback()
        raise
    summary = job.summary
    if dry_run or (on_error == "abort" and summary.rejected):
        savepoint.rollback()
    else:
        savepoint.commit()
    if on_error == "abort" and summary.rejected:
        raise abort_error(reader.name, summary.rejected, summary.errors)
    return summary


class _OpeningImport:
    def __init__(self, *, session: Session, config: Config, now: datetime, actor: str,
                 on_error: str, on_reject: Reject | None) -> None:
        self.session = session
        self.config = config
        self.now = now
        self.actor = actor[:64]
        self.on_error = on_error
        self.on_reject = on_reject
        self.summary = OpeningSummary()
        self.today = local_date(now, config.program.timezone)
        self.default_expiry = _default_expiry(config, self.today)
        self.seen: dict[str, tuple] = {}
        """Refs written by this run: ref -> (member id, points, expires_on, note)."""
        self.members_seen: set[int] = set()

    def _flush_rejects(self, rejects: list) -> None:
        rejects.sort(key=lambda r: r[0])
        s = self.summary
        for row, values, reason in rejects:
            s.rejected += 1
            if len(s.errors) < MAX_LISTED_ERRORS:
                s.errors.append((row, reason))
            if self.on_reject is not None and self.on_error == "skip":
                self.on_reject(row, values, reason)

    def batch(self, rows: list[Row]) -> None:
        from loyaltyctl.services.members import resolve_members_bulk

        s = self.summary
        s.rows += len(rows)
        rejects: list = []

        # 1. refs, and which of them an earlier run imported.
        candidates = []
        for n, values, err in rows:
            if err is not None:
                rejects.append((n, values, err))
                continue
            ref = (values[_REF] or "").strip()
            if not ref:
                rejects.append((n, values, "ref: empty (every opening balance needs a reference, "
                                           "for example the old system's account id)"))
            elif len(ref) > 100:
                rejects.append((n, values, f"ref: {ref[:20]!r}... is longer than 100 characters"))
            else:
                candidates.append((n, values, ref))
        keys = {KEY_PREFIX + ref for _, _, ref in candidates if ref not in self.seen}
        existing = set()
        if keys:
            existing = {k for (k,) in self.session.execute(
                select(LedgerEntry.idem_key).where(LedgerEntry.idem_key.in_(keys))).all()}

        # 2. parse the new rows; resolve their members in one go.
        parsed: list[_Parsed] = []
        for n, values, ref in candidates:
            if ref not in self.seen and KEY_PREFIX + ref in existing:
                s.already_imported += 1
                continue
            p = self._parse(n, values, ref, rejects)
            if p is not None:
                parsed.append(p)
        found = resolve_members_bulk(
            session=self.session, keys={p.key for p in parsed},
            region=self.config.program.phone_region) if parsed else {}
        info: dict[int, tuple] = {}
        if found:
            q = select(Member.id, Member.code, Member.status, Member.merged_into_id,
                       Member.balance).where(Member.id.in_(sorted(set(found.values()))))
            if self.session.get_bind().dialect.name == "postgresql":
                q = q.order_by(Member.id).with_for_update()
            info = {r[0]: tuple(r[1:]) for r in self.session.execute(q).all()}

        # 3. check each row against its member and the refs seen so far.
        fresh: list[_Parsed] = []
        for p in parsed:
            mid = found.get(p.key)
            if mid is None:
                rejects.append((p.row, p.values, f"member: no member matches {p.key!r}"))
                continue
            code, status, merged, _balance = info[mid]
            if merged is not None:
                rejects.append((p.row, p.values, f"member {code} was merged into another "
                                                 "member; import into the surviving member"))
                continue
            if status == "closed":
                rejects.append((p.row, p.values, f"member {code} is closed"))
                continue
            p.member_id = mid
            fp = (mid, p.points, p.expires_on, p.note)
            first = self.seen.get(p.ref)
            if first is not None:
                if first == fp:
                    s.duplicates += 1
                else:
                    rejects.append((p.row, p.values, f"ref: {p.ref!r} appears earlier in the "
                                                     "file with different data"))
                continue
            self.seen[p.ref] = fp
            fresh.append(p)
        self._flush_rejects(rejects)
        if fresh:
            self._write(fresh)

    def _parse(self, n: int, values: tuple, ref: str, rejects: list) -> _Parsed | None:
        from loyaltyctl.normalize import clean_text, parse_date, parse_int

        key = (values[_MEMBER] or "").strip()
        if not key:
            rejects.append((n, values, "member: empty (give a member code, card, phone or e-mail)"))
            return None
        raw = (values[_POINTS] or "").strip()
        try:
            points = parse_int(raw)
        except ValueError as exc:
            rejects.append((n, values, f"points: {exc}"))
            return None
        if points <= 0:
            rejects.append((n, values, f"points: {raw!r} must be greater than zero "
                                       "(a member without points needs no opening balance)"))
            return None
        if points > MAX_POINTS:
            rejects.append((n, values, f"points: {raw!r} is implausibly large"))
            return None
        raw_exp = (values[_EXPIRES] or "").strip()
        if not raw_exp:
            expires_on = self.default_expiry
        elif raw_exp.lower() == "never":
            expires_on = None
        else:
            try:
                expires_on = parse_date(raw_exp, self.config.program.calendar)
            except ValueError as exc:
                rejects.append((n, values, f"expires_on: {exc} (or empty for the program's "
                                           "rule, or never)"))
                return None
            if expires_on <= self.today:
                rejects.append((n, values, f"expires_on: {raw_exp} is not after today "
                                           f"({self.today}); the points would expire at once"))
                return None
        try:
            note = clean_text(values[_NOTE], max_len=500, field="note")
        except ValueError as exc:
            rejects.append((n, values, f"note: {exc}"))
            return None
        return _Parsed(n, values, ref, key, points, expires_on, note or None)

    def _write(self, fresh: list[_Parsed]) -> None:
        from loyaltyctl.services import ledger

        s = self.summary
        stamp = utcnow()
        table = LedgerEntry.__table__
        self.session.execute(insert(table), [{
            "member_id": p.member_id, "kind": "opening", "points": p.points,
            "effective_at": self.now, "expires_on": p.expires_on, "remaining": p.points,
            "ref": p.ref, "idem_key": KEY_PREFIX + p.ref, "actor": self.actor,
            "note": p.note or "opening balance", "created_at": stamp,
        } for p in fresh])
        deltas: dict[int, int] = {}
        for p in fresh:
            deltas[p.member_id] = deltas.get(p.member_id, 0) + p.points
        mt = Member.__table__
        self.session.execute(
            update(mt).where(mt.c.id == bindparam("b_mid"))
            .values(balance=mt.c.balance + bindparam("b_d")),
            [{"b_mid": m, "b_d": d} for m, d in deltas.items()])
        # Members below zero (clawback debt) pay it from the new lots at once.
        for mid in ledger.debtors(self.session, deltas):
            s.debt_settled += ledger.settle_debt(session=self.session, member_id=mid,
                                                     today=self.today)
        s.imported += len(fresh)
        s.points += sum(p.points for p in fresh)
        self.members_seen.update(deltas)


def _default_expiry(config: Config, today: date) -> date | None:
    from loyaltyctl.rules.expiry import expiry_date

    return expiry_date(today, config.expiry)
