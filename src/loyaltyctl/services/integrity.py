"""`db check`: every ledger invariant, each as one set-based query returning violations."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel import Session

# Each check: (name, description, SQL returning rows that violate it, formatter).
# The SQL is constant text: no input is ever formatted into it.
_CHECKS: list[tuple[str, str, str]] = [
    (
        "balance",
        "cached balance equals the sum of the available ledger",
        """
        SELECT m.code, m.balance, COALESCE(l.total, 0)
        FROM members m
        LEFT JOIN (SELECT member_id, SUM(points) AS total FROM ledger_entries
                   WHERE pending_until IS NULL GROUP BY member_id) l ON l.member_id = m.id
        WHERE m.balance <> COALESCE(l.total, 0)
        """,
    ),
    (
        "pending",
        "cached pending points equal the sum of the pending ledger",
        """
        SELECT m.code, m.pending, COALESCE(l.total, 0)
        FROM members m
        LEFT JOIN (SELECT member_id, SUM(points) AS total FROM ledger_entries
                   WHERE pending_until IS NOT NULL GROUP BY member_id) l ON l.member_id = m.id
        WHERE m.pending <> COALESCE(l.total, 0)
        """,
    ),
    (
        "lot_remaining",
        "each lot's remainder equals its points minus what was allocated from it",
        """
        SELECT e.id, e.remaining, e.points - COALESCE(a.used, 0)
        FROM ledger_entries e
        LEFT JOIN (SELECT lot_id, SUM(points) AS used FROM allocations GROUP BY lot_id) a
               ON a.lot_id = e.id
        WHERE e.remaining IS NOT NULL AND e.remaining <> e.points - COALESCE(a.used, 0)
        """,
    ),
    (
        "lot_bounds",
        "no lot remainder below zero or above its points",
        """
        SELECT id, remaining, points FROM ledger_entries
        WHERE remaining IS NOT NULL AND (remaining < 0 OR remaining > points OR points <= 0)
        """,
    ),
    (
        "debit_allocations",
        "allocations sum to each debit (a clawback may fall short: that is the member's debt)",
        """
        SELECT e.id, e.kind, -e.points, COALESCE(a.used, 0)
        FROM ledger_entries e
        LEFT JOIN (SELECT debit_id, SUM(points) AS used FROM allocations GROUP BY debit_id) a
               ON a.debit_id = e.id
        WHERE e.points < 0 AND e.remaining IS NULL AND (
              COALESCE(a.used, 0) > -e.points
              OR (e.kind <> 'clawback' AND COALESCE(a.used, 0) <> -e.points))
        """,
    ),
    (
        "allocation_owner",
        "an allocation joins a debit and a lot of the same member",
        """
        SELECT a.id, a.member_id, d.member_id, l.member_id
        FROM allocations a
        JOIN ledger_entries d ON d.id = a.debit_id
        JOIN ledger_entries l ON l.id = a.lot_id
        WHERE a.member_id <> d.member_id OR a.member_id <> l.member_id
              OR l.remaining IS NULL
        """,
    ),
    (
        "references",
        "every member, lot, purchase, debit and entry a row refers to exists (the nightly "
        "expiry writes without SQLite's per-row foreign-key checks)",
        """
        SELECT 'ledger_entries', e.id, 'member_id', e.member_id
        FROM ledger_entries e LEFT JOIN members m ON m.id = e.member_id WHERE m.id IS NULL
        UNION ALL
        SELECT 'ledger_entries', e.id, 'source_id', e.source_id
        FROM ledger_entries e LEFT JOIN ledger_entries s ON s.id = e.source_id
        WHERE e.source_id IS NOT NULL AND s.id IS NULL
        UNION ALL
        SELECT 'ledger_entries', e.id, 'purchase_id', e.purchase_id
        FROM ledger_entries e LEFT JOIN purchases p ON p.id = e.purchase_id
        WHERE e.purchase_id IS NOT NULL AND p.id IS NULL
        UNION ALL
        SELECT 'allocations', a.id, 'member_id', a.member_id
        FROM allocations a LEFT JOIN members m ON m.id = a.member_id WHERE m.id IS NULL
        UNION ALL
        SELECT 'allocations', a.id, 'debit_id', a.debit_id
        FROM allocations a LEFT JOIN ledger_entries d ON d.id = a.debit_id WHERE d.id IS NULL
        UNION ALL
        SELECT 'allocations', a.id, 'lot_id', a.lot_id
        FROM allocations a LEFT JOIN ledger_entries l ON l.id = a.lot_id WHERE l.id IS NULL
        """,
    ),
    (
        "balance_lots",
        "balance equals open available lots minus unpaid clawback debt",
        """
        SELECT m.code, m.balance, COALESCE(lots.total, 0) - COALESCE(debt.total, 0)
        FROM members m
        LEFT JOIN (SELECT member_id, SUM(remaining) AS total FROM ledger_entries
                   WHERE remaining IS NOT NULL AND pending_until IS NULL
                   GROUP BY member_id) lots ON lots.member_id = m.id
        LEFT JOIN (SELECT e.member_id, SUM(-e.points - COALESCE(a.used, 0)) AS total
                   FROM ledger_entries e
                   LEFT JOIN (SELECT debit_id, SUM(points) AS used FROM allocations
                              GROUP BY debit_id) a ON a.debit_id = e.id
                   WHERE e.kind = 'clawback' AND e.pending_until IS NULL
                   GROUP BY e.member_id) debt ON debt.member_id = m.id
        WHERE m.balance <> COALESCE(lots.total, 0) - COALESCE(debt.total, 0)
        """,
    ),
    (
        "negative_balance",
        "a balance below zero only through an unpaid clawback",
        """
        SELECT m.code, m.balance FROM members m
        WHERE m.balance < 0 AND NOT EXISTS (
            SELECT 1 FROM ledger_entries e WHERE e.member_id = m.id AND e.kind = 'clawback')
        """,
    ),
    (
        "refund_bounds",
        "refunded amount never above the purchase",
        """
        SELECT ref, amount, refunded_amount FROM purchases
        WHERE refunded_amount < 0 OR refunded_amount > amount OR amount < 0
        """,
    ),
    # Purchases, redemptions and expiry (services/purchases.py, points.py, rewards.py).
    (
        "purchase_points",
        "a purchase's recorded points equal the points of its earn lot",
        """
        SELECT p.ref, p.points, COALESCE(e.total, 0)
        FROM purchases p
        LEFT JOIN (SELECT purchase_id, SUM(points) AS total FROM ledger_entries
                   WHERE kind = 'earn' AND purchase_id IS NOT NULL
                   GROUP BY purchase_id) e ON e.purchase_id = p.id
        WHERE p.points <> COALESCE(e.total, 0)
        """,
    ),
    (
        "earn_purchase",
        "every earn lot belongs to a purchase of the same member",
        """
        SELECT e.id, e.member_id, p.member_id
        FROM ledger_entries e
        LEFT JOIN purchases p ON p.id = e.purchase_id
        WHERE e.kind = 'earn' AND (p.id IS NULL OR p.member_id <> e.member_id)
        """,
    ),
    (
        "entry_sign",
        "credits are lots with positive points; redemptions, expiries, clawbacks and "
        "cancellations are negative and not lots",
        """
        SELECT id, kind, points, remaining FROM ledger_entries
        WHERE (kind IN ('earn', 'signup', 'birthday', 'referral', 'event', 'campaign', 'opening')
               AND (points <= 0 OR remaining IS NULL))
           OR (kind IN ('redeem', 'expire', 'clawback', 'cancel')
               AND (points >= 0 OR remaining IS NOT NULL)
               -- a refund with nothing to claw back still records its ref: a 0-point clawback
               AND NOT (kind = 'clawback' AND points = 0 AND remaining IS NULL))
           OR (kind = 'adjust' AND (points = 0 OR (points > 0) <> (remaining IS NOT NULL)))
        """,
    ),
    (
        "expire_source",
        "an expiry entry takes only from lots of its member that have an expiry date, and "
        "takes from at least one",
        """
        SELECT e.id, a.lot_id, a.points, l.expires_on
        FROM ledger_entries e
        JOIN allocations a ON a.debit_id = e.id
        LEFT JOIN ledger_entries l ON l.id = a.lot_id
        WHERE e.kind = 'expire' AND (l.id IS NULL OR l.remaining IS NULL
              OR l.expires_on IS NULL OR l.member_id <> e.member_id OR a.points <= 0)
        UNION ALL
        SELECT e.id, NULL, e.points, NULL
        FROM ledger_entries e
        WHERE e.kind = 'expire' AND NOT EXISTS (SELECT 1 FROM allocations a
                                                 WHERE a.debit_id = e.id)
        """,
    ),
    (
        "redeem_item",
        "a redemption is a points discount (no item) or names its reward, and carries its ref",
        """
        SELECT id, item_code, ref FROM ledger_entries
        WHERE kind = 'redeem' AND (ref IS NULL OR item_code = '')
        """,
    ),
]


@dataclass(frozen=True)
class Violation:
    check: str
    description: str
    detail: str


def run_checks(*, session: Session, limit_per_check: int = 50) -> tuple[list[Violation], int]:
    """All invariants; returns the violations found and the number of checks run."""
    found: list[Violation] = []
    for name, description, sql in _CHECKS + list(EXTRA_CHECKS):
        rows = session.execute(text(sql)).fetchmany(limit_per_check)
        for row in rows:
            found.append(Violation(name, description, ", ".join(str(v) for v in row)))
    return found, len(_CHECKS) + len(EXTRA_CHECKS)


# Later features (refunds, reversals, pending points) append their own invariants here.
EXTRA_CHECKS: list[tuple[str, str, str]] = []

# Refunds, pending points and reversals (services/returns.py, services/ledger.activate_pending).
EXTRA_CHECKS += [
    (
        "pending_not_redeemable",
        "no point of a pending lot was taken by anything but a pending cancellation",
        """
        SELECT l.id, d.id, d.kind, a.points
        FROM allocations a
        JOIN ledger_entries l ON l.id = a.lot_id
        JOIN ledger_entries d ON d.id = a.debit_id
        WHERE l.pending_until IS NOT NULL AND d.kind <> 'cancel'
        """,
    ),
    (
        "cancel_with_its_lot",
        "a pending cancellation is pending exactly as long as the lot it cancels",
        """
        SELECT d.id, d.pending_until, l.id, l.pending_until
        FROM ledger_entries d
        JOIN allocations a ON a.debit_id = d.id
        JOIN ledger_entries l ON l.id = a.lot_id
        WHERE d.kind = 'cancel' AND (
              (d.pending_until IS NULL AND l.pending_until IS NOT NULL)
              OR (d.pending_until IS NOT NULL AND l.pending_until IS NULL)
              OR d.pending_until <> l.pending_until)
        """,
    ),
    (
        "reversal_mirrors_redemption",
        "each reversal undoes one redemption, once, with allocations equal to minus the "
        "redemption's on the same lots",
        """
        SELECT r.id, ra.lot_id, ra.pts, sa.pts
        FROM ledger_entries r
        JOIN (SELECT debit_id, lot_id, SUM(points) AS pts FROM allocations
              GROUP BY debit_id, lot_id) ra ON ra.debit_id = r.id
        LEFT JOIN (SELECT debit_id, lot_id, SUM(points) AS pts FROM allocations
                   GROUP BY debit_id, lot_id) sa
               ON sa.debit_id = r.source_id AND sa.lot_id = ra.lot_id
        WHERE r.kind = 'reversal' AND (sa.pts IS NULL OR ra.pts <> -sa.pts)
        UNION ALL
        SELECT r.id, sa.lot_id, ra.pts, sa.pts
        FROM ledger_entries r
        JOIN (SELECT debit_id, lot_id, SUM(points) AS pts FROM allocations
              GROUP BY debit_id, lot_id) sa ON sa.debit_id = r.source_id
        LEFT JOIN (SELECT debit_id, lot_id, SUM(points) AS pts FROM allocations
                   GROUP BY debit_id, lot_id) ra
               ON ra.debit_id = r.id AND ra.lot_id = sa.lot_id
        WHERE r.kind = 'reversal' AND ra.pts IS NULL
        UNION ALL
        SELECT r.id, s.id, r.points, s.points
        FROM ledger_entries r
        LEFT JOIN ledger_entries s ON s.id = r.source_id
        WHERE r.kind = 'reversal' AND (s.id IS NULL OR s.kind <> 'redeem'
              OR r.points <> -s.points OR r.member_id <> s.member_id
              OR r.remaining IS NOT NULL)
        UNION ALL
        SELECT MIN(r.id), r.source_id, COUNT(*), NULL
        FROM ledger_entries r
        WHERE r.kind = 'reversal'
        GROUP BY r.source_id HAVING COUNT(*) > 1
        """,
    ),
    (
        "clawback_bounds",
        "what refunds took back from a purchase never exceeds its points plus the referral "
        "points it triggered",
        """
        SELECT p.ref, p.points, COALESCE(r.pts, 0), c.total
        FROM purchases p
        JOIN (SELECT purchase_id, SUM(-points) AS total FROM ledger_entries
              WHERE kind IN ('clawback', 'cancel') AND purchase_id IS NOT NULL
              GROUP BY purchase_id) c ON c.purchase_id = p.id
        LEFT JOIN (SELECT purchase_id, SUM(points) AS pts FROM ledger_entries
                   WHERE kind = 'referral' AND purchase_id IS NOT NULL
                   GROUP BY purchase_id) r ON r.purchase_id = p.id
        WHERE c.total > p.points + COALESCE(r.pts, 0)
        """,
    ),
    (
        "clawback_proportional",
        "a purchase's own clawback never exceeds floor(points x refunded / amount)",
        """
        SELECT p.ref, p.points, p.refunded_amount, p.amount, c.total
        FROM purchases p
        JOIN (SELECT e.purchase_id, SUM(-e.points) AS total
              FROM ledger_entries e
              LEFT JOIN ledger_entries s ON s.id = e.source_id
              WHERE e.kind IN ('clawback', 'cancel') AND e.purchase_id IS NOT NULL
                    AND (s.id IS NULL OR s.kind <> 'referral')
              GROUP BY e.purchase_id) c ON c.purchase_id = p.id
        WHERE p.amount <= 0 AND c.total > 0
           OR p.amount > 0
              AND c.total > CAST(p.points AS NUMERIC) * p.refunded_amount / p.amount
        """,
    ),
]
