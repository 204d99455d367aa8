"""`rewards list | redeem`: stock from the ledger, windows, tiers, refusals, concurrency.

Catalogue: mug 50 points (stock 2), voucher 10 (unlimited), dinner 20 (stock 5, March 2026
only, gold members only), pin 5 (stock 1). Today is 2026-03-10 unless a test says otherwise.
"""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import text

from conftest import SIMPLE_CONFIG, Club

CATALOGUE = """
[[tiers.levels]]
code = "bronze"
name = "Bronze"
threshold = 0

[[tiers.levels]]
code = "gold"
name = "Gold"
threshold = 1000000000000

[[rewards]]
code = "mug"
name = "Club mug"
cost = 50
stock = 2

[[rewards]]
code = "voucher"
name = "Shipping voucher"
kind = "free_shipping"
cost = 10

[[rewards]]
code = "dinner"
name = "Dinner"
cost = 20
stock = 5
valid_from = 2026-03-01
valid_until = 2026-03-31
tiers = ["gold"]

[[rewards]]
code = "pin"
name = "Enamel pin"
cost = 5
stock = 1
"""
DAY = "2026-03-10"


def add_member(club: Club, code: str, n: int) -> None:
    club.ok("--as-of", "2026-01-01", "members", "add", code, f"Member {code}",
            "--phone", f"0912{n:07d}")


def give(club: Club, code: str, points: int) -> None:
    club.ok("--as-of", DAY, "points", "adjust", code, str(points), "--reason", "test points")


def rw(club: Club, *args: str, as_of: str = DAY):  # noqa: ANN201
    return club.run("--as-of", as_of, "rewards", *args)


def set_member(club: Club, code: str, **values: str) -> None:
    statements = {"tier": "UPDATE members SET tier = :v WHERE code = :c",
                  "status": "UPDATE members SET status = :v WHERE code = :c"}
    with club.engine.begin() as conn:
        for k, v in values.items():
            conn.execute(text(statements[k]), {"v": v, "c": code})


def reverse_by_sql(club: Club, ref: str) -> None:
    """Undo a redemption the way a reversal does: the points go back to the lots it used."""
    with club.engine.begin() as conn:
        red_id, member_id, points = conn.execute(text(
            "SELECT id, member_id, points FROM ledger_entries WHERE idem_key = :k"),
            {"k": f"redeem:{ref}"}).one()
        conn.execute(text(
            "INSERT INTO ledger_entries (member_id, kind, points, effective_at, source_id, ref,"
            " actor, created_at) VALUES (:m, 'reversal', :p, '2026-03-10', :s, :r, 't',"
            " '2026-03-10')"), {"m": member_id, "p": -points, "s": red_id, "r": ref})
        rev_id = conn.execute(text("SELECT MAX(id) FROM ledger_entries")).scalar()
        for lot_id, n in conn.execute(text(
                "SELECT lot_id, points FROM allocations WHERE debit_id = :d"), {"d": red_id}).all():
            conn.execute(text("INSERT INTO allocations (member_id, debit_id, lot_id, points)"
                              " VALUES (:m, :d, :l, :n)"),
                         {"m": member_id, "d": rev_id, "l": lot_id, "n": -n})
            conn.execute(text("UPDATE ledger_entries SET remaining = remaining + :n WHERE id = :l"),
                         {"n": n, "l": lot_id})
        conn.execute(text("UPDATE members SET balance = balance - :p WHERE id = :m"),
                     {"p": points, "m": member_id})


@pytest.fixture
def rc(club: Club) -> Club:
    club.write_config(SIMPLE_CONFIG + CATALOGUE)
    add_member(club, "C1", 1)
    add_member(club, "C2", 2)
    return club


def catalogue(club: Club, *args: str, as_of: str = DAY) -> dict[str, dict]:
    r = rw(club, "list", "-f", "json", *args, as_of=as_of)
    assert r.exit_code == 0, r.output
    return {row["code"]: row for row in json.loads(r.stdout)}


def test_list_shows_cost_stock_left_window_and_tiers(rc: Club) -> None:
    give(rc, "C1", 200)
    assert rw(rc, "redeem", "C1", "mug", "--ref", "R1").exit_code == 0
    assert rw(rc, "redeem", "C1", "voucher", "--ref", "R2").exit_code == 0
    rows = catalogue(rc)
    assert list(rows) == ["mug", "voucher", "dinner", "pin"]
    assert rows["mug"] == {
        "code": "mug", "name": "Club mug", "kind": "gift", "cost": 50, "value": 0, "stock": 2,
        "redeemed": 1, "left": 1, "valid_from": None, "valid_until": None, "tiers": [],
        "open": True}
    assert (rows["voucher"]["left"], rows["voucher"]["redeemed"]) == (None, 1)
    assert rows["dinner"]["tiers"] == ["gold"] and rows["dinner"]["valid_until"] == "2026-03-31"
    assert catalogue(rc, as_of="2026-04-01")["dinner"]["open"] is False
    table = rw(rc, "list").stdout
    assert "1 of 2" in table and "unlimited" in table and "2026-03-01 to 2026-03-31" in table
    # A reversed redemption gives its unit back to the stock.
    reverse_by_sql(rc, "R1")
    rc.ok("db", "check")
    assert catalogue(rc)["mug"]["left"] == 2
    assert rc.balance("C1") == 200 - 10


def test_available_for_filters_by_balance_tier_window_stock_and_status(rc: Club) -> None:
    give(rc, "C1", 30)
    # 30 points, bronze: voucher (10) and pin (5); not the mug (50) nor dinner (gold only).
    assert list(catalogue(rc, "--available-for", "C1")) == ["voucher", "pin"]
    set_member(rc, "C1", tier="gold")
    assert list(catalogue(rc, "--available-for", "C1")) == ["voucher", "dinner", "pin"]
    assert list(catalogue(rc, "--available-for", "C1", as_of="2026-04-01")) == ["voucher", "pin"]
    give(rc, "C2", 5)
    assert rw(rc, "redeem", "C2", "pin", "--ref", "P").exit_code == 0  # the only pin
    assert list(catalogue(rc, "--available-for", "C1")) == ["voucher", "dinner"]
    set_member(rc, "C1", status="suspended")
    r = rw(rc, "list", "--available-for", "C1")
    assert r.exit_code == 0 and "no reward can be redeemed by C1 today" in r.stderr
    assert rw(rc, "list", "--available-for", "C9").exit_code == 3


def test_redeem_debits_the_cost_with_the_reward_code(rc: Club) -> None:
    give(rc, "C1", 60)
    r = rw(rc, "redeem", "C1", "mug", "--ref", "GIFT-1")
    assert r.exit_code == 0, r.output
    # 60 - 50 = 10; stock 2 - 1 = 1
    assert r.stdout == "C1: redeemed Club mug (mug) for 50 points; balance 10; 1 left in stock\n"
    assert rc.query("SELECT kind, points, item_code, ref, idem_key FROM ledger_entries "
                    "WHERE kind = 'redeem'") == [("redeem", -50, "mug", "GIFT-1", "redeem:GIFT-1")]
    audit = rc.query("SELECT target, details FROM audit_log WHERE command = 'rewards redeem'")
    assert audit[0][0] == "C1" and json.loads(audit[0][1]) == {"points": 50, "ref": "GIFT-1",
                                                               "reward": "mug"}
    # The same ref again: a no-op that says so.
    before = rc.dump()
    r = rw(rc, "redeem", "C1", "mug", "--ref", "GIFT-1", "-f", "json")
    assert r.exit_code == 0 and "already redeemed: GIFT-1" in r.stderr
    assert json.loads(r.stdout) == {"member": "C1", "reward": "mug", "points": 50,
                                    "ref": "GIFT-1", "balance": 10, "left": 1, "already": True}
    assert rc.dump() == before
    # The ref of a reward redemption cannot be reused for another reward or a discount.
    r = rw(rc, "redeem", "C1", "voucher", "--ref", "GIFT-1")
    assert r.exit_code == 5 and "ref 'GIFT-1' is already used by another redemption" in r.stderr
    r = rc.run("--as-of", DAY, "points", "redeem", "C1", "5", "--ref", "GIFT-1")
    assert r.exit_code == 5 and "(redeem of -50 points for member C1 (mug))" in r.stderr
    assert rc.dump() == before
    rc.ok("db", "check")


@pytest.mark.parametrize(("setup", "reward", "as_of", "message"), [
    ("poor", "mug", DAY, "member C1 has 40 points available, 50 are needed"),
    ("suspended", "voucher", DAY, "member C1 is suspended"),
    ("closed", "voucher", DAY, "member C1 is closed"),
    ("gold", "dinner", "2026-02-28", "reward dinner can be redeemed from 2026-03-01 on"),
    ("gold", "dinner", "2026-04-01", "reward dinner could be redeemed until 2026-03-31"),
    ("bronze", "dinner", DAY, "reward dinner is for tier gold members; member C1 is bronze"),
    ("pin-gone", "pin", DAY, "reward pin is out of stock (all 1 redeemed)"),
])
def test_refusals_name_the_reason_and_change_nothing(rc: Club, setup: str, reward: str,
                                                     as_of: str, message: str) -> None:
    give(rc, "C1", 40)
    give(rc, "C2", 5)
    assert rw(rc, "redeem", "C2", "pin", "--ref", "P0").exit_code == 0
    if setup in ("suspended", "closed"):
        set_member(rc, "C1", status=setup)
    if setup in ("gold", "bronze"):
        set_member(rc, "C1", tier=setup)
    before = rc.dump()
    r = rw(rc, "redeem", "C1", reward, "--ref", "R1", as_of=as_of)
    assert r.exit_code == 5, r.output
    assert message in r.stderr
    assert rc.dump() == before


def test_unknown_reward_and_member(rc: Club) -> None:
    before = rc.dump()
    r = rw(rc, "redeem", "C1", "yacht", "--ref", "R1")
    assert r.exit_code == 3
    assert "no reward 'yacht' in the catalogue (rewards: mug, voucher, dinner, pin)" in r.stderr
    r = rw(rc, "redeem", "C9", "mug", "--ref", "R1")
    assert r.exit_code == 3 and "no member matches 'C9'" in r.stderr
    assert rc.dump() == before


def test_stock_runs_out_across_members(rc: Club) -> None:
    for code in ("C1", "C2"):
        give(rc, code, 100)
    assert rw(rc, "redeem", "C1", "mug", "--ref", "A").exit_code == 0
    assert rw(rc, "redeem", "C2", "mug", "--ref", "B").exit_code == 0
    r = rw(rc, "redeem", "C1", "mug", "--ref", "C")
    assert r.exit_code == 5 and "out of stock (all 2 redeemed)" in r.stderr
    assert catalogue(rc)["mug"]["left"] == 0
    assert (rc.balance("C1"), rc.balance("C2")) == (50, 50)


def test_last_unit_goes_to_one_of_two_concurrent_redemptions(rc: Club, monkeypatch) -> None:
    """Two members race for the only pin, each in its own connection and transaction."""
    import time

    from loyaltyctl.config import load_config
    from loyaltyctl.db.engine import make_engine, session_scope
    from loyaltyctl.errors import Refused
    from loyaltyctl.services import rewards
    from loyaltyctl.services.members import resolve_member
    from loyaltyctl.services.rewards import redeem_reward
    from loyaltyctl.timeutil import parse_instant

    give(rc, "C1", 10)
    give(rc, "C2", 10)
    config = load_config(rc.config_path).config
    now = parse_instant(DAY, tz="UTC", date_means="end")
    engines = [make_engine(rc.db_url) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=30)
    outcomes: dict[str, str] = {}
    counted = rewards.redeemed_counts

    def slow_count(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        # Widen the window between counting the stock and writing the redemption, so that
        # without the reward lock both would see one pin left.
        result = counted(*args, **kw)
        time.sleep(0.3)
        return result

    monkeypatch.setattr(rewards, "redeemed_counts", slow_count)

    def attempt(code: str, engine) -> None:  # noqa: ANN001
        barrier.wait()
        try:
            with session_scope(engine, write=True) as s:
                m = resolve_member(session=s, key=code, region="IR")
                redeem_reward(session=s, config=config, member=m, code="pin", ref=f"race-{code}",
                              now=now, today=now.date(), actor="test")
            outcomes[code] = "ok"
        except Refused as exc:
            outcomes[code] = str(exc)

    threads = [threading.Thread(target=attempt, args=(c, e)) for c, e in zip(("C1", "C2"), engines, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for e in engines:
        e.dispose()
    assert len(outcomes) == 2
    assert sorted(outcomes.values()) == ["ok", "reward pin is out of stock (all 1 redeemed)"]
    assert rc.scalar("SELECT COUNT(*) FROM ledger_entries WHERE item_code = 'pin'") == 1
    assert rc.balance("C1") + rc.balance("C2") == 15
    rc.ok("db", "check")
