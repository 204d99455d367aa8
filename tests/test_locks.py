"""Job locks: two processes never run the same job at once, on both backends.

The other process is a real one (a tiny Python snippet) so that the test exercises the OS
file lock / the server's advisory lock, not a lock inside this process. The two sides
synchronise through signal files, never through fixed sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BACKEND, Club
from loyaltyctl.db.engine import make_engine
from loyaltyctl.errors import ExitCode, Refused
from loyaltyctl.services.locks import current_holders, default_holder, job_lock, lock_file_path

HOLDER_SNIPPET = r"""
import sys, time
from pathlib import Path
from loyaltyctl.db.engine import make_engine
from loyaltyctl.services.locks import job_lock

url, name, holder, signal_dir = sys.argv[1:5]
d = Path(signal_dir)
engine = make_engine(url)
with job_lock(engine=engine, name=name, holder=holder):
    (d / "held").write_text("1")
    for _ in range(6000):  # at most 60 s; the test says when to let go
        if (d / "release").exists():
            break
        time.sleep(0.01)
engine.dispose()
(d / "released").write_text("1")
"""

REFUSAL = re.compile(
    r"^points expire is already running \(held by (?P<holder>.+) since "
    r"(?P<since>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC\); nothing was done$"
)


def wait_for(path: Path, proc: subprocess.Popen, limit_s: float = 30.0) -> None:
    """Poll until the other process has created `path` (fail fast if it died)."""
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"helper exited {proc.returncode}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"helper never wrote {path.name}")
        time.sleep(0.01)


class Holder:
    """Another process holding a job lock until told to let go."""

    def __init__(self, url: str, name: str, holder: str, signal_dir: Path) -> None:
        self.dir = signal_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER_SNIPPET, url, name, holder, str(signal_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        wait_for(self.dir / "held", self.proc)

    def release(self) -> None:
        (self.dir / "release").write_text("1")
        assert self.proc.wait(timeout=30) == 0, self.proc.stderr.read()
        assert (self.dir / "released").exists()

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


@pytest.fixture
def holders(club: Club, tmp_path: Path) -> Iterator:
    started: list[Holder] = []

    def start(name: str = "points expire", holder: str = "cron-a (pid 1 on box)") -> Holder:
        h = Holder(club.db_url, name, holder, tmp_path / f"signals{len(started)}")
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()


@pytest.fixture
def engine(club: Club) -> Iterator:
    e = make_engine(club.db_url)
    yield e
    e.dispose()


def test_second_process_is_refused_while_the_first_holds(club: Club, engine, holders) -> None:
    h = holders()
    # While held, the job_locks row shows who runs it.
    rows = club.query("SELECT name, holder FROM job_locks")
    assert rows == [("points expire", "cron-a (pid 1 on box)")]
    with pytest.raises(Refused) as info:
        with job_lock(engine=engine, name="points expire", holder="cron-b"):
            raise AssertionError("entered a lock another process holds")
    m = REFUSAL.match(info.value.message)
    assert m, info.value.message
    assert m.group("holder") == "cron-a (pid 1 on box)"
    assert info.value.exit_code == ExitCode.REFUSED == 5
    assert "released automatically" in str(info.value)
    # The refused attempt changed nothing: the holder's row is still the only one.
    assert club.query("SELECT name, holder FROM job_locks") == rows

    h.release()
    assert club.query("SELECT * FROM job_locks") == []
    with job_lock(engine=engine, name="points expire", holder="cron-b") as lock:
        assert lock.holder == "cron-b"
        assert [r["holder"] for r in current_holders(engine=engine)] == ["cron-b"]
    assert current_holders(engine=engine) == []


def test_other_jobs_are_not_blocked(club: Club, engine, holders) -> None:
    holders("points expire")
    with job_lock(engine=engine, name="tiers recalc", holder="cron-b"):
        with job_lock(engine=engine, name="bonuses birthday", holder="cron-c"):
            names = sorted(r[0] for r in club.query("SELECT name FROM job_locks"))
            assert names == ["bonuses birthday", "points expire", "tiers recalc"]
    assert club.query("SELECT name FROM job_locks") == [("points expire",)]


def test_a_killed_holder_releases_the_lock_and_its_stale_row_blocks_nothing(
        club: Club, engine, holders) -> None:
    h = holders(holder="cron-dead")
    h.kill()
    # The row it wrote is left behind (it could not clean up) ...
    assert club.query("SELECT holder FROM job_locks") == [("cron-dead",)]
    # ... but the OS / the server released the real lock. On PostgreSQL the server notices
    # the closed connection a moment later, hence the wait (not a fixed sleep: it polls).
    with job_lock(engine=engine, name="points expire", holder="cron-next", wait_seconds=20):
        assert club.query("SELECT holder FROM job_locks") == [("cron-next",)]
    assert club.query("SELECT * FROM job_locks") == []


def test_wait_seconds_waits_for_the_holder_to_finish(club: Club, engine, holders) -> None:
    h = holders()
    (h.dir / "release").write_text("1")  # the holder lets go while we are already waiting
    with job_lock(engine=engine, name="points expire", holder="cron-b", wait_seconds=30):
        assert club.query("SELECT holder FROM job_locks") == [("cron-b",)]
    assert h.proc.wait(timeout=30) == 0


def test_same_process_cannot_enter_twice(club: Club, engine) -> None:
    with job_lock(engine=engine, name="tiers recalc", holder="first"):
        with pytest.raises(Refused, match=r"^tiers recalc is already running \(held by first since "):
            with job_lock(engine=engine, name="tiers recalc", holder="second"):
                pass
    with job_lock(engine=engine, name="tiers recalc", holder="second"):
        pass
    assert club.query("SELECT * FROM job_locks") == []


def test_stale_row_from_an_old_run_does_not_block(club: Club, engine) -> None:
    from datetime import datetime

    with club.engine.begin() as conn:
        from sqlalchemy import text

        conn.execute(text("INSERT INTO job_locks (name, holder, acquired_at) VALUES "
                          "('points expire', 'ghost', :t)"), {"t": datetime(2020, 1, 1)})
    with job_lock(engine=engine, name="points expire", holder="live"):
        assert club.query("SELECT holder FROM job_locks") == [("live",)]
    assert club.query("SELECT * FROM job_locks") == []


def test_the_lock_is_released_when_the_body_raises(club: Club, engine) -> None:
    with pytest.raises(ZeroDivisionError):
        with job_lock(engine=engine, name="points expire", holder="crashing"):
            1 / 0  # noqa: B018
    with job_lock(engine=engine, name="points expire", holder="after"):
        pass
    assert club.query("SELECT * FROM job_locks") == []


@pytest.mark.skipif(BACKEND != "sqlite", reason="the lock file is the SQLite mechanism")
def test_sqlite_lock_file_beside_the_database_is_private(club: Club, engine, holders) -> None:
    db = Path(engine.url.database)
    path = lock_file_path(db, "points expire")
    assert path == db.parent / "loyalty.db.points-expire.lock"
    with job_lock(engine=engine, name="points expire", holder="me") as lock:
        assert lock.mechanism == f"flock:{path}"
        assert path.read_text().startswith("me\t")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Kept (deleting lock files races with the next run) but empty once released.
    assert path.exists() and path.read_text() == ""


def test_in_memory_database_falls_back_to_a_process_lock() -> None:
    e = make_engine("sqlite://")
    try:
        with job_lock(engine=e, name="points expire", holder="one") as lock:
            assert lock.mechanism == "process"
            with pytest.raises(Refused, match="held by another process"):
                with job_lock(engine=e, name="points expire", holder="two"):
                    pass
        with job_lock(engine=e, name="points expire", holder="two"):
            pass
    finally:
        e.dispose()


def test_default_holder_names_actor_pid_and_host() -> None:
    h = default_holder("cron")
    assert h.startswith(f"cron (pid {os.getpid()} on ") and h.endswith(")")
