"""Campaigns through the CLI: add/end write campaigns.toml only, list/show, and how
overlapping campaigns stack on a purchase (highest multiplier wins, flat bonuses add)."""

from __future__ import annotations

import json
import tomllib

import pytest

from conftest import SIMPLE_CONFIG, Club

# A campaign written by hand in the program file.
IN_PROGRAM = SIMPLE_CONFIG + """
[[tiers.levels]]
code = "basic"
name = "Basic"
threshold = 0

[[tiers.levels]]
code = "gold"
name = "Gold"
threshold = 1000000

# Winter sale: written by hand, loyaltyctl must never rewrite this file.
[[campaigns]]
code = "winter"
name = "Winter sale"
starts = 2026-01-01
ends = 2026-01-31
multiplier = 2
flat_bonus = 10
"""


@pytest.fixture
def cclub(club: Club) -> Club:
    return club.write_config(IN_PROGRAM)


def campaigns_file(club: Club):  # noqa: ANN201
    return club.root / "campaigns.toml"


def add_campaign(club: Club, code: str, *opts: str):  # noqa: ANN201
    return club.run("--as-of", "2026-01-10", "campaigns", "add", code, *opts)


def test_add_appends_to_campaigns_toml_and_never_touches_the_program_file(cclub: Club) -> None:
    program_before = cclub.config_path.read_bytes()
    r = add_campaign(cclub, "flash", "--name", "Flash sale", "--starts", "2026-01-15", "--ends",
                     "2026-01-20", "--multiplier", "3", "--flat-bonus", "5", "--min-amount", "50,000",
                     "--category", "Shoes,bags", "--tier", "gold", "--budget", "۱۰۰۰۰۰۰",
                     "--expected-revenue", "20,000,000")
    assert r.exit_code == 0, r.output
    assert "campaign flash added" in r.stderr and "status upcoming" in r.stderr
    assert cclub.config_path.read_bytes() == program_before
    text = campaigns_file(cclub).read_text()
    assert text.startswith("# Campaigns maintained by `loyaltyctl campaigns add`")
    assert tomllib.loads(text) == {"campaigns": [{
        "code": "flash", "name": "Flash sale", "starts": __import__("datetime").date(2026, 1, 15),
        "ends": __import__("datetime").date(2026, 1, 20), "multiplier": 3, "flat_bonus": 5,
        "min_amount": 50_000, "tiers": ["gold"], "categories": ["shoes", "bags"],
        "budget": 1_000_000, "expected_revenue": 20_000_000}]}
    assert cclub.query("SELECT command, target FROM audit_log") == [("campaigns add", "flash")]
    r = cclub.ok("--as-of", "2026-01-16", "campaigns", "list", "--format", "json")
    listed = {c["code"]: (c["status"], c["source"]) for c in json.loads(r.stdout)}
    assert listed == {"winter": ("running", "loyalty.toml"), "flash": ("running", "campaigns.toml")}
    r = cclub.ok("--as-of", "2026-02-01", "campaigns", "list", "--format", "csv")
    assert [line.split(",")[2] for line in r.stdout.splitlines()[1:]] == ["ended", "ended"]


def test_add_keeps_other_campaigns_and_comments_exactly(cclub: Club) -> None:
    hand_written = (
        "# Our spring campaigns (edited by Sara)\n"
        "[[campaigns]]\n"
        "code = \"spring\"   # do not rename\n"
        "name = \"Spring\"\n"
        "starts = 2026-03-01\n"
        "ends = 2026-03-31\n"
        "multiplier = 1.5\n"
    )
    campaigns_file(cclub).write_text(hand_written, encoding="utf-8")
    assert add_campaign(cclub, "app", "--name", "App week", "--starts", "2026-02-01", "--ends",
                        "2026-02-07", "--channel", "app", "--flat-bonus", "25").exit_code == 0
    text = campaigns_file(cclub).read_text()
    assert text.startswith(hand_written)
    data = tomllib.loads(text)["campaigns"]
    assert [c["code"] for c in data] == ["spring", "app"] and data[0]["multiplier"] == 1.5
    cclub.ok("config", "validate")


@pytest.mark.parametrize(("opts", "code", "message"), [
    (("winter", "--name", "W", "--starts", "2026-02-01", "--ends", "2026-02-02"), 5,
     "campaign 'winter' already exists (loyalty.toml)"),
    (("x", "--name", "X", "--starts", "2026-02-05", "--ends", "2026-02-01"), 4, "--ends: is before starts"),
    (("x", "--name", "X", "--starts", "2026-02-01", "--ends", "2026-02-02", "--multiplier", "-1"), 4,
     "--multiplier: Input should be greater than or equal to 0"),
    (("x", "--name", "X", "--starts", "2026-02-01", "--ends", "2026-02-02", "--multiplier", "two"), 4,
     "--multiplier: 'two' is not a number"),
    (("x", "--name", "X", "--starts", "2026-02-01", "--ends", "2026-02-02", "--tier", "diamond"), 4,
     "--tier: unknown tier 'diamond'"),
    (("x", "--name", "X", "--starts", "2026-02-31", "--ends", "2026-03-02"), 4, "--starts"),
    (("x", "--name", "X", "--starts", "2026-02-01", "--ends", "2026-02-02", "--budget", "1.5"), 4,
     "--budget: '1.5' has more than 0 decimal places"),
    (("Bad Code", "--name", "X", "--starts", "2026-02-01", "--ends", "2026-02-02"), 4, "CODE: use 1-40"),
])
def test_add_rejects_bad_input_and_writes_nothing(cclub: Club, opts: tuple, code: int, message: str) -> None:
    before = cclub.dump()
    r = add_campaign(cclub, *opts)
    assert r.exit_code == code, r.output
    assert message in r.stderr
    assert not campaigns_file(cclub).exists()
    assert cclub.dump() == before


def test_end_sets_the_last_day_in_campaigns_toml(cclub: Club) -> None:
    add_campaign(cclub, "spring", "--name", "Spring", "--starts", "2026-03-01", "--ends", "2026-03-31",
                 "--multiplier", "1.5")
    add_campaign(cclub, "summer", "--name", "Summer", "--starts", "2026-06-01", "--ends", "2026-06-30")
    before = campaigns_file(cclub).read_text()
    r = cclub.ok("--as-of", "2026-03-10", "campaigns", "end", "spring")
    assert "campaign spring now ends on 2026-03-10 (was 2026-03-31)" in r.stderr
    after = campaigns_file(cclub).read_text()
    # Only that one line changed.
    assert after == before.replace("ends = 2026-03-31", "ends = 2026-03-10")
    r = cclub.ok("--as-of", "2026-03-11", "campaigns", "list", "--format", "json")
    assert {c["code"]: c["status"] for c in json.loads(r.stdout)}["spring"] == "ended"
    assert cclub.query("SELECT command, target FROM audit_log ORDER BY id")[-1] == ("campaigns end", "spring")
    # Extending is not ending; before the start is impossible.
    r = cclub.run("campaigns", "end", "summer", "--on", "2026-07-15")
    assert r.exit_code == 5 and "would extend it" in r.stderr
    r = cclub.run("campaigns", "end", "summer", "--on", "2026-05-01")
    assert r.exit_code == 4 and "--on: 2026-05-01 is before the campaign starts (2026-06-01)" in r.stderr
    assert campaigns_file(cclub).read_text() == after


def test_a_campaign_in_the_program_file_is_ended_by_hand(cclub: Club) -> None:
    before = cclub.dump()
    program = cclub.config_path.read_bytes()
    r = cclub.run("--as-of", "2026-01-10", "campaigns", "end", "winter")
    assert r.exit_code == 4
    assert "campaign 'winter' is defined in loyalty.toml" in r.stderr and "by hand" in r.stderr
    assert cclub.config_path.read_bytes() == program and not campaigns_file(cclub).exists()
    r = cclub.run("campaigns", "end", "nope")
    assert r.exit_code == 3 and "no campaign 'nope'" in r.stderr
    assert cclub.dump() == before


def test_overlapping_campaigns_highest_multiplier_wins_and_flat_bonuses_add(cclub: Club) -> None:
    # winter: x2 +10 all January; flash: x3 +5 from the 15th to the 20th on purchases >= 50,000.
    add_campaign(cclub, "flash", "--name", "Flash", "--starts", "2026-01-15", "--ends", "2026-01-20",
                 "--multiplier", "3", "--flat-bonus", "5", "--min-amount", "50,000")
    cclub.ok("--as-of", "2026-01-01", "members", "add", "M1", "Mina", "--campaign", "flash")

    def buy(ref: str, amount: str, at: str) -> dict:
        r = cclub.ok("--as-of", "2026-01-31", "purchases", "record", "M1", amount, "--ref", ref,
                     "--at", at, "--format", "json")
        return json.loads(r.stdout)

    # Only winter: 100,000 / 1,000 = 100 x 2 = 200 + 10 = 210.
    assert (buy("p1", "100,000", "2026-01-10 12:00")["points"], ) == (210, )
    # Both: the highest multiplier (3) applies once, flat bonuses add: 300 + 10 + 5 = 315.
    both = buy("p2", "100,000", "2026-01-16 12:00")
    assert (both["points"], both["campaign"]) == (315, "flash,winter")
    # Both running but below flash's minimum: winter only, 40 x 2 + 10 = 90.
    assert buy("p3", "40,000", "2026-01-16 13:00")["points"] == 90
    # After both: 100 points, no campaign.
    late = cclub.ok("--as-of", "2026-02-05", "purchases", "record", "M1", "100,000", "--ref", "p4",
                    "--format", "json")
    assert json.loads(late.stdout)["points"] == 100
    r = cclub.ok("--as-of", "2026-02-05", "campaigns", "show", "flash", "--format", "json")
    flash = json.loads(r.stdout)
    # Credited to flash: p2 only (100,000 revenue, 315 points); M1 came through it.
    assert (flash["members_acquired"], flash["purchases"], flash["revenue"], flash["points"]) == (1, 1, 100_000, 315)
    assert (flash["status"], flash["source"], flash["multiplier"]) == ("ended", "campaigns.toml", 3)
    r = cclub.ok("--as-of", "2026-02-05", "campaigns", "show", "winter", "--format", "json")
    winter = json.loads(r.stdout)
    # winter: p1, p2, p3 = 240,000; 210 + 315 + 90 = 615 points.
    assert (winter["members_acquired"], winter["purchases"], winter["revenue"], winter["points"]) == (0, 3, 240_000, 615)
    r = cclub.ok("--as-of", "2026-02-05", "campaigns", "show", "winter")
    assert "Winter sale" in r.stdout and "every purchase" in r.stdout


def test_campaigns_toml_tiers_are_checked_against_the_program_tiers(cclub: Club) -> None:
    assert add_campaign(cclub, "gold-week", "--name", "Gold week", "--starts", "2026-02-01", "--ends",
                        "2026-02-07", "--tier", "gold", "--multiplier", "1.25").exit_code == 0
    r = cclub.ok("campaigns", "show", "gold-week", "--format", "json")
    assert json.loads(r.stdout)["tiers"] == ["gold"] and json.loads(r.stdout)["multiplier"] == 1.25
