"""Members: enrolment, look-up, search, updates, status changes and merging.

Every command that takes a member uses `resolve_member` (one member) or
`resolve_members_bulk` (a batch, a few queries in all), so a member is found the same way
everywhere: by e-mail when the key contains '@', else by exact code, then card number, then
phone number normalised to E.164 with the program's region.

Input values are normalised by `normalize_fields` (shared with the import): phones to E.164,
e-mails lower-cased, Persian digits accepted, dates in the program calendar, tags lower-case
and stored as ",a,b," so that one tag is found exactly with LIKE '%,a,%'.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from loyaltyctl.db.lite import SessionReader
from loyaltyctl.db.models import (
    MEMBER_STATUSES,
    Allocation,
    LedgerEntry,
    Member,
    Purchase,
    TierChange,
)
from loyaltyctl.errors import InvalidInput, NotFound, Refused
from loyaltyctl.normalize import (
    ascii_digits,
    clean_text,
    normalize_email,
    normalize_phone,
    parse_date,
)
from loyaltyctl.services import lookup
from loyaltyctl.services.lookup import card_key, split_tags
from loyaltyctl.timeutil import parse_instant, utcnow

MEMBERS: Table = Member.__table__  # type: ignore[attr-defined]

# Fields a person can set, with the CLI option that sets each (used in error messages).
OPTION_NAMES = {
    "code": "CODE",
    "name": "--name",
    "phone": "--phone",
    "email": "--email",
    "card_number": "--card",
    "birth_date": "--birth-date",
    "joined_at": "--joined-at",
    "status": "--status",
    "acquisition_campaign": "--campaign",
    "tags": "--tag",
    "referred_by": "--referred-by",
}
CONTACT_FIELDS = ("phone", "email", "card_number")
"""Fields that identify one person: unique across members."""
CLEARABLE = ("phone", "email", "card_number", "birth_date", "acquisition_campaign", "tags",
             "referred_by")

_CODE_RE = re.compile(r"^[^\s@,\x00-\x1f\x7f]{1,64}$")
_CARD_RE = re.compile(r"^[A-Z0-9]{1,64}$")
_PHONE_KEY_STRIP = re.compile(r"[\s\-().]")


class FieldError(ValueError):
    """A value that cannot be accepted, with the field it was given for."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class FieldRules:
    """What normalisation needs from the program: phone region, calendar, zone, campaigns."""

    region: str = "IR"
    calendar: str = "gregorian"
    timezone: str = "UTC"
    campaigns: frozenset[str] | None = None
    """Known campaign codes (and acquisition codes); None accepts any well-formed code."""
    today: date | None = None
    """Birth dates after this day are refused."""

    @classmethod
    def from_config(cls, config: Any, today: date | None = None) -> FieldRules:
        p = config.program
        codes = {c.code for c in config.campaigns}
        codes |= {c.acquisition_code for c in config.campaigns if c.acquisition_code}
        return cls(region=p.phone_region, calendar=p.calendar, timezone=p.timezone,
                   campaigns=frozenset(codes), today=today)


# -- normalisation --------------------------------------------------------------------------


def clean_code(text: Any) -> str:
    s = ascii_digits(str(text)) if text is not None else ""
    if not s:
        raise ValueError("is empty")
    if not _CODE_RE.match(s):
        raise ValueError(f"{s!r} is not a member code (up to 64 characters, no spaces, "
                         "no '@' or ',')")
    return s


def clean_card(text: Any) -> str:
    s = card_key(text)
    if not _CARD_RE.match(s):
        raise ValueError(f"{text!r} is not a card number (letters and digits, up to 64)")
    return s


def join_tags(tags: Sequence[str]) -> str:
    s = f",{','.join(tags)}," if tags else ""
    if len(s) > 500:
        raise ValueError("too many tags (500 characters in all)")
    return s


def normalize_fields(raw: Mapping[str, Any], rules: FieldRules) -> dict[str, Any]:
    """Normalise the member fields present in `raw`; '' or None means "no value".

    Raises FieldError naming the first field that cannot be accepted. `referred_by` is
    passed through cleaned (it is a member key, resolved by the caller). `joined_at` and
    `status` without a value come back as None: "keep as is" (or the default when new).
    """
    out: dict[str, Any] = {}
    for field, value in raw.items():
        if isinstance(value, str):
            value = value.strip()
        empty = value is None or value == "" or (isinstance(value, list | tuple) and not value)
        try:
            if field == "code":
                out[field] = clean_code(value)
            elif field == "name":
                if empty:
                    raise ValueError("is empty")
                out[field] = clean_text(str(value), max_len=200, field="name")
            elif empty:
                out[field] = "" if field == "tags" else None
            elif field == "phone":
                out[field] = normalize_phone(str(value), rules.region)
            elif field == "email":
                out[field] = normalize_email(str(value))
            elif field == "card_number":
                out[field] = clean_card(value)
            elif field == "birth_date":
                d = parse_date(value, rules.calendar)
                if d.year < 1900 or (rules.today is not None and d > rules.today):
                    raise ValueError(f"{value!s} is not a plausible birth date")
                out[field] = d
            elif field == "joined_at":
                if isinstance(value, datetime):
                    out[field] = value.replace(microsecond=0)
                else:
                    out[field] = parse_instant(str(value), tz=rules.timezone,
                                               calendar=rules.calendar).replace(microsecond=0)
            elif field == "status":
                s = str(value).lower()
                if s not in MEMBER_STATUSES:
                    raise ValueError(f"{value!r} is not a status ({', '.join(MEMBER_STATUSES)})")
                out[field] = s
            elif field == "acquisition_campaign":
                c = clean_text(ascii_digits(str(value)), max_len=64, field="campaign")
                if rules.campaigns is not None and c not in rules.campaigns:
                    known = ", ".join(sorted(rules.campaigns)) or "none are configured"
                    raise ValueError(f"unknown campaign {c!r} (known: {known})")
                out[field] = c
            elif field == "tags":
                out[field] = join_tags(split_tags(value))
            elif field == "referred_by":
                out[field] = ascii_digits(str(value))
            else:
                raise ValueError("is not a member field")
        except FieldError:
            raise
        except ValueError as exc:
            raise FieldError(field, str(exc)) from None
    return out


def _field_error_to_input(exc: FieldError, names: Mapping[str, str] = OPTION_NAMES) -> InvalidInput:
    return InvalidInput(f"{names.get(exc.field, exc.field)}: {exc.reason}")


# -- look-up --------------------------------------------------------------------------------


# The rules and the SQL live in `services/lookup.py`, shared with the fast read-only path of
# `points balance` and `members show`; these run them through the session.
_phone_or_none = lookup.phone_key
_email_key = lookup.email_key


def _follow_merges(session: Session, ids: dict[Any, int]) -> dict[Any, int]:
    """Replace ids of merged members by their survivors (a chain is followed to its end)."""
    return lookup.follow_merges(reader=SessionReader(session), ids=ids)


def resolve_member(*, session: Session, key: str, region: str,
                   follow_merged: bool = False) -> Member:
    """The member a support person or a script means by `key`.

    '@' means an e-mail address (compared lower-cased); anything else is tried as an exact
    member code, then a card number, then a phone number in any common format (0912...,
    +98..., 98..., Persian digits, spaces and dashes). With follow_merged, a member merged
    into another resolves to the survivor. Raises NotFound (exit 3) naming the key.
    """
    found = resolve_members_bulk(session=session, keys=[key], region=region,
                                 follow_merged=follow_merged)
    if key not in found:
        raise lookup.member_not_found(key)
    member = session.get(Member, found[key])
    assert member is not None
    return member


def resolve_members_bulk(*, session: Session, keys: Iterable[str], region: str,
                         follow_merged: bool = False) -> dict[str, int]:
    """{key: member id} for every key that names a member (missing keys are left out).

    The same rules as `resolve_member`, in two queries per 5,000 keys: one for e-mail keys,
    one for code / card / phone keys (then picked in that order of priority).
    """
    return lookup.resolve_keys(reader=SessionReader(session), keys=keys, region=region,
                               follow_merged=follow_merged)


def ensure_active(member: Member) -> None:
    """Refuse (exit 5) earning or redeeming for a suspended or closed member."""
    if member.status == "active":
        return
    if member.merged_into_id is not None:
        raise Refused(f"member {member.code} is closed: it was merged into member "
                      f"id {member.merged_into_id}; use the surviving member")
    if member.status == "suspended":
        raise Refused(f"member {member.code} is suspended",
                      hint=f"`loyaltyctl members reactivate {member.code}` lifts the suspension")
    raise Refused(f"member {member.code} is {member.status}; a closed membership is final")


# -- records --------------------------------------------------------------------------------


def member_record(m: Member) -> dict[str, Any]:
    """The member as plain data (tags as a list; dates and times as stored, naive UTC)."""
    return lookup.member_record(m)


def member_profile(*, session: Session, member_id: int,
                   now: datetime | None = None) -> dict[str, Any]:
    """The member's record, who referred them, how many they referred and how many of those
    bought (a purchase not refunded in full, up to `now` when given), what they were merged
    into. The support screen (`services/support.py`) adds tier progress, points and history.
    """
    m = session.get(Member, member_id)
    if m is None:
        raise NotFound(f"no member with id {member_id}")
    return lookup.member_profile(reader=SessionReader(session), member=m, now=now)


# -- enrolment and updates ------------------------------------------------------------------


def _collisions(session: Session, values: Mapping[str, Any], own_id: int | None) -> None:
    """Refuse (exit 5) a code, phone, e-mail or card that belongs to another member."""
    conds = [MEMBERS.c[f] == values[f] for f in ("code", *CONTACT_FIELDS) if values.get(f)]
    if not conds:
        return
    q = select(MEMBERS.c.id, MEMBERS.c.code, MEMBERS.c.phone, MEMBERS.c.email,
               MEMBERS.c.card_number).where(or_(*conds))
    if own_id is not None:
        q = q.where(MEMBERS.c.id != own_id)
    for row in session.execute(q.order_by(MEMBERS.c.id)):
        for f in ("code", *CONTACT_FIELDS):
            if values.get(f) and getattr(row, f) == values[f]:
                label = "card" if f == "card_number" else ("e-mail" if f == "email" else f)
                if f == "code":
                    raise Refused(f"member code {values[f]} is already taken",
                                  hint="choose another code, or update that member")
                raise Refused(f"{label} {values[f]} already belongs to member {row.code}",
                              hint="one person is one member: update or merge instead")


def _resolve_referrer(session: Session, key: str, region: str, own_id: int | None) -> int:
    try:
        ref = resolve_member(session=session, key=key, region=region, follow_merged=True)
    except NotFound:
        raise NotFound(f"--referred-by: no member matches {key!r}") from None
    if own_id is not None and ref.id == own_id:
        raise InvalidInput("--referred-by: a member cannot refer themselves")
    if own_id is not None:
        # Walk up the referral chain: the new referrer must not have been referred,
        # directly or indirectly, by this member (a referral cycle).
        seen = {ref.id}
        current = ref.referred_by_id
        while current is not None and current not in seen:
            if current == own_id:
                raise InvalidInput(f"--referred-by: {ref.code} was referred (directly or "
                                   "indirectly) by this member; referrals cannot form a cycle")
            seen.add(current)
            current = session.execute(
                select(MEMBERS.c.referred_by_id).where(MEMBERS.c.id == current)).scalar()
    assert ref.id is not None
    return ref.id


def add_member(
    *,
    session: Session,
    code: str,
    name: str,
    rules: FieldRules,
    now: datetime,
    phone: str | None = None,
    email: str | None = None,
    card_number: str | None = None,
    birth_date: str | date | None = None,
    joined_at: str | datetime | None = None,
    referred_by: str | None = None,
    campaign: str | None = None,
    tags: Sequence[str] = (),
) -> Member:
    """Enrol one member; returns it flushed (with its id).

    Invalid values raise InvalidInput naming the option (exit 4); a code, phone, e-mail or
    card that already belongs to a member raises Refused (exit 5). Enrolment bonuses are
    granted by the caller right after this returns, in the same transaction.
    """
    raw = {"code": code, "name": name, "phone": phone, "email": email,
           "card_number": card_number, "birth_date": birth_date, "joined_at": joined_at,
           "acquisition_campaign": campaign, "tags": list(tags)}
    try:
        values = normalize_fields(raw, rules)
    except FieldError as exc:
        raise _field_error_to_input(exc) from None
    _collisions(session, values, None)
    ref_id = _resolve_referrer(session, referred_by, rules.region, None) if referred_by else None
    stamp = utcnow()
    member = Member(
        code=values["code"], name=values["name"], phone=values["phone"], email=values["email"],
        card_number=values["card_number"], birth_date=values["birth_date"],
        joined_at=values["joined_at"] or now.replace(microsecond=0), status="active",
        referred_by_id=ref_id, acquisition_campaign=values["acquisition_campaign"],
        tags=values["tags"], balance=0, pending=0, created_at=stamp, updated_at=stamp,
    )
    session.add(member)
    _flush_or_refuse(session)
    return member


def _flush_or_refuse(session: Session) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        # Another process enrolled the same code/phone/e-mail since we checked.
        raise Refused("a member with the same code, phone, e-mail or card was just added "
                      f"by someone else ({type(exc.orig).__name__}); look it up and retry") from None


def update_member(
    *,
    session: Session,
    member: Member,
    changes: Mapping[str, Any],
    rules: FieldRules,
    add_tags: Sequence[str] = (),
    remove_tags: Sequence[str] = (),
) -> dict[str, tuple[Any, Any]]:
    """Apply the given field changes (None clears a clearable field); returns {field: (old, new)}.

    `changes` holds raw values keyed by field (see OPTION_NAMES); `referred_by` is a member key.
    Fields whose new value equals the old one are left out of the result. A closed member
    cannot be changed (exit 5).
    """
    if member.status == "closed":
        raise Refused(f"member {member.code} is closed; a closed membership is final")
    for f, v in changes.items():
        if v is None and f not in CLEARABLE:
            raise InvalidInput(f"{OPTION_NAMES.get(f, f)}: cannot be cleared")
    try:
        values = normalize_fields({k: v for k, v in changes.items() if k != "referred_by"}, rules)
        extra_add = split_tags(list(add_tags))
        extra_remove = split_tags(list(remove_tags))
    except FieldError as exc:
        raise _field_error_to_input(exc) from None
    except ValueError as exc:
        raise InvalidInput(f"--add-tag/--remove-tag: {exc}") from None
    if extra_add or extra_remove:
        tags = split_tags(values.get("tags", member.tags))
        tags = [t for t in tags if t not in extra_remove] + [t for t in extra_add if t not in tags
                                                           and t not in extra_remove]
        values["tags"] = join_tags(tags)
    for f in ("joined_at", "status"):
        if f in values and values[f] is None:
            del values[f]
    if "referred_by" in changes:
        key = changes["referred_by"]
        values["referred_by_id"] = (_resolve_referrer(session, key, rules.region, member.id)
                                    if key else None)
    diff = {f: (getattr(member, f), v) for f, v in values.items() if getattr(member, f) != v}
    if not diff:
        return {}
    _collisions(session, {f: new for f, (_old, new) in diff.items()}, member.id)
    for f, (_old, new) in diff.items():
        setattr(member, f, new)
    member.updated_at = utcnow()
    _flush_or_refuse(session)
    return diff


# -- status ---------------------------------------------------------------------------------

TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "suspend": (("active",), "suspended"),
    "reactivate": (("suspended",), "active"),
    "close": (("active", "suspended"), "closed"),
}
"""action -> (statuses it may start from, status it leads to). Closing is final."""


def change_status(*, session: Session, member: Member, action: str) -> tuple[str, str]:
    """Suspend, reactivate or close a member; returns (old, new). Refused (exit 5) otherwise."""
    allowed, target = TRANSITIONS[action]
    old = member.status
    if old not in allowed:
        if old == target:
            raise Refused(f"member {member.code} is already {old}")
        # Every other refusal starts from "closed": closing is final.
        raise Refused(f"cannot {action} member {member.code}: it is closed, and a closed "
                      "membership is final")
    member.status = target
    member.updated_at = utcnow()
    session.flush()
    return old, target


# -- merging --------------------------------------------------------------------------------

_MOVED_TABLES = (
    ("purchases", Purchase),
    ("ledger_entries", LedgerEntry),
    ("allocations", Allocation),
    ("tier_history", TierChange),
)


def merge_members(*, session: Session, duplicate: Member, survivor: Member) -> dict[str, Any]:
    """Fold a duplicate member into the survivor and close the duplicate.

    Set-based: one UPDATE per table moves purchases, ledger entries (lots keep their
    allocations and expiry dates), allocations, tier history and the members the duplicate
    referred. The duplicate's cached balance and pending points move with its ledger, so
    `db check` holds. The survivor also takes the duplicate's phone, e-mail, card and birth
    date where it has none, its tags, and the earlier join date. Returns counts of what moved.
    """
    if duplicate.id == survivor.id:
        raise Refused(f"cannot merge member {duplicate.code} into itself")
    for m, role in ((duplicate, "duplicate"), (survivor, "survivor")):
        if m.status == "closed":
            extra = " (it was already merged)" if m.merged_into_id else ""
            raise Refused(f"cannot merge: the {role} {m.code} is closed{extra}")
    # Lock both rows (PostgreSQL) so no concurrent write changes a balance we are adding.
    session.execute(select(MEMBERS.c.id).where(
        MEMBERS.c.id.in_([duplicate.id, survivor.id])).with_for_update())
    session.refresh(duplicate)
    session.refresh(survivor)
    dup_id, surv_id = duplicate.id, survivor.id
    counts: dict[str, Any] = {}
    for name, model in _MOVED_TABLES:
        table = model.__table__  # type: ignore[attr-defined]
        counts[name] = session.execute(
            update(table).where(table.c.member_id == dup_id).values(member_id=surv_id)
        ).rowcount
    counts["referrals"] = session.execute(
        update(MEMBERS).where(MEMBERS.c.referred_by_id == dup_id, MEMBERS.c.id != surv_id)
        .values(referred_by_id=surv_id)
    ).rowcount
    counts["balance"] = duplicate.balance
    counts["pending"] = duplicate.pending

    taken: list[str] = []
    moved_values = {}
    for f in (*CONTACT_FIELDS, "birth_date", "acquisition_campaign"):
        if getattr(survivor, f) is None and getattr(duplicate, f) is not None:
            moved_values[f] = getattr(duplicate, f)
            taken.append(f)
    stamp = utcnow()
    # Free the unique contact values on the duplicate before the survivor takes them.
    session.execute(update(MEMBERS).where(MEMBERS.c.id == dup_id).values(
        status="closed", merged_into_id=surv_id, balance=0, pending=0, updated_at=stamp,
        **{f: None for f in moved_values if f in CONTACT_FIELDS}))
    tags = split_tags(survivor.tags) + [t for t in split_tags(duplicate.tags)
                                        if t not in split_tags(survivor.tags)]
    new_ref = survivor.referred_by_id
    if new_ref == dup_id:
        new_ref = duplicate.referred_by_id if duplicate.referred_by_id != surv_id else None
    session.execute(update(MEMBERS).where(MEMBERS.c.id == surv_id).values(
        balance=MEMBERS.c.balance + duplicate.balance,
        pending=MEMBERS.c.pending + duplicate.pending,
        joined_at=min(survivor.joined_at, duplicate.joined_at),
        tags=join_tags(tags), referred_by_id=new_ref, updated_at=stamp, **moved_values))
    session.flush()
    session.refresh(duplicate)
    session.refresh(survivor)
    counts["fields_taken"] = taken
    return counts


# -- listing and search ---------------------------------------------------------------------

LIST_COLUMNS = (MEMBERS.c.id, MEMBERS.c.code, MEMBERS.c.name, MEMBERS.c.status, MEMBERS.c.tier,
                MEMBERS.c.phone, MEMBERS.c.email, MEMBERS.c.card_number, MEMBERS.c.birth_date,
                MEMBERS.c.balance, MEMBERS.c.pending, MEMBERS.c.joined_at, MEMBERS.c.tags)


def _rows(result: Any) -> list[dict[str, Any]]:
    out = []
    for r in result.mappings():
        d = dict(r)
        d["tags"] = split_tags(d["tags"])
        out.append(d)
    return out


def list_members(
    *,
    session: Session,
    status: str | None = None,
    tier: str | None = None,
    tag: str | None = None,
    joined_from: datetime | None = None,
    joined_to: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of members in id order, and how many match in all."""
    conds = []
    if status:
        if status not in MEMBER_STATUSES:
            raise InvalidInput(f"--status: {status!r} is not a status "
                               f"({', '.join(MEMBER_STATUSES)})")
        conds.append(MEMBERS.c.status == status)
    if tier:
        conds.append(MEMBERS.c.tier == tier)
    if tag:
        try:
            tags = split_tags(tag)
        except ValueError as exc:
            raise InvalidInput(f"--tag: {exc}") from None
        for t in tags:
            conds.append(MEMBERS.c.tags.like(f"%,{_like_escape(t)},%", escape="\\"))
    if joined_from:
        conds.append(MEMBERS.c.joined_at >= joined_from)
    if joined_to:
        conds.append(MEMBERS.c.joined_at <= joined_to)
    total = session.execute(select(func.count()).select_from(MEMBERS).where(*conds)).scalar_one()
    rows = _rows(session.execute(
        select(*LIST_COLUMNS).where(*conds).order_by(MEMBERS.c.id).limit(limit).offset(offset)))
    return rows, total


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_members(*, session: Session, text: str, region: str,
                   limit: int = 20) -> list[dict[str, Any]]:
    """Members matching `text`: name substring (any case), phone suffix (digits only, Persian
    digits too), e-mail substring, exact code or card number. In id order."""
    t = ascii_digits(text)
    if not t:
        raise InvalidInput("search text is empty")
    esc = _like_escape(t.lower())
    conds = [
        func.lower(MEMBERS.c.name).like(f"%{esc}%", escape="\\"),
        MEMBERS.c.email.like(f"%{esc}%", escape="\\"),
        MEMBERS.c.code == t,
        MEMBERS.c.card_number == card_key(t),
    ]
    digits = _PHONE_KEY_STRIP.sub("", t).lstrip("+")
    if digits.isdigit() and len(digits) >= 3:
        conds.append(MEMBERS.c.phone.like(f"%{digits}"))
        phone = _phone_or_none(t, region)
        if phone:
            conds.append(MEMBERS.c.phone == phone)
    return _rows(session.execute(
        select(*LIST_COLUMNS).where(or_(*conds)).order_by(MEMBERS.c.id).limit(limit)))
