"""Deterministic benchmark data: N members (for `members import`) and M purchases (for
`purchases import`), streamed to CSV so that millions of rows never sit in memory.

    python benchmarks/generate.py --members 10000 --purchases 1000000 --out /tmp/bench

writes members.csv (code,name,phone,email,birth_date,joined_at) and purchases.csv
(ref,member,amount,occurred_at,category,channel). The same seed gives the same files.

Shape: members from `loyaltyctl.demo_data.members` (the demo's names, phones, join dates);
purchases spread over one year in proportion to `demo_data.seasonal` (weekly rhythm,
Nowruz and Yalda peaks), each by a member who had joined by then, with a few heavy buyers
and many occasional ones (gamma-distributed weights), log-normal amounts in rials, the
demo's categories and channels. Most rows name the member by code; some by phone in local
format (a few with Persian digits) or by e-mail, as real point-of-sale exports do.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import itertools
import math
import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

from loyaltyctl.demo_data import CATEGORIES, CHANNELS, DemoMember, members, seasonal

YEAR_START = date(2026, 1, 1)
DAYS = 365
AS_OF = "2027-01-01"
"""An --as-of after every generated purchase."""
_PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")


def generate_members(seed: int, n: int) -> list[DemoMember]:
    # Everybody joined before the purchase year starts or during it.
    return members(seed, n, YEAR_START + timedelta(days=180), {})


def write_members(path: Path, people: list[DemoMember]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["code", "name", "phone", "email", "birth_date", "joined_at"])
        for m in people:
            w.writerow([m.code, m.name, m.phone, m.email or "",
                        m.birth_date.isoformat() if m.birth_date else "",
                        m.joined_at.strftime("%Y-%m-%d %H:%M")])


def _local_phone(e164: str, rng: random.Random) -> str:
    local = "0" + e164[3:]  # +98912... -> 0912...
    if rng.random() < 0.5:
        local = f"{local[:4]} {local[4:7]} {local[7:]}"
    if rng.random() < 0.2:
        local = local.translate(_PERSIAN)
    return local


def iter_purchases(seed: int, people: list[DemoMember], m: int) -> Iterator[list[str]]:
    """Exactly m purchase rows over the year, in time order."""
    rng = random.Random(seed + 7)
    weights = [rng.gammavariate(0.6, 1.0) for _ in people]
    cum = list(itertools.accumulate(weights))
    joined = [p.joined_at.date() for p in people]  # ascending (demo_data joins in order)
    cat_names, cat_w = [c for c, _ in CATEGORIES], list(itertools.accumulate(w for _, w in CATEGORIES))
    ch_names, ch_w = [c for c, _ in CHANNELS], list(itertools.accumulate(w for _, w in CHANNELS))
    days = [YEAR_START + timedelta(days=i) for i in range(DAYS)]
    shares = [seasonal(d) for d in days]
    total = sum(shares)
    # Whole rows per day that add up to exactly m (largest remainders).
    raw = [m * s / total for s in shares]
    counts = [int(x) for x in raw]
    for i in sorted(range(DAYS), key=lambda i: raw[i] - counts[i], reverse=True)[: m - sum(counts)]:
        counts[i] += 1
    seq = 0
    for d, count in zip(days, counts, strict=True):
        k = bisect.bisect_right(joined, d) or 1  # members who had joined by this day
        top = cum[k - 1]
        seconds = sorted(rng.randrange(8 * 3600, 22 * 3600) for _ in range(count))
        for s in seconds:
            seq += 1
            i = bisect.bisect_left(cum, rng.random() * top, 0, k)
            p = people[min(i, k - 1)]
            r = rng.random()
            if r < 0.85 or (r >= 0.95 and not p.email):
                key = p.code
            elif r < 0.95:
                key = _local_phone(p.phone, rng)
            else:
                key = p.email or p.code
            amount = max(1000, int(rng.lognormvariate(math.log(1_500_000), 0.8)) // 1000 * 1000)
            at = datetime.combine(d, datetime.min.time()) + timedelta(seconds=s)
            cat = cat_names[bisect.bisect_left(cat_w, rng.random() * cat_w[-1])]
            ch = ch_names[bisect.bisect_left(ch_w, rng.random() * ch_w[-1])]
            yield [f"POS-{d:%Y%m%d}-{seq:08d}", key, str(amount), at.strftime("%Y-%m-%d %H:%M:%S"),
                   cat, ch]


def write_purchases(path: Path, seed: int, people: list[DemoMember], m: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["ref", "member", "amount", "occurred_at", "category", "channel"])
        w.writerows(iter_purchases(seed, people, m))


def generate(out: Path, *, members_n: int, purchases_n: int, seed: int = 42) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    people = generate_members(seed, members_n)
    mpath, ppath = out / "members.csv", out / "purchases.csv"
    write_members(mpath, people)
    write_purchases(ppath, seed, people, purchases_n)
    return mpath, ppath


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=10_000)
    ap.add_argument("--purchases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=Path("bench-data"))
    args = ap.parse_args()
    mpath, ppath = generate(args.out, members_n=args.members, purchases_n=args.purchases,
                            seed=args.seed)
    print(f"wrote {mpath} ({args.members:,} members) and {ppath} ({args.purchases:,} purchases)")


if __name__ == "__main__":
    main()
