"""Which campaigns a purchase matches: a pure function of the campaign rules and the facts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from loyaltyctl.config import Campaign


def matching_campaigns(
    campaigns: Sequence[Campaign],
    *,
    day: date,
    amount: int,
    category: str | None,
    channel: str | None,
    tier: str | None,
) -> list[Campaign]:
    """Campaigns running on local `day` whose conditions the purchase meets."""
    cat = category.strip().lower() if category else None
    ch = channel.strip().lower() if channel else None
    out = []
    for c in campaigns:
        if not (c.starts <= day <= c.ends):
            continue
        if amount < c.min_amount:
            continue
        if c.tiers and tier not in c.tiers:
            continue
        if c.categories and cat not in {x.lower() for x in c.categories}:
            continue
        if c.channels and ch not in {x.lower() for x in c.channels}:
            continue
        out.append(c)
    return out
