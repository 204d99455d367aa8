"""Bulk purchase import: millions of rows, streamed, set-based, one transaction.

Each row means exactly what one `purchases record` means (services/purchases.py): the same
pure rules (earning, campaigns on the local date, tier multiplier, pending window, expiry),
the same normalisation of category and channel, the same `purchase:<ref>` earn lot. What
differs is how the work is done, batch by batch:

1. read `batch_size` rows from the file (never the whole file);
2. find which refs already exist, in one query: rows whose purchase was imported before are
   counted as "already imported" without even being parsed, so a re-run is cheap;
3. parse and check the rest in Python, resolve their members in one or two queries, lock
   and read the members' tier, status and balance in one query;
4. compute points with the pure rules, pre-allocate ids (SQLite: MAX(id)+1 under the write
   lock that BEGIN IMMEDIATE holds; PostgreSQL: a block of `nextval`), and write purchases
   and earn lots with executemany (SQLite) or COPY (PostgreSQL). Rows are validated and
   priced in Python (the rules are Python), so COPY goes straight into the tables: a
   staging table would only copy every row a second time;
5. add up the balance changes (written with one statement at the end: see
   `_Store.add_balances`); settle clawback debt for the rare members that owe points; run
   the after-purchase hooks once for the batch, with the members' tier metrics carried
   from batch to batch (services.tiers.TierMetrics).

The whole import runs inside a savepoint of the caller's transaction: all-or-nothing unless
`on_error="skip"`, and a dry run does all the work and rolls it back, so what it reports is
exactly what a real run would do.

Refs: the first valid row with a ref wins; a later identical copy is a duplicate (counted,
skipped); a later copy with different data is rejected. A ref imported by an earlier run is
"already imported" (skipped).
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from loyaltyctl.config import Config
from loyaltyctl.db.models import LedgerEntry, Member, Purchase
from loyaltyctl.errors import InvalidInput, Refused
from loyaltyctl.normalize import parse_money
from loyaltyctl.rules.campaigns import matching_campaigns
from loyaltyctl.rules.earning import norm_category, purchase_points
from loyaltyctl.services.csvio import (
    MAX_LISTED_ERRORS,
    Progress,
    Reject,
    Row,
    TableReader,
    abort_error,
)
from loyaltyctl.timeutil import local_date, parse_instant, utcnow

REQUIRED = ("ref", "member", "amount", "occurred_at")
OPTIONAL = ("category", "channel", "currency")
IGNORED = ("row", "reason")
"""A rejects file (rows plus `row` and `reason`) can be fixed and imported as it is."""
COLUMNS = REQUIRED + OPTIONAL
_REF, _MEMBER, _AMOUNT, _AT, _CATEGORY, _CHANNEL, _CURRENCY = range(7)

ENV_BATCH = "LOYALTYCTL_IMPORT_BATCH"
DEFAULT_BATCH = 50_000
_KEY_CACHE_LIMIT = 100_000



@dataclass
class ImportSummary:
    rows: int = 0
    """Data rows read (blank lines not counted)."""
    imported: int = 0
    points: int = 0
    """Points issued, available and pending together."""
    pending_points: int = 0
    members: int = 0
    """Distinct members with an imported purchase."""
    amount: int = 0
    """Total amount imported, minor units."""
    already_imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    members_created: int = 0
    batches: int = 0
    dry_run: bool = False
    errors: list[tuple[int, str]] = field(default_factory=list)
    """The first rejected rows: (row number, reason)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "imported": self.imported, "points": self.points,
            "pending_points": self.pending_points, "members": self.members,
            "amount": self.amount, "already_imported": self.already_imported,
            "duplicates": self.duplicates, "rejected": self.rejected,
            "members_created": self.members_created, "dry_run": self.dry_run,
        }


def batch_size_from_env(default: int = DEFAULT_BATCH) -> int:
    raw = os.environ.get(ENV_BATCH, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not (1 <= int(raw) <= 1_000_000):
        raise InvalidInput(f"{ENV_BATCH}={raw!r} must be a whole number from 1 to 1000000")
    return int(raw)


# -- fast, exact parsing ---------------------------------------------------------------------
# A million rows leave a few microseconds each for parsing. The helpers below memoise the
# shared parsers (normalize.parse_money, timeutil.parse_instant) on the parts of the text
# that repeat (the day, the hour), and fall back to them for anything unusual, so every
# value is exactly what the single-purchase path computes.

_HOUR_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}")
_CACHE_LIMIT = 4_096  # files run in time order: a few days of hours is plenty


class _Parsers:
    """Memoised front ends to the shared parsers and rules, exact by construction."""

    def __init__(self, config: Config, now: datetime) -> None:
        from loyaltyctl.services.purchases import earn_lot_terms

        p = config.program
        self.config = config
        self.tz = p.timezone
        self.calendar = p.calendar
        self.decimals = p.decimals
        self.scale = 10 ** p.decimals
        self.now = now
        self._earn_lot_terms = earn_lot_terms
        self._hours: dict[str, datetime | None] = {}
        self._days: dict[datetime, date | None] = {}
        self._terms: dict[datetime, tuple | None] = {}
        self._names: dict[str | None, str | None] = {}
        self._points: dict[tuple, tuple[int, str | None]] = {}
        self._points_limit = 20_000
        self._campaigns = {c.code: c for c in config.campaigns}

    def money(self, s: str) -> int:
        if s.isascii() and s.isdigit() and len(s) <= 15 - self.decimals:
            return int(s) * self.scale
        return parse_money(s, self.decimals)

    def instant(self, s: str) -> datetime:
        """timeutil.parse_instant(s), with the local hour's UTC start memoised."""
        n = len(s)
        if n == 19 or n == 16:
            prefix = s[:13]
            start = self._hours.get(prefix, False)
            if start is False:
                start = self._hour_start(prefix)
            if start is not None:
                mm, ss = s[14:16], (s[17:19] if n == 19 else "00")
                if (s[13] == ":" and (n == 16 or s[16] == ":") and (mm + ss).isascii()
                        and mm.isdigit() and ss.isdigit() and mm < "60" and ss < "60"):
                    return start + timedelta(minutes=int(mm), seconds=int(ss))
        return parse_instant(s, tz=self.tz, calendar=self.calendar)

    def _hour_start(self, prefix: str) -> datetime | None:
        """UTC start of a local hour ("2026-03-04 12"), None if its UTC offset changes inside."""
        start = None
        if _HOUR_PREFIX.fullmatch(prefix):
            try:
                start = parse_instant(prefix + ":00", tz=self.tz, calendar=self.calendar)
                end = parse_instant(prefix + ":59:59", tz=self.tz, calendar=self.calendar)
                if end - start != timedelta(minutes=59, seconds=59):
                    start = None
            except ValueError:
                start = None
        if len(self._hours) > _CACHE_LIMIT:
            self._hours.clear()
        self._hours[prefix] = start
        return start

    def name(self, raw: str | None) -> str | None:
        """rules.earning.norm_category, memoised (a file has few categories and channels)."""
        try:
            return self._names[raw]
        except KeyError:
            v = self._names[raw] = norm_category(raw)
            if len(self._names) > _CACHE_LIMIT:
                self._names.clear()
            return v

    # Local dates and lot terms are monotonic in time, so when both ends of a UTC hour give
    # the same answer, every instant inside it does too.
    def local_date(self, dt: datetime) -> date:
        hour = dt.replace(minute=0, second=0, microsecond=0)
        d = self._days.get(hour, False)
        if d is False:
            first = local_date(hour, self.tz)
            last = local_date(hour + _HOUR_END, self.tz)
            d = self._days[hour] = first if first == last else None
            if len(self._days) > _CACHE_LIMIT:
                self._days.clear()
        return d if d is not None else local_date(dt, self.tz)

    def lot_terms(self, occurred_at: datetime) -> tuple[datetime | None, date | None]:
        """services.purchases.earn_lot_terms, memoised per hour while nothing is pending."""
        hour = occurred_at.replace(minute=0, second=0, microsecond=0)
        t = self._terms.get(hour, False)
        if t is False:
            first = self._earn_lot_terms(config=self.config, occurred_at=hour, now=self.now)
            last = self._earn_lot_terms(config=self.config, occurred_at=hour + _HOUR_END,
                                        now=self.now)
            t = self._terms[hour] = first if first == last and first[0] is None else None
            if len(self._terms) > _CACHE_LIMIT:
                self._terms.clear()
        if t is not None:
            return t
        return self._earn_lot_terms(config=self.config, occurred_at=occurred_at, now=self.now)

    def points(self, amount: int, category: str | None, tier: str | None,
               multiplier: Decimal, campaigns: Sequence[Any]) -> tuple[int, str | None]:
        """rules.earning.purchase_points, memoised: amounts repeat (prices are round)."""
        key = (amount, category, tier, tuple(c.code for c in campaigns))
        hit = self._points.get(key)
        if hit is None:
            earned = purchase_points(earning=self.config.earning, amount=amount,
                                     category=category, tier_multiplier=multiplier,
                                     campaigns=campaigns)
            hit = self._points[key] = (earned.points, earned.campaign)
            if len(self._points) > self._points_limit:
                self._points.clear()
        return hit


_HOUR_END = timedelta(minutes=59, seconds=59, microseconds=999_999)


# -- the database side -----------------------------------------------------------------------


_MEMBERS = "SELECT id, code, status, tier, balance, merged_into_id FROM members WHERE id IN {}"
_MEMBERS_LOCKED = _MEMBERS + " ORDER BY id FOR UPDATE"
SQLITE_CACHE_KIB = 32 * 1024
BALANCE_FLUSH = 200_000
_SEP = "\x1f"  # joins refs into one parameter (the ASCII unit separator)


def _iso_ts(v: datetime | None) -> str | None:
    return None if v is None else v.isoformat(" ", "microseconds")


def _iso_day(v: date | None) -> str | None:
    return None if v is None else v.isoformat()


class _Store:
    """Backend-specific bulk statements: SQLite executemany, PostgreSQL COPY and arrays."""

    P_COLS = ("id", "member_id", "ref", "amount", "currency", "occurred_at", "category",
              "channel", "refunded_amount", "points", "campaign", "created_at")
    L_COLS = ("id", "member_id", "kind", "points", "effective_at", "expires_on", "remaining",
              "pending_until", "purchase_id", "campaign", "ref", "idem_key", "actor", "created_at")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.conn = session.connection()
        self.dialect = self.conn.dialect
        self.pg = self.dialect.name == "postgresql"
        ptab = Purchase.__table__  # type: ignore[attr-defined]
        ltab = LedgerEntry.__table__  # type: ignore[attr-defined]

        def proc(column: Any) -> Callable[[Any], Any]:
            p = column.type.dialect_impl(self.dialect).bind_processor(self.dialect)
            return p or (lambda v: v)

        # Values go to the driver as SQLAlchemy would send them (SQLite stores date-times
        # as text in SQLAlchemy's own format, which every other query compares against).
        self.ts = proc(ptab.c.occurred_at)
        self.day = proc(ltab.c.expires_on)
        # isoformat is the same text several times faster: use it when it is the same.
        probe = datetime(2026, 3, 4, 5, 6, 7, 89)
        if self.ts(probe) == _iso_ts(probe) and self.ts(None) is None:
            self.ts = _iso_ts
        if self.day(probe.date()) == _iso_day(probe.date()) and self.day(None) is None:
            self.day = _iso_day
        self._cache_size = None
        self._written = 0
        self._analyzed_at = 0
        self._sequences: dict[str, int] = {}
        self._balances: dict[int, list[int]] = {}
        """Balance and pending changes not written yet: {member id: [available, pending]}."""
        if self.pg:
            unprepared(session)
        else:
            # A bigger page cache for the import's duration: index pages of a million-row
            # transaction stay in memory instead of being spilled to the WAL again and again.
            self._cache_size = self.conn.exec_driver_sql("PRAGMA cache_size").scalar()
            self.conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")

    def close(self) -> None:
        if self._cache_size is not None:
            self.conn.exec_driver_sql(f"PRAGMA cache_size = {int(self._cache_size)}")
            self._cache_size = None

    # Hot look-ups go straight to the driver (same connection, same transaction): a batch
    # of refs is one bound parameter, a JSON array on SQLite (json_each), an array on
    # PostgreSQL (see _pg_array), and rows come back as plain tuples.
    def _fetch(self, sql: str, values: Sequence[Any]) -> list[tuple]:
        """Rows of `sql`, whose one parameter, written `IN {}` (or `{}` for the array
        itself on PostgreSQL), is the list `values` (all ints, or all strings)."""
        raw = self.conn.connection.driver_connection
        if self.pg:
            array, params = _pg_array(values)
            with raw.cursor() as cur:
                cur.execute(sql.replace("IN {}", f"= ANY({array})").replace("{}", array), params)
                return cur.fetchall()
        return raw.execute(sql.replace("IN {}", "IN (SELECT value FROM json_each(?))"),
                           (json.dumps(list(values)),)).fetchall()

    def existing_refs(self, refs: Sequence[str]) -> dict[str, int]:
        """{ref: purchase id} for the refs that exist."""
        if not refs:
            return {}
        if self.pg:
            # One probe of the unique index per ref. With `ref = ANY(...)` the planner
            # expects every ref to be found and scans the whole table instead, for every
            # batch (the work would grow with the square of the file).
            return dict(self._fetch(
                "SELECT p.ref, p.id FROM unnest({}) AS r(ref) CROSS JOIN LATERAL "
                "(SELECT ref, id FROM purchases WHERE purchases.ref = r.ref LIMIT 1) AS p", refs))
        return dict(self._fetch("SELECT ref, id FROM purchases WHERE ref IN {}", refs))

    def purchase_facts(self, ids: Sequence[int]) -> dict[int, tuple]:
        """{id: (member_id, amount, occurred_at, category, channel)}."""
        if not ids:
            return {}
        rows = self._fetch("SELECT id, member_id, amount, occurred_at, category, channel "
                           "FROM purchases WHERE id IN {}", ids)
        return {r[0]: tuple(r[1:]) for r in rows}

    def members(self, ids: Sequence[int]) -> dict[int, tuple]:
        """{id: (code, status, tier, balance, merged_into_id)}, locked on PostgreSQL."""
        if not ids:
            return {}
        sql = _MEMBERS_LOCKED if self.pg else _MEMBERS
        rows = self._fetch(sql, ids)
        return {r[0]: tuple(r[1:]) for r in rows}

    def next_ids(self, table: str, n: int) -> list[int]:
        if n <= 0:
            return []
        if self.pg:
            # The sequence by its OID: `nextval(pg_get_serial_sequence(...))` looked the
            # sequence up in the catalogue again for every id (10x slower).
            seq = self._sequences.get(table)
            if seq is None:
                seq = self._sequences[table] = self.conn.execute(
                    text("SELECT CAST(CAST(pg_get_serial_sequence(:t, 'id') AS regclass) "
                         "AS integer)"), {"t": table}).scalar_one()
            # Usually one contiguous block: only its ends travel, not n rows.
            lo, hi, ids = self.conn.execute(
                text("SELECT MIN(v), MAX(v), CASE WHEN MAX(v) - MIN(v) + 1 = COUNT(*) THEN NULL "
                     "ELSE array_agg(v ORDER BY v) END FROM (SELECT nextval(CAST(CAST("
                     ":seq AS oid) AS regclass)) AS v FROM generate_series(1, :n)) s"),
                {"seq": seq, "n": n}).one()
            return list(range(lo, hi + 1)) if ids is None else list(ids)
        # We hold SQLite's write lock (BEGIN IMMEDIATE), so nobody else can take these ids.
        first = self.conn.execute(
            text(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}")).scalar_one()  # noqa: S608 - constant
        return list(range(first, first + n))

    def write(self, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        if not rows:
            return
        if self.pg:
            # Binary COPY: the values go as the server stores them, so it parses no text
            # (dates and numbers) and psycopg formats none.
            raw = self.conn.connection.driver_connection
            sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"  # noqa: S608 - constant names
            with raw.cursor() as cur, cur.copy(sql) as copy:
                copy.set_types(_pg_types(table, columns))
                for r in rows:
                    copy.write_row(r)
        else:
            marks = ", ".join("?" * len(columns))
            self.conn.exec_driver_sql(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)  # noqa: S608

    def add_balances(self, deltas: dict[int, list[int]]) -> None:
        """Count these balance changes; they are written by `flush_balances`.

        Nothing reads a cached balance while the import runs but the import itself (see
        `balance`), and the other writers only add to it, so the sums go to the members
        table once for the whole import instead of once per batch: on PostgreSQL every
        UPDATE of a member writes a new row version and an entry in each of its nine
        indexes (a second per batch at a million rows). The dict stays small (one entry
        per member); past BALANCE_FLUSH members it is written and emptied.
        """
        pending = self._balances
        for mid, (b, p) in deltas.items():
            d = pending.get(mid)
            if d is None:
                pending[mid] = [b, p]
            else:
                d[0] += b
                d[1] += p
        if len(pending) > BALANCE_FLUSH:
            self.flush_balances()

    def balance(self, member_id: int, stored: int) -> int:
        """A member's available balance: `stored` (read this batch) plus what is unwritten."""
        d = self._balances.get(member_id)
        return stored if d is None else stored + d[0]

    def flush_balances(self) -> None:
        deltas, self._balances = self._balances, {}
        if not deltas:
            return
        if self.pg:
            ids = sorted(deltas)
            self.conn.execute(
                text("UPDATE members AS m SET balance = m.balance + v.b, pending = m.pending + v.p "
                     "FROM unnest(CAST(:ids AS integer[]), CAST(:b AS bigint[]), "
                     "CAST(:p AS bigint[])) AS v(id, b, p) WHERE m.id = v.id"),
                {"ids": ids, "b": [deltas[i][0] for i in ids], "p": [deltas[i][1] for i in ids]},
            )
        else:
            self.conn.exec_driver_sql(
                "UPDATE members SET balance = balance + ?, pending = pending + ? WHERE id = ?",
                [(b, p, mid) for mid, (b, p) in sorted(deltas.items())],
            )

    def refresh_statistics(self, written: int) -> None:
        """PostgreSQL: ANALYZE the tables this import fills once they have grown a lot.

        Nobody else can see the new rows, so autovacuum never counts them; the planner would
        plan the hooks' per-batch queries for tables it believes nearly empty (a nested loop
        over a million rows). ANALYZE inside the transaction does see them. Geometric steps:
        a handful of ANALYZE runs (about 0.1 s each) for any file size.
        """
        if not self.pg:
            return
        self._written += written
        if self._written < max(10_000, self._analyzed_at):
            return
        self.conn.exec_driver_sql("ANALYZE purchases, ledger_entries")
        self._analyzed_at = 2 * self._written

    def count_members(self, ranges: list[list[int]]) -> int:
        total = 0
        if not ranges:
            return 0
        clause = " OR ".join(f"id BETWEEN :lo{i} AND :hi{i}" for i in range(len(ranges)))
        params = {}
        for i, (lo, hi) in enumerate(ranges):
            params[f"lo{i}"], params[f"hi{i}"] = lo, hi
        total = self.conn.execute(
            text(f"SELECT COUNT(DISTINCT member_id) FROM purchases WHERE {clause}"),  # noqa: S608
            params).scalar_one()
        return int(total)


def unprepared(session: Session) -> None:
    """PostgreSQL: plan each look-up of the session's transaction for its own values.

    psycopg prepares a statement on the server once it has run five times, and a few runs
    later the server may switch it to a generic plan, made without the parameters' values.
    A bulk writer's per-batch look-ups repeat with the same text (an IN list of a full batch
    always has the same number of placeholders), and for a long list a generic plan may
    scan the table comparing every row with every value (15 s per statement for 5,000
    codes against 100,000 members, where a plan for the values takes milliseconds).

    So the automatic preparing is off until the transaction ends (a threshold no statement
    reaches). `executemany` still prepares its statement at once (psycopg asks for that
    itself), and a one-row statement's generic plan is the right one. (`plan_cache_mode =
    force_custom_plan` would also replan the foreign-key checks of every row a COPY
    writes: twice the server time.)
    """
    raw = session.connection().connection.driver_connection
    before = getattr(raw, "prepare_threshold", None)
    if before is None or before >= _NEVER:
        return
    raw.prepare_threshold = _NEVER
    done = False

    def restore(_session: Session, transaction: Any) -> None:
        nonlocal done
        if transaction.parent is None and not done:
            done = True
            raw.prepare_threshold = before

    from sqlalchemy import event

    event.listen(session, "after_transaction_end", restore)


_NEVER = 2**31 - 1


def _pg_array(values: Sequence[Any]) -> tuple[str, tuple]:
    """A PostgreSQL array expression for `values` (all ints, or all strings) and its
    parameters: one delimited string that `string_to_array` splits. The planner folds it
    into a constant array whose length it knows; and psycopg would spend longer dumping a
    Python list element by element than the server spends on the look-up."""
    if values and isinstance(values[0], int):
        return ("CAST(string_to_array(%s, ',') AS INTEGER[])",
                (",".join([str(int(v)) for v in values]),))
    joined = _SEP.join(values)
    if joined.count(_SEP) == len(values) - 1 and all(values):
        return "string_to_array(%s, %s)", (joined, _SEP)
    return "CAST(%s AS TEXT[])", (list(values),)  # a value holds the separator, or is empty


def _pg_types(table: str, columns: Sequence[str]) -> list[str]:
    """PostgreSQL type names of `columns` of `table`, for a binary COPY."""
    from sqlalchemy import BigInteger, Date, DateTime, Integer, String

    tab = {"purchases": Purchase, "ledger_entries": LedgerEntry}[table].__table__  # type: ignore[attr-defined]
    out = []
    for name in columns:
        t = tab.c[name].type
        for kind, pg in ((BigInteger, "int8"), (Integer, "int4"), (DateTime, "timestamp"),
                         (Date, "date"), (String, "text")):
            if isinstance(t, kind):
                out.append(pg)
                break
        else:  # pragma: no cover - a column type the import does not write
            raise TypeError(f"{table}.{name}: no binary COPY type for {t!r}")
    return out


class _IdRanges:
    """The purchase ids this run wrote, as merged [lo, hi] ranges (tiny, whatever the size)."""

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []

    def add(self, ids: Sequence[int]) -> None:
        for i in ids:
            if self.ranges and self.ranges[-1][1] + 1 == i:
                self.ranges[-1][1] = i
            else:
                self.ranges.append([i, i])

    def __contains__(self, i: int) -> bool:
        ranges = self.ranges
        if not ranges or i < ranges[0][0]:  # the usual answer: written before this run
            return False
        k = bisect_right(ranges, [i, float("inf")]) - 1
        return k >= 0 and ranges[k][0] <= i <= ranges[k][1]


# -- members ---------------------------------------------------------------------------------


class _Members:
    """Resolves member keys (code, card, phone, e-mail) batch by batch, with a cache.

    A found key keeps its member id for the rest of the import (phone parsing is the costly
    part); tier, status and balance are read again for every batch, since hooks change them.
    """

    def __init__(self, session: Session, config: Config) -> None:
        self.session = session
        self.region = config.program.phone_region
        self.cache: dict[str, int] = {}

    def resolve(self, keys: set[str]) -> dict[str, int]:
        from loyaltyctl.services.members import resolve_members_bulk

        cache = self.cache
        missing = [k for k in keys if k not in cache]
        if missing:
            # Memory stays bounded: when the cache is full, keep only this batch's keys
            # (clearing all of it would lose keys this batch found in it).
            if len(cache) + len(missing) > _KEY_CACHE_LIMIT:
                cache = self.cache = {k: cache[k] for k in keys if k in cache}
            cache.update(resolve_members_bulk(session=self.session, keys=missing,
                                              region=self.region))
        return {k: cache[k] for k in keys if k in cache}


def _inactive_reason(code: str, status: str, merged_into: int | None) -> str:
    if merged_into is not None:
        return f"member {code} is closed: it was merged into another member; use the survivor"
    if status == "suspended":
        return f"member {code} is suspended"
    return f"member {code} is {status}"


# -- the import ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Parsed:
    row: int
    values: tuple
    ref: str
    key: str
    amount: int
    occurred_at: datetime
    category: str | None
    channel: str | None
    at_db: Any = None
    """occurred_at as the driver is given it."""
    member_id: int = 0


def import_purchases(
    *,
    session: Session,
    config: Config,
    reader: TableReader,
    now: datetime,
    actor: str,
    on_error: str = "abort",
    dry_run: bool = False,
    create_members: bool = False,
    batch_size: int | None = None,
    on_reject: Reject | None = None,
    progress: Progress | None = None,
) -> ImportSummary:
    """Import every row of `reader` (an opened TableReader with COLUMNS).

    on_error="abort": any rejected row rolls everything back and raises InvalidInput
    listing the first rejected rows (exit 4). on_error="skip": rejected rows are passed to
    `on_reject(row, values, reason)` and the rest is imported. dry_run: everything is done
    and then rolled back. Never commits: the caller's transaction does.
    """
    if on_error not in ("abort", "skip"):
        raise InvalidInput(f"--on-error: {on_error!r} is not abort or skip")
    size = batch_size or batch_size_from_env()
    job = _Import(session=session, config=config, reader=reader, now=now, actor=actor,
                  on_error=on_error, create_members=create_members, on_reject=on_reject)
    job.summary.dry_run = dry_run
    savepoint = session.begin_nested()
    try:
        for batch in _read_ahead(reader, size, job.prepare):
            job.batch(batch)
            if progress is not None:
                progress(reader.bytes_read, job.summary.rows)
            if on_error == "abort" and len(job.summary.errors) >= MAX_LISTED_ERRORS:
                break
        summary = job.finish()
    except BaseException:
        job.store.close()
        savepoint.rollback()
        raise
    job.store.close()
    if dry_run or (on_error == "abort" and summary.rejected):
        savepoint.rollback()
    else:
        savepoint.commit()
    if on_error == "abort" and summary.rejected:
        raise abort_error(reader.name, summary.rejected, summary.errors)
    return summary


def _read_ahead(reader: TableReader, size: int,
                prepare: Callable[[list[Row]], list[tuple]]) -> Iterator[list[tuple]]:
    """`prepare(batch)` for each batch of the file, one batch ahead, in a second thread.

    The database work of a batch (inserts, look-ups, hooks) runs in C with the GIL released,
    so reading and parsing the next batch meanwhile takes a second core's time, not ours.
    At most two batches exist at once: the one being written and the one being prepared.
    An error in the reading thread (a file that is not UTF-8, a broken quote) is raised here.
    """
    slots = threading.Semaphore(1)  # batches prepared but not yet taken
    handoff: queue.Queue = queue.Queue()
    stop = threading.Event()

    def work() -> None:
        try:
            for batch in reader.batches(size):
                while not slots.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                handoff.put(prepare(batch))
            handoff.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            handoff.put(_Failure(exc))

    thread = threading.Thread(target=work, name="purchases-import-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
            slots.release()
    finally:
        stop.set()
        slots.release()
        thread.join(timeout=10)


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class _Import:
    def __init__(self, *, session: Session, config: Config, reader: TableReader, now: datetime,
                 actor: str, on_error: str, create_members: bool,
                 on_reject: Reject | None) -> None:
        self.session = session
        self.config = config
        self.reader = reader
        self.now = now
        self.actor = actor[:64]
        self.on_error = on_error
        self.create_members = create_members
        self.on_reject = on_reject
        self.summary = ImportSummary()
        self.store = _Store(session)
        self.members = _Members(session, config)
        self.parse = _Parsers(config, now)
        self.currency = config.program.currency
        self.tz = config.program.timezone
        self.today = local_date(now, self.tz)
        self.mine = _IdRanges()
        self.multipliers = {t.code: t.multiplier for t in config.tiers.levels}
        from loyaltyctl.services.tiers import TierMetrics

        self.tier_metrics = TierMetrics(config, now)
        self.created_at = self.store.ts(now)

    # -- rows ------------------------------------------------------------------------------

    def _flush_rejects(self, rejects: list) -> None:
        rejects.sort(key=lambda r: r[0])
        s = self.summary
        for row, values, reason in rejects:
            s.rejected += 1
            if len(s.errors) < MAX_LISTED_ERRORS:
                s.errors.append((row, reason))
            if self.on_reject is not None and self.on_error == "skip":
                self.on_reject(row, values, reason)

    def prepare(self, rows: list[Row]) -> list[tuple]:
        """Everything about a batch that needs no database: (row, values, ref, parsed or
        reason); ref is None for a row rejected before its ref is known. Pure, so it runs
        in the reading thread while the previous batch is being written."""
        out = []
        add = out.append
        parse = self._parse
        for n, values, err in rows:
            if err is not None:
                add((n, values, None, err))
                continue
            ref = (values[_REF] or "").strip()
            if not ref:
                add((n, values, None, "ref: empty (every purchase needs its transaction id)"))
            elif len(ref) > 100:
                add((n, values, None, f"ref: {ref[:20]!r}... is longer than 100 characters"))
            else:
                add((n, values, ref, parse(n, values, ref)))
        return out

    def batch(self, rows: list[tuple]) -> None:
        """Check, price and write one prepared batch (see `prepare`)."""
        s = self.summary
        s.batches += 1
        s.rows += len(rows)
        rejects: list = []
        reject = rejects.append

        # 1. which refs exist already.
        existing = self.store.existing_refs(list({r[2] for r in rows if r[2] is not None}))
        mine = self.mine
        ours = self.store.purchase_facts([i for i in existing.values() if i in mine])
        # Refs an earlier batch of this import wrote: a copy here is a duplicate or a conflict.
        earlier = {ref: ours[i] for ref, i in existing.items() if i in ours}

        # 2. rows new (or repeating a row of this very import), parsed or rejected.
        parsed: list[_Parsed] = []
        keys: set[str] = set()
        for n, values, ref, result in rows:
            if ref is None:
                reject((n, values, result))
            elif ref in existing and ref not in earlier:
                s.already_imported += 1
            elif isinstance(result, str):
                reject((n, values, result))
            else:
                parsed.append(result)
                keys.add(result.key)
        # Memory stays flat in the batch size too: drop what is no longer needed as we go.
        rows.clear()
        del existing, ours

        # 3. members: resolve keys, create unknown ones if asked, read tier/status/balance.
        found = self.members.resolve(keys) if keys else {}
        if self.create_members:
            unknown = {p.key for p in parsed if p.key not in found}
            if unknown:
                found.update(self._create(unknown, parsed, rejects))
        info = self.store.members(list(set(found.values())))

        # 4. check each row against its member and the refs seen so far.
        seen: dict[str, tuple] = {}
        fresh: list[_Parsed] = []
        ts = self.store.ts
        for p in parsed:
            mid = found.get(p.key)
            if mid is None:
                reject((p.row, p.values, f"member: no member matches {p.key!r}"
                        + ("" if self.create_members else
                           " (--create-members enrols unknown codes, phones and e-mails)")))
                continue
            code, status, _tier, _balance, merged = info[mid]
            if status != "active" or merged is not None:
                reject((p.row, p.values, _inactive_reason(code, status, merged)))
                continue
            p.member_id = mid
            p.at_db = at = ts(p.occurred_at)
            fp = (mid, p.amount, at, p.category, p.channel)
            first = seen.get(p.ref)
            if first is None:
                prior = earlier.get(p.ref)
                if prior is not None:  # written by an earlier batch of this import
                    first = (prior[0], prior[1], _db_ts(prior[2], ts), prior[3], prior[4])
            if first is not None:
                if first == fp:
                    s.duplicates += 1
                else:
                    reject((p.row, p.values, f"ref: {p.ref!r} appears earlier in the file "
                            "with different data"))
                continue
            seen[p.ref] = fp
            fresh.append(p)
        self._flush_rejects(rejects)
        del parsed, seen, rejects
        for p in fresh:
            p.values = None  # kept only to report the row if it were rejected
        if fresh:
            self._write(fresh, info)

    def _parse(self, n: int, values: tuple, ref: str) -> _Parsed | str:
        """The row parsed, or why it is rejected. Pure: runs in the reading thread."""
        key = (values[_MEMBER] or "").strip()
        if not key:
            return "member: empty (give a member code, phone or e-mail)"
        raw_amount = (values[_AMOUNT] or "").strip()
        try:
            amount = self.parse.money(raw_amount)
        except ValueError as exc:
            return f"amount: {exc}"
        if amount <= 0:
            return (f"amount: {raw_amount!r} must be greater than zero "
                    "(refunds have their own command)")
        raw_at = (values[_AT] or "").strip()
        if not raw_at:
            return "occurred_at: empty (give the date and time of the purchase)"
        try:
            at = self.parse.instant(raw_at)
        except ValueError as exc:
            return f"occurred_at: {exc}"
        if at > self.now:
            return (f"occurred_at: {raw_at!r} is in the future "
                    f"(now is {self.now:%Y-%m-%d %H:%M} UTC)")
        category = self.parse.name(values[_CATEGORY])
        channel = self.parse.name(values[_CHANNEL])  # the same normalisation as the category
        for name, v in (("category", category), ("channel", channel)):
            if v is not None and len(v) > 64:
                return f"{name}: longer than 64 characters"
        currency = values[_CURRENCY]
        if currency and currency.strip() and currency.strip().upper() != self.currency:
            return (f"currency: {currency.strip()!r} is not the program's "
                    f"currency {self.currency}")
        return _Parsed(n, values, ref, key, amount, at, category, channel)

    # -- members created on the fly ---------------------------------------------------------

    def _create(self, unknown: set[str], parsed: list[_Parsed], rejects: list) -> dict[str, int]:
        from loyaltyctl.services import hooks
        from loyaltyctl.services.members import FieldError, FieldRules, normalize_fields

        rules = FieldRules.from_config(self.config)
        first_seen: dict[str, datetime] = {}
        for p in parsed:
            if p.key in unknown and (p.key not in first_seen or p.occurred_at < first_seen[p.key]):
                first_seen[p.key] = p.occurred_at
        new: dict[str, dict[str, Any]] = {}
        bad: dict[str, str] = {}
        for key in sorted(unknown):
            try:
                new[key] = _new_member_fields(key, rules, normalize_fields)
            except FieldError as exc:
                bad[key] = f"member: cannot enrol {key!r}: {exc.reason}"
        # Two keys of the file may name the same new person (0912... and +98912...).
        by_identity: dict[tuple, str] = {}
        for key, values in list(new.items()):
            ident = (values["code"], values.get("phone"), values.get("email"))
            if ident in by_identity:
                continue
            by_identity[ident] = key
        taken = self._taken_codes([v["code"] for v in new.values()])
        rows = []
        for key in by_identity.values():
            values = new[key]
            if values["code"] in taken:
                bad[key] = f"member: cannot enrol {key!r}: member code {values['code']} is taken"
                continue
            stamp = utcnow()
            rows.append({
                "code": values["code"], "name": values["code"], "phone": values.get("phone"),
                "email": values.get("email"), "joined_at": first_seen[key].replace(microsecond=0),
                "status": "active", "tags": "", "balance": 0, "pending": 0,
                "created_at": stamp, "updated_at": stamp,
            })
        for p in parsed:
            if p.key in bad:
                rejects.append((p.row, p.values, bad[p.key]))
        parsed[:] = [p for p in parsed if p.key not in bad]
        if not rows:
            return {}
        from sqlalchemy import insert

        table = Member.__table__  # type: ignore[attr-defined]
        result = self.session.execute(
            insert(table).returning(table.c.id, table.c.code, sort_by_parameter_order=True), rows)
        ids_by_code = {code: mid for mid, code in result}
        self.summary.members_created += len(ids_by_code)
        hooks.after_enrolment(session=self.session, config=self.config,
                              member_ids=list(ids_by_code.values()), now=self.now, actor=self.actor)
        self._sync()
        out: dict[str, int] = {}
        for key, values in new.items():
            if key not in bad and values["code"] in ids_by_code:
                out[key] = ids_by_code[values["code"]]
        self.members.cache.update(out)
        return out

    def _taken_codes(self, codes: list[str]) -> set[str]:
        if not codes:
            return set()
        return {r[0] for r in self.store._fetch("SELECT code FROM members WHERE code IN {}", codes)}

    # -- writing ---------------------------------------------------------------------------

    def _write(self, fresh: list[_Parsed], info: dict[int, tuple]) -> None:
        s = self.summary
        store = self.store
        campaigns = self.config.campaigns
        multipliers = self.multipliers
        currency = self.currency
        ts, day = store.ts, store.day
        created_at = self.created_at
        ledger_created = store.ts(utcnow())
        actor = self.actor
        one = Decimal(1)
        parse = self.parse
        points_for, local, terms = parse.points, parse.local_date, parse.lot_terms

        pids = store.next_ids("purchases", len(fresh))
        purchases: list[tuple] = []
        lots: list[tuple] = []
        deltas: dict[int, list[int]] = {}
        for pid, p in zip(pids, fresh, strict=True):
            mid = p.member_id
            tier = info[mid][2]
            matched = matching_campaigns(
                campaigns, day=local(p.occurred_at), amount=p.amount, category=p.category,
                channel=p.channel, tier=tier) if campaigns else ()
            points, campaign = points_for(p.amount, p.category, tier,
                                          multipliers.get(tier, one), matched)
            at = p.at_db
            purchases.append((pid, mid, p.ref, p.amount, currency, at, p.category,
                              p.channel, 0, points, campaign, created_at))
            s.amount += p.amount
            if points > 0:
                pending_until, expires_on = terms(p.occurred_at)
                # In _Store.L_COLS order, the id added below.
                lots.append((mid, "earn", points, at, day(expires_on), points,
                             None if pending_until is None else ts(pending_until), pid, campaign, p.ref, "purchase:" + p.ref,
                             actor, ledger_created))
                d = deltas.get(mid)
                if d is None:
                    d = deltas[mid] = [0, 0]
                if pending_until is None:
                    d[0] += points
                else:
                    d[1] += points
                    s.pending_points += points
                s.points += points
        try:
            store.write("purchases", store.P_COLS, purchases)
            lids = store.next_ids("ledger_entries", len(lots))
            store.write("ledger_entries", store.L_COLS,
                        [(lid, *lot) for lid, lot in zip(lids, lots, strict=True)])
        except Exception as exc:
            if not _unique_violation(exc):
                raise
            # PostgreSQL only (SQLite's write lock keeps everyone out): another run recorded
            # one of these refs after this batch looked them up.
            raise Refused(
                "another run recorded some of these purchases while the import ran; nothing "
                "was imported", hint="run the import again: it skips what is already there",
            ) from None
        # Members who owed points (a clawback took them below zero) pay from the new lots.
        in_debt = [mid for mid, (available, _pending) in deltas.items()
                   if available > 0 and store.balance(mid, info[mid][3]) < 0]
        store.add_balances(deltas)
        self.mine.add(pids)
        s.imported += len(fresh)
        store.refresh_statistics(len(fresh))

        from loyaltyctl.services import hooks, ledger

        for mid in in_debt:
            ledger.settle_debt(session=self.session, member_id=mid, today=self.today)
        hooks.after_purchases(session=self.session, config=self.config, purchase_ids=pids,
                              now=self.now, actor=self.actor,
                              member_ids=sorted({p.member_id for p in fresh}),
                              tier_metrics=self.tier_metrics)
        self._sync()

    def _sync(self) -> None:
        """Keep the ORM session and the driver-level statements in step.

        Hooks work through the session: flush what they left, so that the next batch's
        driver-level reads (tiers, MAX(id)) see it; and expire the balances of the members
        they loaded, which the batch statements change behind the session's back.
        """
        self.session.flush()
        for obj in list(self.session.identity_map.values()):
            if isinstance(obj, Member):
                self.session.expire(obj, ["balance", "pending", "tier"])

    def finish(self) -> ImportSummary:
        self.store.flush_balances()
        self.summary.members = self.store.count_members(self.mine.ranges)
        return self.summary


def _unique_violation(exc: BaseException) -> bool:
    from sqlalchemy.exc import IntegrityError

    if isinstance(exc, IntegrityError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - SQLite-only installs
        return False
    return isinstance(exc, psycopg.errors.UniqueViolation)


def _db_ts(value: Any, ts: Callable[[Any], Any]) -> Any:
    """A stored time as the driver returns it, in the form `ts` gives for a datetime."""
    if isinstance(value, datetime):
        return ts(value)
    return value


def _new_member_fields(key: str, rules: Any, normalize_fields: Callable) -> dict[str, Any]:
    """Fields of a member enrolled from a purchase file, by what the key looks like.

    An e-mail or a phone number becomes the member's contact, with a code derived from it
    (the phone's digits; for an e-mail a short stable hash, so a re-run gives the same code);
    anything else is the member's code. The name is the code until someone sets it.
    """
    import hashlib

    from loyaltyctl.normalize import ascii_digits

    k = ascii_digits(key)
    if "@" in k:
        email = normalize_fields({"email": k}, rules)["email"]
        code = "E" + hashlib.sha1(email.encode()).hexdigest()[:10].upper()  # noqa: S324 - a name, not security
        return {"code": code, "email": email}
    digits = re.sub(r"[\s\-().]", "", k)
    if re.fullmatch(r"\+?\d{5,16}", digits):
        try:
            phone = normalize_fields({"phone": digits}, rules)["phone"]
        except ValueError:
            phone = None
        if phone:
            return {"code": phone.lstrip("+"), "phone": phone}
    return {"code": normalize_fields({"code": k}, rules)["code"]}
