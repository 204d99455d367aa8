"""A worked example: two members through purchases, redemptions and expiry, by hand.

Rules of the Story Club:
- 1 point per 10,000 rials, purchases under 50,000 earn nothing, floor rounding;
- cosmetics earn double; a point is worth 1,000 rials as a discount;
- points expire 90 days after they are earned (rolling);
- one reward: a tote bag for 30 points, 3 in stock.

Every balance below is worked out in the comment above its assertion.
"""

from __future__ import annotations

import json

from conftest import Club

STORY = """
[program]
name = "Story Club"
currency = "IRR"
decimals = 0
timezone = "UTC"
phone_region = "IR"
point_value = 1000

[earning]
spend = 10000
points = 1
min_purchase = 50000
rounding = "floor"

[earning.category_multipliers]
cosmetics = 2

[expiry]
mode = "rolling"
days = 90

[[tiers.levels]]
code = "member"
name = "Member"
threshold = 0

[[rewards]]
code = "tote"
name = "Tote bag"
cost = 30
stock = 3
"""


def at(club: Club, day: str, *args: str):  # noqa: ANN201
    """Run a command as of `day` and insist it succeeds."""
    return club.ok("--as-of", day, *args)


def lots(club: Club, code: str) -> list[tuple[int, int, str]]:
    return [(p, r, str(e)) for p, r, e in club.query(
        "SELECT e.points, e.remaining, e.expires_on FROM ledger_entries e JOIN members m"
        " ON m.id = e.member_id WHERE m.code = :c AND e.remaining IS NOT NULL ORDER BY e.id",
        c=code)]


def test_a_season_at_the_story_club(club: Club) -> None:
    club.write_config(STORY)
    at(club, "2026-01-01", "members", "add", "SARA", "Sara Ahmadi", "--phone", "09121110001")
    at(club, "2026-01-01", "members", "add", "ALI", "Ali Rezaei", "--phone", "09121110002")

    # 10 Jan: Sara buys groceries for 125,000: 125,000 / 10,000 = 12.5 -> 12 points,
    # expiring 90 days later on 10 April.                                        Sara 12
    r = at(club, "2026-01-10", "purchases", "record", "SARA", "125,000", "--ref", "S-1",
           "--category", "groceries", "--at", "2026-01-10 10:00")
    assert r.stdout == "SARA: 125,000 IRR -> 12 points; balance 12\n"

    # 20 Jan: 40,000 is under the 50,000 minimum: no points.                     Sara 12
    r = at(club, "2026-01-20", "purchases", "record", "SARA", "40000", "--ref", "S-2",
           "--at", "2026-01-20 10:00")
    assert r.stdout == "SARA: 40,000 IRR -> 0 points; balance 12\n"

    # 5 Feb: cosmetics for 80,000: 8 x 2 = 16 points, expiring 6 May
    # (5 Feb + 90 days: 23 days to 28 Feb, 31 to 31 Mar, 30 to 30 Apr, 6 more).  Sara 28
    r = at(club, "2026-02-05", "purchases", "record", "SARA", "80000", "--ref", "S-3",
           "--category", "cosmetics", "--at", "2026-02-05 10:00")
    assert r.stdout == "SARA: 80,000 IRR -> 16 points; balance 28\n"

    # 6 Feb: the till sends S-3 again: a no-op that says so.                     Sara 28
    r = at(club, "2026-02-06", "purchases", "record", "SARA", "80000", "--ref", "S-3",
           "--category", "cosmetics", "--at", "2026-02-05 10:00")
    assert "already recorded: S-3 (no points added)" in r.stderr
    assert club.balance("SARA") == 28

    # 10 Feb: Ali spends 300,000: 30 points, expiring 11 May.                    Ali 30
    at(club, "2026-02-10", "purchases", "record", "ALI", "300000", "--ref", "A-1",
       "--at", "2026-02-10 10:00")
    assert club.balance("ALI") == 30

    # 1 Mar: Sara takes 20 points off an order: 20 x 1,000 = 20,000 rials. The earliest-
    # expiring lot goes first: all 12 of January's (10 Apr), then 8 of February's (6 May).
    #                                                                            Sara 8
    r = at(club, "2026-03-01", "points", "redeem", "SARA", "20", "--ref", "ORDER-77")
    assert r.stdout == "SARA: redeemed 20 points for a discount of 20,000 IRR; balance 8\n"
    assert lots(club, "SARA") == [(12, 0, "2026-04-10"), (16, 8, "2026-05-06")]

    # 2 Mar: Ali takes a tote bag for 30 points; 2 bags left.                    Ali 0
    r = at(club, "2026-03-02", "rewards", "redeem", "ALI", "tote", "--ref", "TOTE-1")
    assert r.stdout == "ALI: redeemed Tote bag (tote) for 30 points; balance 0; 2 left in stock\n"

    # 15 Mar: support gives Sara 5 points for a late delivery; they expire 90 days later,
    # on 13 June (16 days to 31 Mar, 30 to 30 Apr, 31 to 31 May, 13 more).       Sara 13
    at(club, "2026-03-15", "points", "adjust", "SARA", "+5", "--reason", "late delivery")
    assert lots(club, "SARA")[-1] == (5, 5, "2026-06-13")
    assert club.balance("SARA") == 13

    # 10 Apr: January's lot is due, but all of it was spent: nothing to expire.
    r = club.ok("points", "expire", "--as-of", "2026-04-10")
    assert r.stderr.strip() == "nothing to expire as of 2026-04-10"

    # 1 May: who is about to lose points? Sara, 8 on 6 May (5 more on 13 June is outside 30 days).
    rows = json.loads(at(club, "2026-05-01", "-f", "json", "points", "expiring").stdout)
    assert rows == [{"expires_on": "2026-05-06", "member": "SARA", "name": "Sara Ahmadi",
                     "points": 8, "lots": 1}]

    # 6 May: the 8 left of February's lot expire.                                Sara 5
    r = club.ok("points", "expire", "--as-of", "2026-05-06")
    assert r.stderr.strip() == "expired 8 points from 1 lots of 1 members as of 2026-05-06"
    assert club.balance("SARA") == 5
    # Running it again for the same day changes nothing.
    before = club.dump()
    r = club.ok("points", "expire", "--as-of", "2026-05-06")
    assert r.stderr.strip() == "nothing to expire as of 2026-05-06"
    assert club.dump() == before

    # 11 May: Ali's lot is due, but it was all spent on the tote.
    r = club.ok("points", "expire", "--as-of", "2026-05-11")
    assert r.stderr.strip() == "nothing to expire as of 2026-05-11"

    # The books: issued 12 + 16 + 30 + 5 = 63; redeemed 20 + 30 = 50; expired 8;
    # outstanding 63 - 50 - 8 = 5, all Sara's, worth 5,000 rials.
    totals = dict(club.query("SELECT kind, SUM(points) FROM ledger_entries GROUP BY kind"))
    assert totals == {"earn": 58, "adjust": 5, "redeem": -50, "expire": -8}
    data = json.loads(at(club, "2026-05-11", "-f", "json", "points", "balance", "SARA").stdout)
    assert (data["available"], data["value"], data["next_expiry"]) == (5, 5000, "2026-06-13")
    assert (club.balance("SARA"), club.balance("ALI")) == (5, 0)

    # Sara's statement, newest first, with the balance after each entry: 12, 28, 8, 13, 5.
    rows = json.loads(at(club, "2026-05-11", "-f", "json", "points", "history", "SARA").stdout)
    assert [(r["kind"], r["points"], r["balance"]) for r in rows] == [
        ("expire", -8, 5), ("adjust", 5, 13), ("redeem", -20, 8), ("earn", 16, 28),
        ("earn", 12, 12)]
    stock = json.loads(at(club, "2026-05-11", "-f", "json", "rewards", "list").stdout)
    assert [(s["code"], s["left"]) for s in stock] == [("tote", 2)]
    assert "invariants hold" in club.ok("db", "check").stderr
