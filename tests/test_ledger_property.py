"""Property: random sequences of earn / redeem / reward / adjust(+-) / expire keep every
`db check` invariant, and the ledger agrees with a plain reference model of lots.

The reference model is a list of lots per member (points remaining, expiry day, creation
order). Debits take the earliest-expiring lots first (never-expiring last, then oldest),
refuse when what is still usable today is short, and expire the member's due lots first;
`expire` closes every due lot. After each step the database must match it lot for lot.

Most steps go through the services in this process (fast); about one in eight goes
through the CLI, so both paths are covered.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from conftest import SIMPLE_CONFIG, Club
from loyaltyctl.config import load_config
from loyaltyctl.db.engine import make_engine, session_scope
from loyaltyctl.db.models import Member
from loyaltyctl.errors import Refused
from loyaltyctl.services import points as points_svc
from loyaltyctl.services import purchases as purchases_svc
from loyaltyctl.services import rewards as rewards_svc
from loyaltyctl.services.integrity import run_checks

EXPIRY_DAYS = 30
REWARD_COST = 7
REWARD_STOCK = 3
START = date(2026, 1, 1)
_example = itertools.count()


@dataclass
class Lot:
    seq: int
    expires: date | None
    remaining: int


@dataclass
class Model:
    lots: dict[str, list[Lot]] = field(default_factory=dict)
    seq: int = 0
    stock_left: int = REWARD_STOCK

    def credit(self, member: str, points: int, expires: date | None) -> None:
        self.seq += 1
        self.lots[member].append(Lot(self.seq, expires, points))

    def usable(self, member: str, today: date) -> int:
        return sum(lot.remaining for lot in self.lots[member]
                   if lot.expires is None or lot.expires > today)

    def debit(self, member: str, points: int, today: date) -> bool:
        if self.usable(member, today) <= 0 or self.usable(member, today) < points:
            return False
        for lot in self.lots[member]:
            if lot.expires is not None and lot.expires <= today:
                lot.remaining = 0
        order = sorted(self.lots[member],
                       key=lambda lot: (lot.expires is None, lot.expires or date.max, lot.seq))
        left = points
        for lot in order:
            take = min(left, lot.remaining)
            lot.remaining -= take
            left -= take
        return True

    def expire(self, today: date) -> int:
        n = 0
        for lots in self.lots.values():
            for lot in lots:
                if lot.remaining and lot.expires is not None and lot.expires <= today:
                    n += lot.remaining
                    lot.remaining = 0
        return n


# One step: (operation, member index, number, days to move the clock on, through the CLI?,
# days until an added lot expires: None for the program's rule). Explicit expiry days make
# lots expire out of creation order, so earliest-expiring-first is really exercised.
steps = st.lists(
    st.tuples(
        st.sampled_from(["earn", "earn", "redeem", "redeem", "reward", "adjust+", "adjust+",
                         "adjust-", "expire"]),
        st.integers(0, 3).map(lambda k: int(k == 3)),  # mostly the first member: more overlap
        st.integers(1, 40),
        st.integers(0, 10),
        st.integers(0, 7).map(lambda k: k == 0),  # about one step in eight via the CLI
        st.one_of(st.none(), st.integers(1, 60)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seq=steps)
def test_random_ledger_sequences_keep_every_invariant(club: Club, seq: list) -> None:
    # The database is shared by all examples: each one gets its own members and reward.
    n = next(_example)
    reward = f"r{n}"
    club.write_config(SIMPLE_CONFIG.replace('mode = "never"', f'mode = "rolling"\ndays = {EXPIRY_DAYS}')
                      + f'\n[[rewards]]\ncode = "{reward}"\nname = "R"\ncost = {REWARD_COST}\n'
                      f"stock = {REWARD_STOCK}\n")
    config = load_config(club.config_path).config
    codes = [f"E{n}A", f"E{n}B"]
    model = Model(lots={c: [] for c in codes})
    engine = make_engine(club.db_url)
    try:
        with session_scope(engine, write=True) as s:
            for c in codes:
                s.add(Member(code=c, name=c, joined_at=datetime(2025, 12, 1)))
        today = START
        for i, (op, who, number, days, via_cli, lasts) in enumerate(seq):
            today += timedelta(days=days)
            now = datetime.combine(today, datetime.min.time()) + timedelta(hours=12)
            member = codes[who]
            ref = f"{member}-{i}"
            expires = today + timedelta(days=lasts) if lasts and op == "adjust+" else None
            expected_ok = _apply(op, model, member, number, today, expires)
            if via_cli:
                ok = _run_cli(club, op, member, number, ref, reward, now, expires)
            else:
                ok = _run_services(engine, config, op, member, number, ref, reward, now, today,
                                   expires)
            assert ok == expected_ok, (op, member, number, today)
            _assert_matches(engine, model, codes)
    finally:
        engine.dispose()


def _apply(op: str, model: Model, member: str, number: int, today: date,
           expires: date | None) -> bool:
    """The expected outcome in the reference model (True: accepted)."""
    default = today + timedelta(days=EXPIRY_DAYS)
    if op == "earn":
        # amount = number x 1,000 rials at 1 point per 1,000: `number` points
        model.credit(member, number, default)
        return True
    if op == "adjust+":
        model.credit(member, number, expires or default)
        return True
    if op in ("redeem", "adjust-"):
        return model.debit(member, number, today)
    if op == "reward":
        if model.stock_left <= 0:
            return False
        if model.debit(member, REWARD_COST, today):
            model.stock_left -= 1
            return True
        return False
    model.expire(today)
    return True


def _run_services(engine, config, op: str, member: str, number: int, ref: str, reward: str,  # noqa: ANN001
                  now: datetime, today: date, expires: date | None) -> bool:
    try:
        with session_scope(engine, write=True) as s:
            m = s.execute(text("SELECT id FROM members WHERE code = :c"), {"c": member}).scalar()
            m = s.get(Member, m)
            kw = {"session": s, "now": now, "actor": "hypothesis"}
            if op == "earn":
                purchases_svc.record_purchase(
                    config=config, member=m, amount=number * 1000, ref=ref, occurred_at=now,
                    category=None, channel=None, **kw)
            elif op == "redeem":
                points_svc.redeem_points(config=config, member=m, points=number, ref=ref,
                                         today=today, **kw)
            elif op == "reward":
                rewards_svc.redeem_reward(config=config, member=m, code=reward, ref=ref,
                                          today=today, **kw)
            elif op in ("adjust+", "adjust-"):
                points_svc.adjust(config=config, member=m, points=number if op == "adjust+"
                                  else -number, reason="property", ref=ref, expires_on=expires,
                                  today=today, **kw)
            else:
                points_svc.expire(session=s, config=config, as_of=today, now=now,
                                  actor="hypothesis")
        return True
    except Refused:
        return False


def _run_cli(club: Club, op: str, member: str, number: int, ref: str, reward: str,
             now: datetime, expires: date | None) -> bool:
    as_of = ("--as-of", now.strftime("%Y-%m-%d %H:%M"))
    args = {
        "earn": ("purchases", "record", member, f"{number * 1000:,}", "--ref", ref),
        "redeem": ("points", "redeem", member, str(number), "--ref", ref),
        "reward": ("rewards", "redeem", member, reward, "--ref", ref),
        "adjust+": ("points", "adjust", member, f"+{number}", "--reason", "p", "--ref", ref,
                    *(("--expires", expires.isoformat()) if expires else ())),
        "adjust-": ("points", "adjust", member, f"-{number}", "--reason", "p", "--ref", ref),
        "expire": ("points", "expire"),
    }[op]
    r = club.run(*as_of, *args)
    assert r.exit_code in (0, 5), r.output
    return r.exit_code == 0


def _assert_matches(engine, model: Model, codes: list[str]) -> None:  # noqa: ANN001
    with session_scope(engine) as s:
        violations, _ = run_checks(session=s)
        assert violations == []
        for code in codes:
            balance = s.execute(text("SELECT balance FROM members WHERE code = :c"),
                                {"c": code}).scalar()
            assert balance == sum(lot.remaining for lot in model.lots[code]), code
            db_lots = s.execute(text(
                "SELECT e.remaining FROM ledger_entries e JOIN members m ON m.id = e.member_id"
                " WHERE m.code = :c AND e.remaining IS NOT NULL ORDER BY e.id"), {"c": code}).all()
            assert [r[0] for r in db_lots] == [lot.remaining for lot in model.lots[code]], code
