"""Bonuses: signup, birthday, referral and event points.

Every bonus is a lot in the ledger with an idempotency key, so granting twice is a no-op:
- signup: `signup:<member id>`;
- birthday: `birthday:<member id>:<year of the birthday>` (the Jalali year with the Jalali
  calendar), so a member gets one per year however often the job runs;
- referral: `referral:referrer:<referee id>` and `referral:referee:<referee id>`;
- event: `event:<name>:<ref>`.
Batch grants (signup for an import, birthdays, referrals for a purchase batch) are
set-based: one query for the keys already granted, one executemany for the lots, one
executemany for the balances. Functions take the caller's session and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, extract, func, insert, select, text
from sqlmodel import Session

from loyaltyctl.config import Config
from loyaltyctl.db.models import LedgerEntry, Member, Purchase
from loyaltyctl.errors import InvalidInput, Refused
from loyaltyctl.rules.expiry import expiry_date
from loyaltyctl.services import ledger
from loyaltyctl.services.tiers import chunks
from loyaltyctl.timeutil import local_date, local_midnight_utc, utcnow

_m = Member.__table__
_p = Purchase.__table__
_le = LedgerEntry.__table__


# -- set-based credit ------------------------------------------------------------------------


@dataclass
class Grant:
    member_id: int
    kind: str
    points: int
    idem_key: str
    note: str | None = None
    ref: str | None = None
    purchase_id: int | None = None
    item_code: str | None = None


def existing_keys(session: Session, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    q = select(_le.c.idem_key).where(_le.c.idem_key.in_(bindparam("keys", expanding=True)))
    for part in chunks(list(keys)):
        found.update(r[0] for r in session.execute(q, {"keys": part}))
    return found


def credit_many(*, session: Session, config: Config, grants: Sequence[Grant], now: datetime,
                actor: str) -> list[Grant]:
    """Write the grants whose key is not in the ledger yet; returns those written.

    The set-based counterpart of `ledger.credit` for bonus lots: one executemany for the
    lots and one for the cached balances; members with clawback debt then pay it from the
    new lots through `ledger.settle_debt`, as `ledger.credit` would.
    """
    unique = list({g.idem_key: g for g in grants if g.points > 0}.values())
    if not unique:
        return []
    done = existing_keys(session, [g.idem_key for g in unique])
    todo = [g for g in unique if g.idem_key not in done]
    if not todo:
        return []
    tz = config.program.timezone
    today = local_date(now, tz)
    expires_on = expiry_date(today, config.expiry)
    stamp = utcnow()
    session.execute(insert(_le), [
        {"member_id": g.member_id, "kind": g.kind, "points": g.points, "effective_at": now,
         "expires_on": expires_on, "remaining": g.points, "pending_until": None,
         "purchase_id": g.purchase_id, "campaign": None, "item_code": g.item_code,
         "ref": g.ref, "idem_key": g.idem_key, "source_id": None, "actor": actor[:64],
         "note": g.note, "created_at": stamp}
        for g in todo
    ])
    per_member: dict[int, int] = {}
    for g in todo:
        per_member[g.member_id] = per_member.get(g.member_id, 0) + g.points
    session.execute(
        text("UPDATE members SET balance = balance + :d WHERE id = :m"),
        [{"d": d, "m": m} for m, d in per_member.items()],
    )
    in_debt = select(_le.c.member_id).where(
        _le.c.kind == "clawback", _le.c.member_id.in_(bindparam("mids", expanding=True))
    ).distinct()
    for part in chunks(sorted(per_member)):
        for (mid,) in session.execute(in_debt, {"mids": part}).all():
            ledger.settle_debt(session=session, member_id=mid, today=today)
    return todo


def _active_ids(session: Session, member_ids: Sequence[int]) -> list[int]:
    q = select(_m.c.id).where(_m.c.id.in_(bindparam("ids", expanding=True)),
                              _m.c.status == "active", _m.c.merged_into_id.is_(None))
    out: list[int] = []
    for part in chunks(member_ids):
        out.extend(r[0] for r in session.execute(q, {"ids": part}))
    return out


# -- signup ----------------------------------------------------------------------------------


def grant_signup(*, session: Session, config: Config, member_ids: Sequence[int], now: datetime,
                 actor: str) -> list[Grant]:
    """The signup bonus for newly enrolled (active) members, once each."""
    points = config.bonuses.signup
    if points <= 0 or not member_ids:
        return []
    grants = [Grant(mid, "signup", points, f"signup:{mid}", note="signup bonus")
              for mid in _active_ids(session, member_ids)]
    return credit_many(session=session, config=config, grants=grants, now=now, actor=actor)


# -- birthdays -------------------------------------------------------------------------------


def birthday_on(birth: date, year: int, calendar: str) -> date:
    """The (Gregorian) day a member born on `birth` celebrates in calendar year `year`.

    Gregorian: 29 February is celebrated on 28 February in common years. Jalali: the
    birthday keeps its Jalali month and day; 30 Esfand is 29 Esfand in common years.
    """
    from loyaltyctl.services.periods import birthday_in_year

    return birthday_in_year(birth, year, calendar)


def calendar_year(d: date, calendar: str) -> int:
    if calendar == "jalali":
        import jdatetime

        return jdatetime.date.fromgregorian(date=d).year
    return d.year


def birthdays_between(birth: date, since: date, until: date, calendar: str) -> list[tuple[int, date]]:
    """(calendar year, day) of each birthday of `birth` within [since, until]."""
    out = []
    for year in range(calendar_year(since, calendar), calendar_year(until, calendar) + 1):
        try:
            day = birthday_on(birth, year, calendar)
        except ValueError:  # a year outside the calendar's range
            continue
        if since <= day <= until and day > birth:
            out.append((year, day))
    return out


@dataclass
class BirthdayResult:
    since: date
    until: date
    granted: int = 0
    points: int = 0
    already: int = 0
    members: list[str] = field(default_factory=list)


def grant_birthdays(*, session: Session, config: Config, since: date, until: date, now: datetime,
                    actor: str) -> BirthdayResult:
    """The birthday bonus for every active member with a birthday in [since, until] (local days).

    One bonus per member per (calendar) year; a birthday before the member joined earns
    nothing. Candidates are narrowed in SQL by month and day, then decided exactly here.
    """
    if until < since:
        raise InvalidInput(f"--since: {since.isoformat()} is after the as-of day {until.isoformat()}")
    result = BirthdayResult(since, until)
    points = config.bonuses.birthday
    if points <= 0:
        return result
    tz, cal = config.program.timezone, config.program.calendar
    q = select(_m.c.id, _m.c.code, _m.c.birth_date, _m.c.joined_at).where(
        _m.c.status == "active", _m.c.merged_into_id.is_(None), _m.c.birth_date.is_not(None),
        _m.c.joined_at <= now,
    )
    days = (until - since).days + 1
    if days < 366:
        from loyaltyctl.services.periods import birthday_candidates

        month_days = sorted(m * 100 + d for m, d in birthday_candidates(since, days))
        q = q.where((extract("month", _m.c.birth_date) * 100 + extract("day", _m.c.birth_date))
                    .in_(month_days))
    grants: list[Grant] = []
    codes: dict[int, str] = {}
    for mid, code, birth, joined_at in session.execute(q):
        if isinstance(birth, str):  # pragma: no cover - SQLite driver returns date objects
            birth = date.fromisoformat(birth)
        joined = local_date(joined_at, tz)
        for year, day in birthdays_between(birth, max(since, joined), until, cal):
            codes[mid] = code
            grants.append(Grant(mid, "birthday", points, f"birthday:{mid}:{year}",
                                ref=day.isoformat(), note=f"birthday {year}"))
    written = credit_many(session=session, config=config, grants=grants, now=now, actor=actor)
    result.granted = len(written)
    result.points = sum(g.points for g in written)
    result.already = len(grants) - len(written)
    result.members = sorted({codes[g.member_id] for g in written})
    return result


# -- referrals -------------------------------------------------------------------------------


def referral_keys(referee_id: int) -> tuple[str, str]:
    return f"referral:referrer:{referee_id}", f"referral:referee:{referee_id}"


_CYCLE_SQL = """
WITH RECURSIVE chain(start_id, node_id, depth) AS (
    SELECT id, referred_by_id, 1 FROM members
    WHERE id IN :ids AND referred_by_id IS NOT NULL
    UNION ALL
    SELECT c.start_id, m.referred_by_id, c.depth + 1
    FROM chain c JOIN members m ON m.id = c.node_id
    WHERE m.referred_by_id IS NOT NULL AND c.node_id <> c.start_id AND c.depth < 200
)
SELECT DISTINCT start_id FROM chain WHERE node_id = start_id
"""


def in_referral_cycle(session: Session, member_ids: Sequence[int]) -> set[int]:
    """Members among `member_ids` who referred themselves, directly or through others."""
    stmt = text(_CYCLE_SQL).bindparams(bindparam("ids", expanding=True))
    out: set[int] = set()
    for part in chunks(member_ids):
        out.update(r[0] for r in session.execute(stmt, {"ids": part}))
    return out


@dataclass(frozen=True)
class ReferralPair:
    referee_id: int
    referrer_id: int
    purchase_id: int | None


def _pair_grants(session: Session, config: Config, pairs: Sequence[ReferralPair]) -> list[Grant]:
    """The grants a set of triggered referrals earns: each side only to an active member,
    nothing for a self-referral or a referral cycle."""
    ref = config.bonuses.referral
    if not pairs or (ref.referrer_points <= 0 and ref.referee_points <= 0):
        return []
    pairs = [p for p in pairs if p.referee_id != p.referrer_id]
    cyclic = in_referral_cycle(session, [p.referee_id for p in pairs])
    pairs = [p for p in pairs if p.referee_id not in cyclic]
    ids = {p.referee_id for p in pairs} | {p.referrer_id for p in pairs}
    info: dict[int, tuple[str, str]] = {}
    q = select(_m.c.id, _m.c.code, _m.c.status, _m.c.merged_into_id).where(
        _m.c.id.in_(bindparam("ids", expanding=True)))
    for part in chunks(sorted(ids)):
        for mid, code, status, merged in session.execute(q, {"ids": part}):
            info[mid] = (code, "merged" if merged else status)
    grants = []
    for p in pairs:
        referee_code, referee_status = info.get(p.referee_id, ("?", "missing"))
        referrer_code, referrer_status = info.get(p.referrer_id, ("?", "missing"))
        k_referrer, k_referee = referral_keys(p.referee_id)
        if ref.referrer_points > 0 and referrer_status == "active":
            grants.append(Grant(p.referrer_id, "referral", ref.referrer_points, k_referrer,
                                note=f"referred {referee_code}", ref=referee_code,
                                purchase_id=p.purchase_id))
        if ref.referee_points > 0 and referee_status == "active":
            grants.append(Grant(p.referee_id, "referral", ref.referee_points, k_referee,
                                note=f"referred by {referrer_code}", ref=referrer_code,
                                purchase_id=p.purchase_id))
    return grants


def grant_referrals_on_signup(*, session: Session, config: Config, member_ids: Sequence[int],
                              now: datetime, actor: str) -> list[Grant]:
    """trigger = "signup": referral bonuses for newly enrolled members who were referred."""
    if config.bonuses.referral.trigger != "signup" or not member_ids:
        return []
    pairs: list[ReferralPair] = []
    q = select(_m.c.id, _m.c.referred_by_id).where(
        _m.c.id.in_(bindparam("ids", expanding=True)), _m.c.referred_by_id.is_not(None))
    for part in chunks(member_ids):
        pairs.extend(ReferralPair(mid, rid, None) for mid, rid in session.execute(q, {"ids": part}))
    grants = _pair_grants(session, config, pairs)
    return credit_many(session=session, config=config, grants=grants, now=now, actor=actor)


def _first_purchase_filter():  # noqa: ANN202
    """No earlier purchase of the same member: `_p` is that member's first purchase."""
    q = _p.alias("earlier")
    return ~(
        select(q.c.id).where(
            q.c.member_id == _p.c.member_id,
            (q.c.occurred_at < _p.c.occurred_at)
            | ((q.c.occurred_at == _p.c.occurred_at) & (q.c.id < _p.c.id)),
        ).exists()
    )


def grant_referrals_on_purchases(*, session: Session, config: Config, purchase_ids: Sequence[int],
                                 now: datetime, actor: str) -> list[Grant]:
    """trigger = "first_purchase": referral bonuses for referees whose first purchase is
    among `purchase_ids`; the entries carry that purchase's id."""
    if config.bonuses.referral.trigger != "first_purchase" or not purchase_ids:
        return []
    q = (
        select(_p.c.id, _p.c.member_id, _m.c.referred_by_id)
        .select_from(_p.join(_m, _m.c.id == _p.c.member_id))
        .where(_p.c.id.in_(bindparam("pids", expanding=True)), _m.c.referred_by_id.is_not(None),
               _first_purchase_filter())
    )
    pairs: list[ReferralPair] = []
    for part in chunks(purchase_ids):
        pairs.extend(ReferralPair(mid, rid, pid) for pid, mid, rid in session.execute(q, {"pids": part}))
    grants = _pair_grants(session, config, pairs)
    return credit_many(session=session, config=config, grants=grants, now=now, actor=actor)


def referral_status(*, session: Session, config: Config, member: Member) -> list[dict[str, Any]]:
    """Both bonuses of every referral `member` takes part in (as referee, then as referrer of
    each referee), with their state: granted, due (trigger met, not granted yet), waiting
    (no first purchase yet) or not eligible (and why)."""
    ref = config.bonuses.referral
    referee_ids = [r[0] for r in session.execute(
        select(_m.c.id).where(_m.c.referred_by_id == member.id).order_by(_m.c.id))]
    if member.referred_by_id is not None:
        referee_ids.insert(0, member.id)
    if not referee_ids:
        return []
    people = {r[0]: r for r in session.execute(
        select(_m.c.id, _m.c.code, _m.c.status, _m.c.merged_into_id, _m.c.referred_by_id)
        .where(_m.c.id.in_(set(referee_ids) | {member.id, member.referred_by_id or member.id})))}
    firsts = dict(session.execute(
        select(_p.c.member_id, _p.c.id).where(_p.c.member_id.in_(referee_ids), _first_purchase_filter())
    ).all())
    keys = [k for rid in referee_ids for k in referral_keys(rid)]
    granted = {r[0]: r for r in session.execute(
        select(_le.c.idem_key, _le.c.points, _le.c.effective_at, _le.c.purchase_id)
        .where(_le.c.idem_key.in_(keys)))}
    cyclic = in_referral_cycle(session, referee_ids)
    rows = []
    for rid in referee_ids:
        referee = people[rid]
        referrer = people.get(referee[4])
        if referrer is None:  # pragma: no cover - foreign key
            continue
        trigger_purchase = firsts.get(rid)
        for role, key, points, who in (
            ("referrer", referral_keys(rid)[0], ref.referrer_points, referrer),
            ("referee", referral_keys(rid)[1], ref.referee_points, referee),
        ):
            row = {"role": role, "member": who[1], "referee": referee[1], "referrer": referrer[1],
                   "points": points, "status": "", "granted_at": None, "purchase_id": None,
                   "_key": key, "_member_id": who[0], "_referee_id": rid}
            if key in granted:
                g = granted[key]
                row.update(status="granted", points=int(g[1]), granted_at=g[2], purchase_id=g[3])
            elif rid == referrer[0] or rid in cyclic:
                row["status"] = "not eligible: referral cycle"
            elif points <= 0:
                row["status"] = "not eligible: no points for this side in the program file"
            elif who[3] is not None or who[2] != "active":
                row["status"] = f"not eligible: {who[1]} is {'merged' if who[3] else who[2]}"
            elif ref.trigger == "first_purchase" and trigger_purchase is None:
                row["status"] = f"waiting for {referee[1]}'s first purchase"
            else:
                row.update(status="due", purchase_id=trigger_purchase if ref.trigger == "first_purchase" else None)
            rows.append(row)
    return rows


def grant_due_referrals(*, session: Session, config: Config, member: Member, now: datetime,
                        actor: str) -> list[dict[str, Any]]:
    """Grant every referral bonus `referral_status` shows as due; returns the status rows
    with the granted ones marked "granted now"."""
    rows = referral_status(session=session, config=config, member=member)
    due = [r for r in rows if r["status"] == "due"]
    grants = [Grant(r["_member_id"], "referral", r["points"], r["_key"],
                    note=(f"referred {r['referee']}" if r["role"] == "referrer"
                          else f"referred by {r['referrer']}"),
                    ref=r["referee"] if r["role"] == "referrer" else r["referrer"],
                    purchase_id=r["purchase_id"]) for r in due]
    written = {g.idem_key for g in credit_many(session=session, config=config, grants=grants,
                                              now=now, actor=actor)}
    for r in rows:
        if r["_key"] in written:
            r["status"] = "granted now"
            r["granted_at"] = now
    return rows


# -- events ----------------------------------------------------------------------------------


def period_start(period: str, today: date, calendar: str) -> date | None:
    """First local day of the day / week / month / year containing `today` (None: ever).

    Weeks start on Monday, or on Saturday with the Jalali calendar; months and years are
    Jalali ones with the Jalali calendar.
    """
    if period == "ever":
        return None
    if period == "day":
        return today
    if period == "week":
        first_weekday = 5 if calendar == "jalali" else 0  # Saturday / Monday
        return today - timedelta(days=(today.weekday() - first_weekday) % 7)
    if calendar == "jalali":
        import jdatetime

        j = jdatetime.date.fromgregorian(date=today)
        return jdatetime.date(j.year, j.month if period == "month" else 1, 1).togregorian()
    return today.replace(day=1) if period == "month" else today.replace(month=1, day=1)


@dataclass(frozen=True)
class EventResult:
    entry_id: int
    member: str
    event: str
    points: int
    ref: str
    already: bool
    count_in_period: int
    max_per_period: int
    period: str
    expires_on: date | None
    balance: int


def grant_event(*, session: Session, config: Config, name: str, member: Member, ref: str,
                now: datetime, actor: str) -> EventResult:
    """Points for a behaviour (`[events.NAME]`), at most `max_per_period` per member per
    period (counted from the ledger); the same ref twice is a no-op."""
    event = config.events.get(name)
    if event is None:
        known = ", ".join(sorted(config.events)) or "none are configured"
        raise InvalidInput(f"NAME: unknown event {name!r} (events: {known}); "
                           "events are defined under [events.NAME] in the program file")
    ref = (ref or "").strip()
    if not ref or len(ref) > 100:
        raise InvalidInput("--ref: an event needs a reference of 1 to 100 characters")
    key = f"event:{name}:{ref}"
    member = ledger.lock_member(session, member.id)
    existing = ledger.entry_by_key(session, key)
    tz, cal = config.program.timezone, config.program.calendar
    today = local_date(now, tz)
    start_day = period_start(event.period, today, cal)
    count_q = select(func.count()).select_from(_le).where(
        _le.c.member_id == member.id, _le.c.kind == "event", _le.c.item_code == name)
    if start_day is not None:
        count_q = count_q.where(_le.c.effective_at >= local_midnight_utc(start_day, tz),
                                _le.c.effective_at <= now)
    if existing is not None:
        if existing.member_id != member.id:
            other = session.get(Member, existing.member_id)
            raise Refused(f"--ref: {ref!r} was already used for {name!r} by member "
                          f"{other.code if other else existing.member_id}; nothing was granted",
                          hint="each event occurrence needs its own reference")
        return EventResult(existing.id, member.code, name, existing.points, ref, True,
                           int(session.execute(count_q).scalar() or 0), event.max_per_period,
                           event.period, existing.expires_on, member.balance)
    from loyaltyctl.services.members import ensure_active

    ensure_active(member)
    count = int(session.execute(count_q).scalar() or 0)
    if count >= event.max_per_period:
        span = "ever" if event.period == "ever" else f"this {event.period}"
        raise Refused(
            f"member {member.code} already has {count} {name!r} bonus(es) {span} "
            f"(max {event.max_per_period}); nothing was granted")
    expires_on = expiry_date(today, config.expiry)
    entry = ledger.credit(
        session=session, member_id=member.id, kind="event", points=event.points,
        effective_at=now, expires_on=expires_on, actor=actor, idem_key=key, ref=ref,
        item_code=name, note=event.name, today=today,
    )
    session.refresh(member)
    return EventResult(entry.id, member.code, name, event.points, ref, False, count + 1,
                       event.max_per_period, event.period, expires_on, member.balance)
