"""Concurrent runs: several processes earning, redeeming, adjusting, expiring and
recalculating tiers on the same members at once, on SQLite and PostgreSQL.

Each worker is a real process (reliability_helpers.worker_main) running CLI commands
in-process and logging each one's exit code and JSON output; workers start together on a
signal file. Afterwards the logs are reconciled with the database:

- only exit codes 0, 5 (refused) and 6 (busy), each failure with a one-line message;
- the ledger holds exactly the entries of the commands that succeeded (by idempotency key
  and points), the purchases table exactly their purchases, the audit log one row each;
- per member: balance = balance before + what the successful commands logged - the points
  that expired (no lost update), and the cached balance equals the ledger (`db check`);
- no balance below zero except a member owing a refund clawback;
- the reward with a small stock is never oversold; every due lot expired exactly once;
  every member's tier is the one their spend qualifies for (no lost tier update).

Also: the three cron jobs started twice at once (each job done once, the second run refused
with exit 5); a busy database (short timeout: exit 6 after waiting, nothing changed; long
timeout: waits, then succeeds); and, on PostgreSQL, two interleavings forced with row locks
that used to go wrong: the nightly expiry deadlocking with a redemption, and `tiers recalc`
overwriting an upgrade committed after it read the tiers.

Figures are printed (run with -s).
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from conftest import BACKEND, Club
from reliability_helpers import subprocess_env, wait_for_file

HELPERS = Path(__file__).parent / "reliability_helpers.py"
AS_OF = "2026-06-30"
SEED = 4242
WORKERS = 5
OPS_PER_WORKER = 24
MEMBERS = [f"M{i:02d}" for i in range(1, 11)]
DEBTOR = "M11"
MUG_STOCK = 4

CONFIG = f"""
[program]
name = "Busy Club"
currency = "IRR"
decimals = 0
timezone = "UTC"
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
threshold = 400000
multiplier = 1.5
retention_days = 90

[[tiers.levels]]
code = "gold"
name = "Gold"
threshold = 1200000
multiplier = 2
retention_days = 180

[[rewards]]
code = "mug"
name = "Club mug"
cost = 40
stock = {MUG_STOCK}

[[rewards]]
code = "voucher"
name = "Voucher"
kind = "voucher"
cost = 25
"""
THRESHOLDS = [("gold", 1200000), ("silver", 400000), ("bronze", 0)]
# Opening lots per member: one already past its date on AS_OF (the nightly expiry, or a
# debit of that member, closes it), one later, one that never expires.
OPENING = [(150, "2026-03-31"), (200, "2026-12-31"), (50, "never")]


def setup_club(club: Club) -> dict[str, int]:
    """Members, opening lots (one of them due), and a member owing a clawback.

    Returns the balance of every member before the workers start.
    """
    club.write_config(CONFIG)
    for i, code in enumerate([*MEMBERS, DEBTOR], start=1):
        club.ok("--as-of", "2026-01-01", "--actor", "setup", "members", "add", code,
                f"Member {code}", "--phone", f"0935{i:07d}")
    lines = ["member,points,expires_on,ref"]
    for code in MEMBERS:
        lines += [f"{code},{p},{exp},OPEN-{code}-{k}" for k, (p, exp) in enumerate(OPENING)]
    opening = club.root / "opening.csv"
    opening.write_text("\n".join(lines) + "\n", encoding="utf-8")
    club.ok("--as-of", "2026-01-01", "--actor", "setup", "points", "import", str(opening))
    # The debtor: 100 points earned, spent, then the purchase refunded in full: -100.
    club.ok("--as-of", "2026-02-01", "--actor", "setup", "purchases", "record", DEBTOR, "100000",
            "--ref", "SETUP-P1")
    club.ok("--as-of", "2026-02-02", "--actor", "setup", "points", "redeem", DEBTOR, "100",
            "--ref", "SETUP-R1")
    club.ok("--as-of", "2026-02-03", "--actor", "setup", "purchases", "refund", "SETUP-P1",
            "--ref", "SETUP-F1")
    assert club.balance(DEBTOR) == -100
    return dict(club.query("SELECT code, balance FROM members"))


def plan_ops(worker: int, rng: random.Random) -> list[dict]:
    """A seeded mix of commands on overlapping members (every worker touches all)."""
    ops = []
    for i in range(OPS_PER_WORKER):
        ref = f"W{worker}-{i:03d}"
        member = rng.choice([*MEMBERS, *MEMBERS, DEBTOR])
        kind = rng.choices(["earn", "redeem", "mug", "voucher", "adjust+", "adjust-", "expire",
                            "recalc"], weights=[30, 18, 10, 6, 8, 12, 8, 8])[0]
        if kind == "earn":
            day = rng.randint(1, 29)
            args = ["purchases", "record", member, str(rng.choice((20000, 60000, 150000, 320000))),
                    "--ref", ref, "--at", f"2026-06-{day:02d} 10:00"]
        elif kind == "redeem":
            args = ["points", "redeem", member, str(rng.choice((30, 80, 150, 400))), "--ref", ref]
        elif kind in ("mug", "voucher"):
            args = ["rewards", "redeem", member, kind, "--ref", ref]
        elif kind == "adjust+":
            args = ["points", "adjust", member, f"+{rng.choice((10, 35, 90))}",
                    "--reason", f"goodwill {ref}", "--ref", ref]
        elif kind == "adjust-":
            args = ["points", "adjust", member, f"-{rng.choice((20, 60, 250))}",
                    "--reason", f"correction {ref}", "--ref", ref]
        elif kind == "expire":
            args = ["points", "expire"]
        else:
            args = ["tiers", "recalc"]
        ops.append({"id": ref, "kind": kind, "member": member, "args": args})
    return ops


def run_workers(club: Club, tmp: Path, plans: list[list[dict]], env: dict[str, str],
                mark_start: bool = False) -> tuple[list[subprocess.Popen], list[Path], Path]:
    """Start one worker process per plan; returns them once all are ready (not started)."""
    go = tmp / "go"
    procs, logs = [], []
    for w, ops in enumerate(plans):
        spec = {
            "config": str(club.config_path), "db": club.db_url, "env": env,
            "go": str(go), "ready": str(tmp / f"ready{w}"), "log": str(tmp / f"log{w}.jsonl"),
            "ops": [{**op, "args": ["--as-of", AS_OF, "--actor", f"w{w}", "--format", "json",
                                    *op["args"]]} for op in ops],
        }
        if mark_start:
            spec["mark_start"] = str(tmp / f"started{w}-")
        path = tmp / f"spec{w}.json"
        path.write_text(json.dumps(spec), encoding="utf-8")
        procs.append(subprocess.Popen([sys.executable, str(HELPERS), "worker", str(path)],
                                      env=subprocess_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
        logs.append(Path(spec["log"]))
    for w, p in enumerate(procs):
        deadline = time.monotonic() + 120
        while not (tmp / f"ready{w}").exists():
            assert p.poll() is None, p.communicate()[1]
            assert time.monotonic() < deadline, "worker never got ready"
            time.sleep(0.01)
    return procs, logs, go


def finish_workers(procs: list[subprocess.Popen], logs: list[Path]) -> list[dict]:
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    return [json.loads(line) for log in logs for line in log.read_text(encoding="utf-8").splitlines()]


def record(entry: dict) -> dict:
    return json.loads(entry["stdout"]) if entry["stdout"].strip() else {}


def test_workers_on_overlapping_members_lose_no_update(club: Club, tmp_path: Path) -> None:
    before = setup_club(club)
    due = dict(club.query(
        "SELECT m.code, SUM(l.remaining) FROM ledger_entries l JOIN members m ON m.id = l.member_id "
        "WHERE l.expires_on <= :d AND l.remaining > 0 GROUP BY m.code", d=AS_OF))
    due_lots = club.scalar("SELECT COUNT(*) FROM ledger_entries WHERE expires_on <= :d "
                           "AND remaining > 0", d=AS_OF)
    assert due == {code: 150 for code in MEMBERS} and due_lots == len(MEMBERS)
    setup_keys = {r[0] for r in club.query("SELECT idem_key FROM ledger_entries "
                                           "WHERE idem_key IS NOT NULL")}

    rng = random.Random(SEED)
    plans = [plan_ops(w, rng) for w in range(WORKERS)]
    # Two terminals sending the same purchase (idempotent) ...
    for k in range(3):
        same = {"id": f"SAME-{k}", "kind": "earn", "member": MEMBERS[k],
                "args": ["purchases", "record", MEMBERS[k], "50000", "--ref", f"SAME-{k}",
                         "--at", "2026-06-15 12:00"]}
        plans[0].insert(5 + 9 * k, dict(same))
        plans[1].insert(5 + 9 * k, dict(same))
    # ... and reusing one transaction id for two different purchases: one wins, the other
    # is refused.
    for k in range(3):
        for w, member in ((2, MEMBERS[3 + k]), (3, MEMBERS[6 + k])):
            plans[w].insert(4 + 9 * k, {
                "id": f"CLASH-{k}", "kind": "earn", "member": member,
                "args": ["purchases", "record", member, "70000", "--ref", f"CLASH-{k}",
                         "--at", "2026-06-16 12:00"]})

    env = {"LOYALTYCTL_BUSY_TIMEOUT": "20"}
    t0 = time.monotonic()
    procs, logs, go = run_workers(club, tmp_path, plans, env)
    go.write_text("1")
    log = finish_workers(procs, logs)
    elapsed = time.monotonic() - t0

    # -- exit codes and messages -----------------------------------------------------------
    codes = Counter(e["exit"] for e in log)
    bad = [e for e in log if e["exit"] not in (0, 5, 6) or e["crashed"]]
    assert not bad, [(e["id"], e["args"][6:], e["exit"], e["stderr"], e["crashed"]) for e in bad][:5]
    for e in log:
        if e["exit"]:
            assert e["stderr"].startswith("Error: ") and "Traceback" not in e["stderr"], e
            assert e["stdout"] == "", e
    busy = [e for e in log if e["exit"] == 6]
    for e in busy:
        assert "the database is busy" in e["stderr"] and "LOYALTYCTL_BUSY_TIMEOUT" in e["stderr"]

    # -- what each successful command says it did --------------------------------------------
    expected_keys: dict[str, int] = {}
    expected_refs: set[str] = set()
    delta: dict[str, int] = defaultdict(int)
    audited: Counter = Counter()
    refused_reasons: Counter = Counter()
    expired_by_jobs = 0
    for e in log:
        kind, member, out = e["kind"], e["member"], record(e)
        if e["exit"] == 5:
            refused_reasons[kind] += 1
            continue
        if e["exit"]:
            continue
        if kind == "earn":
            if out["already_recorded"]:
                continue
            expected_refs.add(out["ref"])
            if out["points"]:
                expected_keys[f"purchase:{out['ref']}"] = out["points"]
            delta[member] += out["points"]
            audited["purchases record"] += 1
        elif kind in ("redeem", "mug", "voucher", "adjust+", "adjust-"):
            assert not out["already"], e
            points = out["points"] if kind.startswith("adjust") else -out["points"]
            prefix = "adjust" if kind.startswith("adjust") else "redeem"
            expected_keys[f"{prefix}:{e['id']}"] = points
            delta[member] += points
            # Never below zero through a redemption or a negative adjustment.
            assert out["balance"] >= 0, e
            audited["rewards redeem" if kind in ("mug", "voucher")
                    else f"points {prefix}"] += 1
        elif kind == "expire":
            expired_by_jobs += out["points"]
            audited["points expire"] += 1 if out["lots"] else 0
        elif kind == "recalc":
            audited["tiers recalc"] += 1 if out else 0

    # -- the database agrees with the logs -----------------------------------------------------
    club.ok("--as-of", AS_OF, "--actor", "final", "points", "expire")  # close what is still due
    entries = {k: p for k, p in club.query("SELECT idem_key, points FROM ledger_entries "
                                           "WHERE idem_key IS NOT NULL") if k not in setup_keys}
    assert entries == expected_keys
    refs = {r[0] for r in club.query("SELECT ref FROM purchases WHERE ref NOT LIKE 'SETUP-%'")}
    assert refs == expected_refs
    for k in range(3):  # the same purchase twice: recorded once
        assert f"SAME-{k}" in refs
        assert sum(1 for e in log if e["id"] == f"SAME-{k}" and e["exit"] == 0) == 2
        # the reused id: exactly one of the two purchases, the other refused
        clash = [e for e in log if e["id"] == f"CLASH-{k}"]
        assert sorted(e["exit"] for e in clash) == [0, 5], clash
        assert "CLASH" in next(e for e in clash if e["exit"] == 5)["stderr"]
    audit = Counter(dict(club.query(
        "SELECT command, COUNT(*) FROM audit_log WHERE actor LIKE 'w%' GROUP BY command")))
    assert audit == +audited

    # Every due lot expired exactly once, by the jobs or by a debit of its member.
    expiries = club.query("SELECT a.lot_id, COUNT(*), SUM(a.points) FROM allocations a "
                          "JOIN ledger_entries e ON e.id = a.debit_id "
                          "WHERE e.kind = 'expire' GROUP BY a.lot_id")
    assert len(expiries) == due_lots and all(n == 1 for _, n, _ in expiries)
    assert sum(int(p) for _, _, p in expiries) == sum(due.values())
    assert -club.scalar("SELECT SUM(points) FROM ledger_entries WHERE kind = 'expire'") == sum(
        due.values())
    assert expired_by_jobs <= sum(due.values())

    # No lost update: balance before + logged changes - expired, equal to the cached balance.
    after = dict(club.query("SELECT code, balance FROM members"))
    expected_balance = {code: before[code] + delta[code] - due.get(code, 0) for code in before}
    assert after == expected_balance
    club.ok("db", "check")

    # Below zero only by a clawback (the debtor); it could not redeem while below zero.
    negative = {c for c, b in after.items() if b < 0}
    clawed = {r[0] for r in club.query("SELECT DISTINCT m.code FROM ledger_entries l "
                                       "JOIN members m ON m.id = l.member_id WHERE l.kind = 'clawback'")}
    assert negative <= clawed

    # The mug's stock of 4 is never oversold.
    mugs = club.scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'redeem' "
                       "AND item_code = 'mug'")
    mug_ok = sum(1 for e in log if e["kind"] == "mug" and e["exit"] == 0)
    out_of_stock = sum(1 for e in log if e["kind"] == "mug" and "out of stock" in e["stderr"])
    assert mugs == mug_ok <= MUG_STOCK
    assert out_of_stock == 0 or mugs == MUG_STOCK

    # Every member holds the tier their spend in the window qualifies for, and the tier
    # history ends there (upgrades by purchases and by recalc never overwrote each other).
    spend = dict(club.query("SELECT m.code, COALESCE(SUM(p.amount - p.refunded_amount), 0) "
                            "FROM members m LEFT JOIN purchases p ON p.member_id = m.id "
                            "GROUP BY m.code"))
    tiers = dict(club.query("SELECT code, tier FROM members"))
    last = dict(club.query(
        "SELECT m.code, t.to_tier FROM tier_history t JOIN members m ON m.id = t.member_id "
        "WHERE t.id = (SELECT MAX(id) FROM tier_history WHERE member_id = t.member_id)"))
    for code, value in spend.items():
        qualified = next(t for t, threshold in THRESHOLDS if value >= threshold)
        assert tiers[code] == qualified == last.get(code, qualified), (code, value, tiers[code])
    jobs_refused = [e for e in log if e["kind"] in ("expire", "recalc") and e["exit"] == 5]
    for e in jobs_refused:
        assert "is already running" in e["stderr"], e

    print(f"\nconcurrency ({BACKEND}): {WORKERS} workers, {len(log)} commands attempted in "
          f"{elapsed:.1f} s on {len(MEMBERS) + 1} members: {codes[0]} succeeded, {codes[5]} refused "
          f"({', '.join(f'{k} {v}' for k, v in sorted(refused_reasons.items()))}), {codes[6]} busy; "
          f"{len(entries)} ledger entries and {len(refs)} purchases matched the logs; "
          f"{len(after)} balances reconciled; {mugs} of {MUG_STOCK} mugs redeemed "
          f"({out_of_stock} refused out of stock); {len(expiries)} due lots expired once each "
          f"({expired_by_jobs} points by the jobs); {len(jobs_refused)} job runs refused by the "
          f"job lock; {sum(1 for t in tiers.values() if t != 'bronze')} members above bronze")


# -- holding the database, as another program would ---------------------------------------

SQLITE_HOLDER = r"""
import sqlite3, sys, time
from pathlib import Path
db, d = sys.argv[1], Path(sys.argv[2])
c = sqlite3.connect(db, isolation_level=None)
c.execute("BEGIN IMMEDIATE")
(d / "held").write_text("1")
for _ in range(24000):  # at most 120 s; the test says when to let go
    if (d / "release").exists():
        break
    time.sleep(0.005)
c.execute("ROLLBACK")
c.close()
"""


@contextmanager
def database_held(club: Club, signals: Path) -> Iterator[None]:
    """Another program holds the database: on SQLite the write lock (BEGIN IMMEDIATE, in
    another process); on PostgreSQL an EXCLUSIVE lock on the members table (reads go on,
    every balance change waits)."""
    signals.mkdir(exist_ok=True)
    if BACKEND == "sqlite":
        db = club.db_url.split(":///", 1)[1]
        holder = subprocess.Popen([sys.executable, "-c", SQLITE_HOLDER, db, str(signals)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_file(signals / "held", 60)
            yield
        finally:
            (signals / "release").write_text("1")
            _, err = holder.communicate(timeout=60)
            assert holder.returncode == 0, err
    else:
        conn = club.engine.connect()
        try:
            conn.execute(text("LOCK TABLE members IN EXCLUSIVE MODE"))
            yield
        finally:
            conn.rollback()
            conn.close()


# -- the cron jobs, started together --------------------------------------------------------


def test_cron_jobs_started_together_run_once(club: Club, tmp_path: Path) -> None:
    """Two processes each start `points expire`, `tiers recalc` and `bonuses birthday` at
    the same moment, while another program holds the database (so that the first run of
    each job is still busy when the second arrives). For each job one run takes the job
    lock and waits for the database; the other is refused at once (exit 5, nothing done).
    Once the database is free the first runs finish: each job's work is done once."""
    club.write_config(CONFIG + "\n[bonuses]\nbirthday = 30\n")
    n = 400
    people = club.root / "people.csv"
    people.write_text("code,name,birth_date\n" + "".join(
        f"B{i:04d},Person {i},1990-06-{1 + i % 28:02d}\n" for i in range(n)), encoding="utf-8")
    club.ok("--as-of", "2026-01-01", "members", "import", str(people))
    opening = club.root / "opening.csv"
    opening.write_text("member,points,expires_on,ref\n" + "".join(
        f"B{i:04d},{10 + i % 7},2026-04-30,O{i}\n" for i in range(n)), encoding="utf-8")
    club.ok("--as-of", "2026-01-01", "points", "import", str(opening))
    due_points = sum(10 + i % 7 for i in range(n))  # 400 lots: 5,196 points
    # Give 50 members a tier their spend does not support, held by a floor that ended long
    # ago: recalc moves them down.
    with club.engine.begin() as conn:
        conn.execute(text("UPDATE members SET tier = 'gold', tier_since = '2025-01-01 00:00:00', "
                          "tier_floor = 'gold', tier_floor_until = '2025-06-30' "
                          "WHERE code < 'B0050'"))

    jobs = {"expire": ["points", "expire"], "recalc": ["tiers", "recalc"],
            "birthday": ["bonuses", "birthday", "--since", "2026-06-01"]}
    plans = [[{"id": f"{job}-{k}", "kind": job, "member": "", "args": args}]
             for job, args in jobs.items() for k in range(2)]
    procs, logs, go = run_workers(club, tmp_path, plans, {"LOYALTYCTL_BUSY_TIMEOUT": "60"})
    with database_held(club, tmp_path / "signals"):
        go.write_text("1")
        # The second run of each job is refused while the first waits for the database.
        deadline = time.monotonic() + 120
        while sum(1 for log in logs if log.exists() and log.read_text(encoding="utf-8")) < 3:
            assert time.monotonic() < deadline, "the second runs were not refused"
            time.sleep(0.01)
    log = finish_workers(procs, logs)

    codes = Counter((e["kind"], e["exit"]) for e in log)
    assert codes == {(job, code): 1 for job in jobs for code in (0, 5)}, \
        [(e["id"], e["exit"], e["stderr"]) for e in log]
    for e in log:
        if e["exit"] == 5:
            assert "is already running (held by " in e["stderr"], e
            assert "nothing was done" in e["stderr"], e
    # Done once: every due lot expired once, one birthday bonus per member, 50 downgrades.
    assert club.query("SELECT COUNT(*), -SUM(points) FROM ledger_entries WHERE kind = 'expire'") \
        == [(n, due_points)]
    assert club.scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'birthday'") == n
    assert club.scalar("SELECT COUNT(*) FROM tier_history WHERE reason = 'downgrade'") == 50
    assert club.scalar("SELECT COUNT(*) FROM members WHERE tier = 'gold'") == 0
    ran = {e["kind"]: record(e) for e in log if e["exit"] == 0}
    assert ran["expire"]["points"] == due_points and ran["expire"]["lots"] == n
    assert len(ran["birthday"]) == n and len(ran["recalc"]) == 50
    # One audit row per job; none for the refused runs; no job left registered.
    assert club.query("SELECT command, COUNT(*) FROM audit_log WHERE actor LIKE 'w%' "
                      "GROUP BY command ORDER BY command") == [
        ("bonuses birthday", 1), ("points expire", 1), ("tiers recalc", 1)]
    assert club.query("SELECT * FROM job_locks") == []
    club.ok("db", "check")
    waits = {e["kind"]: e["seconds"] for e in log if e["exit"] == 0}
    print(f"\ncron jobs together ({BACKEND}): 6 runs, each job once (waited "
          + ", ".join(f"{k} {v:.2f} s" for k, v in waits.items())
          + " for the database) and refused once")


# -- a busy database -------------------------------------------------------------------------


def test_busy_database_is_waited_for_then_exit_6(club: Club, tmp_path: Path) -> None:
    """Another program holds the database. Commands with a short busy timeout wait that
    long, then exit 6 with a clear message and change nothing; a command with a longer
    timeout waits and succeeds once the lock is gone."""
    setup_club(club)
    # The patient worker: ready (imports warm), waiting for the start signal.
    patient = [{"id": "PATIENT", "kind": "adjust+", "member": "M01",
                "args": ["points", "adjust", "M01", "+7", "--reason", "patient", "--ref", "PATIENT"]}]
    procs, logs, go = run_workers(club, tmp_path, [patient], {"LOYALTYCTL_BUSY_TIMEOUT": "60"},
                                  mark_start=True)
    before = club.dump()
    waited = []
    with database_held(club, tmp_path / "signals"):
        go.write_text("1")  # the patient command starts and blocks on the lock
        wait_for_file(tmp_path / "started0-PATIENT", 60)
        # The impatient commands: each waits its 0.4 s, then exit 6, nothing changed.
        impatient = [
            ("points", "adjust", "M02", "+5", "--reason", "impatient", "--ref", "IMP-1"),
            ("purchases", "record", "M03", "50000", "--ref", "IMP-2"),
            ("points", "redeem", "M04", "10", "--ref", "IMP-3"),
            ("rewards", "redeem", "M05", "mug", "--ref", "IMP-4"),
        ]
        for args in impatient:
            t0 = time.monotonic()
            r = club.run("--as-of", AS_OF, *args, env={"LOYALTYCTL_BUSY_TIMEOUT": "0.4"})
            waited.append(time.monotonic() - t0)
            assert r.exit_code == 6, (args, r.exit_code, r.stderr)
            assert r.stderr.startswith("Error: the database is busy"), r.stderr
            assert "LOYALTYCTL_BUSY_TIMEOUT" in r.stderr and "nothing was changed" in r.stderr
            assert waited[-1] >= 0.35, waited  # it waited for the timeout, not a quick failure
        # The patient command has been blocked all this while (it needs a few ms otherwise).
        assert not (tmp_path / "log0.jsonl").read_text(encoding="utf-8")
        assert club.dump() == before
    log = finish_workers(procs, logs)
    assert [(e["id"], e["exit"]) for e in log] == [("PATIENT", 0)], log
    assert log[0]["seconds"] >= sum(waited) * 0.9  # it waited through all of them
    assert club.query("SELECT points FROM ledger_entries WHERE idem_key = 'adjust:PATIENT'") == [(7,)]
    assert club.query("SELECT COUNT(*) FROM ledger_entries WHERE ref LIKE 'IMP-%'") == [(0,)]
    club.ok("db", "check")
    print(f"\nbusy ({BACKEND}): 4 commands with a 0.4 s timeout exited 6 after "
          f"{min(waited):.2f}-{max(waited):.2f} s; the patient one waited "
          f"{log[0]['seconds']:.2f} s and succeeded")


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite file locking")
def test_sqlite_reader_is_not_blocked_by_a_writer(club: Club, tmp_path: Path) -> None:
    """WAL: support staff can look a member up while a long write holds the lock."""
    setup_club(club)
    db = club.db_url.split(":///", 1)[1]
    c = sqlite3.connect(db, isolation_level=None)
    try:
        c.execute("BEGIN IMMEDIATE")
        c.execute("UPDATE members SET name = 'changing' WHERE code = 'M01'")
        r = club.run("--as-of", AS_OF, "points", "balance", "M01", env={"LOYALTYCTL_BUSY_TIMEOUT": "0.2"})
        assert r.exit_code == 0, r.stderr
        # 200 + 50: the lot due on 2026-03-31 can no longer be spent, even before the expiry run.
        assert "available  250 points" in r.stdout, r.stdout
    finally:
        c.execute("ROLLBACK")
        c.close()


# -- PostgreSQL: two transactions meeting in the worst order ----------------------------------


def _cli_process(club: Club, *args: str) -> subprocess.Popen:
    from reliability_helpers import cli_argv

    return subprocess.Popen(cli_argv(club.config_path, club.db_url, "--as-of", AS_OF, *args),
                            env=subprocess_env(LOYALTYCTL_BUSY_TIMEOUT="30"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_until_blocked(club: Club, proc: subprocess.Popen, mine: int) -> None:
    """Until another session of this database waits for a lock (or `proc` has ended)."""
    deadline = time.monotonic() + 60
    while proc.poll() is None:
        waiting = club.scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> :me AND wait_event_type = 'Lock'", me=mine)
        if waiting:
            return
        assert time.monotonic() < deadline, "the other command never blocked"
        time.sleep(0.01)


@pytest.mark.skipif(BACKEND != "postgresql", reason="row locks of PostgreSQL sessions")
def test_nightly_expiry_and_a_redemption_of_the_same_member_do_not_deadlock(club: Club) -> None:
    """A redemption locks its member, then expires the member's due lots. The nightly
    expiry, started meanwhile, must not hold those lots while waiting for the member:
    that order deadlocks, and PostgreSQL would abort one of the two."""
    from sqlmodel import Session

    from loyaltyctl.config import load_config
    from loyaltyctl.services.ledger import lock_member
    from loyaltyctl.services.points import redeem_points
    from loyaltyctl.timeutil import parse_instant

    setup_club(club)
    config = load_config(club.config_path).config
    now = parse_instant(AS_OF, tz="UTC", calendar="gregorian", date_means="end")
    with Session(club.engine) as s:
        mine = s.execute(text("SELECT pg_backend_pid()")).scalar()
        m01 = s.execute(text("SELECT id FROM members WHERE code = 'M01'")).scalar()
        member = lock_member(s, m01)  # the redemption's first step
        job = _cli_process(club, "--format", "json", "points", "expire")
        _wait_until_blocked(club, job, mine)
        ch = redeem_points(session=s, config=config, member=member, points=30, ref="RACE-1",
                           now=now, today=now.date(), actor="support")
        s.commit()
    out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    # M01's due 150 went with the redemption's own expiry; the job took the other nine.
    assert json.loads(out) == {"as_of": AS_OF, "points": 150 * 9, "lots": 9, "members": 9}
    assert ch.balance == 250 - 30
    assert club.query("SELECT a.lot_id, COUNT(*) FROM allocations a JOIN ledger_entries e "
                      "ON e.id = a.debit_id WHERE e.kind = 'expire' "
                      "GROUP BY a.lot_id HAVING COUNT(*) > 1") == []
    # One entry per member and run: the redemption's for M01, the job's for the nine others.
    assert club.scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'expire'") == 10
    club.ok("db", "check")


@pytest.mark.skipif(BACKEND != "postgresql", reason="row locks of PostgreSQL sessions")
def test_tiers_recalc_does_not_undo_an_upgrade_committed_meanwhile(club: Club) -> None:
    """`tiers recalc` reads every member's tier and metric, then moves those that changed.
    A purchase that upgrades a member between the two must not be overwritten with the
    tier recalc computed from what it read before."""
    from sqlmodel import Session

    from loyaltyctl.config import load_config
    from loyaltyctl.services.members import resolve_member
    from loyaltyctl.services.purchases import record_purchase
    from loyaltyctl.timeutil import parse_instant

    setup_club(club)
    # M01 spent 500,000 but its tier was never raised (as after a restore): recalc will move
    # it to silver. Meanwhile a purchase of 800,000 takes it to gold (1,300,000).
    club.ok("--as-of", "2026-06-01", "purchases", "record", "M01", "500000", "--ref", "P-OLD")
    with club.engine.begin() as c:
        c.execute(text("UPDATE members SET tier = 'bronze' WHERE code = 'M01'"))
    config = load_config(club.config_path).config
    now = parse_instant(AS_OF, tz="UTC", calendar="gregorian", date_means="end")
    with Session(club.engine) as s:
        mine = s.execute(text("SELECT pg_backend_pid()")).scalar()
        m = resolve_member(session=s, key="M01", region="IR")
        res = record_purchase(session=s, config=config, member=m, amount=800000, ref="P-NEW",
                              occurred_at=None, category=None, channel=None, actor="pos",
                              now=now)
        assert s.execute(text("SELECT tier FROM members WHERE code = 'M01'")).scalar() == "gold"
        # recalc reads M01 as bronze with 500,000 (the purchase is not committed), decides
        # silver, and waits for M01's row.
        job = _cli_process(club, "--format", "json", "tiers", "recalc")
        _wait_until_blocked(club, job, mine)
        s.commit()
    out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    assert res.points == 800  # bronze x1 when it was recorded
    assert club.query("SELECT tier FROM members WHERE code = 'M01'") == [("gold",)]
    assert club.query("SELECT t.from_tier, t.to_tier, t.actor FROM tier_history t "
                      "JOIN members m ON m.id = t.member_id WHERE m.code = 'M01' "
                      "ORDER BY t.id DESC LIMIT 1") == [("bronze", "gold", "pos")]
    club.ok("db", "check")
