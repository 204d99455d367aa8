"""All tables, in one module (SQLModel). Schema changes go through Alembic migrations.

Design notes:
- Money is integer minor units (BigInteger: rial amounts pass 2**31), points are integers.
- Every hot table carries `member_id` so the schema can be distributed by member.
- A *lot* is a ledger entry with points > 0 and a non-null `remaining`; debits record which
  lots they consumed in `allocations`. A reversal writes negative allocations on the very lots
  its redemption consumed, so `remaining = points - sum(allocations)` holds for every lot.
- `members.balance` / `members.pending` cache the ledger and are updated in the same
  transaction as every ledger write; `db check` proves they agree.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Column, Date, DateTime, Index, Integer, String, Text, text
from sqlmodel import Field, SQLModel

from loyaltyctl.timeutil import utcnow

# Ledger entry kinds. Credits create lots; debits consume them.
CREDIT_KINDS = ("earn", "signup", "birthday", "referral", "event", "campaign", "adjust", "opening")
DEBIT_KINDS = ("redeem", "adjust", "expire", "clawback", "cancel")
ENTRY_KINDS = (
    "earn", "signup", "birthday", "referral", "event", "campaign", "adjust", "opening",
    "redeem", "expire", "clawback", "reversal", "cancel",
)

MEMBER_STATUSES = ("active", "suspended", "closed")


def _ts(nullable: bool = False) -> Column:
    # Naive UTC timestamps: plain DATETIME in SQLite, timestamp without time zone in PG.
    return Column(DateTime, nullable=nullable)



class Member(SQLModel, table=True):
    __tablename__ = "members"
    __table_args__ = (
        Index("ix_members_status", "status"),
        Index("ix_members_tier", "tier"),
        Index("ix_members_referred_by", "referred_by_id"),
        Index("ix_members_joined_at", "joined_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    code: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    phone: str | None = Field(default=None, sa_column=Column(String(20), unique=True))
    email: str | None = Field(default=None, sa_column=Column(String(254), unique=True))
    card_number: str | None = Field(default=None, sa_column=Column(String(64), unique=True))
    birth_date: date | None = Field(default=None, sa_column=Column(Date))
    joined_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    status: str = Field(default="active", sa_column=Column(String(16), nullable=False, server_default="active"))
    referred_by_id: int | None = Field(default=None, foreign_key="members.id")
    acquisition_campaign: str | None = Field(default=None, sa_column=Column(String(64)))
    tags: str = Field(default="", sa_column=Column(String(500), nullable=False, server_default=""))
    """Comma-separated with leading and trailing commas (",vip,web,") for exact LIKE matching."""
    tier: str | None = Field(default=None, sa_column=Column(String(40)))
    tier_since: datetime | None = Field(default=None, sa_column=_ts(True))
    tier_floor: str | None = Field(default=None, sa_column=Column(String(40)))
    tier_floor_until: date | None = Field(default=None, sa_column=Column(Date))
    balance: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    pending: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    merged_into_id: int | None = Field(default=None, foreign_key="members.id")
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Purchase(SQLModel, table=True):
    __tablename__ = "purchases"
    __table_args__ = (
        # Covering index for per-member aggregates (tiers, RFM, reports).
        Index("ix_purchases_member_time", "member_id", "occurred_at", "amount", "refunded_amount"),
        Index("ix_purchases_occurred_at", "occurred_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    member_id: int = Field(foreign_key="members.id", nullable=False)
    ref: str = Field(sa_column=Column(String(100), nullable=False, unique=True))
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(sa_column=Column(String(3), nullable=False))
    occurred_at: datetime = Field(sa_column=_ts())
    category: str | None = Field(default=None, sa_column=Column(String(64)))
    channel: str | None = Field(default=None, sa_column=Column(String(64)))
    refunded_amount: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    points: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    """Points this purchase earned (base + campaign), before any clawback."""
    campaign: str | None = Field(default=None, sa_column=Column(String(64)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class LedgerEntry(SQLModel, table=True):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_member", "member_id", "id"),
        # Open lots by expiry date: the nightly expiry run and earliest-expiring-first debits.
        Index(
            "ix_ledger_open_lots",
            "expires_on",
            "member_id",
            sqlite_where=text("remaining > 0"),
            postgresql_where=text("remaining > 0"),
        ),
        Index("ix_ledger_purchase", "purchase_id"),
        Index("ix_ledger_kind_time", "kind", "effective_at"),
        # Pending entries by the end of their holding period: the nightly run activates the
        # due ones without reading the whole ledger (only pending rows are in it).
        Index(
            "ix_ledger_pending",
            "pending_until",
            sqlite_where=text("pending_until IS NOT NULL"),
            postgresql_where=text("pending_until IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    member_id: int = Field(foreign_key="members.id", nullable=False)
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    points: int = Field(sa_column=Column(BigInteger, nullable=False))
    effective_at: datetime = Field(sa_column=_ts())
    expires_on: date | None = Field(default=None, sa_column=Column(Date))
    """First local day on which the lot is no longer usable (None: never expires)."""
    remaining: int | None = Field(default=None, sa_column=Column(BigInteger))
    """Unconsumed points of a lot; None for entries that are not lots."""
    pending_until: datetime | None = Field(default=None, sa_column=_ts(True))
    """A pending lot becomes available at this instant; None once available."""
    purchase_id: int | None = Field(default=None, foreign_key="purchases.id")
    campaign: str | None = Field(default=None, sa_column=Column(String(64)))
    item_code: str | None = Field(default=None, sa_column=Column(String(64)))
    """The reward redeemed, or the event rewarded (survey, review, ...)."""
    ref: str | None = Field(default=None, sa_column=Column(String(100)))
    idem_key: str | None = Field(default=None, sa_column=Column(String(160), unique=True))
    source_id: int | None = Field(default=None, foreign_key="ledger_entries.id")
    """The entry this one acts on: the lot an expiry closes, the redemption a reversal
    undoes, the earn entry a clawback claws back."""
    actor: str = Field(default="system", sa_column=Column(String(64), nullable=False))
    note: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Allocation(SQLModel, table=True):
    """Which lots a debit consumed (positive points), or a reversal restored (negative)."""

    __tablename__ = "allocations"
    __table_args__ = (
        Index("ix_alloc_debit", "debit_id"),
        Index("ix_alloc_lot", "lot_id"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    member_id: int = Field(foreign_key="members.id", nullable=False)
    debit_id: int = Field(foreign_key="ledger_entries.id", nullable=False)
    lot_id: int = Field(foreign_key="ledger_entries.id", nullable=False)
    points: int = Field(sa_column=Column(BigInteger, nullable=False))


class TierChange(SQLModel, table=True):
    __tablename__ = "tier_history"
    __table_args__ = (Index("ix_tier_history_member", "member_id", "changed_at"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    member_id: int = Field(foreign_key="members.id", nullable=False)
    from_tier: str | None = Field(default=None, sa_column=Column(String(40)))
    to_tier: str | None = Field(default=None, sa_column=Column(String(40)))
    changed_at: datetime = Field(sa_column=_ts())
    reason: str = Field(sa_column=Column(String(32), nullable=False))
    metric_value: int | None = Field(default=None, sa_column=Column(BigInteger))
    actor: str = Field(default="system", sa_column=Column(String(64), nullable=False))


class AuditRow(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_at", "at"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    actor: str = Field(sa_column=Column(String(64), nullable=False))
    command: str = Field(sa_column=Column(String(64), nullable=False))
    target: str | None = Field(default=None, sa_column=Column(String(100)))
    rows: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    details: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    """JSON of what changed, with personal data redacted."""


class JobLock(SQLModel, table=True):
    """One row per cron job currently running (expire, tiers recalc, birthday bonuses)."""

    __tablename__ = "job_locks"

    name: str = Field(sa_column=Column(String(64), primary_key=True))
    holder: str = Field(sa_column=Column(String(200), nullable=False))
    acquired_at: datetime = Field(sa_column=_ts())


TABLES_IN_ORDER = (
    "members", "purchases", "ledger_entries", "allocations", "tier_history", "audit_log", "job_locks",
)
