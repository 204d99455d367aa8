"""Member import (CSV / JSON Lines, upsert by code) and export (the same columns).

Import streams the file in batches (5,000 rows by default) and never holds it in memory.
Per batch it runs a fixed handful of queries: the members already there by code, the owners
of the batch's phones / e-mails / cards, the referrers named; then one executemany INSERT,
one executemany UPDATE and one executemany for referrers within the batch.

Rules:
- Columns: code and name are required; the others are optional; an unknown column stops the
  import before anything is read (exit 4). The file is the truth for the columns it has: an
  empty cell clears phone, e-mail, card, birth date, referrer, campaign or tags; an empty
  joined_at or status keeps the member's (a new member joins now, active).
- Rows are numbered as a spreadsheet shows them: in a CSV the header is row 1 and the first
  member row 2; in JSON Lines the first line is row 1.
- A code twice in the file, a phone / e-mail / card twice in the file or already belonging to
  another member, a value that does not parse: the row is rejected, naming row and column.
- `referred_by` is a member key (code, card, phone, e-mail) of a member in the database or a
  code anywhere in the same file: rows whose referrer comes later are held back and written
  after the rest of the file.
- Existing members are updated only when a value differs; a closed member is never changed.
- on_error="abort" (default): any rejected row raises InvalidInput listing the first ones,
  so the caller's transaction rolls back and nothing is written. on_error="skip": rejected
  rows go to the rejects CSV (original columns + row + reason), the rest is imported.
- Dry run is the caller's rollback: the import runs in full and the transaction is not
  committed, so the counts are exactly what a real run would report.

Export writes the same columns, in the program's calendar, so its output imports back as
"unchanged" - provided it was written with personal data unmasked (`show_pii`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from loyaltyctl.errors import InvalidInput, Refused
from loyaltyctl.normalize import ascii_digits
from loyaltyctl.pii import mask_record
from loyaltyctl.services.csvio import not_utf8, value_problem
from loyaltyctl.services.members import (
    CONTACT_FIELDS,
    MEMBERS,
    FieldError,
    FieldRules,
    clean_code,
    normalize_fields,
    resolve_members_bulk,
    split_tags,
)
from loyaltyctl.timeutil import format_date, utcnow

IMPORT_COLUMNS = (
    "code", "name", "phone", "email", "card_number", "birth_date", "joined_at", "status",
    "referred_by", "acquisition_campaign", "tags",
)
REQUIRED_COLUMNS = ("code", "name")
FIELD_COLUMNS = tuple(c for c in IMPORT_COLUMNS if c != "referred_by")
BATCH_SIZE = 5000
MAX_ERRORS_SHOWN = 10
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_PHONE_SEPARATORS = re.compile(r"[\s\-().]")

# Columns written on insert and update (every row carries all of them, for executemany).
_WRITE_FIELDS = ("code", "name", "phone", "email", "card_number", "birth_date", "joined_at",
                 "status", "referred_by_id", "acquisition_campaign", "tags")


@dataclass(frozen=True)
class RowError:
    row: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.column}: {self.reason}" if self.column else \
            f"row {self.row}: {self.reason}"


@dataclass
class ImportResult:
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    inserted_ids: list[int] = field(default_factory=list)
    """Ids of the members this import created, for enrolment bonuses (signup, referral)."""
    errors: list[RowError] = field(default_factory=list)
    """The first MAX_ERRORS_SHOWN rejected rows."""

    def counts(self) -> dict[str, int]:
        return {"rows": self.rows, "inserted": self.inserted, "updated": self.updated,
                "unchanged": self.unchanged, "rejected": self.rejected}


@dataclass
class _Row:
    num: int
    raw: dict[str, Any]
    values: dict[str, Any]
    code: str
    has_ref: bool = False
    ref_key: str | None = None
    ref_id: int | None = None
    ref_in_batch: bool = False
    normalised: bool = False


def detect_format(path: Path, explicit: str | None) -> str:
    if explicit:
        if explicit not in ("csv", "jsonl"):
            raise InvalidInput(f"--input-format: {explicit!r} is not csv or jsonl")
        return explicit
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"{path}: cannot tell the format from the extension "
                           f"{path.suffix or '(none)'!r}",
                           hint="name the file .csv, .jsonl or .ndjson, or pass --input-format")
    return fmt


# -- readers: (row number, raw values, structural problem) ----------------------------------

RowIter = Iterator[tuple[int, dict[str, Any], str | None]]


def _check_columns(path: Path, columns: list[str], where: str) -> None:
    unknown = [c for c in columns if c not in IMPORT_COLUMNS]
    if unknown:
        raise InvalidInput(
            f"{path}: {where}: unknown column(s) {', '.join(unknown)}",
            hint=f"the columns are: {', '.join(IMPORT_COLUMNS)} (code and name required)")
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        raise InvalidInput(f"{path}: {where}: column(s) {', '.join(dup)} appear twice")


def _csv_rows(path: Path, text: IO[str]) -> tuple[list[str], RowIter]:
    reader = csv.reader(text)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InvalidInput(f"{path}: row 1: not valid CSV: {exc}") from None
    if not header or not any(h.strip() for h in header):
        raise InvalidInput(f"{path}: the file is empty (no header row)")
    columns = [h.strip().lower() for h in header]
    _check_columns(path, columns, "row 1")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InvalidInput(f"{path}: row 1: missing required column(s) {', '.join(missing)}",
                           hint=f"the columns are: {', '.join(IMPORT_COLUMNS)}")

    def rows() -> RowIter:
        num = 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InvalidInput(f"{path}: row {num + 1}: not valid CSV: {exc}") from None
            num += 1
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line
            raw = dict(zip(columns, cells, strict=False))
            problem = None
            if len(cells) != len(columns):
                problem = f"has {len(cells)} fields, the header has {len(columns)}"
            else:
                problem = value_problem(columns, cells)
            yield num, raw, problem

    return columns, rows()


def _jsonl_rows(path: Path, text: IO[str]) -> tuple[list[str], RowIter]:
    def rows() -> RowIter:
        for num, line in enumerate(text, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield num, {}, f"not valid JSON: {exc.msg}"
                continue
            if not isinstance(obj, dict):
                yield num, {}, "not a JSON object"
                continue
            _check_columns(path, list(obj), f"row {num}")
            raw: dict[str, Any] = {}
            problem = None
            for k, v in obj.items():
                if v is None or isinstance(v, str):
                    raw[k] = v
                elif isinstance(v, int) and not isinstance(v, bool):
                    raw[k] = str(v)
                elif k == "tags" and isinstance(v, list) and all(isinstance(t, str) for t in v):
                    raw[k] = ",".join(v)
                else:
                    raw[k] = json.dumps(v, ensure_ascii=False)
                    problem = problem or f"{k}: {raw[k]} is not text"
            missing = [c for c in REQUIRED_COLUMNS if c not in obj]
            if missing and not problem:
                problem = f"missing {', '.join(missing)}"
            problem = problem or value_problem(list(raw), list(raw.values()))
            yield num, raw, problem

    return list(IMPORT_COLUMNS), rows()


# -- the import -----------------------------------------------------------------------------


class _Rejects:
    """The rejects CSV: the row's original columns, then row number and reason."""

    def __init__(self, path: Path | None, columns: list[str]) -> None:
        self.columns = columns
        self.fh = path.open("w", encoding="utf-8", newline="") if path else None
        self.writer = csv.writer(self.fh, lineterminator="\n") if self.fh else None
        if self.writer:
            self.writer.writerow([*columns, "row", "reason"])

    def write(self, num: int, raw: Mapping[str, Any], reason: str) -> None:
        if self.writer:
            self.writer.writerow([*("" if raw.get(c) is None else raw.get(c)
                                    for c in self.columns), num, reason])

    def close(self) -> None:
        if self.fh:
            self.fh.close()


class _Importer:
    def __init__(self, *, session: Session, rules: FieldRules, now: datetime, on_error: str,
                 rejects: _Rejects, batch_size: int) -> None:
        self.s = session
        self.rules = rules
        self.now = now.replace(microsecond=0)
        self.on_error = on_error
        self.rejects = rejects
        self.batch_size = batch_size
        self.result = ImportResult()
        self.file_codes: dict[str, int] = {}
        """Every code seen in the file -> the row it first appeared on."""
        self.rejected_codes: dict[str, int] = {}
        self.deferred: list[_Row] = []
        self.pending_codes: set[str] = set()
        self.held: list[tuple[int, Mapping[str, Any], str]] = []
        self.reserved: dict[tuple[str, Any], int] = {}
        """Phones, e-mails and cards of rows held back until the end -> their row."""
        self.referring: dict[str, tuple[int, Mapping[str, Any]]] = {}
        """Code -> (row, raw) of every written row that set a referrer (for the cycle check)."""
        self.pg = session.get_bind().dialect.name == "postgresql"
        self._inserted = 0
        self._analyzed_at = 0

    def flush_rejects(self) -> None:
        for num, raw, reason in sorted(self.held, key=lambda h: h[0]):
            self.rejects.write(num, raw, reason)
        self.held = []

    # A rejected row: counted, listed (the first few), written to the rejects file.
    def reject(self, num: int, raw: Mapping[str, Any], column: str | None, reason: str,
               code: str | None = None) -> None:
        r = self.result
        r.rejected += 1
        err = RowError(num, column, reason)
        if len(r.errors) < MAX_ERRORS_SHOWN:
            r.errors.append(err)
        # Held until the batch is done, so the rejects file is in row order (except rows
        # whose referrer came later in the file: those are decided at the end).
        self.held.append((num, raw, str(err).split(": ", 1)[1]))
        if code is not None:
            self.rejected_codes.setdefault(code, num)

    def prepare(self, num: int, raw: dict[str, Any], problem: str | None) -> _Row | None:
        self.result.rows += 1
        if problem:
            self.reject(num, raw, None, problem)
            return None
        try:
            code = clean_code(raw.get("code"))
        except ValueError as exc:
            self.reject(num, raw, "code", str(exc))
            return None
        first = self.file_codes.get(code)
        if first is not None:
            self.reject(num, raw, "code", f"{code} duplicates row {first}")
            return None
        self.file_codes[code] = num
        return _Row(num=num, raw=raw, values={}, code=code, has_ref="referred_by" in raw)

    def _normalise(self, rows: list[_Row], existing: Mapping[str, Mapping[str, Any]]) -> list[_Row]:
        """Parse and check every value of the batch's rows (once: held-back rows keep theirs)."""
        out = []
        for r in rows:
            if r.normalised:
                out.append(r)
                continue
            raw = {k: v for k, v in r.raw.items() if k in FIELD_COLUMNS}
            known = {}
            ex = existing.get(r.code)
            if ex is not None and ex["phone"] and raw.get("phone") \
                    and _same_phone(raw["phone"], ex["phone"], self.rules.region):
                # The member's stored number, written the way the file writes it: already
                # validated, so skip the (slow) phone parser. Re-imports are mostly this.
                known["phone"] = ex["phone"]
                del raw["phone"]
            elif raw.get("phone"):
                fast = _fast_phone(raw["phone"], self.rules.region)
                if fast is not None:
                    known["phone"] = fast
                    del raw["phone"]
            try:
                r.values = {**normalize_fields(raw, self.rules), **known}
            except FieldError as exc:
                self.reject(r.num, r.raw, exc.field, exc.reason, r.code)
                continue
            key = ascii_digits(r.raw.get("referred_by") or "")
            if key == r.code:
                self.reject(r.num, r.raw, "referred_by", "a member cannot refer themselves",
                            r.code)
                continue
            r.ref_key = key or None
            r.normalised = True
            out.append(r)
        return out

    # -- one batch ------------------------------------------------------------------------

    def process(self, rows: list[_Row], *, final: bool) -> None:
        try:
            self._process(rows, final=final)
        finally:
            self.flush_rejects()

    def _process(self, rows: list[_Row], *, final: bool) -> None:
        if not rows:
            return
        existing = self._existing(rows)
        rows = self._normalise(rows, existing)
        # Against the database first: a member's own row keeps its phone over a newcomer's.
        rows = self._collisions(rows, existing)
        rows = self._unique_in_batch(rows)
        rows = self._referrers(rows, existing, final=final)
        inserts: list[_Row] = []
        updates: list[tuple[_Row, int, dict[str, Any]]] = []
        for r in rows:
            ex = existing.get(r.code)
            if ex is None:
                inserts.append(r)
                continue
            new = self._merged_values(r, ex)
            differs = any(new[f] != _comparable(f, ex[f]) for f in _WRITE_FIELDS) \
                or r.ref_in_batch
            if not differs:
                self.result.unchanged += 1
            elif ex["status"] == "closed":
                self.reject(r.num, r.raw, None, f"member {r.code} is closed; a closed "
                            "membership is final and cannot be changed", r.code)
            else:
                updates.append((r, ex["id"], new))
        self._write(inserts, updates)

    def _unique_in_batch(self, rows: list[_Row]) -> list[_Row]:
        """Within the file: this batch, and the rows held back (see _referrers)."""
        seen: dict[str, dict[Any, int]] = {f: {} for f in CONTACT_FIELDS}
        out = []
        for r in rows:
            for f in CONTACT_FIELDS:
                v = r.values.get(f)
                held = self.reserved.get((f, v)) if v else None
                if held is not None and held != r.num:
                    seen[f][v] = held
            clash = next(((f, r.values[f]) for f in CONTACT_FIELDS
                          if r.values.get(f) and r.values[f] in seen[f]), None)
            if clash:
                f, v = clash
                self.reject(r.num, r.raw, f, f"{v} duplicates row {seen[f][v]}", r.code)
                continue
            for f in CONTACT_FIELDS:
                if r.values.get(f):
                    seen[f][r.values[f]] = r.num
            out.append(r)
        return out

    def _existing(self, rows: list[_Row]) -> dict[str, Mapping[str, Any]]:
        q = select(MEMBERS.c.id, *(MEMBERS.c[f] for f in _WRITE_FIELDS)).where(
            MEMBERS.c.code.in_([r.code for r in rows]))
        return {m["code"]: m for m in self.s.execute(q).mappings()}

    def _collisions(self, rows: list[_Row], existing: Mapping[str, Mapping[str, Any]]) -> list[_Row]:
        wanted = {f: {r.values[f] for r in rows if r.values.get(f)} for f in CONTACT_FIELDS}
        conds = [MEMBERS.c[f].in_(list(v)) for f, v in wanted.items() if v]
        if not conds:
            return rows
        owners: dict[str, dict[Any, tuple[int, str]]] = {f: {} for f in CONTACT_FIELDS}
        for m in self.s.execute(
            select(MEMBERS.c.id, MEMBERS.c.code, *(MEMBERS.c[f] for f in CONTACT_FIELDS))
            .where(or_(*conds))
        ).mappings():
            for f in CONTACT_FIELDS:
                if m[f] in wanted[f]:
                    owners[f][m[f]] = (m["id"], m["code"])
        out = []
        for r in rows:
            own = existing[r.code]["id"] if r.code in existing else None
            clash = None
            for f in CONTACT_FIELDS:
                owner = owners[f].get(r.values.get(f)) if r.values.get(f) else None
                if owner and owner[0] != own:
                    where = self.file_codes.get(owner[1])
                    clash = (f, f"{r.values[f]} already belongs to member {owner[1]}"
                                + (f" (row {where})" if where and where < r.num else ""))
                    break
            if clash:
                self.reject(r.num, r.raw, clash[0], clash[1], r.code)
            else:
                out.append(r)
        return out

    def _referrers(self, rows: list[_Row], existing: Mapping[str, Any], *,
                   final: bool) -> list[_Row]:
        keys = {r.ref_key for r in rows if r.ref_key}
        if not keys:
            return rows
        found = resolve_members_bulk(session=self.s, keys=keys, region=self.rules.region,
                                     follow_merged=True)
        changed = True
        while changed:  # dropping a row can orphan a row that names it as referrer
            changed = False
            new_codes = {r.code for r in rows if r.code not in existing}
            kept = []
            for r in rows:
                key = r.ref_key
                if not key or key in found:
                    r.ref_id = found.get(key) if key else None
                    kept.append(r)
                elif key in new_codes:
                    r.ref_in_batch = True
                    kept.append(r)
                elif key in self.rejected_codes:
                    self.reject(r.num, r.raw, "referred_by",
                                f"member {key} was rejected (row {self.rejected_codes[key]})",
                                r.code)
                    changed = True
                elif not final or key in self.pending_codes:
                    self.deferred.append(r)  # its referrer may come later in the file
                    for f in CONTACT_FIELDS:  # ... and it keeps its phone, e-mail, card
                        if r.values.get(f):
                            self.reserved.setdefault((f, r.values[f]), r.num)
                    changed = True
                else:
                    self.reject(r.num, r.raw, "referred_by", f"no member matches {key!r}",
                                r.code)
                    changed = True
            rows = kept
        return rows

    def _merged_values(self, r: _Row, ex: Mapping[str, Any] | None) -> dict[str, Any]:
        """The member's full row after this import row: file values over what is there."""
        base: dict[str, Any] = (
            {f: _comparable(f, ex[f]) for f in _WRITE_FIELDS} if ex is not None else
            {"code": r.code, "name": None, "phone": None, "email": None, "card_number": None,
             "birth_date": None, "joined_at": self.now, "status": "active",
             "referred_by_id": None, "acquisition_campaign": None, "tags": ""})
        for f, v in r.values.items():
            if v is None and f in ("joined_at", "status"):
                continue
            base[f] = v
        if r.has_ref and not r.ref_in_batch:
            base["referred_by_id"] = r.ref_id
        return base

    def _write(self, inserts: list[_Row], updates: list[tuple[_Row, int, dict[str, Any]]]) -> None:
        try:
            self._write_batch(inserts, updates)
        except IntegrityError:
            # We checked codes, phones, e-mails and cards a moment ago: someone else wrote
            # the same values since. The caller's transaction rolls back as a whole.
            raise Refused("another process added or changed members with the same codes, "
                          "phones, e-mails or cards during the import; nothing was imported",
                          hint="run the import again") from None

    def _write_batch(self, inserts: list[_Row],
                     updates: list[tuple[_Row, int, dict[str, Any]]]) -> None:
        for r in (*inserts, *(u[0] for u in updates)):
            if r.ref_in_batch or r.ref_id is not None:
                self.referring[r.code] = (r.num, r.raw)
        stamp = utcnow()
        ids: dict[str, int] = {}
        if inserts:
            params = [{**self._merged_values(r, None), "balance": 0, "pending": 0,
                       "created_at": stamp, "updated_at": stamp} for r in inserts]
            # Plain executemany (pipelined on PostgreSQL), then the new ids by code: an
            # INSERT .. RETURNING of thousands of rows is one huge statement for psycopg to
            # parse, many times slower.
            self.s.execute(insert(MEMBERS), params)
            ids = dict(self.s.execute(select(MEMBERS.c.code, MEMBERS.c.id).where(
                MEMBERS.c.code.in_([r.code for r in inserts]))).all())
            self.result.inserted += len(inserts)
            self.result.inserted_ids.extend(ids[r.code] for r in inserts)
            self._refresh_statistics(len(inserts))
        if updates:
            params = []
            for r, member_id, new in updates:
                if r.ref_in_batch:
                    new["referred_by_id"] = ids[r.ref_key]  # type: ignore[index]
                params.append({"_id": member_id, **{f"v_{f}": new[f] for f in _WRITE_FIELDS},
                               "v_updated_at": stamp})
            self.s.execute(
                update(MEMBERS).where(MEMBERS.c.id == bindparam("_id")).values(
                    {f: bindparam(f"v_{f}") for f in (*_WRITE_FIELDS, "updated_at")}),
                params)
            self.result.updated += len(updates)
        fix = [{"_id": ids[r.code], "_ref": ids[r.ref_key]}  # type: ignore[index]
               for r in inserts if r.ref_in_batch]
        if fix:
            self.s.execute(update(MEMBERS).where(MEMBERS.c.id == bindparam("_id"))
                           .values(referred_by_id=bindparam("_ref")), fix)

    def _refresh_statistics(self, inserted: int) -> None:
        """PostgreSQL: ANALYZE members inside the transaction once it has grown a lot.

        Nobody else sees the new rows, so autovacuum never counts them: the next batches'
        look-ups and the enrolment hooks the caller runs afterwards would be planned for the
        table the statistics describe, maybe an empty one. Geometric steps, as in
        `purchases import`: a handful of ANALYZE runs for any file size.
        """
        if not self.pg:
            return
        self._inserted += inserted
        if self._inserted < max(10_000, self._analyzed_at):
            return
        self.s.connection().exec_driver_sql("ANALYZE members")
        self._analyzed_at = 2 * self._inserted

    # -- the whole file -------------------------------------------------------------------

    def finish_deferred(self) -> None:
        """Rows whose referrer came later in the file, now that the whole file is in."""
        while self.deferred:
            rows, self.deferred = self.deferred, []
            self.pending_codes = {r.code for r in rows}
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                self.process(chunk, final=True)
                self.pending_codes -= {r.code for r in chunk}
                self.pending_codes |= {r.code for r in self.deferred}
            if len(self.deferred) == len(rows):  # no progress: referrers name each other
                for r in self.deferred:
                    self.reject(r.num, r.raw, "referred_by",
                                f"{r.ref_key} is not in the database and its row could not be "
                                "imported first (the referrals form a cycle)", r.code)
                self.deferred = []
        self.flush_rejects()

    def check_cycles(self) -> None:
        """Refuse referrals that, with the ones already stored, go round in a circle (A was
        referred by B and B by A, directly or through others).

        The database had no cycle before this import (every write path refuses one), so a
        cycle now passes through a member this file gave a referrer: follow the referrer
        chain from each of them, fetching one level of the chain for all of them at a time.
        """
        if not self.referring:
            return
        ids: dict[str, int] = {}
        codes = list(self.referring)
        for start in range(0, len(codes), _CHAIN_BATCH):
            chunk = codes[start:start + _CHAIN_BATCH]
            ids.update(self.s.execute(select(MEMBERS.c.code, MEMBERS.c.id)
                                      .where(MEMBERS.c.code.in_(chunk))).all())
        referrer: dict[int, int | None] = {}
        code_of: dict[int, str] = {}
        todo = set(ids.values())
        while todo:
            wanted = list(todo)
            todo = set()
            for start in range(0, len(wanted), _CHAIN_BATCH):
                chunk = wanted[start:start + _CHAIN_BATCH]
                for mid, code, ref in self.s.execute(
                        select(MEMBERS.c.id, MEMBERS.c.code, MEMBERS.c.referred_by_id)
                        .where(MEMBERS.c.id.in_(chunk))):
                    referrer[mid], code_of[mid] = ref, code
                    if ref is not None and ref not in referrer:
                        todo.add(ref)
        seen_cycles: set[frozenset[int]] = set()
        for code, start_id in sorted(ids.items(), key=lambda kv: self.referring[kv[0]][0]):
            chain, at = [start_id], referrer.get(start_id)
            while at is not None and at != start_id and at not in chain:
                chain.append(at)
                at = referrer.get(at)
            if at != start_id or frozenset(chain) in seen_cycles:
                continue
            seen_cycles.add(frozenset(chain))
            loop = " -> ".join(code_of[m] for m in (*chain, start_id))
            for m in chain:
                if code_of[m] in self.referring:
                    num, raw = self.referring[code_of[m]]
                    self.reject(num, raw, "referred_by",
                                f"the referrals form a cycle ({loop}); a member cannot be "
                                "referred, directly or indirectly, by someone they referred",
                                code_of[m])
        self.flush_rejects()


_CHAIN_BATCH = 5_000


@lru_cache(maxsize=8)
def _national_prefix(region: str) -> tuple[str, str] | None:
    """(country code, national prefix) when a number written nationally is exactly the
    prefix + the national significant number (no carrier codes or transform rules)."""
    import phonenumbers

    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if meta is None or not meta.national_prefix or meta.national_prefix_transform_rule:
        return None
    if meta.national_prefix_for_parsing not in (None, meta.national_prefix):
        return None
    return str(meta.country_code), meta.national_prefix


def _same_phone(raw: str, stored: str, region: str) -> bool:
    """Does the file's text denote the stored E.164 number? (+98 912..., 0912-...)"""
    digits = _PHONE_SEPARATORS.sub("", ascii_digits(str(raw)))
    if digits == stored:
        return True
    national = _national_prefix(region)
    if national is None:
        return False
    cc, prefix = national
    return stored.startswith("+" + cc) and digits == prefix + stored[1 + len(cc):]


def _fast_phone(raw: str, region: str) -> str | None:
    """E.164 for the two common spellings (0912 345 6789, +98 912 345 6789) at a third of
    the cost of a full parse, or None to leave the number to normalize_phone.

    Only when the number comes out valid: then a full parse, which strips the same national
    prefix or country code, gives the same number (regions with carrier codes or prefix
    rules are excluded by _national_prefix).
    """
    national = _national_prefix(region)
    if national is None:
        return None
    cc, prefix = national
    digits = _PHONE_SEPARATORS.sub("", ascii_digits(str(raw)))
    if digits.startswith("+" + cc):
        nsn = digits[1 + len(cc):]
    elif digits.startswith(prefix) and not digits.startswith(prefix * 2):
        nsn = digits[len(prefix):]
    else:
        return None
    if not nsn.isdigit() or nsn.startswith("0") or not 4 <= len(nsn) <= 15:
        return None
    import phonenumbers

    number = phonenumbers.PhoneNumber(country_code=int(cc), national_number=int(nsn))
    if not phonenumbers.is_valid_number(number):
        return None
    return f"+{cc}{nsn}"


def _comparable(f: str, value: Any) -> Any:
    # Stored times may carry microseconds (members added by hand); files carry seconds.
    if f == "joined_at" and isinstance(value, datetime):
        return value.replace(microsecond=0)
    return value


def import_members(
    *,
    session: Session,
    path: Path,
    rules: FieldRules,
    now: datetime,
    input_format: str | None = None,
    on_error: str = "abort",
    rejects_path: Path | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Upsert members from a CSV or JSON Lines file, by code, in the caller's transaction.

    `progress(bytes_read, total_bytes)` is called after each batch. With on_error="abort",
    any rejected row raises InvalidInput (after the whole file was checked) so that the
    caller rolls back; with "skip" the result counts the rejected rows.
    """
    if on_error not in ("abort", "skip"):
        raise InvalidInput(f"--on-error: {on_error!r} is not abort or skip")
    fmt = detect_format(path, input_format)
    try:
        binary = path.open("rb")
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror}") from None
    total = path.stat().st_size
    if session.get_bind().dialect.name == "postgresql":
        from loyaltyctl.services.purchase_import import unprepared

        # The batches' statements (and the enrolment hooks the caller runs next) repeat
        # with the same text: see unprepared.
        unprepared(session)
    with binary:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        try:
            columns, rows = (_csv_rows if fmt == "csv" else _jsonl_rows)(path, text)
            rejects = _Rejects(rejects_path, columns)
            try:
                imp = _Importer(session=session, rules=rules, now=now, on_error=on_error,
                                rejects=rejects, batch_size=batch_size)
                batch: list[_Row] = []
                for num, raw, problem in rows:
                    row = imp.prepare(num, raw, problem)
                    if row is not None:
                        batch.append(row)
                    if len(batch) >= batch_size:
                        imp.process(batch, final=False)
                        batch = []
                        if progress:
                            progress(binary.raw.tell(), total)
                imp.process(batch, final=False)
                imp.finish_deferred()
                cycle_rows = imp.result.rejected
                imp.check_cycles()
                cycle_rows = imp.result.rejected - cycle_rows
                if progress:
                    progress(total, total)
            finally:
                rejects.close()
        except UnicodeDecodeError:
            raise not_utf8(str(path), path) from None
    result = imp.result
    result.errors.sort(key=lambda e: e.row)
    if cycle_rows and on_error == "skip":
        # Those rows are written already, and undoing one row's referral would leave its
        # other columns imported: the whole file is refused instead (the caller rolls back).
        shown = "\n".join(f"  {e}" for e in result.errors if "form a cycle" in e.reason)
        raise InvalidInput(f"{path}: {cycle_rows} row(s) give referrals that form a cycle, "
                           f"nothing was imported:\n{shown}",
                           hint="fix the referred_by column of those rows and run again")
    if result.rejected and on_error == "abort":
        shown = "\n".join(f"  {e}" for e in result.errors)
        more = result.rejected - len(result.errors)
        raise InvalidInput(
            f"{path}: {result.rejected} row(s) rejected, nothing was imported:\n{shown}"
            + (f"\n  ... and {more} more" if more > 0 else ""),
            hint="fix those rows and run again, or import the rest with "
                 "--on-error skip --rejects rejects.csv")
    return result


# -- export ---------------------------------------------------------------------------------


def _export_time(dt: datetime | None, calendar: str) -> str | None:
    # UTC with a Z, the date in the program's calendar: imports back to the same instant.
    if dt is None:
        return None
    return f"{format_date(dt.date(), calendar)}T{dt:%H:%M:%S}Z"


def export_members(
    *,
    session: Session,
    calendar: str = "gregorian",
    status: str | None = None,
    show_pii: bool = False,
    tags_as_list: bool = False,
) -> Iterator[dict[str, Any]]:
    """Every member (optionally of one status) in id order, in the import's columns.

    Streams from the database. Phone, e-mail and birth date are masked unless show_pii:
    an export meant to be imported again must be made with show_pii.
    """
    ref = MEMBERS.alias("ref")
    q = (
        select(*(MEMBERS.c[f] for f in IMPORT_COLUMNS if f != "referred_by"),
               ref.c.code.label("referred_by"))
        .select_from(MEMBERS.outerjoin(ref, ref.c.id == MEMBERS.c.referred_by_id))
        .order_by(MEMBERS.c.id)
    )
    if status:
        q = q.where(MEMBERS.c.status == status)
    for m in session.execute(q.execution_options(yield_per=2000)).mappings():
        tags = split_tags(m["tags"])
        row = {
            "code": m["code"],
            "name": m["name"],
            "phone": m["phone"],
            "email": m["email"],
            "card_number": m["card_number"],
            "birth_date": format_date(m["birth_date"], calendar) if m["birth_date"] else None,
            "joined_at": _export_time(m["joined_at"], calendar),
            "status": m["status"],
            "referred_by": m["referred_by"],
            "acquisition_campaign": m["acquisition_campaign"],
            "tags": tags if tags_as_list else ",".join(tags),
        }
        yield row if show_pii else mask_record(row)
