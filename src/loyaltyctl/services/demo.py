"""Build a realistic demo club from a seed, through the same services the commands use.

Everything goes through the real paths: `members import`, `purchases import` (earning
rules, campaigns, tier upgrades, referral bonuses), refunds, reward and cash redemptions,
survey bonuses, birthday bonuses, the nightly expiry and a tier recalculation. The CSV files
it imports are kept in the club's data/ folder so a user can look at them or import them
again (a re-import changes nothing).
"""

from __future__ import annotations

import csv
import random
import shutil
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from loyaltyctl.config import CAMPAIGNS_FILENAME, CONFIG_FILENAME, load_config, sample_config_text
from loyaltyctl.demo_data import DemoMember, members, purchases
from loyaltyctl.errors import Refused
from loyaltyctl.timeutil import local_date, to_local


@dataclass
class DemoResult:
    directory: Path
    config_path: Path
    db_url: str
    counts: dict[str, int] = field(default_factory=dict)


def _campaign_windows(today: date) -> list[dict[str, Any]]:
    """Three campaigns placed relative to the as-of day: the last Nowruz and Yalda, and a
    web campaign running now."""
    y = today.year if today >= date(today.year, 4, 3) else today.year - 1
    yalda_year = today.year - 1 if today < date(today.year, 12, 22) else today.year
    return [
        {"code": f"nowruz-{y}", "name": f"Nowruz {y}: double points", "starts": date(y, 3, 10),
         "ends": date(y, 4, 2), "multiplier": 2, "budget": 300_000_000,
         "expected_revenue": 4_000_000_000, "acquisition_code": "NOWRUZ"},
        {"code": f"yalda-{yalda_year}", "name": f"Yalda {yalda_year}: 25 bonus points",
         "starts": date(yalda_year, 12, 14), "ends": date(yalda_year, 12, 21),
         "flat_bonus": 25, "min_amount": 1_000_000, "budget": 100_000_000,
         "expected_revenue": 1_500_000_000},
        {"code": "web-autumn", "name": "Autumn web orders: 1.5x points",
         "starts": today - timedelta(days=45), "ends": today + timedelta(days=15),
         "multiplier": 1.5, "channels": ["web"], "budget": 50_000_000,
         "expected_revenue": 800_000_000},
    ]


def write_club_files(directory: Path, today: date) -> tuple[Path, list[dict[str, Any]]]:
    import tomli_w

    directory.mkdir(parents=True, exist_ok=True)
    cfg = directory / CONFIG_FILENAME
    cfg.write_text(sample_config_text(), encoding="utf-8")
    camps = _campaign_windows(today)
    (directory / CAMPAIGNS_FILENAME).write_text(
        "# Campaigns of the demo club. Maintained by loyaltyctl (`campaigns add`, "
        "`campaigns end`).\n\n" + tomli_w.dumps({"campaigns": camps}), encoding="utf-8")
    return cfg, camps


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def build_demo(
    *, directory: Path, db_url: str, seed: int, n_members: int, now: datetime, actor: str,
    force: bool = False,
) -> DemoResult:
    """Create (or, with force, recreate) the demo club in `directory`."""
    from sqlalchemy import func, select

    from loyaltyctl.db.engine import make_engine, session_scope, sqlite_path
    from loyaltyctl.db.migrate import upgrade
    from loyaltyctl.db.models import Member, Purchase
    from loyaltyctl.services import audit, bonuses, hooks, points, returns, rewards, tiers
    from loyaltyctl.services.csvio import TableReader
    from loyaltyctl.services.member_io import import_members
    from loyaltyctl.services.members import FieldRules
    from loyaltyctl.services.purchase_import import IGNORED, OPTIONAL, REQUIRED, import_purchases

    if force and directory.exists():
        for name in (CONFIG_FILENAME, CAMPAIGNS_FILENAME, "data"):
            p = directory / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        db_file = sqlite_path(db_url)
        if db_file is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(str(db_file) + suffix).unlink(missing_ok=True)

    # The as-of day decides everything else, in the sample program's timezone.
    tz = "Asia/Tehran"
    today = local_date(now, tz)
    cfg_path, camps = write_club_files(directory, today)
    loaded = load_config(cfg_path)
    config = loaded.config
    tz = config.program.timezone
    data = directory / "data"
    data.mkdir(exist_ok=True)

    engine = make_engine(db_url)
    upgrade(engine)
    with session_scope(engine) as s:
        if s.execute(select(func.count()).select_from(Member)).scalar():
            raise Refused(
                f"the database for {directory} already has members",
                hint="use `loyaltyctl demo --force` to rebuild the demo club from scratch")

    # 1. Members (with referrals and campaign acquisitions) and their purchases.
    windows = {c["code"]: (c["starts"], c["ends"]) for c in camps if c.get("acquisition_code")}
    people = members(seed, n_members, today, windows)
    _write_csv(data / "members.csv",
               ["code", "name", "phone", "email", "birth_date", "joined_at", "referred_by",
                "acquisition_campaign"],
               [[m.code, m.name, m.phone, m.email or "", m.birth_date or "",
                 m.joined_at.strftime("%Y-%m-%d %H:%M"), m.referred_by or "", m.campaign or ""]
                for m in people])
    bought = list(purchases(seed, people, today))
    _write_csv(data / "purchases.csv",
               ["ref", "member", "amount", "occurred_at", "category", "channel"],
               [[p.ref, p.member, p.amount, p.occurred_at.strftime("%Y-%m-%d %H:%M"),
                 p.category, p.channel] for p in bought])

    rng = random.Random(seed + 2)
    refunds = _refund_rows(rng, bought, today)
    _write_csv(data / "refunds.csv", ["ref", "purchase_ref", "amount", "occurred_at"], refunds)

    counts: dict[str, int] = {}
    with session_scope(engine, write=True) as s:
        rules = FieldRules.from_config(config, today)
        # Joins are back-dated: the import's clock is each member's own joined_at.
        res = import_members(session=s, path=data / "members.csv", rules=rules, now=now)
        counts["members"] = res.inserted
        # Enrolment bonuses and starting tiers, dated in the week each member joined.
        joined = s.execute(select(Member.id, Member.joined_at).order_by(Member.joined_at)).all()
        weeks: dict[int, list[tuple[int, datetime]]] = {}
        for mid, at in joined:
            weeks.setdefault(at.toordinal() // 7, []).append((mid, at))
        for group in weeks.values():
            hooks.after_enrolment(session=s, config=config, member_ids=[g[0] for g in group],
                                  now=max(g[1] for g in group), actor=actor)
        with TableReader(data / "purchases.csv", required=REQUIRED, optional=OPTIONAL,
                         ignored=IGNORED) as reader:
            summ = import_purchases(session=s, config=config, reader=reader, now=now, actor=actor)
        counts["purchases"] = summ.imported
        counts["points_earned"] = summ.points
        from loyaltyctl.services.returns import REFUND_IGNORED, REFUND_OPTIONAL, REFUND_REQUIRED

        with TableReader(data / "refunds.csv", required=REFUND_REQUIRED, optional=REFUND_OPTIONAL,
                         ignored=REFUND_IGNORED) as reader:
            rs = returns.import_refunds(session=s, config=config, reader=reader, now=now,
                                        actor=actor)
        counts["refunds"] = getattr(rs, "applied", len(refunds))

        # 2. Behaviour after buying: surveys, redemptions (reward or cash), birthdays.
        last_buy = dict(s.execute(
            select(Purchase.member_id, func.max(Purchase.occurred_at)).group_by(Purchase.member_id)
        ).all())
        rich = s.execute(
            select(Member).where(Member.balance >= 30, Member.status == "active")
            .order_by(Member.id)).scalars().all()
        events = redemptions = 0
        plans: list[tuple[datetime, Member, str]] = []
        for m in rich:
            roll = rng.random()
            if roll < 0.25:
                base = last_buy.get(m.id, now)
                at = min(now, base + timedelta(days=rng.randint(1, 25), hours=rng.randint(0, 8)))
                plans.append((at, m, "coffee-mug" if m.balance >= 150 and roll < 0.08 else
                              ("free-shipping" if roll < 0.18 else "cash")))
            if rng.random() < 0.15:
                at = min(now, last_buy.get(m.id, now) + timedelta(days=rng.randint(1, 10)))
                bonuses.grant_event(session=s, config=config, name="survey", member=m,
                                    ref=f"SURVEY-{m.code}", now=at, actor=actor)
                events += 1
        for at, m, what in sorted(plans, key=lambda p: (p[0], p[1].id)):
            s.refresh(m)
            day = local_date(at, tz)
            try:
                if what == "cash":
                    pts = min(m.balance, 20 + 10 * rng.randint(0, 8))
                    if pts <= 0:
                        continue
                    points.redeem_points(session=s, config=config, member=m, points=pts,
                                         ref=f"ORDER-{m.code}", now=at, today=day, actor=actor)
                else:
                    rewards.redeem_reward(session=s, config=config, member=m, code=what,
                                          ref=f"REWARD-{m.code}", now=at, today=day, actor=actor)
                redemptions += 1
            except Refused:
                continue  # balance spent meanwhile or out of stock: a real club sees this too
        counts["redemptions"] = redemptions
        counts["survey_bonuses"] = events
        b = bonuses.grant_birthdays(session=s, config=config, since=today - timedelta(days=60),
                                    until=today, now=now, actor=actor)
        counts["birthday_bonuses"] = b.granted

        # 3. The nightly jobs, as cron would run them today.
        exp = points.expire(session=s, config=config, as_of=today, now=now, actor=actor)
        counts["points_expired"] = exp.points
        rc = tiers.recalc(session=s, config=config, now=now, actor=actor)
        counts["tier_moves"] = len(rc.moves)
        audit.record(session=s, actor=actor, command="demo", rows=counts["purchases"],
                     details={"seed": seed, "members": n_members, **counts})
    engine.dispose()
    return DemoResult(directory=directory, config_path=cfg_path, db_url=db_url, counts=counts)


def _refund_rows(rng: random.Random, bought: list, today: date) -> list[list[Any]]:
    """About 2% of purchases come back: 60% in full, the rest half, a few days later."""
    rows = []
    for p in bought:
        if rng.random() >= 0.02:
            continue
        at = p.occurred_at + timedelta(days=rng.randint(1, 10))
        if at.date() >= today:
            continue
        amount = p.amount if rng.random() < 0.6 else p.amount // 2
        rows.append([f"RF-{p.ref}", p.ref, amount, at.strftime("%Y-%m-%d %H:%M")])
    rows.sort(key=lambda r: r[3])
    return rows


def local_now_label(now: datetime, tz: str) -> str:
    return to_local(now, tz).strftime("%Y-%m-%d %H:%M")


__all__ = ["DemoMember", "DemoResult", "build_demo", "write_club_files"]
