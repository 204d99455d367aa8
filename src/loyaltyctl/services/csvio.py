"""Streaming readers and writers for import files: CSV and JSON Lines, with row numbers.

Shared by every bulk import. A reader never holds the file in memory: it yields one row at
a time (or lists of `batch_size` rows), each with its row number as a person sees it in a
spreadsheet or editor (CSV: the header is row 1, so the first data row is row 2; JSON
Lines: the line number). Header problems (unknown, missing or repeated columns) stop the
import before anything happens, naming the columns; problems in one row (too many
fields, bad JSON, a control character or an absurdly long value) are reported for that row
only, so the caller can reject it and go on. A file that is not UTF-8 is refused naming the
line of the first bad byte.

Handled for the caller: a UTF-8 byte-order mark (Excel writes one), CRLF line ends, blank
lines, header names in any case with stray spaces, JSON numbers where text is expected.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

from loyaltyctl.errors import InvalidInput

FORMATS = ("csv", "jsonl")

Values = tuple[str | None, ...]
"""A row's values in the reader's column order; None where the column is absent."""

Row = tuple[int, Values | None, str | None]
"""(row number, values, error): values is None when the row could not be read at all."""

# csv refuses fields over 128 KiB by default; a legitimate import field is far shorter,
# but a missing closing quote swallows the rest of the file into one field, and the
# message for that should name the row rather than the csv module's limit.
_FIELD_LIMIT = 1 << 20
# No value of any import is longer than this (notes are the longest, 500 characters); a
# longer one is refused for that row without being echoed back in the message.
VALUE_LIMIT = 1000
# Control characters have no place in an import value: PostgreSQL cannot store NUL, and an
# escape sequence in a name or a category would reach the terminals that show it. Unpaired
# surrogates (JSON "\ud800") are not characters at all and cannot be written as UTF-8.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_search_control = _CONTROL.search


def value_problem(columns: Sequence[str], values: Sequence[str | None]) -> str | None:
    """Why a row's values cannot be imported at all (a control character, an absurd
    length), naming the column; None for the usual row. Cheap when all is well."""
    joined = "".join(filter(None, values))
    if len(joined) <= VALUE_LIMIT and _search_control(joined) is None:
        return None
    for name, v in zip(columns, values, strict=False):
        if not v:
            continue
        if len(v) > VALUE_LIMIT:
            return f"{name}: {len(v):,} characters, longer than any valid value ({VALUE_LIMIT:,})"
        m = _CONTROL.search(v)
        if m:
            code = ord(m.group())
            what = "an unpaired surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
            return f"{name}: contains {what} (U+{code:04X})"
    return None


def not_utf8(name: str, path: Path | None) -> InvalidInput:
    """The error for a file that is not UTF-8: where the first bad byte is, when the file
    can be read again (not standard input)."""
    hint = "save the file as UTF-8 (in Excel: Save As, CSV UTF-8)"
    where = None
    if path is not None:
        try:
            with open(path, "rb") as fh:
                if fh.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
                    return InvalidInput(f"{name}: not UTF-8 text (it is UTF-16)", hint=hint)
                fh.seek(0)
                where = _first_bad_byte(fh)
        except OSError:
            where = None
    if where is None:
        return InvalidInput(f"{name}: not UTF-8 text", hint=hint)
    line, offset, byte = where
    return InvalidInput(f"{name}: not UTF-8 text (line {line:,}: byte 0x{byte:02X} at offset "
                        f"{offset:,})", hint=hint)


def _first_bad_byte(fh: IO[bytes]) -> tuple[int, int, int] | None:
    """(line, offset, byte) of the first byte that is not UTF-8, reading in chunks."""
    line, offset, carry = 1, 0, b""
    while True:
        chunk = fh.read(1 << 20)
        data = carry + chunk
        if not data:
            return None
        try:
            data.decode("utf-8")
            good, carry = data, b""
        except UnicodeDecodeError as exc:
            if chunk and exc.reason == "unexpected end of data":
                good, carry = data[:exc.start], data[exc.start:]  # split across chunks
            else:
                before = data[:exc.start]
                return line + before.count(b"\n"), offset + exc.start, data[exc.start]
        line += good.count(b"\n")
        offset += len(good)
        if not chunk:
            return None


def detect_format(path: Path | str, explicit: str | None = None) -> str:
    """`csv` or `jsonl`: the explicit choice, else by extension (.jsonl/.ndjson), else csv."""
    if explicit:
        fmt = explicit.lower()
        if fmt not in FORMATS:
            raise InvalidInput(f"unknown input format {explicit!r}; use csv or jsonl")
        return fmt
    suffix = Path(str(path)).suffix.lower()
    return "jsonl" if suffix in (".jsonl", ".ndjson") else "csv"


def _norm_header(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


# -- shared by every import ----------------------------------------------------------------

MAX_LISTED_ERRORS = 20
"""How many rejected rows an all-or-nothing import lists before it stops reading."""

Reject = Callable[[int, Sequence[str | None] | None, str], None]
"""on_reject(row number, the row's values, reason): a rejected row in --on-error skip."""
Progress = Callable[[int, int], None]
"""progress(bytes read so far, rows read so far)."""


def abort_error(name: str, rejected: int, errors: list[tuple[int, str]]) -> InvalidInput:
    """The all-or-nothing refusal: how many rows were rejected, the first ones by number."""
    more = "" if rejected <= len(errors) else " (and possibly more: listing stopped)"
    lines = "\n".join(f"  row {n}: {reason}" for n, reason in errors)
    return InvalidInput(
        f"{name}: {rejected:,} row(s) rejected{more}; nothing was imported:\n{lines}",
        hint="fix these rows, or pass --on-error skip --rejects FILE to import the others",
    )


class TableReader:
    """Rows of a CSV or JSON Lines file, as tuples in a fixed column order.

    `required` columns must be in the header (CSV) and every row must have a value key for
    them (JSON Lines: a missing key is a row error); `optional` columns may be absent;
    `ignored` columns are accepted and dropped (for example `row` and `reason` in a rejects
    file that was fixed and is imported again). Anything else is an unknown column.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        required: Sequence[str],
        optional: Sequence[str] = (),
        ignored: Sequence[str] = (),
        fmt: str | None = None,
    ) -> None:
        self.path = Path(str(path))
        self.name = "standard input" if str(path) == "-" else str(path)
        self.required = tuple(required)
        self.optional = tuple(optional)
        self.ignored = frozenset(ignored)
        self.columns: tuple[str, ...] = self.required + self.optional
        self.format = detect_format(path, fmt)
        self.present: tuple[str, ...] = ()
        """The known columns the file has (CSV header order); all columns for JSON Lines."""
        self._binary: IO[bytes] | None = None
        self._text: IO[str] | None = None
        self._positions: list[int | None] = []
        self._started = False
        self.total_bytes: int | None = None

    # -- opening ---------------------------------------------------------------------------

    def __enter__(self) -> TableReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if str(self.path) == "-":
            self._binary = sys.stdin.buffer
        else:
            try:
                self._binary = open(self.path, "rb")  # noqa: SIM115 - closed by close()
            except FileNotFoundError:
                raise InvalidInput(f"{self.name}: file not found") from None
            except IsADirectoryError:
                raise InvalidInput(f"{self.name}: is a directory, not a file") from None
            except OSError as exc:
                raise InvalidInput(f"{self.name}: cannot read: {exc.strerror}") from None
            try:
                self.total_bytes = self.path.stat().st_size
            except OSError:
                self.total_bytes = None
        # utf-8-sig drops a byte-order mark; newline="" lets csv see CRLF inside quotes.
        self._text = io.TextIOWrapper(self._binary, encoding="utf-8-sig", newline="")
        if self.format == "csv":
            self._open_csv()
        else:
            self.present = self.columns

    def close(self) -> None:
        if self._text is not None and self._binary is not sys.stdin.buffer:
            self._text.close()
        self._text = None
        self._binary = None

    @property
    def bytes_read(self) -> int:
        """How far into the file the reader is (for a progress bar; read-ahead granular)."""
        try:
            return self._binary.tell() if self._binary is not None else 0
        except (OSError, ValueError):
            return 0

    def _open_csv(self) -> None:
        assert self._text is not None
        csv.field_size_limit(_FIELD_LIMIT)
        self._csv = csv.reader(self._text, strict=True)
        try:
            header = next(self._csv)
        except StopIteration:
            raise InvalidInput(f"{self.name}: the file is empty (expected a header row: "
                               f"{', '.join(self.required)})") from None
        except UnicodeDecodeError:
            raise self._not_utf8() from None
        except csv.Error as exc:
            raise InvalidInput(f"{self.name}: row 1: {exc}") from None
        names = [_norm_header(h) for h in header]
        while names and names[-1] == "":  # trailing separators some exporters add
            names.pop()
        self._check_header(names)
        known = set(self.columns)
        self._width = len(header)
        self._positions = [names.index(c) if c in names else None for c in self.columns]
        self.present = tuple(n for n in names if n in known)

    def _check_header(self, names: list[str]) -> None:
        expected = ", ".join(self.required) + (
            f" (optional: {', '.join(self.optional)})" if self.optional else "")
        repeated = sorted({n for n in names if n and names.count(n) > 1})
        if "" in names:
            raise InvalidInput(f"{self.name}: row 1: column {names.index('') + 1} has no name",
                               hint=f"the header must name every column: {expected}")
        if repeated:
            raise InvalidInput(f"{self.name}: row 1: repeated column(s) {', '.join(repeated)}",
                               hint=f"expected columns: {expected}")
        unknown = [n for n in names if n not in self.columns and n not in self.ignored]
        missing = [c for c in self.required if c not in names]
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(unknown)}")
        if problems:
            raise InvalidInput(f"{self.name}: row 1: {'; '.join(problems)}",
                               hint=f"expected columns: {expected}")

    # -- reading ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Row]:
        if self._text is None:
            raise RuntimeError("TableReader used before open()")
        if self._started:
            raise RuntimeError("a TableReader can be read once")
        self._started = True
        try:
            if self.format == "csv":
                yield from self._iter_csv()
            else:
                yield from self._iter_jsonl()
        except UnicodeDecodeError:
            raise self._not_utf8() from None

    def _not_utf8(self) -> InvalidInput:
        return not_utf8(self.name, None if str(self.path) == "-" else self.path)

    def _iter_csv(self) -> Iterator[Row]:
        positions = self._positions
        width = self._width
        reader = self._csv
        present = [p for p in positions if p is not None]
        # The common case, in C: every absent column is an optional one at the end.
        tail = len(positions) - len(present)
        fast = positions[:len(present)] == present and len(present) > 1
        pick = itemgetter(*present) if fast else None
        pad: tuple[None, ...] = (None,) * tail
        columns = self.columns
        n = 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                # An unclosed quote: the reader cannot resync, so this ends the file.
                raise InvalidInput(f"{self.name}: row {n + 1}: {exc}",
                                   hint="check the quoting of this row") from None
            n += 1
            if len(fields) != width:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank line
                if len(fields) < width or any(f.strip() for f in fields[width:]):
                    yield n, None, f"has {len(fields)} fields, the header has {width}"
                    continue
            values = pick(fields) + pad if pick is not None else tuple(
                None if p is None else fields[p] for p in positions)
            problem = value_problem(columns, values)
            if problem is not None:
                yield n, None, problem
                continue
            yield n, values, None

    def _iter_jsonl(self) -> Iterator[Row]:
        assert self._text is not None
        columns = self.columns
        allowed = set(columns) | self.ignored
        required = self.required
        for n, line in enumerate(self._text, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
                continue
            if not isinstance(obj, dict):
                yield n, None, "not a JSON object"
                continue
            keys = {_norm_header(k): v for k, v in obj.items()}
            unknown = [k for k in keys if k not in allowed]
            if unknown:
                yield n, None, f"unknown field(s) {', '.join(sorted(unknown))}"
                continue
            missing = [c for c in required if c not in keys]
            if missing:
                yield n, None, f"missing field(s) {', '.join(missing)}"
                continue
            try:
                values = tuple(_scalar(keys.get(c)) for c in columns)
            except ValueError as exc:
                yield n, None, str(exc)
                continue
            problem = value_problem(columns, values)
            if problem is not None:
                yield n, None, problem
                continue
            yield n, values, None

    def batches(self, size: int) -> Iterator[list[Row]]:
        """The rows in lists of at most `size`."""
        batch: list[Row] = []
        for row in self:
            batch.append(row)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


def _scalar(v: Any) -> str | None:
    """A JSON value as the text a CSV cell would hold."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        raise ValueError("true/false where text or a number was expected")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        # repr gives the shortest text that reads back as the same float: 1250.5, not 1250.4999…
        return repr(v)
    raise ValueError("a list or object where text or a number was expected")


class RowWriter:
    """Writes rows (dicts) to a CSV or JSON Lines file, by the file's extension.

    Used for rejects files: the rows as read, plus `row` and `reason`.
    """

    def __init__(self, path: Path | str, columns: Sequence[str], *, fmt: str | None = None):
        self.path = Path(str(path))
        self.columns = list(columns)
        self.format = detect_format(self.path, fmt)
        try:
            self._fh = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise InvalidInput(f"{self.path}: cannot write: {exc.strerror}") from None
        self._csv = None
        if self.format == "csv":
            self._csv = csv.writer(self._fh, lineterminator="\n")
            self._csv.writerow(self.columns)
        self.count = 0

    def write(self, row: dict[str, Any]) -> None:
        if self._csv is not None:
            self._csv.writerow(["" if row.get(c) is None else row.get(c) for c in self.columns])
        else:
            self._fh.write(json.dumps({c: row.get(c) for c in self.columns}, ensure_ascii=False))
            self._fh.write("\n")
        self.count += 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
