"""Every benchmark in one command: the purchases import, then every other job.

    python benchmarks/bench.py                  # SQLite: the import of 1,000,000 purchases,
                                                #   then 100,000 members / 1,000,000 purchases
    python benchmarks/bench.py --small          # CI smoke (under a minute)
    python benchmarks/bench.py --db postgresql+psycopg://postgres@127.0.0.1:5432/bench

Runs `bench_import.py` (the import against its same-run baseline, the re-import, peak
memory against a tenth of the file) and `bench_all.py` (expiry, tiers, every report, the
support look-ups, start-up), each printing its figures and targets, with the same --small,
--data and --check. On PostgreSQL the --db database is created if missing; the import runs
in a database named after it with `_import` added (created for the run, dropped after it),
the other jobs in --db itself (see bench_all.py: it and `<db>_work`, `<db>_empty` are
emptied or replaced). Exit status: 1 if either benchmark failed, or, with --check, missed
a target.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="the CI smoke sizes of both")
    ap.add_argument("--db", help="PostgreSQL URL (emptied, see above); default: SQLite files")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "loyaltyctl-bench")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args()

    common = ["--data", str(args.data)] + (["--small"] if args.small else []) + (
        ["--check"] if args.check else [])
    import_db: list[str] = []
    if args.db:
        import psycopg

        sys.path.insert(0, str(HERE))
        import bench_all

        main_db = bench_all._pg_name(args.db)
        with psycopg.connect(bench_all._pg_dsn(args.db, "postgres"), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (main_db,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{main_db}"')
        name = main_db + "_import"
        bench_all._pg_admin(args.db, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                            f'CREATE DATABASE "{name}"')
        import_db = ["--db", bench_all._pg_with_name(args.db, name)]
    status = 0
    try:
        for script, extra in (("bench_import.py", import_db),
                              ("bench_all.py", ["--db", args.db] if args.db else [])):
            print(f"== {script}", flush=True)
            rc = subprocess.run([sys.executable, str(HERE / script), *common, *extra]).returncode
            status = max(status, 1 if rc else 0)
    finally:
        if args.db:
            bench_all._pg_admin(args.db, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    raise SystemExit(status)


if __name__ == "__main__":
    main()
