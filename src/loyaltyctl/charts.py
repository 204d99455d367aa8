"""Terminal charts for reports: horizontal bars, a funnel, a heat map, and the data table.

Pure functions returning Rich renderables; nothing here prints or touches the database.
`width` is the number of terminal columns a chart may use. Colour is style only: on a
console without colour (a pipe, --no-color) every chart still reads as plain text and
numbers, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from loyaltyctl.render import Col

_EIGHTHS = " ▏▎▍▌▋▊▉"
FULL = "█"


def _plain_number(v: float | int) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.2f}"


def bar(value: float, maximum: float, cells: int) -> str:
    """A bar of `cells` columns at most, in eighths of a column, for value/maximum."""
    if maximum <= 0 or value <= 0 or cells <= 0:
        return ""
    eighths = round(min(value / maximum, 1.0) * cells * 8)
    if eighths == 0:
        eighths = 1  # something above zero is never drawn as nothing
    full, part = divmod(eighths, 8)
    return FULL * full + (_EIGHTHS[part] if part else "")


def bar_chart(
    items: Sequence[tuple[str, float | int]],
    *,
    width: int = 60,
    title: str | None = None,
    fmt: Callable[[Any], str] | None = None,
    style: str = "cyan",
) -> RenderableType:
    """One labelled horizontal bar per item, scaled to the largest value.

    Negative values draw no bar (their number still shows).
    """
    fmt = fmt or _plain_number
    labels = [str(label) for label, _ in items]
    values = [fmt(v) for _, v in items]
    label_w = max((len(s) for s in labels), default=0)
    value_w = max((len(s) for s in values), default=0)
    cells = max(width - label_w - value_w - 4, 1)
    top = max((v for _, v in items), default=0)
    out = Text()
    if title:
        out.append(title + "\n", style="bold")
    for i, ((_, v), label, shown) in enumerate(zip(items, labels, values, strict=True)):
        drawn = bar(v, top, cells)
        out.append(label.ljust(label_w) + " │")
        out.append(drawn, style=style)
        out.append(" " * (cells - len(drawn)) + " " + shown.rjust(value_w))
        if i < len(items) - 1:
            out.append("\n")
    return out


def funnel(
    stages: Sequence[tuple[str, int]],
    *,
    width: int = 60,
    title: str | None = None,
    style: str = "magenta",
) -> RenderableType:
    """Centred bars narrowing stage by stage; each shows its count and share of the first."""
    labels = [s for s, _ in stages]
    base = stages[0][1] if stages else 0
    notes = [f"{n:,} ({(n / base if base else 0):.0%})" for _, n in stages]
    label_w = max((len(s) for s in labels), default=0)
    note_w = max((len(s) for s in notes), default=0)
    cells = max(width - label_w - note_w - 4, 1)
    top = max((n for _, n in stages), default=0)
    out = Text()
    if title:
        out.append(title + "\n", style="bold")
    for i, ((label, n), note) in enumerate(zip(stages, notes, strict=True)):
        size = round(cells * n / top) if top else 0
        if n > 0 and size == 0:
            size = 1
        left = (cells - size) // 2
        out.append(label.ljust(label_w) + " ")
        out.append(" " * left)
        out.append(FULL * size, style=style)
        out.append(" " * (cells - size - left) + "  " + note.rjust(note_w))
        if i < len(stages) - 1:
            out.append("\n")
    return out


# Cell backgrounds from 0 % to 100 %: dark blue to bright green. Rich maps these to the
# terminal's palette (256 or 16 colours) and drops them where there is no colour.
_HEAT = [(25, 30, 60), (30, 70, 110), (30, 110, 120), (40, 150, 100), (60, 190, 80), (120, 220, 70)]


def heat_style(share: float) -> str:
    i = min(int(share * (len(_HEAT) - 1) + 0.5), len(_HEAT) - 1) if share > 0 else 0
    r, g, b = _HEAT[i]
    return f"white on rgb({r},{g},{b})" if i < 4 else f"black on rgb({r},{g},{b})"


def heat_map(
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    cells: Sequence[Sequence[float | None]],
    *,
    width: int = 80,
    title: str | None = None,
    row_header: str = "",
    sizes: Sequence[int] | None = None,
) -> RenderableType:
    """A matrix of shares (0..1) as coloured cells holding their percentage.

    None cells (not observable yet) stay blank. Columns that do not fit in `width` are
    left out, with a note saying how many.
    """
    label_w = max([len(row_header), *(len(s) for s in row_labels)], default=0)
    size_w = max([4, *(len(f"{n:,}") for n in sizes)]) if sizes is not None else 0
    cell_w = 5
    fixed = label_w + (size_w + 1 if sizes is not None else 0) + 1
    fit = max((width - fixed) // (cell_w + 1), 1)
    shown = list(col_labels)[:fit]
    t = Table(title=title, box=None, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False,
              header_style="bold", title_style="bold", title_justify="left")
    t.add_column(row_header, no_wrap=True, min_width=label_w)
    if sizes is not None:
        t.add_column("size", justify="right", no_wrap=True)
    for c in shown:
        t.add_column(str(c), justify="right", no_wrap=True, min_width=cell_w)
    for r, label in enumerate(row_labels):
        row: list[RenderableType] = [label]
        if sizes is not None:
            row.append(f"{sizes[r]:,}")
        for j in range(len(shown)):
            v = cells[r][j] if j < len(cells[r]) else None
            if v is None:
                row.append("")
            else:
                row.append(Text(f"{v:.0%}".rjust(cell_w), style=heat_style(v)))
        t.add_row(*row)
    if len(col_labels) > len(shown):
        return Group(t, Text(f"({len(col_labels) - len(shown)} more column(s) do not fit; "
                             "use --format csv or json for all)", style="dim"))
    return t


def _cell(col: Col, v: Any) -> str:
    if v is None:
        return ""
    if col.fmt is not None:
        return col.fmt(v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return str(v)


def data_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[Col], *, title: str | None = None,
    caption: str | None = None,
) -> RenderableType:
    """The rows of a report as a Rich table (numbers right-aligned), the title above it and
    the caption below it as lines of their own (so they never wrap to the table's width)."""
    t = Table(header_style="bold")
    for c in columns:
        sample = next((r.get(c.key) for r in rows if r.get(c.key) is not None), None)
        numeric = isinstance(sample, int | float) and not isinstance(sample, bool)
        justify = c.justify if c.justify != "left" else ("right" if numeric else "left")
        t.add_column(c.title, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        t.add_row(*(_cell(c, r.get(c.key)) for c in columns))
    if not title and not caption:
        return t
    parts: list[RenderableType] = []
    if title:
        parts.append(Text(title, style="bold"))
    parts.append(t)
    if caption:
        parts.append(Text(caption))
    return Group(*parts)


def stack(*parts: RenderableType | None) -> RenderableType:
    """Tables and charts one beneath the other, with a blank line between."""
    items: list[RenderableType] = []
    for p in parts:
        if p is None:
            continue
        if items:
            items.append(Text(""))
        items.append(p)
    return Group(*items)


FAST_ROWS = 500
"""Above this many rows a terminal table is drawn by `fast_table`: Rich measures every cell
of a Table, which costs about a second per 1,500 rows of eight columns."""


def fast_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[Col], *, max_cell: int = 32,
) -> RenderableType:
    """The rows as a plain aligned table (header, rule, one line per row), built in one pass.

    For long listings on a terminal; numbers right-aligned, cells longer than `max_cell`
    cut with an ellipsis (CSV and JSON always carry the full values).
    """
    def clip(s: str) -> str:
        return s if len(s) <= max_cell else s[: max_cell - 1] + "…"

    cells = [[clip(_cell(c, r.get(c.key))) for c in columns] for r in rows]
    heads = [c.title for c in columns]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(heads)]
    right = []
    for c in columns:
        sample = next((r.get(c.key) for r in rows if r.get(c.key) is not None), None)
        numeric = isinstance(sample, int | float) and not isinstance(sample, bool)
        right.append(c.justify == "right" or (c.justify == "left" and numeric))

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w)
                         for v, w, r in zip(values, widths, right, strict=True)).rstrip()

    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(line(heads) + "\n", style="bold")
    out.append("  ".join("─" * w for w in widths) + "\n")
    out.append("\n".join(line(row) for row in cells))
    return out
