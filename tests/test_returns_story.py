"""A worked example of the ledger's return paths, end to end through the CLI, with every
balance computed by hand.

Program: 1 point per 1,000 rials (floor), points pending 7 days, then valid 30 days from the
day they become available (rolling), UTC, point_value 100.
"""

from __future__ import annotations

import json

from conftest import SIMPLE_CONFIG, Club

STORY = SIMPLE_CONFIG.replace('mode = "never"', 'mode = "rolling"\ndays = 30').replace(
    "points = 1\n", "points = 1\npending_days = 7\n", 1)


def test_purchase_refund_redeem_reverse_activate_expire_debt_and_recovery(club: Club) -> None:
    club.write_config(STORY)
    club.ok("members", "add", "C1", "Ann")

    def at(when: str, *args: str):  # noqa: ANN202
        return club.ok("--as-of", when, *args)

    def state() -> tuple[int, int]:
        r = club.run("db", "check")
        assert r.exit_code == 0, r.stdout + r.stderr
        row = club.query("SELECT balance, pending FROM members WHERE code = 'C1'")[0]
        return row[0], row[1]

    def remaining(ref: str) -> int:
        return club.scalar("SELECT remaining FROM ledger_entries WHERE idem_key = :k",
                           k=f"purchase:{ref}")

    # 1. Jan 1, 10:00: T1 for 100,000 -> 100 points, pending until Jan 8 10:00;
    #    they will expire 30 days after that day: Feb 7.
    at("2026-01-01 10:00", "purchases", "record", "C1", "100000", "--ref", "T1")
    assert state() == (0, 100)

    # 2. Jan 3: 20,000 of it returned inside the window: floor(100 x 20/100) = 20 pending
    #    points cancelled; nothing available is touched.       balance 0, pending 100 - 20 = 80
    r = at("2026-01-03", "purchases", "refund", "T1", "--amount", "20000", "--ref", "R1")
    assert "20 pending points cancelled" in r.stdout
    assert state() == (0, 80)

    # 3. Jan 8, 12:00: a look-up after the window activates them.   balance 80, pending 0
    r = at("2026-01-08 12:00", "points", "balance", "C1", "--format", "json")
    assert json.loads(r.stdout)["available"] == 80
    assert state() == (80, 0)

    # 4. Jan 9, 10:00: T2 for 50,000 -> 50 pending until Jan 16 10:00 (expires Feb 15).
    at("2026-01-09 10:00", "purchases", "record", "C1", "50000", "--ref", "T2")
    assert state() == (80, 50)

    # 5. Jan 10: redeem 60 (O1), all from T1's lot.            balance 80 - 60 = 20; T1 keeps 20
    at("2026-01-10", "points", "redeem", "C1", "60", "--ref", "O1")
    assert state() == (20, 50) and remaining("T1") == 20

    # 6. Jan 11: the order is cancelled; the 60 go back to T1's lot.    balance 80; T1 keeps 80
    at("2026-01-11", "points", "reverse", "O1")
    assert state() == (80, 50) and remaining("T1") == 80

    # 7. Jan 12: redeem 70 (O2) from T1.                        balance 10; T1 keeps 10
    at("2026-01-12", "points", "redeem", "C1", "70", "--ref", "O2")
    assert state() == (10, 50) and remaining("T1") == 10

    # 8. Nightly run of Jan 16: T2 becomes available.           balance 10 + 50 = 60
    club.ok("points", "expire", "--as-of", "2026-01-16")
    assert state() == (60, 0)

    # 9. Nightly run of Feb 7: the 10 left of T1 expire.        balance 60 - 10 = 50
    club.ok("points", "expire", "--as-of", "2026-02-07")
    assert state() == (50, 0) and remaining("T1") == 0

    # 10. Feb 8: the rest of T1 (80,000) is returned: refunded in full.
    #     target = floor(100 x 100/100) - 10 expired = 90; already cancelled 20 -> claw back 70
    #     (exactly the 70 spent on O2). T1's lot is empty, so 50 come from T2 and 20 are owed.
    #                                                           balance 50 - 70 = -20
    r = at("2026-02-08", "purchases", "refund", "T1", "--ref", "R2")
    assert "70 points clawed back; balance -20" in r.stdout
    assert "10 points of this purchase had already expired and were not taken again" in r.stderr
    assert state() == (-20, 0) and remaining("T2") == 0

    # 11. Feb 9: a member below zero cannot redeem.
    before = club.dump()
    r = club.run("--as-of", "2026-02-09", "points", "redeem", "C1", "1", "--ref", "O3")
    assert r.exit_code == 5
    assert club.dump() == before

    # 12. Feb 10, 10:00: T3 for 30,000 -> 30 pending (pending points pay no debt).
    at("2026-02-10 10:00", "purchases", "record", "C1", "30000", "--ref", "T3")
    assert state() == (-20, 30)

    # 13. Nightly run of Feb 17: T3 becomes available and pays the 20 owed first.
    #                                                           balance -20 + 30 = 10; T3 keeps 10
    club.ok("points", "expire", "--as-of", "2026-02-17")
    assert state() == (10, 0) and remaining("T3") == 10

    # 14. Recovered: the member can redeem again.               balance 0
    at("2026-02-18", "points", "redeem", "C1", "10", "--ref", "O4")
    assert state() == (0, 0)

    # The ledger tells the whole story and sums to the balance.
    kinds = club.query("SELECT kind, points FROM ledger_entries ORDER BY id")
    assert kinds == [
        ("earn", 100), ("cancel", -20), ("earn", 50), ("redeem", -60), ("reversal", 60),
        ("redeem", -70), ("expire", -10), ("clawback", -70), ("earn", 30), ("redeem", -10),
    ]
    assert sum(p for _, p in kinds) == 0
