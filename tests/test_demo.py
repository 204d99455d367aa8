"""`loyaltyctl demo`: the README's quick start builds a consistent club deterministically."""

from __future__ import annotations

import json

import pytest

from conftest import BACKEND, Club

AS_OF = "2026-11-20"


def _demo(club: Club, directory, *extra: str, members: str = "150"):  # noqa: ANN001, ANN202
    return club.run("--as-of", AS_OF, "demo", str(directory), "--members", members, *extra)


def test_demo_builds_a_consistent_club_and_shows_the_dashboard(club: Club, tmp_path) -> None:
    r = _demo(club, tmp_path / "demo")
    assert r.exit_code == 0, r.output
    assert "built in" in r.stderr and "150 members" in r.stderr
    assert "Summary, the beginning to 2026-11-20" in r.stdout
    assert "Loyalty ladder as of 2026-11-20: 150 members" in r.stdout
    assert "Members per tier" in r.stdout
    for f in ("loyalty.toml", "campaigns.toml", "data/members.csv", "data/purchases.csv",
              "data/refunds.csv"):
        assert (tmp_path / "demo" / f).exists(), f
    # The club it built obeys every ledger invariant and has every kind of activity.
    check = club.run("--config", str(tmp_path / "demo" / "loyalty.toml"), "db", "check")
    assert check.exit_code == 0, check.output
    kinds = dict(club.query("SELECT kind, COUNT(*) FROM ledger_entries GROUP BY kind"))
    for kind in ("earn", "signup", "redeem", "expire", "clawback"):
        assert kinds.get(kind, 0) > 0, (kind, kinds)
    assert club.scalar("SELECT COUNT(*) FROM members") == 150
    assert club.scalar("SELECT COUNT(*) FROM purchases WHERE refunded_amount > 0") > 0
    assert club.scalar("SELECT COUNT(*) FROM members WHERE referred_by_id IS NOT NULL") > 0
    assert club.scalar("SELECT COUNT(*) FROM audit_log WHERE command = 'demo'") == 1


def test_demo_shows_an_existing_club_without_rebuilding(club: Club, tmp_path) -> None:
    assert _demo(club, tmp_path / "demo").exit_code == 0
    before = club.dump()
    r = _demo(club, tmp_path / "demo")
    assert r.exit_code == 0, r.output
    assert "already holds a demo club" in r.stderr
    assert "Summary" in r.stdout
    assert club.dump() == before


def test_demo_refuses_a_database_that_has_members(club: Club, tmp_path) -> None:
    club.ok("members", "add", "X1", "Someone")
    before = club.dump()
    r = _demo(club, tmp_path / "demo")
    assert r.exit_code == 5
    assert "already has members" in r.stderr and "--force" in r.stderr
    assert club.dump() == before


@pytest.mark.skipif(BACKEND != "sqlite", reason="compares two separate SQLite clubs")
def test_demo_is_deterministic_for_a_seed_and_date(club: Club, tmp_path) -> None:
    sums = []
    for name in ("a", "b"):
        d = tmp_path / name
        r = club.runner.invoke(
            __import__("loyaltyctl.cli.main", fromlist=["app"]).app,
            ["--as-of", AS_OF, "--format", "json", "demo", str(d), "--members", "120", "--seed", "9"],
            env={"LOYALTYCTL_CONFIG": "", "LOYALTYCTL_DB": ""})
        assert r.exit_code == 0, r.output
        s = club.runner.invoke(
            __import__("loyaltyctl.cli.main", fromlist=["app"]).app,
            ["--config", str(d / "loyalty.toml"), "--as-of", AS_OF, "--format", "json",
             "reports", "summary"], env={"LOYALTYCTL_DB": ""})
        assert s.exit_code == 0, s.output
        sums.append(json.loads(s.stdout))
    assert sums[0] == sums[1]
    assert sums[0]["purchases"] > 100
