"""RFM per member (recency, frequency, monetary), quintile scores, segments, historical value.

Definitions (the BTYD / Lifetimes conventions, so that `reports clv` can fit on them):
- A purchase counts with its net amount (amount - refunded_amount); a purchase refunded in
  full (net 0) does not count at all.
- Purchases are grouped by member and LOCAL calendar day (the program's timezone): several
  purchases on one day are one purchase day whose total is their sum.
- purchase_days: distinct purchase days; frequency = purchase_days - 1 (repeat days).
- recency: days from the first to the last purchase day; age (T): days from the first
  purchase day to the reference day (the as-of date, or the end of the period if earlier);
  days_since_last: from the last purchase day to the reference day.
- monetary: mean of the day totals over the repeat days (the first day excluded), 0 when
  frequency is 0; total_spend: the sum of all day totals.

The per-day totals and per-member aggregates are one set-based SQL statement (identical on
SQLite and PostgreSQL); scores and segments are computed here over one row per member.

Local days in SQL: the stored times are naive UTC. We compute in Python the UTC offset of
the program's zone over the range the purchases span, as a list of segments
[(from_utc, offset_seconds)] split at the zone's exact transition instants (found by
scanning the zone every 6 hours and bisecting to the second), and shift each timestamp by
the offset of its segment (a CASE over the transition instants when there is more than one
segment) before taking its date. A fixed-offset zone (UTC, Asia/Tehran since 2022) is one
segment and one constant shift; a zone with daylight saving time gets two more branches per
year. This is exact for every zone, on both databases.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlmodel import Session

QUINTILES = 5


# -- local days in SQL ---------------------------------------------------------------------


def utc_offset_segments(tz: str, lo: datetime, hi: datetime) -> list[tuple[datetime | None, int]]:
    """The zone's UTC offset (seconds) over [lo, hi] (naive UTC): [(from, offset), ...].

    The first segment's `from` is None (it applies before the first transition).
    """
    from loyaltyctl.timeutil import zone

    z = zone(tz)

    def offset(ts: int) -> int:
        off = datetime.fromtimestamp(ts, z).utcoffset()
        return int(off.total_seconds()) if off is not None else 0

    start = int(lo.replace(tzinfo=UTC).timestamp())
    stop = int(hi.replace(tzinfo=UTC).timestamp()) + 1
    current = offset(start)
    segments: list[tuple[datetime | None, int]] = [(None, current)]
    step = 6 * 3600  # no zone changes its offset twice within six hours
    t = start
    while t < stop:
        nxt = min(t + step, stop)
        new = offset(nxt)
        if new != current:
            a, b = t, nxt  # offset(a) == current, offset(b) == new: the change is in (a, b]
            while b - a > 1:
                mid = (a + b) // 2
                if offset(mid) == current:
                    a = mid
                else:
                    b = mid
            segments.append((datetime.fromtimestamp(b, UTC).replace(tzinfo=None), new))
            current = new
        t = nxt
    return segments


def local_day_expr(column: Any, segments: Sequence[tuple[datetime | None, int]], dialect: str) -> Any:
    """A SQL expression for the local calendar date of naive-UTC `column`."""
    from sqlalchemy import Date, Interval, case, cast, func, literal

    if dialect == "sqlite":
        def shift(seconds: int) -> Any:
            return literal(f"{seconds:+d} seconds")
    else:
        def shift(seconds: int) -> Any:
            return literal(timedelta(seconds=seconds), Interval)

    # Branch i applies from segments[i] up to segments[i + 1]: WHEN column < next start.
    if len(segments) == 1:
        offset = shift(segments[0][1])
    else:
        whens = [(column < segments[i + 1][0], shift(segments[i][1]))
                 for i in range(len(segments) - 1)]
        offset = case(*whens, else_=shift(segments[-1][1]))
    if dialect == "sqlite":
        return func.date(column, offset)
    return cast(column + offset, Date)


# -- per-member rows -----------------------------------------------------------------------


@dataclass(frozen=True)
class MemberRfm:
    member_id: int
    code: str
    name: str
    first_purchase: date
    last_purchase: date
    purchase_days: int
    frequency: int
    recency: int
    age: int
    days_since_last: int
    repeat_spend: int
    total_spend: int
    r_score: int = 0
    f_score: int = 0
    m_score: int = 0
    segment: str = ""

    @property
    def monetary(self) -> float:
        """Mean repeat-day total (exact, for ranking and models); 0 without repeat days."""
        return self.repeat_spend / self.frequency if self.frequency else 0.0

    @property
    def monetary_minor(self) -> int:
        """The monetary value rounded half up to whole minor units, for display."""
        if not self.frequency:
            return 0
        q, r = divmod(self.repeat_spend, self.frequency)
        return q + (1 if 2 * r >= self.frequency else 0)

    @property
    def rfm_score(self) -> str:
        return f"{self.r_score}{self.f_score}{self.m_score}"


def _as_date(v: Any) -> date:
    return date.fromisoformat(v) if isinstance(v, str) else v


def member_rfm(
    *,
    session: Session,
    tz: str,
    reference_day: date,
    start: datetime | None,
    end: datetime,
) -> list[MemberRfm]:
    """RFM rows of every member with a counting purchase in [start, end) (naive UTC),
    scored and segmented, ordered by member id. `reference_day` is the local day that age
    and days-since-last are measured to."""
    from sqlalchemy import and_, case, func, select

    from loyaltyctl.db.models import Member, Purchase

    P = Purchase.__table__.c
    net = P.amount - P.refunded_amount
    window = [P.occurred_at < end, net > 0]
    if start is not None:
        window.append(P.occurred_at >= start)
    lo, hi = session.execute(select(func.min(P.occurred_at), func.max(P.occurred_at))
                             .where(and_(*window))).one()
    if lo is None:
        return []
    dialect = session.get_bind().dialect.name
    segments = utc_offset_segments(tz, lo, hi)
    day = local_day_expr(P.occurred_at, segments, dialect)

    bought = select(P.member_id, day.label("day"), net.label("net")).where(and_(*window)).cte("bought")
    days = (select(bought.c.member_id, bought.c.day, func.sum(bought.c.net).label("total"))
            .group_by(bought.c.member_id, bought.c.day)
            .having(func.sum(bought.c.net) > 0)
            .cte("days"))
    firsts = select(days.c.member_id, days.c.day, days.c.total,
                    func.min(days.c.day).over(partition_by=days.c.member_id).label("first_day")
                    ).cte("firsts")
    M = Member.__table__.c
    q = (select(
            firsts.c.member_id, M.code, M.name,
            func.min(firsts.c.day), func.max(firsts.c.day), func.count(),
            func.sum(firsts.c.total),
            func.sum(case((firsts.c.day > firsts.c.first_day, firsts.c.total), else_=0)))
         .join(Member, M.id == firsts.c.member_id)
         .group_by(firsts.c.member_id, M.code, M.name)
         .order_by(firsts.c.member_id))
    rows: list[MemberRfm] = []
    for mid, code, name, first, last, n_days, total, repeat in session.execute(q):
        first, last = _as_date(first), _as_date(last)
        rows.append(MemberRfm(
            member_id=mid, code=code, name=name, first_purchase=first, last_purchase=last,
            purchase_days=int(n_days), frequency=int(n_days) - 1,
            recency=(last - first).days, age=(reference_day - first).days,
            days_since_last=(reference_day - last).days,
            repeat_spend=int(repeat), total_spend=int(total),
        ))
    return score(rows)


# -- scores and segments -------------------------------------------------------------------


def ntile(position: int, count: int, buckets: int = QUINTILES) -> int:
    """SQL NTILE(buckets) of the row at 0-based `position` among `count` ordered rows.

    Buckets get count // buckets rows each, and the first count % buckets buckets one more;
    with fewer rows than buckets, row i is in bucket i + 1.
    """
    size, extra = divmod(count, buckets)
    big = extra * (size + 1)
    if position < big:
        return position // (size + 1) + 1
    return extra + (position - big) // size + 1


def _scores(rows: Sequence[MemberRfm], key: Callable[[MemberRfm], Any]) -> dict[int, int]:
    ordered = sorted(rows, key=lambda r: (key(r), r.member_id))
    return {r.member_id: ntile(i, len(ordered)) for i, r in enumerate(ordered)}


# (segment, rule in words, predicate on (R, F, M)); the first rule that matches wins, and
# the last one catches everything, so every score triple has exactly one segment.
SEGMENT_RULES: tuple[tuple[str, str, Callable[[int, int, int], bool]], ...] = (
    ("Champions", "R>=4, F>=4, M>=4", lambda r, f, m: r >= 4 and f >= 4 and m >= 4),
    ("Loyal", "R>=3, F>=4", lambda r, f, m: r >= 3 and f >= 4),
    ("Can't lose them", "R<=2, F>=4, M>=4", lambda r, f, m: r <= 2 and f >= 4 and m >= 4),
    ("At risk", "R<=2, F>=3", lambda r, f, m: r <= 2 and f >= 3),
    ("New", "R>=4, F=1", lambda r, f, m: r >= 4 and f == 1),
    ("Potential loyalist", "R>=3, F>=2", lambda r, f, m: r >= 3 and f >= 2),
    ("Hibernating", "R=3 (F=1), or R=2 and F=2", lambda r, f, m: r == 3 or (r == 2 and f == 2)),
    ("Lost", "everyone else: R<=2, F<=2", lambda r, f, m: True),
)
SEGMENTS = tuple(s[0] for s in SEGMENT_RULES)


def segment_of(r: int, f: int, m: int) -> str:
    for name, _, rule in SEGMENT_RULES:
        if rule(r, f, m):
            return name
    raise AssertionError("the last segment rule matches everything")  # pragma: no cover


def score(rows: Sequence[MemberRfm]) -> list[MemberRfm]:
    """Quintile scores 1-5 and the segment of each row.

    Each score ranks the members from worst to best and cuts the ranking with NTILE(5):
    R by days since the last purchase, most days first (fewest days = 5); F by frequency;
    M by monetary. Ties are broken by member id, lower id first (lower score), so the
    same data always gives the same scores on every database.
    """
    r = _scores(rows, lambda x: -x.days_since_last)
    f = _scores(rows, lambda x: x.frequency)
    m = _scores(rows, lambda x: x.monetary)
    return [replace(x, r_score=r[x.member_id], f_score=f[x.member_id], m_score=m[x.member_id],
                    segment=segment_of(r[x.member_id], f[x.member_id], m[x.member_id]))
            for x in rows]


def segment_summary(rows: Sequence[MemberRfm]) -> list[dict[str, Any]]:
    """Members, share, spend and mean recency/frequency per segment, in SEGMENTS order."""
    total = len(rows)
    out = []
    for name, rule, _ in SEGMENT_RULES:
        mine = [r for r in rows if r.segment == name]
        n = len(mine)
        out.append({
            "segment": name,
            "rule": rule,
            "members": n,
            "share": round(n / total, 4) if total else 0.0,
            "total_spend": sum(r.total_spend for r in mine),
            "avg_days_since_last": round(sum(r.days_since_last for r in mine) / n, 1) if n else None,
            "avg_frequency": round(sum(r.frequency for r in mine) / n, 2) if n else None,
        })
    return out


# -- historical value (for CLV) ------------------------------------------------------------


def points_cost(*, session: Session, member_ids: Sequence[int], before: datetime) -> dict[int, int]:
    """Points each member was given and kept, before `before`: every ledger entry except
    redemptions and their reversals, i.e. credits net of clawbacks, cancellations and
    expiries, which equals what they redeemed plus what they still hold (a liability)."""
    from sqlalchemy import func, select

    from loyaltyctl.db.models import LedgerEntry

    if not member_ids:
        return {}
    L = LedgerEntry.__table__.c
    q = (select(L.member_id, func.sum(L.points))
         .where(L.effective_at < before, L.kind.not_in(("redeem", "reversal")))
         .group_by(L.member_id))
    wanted = set(member_ids)
    return {mid: int(pts) for mid, pts in session.execute(q) if mid in wanted}
