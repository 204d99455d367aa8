"""Member look-ups as plain SQL: find a member by any key, the balance, the support screen.

The one implementation of these reads. `points balance` and `members show` run them over a
read-only DB-API connection (`db/lite.py`) so that a support person waiting with a customer
does not wait for SQLAlchemy to import; the ORM services (`members.resolve_members_bulk`,
`members.member_profile`, `points.balance_summary`, `points.history`,
`support.member_screen`) run the very same functions through their session
(`lite.SessionReader`). Nothing here imports SQLAlchemy.

Functions are `(*, reader, ...) -> data` and never write. A member is any object with the
members-table attributes: a `MemberRow` read here, or the ORM `Member`.

Tier progress is computed here from `rules/tiers.py` and must agree with
`services.tiers.progress` (the `tiers progress` command); tests/test_lookup_fast.py checks
both, for every member of a varied club and every metric.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from loyaltyctl.errors import NotFound
from loyaltyctl.normalize import ascii_digits, normalize_email, normalize_phone

if TYPE_CHECKING:
    from loyaltyctl.config import Config
    from loyaltyctl.db.lite import Reader

RECENT_ENTRIES = 10
EXPIRING_WITHIN_DAYS = 30
RESOLVE_BATCH = 5000
"""Keys per pair of queries: three IN lists of 5,000 stay under SQLite's variable limit."""

_CARD_STRIP = re.compile(r"[\s\-_.]")
_PHONE_KEY_STRIP = re.compile(r"[\s\-().]")
_PHONE_KEY = re.compile(r"\+?\d{5,16}")
_TAG_RE = re.compile(r"^[^\s,]{1,40}$")


# -- values as the drivers return them -----------------------------------------------------


def as_date(v: Any) -> date | None:
    """A DATE column's value: SQLite returns text."""
    if v is None or (isinstance(v, date) and not isinstance(v, datetime)):
        return v
    if isinstance(v, datetime):
        return v.date()
    return date.fromisoformat(v[:10])


def as_datetime(v: Any) -> datetime | None:
    """A DATETIME column's value (naive UTC): SQLite returns text."""
    if v is None or isinstance(v, datetime):
        return v
    return datetime.fromisoformat(v)


def as_int(v: Any) -> int:
    """SUM() over BIGINT is NUMERIC (Decimal) on PostgreSQL."""
    return 0 if v is None else int(v)


# -- keys ----------------------------------------------------------------------------------


def card_key(text: str) -> str:
    """A card number as stored: ASCII digits, no spaces or dashes, letters upper-case."""
    return _CARD_STRIP.sub("", ascii_digits(str(text))).upper()


def phone_key(key: str, region: str) -> str | None:
    """The E.164 number a look-up key means, or None if it does not look like a phone."""
    digits = _PHONE_KEY_STRIP.sub("", key)
    if not _PHONE_KEY.fullmatch(digits):
        return None
    try:
        return normalize_phone(digits, region)
    except ValueError:
        return None


def email_key(key: str) -> str:
    try:
        return normalize_email(key)
    except ValueError:
        return key.strip().lower()


@dataclass
class KeyPlan:
    """What each look-up key may be: {normalised value: [keys]} per kind."""

    emails: dict[str, list[str]] = field(default_factory=dict)
    codes: dict[str, list[str]] = field(default_factory=dict)
    cards: dict[str, list[str]] = field(default_factory=dict)
    phones: dict[str, list[str]] = field(default_factory=dict)


def plan_keys(keys: Iterable[str], region: str) -> KeyPlan:
    """'@' means an e-mail address (compared lower-cased); anything else may be an exact
    member code, a card number or a phone number in any common format."""
    plan = KeyPlan()
    for key in keys:
        k = ascii_digits(str(key))
        if not k:
            continue
        if "@" in k:
            plan.emails.setdefault(email_key(k), []).append(key)
            continue
        plan.codes.setdefault(k, []).append(key)
        card = card_key(k)
        if card:
            plan.cards.setdefault(card, []).append(key)
        phone = phone_key(k, region)
        if phone:
            plan.phones.setdefault(phone, []).append(key)
    return plan


def pick_members(plan: KeyPlan, email_rows: Iterable[tuple[Any, ...]],
                 member_rows: Iterable[tuple[Any, ...]]) -> dict[str, int]:
    """{key: member id} from the rows found: (id, email) and (id, code, card, phone).

    A key that is some member's code means that member, else a card's, else a phone's.
    """
    result: dict[str, int] = {}
    for mid, email in email_rows:
        for key in plan.emails.get(email, ()):
            result[key] = mid
    by_code: dict[str, int] = {}
    by_card: dict[str, int] = {}
    by_phone: dict[str, int] = {}
    for mid, code, card, phone in member_rows:
        by_code[code] = mid
        if card:
            by_card[card] = mid
        if phone:
            by_phone[phone] = mid
    # Priority: code, then card, then phone (each later pass overrides the earlier).
    for source, index in ((plan.phones, by_phone), (plan.cards, by_card), (plan.codes, by_code)):
        for value, ks in source.items():
            if value in index:
                for key in ks:
                    result[key] = index[value]
    return result


def resolve_keys(*, reader: Reader, keys: Iterable[str], region: str,
                 follow_merged: bool = False) -> dict[str, int]:
    """{key: member id} for every key that names a member (missing keys are left out), in
    two queries per 5,000 keys; with follow_merged a merged member gives its survivor."""
    keys = list(dict.fromkeys(k for k in keys if k is not None))
    result: dict[str, int] = {}
    for start in range(0, len(keys), RESOLVE_BATCH):
        plan = plan_keys(keys[start:start + RESOLVE_BATCH], region)
        email_rows = reader.rows(
            "SELECT id, email FROM members WHERE email IN :emails",
            {"emails": list(plan.emails)}) if plan.emails else []
        member_rows = reader.rows(
            "SELECT id, code, card_number, phone FROM members"
            " WHERE code IN :codes OR card_number IN :cards OR phone IN :phones",
            {"codes": list(plan.codes), "cards": list(plan.cards), "phones": list(plan.phones)},
        ) if plan.codes else []
        result.update(pick_members(plan, email_rows, member_rows))
    if follow_merged and result:
        result = follow_merges(reader=reader, ids=result)
    return result


def follow_merges(*, reader: Reader, ids: dict[Any, int]) -> dict[Any, int]:
    """Replace ids of merged members by their survivors (a chain is followed to its end)."""
    for _ in range(20):
        rows = reader.rows(
            "SELECT id, merged_into_id FROM members"
            " WHERE id IN :ids AND merged_into_id IS NOT NULL", {"ids": sorted(set(ids.values()))})
        if not rows:
            break
        moved = dict(rows)
        ids = {k: moved.get(v, v) for k, v in ids.items()}
    return ids


def member_not_found(key: str) -> NotFound:
    return NotFound(
        f"no member matches {key!r}",
        hint="look members up by code, card number, phone or e-mail; "
             "`loyaltyctl members search TEXT` finds partial matches",
    )


# -- the member row ------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberRow:
    """A row of the members table, typed (what the ORM `Member` would hold)."""

    id: int
    code: str
    name: str
    status: str
    phone: str | None
    email: str | None
    card_number: str | None
    birth_date: date | None
    joined_at: datetime
    referred_by_id: int | None
    acquisition_campaign: str | None
    tags: str
    tier: str | None
    tier_since: datetime | None
    tier_floor: str | None
    tier_floor_until: date | None
    balance: int
    pending: int
    merged_into_id: int | None
    created_at: datetime
    updated_at: datetime


_MEMBER_SQL = (
    "SELECT id, code, name, status, phone, email, card_number, birth_date, joined_at,"
    " referred_by_id, acquisition_campaign, tags, tier, tier_since, tier_floor,"
    " tier_floor_until, balance, pending, merged_into_id, created_at, updated_at"
    " FROM members WHERE id = :id"
)


def member_by_id(*, reader: Reader, member_id: int) -> MemberRow | None:
    rows = reader.rows(_MEMBER_SQL, {"id": member_id})
    if not rows:
        return None
    r = rows[0]
    return MemberRow(
        id=r[0], code=r[1], name=r[2], status=r[3], phone=r[4], email=r[5], card_number=r[6],
        birth_date=as_date(r[7]), joined_at=as_datetime(r[8]), referred_by_id=r[9],  # type: ignore[arg-type]
        acquisition_campaign=r[10], tags=r[11], tier=r[12], tier_since=as_datetime(r[13]),
        tier_floor=r[14], tier_floor_until=as_date(r[15]), balance=as_int(r[16]),
        pending=as_int(r[17]), merged_into_id=r[18], created_at=as_datetime(r[19]),  # type: ignore[arg-type]
        updated_at=as_datetime(r[20]),  # type: ignore[arg-type]
    )


def find_member(*, reader: Reader, key: str, region: str, follow_merged: bool = False) -> MemberRow:
    """The member `key` names (code, card, phone in any format, e-mail); NotFound (exit 3)."""
    found = resolve_keys(reader=reader, keys=[key], region=region, follow_merged=follow_merged)
    member = member_by_id(reader=reader, member_id=found[key]) if key in found else None
    if member is None:
        raise member_not_found(key)
    return member


def split_tags(values: Iterable[str] | str | None) -> list[str]:
    """Tags from "vip, web" or ["vip", "web"] or a stored ",vip,web,": lower-case, unique."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        for part in str(v).split(","):
            t = ascii_digits(part).lower()
            if not t:
                continue
            if not _TAG_RE.match(t):
                raise ValueError(f"{part.strip()!r} is not a tag (no spaces, up to 40 characters)")
            if t not in out:
                out.append(t)
    return out


def member_record(m: Any) -> dict[str, Any]:
    """The member as plain data (tags as a list; dates and times as stored, naive UTC)."""
    return {
        "id": m.id,
        "code": m.code,
        "name": m.name,
        "status": m.status,
        "phone": m.phone,
        "email": m.email,
        "card_number": m.card_number,
        "birth_date": m.birth_date,
        "joined_at": m.joined_at,
        "tier": m.tier,
        "balance": m.balance,
        "pending": m.pending,
        "tags": split_tags(m.tags),
        "acquisition_campaign": m.acquisition_campaign,
    }


_REFERRALS_ALL = (
    "SELECT count(*), count(CASE WHEN EXISTS (SELECT 1 FROM purchases p"
    " WHERE p.member_id = m.id AND p.refunded_amount < p.amount) THEN 1 END)"
    " FROM members m WHERE m.referred_by_id = :id"
)
_REFERRALS_UNTIL = (
    "SELECT count(*), count(CASE WHEN EXISTS (SELECT 1 FROM purchases p"
    " WHERE p.member_id = m.id AND p.refunded_amount < p.amount AND p.occurred_at <= :now)"
    " THEN 1 END) FROM members m WHERE m.referred_by_id = :id"
)


def member_profile(*, reader: Reader, member: Any, now: datetime | None = None) -> dict[str, Any]:
    """The member's record, who referred them, how many they referred and how many of those
    bought (a purchase not refunded in full, up to `now` when given), what they were merged
    into."""
    profile = member_record(member)
    profile["tier_since"] = member.tier_since
    ids = [i for i in (member.referred_by_id, member.merged_into_id) if i]
    codes = dict(reader.rows("SELECT id, code FROM members WHERE id IN :ids", {"ids": ids})) \
        if ids else {}
    profile["referred_by"] = codes.get(member.referred_by_id)
    if now is None:
        referrals, buyers = reader.rows(_REFERRALS_ALL, {"id": member.id})[0]
    else:
        referrals, buyers = reader.rows(_REFERRALS_UNTIL, {"id": member.id, "now": now})[0]
    profile["referrals"] = as_int(referrals)
    profile["referred_buyers"] = as_int(buyers)
    profile["merged_into"] = codes.get(member.merged_into_id)
    profile["created_at"] = member.created_at
    profile["updated_at"] = member.updated_at
    return profile


# -- points --------------------------------------------------------------------------------

def balance_summary(*, reader: Reader, member: Any, today: date,
                    within_days: int = EXPIRING_WITHIN_DAYS) -> dict[str, Any]:
    """Available, pending and soon-expiring points of one member, from one query.

    `available` leaves out lots already past their date that the nightly expiry has not
    closed yet: they can no longer be spent.
    """
    due, expiring, next_expiry = reader.rows(
        "SELECT coalesce(sum(CASE WHEN expires_on <= :today THEN remaining ELSE 0 END), 0),"
        " coalesce(sum(CASE WHEN expires_on > :today AND expires_on <= :soon"
        " THEN remaining ELSE 0 END), 0),"
        " min(CASE WHEN expires_on > :today THEN expires_on END) FROM ledger_entries"
        " WHERE member_id = :mid AND remaining > 0 AND pending_until IS NULL",
        {"mid": member.id, "today": today, "soon": today + timedelta(days=within_days)},
    )[0]
    return {
        "member": member.code,
        "name": member.name,
        "status": member.status,
        "tier": member.tier,
        "available": member.balance - as_int(due),
        "pending": member.pending,
        "expiring_soon": as_int(expiring),
        "expiring_within_days": within_days,
        "next_expiry": as_date(next_expiry),
    }


def expiring_by_date(*, reader: Reader, member_id: int, today: date,
                     within_days: int = EXPIRING_WITHIN_DAYS) -> list[dict[str, Any]]:
    """Available points that expire after `today` and within `within_days`, per expiry date.

    `expires_on` is the first day the points can no longer be used (as on the lots).
    """
    rows = reader.rows(
        "SELECT expires_on, sum(remaining) FROM ledger_entries"
        " WHERE member_id = :mid AND remaining > 0 AND pending_until IS NULL"
        " AND expires_on > :today AND expires_on <= :soon"
        " GROUP BY expires_on ORDER BY expires_on",
        {"mid": member_id, "today": today, "soon": today + timedelta(days=within_days)},
    )
    return [{"expires_on": as_date(d), "points": as_int(p)} for d, p in rows]


def history(
    *,
    reader: Reader,
    member_id: int,
    kinds: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """The member's ledger, newest first, each entry with the available balance after it.

    The running balance is computed over the whole ledger before the filters apply, so it
    stays the true balance whatever is shown. Pending entries do not move it until they
    become available.
    """
    # One statement whatever the filters: a filter left out is switched off by its flag.
    rows = reader.rows(
        "SELECT id, effective_at, kind, points, expires_on, remaining, pending_until, ref,"
        " campaign, item_code, note, actor, running FROM ("
        "SELECT id, effective_at, kind, points, expires_on, remaining, pending_until, ref,"
        " campaign, item_code, note, actor,"
        " sum(CASE WHEN pending_until IS NULL THEN points ELSE 0 END) OVER (ORDER BY id)"
        " AS running FROM ledger_entries WHERE member_id = :mid) AS h"
        " WHERE (:any_kind = 1 OR kind IN :kinds)"
        " AND (:any_since = 1 OR effective_at >= :since)"
        " AND (:any_until = 1 OR effective_at <= :until)"
        " ORDER BY id DESC LIMIT :limit OFFSET :offset",
        {"mid": member_id, "limit": limit, "offset": offset,
         "any_kind": 0 if kinds else 1, "kinds": list(kinds or ()),
         "any_since": 0 if since is not None else 1, "since": since,
         "any_until": 0 if until is not None else 1, "until": until},
    )
    return [
        {
            "id": r[0],
            "at": as_datetime(r[1]),
            "kind": r[2],
            "points": as_int(r[3]),
            "balance": as_int(r[12]),
            "pending_until": as_datetime(r[6]),
            "expires_on": as_date(r[4]),
            "remaining": None if r[5] is None else as_int(r[5]),
            "ref": r[7],
            "detail": r[9] or r[8] or r[10],
            "actor": r[11],
        }
        for r in rows
    ]


def has_due_pending(*, reader: Reader, member_id: int, now: datetime) -> bool:
    """Whether the member has pending entries whose holding period is over."""
    return bool(reader.rows(
        "SELECT id FROM ledger_entries WHERE member_id = :mid"
        " AND pending_until IS NOT NULL AND pending_until <= :now LIMIT 1",
        {"mid": member_id, "now": now}))


# -- tiers ---------------------------------------------------------------------------------

_METRIC_SQL = {
    "spend": "SELECT sum(p.amount - p.refunded_amount) FROM purchases p"
             " WHERE p.member_id = :mid AND p.occurred_at > :start AND p.occurred_at <= :now",
    "purchases": "SELECT count(*) FROM purchases p"
                 " WHERE p.member_id = :mid AND p.occurred_at > :start AND p.occurred_at <= :now"
                 " AND p.refunded_amount < p.amount",
    # The purchase's own earn lot and what refunds took back from that lot (not the referral
    # bonuses it triggered, which carry its id too), unless its points are still pending.
    "points": "SELECT sum(le.points) FROM purchases p"
              " JOIN ledger_entries le ON le.purchase_id = p.id AND le.member_id = p.member_id"
              " LEFT JOIN ledger_entries src ON src.id = le.source_id"
              " WHERE p.member_id = :mid AND p.occurred_at > :start AND p.occurred_at <= :now"
              " AND NOT EXISTS (SELECT 1 FROM ledger_entries pe WHERE pe.purchase_id = p.id"
              " AND pe.kind = 'earn' AND pe.pending_until IS NOT NULL AND pe.pending_until > :now)"
              " AND (le.kind = 'earn' OR (le.kind IN ('clawback', 'cancel') AND src.kind = 'earn'))",
}


def metric_value(*, reader: Reader, config: Config, member_id: int, now: datetime) -> int:
    """The member's qualifying metric over the window (now - window_days, now]."""
    start = now - timedelta(days=config.tiers.window_days)
    rows = reader.rows(_METRIC_SQL[config.tiers.metric],
                       {"mid": member_id, "start": start, "now": now})
    return as_int(rows[0][0]) if rows else 0


def tier_progress(*, reader: Reader, config: Config, member: Any, now: datetime) -> dict[str, Any]:
    """Where a member stands: metric now, the next tier and what is missing, and how long
    the current tier is kept (the figures of `services.tiers.progress` the screen shows)."""
    from loyaltyctl.rules import tiers as rules
    from loyaltyctl.timeutil import local_date

    tz = config.program.timezone
    levels = config.tiers.levels
    today = local_date(now, tz)
    value = metric_value(reader=reader, config=config, member_id=member.id, now=now)
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
        "metric": config.tiers.metric,
        "window_days": config.tiers.window_days,
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


# -- the support screen --------------------------------------------------------------------


def member_screen(
    *,
    reader: Reader,
    config: Config,
    member: Any,
    now: datetime,
    today: date,
    recent: int = RECENT_ENTRIES,
    within_days: int = EXPIRING_WITHIN_DAYS,
) -> dict[str, Any]:
    """One member's support screen as plain data (stable keys; personal data unmasked).

    Keys: the `member_profile` record (code, name, status, phone, email, card_number,
    birth_date, joined_at, tags, acquisition_campaign, referred_by, merged_into, referrals,
    referred_buyers, tier, tier_since, balance, pending, ...), then
    - tier_name, tier_kept_through (last local day the tier is kept whatever the metric
      says, None if not retained) and tier_progress (the `tiers.progress` figures, or None
      when the program has no tiers);
    - available (balance less lots past their date that the nightly expiry has not
      closed), value (available x point_value, in minor units), currency, decimals;
    - expiring_within_days, expiring_soon (their sum), next_expiry (the first expiry date
      after today, even beyond the window) and expiring ([{expires_on, points}]);
    - recent: the last `recent` ledger entries, newest first, each with the available
      balance after it (pending entries do not move it).
    """
    program = config.program
    data = member_profile(reader=reader, member=member, now=now)
    progress = tier_progress(reader=reader, config=config, member=member, now=now) \
        if config.tiers.levels else None
    current = config.tiers.get(member.tier)
    data["tier_name"] = current.name if current else None
    data["tier_kept_through"] = progress["kept_through"] if progress else None
    data["tier_progress"] = None if progress is None else {
        "metric": progress["metric"],
        "window_days": progress["window_days"],
        "value": progress["metric_value"],
        "next_tier": progress["next_tier"],
        "next_tier_name": (config.tiers.get(progress["next_tier"]).name  # type: ignore[union-attr]
                           if progress["next_tier"] else None),
        "next_threshold": progress["next_threshold"],
        "needed_for_next": progress["needed_for_next"],
        "keep_threshold": progress["keep_threshold"],
        "needed_to_keep": progress["needed_to_keep"],
        "floor": progress["floor"],
        "floor_until": progress["floor_until"],
    }
    bal = balance_summary(reader=reader, member=member, today=today, within_days=within_days)
    available = int(bal["available"])
    data["available"] = available
    data["value"] = available * program.point_value if available > 0 else 0
    data["currency"] = program.currency
    data["decimals"] = program.decimals
    data["expiring_within_days"] = within_days
    data["expiring_soon"] = int(bal["expiring_soon"])
    data["next_expiry"] = bal["next_expiry"]
    data["expiring"] = expiring_by_date(reader=reader, member_id=member.id, today=today,
                                        within_days=within_days) if bal["expiring_soon"] else []
    data["recent"] = [
        {"id": r["id"], "at": r["at"], "kind": r["kind"], "points": r["points"],
         "balance": r["balance"], "pending_until": r["pending_until"],
         "expires_on": r["expires_on"], "ref": r["ref"], "note": r["detail"]}
        for r in history(reader=reader, member_id=member.id, limit=recent)
    ]
    return data


# -- the two look-ups, unless a write is due -----------------------------------------------


def balance_lookup(*, reader: Reader, key: str, region: str, now: datetime,
                   today: date) -> dict[str, Any] | None:
    """`balance_summary` of the member `key` names; None when some of their pending points
    are due for activation (a ledger write: the caller takes the ORM path)."""
    m = find_member(reader=reader, key=key, region=region)
    if m.pending and has_due_pending(reader=reader, member_id=m.id, now=now):
        return None
    return balance_summary(reader=reader, member=m, today=today)


def screen_lookup(*, reader: Reader, config: Config, key: str, now: datetime,
                  today: date) -> dict[str, Any] | None:
    """`member_screen` of the member `key` names; None when pending points are due (as
    `balance_lookup`)."""
    m = find_member(reader=reader, key=key, region=config.program.phone_region)
    if m.pending and has_due_pending(reader=reader, member_id=m.id, now=now):
        return None
    return member_screen(reader=reader, config=config, member=m, now=now, today=today)
