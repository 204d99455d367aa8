"""Crash safety: `purchases import` killed with SIGKILL at random moments.

A real subprocess imports a purchases file in many small batches; the test kills it at a
moment drawn with a seeded RNG: mostly once the process has read a drawn share of the file
(its read offset, seen in /proc, so the moment does not depend on how busy the machine
is), sometimes during start-up or once the whole file is read (last batch, commit, exit).
This is not a timing assertion: the process may finish first, which is counted. After
every kill:

1. `db check` passes (cached balances equal the ledger, lots equal their allocations...);
2. the import was all or nothing: the database holds either none of the file's purchases
   or all of them, and no audit row of the killed run unless it finished;
3. running the same import again to completion leaves exactly the figures of one clean,
   uninterrupted run: per member balance, pending, tier, ledger sum and entry count,
   purchase count and amount, tier changes; per ledger kind count and sums.

Half the trials start from an empty purchase history, half from a database where a first
slice of the file was already imported (a crash during the second run of the day: the
re-run must skip what is there and add the rest). The slice is a whole number of batches,
so the batches of the re-run hold the same rows as the clean run's (points depend on the
tier at the start of each batch).

Each trial restores one pre-built database (a copied SQLite file; on PostgreSQL
CREATE DATABASE ... TEMPLATE). Figures are printed; run with -s to see them.
Deeper runs: LOYALTYCTL_CRASH_TRIALS=100 LOYALTYCTL_CRASH_ROWS=60000.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import PG_URL, Club
from reliability_helpers import (
    cli_argv,
    ledger_figures,
    member_figures,
    migrate,
    pg_create,
    pg_db_name,
    pg_drop,
    sqlite_checkpoint,
    sqlite_restore,
    subprocess_env,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/fdinfo").is_dir(),
                       reason="the kill moments are read from /proc (Linux)"),
]

SEED = 20260331
TRIALS = int(os.environ.get("LOYALTYCTL_CRASH_TRIALS", "20"))
MEMBERS = 2000
# PostgreSQL pays more per batch (round trips, COPY set-up): fewer rows in bigger batches
# keep its trials as long as SQLite's (a few seconds per import either way).
ROWS = int(os.environ.get("LOYALTYCTL_CRASH_ROWS", "6000" if PG_URL else "12000"))
BATCH = 300 if PG_URL else 200
RESUME_ROWS = BATCH * (ROWS // BATCH // 4)  # the first quarter, in whole batches
AS_OF = "2026-12-31"

# Tier multipliers, referral bonuses on the first purchase, signup bonuses and rolling
# expiry: the import's hooks have work to do in every batch.
CONFIG = """
[program]
name = "Crash Club"
currency = "IRR"
decimals = 0
timezone = "Asia/Tehran"
phone_region = "IR"
point_value = 100

[earning]
spend = 1000
points = 1

[expiry]
mode = "rolling"
days = 365

[tiers]
metric = "spend"
window_days = 365

[[tiers.levels]]
code = "bronze"
name = "Bronze"
threshold = 0
multiplier = 1

[[tiers.levels]]
code = "silver"
name = "Silver"
threshold = 8000000
multiplier = 1.25
retention_days = 90

[[tiers.levels]]
code = "gold"
name = "Gold"
threshold = 25000000
multiplier = 1.5
retention_days = 180

[bonuses]
signup = 5

[bonuses.referral]
referrer_points = 20
referee_points = 10
trigger = "first_purchase"
"""

_PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")


def write_members(path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["code", "name", "phone", "joined_at", "referred_by"])
        for i in range(1, MEMBERS + 1):
            # Every 7th member was brought by the member before them.
            w.writerow([f"M{i:05d}", f"Member {i}", f"0912{i:07d}", "2025-06-01",
                        f"M{i - 1:05d}" if i % 7 == 0 else ""])


def write_purchases(path: Path, rows: int, seed: int) -> None:
    """`rows` purchases over 2026 in time order, like a point-of-sale export; some name
    the member by phone (a few in Persian digits), amounts are round prices."""
    rng = random.Random(seed)
    start = 1767225600  # 2026-01-01 00:00 UTC; times are local (Tehran) wall-clock text
    span = 364 * 86400
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["ref", "member", "amount", "occurred_at", "category"])
        for n in range(rows):
            i = 1 + int(rng.paretovariate(1.2) * 97) % MEMBERS
            member = f"M{i:05d}"
            if rng.random() < 0.1:
                member = f"0912{i:07d}"
                if rng.random() < 0.3:
                    member = member.translate(_PERSIAN)
            amount = rng.choice((5, 12, 25, 40, 99, 150, 320, 750, 1200, 2500)) * 1000
            t = time.gmtime(start + span * n // rows)
            w.writerow([f"POS-{n:07d}", member, amount, time.strftime("%Y-%m-%d %H:%M:%S", t),
                        rng.choice(("groceries", "toys", "", "books"))])


@dataclass
class Backend:
    """Where a trial's database comes from and how it is put back."""

    root: Path
    config: Path
    templates: dict[str, str] = field(default_factory=dict)
    """name -> template (SQLite file path / PostgreSQL database name)."""
    trial_url: str = ""
    trial_name: str = ""
    made: list[str] = field(default_factory=list)

    def restore(self, template: str) -> Club:
        if PG_URL:
            pg_create(PG_URL, self.trial_name, template=self.templates[template])
        else:
            sqlite_restore(Path(self.templates[template]), Path(self.trial_url.split(":///", 1)[1]))
        return Club(self.root, self.trial_url).write_config(CONFIG)

    def save_template(self, name: str, club: Club) -> None:
        club.close()
        if PG_URL:
            db = pg_db_name(PG_URL, f"crash_{name}")
            pg_create(PG_URL, db, template=self.trial_name)
            self.made.append(db)
            self.templates[name] = db
        else:
            src = Path(self.trial_url.split(":///", 1)[1])
            sqlite_checkpoint(src)
            dst = self.root / f"template-{name}.db"
            sqlite_restore(src, dst)
            self.templates[name] = str(dst)


def fresh_trial_db(b: Backend) -> Club:
    if PG_URL:
        b.trial_name = pg_db_name(PG_URL, "crash_trial")
        b.made.append(b.trial_name)
        b.trial_url = pg_create(PG_URL, b.trial_name)
    else:
        b.trial_url = f"sqlite:///{b.root / 'trial.db'}"
    migrate(b.trial_url)
    return Club(b.root, b.trial_url).write_config(CONFIG)


def import_in_process(club: Club, path: Path) -> dict:
    r = club.run("--as-of", AS_OF, "--format", "json", "purchases", "import", str(path),
                 env={"LOYALTYCTL_IMPORT_BATCH": str(BATCH), "LOYALTYCTL_BUSY_TIMEOUT": "60"})
    assert r.exit_code == 0, (r.exit_code, r.stderr)
    return json.loads(r.stdout)


def import_process(b: Backend, path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cli_argv(b.config, b.trial_url, "--as-of", AS_OF, "--format", "json",
                 "purchases", "import", str(path)),
        env=subprocess_env(LOYALTYCTL_IMPORT_BATCH=str(BATCH)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def timed_run(b: Backend, path: Path) -> float:
    t0 = time.monotonic()
    p = import_process(b, path)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    return time.monotonic() - t0


def read_position(pid: int, path: str) -> int | None:
    """How far process `pid` has read the file `path` (its offset, from /proc), or None
    while it does not have the file open."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") != path:
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as fh:
                return int(fh.readline().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return None


def kill_as_planned(proc: subprocess.Popen, path: Path, plan: tuple[str, float]) -> str:
    """SIGKILL `proc` as `plan` says; returns where the import was at that moment.

    ("start-up", s): after s seconds. ("share", f): once a share f of the file is read.
    ("end", s): s seconds after the whole file is read. The process may finish first.
    """
    kind, value = plan
    real = os.path.realpath(path)
    size = path.stat().st_size
    t0 = time.monotonic()
    pos = None
    seen = False
    read_all_at = None
    while proc.poll() is None:
        pos = read_position(proc.pid, real)
        seen = seen or pos is not None
        now = time.monotonic()
        if kind == "start-up":
            due = now - t0 >= value
        elif kind == "share":
            due = pos is not None and pos >= value * size
        else:
            if read_all_at is None and pos is not None and pos >= size:
                read_all_at = now
            due = read_all_at is not None and now - read_all_at >= value
        if due:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.communicate(timeout=120)
    if proc.returncode == 0:
        return "finished before the kill"
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    if not seen:
        return "killed during start-up"
    if pos is None:  # the file is closed after the commit
        return "killed after the commit"
    if pos < size:
        return f"killed mid-import:{pos / size}"
    return "killed after reading the whole file"


def audit_imports(club: Club) -> list[tuple]:
    return club.query("SELECT target, rows FROM audit_log WHERE command = 'purchases import' "
                      "ORDER BY id")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("crash")
    config = root / "loyalty.toml"
    config.write_text(CONFIG, encoding="utf-8")
    b = Backend(root, config)
    yield b
    if PG_URL and b.made:
        pg_drop(PG_URL, *dict.fromkeys(b.made))


def test_import_killed_at_random_moments_is_all_or_nothing_and_resumes_exactly(
        backend: Backend) -> None:
    b = backend
    members_csv, purchases_csv = b.root / "members.csv", b.root / "purchases.csv"
    head_csv, header_csv = b.root / "first-quarter.csv", b.root / "header-only.csv"
    write_members(members_csv)
    write_purchases(purchases_csv, ROWS, SEED)
    lines = purchases_csv.read_text(encoding="utf-8").splitlines(keepends=True)
    head_csv.write_text("".join(lines[:RESUME_ROWS + 1]), encoding="utf-8")
    header_csv.write_text(lines[0], encoding="utf-8")

    # Templates: members only; members plus the first quarter of the file.
    club = fresh_trial_db(b)
    club.ok("--as-of", "2025-06-01", "members", "import", str(members_csv))
    b.save_template("members", club)
    club = b.restore("members")
    head = import_in_process(club, head_csv)
    assert head["imported"] == RESUME_ROWS
    b.save_template("resume", club)

    # One clean, uninterrupted run: the figures every trial must end with. And how long
    # the process takes with no rows at all (start-up, config, schema check, commit).
    club = b.restore("members")
    startup_s = timed_run(b, header_csv)
    total_s = timed_run(b, purchases_csv)
    clean_members = member_figures(club)
    clean_ledger = ledger_figures(club)
    clean_purchases = club.scalar("SELECT COUNT(*) FROM purchases")
    assert clean_purchases == ROWS
    club.ok("db", "check")
    assert audit_imports(club) == [("header-only.csv", 0), ("purchases.csv", ROWS)]
    club.close()

    rng = random.Random(SEED)
    outcomes = {"killed during start-up": 0, "killed mid-import": 0,
                "killed after reading the whole file": 0, "killed after the commit": 0,
                "finished before the kill": 0}
    read_at_kill: list[float] = []
    rows_compared = 0
    trial_s: list[float] = []
    for trial in range(TRIALS):
        t_trial = time.monotonic()
        start_from = "resume" if trial % 2 else "members"
        club = b.restore(start_from)
        before = club.scalar("SELECT COUNT(*) FROM purchases")
        before_audit = audit_imports(club)
        # Mostly inside the import loop (at a drawn share of the file read); one in ten
        # during start-up, one in ten once the whole file is read (last batch, commit, exit).
        if trial % 10 == 3:
            plan = ("start-up", rng.uniform(0, startup_s * 0.8))
        elif trial % 10 == 7:
            plan = ("end", rng.uniform(0, 0.1))
        else:
            plan = ("share", rng.uniform(0.02, 0.98))
        proc = import_process(b, purchases_csv)
        outcome = kill_as_planned(proc, purchases_csv, plan)
        if outcome.startswith("killed mid-import:"):
            outcome, share = outcome.split(":")
            read_at_kill.append(float(share))
        outcomes[outcome] += 1

        # 1. Consistent. 2. All or nothing.
        club.ok("db", "check")
        after = club.scalar("SELECT COUNT(*) FROM purchases")
        if outcome in ("finished before the kill", "killed after the commit"):
            assert after == ROWS
            assert audit_imports(club) == [*before_audit, ("purchases.csv", ROWS - before)]
        else:
            assert after in (before, ROWS), (trial, before, after)
            if after == before:  # killed before its commit: not a trace of it
                assert audit_imports(club) == before_audit
        # 3. Run again to completion: exactly the clean run's figures.
        summary = import_in_process(club, purchases_csv)
        assert (summary["imported"], summary["already_imported"]) == (ROWS - after, after)
        assert summary["rejected"] == 0
        got = member_figures(club)
        assert got == clean_members, (trial, start_from, outcome,
                                      [(g, c) for g, c in zip(got, clean_members, strict=True) if g != c][:5])
        assert ledger_figures(club) == clean_ledger
        assert club.scalar("SELECT COUNT(*) FROM purchases") == clean_purchases
        club.ok("db", "check")
        rows_compared += len(got) + len(clean_ledger)
        club.close()
        trial_s.append(time.monotonic() - t_trial)

    print(f"\ncrash trials ({'postgresql' if PG_URL else 'sqlite'}): {TRIALS} trials, "
          f"{ROWS:,} rows / {MEMBERS:,} members in batches of {BATCH} "
          f"(resume trials start with {RESUME_ROWS:,} rows imported); "
          f"clean run {total_s:.2f} s of which start-up {startup_s:.2f} s; "
          + ", ".join(f"{k}: {v}" for k, v in outcomes.items())
          + (f" (at {min(read_at_kill):.0%} to {max(read_at_kill):.0%} of the file read)"
             if read_at_kill else "")
          + f"; {rows_compared:,} member/ledger rows compared with the clean run; "
          f"{sum(trial_s) / max(1, len(trial_s)):.1f} s per trial")
    # The test tests crashes: most kills must land before the process finished.
    assert outcomes["killed mid-import"] >= TRIALS // 2, outcomes
