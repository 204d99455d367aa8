"""Tier qualification and the downgrade decision: pure functions of the tier rules and facts.

- A member qualifies for the highest tier whose threshold the metric meets (`>=`).
- Upgrades happen at once (purchases) and in `tiers recalc`; downgrades only in recalc.
- Retention: a tier reached on local day S with `retention_days = N` is kept through day
  S + N - 1; a downgrade is possible from day S + N (N = 0: at once).
- A manual tier (`tier_floor` until `tier_floor_until`, inclusive) is a floor, not a
  freeze: purchases may still lift the member above it, and recalc never moves the member
  below it while it lasts. It does not stop a downgrade to a tier at or above the floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from loyaltyctl.config import Tier


def rank(levels: Sequence[Tier], code: str | None) -> int:
    """Position of a tier on the ladder: -1 for no tier (or a tier no longer configured)."""
    for i, level in enumerate(levels):
        if level.code == code:
            return i
    return -1


def qualifying_tier(levels: Sequence[Tier], metric_value: int) -> Tier | None:
    """The highest tier whose threshold `metric_value` meets; None if it meets none."""
    best = None
    for level in levels:  # thresholds ascend (validated in config)
        if metric_value >= level.threshold:
            best = level
    return best


def next_tier(levels: Sequence[Tier], current: str | None) -> Tier | None:
    """The tier above `current` (the lowest tier when the member has none)."""
    i = rank(levels, current)
    return levels[i + 1] if i + 1 < len(levels) else None


def retained_through(since_day: date | None, retention_days: int) -> date | None:
    """The last local day a tier reached on `since_day` is kept whatever the metric says.

    None when the tier is not retained at all (no start day, or no retention period).
    """
    if since_day is None or retention_days <= 0:
        return None
    return since_day + timedelta(days=retention_days - 1)


def floor_active(floor: str | None, floor_until: date | None, today: date) -> bool:
    return bool(floor) and floor_until is not None and today <= floor_until


@dataclass(frozen=True)
class Move:
    """A tier change decided for one member (`to_tier` may be None: no tier at all)."""

    from_tier: str | None
    to_tier: str | None
    direction: str
    """"upgrade" or "downgrade"."""


def decide(
    *,
    levels: Sequence[Tier],
    current: str | None,
    since_day: date | None,
    floor: str | None,
    floor_until: date | None,
    metric_value: int,
    today: date,
    allow_downgrade: bool,
) -> Move | None:
    """The tier change for one member, or None when the member stays where it is.

    The target is the tier the metric qualifies for, raised to an active floor. An upgrade
    is always taken; a downgrade only when allowed (recalc) and once the current tier's
    retention period is over.
    """
    if not levels:
        return None
    target = qualifying_tier(levels, metric_value)
    target_rank = rank(levels, target.code if target else None)
    if floor_active(floor, floor_until, today):
        floor_rank = rank(levels, floor)
        if floor_rank > target_rank:
            target, target_rank = levels[floor_rank], floor_rank
    current_rank = rank(levels, current)
    to_code = target.code if target else None
    if current_rank == -1 and current is not None and to_code is None:
        # A tier code no longer in the program file, and nothing to qualify for: clear it.
        return Move(current, None, "downgrade") if allow_downgrade else None
    if target_rank > current_rank:
        return Move(current, to_code, "upgrade")
    if target_rank < current_rank and allow_downgrade:
        kept = retained_through(since_day, levels[current_rank].retention_days)
        if kept is not None and today <= kept:
            return None
        return Move(current, to_code, "downgrade")
    return None
