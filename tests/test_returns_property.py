"""Random sequences of earn / redeem / refund / reverse / look-up / nightly run (pending
activation and expiry), through the services, with every `db check` invariant verified after
each step, plus the refund guarantee: a purchase refunded in full never leaves the member
any of its points (clawed back + expired >= its points).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from conftest import PG_URL
from loyaltyctl.config import Bonuses, Config, Earning, Expiry, Program, Referral
from loyaltyctl.db.engine import make_engine, session_scope
from loyaltyctl.db.models import TABLES_IN_ORDER, Member
from loyaltyctl.errors import Refused
from loyaltyctl.services import ledger
from loyaltyctl.services.integrity import run_checks
from loyaltyctl.services.points import redeem_points
from loyaltyctl.services.purchases import record_purchase
from loyaltyctl.services.returns import refund_purchase, reverse_redemption

START = datetime(2026, 1, 1, 10, 0)
MEMBERS = 3  # member 2 was referred by member 1: its first purchase triggers referral bonuses

KINDS = ["earn"] * 3 + ["redeem"] * 3 + ["refund"] * 2 + ["reverse", "look", "night", "night"]
# (kind, a, b): a picks the member (a % 3), purchase or redemption (a % how many there are), or
# the days a night run advances; b is a percentage (of the balance to redeem, of what is left
# of a purchase to refund: 100 means all of it), and sizes a purchase.
op = st.tuples(st.sampled_from(KINDS), st.integers(0, 30), st.sampled_from([10, 33, 50, 100]))


def config(pending_days: int) -> Config:
    return Config(
        program=Program(name="Prop", timezone="UTC", point_value=100),
        earning=Earning(spend=1000, points=1, pending_days=pending_days),
        expiry=Expiry(mode="rolling", days=10),
        bonuses=Bonuses(referral=Referral(referrer_points=20, referee_points=10,
                                          trigger="first_purchase")),
    )


def fresh_engine(sqlite_template: Any, pg_engine: Any, workdir: str) -> Any:
    if PG_URL:
        with pg_engine.begin() as conn:
            conn.execute(text("TRUNCATE " + ", ".join(TABLES_IN_ORDER) + " RESTART IDENTITY CASCADE"))
        return make_engine(PG_URL)
    db = os.path.join(workdir, f"prop-{os.urandom(4).hex()}.db")
    shutil.copyfile(sqlite_template, db)
    return make_engine(f"sqlite:///{db}")


def full_refund_guarantee(session: Any) -> list[tuple]:
    """Fully refunded purchases whose own clawbacks plus expired points fall short of their points."""
    return session.execute(text("""
        SELECT p.ref, p.points, COALESCE(c.total, 0), COALESCE(x.expired, 0)
        FROM purchases p
        LEFT JOIN (SELECT e.purchase_id, SUM(-e.points) AS total FROM ledger_entries e
                   LEFT JOIN ledger_entries s ON s.id = e.source_id
                   WHERE e.kind IN ('clawback', 'cancel') AND (s.id IS NULL OR s.kind <> 'referral')
                   GROUP BY e.purchase_id) c ON c.purchase_id = p.id
        LEFT JOIN (SELECT l.purchase_id, SUM(a.points) AS expired FROM allocations a
                   JOIN ledger_entries d ON d.id = a.debit_id AND d.kind = 'expire'
                   JOIN ledger_entries l ON l.id = a.lot_id AND l.kind = 'earn'
                   GROUP BY l.purchase_id) x ON x.purchase_id = p.id
        WHERE p.refunded_amount = p.amount AND COALESCE(c.total, 0) + COALESCE(x.expired, 0) < p.points
    """)).all()


# Every step runs all the db check queries; a PostgreSQL round trip costs more than SQLite's.
@settings(max_examples=12 if PG_URL else 25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pending_days=st.sampled_from([0, 3]), ops=st.lists(op, min_size=8, max_size=25))
def test_random_ledgers_keep_every_invariant(sqlite_template, pg_engine, pending_days, ops) -> None:  # noqa: ANN001
    cfg = config(pending_days)
    with tempfile.TemporaryDirectory() as workdir:
        engine = fresh_engine(sqlite_template, pg_engine, workdir)
        try:
            run(engine, cfg, ops)
        finally:
            engine.dispose()


def run(engine: Any, cfg: Config, ops: list[tuple]) -> None:
    with session_scope(engine, write=True) as s:
        for i in range(MEMBERS):
            s.execute(text(
                "INSERT INTO members (id, code, name, joined_at, status, tags, balance, pending,"
                " referred_by_id, created_at, updated_at) VALUES (:id, :code, :code, :t, 'active',"
                " '', 0, 0, :ref, :t, :t)"),
                {"id": i + 1, "code": f"M{i}", "t": START - timedelta(days=1),
                 "ref": 2 if i == 2 else None})
    now = START
    purchases: list[str] = []
    redemptions: list[str] = []
    for step, o in enumerate(ops):
        now += timedelta(hours=1)
        with session_scope(engine, write=True) as s:
            today = now.date()
            kind = o[0]
            if kind == "earn":
                member = s.get(Member, o[1] % MEMBERS + 1)
                ref = f"T{step}"
                amount = (o[1] + 1) * o[2] * 100  # 1,000 to 310,000 rials: 1 to 310 points
                record_purchase(session=s, config=cfg, member=member, amount=amount, ref=ref,
                                occurred_at=now, category=None, channel=None, actor="prop", now=now)
                purchases.append(ref)
            elif kind == "redeem":
                member = s.get(Member, o[1] % MEMBERS + 1)
                points = max(1, member.balance * o[2] // 100)
                try:
                    redeem_points(session=s, config=cfg, member=member, points=points,
                                  ref=f"O{step}", now=now, today=today, actor="prop")
                    redemptions.append(f"O{step}")
                except Refused:
                    pass  # below zero, or points past their date that this debit expired
            elif kind == "refund" and purchases:
                ref = purchases[o[1] % len(purchases)]
                left = s.execute(text(
                    "SELECT amount - refunded_amount FROM purchases WHERE ref = :r"),
                    {"r": ref}).scalar_one()
                part = None if o[2] == 100 else max(1, left * o[2] // 100)  # None: the rest
                try:
                    out = refund_purchase(session=s, config=cfg, purchase_ref=ref, ref=f"R{step}",
                                          amount=part, now=now, actor="prop")
                    assert left > 0 and out.amount == (part or left)
                except Refused:
                    assert left == 0
            elif kind == "reverse" and redemptions:
                ref = redemptions[o[1] % len(redemptions)]
                reverse_redemption(session=s, config=cfg, ref=ref, now=now, actor="prop")
            elif kind == "look":
                ledger.activate_pending(session=s, now=now, member_ids=[o[1] % MEMBERS + 1],
                                        config=cfg)
            elif kind == "night":
                now += timedelta(days=o[1] % 8 + 1)
                ledger.activate_pending(session=s, now=now, config=cfg)
                ledger.expire_due(session=s, as_of=now.date(), now=now, actor="prop")
        with session_scope(engine) as s:
            violations, _ = run_checks(session=s)
            assert violations == [], (step, o, violations)
            assert full_refund_guarantee(s) == [], (step, o)
