"""Benchmark `members import`: 100,000 members, imported twice through the CLI.

    python benchmarks/members_import.py                         # SQLite in a temp directory
    python benchmarks/members_import.py --members 20000         # smaller
    python benchmarks/members_import.py --db postgresql+psycopg://postgres@127.0.0.1:54329/bench

Generates a CSV (streamed to disk: phone, e-mail, card, birth date, join time, tags, and a
referrer for one member in ten, some named by a code later in the file), creates a club with
`loyaltyctl init`, then runs `loyaltyctl members import` twice, each in its own subprocess:
the first run inserts every member, the second finds every one unchanged. For each run it
prints wall time, rows per second, CPU time and the child's peak RSS (from os.wait4's
rusage; CPU time is the steadier figure on a shared machine).

THE POSTGRESQL DATABASE GIVEN WITH --db IS EMPTIED (schema public dropped) first.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = ["code", "name", "phone", "email", "card_number", "birth_date", "joined_at", "status",
          "referred_by", "acquisition_campaign", "tags"]
FIRST = ["Sara", "Ali", "Reza", "Mina", "Nima", "Leila", "Omid", "Yasaman", "Kaveh", "Parisa"]
LAST = ["Ahmadi", "Karimi", "Hosseini", "Rahimi", "Sadeghi", "Moradi", "Jafari", "Ebrahimi"]
TAGS = ["", "vip", "web", "vip,web", "store", ""]


def generate(path: Path, n: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(HEADER)
        for i in range(1, n + 1):
            ref = ""
            if i % 10 == 0:
                # Mostly an earlier member; one in five names a member further down the file.
                forward = i % 50 == 0 and i + 7 <= n
                ref = f"M{i + 7:06d}" if forward else f"M{rnd.randint(1, i - 1):06d}"
            w.writerow([
                f"M{i:06d}",
                f"{rnd.choice(FIRST)} {rnd.choice(LAST)}",
                f"0912{i:07d}",
                f"member{i}@example.com",
                f"6037{i:08d}",
                f"{rnd.randint(1950, 2005)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
                f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T"
                f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00Z",
                "active",
                ref,
                "",
                rnd.choice(TAGS),
            ])


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, str, str]:
    """Run a command: (wall s, CPU s, peak RSS MB) of exactly this child (os.wait4), output."""
    out_f = tempfile.TemporaryFile("w+")
    err_f = tempfile.TemporaryFile("w+")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=out_f, stderr=err_f, text=True)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    out_f.seek(0)
    err_f.seek(0)
    out, err = out_f.read(), err_f.read()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, out, err  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--db", help="database URL (default: a SQLite file in the work directory)")
    ap.add_argument("--workdir", type=Path, help="keep the files here (default: a temp dir)")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="members-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    csv_path = work / "members.csv"
    t = time.perf_counter()
    generate(csv_path, args.members)
    print(f"generated {args.members:,} members ({csv_path.stat().st_size / 1e6:.1f} MB) "
          f"in {time.perf_counter() - t:.1f}s: {csv_path}")

    db = args.db or str(work / "loyalty.db")
    if db.startswith("postgresql"):
        from sqlalchemy import create_engine, text

        engine = create_engine(db)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    elif Path(db).exists():
        Path(db).unlink()
    env = {**os.environ, "LOYALTYCTL_CONFIG": str(work / "loyalty.toml"), "LOYALTYCTL_DB": db}
    cli = [sys.executable, "-m", "loyaltyctl"]
    run_measured([*cli, "init", "--force", str(work)], env)

    print(f"{'run':<8} {'wall s':>7} {'rows/s':>8} {'CPU s':>7} {'peak MB':>8}  result")
    for label in ("first", "again"):
        wall, cpu, rss, out, err = run_measured(
            [*cli, "--format", "json", "members", "import", str(csv_path)], env)
        counts = json.loads(out)
        print(f"{label:<8} {wall:>7.1f} {args.members / wall:>8,.0f} {cpu:>7.1f} {rss:>8.0f}  "
              f"inserted {counts['inserted']:,}, updated {counts['updated']:,}, "
              f"unchanged {counts['unchanged']:,}, rejected {counts['rejected']:,}")


if __name__ == "__main__":
    main()
