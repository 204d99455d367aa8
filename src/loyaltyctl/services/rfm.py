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

The per-member aggregates are one set-based SQL statement (the same shape on SQLite and
PostgreSQL): one pass over the purchases in the period, grouped by member only, so the
covering `(member_id, occurred_at, amount, refunded_amount)` index delivers it in order and
nothing is sorted: purchase days are `count(DISTINCT local day)`, the first and last days
are the local days of the member's first and last purchase instants, and the first day's
total (for `monetary`) comes from a correlated look-up of the few purchases of that day
through the same index. Scores and segments are computed here over one row per member:
three stable sorts of row indexes.

Local days in SQL: the stored times are naive UTC. We compute in Python the UTC offset of
the program's zone over the range the purchases span, as a list of segments
[(from_utc, offset_seconds)] split at the zone's exact transition instants (found by
scanning the zone every 6 hours and bisecting to the second), and shift each timestamp by
the offset of its segment (a CASE over the transition instants when there is more than one
segment) before taking its date. A fixed-offset zone (UTC, Asia/Tehran since 2022) is one
segment and one constant shift; a zone with daylight saving time gets two more branches per
year. This is exact for every zone, on both databases. On SQLite, where a DateTime is the
text 'YYYY-MM-DD HH:MM:SS.ffffff', the shift is done on the text without parsing it: the
local date is the UTC date, or the day after when the UTC time of day is at least
24:00 minus the offset (the day before when it is earlier than minus a negative offset),
which is exact to the microsecond (SQLite's date() rounds to the millisecond).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

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


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def local_day_expr(column: Any, segments: Sequence[tuple[datetime | None, int]], dialect: str) -> Any:
    """A SQL expression for the local calendar date of naive-UTC `column`.

    PostgreSQL: `CAST(column + offset AS DATE)`, a date. SQLite: the ISO date as text,
    computed on the stored text 'YYYY-MM-DD HH:MM:SS.ffffff' (see the module docstring).
    """
    from sqlalchemy import Date, Interval, case, cast, func, literal

    if dialect == "sqlite":
        utc_day = func.substr(column, 1, 10)
        time_of_day = func.substr(column, 12, 8)

        def shifted(seconds: int) -> Any:
            if seconds == 0:
                return utc_day
            if seconds > 0:  # from 24:00 - offset (UTC) on, it is already tomorrow
                return case((time_of_day >= literal(_hms(86400 - seconds)),
                             func.date(utc_day, literal("+1 day"))), else_=utc_day)
            return case((time_of_day < literal(_hms(-seconds)),  # still yesterday
                         func.date(utc_day, literal("-1 day"))), else_=utc_day)
    else:
        def shifted(seconds: int) -> Any:
            return cast(column + literal(timedelta(seconds=seconds), Interval), Date)

    # Branch i applies from segments[i] up to segments[i + 1]: WHEN column < next start.
    if len(segments) == 1:
        return shifted(segments[0][1])
    return case(*[(column < segments[i + 1][0], shifted(segments[i][1]))
                  for i in range(len(segments) - 1)],
                else_=shifted(segments[-1][1]))


def local_days_monotone(segments: Sequence[tuple[datetime | None, int]]) -> bool:
    """Whether the local date never goes backwards as UTC time goes on over `segments`.

    Only an offset that drops across a local midnight breaks this (the clock goes back from
    after midnight to before it: e.g. America/Sitka in 1867); then a member's first and last
    purchase days are not the days of their first and last purchase instants.
    """
    for i in range(1, len(segments)):
        at, after = segments[i]
        before = segments[i - 1][1]
        if after >= before:
            continue
        assert at is not None
        t = int(at.replace(tzinfo=UTC).timestamp())
        # Local clock jumps from just below t + before back to t + after: a midnight strictly
        # between them means the date goes backwards.
        if ((t + after) // 86400 + 1) * 86400 < t + before:
            return False
    return True


# -- per-member rows -----------------------------------------------------------------------


class MemberRfm(NamedTuple):
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


def _purchase_range(session: Session, start: datetime | None,
                    end: datetime) -> tuple[Any, Any, bool, bool]:
    """(first, last) purchase instant in [start, end) and whether the start and end bounds
    exclude any purchase at all. Four index look-ups (min/max on the occurred_at index),
    refunded purchases included: the range only decides which offset changes to consider."""
    from sqlalchemy import func, select

    from loyaltyctl.db.models import Purchase

    P = Purchase.__table__.c
    first = select(func.min(P.occurred_at))
    if start is not None:
        first = first.where(P.occurred_at >= start)
    last = select(func.max(P.occurred_at)).where(P.occurred_at < end)
    q = select(first.scalar_subquery(), last.scalar_subquery(),
               select(func.min(P.occurred_at)).scalar_subquery(),
               select(func.max(P.occurred_at)).scalar_subquery())
    lo, hi, oldest, newest = session.execute(q).one()
    cuts_start = start is not None and oldest is not None and oldest < start
    cuts_end = newest is not None and newest >= end
    return lo, hi, cuts_start, cuts_end


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
    from sqlalchemy import DateTime, Interval, and_, cast, func, literal, select

    from loyaltyctl.db.models import Member, Purchase

    lo, hi, cuts_start, cuts_end = _purchase_range(session, start, end)
    if lo is None or hi is None:
        return []
    dialect = session.get_bind().dialect.name
    segments = utc_offset_segments(tz, lo, hi)

    P = Purchase.__table__.c
    net = P.amount - P.refunded_amount
    window = [net > 0]  # a purchase refunded in full does not count
    if cuts_start:
        window.append(P.occurred_at >= start)
    if cuts_end:
        window.append(P.occurred_at < end)
    day = local_day_expr(P.occurred_at, segments, dialect)
    monotone = local_days_monotone(segments)

    # One pass, grouped by member only: the covering index delivers the groups in order, and
    # the day expression is evaluated once per purchase (in the DISTINCT count).
    cols = [P.member_id, func.min(P.occurred_at).label("lo"), func.max(P.occurred_at).label("hi"),
            func.count(day.distinct()).label("days"), func.sum(net).label("total")]
    if not monotone:
        cols += [func.min(day).label("first_day"), func.max(day).label("last_day")]
    agg = select(*cols).where(and_(*window)).group_by(P.member_id).subquery("agg")
    if monotone:
        first = local_day_expr(agg.c.lo, segments, dialect)
        last = local_day_expr(agg.c.hi, segments, dialect)
    else:
        first, last = agg.c.first_day, agg.c.last_day

    # The first day's total, from the few purchases of that day, found through the index
    # from the member's first purchase instant on.
    F = Purchase.__table__.alias("f")
    f_net = F.c.amount - F.c.refunded_amount
    on_first_day = [F.c.member_id == agg.c.member_id, F.c.occurred_at >= agg.c.lo, f_net > 0]
    if len(segments) == 1:
        # One offset: the first day ends at its local midnight, a fixed UTC instant.
        offset = segments[0][1]
        if dialect == "sqlite":  # 'YYYY-MM-DD HH:MM:SS'; a stored '... HH:MM:SS.ffffff' sorts after it
            until = func.datetime(first, literal("+1 day"), literal(f"{-offset:+d} seconds"))
        else:
            until = cast(first, DateTime) + literal(timedelta(days=1, seconds=-offset), Interval)
    else:
        # Several offsets: the day's purchases lie within 24 h plus the largest offset change
        # of the first purchase; the day expression picks them.
        offsets = [off for _, off in segments]
        span = 86400 + max(offsets) - min(offsets) + 1
        if dialect == "sqlite":
            until = func.datetime(agg.c.lo, literal(f"+{span} seconds"))
        else:
            until = agg.c.lo + literal(timedelta(seconds=span), Interval)
        on_first_day.append(local_day_expr(F.c.occurred_at, segments, dialect) == first)
    if cuts_end:  # one upper bound, so that it is the end of the index range searched
        until = (func.min if dialect == "sqlite" else func.least)(until, literal(end, DateTime))
    on_first_day.append(F.c.occurred_at < until)
    first_total = select(func.sum(f_net)).where(*on_first_day).scalar_subquery()

    M = Member.__table__.c
    q = (select(agg.c.member_id, M.code, M.name, first, last, agg.c.days, agg.c.total, first_total)
         .join(Member, M.id == agg.c.member_id)
         .order_by(agg.c.member_id))

    ref = reference_day.toordinal()
    days: dict[Any, tuple[date, int]] = {}  # a few hundred distinct days: convert each once

    def as_day(v: Any) -> tuple[date, int]:
        d = _as_date(v)
        days[v] = out = (d, d.toordinal())
        return out

    parts = []
    for mid, code, name, f_day, l_day, n_days, total, first_sum in session.connection().execute(q).all():
        first_date, f0 = days.get(f_day) or as_day(f_day)
        last_date, l0 = days.get(l_day) or as_day(l_day)
        total = int(total)  # PostgreSQL sums BIGINT as NUMERIC
        parts.append((mid, code, name, first_date, last_date, n_days, n_days - 1,
                      l0 - f0, ref - f0, ref - l0, total - int(first_sum), total))
    return score(parts)


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


def ntiles(count: int, buckets: int = QUINTILES) -> list[int]:
    """[ntile(i, count) for i in range(count)], built bucket by bucket."""
    size, extra = divmod(count, buckets)
    out: list[int] = []
    for b in range(buckets):
        out += [b + 1] * (size + (1 if b < extra else 0))
    return out


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


_SEGMENT_TABLE = {(r, f, m): segment_of(r, f, m)
                  for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)}


def _ranked(values: list[Any]) -> list[int]:
    """NTILE(5) score of each position of `values` ranked ascending, ties by position.

    The rows come in member-id order and the sort is stable, so equal values keep that
    order: the tie-break by member id, lower id first."""
    order = sorted(range(len(values)), key=values.__getitem__)
    scores = [0] * len(values)
    for i, tile in zip(order, ntiles(len(values)), strict=True):
        scores[i] = tile
    return scores


def score(parts: Sequence[tuple[Any, ...]]) -> list[MemberRfm]:
    """MemberRfm rows with quintile scores 1-5 and segments, from tuples of MemberRfm's
    first twelve fields (member_id ... total_spend) in member-id order.

    Each score ranks the members from worst to best and cuts the ranking with NTILE(5):
    R by days since the last purchase, most days first (fewest days = 5); F by frequency;
    M by monetary (the float `MemberRfm.monetary` gives). Ties are broken by member id,
    lower id first (lower score), so the same data always gives the same scores on every
    database.
    """
    r = _ranked([-p[9] for p in parts])
    f = _ranked([p[6] for p in parts])
    m = _ranked([p[10] / p[6] if p[6] else 0.0 for p in parts])
    table = _SEGMENT_TABLE
    new = tuple.__new__  # MemberRfm._make without the call overhead, once per member
    return [new(MemberRfm, (*p, rs, fs, ms, table[rs, fs, ms]))
            for p, rs, fs, ms in zip(parts, r, f, m, strict=True)]


def segment_summary(rows: Sequence[MemberRfm]) -> list[dict[str, Any]]:
    """Members, share, spend and mean recency/frequency per segment, in SEGMENTS order."""
    total = len(rows)
    acc = {name: [0, 0, 0, 0] for name in SEGMENTS}  # members, spend, days since, frequency
    for r in rows:
        a = acc[r.segment]
        a[0] += 1
        a[1] += r.total_spend
        a[2] += r.days_since_last
        a[3] += r.frequency
    out = []
    for name, rule, _ in SEGMENT_RULES:
        n, spend, since, freq = acc[name]
        out.append({
            "segment": name,
            "rule": rule,
            "members": n,
            "share": round(n / total, 4) if total else 0.0,
            "total_spend": spend,
            "avg_days_since_last": round(since / n, 1) if n else None,
            "avg_frequency": round(freq / n, 2) if n else None,
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
