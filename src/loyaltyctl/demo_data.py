"""Deterministic synthetic club data: members and a year of purchases.

Used by `loyaltyctl demo` (and the benchmarks). Everything derives from one seed and the
as-of date, so the same seed and date always give the same club.

The shape follows what the business documents describe for an Iranian shop: a few heavy
buyers and many occasional ones (gamma-distributed purchase rates, BG/NBD-style dropout),
a weekly rhythm (Thursday and Friday busiest), seasonal peaks (Nowruz in March, Yalda in
December), log-normal basket sizes in rials, in-store and web channels.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime, timedelta

FIRST_NAMES = [
    "Sara", "Ali", "Maryam", "Reza", "Zahra", "Mohammad", "Fatemeh", "Hossein", "Narges",
    "Amir", "Leila", "Mehdi", "Niloofar", "Hamid", "Shirin", "Saeed", "Parisa", "Kaveh",
    "Mina", "Babak", "Roya", "Omid", "Tara", "Arash", "Negar", "Behnam", "Azadeh", "Farhad",
]
LAST_NAMES = [
    "Ahmadi", "Hosseini", "Karimi", "Rezaei", "Moradi", "Mohammadi", "Jafari", "Rahimi",
    "Kazemi", "Ebrahimi", "Sadeghi", "Nazari", "Hashemi", "Ghasemi", "Mousavi", "Tehrani",
    "Shirazi", "Esfahani", "Tabrizi", "Farahani", "Bagheri", "Akbari", "Yazdani", "Soltani",
]
CATEGORIES = [("groceries", 0.45), ("cosmetics", 0.2), ("electronics", 0.1),
              ("clothing", 0.17), ("tobacco", 0.03), ("gift-card", 0.05)]
CHANNELS = [("store", 0.7), ("web", 0.3)]
# Weekday weights, Monday=0 .. Sunday=6: Thursday and Friday are the Iranian weekend peak.
WEEKDAY = [0.9, 0.9, 1.0, 1.4, 1.6, 1.0, 0.9]


@dataclass(frozen=True)
class DemoMember:
    code: str
    name: str
    phone: str
    email: str | None
    birth_date: date | None
    joined_at: datetime
    referred_by: str | None
    campaign: str | None


@dataclass(frozen=True)
class DemoPurchase:
    ref: str
    member: str
    amount: int
    occurred_at: datetime
    category: str
    channel: str


def _pick(rng: random.Random, weighted: list[tuple[str, float]]) -> str:
    return rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


@lru_cache(maxsize=1024)
def seasonal(d: date) -> float:
    """Demand multiplier for a day: Nowruz (late March) and Yalda (late December) peaks."""
    f = WEEKDAY[d.weekday()]
    doy = d.timetuple().tm_yday
    f *= 1 + 0.8 * math.exp(-(((doy - 78) / 9) ** 2))   # Nowruz shopping, ~19 March
    f *= 1 + 0.5 * math.exp(-(((doy - 354) / 5) ** 2))  # Yalda night, ~20 December
    return f


def members(seed: int, n: int, as_of: date, campaigns: dict[str, tuple[date, date]]) -> list[DemoMember]:
    rng = random.Random(seed)
    out: list[DemoMember] = []
    start = as_of - timedelta(days=540)
    for i in range(n):
        joined = start + timedelta(days=int(540 * (i / n) ** 0.8))
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        code = f"M{i + 1:06d}"
        referred = None
        if i > 50 and rng.random() < 0.12:
            referred = out[rng.randrange(0, i)].code
        campaign = None
        for ccode, (c_start, c_end) in campaigns.items():
            if c_start <= joined <= c_end and rng.random() < 0.6:
                campaign = ccode
        out.append(DemoMember(
            code=code,
            name=f"{first} {last}",
            phone=f"+98912{1000000 + i * 7 % 9000000:07d}",
            email=f"{first.lower()}.{last.lower()}{i}@example.com" if rng.random() < 0.6 else None,
            birth_date=(date(1965, 1, 1) + timedelta(days=rng.randrange(0, 365 * 40)))
            if rng.random() < 0.8 else None,
            joined_at=datetime.combine(joined, datetime.min.time()) + timedelta(hours=rng.randrange(5, 17)),
            referred_by=referred,
            campaign=campaign,
        ))
    return out


def purchases(seed: int, people: list[DemoMember], as_of: date, *, mean_rate: float = 0.035
              ) -> Iterator[DemoPurchase]:
    """Purchases up to as_of (exclusive), per member in join order, then sorted by time."""
    rng = random.Random(seed + 1)
    rows: list[DemoPurchase] = []
    for m in people:
        rate = rng.gammavariate(0.7, mean_rate / 0.7)        # purchases per day while active
        churn = rng.betavariate(0.8, 6)                        # chance to leave after a purchase
        basket = rng.lognormvariate(math.log(1_800_000), 0.5)  # member's typical basket, rials
        day = m.joined_at.date()
        n = 0
        while day < as_of:
            if rng.random() < min(1.0, rate * seasonal(day)):
                n += 1
                amount = int(rng.lognormvariate(math.log(basket), 0.6)) // 1000 * 1000 + 1000
                at = datetime.combine(day, datetime.min.time()) + timedelta(
                    hours=rng.randrange(6, 18), minutes=rng.randrange(0, 60))
                rows.append(DemoPurchase(
                    ref=f"POS-{m.code}-{n:04d}", member=m.code, amount=amount, occurred_at=at,
                    category=_pick(rng, CATEGORIES), channel=_pick(rng, CHANNELS)))
                if rng.random() < churn:
                    break
            day += timedelta(days=1)
    rows.sort(key=lambda p: (p.occurred_at, p.ref))
    yield from rows
