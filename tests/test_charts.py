"""Terminal charts, rendered to a fixed-width console and read back as text."""

from __future__ import annotations

from rich.console import Console

from loyaltyctl.charts import (
    FULL,
    bar,
    bar_chart,
    data_table,
    fast_table,
    funnel,
    heat_map,
    heat_style,
    stack,
)
from loyaltyctl.render import Col


def render(renderable, width: int = 60, color: bool = False) -> str:  # noqa: ANN001
    console = Console(width=width, record=True, color_system="truecolor" if color else None,
                      force_terminal=color, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text(styles=color)


def test_bar_scales_in_eighths() -> None:
    assert bar(10, 10, 8) == FULL * 8
    assert bar(5, 10, 8) == FULL * 4
    assert bar(8, 16, 1) == "▌"  # half of one column: 4 eighths
    assert bar(1, 16, 1) == "▏"  # half an eighth rounds to nothing, but is drawn as one
    assert bar(1, 1000, 10) == "▏"  # above zero is never drawn as nothing
    assert bar(0, 10, 8) == "" and bar(-3, 10, 8) == "" and bar(3, 0, 8) == ""


def test_bar_chart_lines_up_labels_bars_and_values() -> None:
    text = render(bar_chart([("2026-01", 100), ("2026-02", 50), ("2026-03", 0)], width=40,
                            title="Revenue"), width=40)
    lines = text.splitlines()
    assert lines[0] == "Revenue"
    # label 7 + " │" + bar cells (40 - 7 - 3 - 4 = 26) + " " + value 3
    assert lines[1] == "2026-01 │" + FULL * 26 + " 100"
    assert lines[2] == "2026-02 │" + FULL * 13 + " " * 13 + "  50"
    assert lines[3] == "2026-03 │" + " " * 26 + "   0"
    assert all(len(line) == 39 for line in lines[1:])  # one column spare: never wraps


def test_bar_chart_formats_values_and_survives_negatives() -> None:
    text = render(bar_chart([("a", 1_250_000), ("b", -5)], width=30,
                            fmt=lambda v: f"{v:,} IRR"), width=30)
    a, b = text.splitlines()
    assert a.endswith("1,250,000 IRR") and FULL in a
    assert b.endswith("-5 IRR") and FULL not in b
    assert render(bar_chart([], width=30), width=30).strip() == ""


def test_funnel_is_centred_and_shows_counts_and_shares() -> None:
    text = render(funnel([("prospect", 8), ("customer", 4), ("advocate", 0)], width=40), width=40)
    p, c, a = text.splitlines()
    # cells = 40 - 8 - 8 ("8 (100%)") - 4 = 20
    assert p == "prospect " + FULL * 20 + "  8 (100%)"
    assert c == "customer " + " " * 5 + FULL * 10 + " " * 5 + "   4 (50%)"
    assert a == "advocate " + " " * 20 + "    0 (0%)"


def test_heat_map_plain_and_coloured() -> None:
    rows, cols = ["2026-01", "2026-02"], ["+0", "+1", "+2"]
    cells = [[1.0, 0.5, 0.25], [0.0, None]]
    plain = render(heat_map(rows, cols, cells, sizes=[4, 2], row_header="joined", width=60))
    lines = [line.rstrip() for line in plain.splitlines()]
    assert lines[0].split() == ["joined", "size", "+0", "+1", "+2"]
    assert lines[1].split() == ["2026-01", "4", "100%", "50%", "25%"]
    assert lines[2].split() == ["2026-02", "2", "0%"]  # None: not observable yet, blank
    coloured = render(heat_map(rows, cols, cells, width=60), color=True)
    assert "\x1b[" in coloured and "100%" in coloured
    assert heat_style(1.0) != heat_style(0.0)


def test_heat_map_drops_columns_that_do_not_fit() -> None:
    cols = [f"+{k}" for k in range(12)]
    text = render(heat_map(["c"], cols, [[0.5] * 12], width=30), width=30)
    header = text.splitlines()[0].split()
    assert header == ["+0", "+1", "+2", "+3"]  # (30 - 2) // 6 = 4 columns
    assert "8 more column(s) do not fit" in text


def test_data_table_formats_and_aligns() -> None:
    rows = [{"tier": "gold", "members": 1234, "share": 0.5}, {"tier": "silver", "members": 5,
                                                            "share": None}]
    text = render(stack(data_table(rows, [Col("tier"), Col("members"),
                                          Col("share", fmt=lambda v: f"{v:.1%}")],
                                   title="Tiers on 2026-03-31", caption="2 tiers"), None,
                        bar_chart([("gold", 1)], width=20)), width=50)
    lines = text.splitlines()
    assert lines[0] == "Tiers on 2026-03-31"
    gold = next(line for line in lines if "gold" in line and "│" in line and "1,234" in line)
    assert "50.0%" in gold
    silver = next(line for line in lines if "silver" in line)
    assert silver.split("│")[2].strip() == "5" and silver.split("│")[3].strip() == ""
    assert "2 tiers" in text
    assert lines[-1].startswith("gold │")


def test_fast_table_aligns_and_clips() -> None:
    rows = [{"code": "A1", "name": "Sara Ahmadi", "points": 1500},
            {"code": "B22", "name": "x" * 40, "points": 7},
            {"code": "C3", "name": None, "points": None}]
    out = render(fast_table(rows, [Col("code"), Col("name"), Col("points")], max_cell=10), width=80)
    lines = out.splitlines()
    # Widths: code 4 ("Code"), name 10 (clipped), points 6 ("Points"); numbers to the right.
    assert lines == ["Code  Name        Points",
                     "────  ──────────  ──────",
                     "A1    Sara Ahma…   1,500",
                     "B22   xxxxxxxxx…       7",
                     "C3"]
