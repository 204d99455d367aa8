"""Tiers through the CLI: qualification at the threshold, upgrades on purchase, recalc with
retention and manual floors, progress, history, and the pure rules."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest

from conftest import SIMPLE_CONFIG, Club
from loyaltyctl.config import Tier
from loyaltyctl.rules import tiers as rules

# Spend over a 5-day window; silver is kept at least 10 days, gold 20.
TIERS = """
[tiers]
metric = "{metric}"
window_days = 5

[[tiers.levels]]
code = "bronze"
name = "Bronze"
threshold = 0
retention_days = 0

[[tiers.levels]]
code = "silver"
name = "Silver"
threshold = {silver}
multiplier = 1.5
retention_days = 10

[[tiers.levels]]
code = "gold"
name = "Gold"
threshold = {gold}
multiplier = 2
retention_days = 20
"""


def tiers_config(metric: str = "spend", silver: int = 100_000, gold: int = 300_000,
                 extra: str = "") -> str:
    return SIMPLE_CONFIG + extra + TIERS.format(metric=metric, silver=silver, gold=gold)


@pytest.fixture
def tclub(club: Club) -> Club:
    return club.write_config(tiers_config())


def add(club: Club, code: str, on: str, *opts: str) -> None:
    club.ok("--as-of", on, "members", "add", code, f"Member {code}", *opts)


def buy(club: Club, code: str, amount: str, ref: str, on: str, *opts: str):  # noqa: ANN201
    return club.ok("--as-of", on, "purchases", "record", code, amount, "--ref", ref, *opts)


def tier(club: Club, code: str) -> str | None:
    return club.scalar("SELECT tier FROM members WHERE code = :c", c=code)


def history(club: Club, code: str) -> list[tuple]:
    return club.query(
        "SELECT h.from_tier, h.to_tier, h.reason, h.metric_value FROM tier_history h"
        " JOIN members m ON m.id = h.member_id WHERE m.code = :c ORDER BY h.id", c=code)


def recalc(club: Club, on: str, *opts: str):  # noqa: ANN201
    return club.ok("tiers", "recalc", "--as-of", on, *opts)


# -- pure rules ------------------------------------------------------------------------------

LEVELS = [Tier(code="b", name="B", threshold=0, retention_days=0),
          Tier(code="s", name="S", threshold=100, retention_days=10),
          Tier(code="g", name="G", threshold=300, retention_days=20)]


@pytest.mark.parametrize(("value", "expected"), [(0, "b"), (99, "b"), (100, "s"), (299, "s"),
                                                 (300, "g"), (10**12, "g")])
def test_qualifying_tier_is_reached_at_the_threshold(value: int, expected: str) -> None:
    assert rules.qualifying_tier(LEVELS, value).code == expected


def test_no_tier_below_the_lowest_threshold() -> None:
    assert rules.qualifying_tier(LEVELS[1:], 99) is None


def test_downgrade_waits_for_retention_and_respects_the_floor() -> None:
    common = dict(levels=LEVELS, current="g", since_day=date(2026, 1, 1), metric_value=0,
                  allow_downgrade=True)
    # Gold reached on 1 January, kept 20 days: through the 20th; a downgrade from the 21st.
    assert rules.decide(**common, floor=None, floor_until=None, today=date(2026, 1, 20)) is None
    move = rules.decide(**common, floor=None, floor_until=None, today=date(2026, 1, 21))
    assert (move.to_tier, move.direction) == ("b", "downgrade")
    # A silver floor through the 31st stops the fall at silver; the day after it is gone.
    move = rules.decide(**common, floor="s", floor_until=date(2026, 1, 31), today=date(2026, 1, 31))
    assert move.to_tier == "s"
    move = rules.decide(**common, floor="s", floor_until=date(2026, 1, 31), today=date(2026, 2, 1))
    assert move.to_tier == "b"
    # Purchases (no downgrades allowed) never lower anyone.
    assert rules.decide(**{**common, "allow_downgrade": False}, floor=None, floor_until=None,
                        today=date(2026, 3, 1)) is None


# -- upgrades on purchase --------------------------------------------------------------------


def test_purchase_landing_exactly_on_the_threshold_upgrades(tclub: Club) -> None:
    add(tclub, "M1", "2026-01-01")
    assert tier(tclub, "M1") == "bronze"  # threshold 0: everyone starts there
    buy(tclub, "M1", "99,999", "p1", "2026-01-02")
    assert tier(tclub, "M1") == "bronze"  # 99,999 < 100,000
    buy(tclub, "M1", "1", "p2", "2026-01-02")  # 99,999 + 1 = 100,000: exactly the threshold
    assert tier(tclub, "M1") == "silver"
    assert history(tclub, "M1") == [(None, "bronze", "enrolment", 0),
                                    ("bronze", "silver", "upgrade", 100_000)]
    # The silver multiplier applies from the next purchase: 10,000 -> 10 x 1.5 = 15 points.
    r = buy(tclub, "M1", "10,000", "p3", "2026-01-02", "--format", "json")
    assert json.loads(r.stdout)["points"] == 15
    r = tclub.ok("--as-of", "2026-01-02", "tiers", "progress", "M1", "--format", "json")
    info = json.loads(r.stdout)
    # Spend 110,000; gold at 300,000 needs 190,000 more; silver kept through 2 + 10 - 1 = 11th.
    assert (info["tier"], info["metric_value"], info["next_tier"], info["needed_for_next"]) == (
        "silver", 110_000, "gold", 190_000)
    assert (info["kept_through"], info["keep_threshold"], info["needed_to_keep"]) == (
        "2026-01-11", 100_000, 0)
    r = tclub.ok("--as-of", "2026-01-02", "tiers", "progress", "M1")
    assert "next tier  gold at 300,000 IRR: 190,000 IRR to go" in r.stdout
    assert "kept at least through 2026-01-11" in r.stdout
    r = tclub.ok("tiers", "list", "--format", "json")
    counts = {row["code"]: row["members"] for row in json.loads(r.stdout)}
    assert counts == {"bronze": 0, "silver": 1, "gold": 0}


def test_a_purchase_outside_the_window_does_not_count(tclub: Club) -> None:
    add(tclub, "M1", "2026-01-01")
    # Bought on the 1st; as of the 7th the 5-day window starts after the end of the 2nd.
    buy(tclub, "M1", "100,000", "old", "2026-01-07", "--at", "2026-01-01 12:00")
    assert tier(tclub, "M1") == "bronze"
    buy(tclub, "M1", "100,000", "new", "2026-01-07", "--at", "2026-01-03 00:00")
    assert tier(tclub, "M1") == "silver"


# -- recalc ----------------------------------------------------------------------------------


def test_retention_last_day_keeps_the_tier_and_the_day_after_downgrades(tclub: Club) -> None:
    add(tclub, "M1", "2026-01-01")
    buy(tclub, "M1", "100,000", "p1", "2026-01-10", "--at", "2026-01-10 12:00")
    assert tier(tclub, "M1") == "silver"  # silver since the 10th: kept through the 19th
    # As of the 19th the purchase is out of the 5-day window (spend 0), but retention holds.
    r = recalc(tclub, "2026-01-19")
    assert "0 upgrades, 0 downgrades, 1 unchanged as of 2026-01-19" in r.stderr
    assert tier(tclub, "M1") == "silver"
    r = tclub.ok("--as-of", "2026-01-19", "tiers", "progress", "M1")
    assert "keep silver: 100,000 IRR in the window, 100,000 IRR short; kept at least through 2026-01-19" in r.stdout
    # The day after the retention period: down to what spend 0 qualifies for.
    r = recalc(tclub, "2026-01-20", "--format", "json")
    assert json.loads(r.stdout) == [{"member": "M1", "from_tier": "silver", "to_tier": "bronze",
                                     "direction": "downgrade", "metric": 0}]
    assert "0 upgrades, 1 downgrades, 0 unchanged as of 2026-01-20" in r.stderr
    assert tier(tclub, "M1") == "bronze"
    assert history(tclub, "M1")[-1] == ("silver", "bronze", "downgrade", 0)
    audit = tclub.query("SELECT command, rows FROM audit_log WHERE command = 'tiers recalc'")
    assert audit == [("tiers recalc", 1)]


def test_recalc_twice_for_the_same_day_changes_nothing(tclub: Club) -> None:
    for code in ("A", "B", "C"):
        add(tclub, code, "2026-01-01")
    buy(tclub, "A", "300,000", "a1", "2026-01-01")  # gold, kept through the 20th
    buy(tclub, "B", "100,000", "b1", "2026-01-01")  # silver, kept through the 10th
    r = recalc(tclub, "2026-01-15")
    # A: gold retained; B: retention over, spend 0 -> bronze; C: bronze stays.
    assert "0 upgrades, 1 downgrades, 2 unchanged as of 2026-01-15" in r.stderr
    before = tclub.dump()
    r = recalc(tclub, "2026-01-15", "--format", "json")
    assert json.loads(r.stdout) == []
    assert "0 upgrades, 0 downgrades, 3 unchanged as of 2026-01-15" in r.stderr
    assert tclub.dump() == before


def test_recalc_gives_tiers_to_members_enrolled_before_tiers_existed(club: Club) -> None:
    add(club, "A", "2026-01-01")  # SIMPLE_CONFIG: no tiers yet
    add(club, "B", "2026-01-01")
    buy(club, "B", "350,000", "b1", "2026-01-02")
    assert club.query("SELECT tier FROM members ORDER BY code") == [(None,), (None,)]
    club.write_config(tiers_config())
    r = recalc(club, "2026-01-03", "--format", "csv")
    assert r.stdout.splitlines() == ["member,from_tier,to_tier,direction,metric",
                                     "A,,bronze,upgrade,0", "B,,gold,upgrade,350000"]
    assert "2 upgrades, 0 downgrades, 0 unchanged as of 2026-01-03" in r.stderr


def test_recalc_refuses_while_another_run_holds_the_lock(tclub: Club) -> None:
    from loyaltyctl.db.engine import make_engine
    from loyaltyctl.services.locks import job_lock

    add(tclub, "M1", "2026-01-01")
    engine = make_engine(tclub.db_url)
    try:
        with job_lock(engine=engine, name="tiers recalc", holder="nightly cron"):
            before = tclub.dump()
            r = tclub.run("tiers", "recalc", "--as-of", "2026-01-02")
            assert r.exit_code == 5
            assert "tiers recalc is already running" in r.stderr and "nightly cron" in r.stderr
            assert tclub.dump() == before
    finally:
        engine.dispose()


# -- manual tiers ----------------------------------------------------------------------------


def test_manual_tier_is_a_floor_not_a_freeze(tclub: Club) -> None:
    add(tclub, "M1", "2026-01-01")
    r = tclub.ok("--as-of", "2026-01-10", "tiers", "set", "M1", "silver", "--until", "2026-01-31",
                 "--reason", "complaint resolution")
    assert "M1: bronze -> silver" in r.stderr
    rows = tclub.query("SELECT tier, tier_floor, tier_floor_until FROM members")
    assert [(t, f, str(u)) for t, f, u in rows] == [("silver", "silver", "2026-01-31")]
    audit = tclub.query("SELECT target, details FROM audit_log WHERE command = 'tiers set'")
    assert audit[0][0] == "M1" and "complaint resolution" in audit[0][1]
    # Not a freeze: a purchase still lifts the member above the floor.
    buy(tclub, "M1", "300,000", "p1", "2026-01-11")
    assert tier(tclub, "M1") == "gold"  # gold since the 11th, kept through the 30th
    assert recalc(tclub, "2026-01-30").stderr.startswith("0 upgrades, 0 downgrades")
    # Retention over and spend 0, but the floor holds through the 31st: down to silver only.
    recalc(tclub, "2026-01-31")
    assert tier(tclub, "M1") == "silver"  # silver since the 31st, kept through 9 February
    recalc(tclub, "2026-02-09")
    assert tier(tclub, "M1") == "silver"
    recalc(tclub, "2026-02-10")
    assert tier(tclub, "M1") == "bronze"
    assert [h[:3] for h in history(tclub, "M1")] == [
        (None, "bronze", "enrolment"), ("bronze", "silver", "manual"), ("silver", "gold", "upgrade"),
        ("gold", "silver", "downgrade"), ("silver", "bronze", "downgrade")]
    r = tclub.ok("tiers", "history", "M1", "--format", "json")
    assert [row["reason"] for row in json.loads(r.stdout)] == [
        "enrolment", "manual", "upgrade", "downgrade", "downgrade"]


def test_manual_tier_below_the_current_one_keeps_the_current(tclub: Club) -> None:
    add(tclub, "M1", "2026-01-01")
    buy(tclub, "M1", "300,000", "p1", "2026-01-01")
    r = tclub.ok("--as-of", "2026-01-02", "tiers", "set", "M1", "silver", "--until", "2026-03-01",
                 "--reason", "x")
    assert "M1 stays gold (at or above silver)" in r.stderr
    assert tier(tclub, "M1") == "gold"


@pytest.mark.parametrize(("args", "code", "message"), [
    (("M1", "platinum", "--until", "2026-02-01"), 4, "unknown tier 'platinum'"),
    (("M1", "gold", "--until", "2026-01-09"), 4, "--until: 2026-01-09 is before today"),
    (("M1", "gold", "--until", "2026-02-30"), 4, "--until"),
    (("NOPE", "gold", "--until", "2026-02-01"), 3, "no member matches 'NOPE'"),
])
def test_tiers_set_rejects_bad_input(tclub: Club, args: tuple, code: int, message: str) -> None:
    add(tclub, "M1", "2026-01-01")
    before = tclub.dump()
    r = tclub.run("--as-of", "2026-01-10", "tiers", "set", *args, "--reason", "r")
    assert r.exit_code == code, r.output
    assert message in r.stderr
    assert tclub.dump() == before


# -- other metrics ---------------------------------------------------------------------------


def test_points_metric_counts_purchase_points_only(club: Club) -> None:
    club.write_config(tiers_config(metric="points", silver=100, gold=1000) + """
[events.survey]
name = "Survey"
points = 50
""")
    add(club, "M1", "2026-01-01")
    buy(club, "M1", "60,000", "p1", "2026-01-01")  # 60 points
    club.ok("--as-of", "2026-01-01", "bonuses", "event", "survey", "M1", "--ref", "s1")  # +50, not a purchase
    club.ok("--as-of", "2026-01-01", "points", "adjust", "M1", "-40", "--reason", "fix")  # spends don't count
    assert club.balance("M1") == 70 and tier(club, "M1") == "bronze"
    buy(club, "M1", "40,000", "p2", "2026-01-01")  # 60 + 40 = 100 purchase points: silver
    assert tier(club, "M1") == "silver"
    r = club.ok("--as-of", "2026-01-01", "tiers", "progress", "M1", "--format", "json")
    assert json.loads(r.stdout)["metric_value"] == 100


def test_pending_points_do_not_count_until_available(club: Club) -> None:
    club.write_config(tiers_config(metric="points", silver=100, gold=1000).replace(
        "points = 1\n", "points = 1\npending_days = 2\n", 1))
    add(club, "M1", "2026-01-01")
    buy(club, "M1", "100,000", "p1", "2026-01-01", "--at", "2026-01-01 10:00")
    assert tier(club, "M1") == "bronze"  # 100 points, pending until the 3rd 10:00
    recalc(club, "2026-01-02")
    assert tier(club, "M1") == "bronze"
    r = recalc(club, "2026-01-03")
    assert "1 upgrades, 0 downgrades, 0 unchanged" in r.stderr
    assert tier(club, "M1") == "silver"


def test_purchases_metric_counts_purchases(club: Club) -> None:
    club.write_config(tiers_config(metric="purchases", silver=2, gold=5))
    add(club, "M1", "2026-01-01")
    buy(club, "M1", "1,000", "p1", "2026-01-01")
    assert tier(club, "M1") == "bronze"
    buy(club, "M1", "1,000", "p2", "2026-01-01")
    assert tier(club, "M1") == "silver"  # 2 purchases: exactly the threshold
    r = club.ok("--as-of", "2026-01-01", "tiers", "progress", "M1")
    assert "purchases in the last 5 days: 2" in r.stdout
    assert "next tier  gold at 5: 3 to go" in r.stdout
    # A purchase refunded in full stops counting; one refunded in part still counts.
    club.ok("--as-of", "2026-01-02", "purchases", "refund", "p2", "--ref", "r2")
    club.ok("--as-of", "2026-01-02", "purchases", "refund", "p1", "--ref", "r1", "--amount", "500")
    r = club.ok("--as-of", "2026-01-02", "tiers", "progress", "M1", "--format", "json")
    assert json.loads(r.stdout)["metric_value"] == 1
    recalc(club, "2026-01-10")  # silver since the 1st, kept through the 10th
    assert tier(club, "M1") == "silver"
    recalc(club, "2026-01-11")
    assert tier(club, "M1") == "bronze"


def test_refunded_spend_leaves_the_metric(tclub: Club) -> None:
    add(tclub, "M1", "2026-01-01")
    buy(tclub, "M1", "150,000", "p1", "2026-01-01")
    assert tier(tclub, "M1") == "silver"
    tclub.ok("--as-of", "2026-01-02", "purchases", "refund", "p1", "--ref", "r1", "--amount", "60,000")
    r = tclub.ok("--as-of", "2026-01-02", "tiers", "progress", "M1", "--format", "json")
    assert json.loads(r.stdout)["metric_value"] == 90_000  # 150,000 - 60,000
    recalc(tclub, "2026-01-11")  # within the window still, and retention (through the 10th) over
    assert tier(tclub, "M1") == "bronze"


def test_points_metric_ignores_referral_bonuses_and_their_clawback(club: Club) -> None:
    club.write_config(tiers_config(metric="points", silver=100, gold=1000) + """
[bonuses.referral]
referrer_points = 0
referee_points = 100
trigger = "first_purchase"
""")
    add(club, "REF", "2026-01-01")
    add(club, "NEW", "2026-01-01", "--referred-by", "REF")
    buy(club, "NEW", "100,000", "p1", "2026-01-01")  # 100 points + the 100-point referee bonus
    assert tier(club, "NEW") == "silver"  # 100 purchase points: the bonus does not count
    buy(club, "NEW", "50,000", "p2", "2026-01-01")   # 50 x 1.5 (silver) = 75 points
    # A full refund of p1 takes back its 100 points and the referral bonus it triggered.
    club.ok("--as-of", "2026-01-02", "purchases", "refund", "p1", "--ref", "r1")
    assert club.balance("NEW") == 75  # 100 + 100 + 75 - 100 - 100
    r = club.ok("--as-of", "2026-01-02", "tiers", "progress", "NEW", "--format", "json")
    assert json.loads(r.stdout)["metric_value"] == 75  # p2 only: not 75 - 100


# -- upgrades in bulk (purchases import) -----------------------------------------------------

# As of the end of 10 January the 5-day window starts after the end of the 5th: the rows of
# the 1st and the 2nd count for no metric. (ref, amount, time); by hand for "spend":
# 60,000 + 50,000 = 110,000 -> silver; + 150,000 = 260,000; + 50,000 = 310,000 -> gold.
BULK_ROWS = [("b1", "200,000", "2026-01-01 10:00"), ("b2", "60,000", "2026-01-06 10:00"),
             ("b3", "50,000", "2026-01-07 10:00"), ("b4", "300,000", "2026-01-02 10:00"),
             ("b5", "150,000", "2026-01-08 10:00"), ("b6", "50,000", "2026-01-09 10:00"),
             ("b7", "10,000", "2026-01-10 09:00")]
BULK_THRESHOLDS = {"spend": (100_000, 300_000), "points": (100, 300), "purchases": (2, 4)}


@pytest.mark.parametrize("metric", ["spend", "points", "purchases"])
@pytest.mark.parametrize("remembered", [100_000, 1])
def test_imported_batches_upgrade_like_one_purchase_at_a_time(
        club: Club, metric: str, remembered: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """An import in batches of one row moves tiers exactly as `purchases record` of the same
    rows does: same tiers, history, metric values at each move and points (multipliers).

    The import keeps its members' metrics from batch to batch (tiers.TierMetrics) instead of
    summing their purchases again; `remembered` = 1 makes it forget them at every batch, so
    both of its paths are compared with the per-purchase one."""
    from loyaltyctl.services import tiers as tier_service

    monkeypatch.setattr(tier_service.TierMetrics, "LIMIT", remembered)
    silver, gold = BULK_THRESHOLDS[metric]
    club.write_config(tiers_config(metric=metric, silver=silver, gold=gold))
    for code in ("I1", "I2", "R1", "R2"):
        add(club, code, "2026-01-01")
    lines = ["ref,member,amount,occurred_at"]
    for ref, amount, at in BULK_ROWS:
        for who in ("1", "2"):  # the two members' rows alternate: one batch each
            lines.append(f'I{who}-{ref},I{who},"{amount}",{at}')
            buy(club, f"R{who}", amount, f"R{who}-{ref}", "2026-01-10", "--at", at)
    path = club.root / "bulk.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = club.ok("--as-of", "2026-01-10", "purchases", "import", str(path), "--batch-size", "1")
    assert "imported 14 purchase(s)" in r.stderr

    def points(prefix: str) -> list[int]:
        return [p for (p,) in club.query(
            "SELECT p.points FROM purchases p JOIN members m ON m.id = p.member_id "
            "WHERE m.code = :c ORDER BY p.occurred_at, p.ref", c=prefix)]

    for who in ("1", "2"):
        assert history(club, f"I{who}") == history(club, f"R{who}")
        assert points(f"I{who}") == points(f"R{who}")
        assert tier(club, f"I{who}") == tier(club, f"R{who}") == "gold"
    # Not vacuous: two moves, at the metric values computed by hand.
    moves = {"spend": [110_000, 310_000],
             # 60 + 50 = 110 points -> silver; + 150 x 1.5 = 335 -> gold
             "points": [110, 335],
             # the 2nd and 4th purchases in the window
             "purchases": [2, 4]}[metric]
    assert history(club, "I1") == [(None, "bronze", "enrolment", 0),
                                   ("bronze", "silver", "upgrade", moves[0]),
                                   ("silver", "gold", "upgrade", moves[1])]
    # In time order: b1 200 and b4 300,000 x 1.5 (after the move to silver) = 450, outside
    # the window; b2 60, b3 50; b5 150,000 x 1.5 = 225, b6 75; b7 at gold: 10,000 x 2 = 20.
    if metric == "spend":
        assert points("I1") == [200, 450, 60, 50, 225, 75, 20]
    club.ok("db", "check")


def test_tier_metrics_add_scattered_purchases(club: Club) -> None:
    """TierMetrics, kept across batches, equals measuring afresh, also when the new
    purchases' ids are not one block (they are a block in an import, unless another run
    took ids in between)."""
    from pathlib import Path as _Path

    from sqlmodel import Session

    from loyaltyctl.config import load_config
    from loyaltyctl.services import tiers as tier_service

    club.write_config(tiers_config())
    add(club, "M1", "2026-01-01")
    add(club, "M2", "2026-01-01")
    config = load_config(_Path(club.config_path)).config
    now = datetime(2026, 1, 10, 23, 59, 59)
    m1, m2 = (club.scalar("SELECT id FROM members WHERE code = :c", c=c) for c in ("M1", "M2"))
    buy(club, "M1", "10,000", "p1", "2026-01-10", "--at", "2026-01-08 10:00")   # id 1
    buy(club, "M2", "20,000", "p2", "2026-01-10", "--at", "2026-01-08 10:00")   # id 2
    kept = tier_service.TierMetrics(config, now)
    with Session(club.engine) as s:
        assert kept.of(s, [m1]) == {m1: 10_000}
    buy(club, "M1", "30,000", "p3", "2026-01-10", "--at", "2026-01-09 10:00")   # id 3
    buy(club, "M2", "40,000", "p4", "2026-01-10", "--at", "2026-01-09 10:00")   # id 4
    buy(club, "M1", "50,000", "p5", "2026-01-10", "--at", "2026-01-01 10:00")   # id 5, too old
    buy(club, "M1", "70,000", "p6", "2026-01-10", "--at", "2026-01-10 10:00")   # id 6
    ids = dict(club.query("SELECT ref, id FROM purchases"))
    with Session(club.engine) as s:
        # The import's new purchases, not one block of ids (p4 is M2's, unknown to it).
        kept.add_purchases(s, [ids["p3"], ids["p5"], ids["p6"]])
        # M1: 10,000 + 30,000 + 70,000 (p5 is outside the window); M2 measured afresh.
        assert kept.of(s, [m1, m2]) == {m1: 110_000, m2: 60_000}
        assert tier_service.metric_of(session=s, config=config, member_id=m1, now=now) == 110_000
