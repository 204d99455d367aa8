"""Output renderers, keyed by format: table (Rich), csv, json.

Data goes to stdout (or --output FILE); messages go to stderr. JSON and CSV never carry
colour codes. Values are rendered from plain Python data: ints, strings, dates, None.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

FORMATS = ("table", "csv", "json")


@dataclass(frozen=True)
class Col:
    key: str
    header: str | None = None
    justify: str = "left"
    fmt: Callable[[Any], str] | None = None
    """Display formatting for the table only; CSV and JSON get the raw value."""
    no_wrap: bool = False

    @property
    def title(self) -> str:
        return self.header or self.key.replace("_", " ").title()


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat(sep=" ", timespec="seconds")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    return v


def to_json(data: Any) -> str:
    return json.dumps(data, default=_plain, ensure_ascii=False, indent=2)


def to_json_line(data: Any) -> str:
    return json.dumps(data, default=_plain, ensure_ascii=False, separators=(", ", ": "))


def _cell(col: Col, v: Any) -> str:
    if col.fmt is not None and v is not None:
        return col.fmt(v)
    if v is None:
        return ""
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return str(_plain(v))


def _columns_for(rows: Sequence[dict[str, Any]], columns: Sequence[Col] | None) -> list[Col]:
    if columns:
        return list(columns)
    keys: list[str] = []
    for r in rows[:1]:
        keys.extend(r.keys())
    return [Col(k) for k in keys]


class Output:
    """Where rendered data goes: a file (--output) or stdout, plus a stderr console."""

    def __init__(self, *, output: Path | None = None, no_color: bool = False, quiet: bool = False):
        self.output = output
        self.no_color = no_color
        self.quiet = quiet
        self._stderr = None

    def console(self, file: Any = None):  # noqa: ANN201
        from rich.console import Console

        return Console(
            file=file or sys.stdout,
            no_color=self.no_color,
            highlight=False,
            soft_wrap=False,
        )

    @property
    def err(self):  # noqa: ANN201
        if self._stderr is None:
            from rich.console import Console

            self._stderr = Console(stderr=True, no_color=self.no_color, highlight=False,
                                   soft_wrap=True)
        return self._stderr

    def message(self, text: str, *, style: str | None = None) -> None:
        """A human message on stderr; silent with --quiet."""
        if not self.quiet:
            self.err.print(text, style=style, markup=False)

    def write_text(self, text: str) -> None:
        if self.output:
            self.output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    # -- renderers -------------------------------------------------------------------------

    def rows(
        self,
        rows: Sequence[dict[str, Any]],
        *,
        fmt: str,
        columns: Sequence[Col] | None = None,
        title: str | None = None,
        empty: str = "nothing to show",
        caption: str | None = None,
    ) -> None:
        RENDERERS[fmt](self, list(rows), _columns_for(rows, columns), title, empty, caption)

    def record(self, record: dict[str, Any], *, fmt: str, title: str | None = None,
               labels: dict[str, str] | None = None) -> None:
        """One object: a two-column panel on a terminal, an object in JSON, one row in CSV."""
        if fmt == "table":
            from rich.table import Table

            from rich.text import Text

            t = Table(show_header=False, title=title, box=None, pad_edge=False)
            t.add_column(style="bold")
            t.add_column()
            for k, v in record.items():
                label = (labels or {}).get(k) or k.replace("_", " ").capitalize()
                t.add_row(Text(label), Text(_cell(Col(k), v)))
            self._print(t)
        elif fmt == "json":
            self.write_text(to_json(record) + "\n")
        else:
            self.rows([record], fmt=fmt)

    def _print(self, renderable: Any) -> None:
        if self.output:
            with self.output.open("w", encoding="utf-8") as fh:
                self.console(fh).print(renderable)
        else:
            self.console().print(renderable)

    def print(self, renderable: Any) -> None:
        """A Rich renderable (panel, chart) on stdout."""
        self._print(renderable)


def _render_table(out: Output, rows, cols, title, empty, caption) -> None:  # noqa: ANN001
    if not rows:
        out.message(empty)
        return
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, caption=caption, header_style="bold")
    for c in cols:
        t.add_column(c.title, no_wrap=c.no_wrap, justify=c.justify if c.justify != "left" else
                     ("right" if isinstance(rows[0].get(c.key), int | float | Decimal)
                      and not isinstance(rows[0].get(c.key), bool) else "left"))
    for r in rows:
        # Text, not str: data such as "[redacted]" or a name with brackets is not markup.
        t.add_row(*(Text(_cell(c, r.get(c.key))) for c in cols))
    out._print(t)


def _render_csv(out: Output, rows, cols, title, empty, caption) -> None:  # noqa: ANN001
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.key for c in cols])
    for r in rows:
        w.writerow(["" if r.get(c.key) is None else _plain(r.get(c.key)) for c in cols])
    out.write_text(buf.getvalue())


def _render_json(out: Output, rows, cols, title, empty, caption) -> None:  # noqa: ANN001
    keys = [c.key for c in cols]
    data = [{k: r.get(k) for k in keys} for r in rows]
    out.write_text(to_json(data) + "\n")


RENDERERS: dict[str, Callable[..., None]] = {
    "table": _render_table,
    "csv": _render_csv,
    "json": _render_json,
}


def iter_csv_rows(rows: Iterable[dict[str, Any]], keys: Sequence[str]) -> Iterable[str]:
    """Stream CSV lines (for exports that must not build the whole file in memory)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    yield buf.getvalue()
    for r in rows:
        buf.seek(0)
        buf.truncate()
        w.writerow(["" if r.get(k) is None else _plain(r.get(k)) for k in keys])
        yield buf.getvalue()
