"""Extension points between modules, called once per batch (never once per row).

- after_enrolment: members were inserted (members add / members import / purchases import
  --create-members): signup bonuses, referral bonuses with trigger = "signup".
- after_purchases: purchases were recorded (purchases record / purchases import): tier
  upgrades, referral bonuses with trigger = "first_purchase".

Callers pass ids; each hook queries what it needs set-based.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session

from loyaltyctl.config import Config


def after_enrolment(
    *, session: Session, config: Config, member_ids: Sequence[int], now: datetime, actor: str
) -> None:
    if not member_ids:
        return
    # Filled in by the bonuses module (signup and referral-on-signup bonuses).


def after_purchases(
    *, session: Session, config: Config, purchase_ids: Sequence[int], now: datetime, actor: str
) -> None:
    if not purchase_ids:
        return
    # Filled in by the tiers module (upgrades) and the bonuses module (first-purchase referrals).
