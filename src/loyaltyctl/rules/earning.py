"""Earning: points for a purchase, as a pure function of the rules and the facts.

Points = round(amount x points/spend x tier multiplier x category multiplier x campaign
multiplier) + campaign flat bonuses, with the rounding mode applied once, at the end.
All arithmetic is on integers (multipliers as exact ratios), so no float ever touches a
balance and the bulk import can call this a million times cheaply.

Stacking rule for overlapping campaigns: the HIGHEST multiplier among the campaigns a
purchase matches applies (multipliers never compound), and the flat bonuses of ALL matching
campaigns add up. Ties between equal multipliers are credited to the campaign that started
first (then by code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from loyaltyctl.config import Campaign, Earning


@lru_cache(maxsize=256)
def ratio(m: Decimal) -> tuple[int, int]:
    return m.as_integer_ratio()


def round_ratio(num: int, den: int, mode: str) -> int:
    """num/den rounded by mode (floor | ceil | half_up), for non-negative values."""
    if mode == "floor":
        return num // den
    if mode == "ceil":
        return -((-num) // den)
    return (2 * num + den) // (2 * den)  # half_up


def norm_category(category: str | None) -> str | None:
    return category.strip().lower() if category and category.strip() else None


@dataclass(frozen=True)
class Earned:
    points: int
    campaign: str | None
    """Codes of the campaigns that changed the result, comma-separated."""


def campaign_stack(campaigns: Sequence[Campaign]) -> tuple[Decimal, int, str | None]:
    """(multiplier, flat bonus, credited codes) for the campaigns a purchase matches."""
    if not campaigns:
        return Decimal(1), 0, None
    best = max(campaigns, key=lambda c: (c.multiplier, -c.starts.toordinal(), _neg(c.code)))
    multiplier = best.multiplier if best.multiplier > 1 else Decimal(1)
    flat = sum(c.flat_bonus for c in campaigns)
    codes = []
    if multiplier > 1:
        codes.append(best.code)
    codes.extend(c.code for c in campaigns if c.flat_bonus and c.code not in codes)
    return multiplier, flat, (",".join(codes)[:64] or None)


def _neg(code: str) -> tuple[int, ...]:
    return tuple(-ord(ch) for ch in code)


def purchase_points(
    *,
    earning: Earning,
    amount: int,
    category: str | None,
    tier_multiplier: Decimal = Decimal(1),
    campaigns: Sequence[Campaign] = (),
) -> Earned:
    """Points earned by one purchase of `amount` minor units."""
    cat = norm_category(category)
    if amount < earning.min_purchase or amount <= 0:
        return Earned(0, None)
    if cat is not None and cat in {c.lower() for c in earning.excluded_categories}:
        return Earned(0, None)
    multiplier, flat, codes = campaign_stack(campaigns)
    num, den = amount * earning.points, earning.spend
    cat_mult = Decimal(1)
    if cat is not None:
        for k, v in earning.category_multipliers.items():
            if k.lower() == cat:
                cat_mult = v
                break
    for m in (tier_multiplier, cat_mult, multiplier):
        n, d = ratio(m)
        num *= n
        den *= d
    return Earned(round_ratio(num, den, earning.rounding) + flat, codes)
