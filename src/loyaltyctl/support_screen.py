"""The support screen (`members show`) as one Rich panel: who, tier and progress, points,
what expires soon, recent history, referrals.

A pure function of the data `services.support.member_screen` returns (already masked or
not by the caller) and of display helpers for dates and money; it never prints. About 30
lines at 100 columns: the contact block, six summary lines and at most ten ledger rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from loyaltyctl.charts import bar
from loyaltyctl.normalize import format_money

BAR_CELLS = 24
EMPTY_CELL = "░"
METRIC_WORDS = {"spend": "spend", "points": "points earned", "purchases": "purchases"}


def _amount(metric: str, value: int, money: Callable[[int], str]) -> str:
    if metric == "spend":
        return money(value)
    return f"{value:,}"


def progress_bar(value: int, threshold: int, cells: int = BAR_CELLS) -> str:
    """A bar of exactly `cells` columns: filled up to value/threshold, the rest shaded."""
    drawn = bar(value, threshold, cells) if threshold > 0 else "█" * cells
    return drawn + EMPTY_CELL * (cells - len(drawn))


def _tier_lines(data: dict[str, Any], show_date: Callable[[date | None], str],
                show_time: Callable[[datetime | None], str],
                money: Callable[[int], str]) -> list[tuple[str, Text | str]]:
    p = data.get("tier_progress")
    if p is None:
        return []
    metric = p["metric"]
    unit = METRIC_WORDS.get(metric, metric)
    if data.get("tier"):
        tier = f"{data.get('tier_name') or data['tier']}"
        if data.get("tier_since"):
            tier += f" since {show_time(data['tier_since'])[:10]}"
        if data.get("tier_kept_through"):
            tier += f", kept through {show_date(data['tier_kept_through'])}"
        if p.get("floor"):
            tier += f" (set by hand: at least {p['floor']} until {show_date(p['floor_until'])})"
    else:
        tier = "none yet"
    lines: list[tuple[str, Text | str]] = [("Tier", tier)]
    value = int(p["value"] or 0)
    shown = _amount(metric, value, money)
    window = f"{unit} in the last {p['window_days']} days"
    if p.get("next_tier"):
        threshold = int(p["next_threshold"])
        line = Text()
        line.append(progress_bar(value, threshold), style="green")
        pct = min(value / threshold, 1.0) if threshold else 1.0
        line.append(f" {pct:.0%} to {p.get('next_tier_name') or p['next_tier']}")
        if p.get("needed_for_next"):
            line.append(f": {_amount(metric, int(p['needed_for_next']), money)} to go")
        lines.append(("Progress", line))
        lines.append(("", f"{shown} of {_amount(metric, threshold, money)} {window}"))
    else:
        lines.append(("Progress", f"top tier: {shown} {window}"))
    return lines


def _points_lines(data: dict[str, Any], show_date: Callable[[date | None], str],
                  money: Callable[[int], str]) -> list[tuple[str, Text | str]]:
    available = int(data["available"])
    line = f"{available:,} points"
    if data.get("value"):
        line += f" = {money(int(data['value']))}"
    if data["balance"] != available:
        line += f" ({data['balance'] - available:,} past their date, not spendable)"
    lines: list[tuple[str, Text | str]] = [("Balance", line)]
    if data.get("pending"):
        lines.append(("Pending", f"{int(data['pending']):,} points (not yet redeemable)"))
    days = data["expiring_within_days"]
    if data.get("expiring"):
        parts = [f"{e['points']:,} on {show_date(e['expires_on'])}" for e in data["expiring"]]
        more = ""
        if len(parts) > 4:
            more = f" and {len(parts) - 4} more dates"
            parts = parts[:4]
        lines.append(("Expiring", Text(
            f"{data['expiring_soon']:,} points within {days} days: {', '.join(parts)}{more}",
            style="yellow")))
    elif data.get("next_expiry"):
        lines.append(("Expiring", f"nothing within {days} days "
                                  f"(next on {show_date(data['next_expiry'])})"))
    else:
        lines.append(("Expiring", f"nothing within {days} days"))
    return lines


def _recent_table(data: dict[str, Any], show_time: Callable[[datetime | None], str]) -> Table:
    # expand + a ratio only on the note column: Rich gives the fixed columns their natural
    # width and the note the rest (a ratio without expand squeezed the others to nothing).
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold",
              title=f"Last {len(data['recent'])} ledger entries" if data["recent"] else None,
              title_justify="left", title_style="bold", expand=True)
    t.add_column("When", no_wrap=True, min_width=16)
    t.add_column("Kind", no_wrap=True, min_width=8)
    t.add_column("Points", justify="right", no_wrap=True, min_width=6)
    t.add_column("Balance", justify="right", no_wrap=True, min_width=7)
    t.add_column("Ref / note", no_wrap=True, overflow="ellipsis", ratio=1)
    for e in data["recent"]:
        kind = e["kind"] + (" (pending)" if e.get("pending_until") else "")
        # An expiry's ref is its run's token; its note names the lot it closed.
        ref = None if e["kind"] == "expire" else e.get("ref")
        note = " · ".join(str(x) for x in (ref, e.get("note")) if x)
        t.add_row(show_time(e["at"]), kind, f"{e['points']:+,}", f"{e['balance']:,}", note)
    return t


def render_member_screen(
    data: dict[str, Any],
    *,
    show_date: Callable[[date | None], str],
    show_time: Callable[[datetime | None], str],
) -> RenderableType:
    """The screen for one member (`data` from `member_screen`, masked as it should be shown)."""
    currency = data.get("currency") or ""
    decimals = int(data.get("decimals") or 0)

    def money(minor: int) -> str:
        return f"{format_money(minor, decimals)} {currency}".strip()

    birth = data.get("birth_date")
    who = Table.grid(padding=(0, 2))
    for _ in range(2):
        who.add_column(style="bold", no_wrap=True)
        who.add_column()
    contact = [
        ("Status", Text(data["status"], style="green" if data["status"] == "active" else "red")),
        ("Joined", show_time(data["joined_at"])[:10]),  # the local day, program calendar
        ("Phone", data.get("phone") or "-"),
        ("E-mail", data.get("email") or "-"),
        ("Card", data.get("card_number") or "-"),
        ("Birth date", show_date(birth) if isinstance(birth, date) else (birth or "-")),
    ]
    if data.get("tags"):
        contact.append(("Tags", ", ".join(data["tags"])))
    if data.get("referred_by"):
        contact.append(("Referred by", data["referred_by"]))
    if data.get("acquisition_campaign"):
        contact.append(("Campaign", data["acquisition_campaign"]))
    if data.get("merged_into"):
        contact.append(("Merged into", data["merged_into"]))
    if len(contact) % 2:
        contact.append(("", ""))
    for i in range(0, len(contact), 2):
        (l1, v1), (l2, v2) = contact[i], contact[i + 1]
        who.add_row(l1, v1, l2, v2)

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    lines = _tier_lines(data, show_date, show_time, money) + _points_lines(data, show_date, money)
    n, bought = data.get("referrals") or 0, data.get("referred_buyers") or 0
    lines.append(("Referrals", f"{n:,} made, {bought:,} of them bought" if n else "none"))
    for label, value in lines:
        facts.add_row(label, value)

    parts: list[RenderableType] = [who, Text(""), facts]
    if data["recent"]:
        parts += [Text(""), _recent_table(data, show_time)]
    else:
        parts += [Text(""), Text("no ledger entries yet", style="dim")]
    title = Text(f"Member {data['code']} · {data['name']}", style="bold")
    return Panel(Group(*parts), title=title, title_align="left", box=box.ROUNDED,
                 padding=(0, 1))
