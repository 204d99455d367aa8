"""Benchmark `purchases import` against a same-run baseline.

    python benchmarks/bench_import.py                      # 10,000 members, 1,000,000 purchases, SQLite
    python benchmarks/bench_import.py --small              # CI smoke: 10,000 members, 100,000 purchases
    python benchmarks/bench_import.py --db postgresql+psycopg://postgres@127.0.0.1:54329/bench

Steps: generate the data (benchmarks/generate.py, cached per size and seed), build a fresh
club with the sample program file, `members import` the members, then time, each in its own
subprocess so peak memory is that run's alone:

- baseline: the same purchases plus one ledger row each written with plain executemany in
  one transaction (sqlite3), or with COPY (PostgreSQL), with no validation or rules, on a
  copy of the club (SQLite) or rolled back (PostgreSQL);
- `purchases import` of the file into the club;
- the same import again (every row already imported);
- for the memory comparison, first a fresh import of a tenth as many purchases (its own
  generated file, its own club).

Prints wall time, rows per second, peak RSS and the ratio to the baseline, and checks the
targets (peak < 300 MB; from 1,000,000 rows, the size they are set for, fresh import
<= 2.5x and re-import <= 1x the baseline, peak <= 1.2x that of the tenth: on small files
fixed costs such as start-up and the per-batch hooks weigh more); exits 1 if one is missed
(with --check). THE POSTGRESQL DATABASE GIVEN WITH --db IS EMPTIED (schema public dropped).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402

AS_OF = generate.AS_OF
TARGET_FRESH, TARGET_AGAIN, TARGET_MB, TARGET_FLAT = 2.5, 1.0, 300, 1.2


def measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run cmd in a child that reports its own peak RSS: (seconds, peak MB, stdout)."""
    probe = (
        "import resource, subprocess, sys, time, json;"
        "t = time.perf_counter();"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "dt = time.perf_counter() - t;"
        "kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "print(json.dumps({'rc': r.returncode, 's': dt, 'kb': kb, 'out': r.stdout, 'err': r.stderr}))"
    )
    res = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=True)
    data = json.loads(res.stdout)
    if data["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed ({data['rc']}):\n{data['err'][-3000:]}")
    return data["s"], data["kb"] / 1024, data["out"]


def cli(club: Path, db: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "loyaltyctl", "--config", str(club / "loyalty.toml"),
            "--db", db, "--as-of", AS_OF, *args]


# -- baselines (run as `bench_import.py --baseline-* ...` in a child) -----------------------


def _baseline_rows(purchases: Path, member_ids: dict[str, int]):  # noqa: ANN202
    ids = list(member_ids.values())
    with purchases.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for i, (ref, key, amount, at, category, channel) in enumerate(reader, start=1):
            mid = member_ids.get(key) or ids[hash(key) % len(ids)]
            a = int(amount)
            yield i, mid, ref, a, at, category, channel, a // 100_000


def baseline_sqlite(db: Path, purchases: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    member_ids = dict(conn.execute("SELECT code, id FROM members"))
    conn.execute("BEGIN IMMEDIATE")
    base = conn.execute("SELECT COALESCE(MAX(id), 0) FROM purchases").fetchone()[0]
    lbase = conn.execute("SELECT COALESCE(MAX(id), 0) FROM ledger_entries").fetchone()[0]
    buf_p, buf_l = [], []
    now = "2027-01-01 00:00:00.000000"

    def flush() -> None:
        conn.executemany(
            "INSERT INTO purchases (id, member_id, ref, amount, currency, occurred_at, category,"
            " channel, refunded_amount, points, campaign, created_at)"
            " VALUES (?, ?, ?, ?, 'IRR', ?, ?, ?, 0, ?, NULL, ?)", buf_p)
        conn.executemany(
            "INSERT INTO ledger_entries (id, member_id, kind, points, effective_at, expires_on,"
            " remaining, purchase_id, ref, idem_key, actor, created_at)"
            " VALUES (?, ?, 'earn', ?, ?, '2027-06-01', ?, ?, ?, ?, 'bench', ?)", buf_l)
        buf_p.clear()
        buf_l.clear()

    for i, mid, ref, amount, at, category, channel, points in _baseline_rows(purchases, member_ids):
        ts = at + ".000000"
        buf_p.append((base + i, mid, ref, amount, ts, category, channel, points, now))
        buf_l.append((lbase + i, mid, points, ts, points, base + i, ref, "purchase:" + ref, now))
        if len(buf_p) >= 20_000:
            flush()
    flush()
    conn.execute("COMMIT")
    conn.close()


def baseline_pg(url: str, purchases: Path) -> None:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        member_ids = dict(conn.execute("SELECT code, id FROM members").fetchall())
        base = conn.execute("SELECT COALESCE(MAX(id), 0) FROM purchases").fetchone()[0]
        lbase = conn.execute("SELECT COALESCE(MAX(id), 0) FROM ledger_entries").fetchone()[0]
        with conn.cursor() as cur:
            with cur.copy("COPY purchases (id, member_id, ref, amount, currency, occurred_at,"
                          " category, channel, refunded_amount, points, created_at)"
                          " FROM STDIN") as cp:
                for i, mid, ref, amount, at, cat, ch, pts in _baseline_rows(purchases, member_ids):
                    cp.write_row((base + i, mid, ref, amount, "IRR", at, cat, ch, 0, pts, AS_OF))
            with cur.copy("COPY ledger_entries (id, member_id, kind, points, effective_at,"
                          " expires_on, remaining, purchase_id, ref, idem_key, actor, created_at)"
                          " FROM STDIN") as cp:
                for i, mid, ref, _a, at, _c, _h, pts in _baseline_rows(purchases, member_ids):
                    cp.write_row((lbase + i, mid, "earn", pts, at, "2027-06-01", pts, base + i,
                                  ref, "purchase:" + ref, "bench", AS_OF))
        conn.rollback()


# -- the run --------------------------------------------------------------------------------


def reset_pg(url: str) -> None:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def _data(args: argparse.Namespace, purchases: int) -> Path:
    data = args.data / f"m{args.members}-p{purchases}"
    if not (data / "purchases.csv").exists():
        t = time.perf_counter()
        generate.generate(data, members_n=args.members, purchases_n=purchases)
        print(f"generated {data} in {time.perf_counter() - t:.1f}s")
    return data


def _club(args: argparse.Namespace, work: Path, data: Path) -> tuple[Path, str]:
    """A fresh club with the sample program file and the members imported: (dir, db URL)."""
    from loyaltyctl.config import sample_config_text

    club = work / "club"
    if club.exists():
        shutil.rmtree(club)
    club.mkdir()
    (club / "loyalty.toml").write_text(sample_config_text(), encoding="utf-8")
    if args.db:
        reset_pg(args.db)
        db = args.db
    else:
        db = f"sqlite:///{club / 'loyalty.db'}"
    subprocess.run(cli(club, db, "db", "upgrade"), check=True, capture_output=True)
    t, _, _ = measured(cli(club, db, "members", "import", str(data / "members.csv")))
    print(f"members import: {args.members:,} members in {t:.1f}s")
    return club, db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=10_000)
    ap.add_argument("--purchases", type=int, default=1_000_000)
    ap.add_argument("--small", action="store_true",
                    help="10,000 members, 100,000 purchases (CI smoke, well under a minute)")
    ap.add_argument("--db", help="PostgreSQL URL (emptied!); default: a SQLite file in a temp dir")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "loyaltyctl-bench")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("--baseline-sqlite", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--baseline-pg", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_sqlite:
        baseline_sqlite(Path(args.baseline_sqlite[0]), Path(args.baseline_sqlite[1]))
        return
    if args.baseline_pg:
        baseline_pg(args.baseline_pg[0], Path(args.baseline_pg[1]))
        return
    if args.small:
        args.members, args.purchases = 10_000, 100_000

    n = args.purchases
    data = _data(args, n)
    # Memory must stay flat in the file size: a tenth of the file is imported too (fresh, on
    # its own club) and the two peaks compared.
    tenth = n // 10
    data_tenth = _data(args, tenth)
    purchases_csv = data / "purchases.csv"

    work = Path(tempfile.mkdtemp(prefix="loyaltyctl-bench-"))
    try:
        club, db = _club(args, work, data_tenth)
        _, tenth_mb, _ = measured(cli(club, db, "purchases", "import",
                                      str(data_tenth / "purchases.csv")))
        print(f"purchases import of {tenth:,} purchases (for the memory comparison): "
              f"peak {tenth_mb:.0f} MB")

        club, db = _club(args, work, data)
        if args.db:
            base_s, base_mb, _ = measured([sys.executable, __file__, "--baseline-pg", db,
                                           str(purchases_csv)])
            what = "COPY"
        else:
            copy = work / "baseline.db"
            shutil.copyfile(club / "loyalty.db", copy)
            base_s, base_mb, _ = measured([sys.executable, __file__, "--baseline-sqlite",
                                           str(copy), str(purchases_csv)])
            what = "sqlite3 executemany"
        fresh_s, fresh_mb, out = measured(cli(club, db, "--format", "json", "purchases", "import",
                                              str(purchases_csv)))
        counts = json.loads(out)
        again_s, again_mb, out2 = measured(cli(club, db, "--format", "json", "purchases", "import",
                                               str(purchases_csv)))
        again = json.loads(out2)
        assert counts["imported"] + counts["rejected"] + counts["duplicates"] == n, counts
        assert again["already_imported"] == n and again["imported"] == 0, again

        backend = "PostgreSQL" if args.db else "SQLite"
        print(f"\n{backend}, {args.members:,} members, {n:,} purchases "
              f"({counts['imported']:,} imported, {counts['points']:,} points)")
        print(f"{'run':<28}{'wall s':>9}{'rows/s':>12}{'peak MB':>10}{'x baseline':>12}")
        rows = [(f"baseline ({what})", base_s, base_mb),
                ("purchases import", fresh_s, fresh_mb),
                ("purchases import (again)", again_s, again_mb)]
        for name, s, mb in rows:
            print(f"{name:<28}{s:>9.1f}{n / s:>12,.0f}{mb:>10.0f}{s / base_s:>12.2f}")
        flat = fresh_mb / tenth_mb
        print(f"peak memory: {fresh_mb:.0f} MB for {n:,} purchases, {tenth_mb:.0f} MB for "
              f"{tenth:,}: {flat:.2f}x (target <= {TARGET_FLAT}x, and < {TARGET_MB} MB)")
        missed = []
        if n >= 1_000_000 and fresh_s > TARGET_FRESH * base_s:
            missed.append(f"fresh import {fresh_s / base_s:.2f}x baseline > {TARGET_FRESH}x")
        if n >= 1_000_000 and again_s > TARGET_AGAIN * base_s:
            missed.append(f"re-import {again_s / base_s:.2f}x baseline > {TARGET_AGAIN}x")
        if max(fresh_mb, again_mb) > TARGET_MB:
            missed.append(f"peak {max(fresh_mb, again_mb):.0f} MB > {TARGET_MB} MB")
        if n >= 1_000_000 and flat > TARGET_FLAT:
            missed.append(f"peak {flat:.2f}x that of a tenth of the file > {TARGET_FLAT}x")
        checked = "" if n >= 1_000_000 else (
            " (ratios are checked from 1,000,000 rows, the size they are set for)")
        print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)) + checked)
        if missed and args.check:
            raise SystemExit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
