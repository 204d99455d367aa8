"""Campaigns: the rules (loyalty.toml and campaigns.toml) and what each one brought in.

`campaigns add` and `campaigns end` write only `campaigns.toml` beside the program file,
never `loyalty.toml`. Adding appends a `[[campaigns]]` table to the end of the file, so
everything above it (hand-written comments included) stays byte for byte; ending changes the
one `ends = ...` line of that campaign, checked by reading the result back. Only when the
file is not laid out as `[[campaigns]]` tables is it rewritten whole with tomli-w (which
keeps every value but not comments), under a header saying loyaltyctl maintains it.

Overlapping campaigns stack as `rules/earning.py` documents: the highest multiplier among
the campaigns a purchase matches applies, and the flat bonuses of all of them add up.
"""

from __future__ import annotations

import re
import tomllib
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, literal, select
from sqlmodel import Session

from loyaltyctl.config import Campaign, Config, LoadedConfig
from loyaltyctl.db.models import LedgerEntry, Member, Purchase
from loyaltyctl.errors import ConfigError, InvalidInput, NotFound, Refused
from loyaltyctl.timeutil import end_of_local_day_utc, local_midnight_utc

HEADER = (
    "# Campaigns maintained by `loyaltyctl campaigns add` / `campaigns end`.\n"
    "# Values are in the currency's minor units, like loyalty.toml. You may edit this file by\n"
    "# hand; loyaltyctl appends new campaigns at the end and changes only the `ends` line of a\n"
    "# campaign it ends.\n"
)

# Campaign fields and the command-line option each comes from, for error messages.
OPTIONS = {
    "code": "CODE", "name": "--name", "starts": "--starts", "ends": "--ends",
    "multiplier": "--multiplier", "flat_bonus": "--flat-bonus", "min_amount": "--min-amount",
    "tiers": "--tier", "categories": "--category", "channels": "--channel",
    "budget": "--budget", "expected_revenue": "--expected-revenue",
    "acquisition_code": "--acquisition-code",
}

_TABLE_RE = re.compile(r"^[ \t]*\[\[[ \t]*campaigns[ \t]*\]\][ \t]*(#.*)?$", re.MULTILINE)
_ENDS_RE = re.compile(r"^([ \t]*ends[ \t]*=[ \t]*)([^#\n]*?)([ \t]*(#.*)?)$", re.MULTILINE)


def status(c: Campaign, today: date) -> str:
    if today < c.starts:
        return "upcoming"
    if today > c.ends:
        return "ended"
    return "running"


def source_of(loaded: LoadedConfig, code: str) -> str:
    """Which file defines campaign `code`: "campaigns.toml" or the program file's name."""
    return "campaigns.toml" if code in _file_codes(loaded.campaigns_path) else (
        loaded.path.name if loaded.path else "loyalty.toml")


def _file_codes(path: Path) -> set[str]:
    return {c.get("code") for c in _read(path).get("campaigns", []) if isinstance(c, dict)}


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"not valid TOML: {exc}") from None


def list_campaigns(*, loaded: LoadedConfig, today: date) -> list[dict[str, Any]]:
    in_file = _file_codes(loaded.campaigns_path)
    program = loaded.path.name if loaded.path else "loyalty.toml"
    return [
        {"code": c.code, "name": c.name, "status": status(c, today), "starts": c.starts,
         "ends": c.ends, "multiplier": c.multiplier, "flat_bonus": c.flat_bonus,
         "conditions": describe_conditions(c),
         "source": "campaigns.toml" if c.code in in_file else program}
        for c in sorted(loaded.config.campaigns, key=lambda c: (c.starts, c.code))
    ]


def describe_conditions(c: Campaign) -> str:
    parts = []
    if c.min_amount:
        parts.append(f"amount >= {c.min_amount:,}")
    for label, values in (("tier", c.tiers), ("category", c.categories), ("channel", c.channels)):
        if values:
            parts.append(f"{label} in {', '.join(values)}")
    return "; ".join(parts) or "every purchase"


def get(config: Config, code: str) -> Campaign:
    c = config.campaign(code)
    if c is None:
        known = ", ".join(x.code for x in config.campaigns) or "none defined"
        raise NotFound(f"no campaign {code!r} (campaigns: {known})")
    return c


# -- writing campaigns.toml ------------------------------------------------------------------


def _toml_value(v: Any) -> Any:
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    return v


def build(config: Config, fields: dict[str, Any]) -> Campaign:
    """Validate a new campaign through the same model the program file uses.

    Raises InvalidInput naming the command-line option at fault.
    """
    try:
        campaign = Campaign.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(x) for x in err.get("loc", ())]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        name = loc[0] if loc else ""
        m = re.match(r"^([a-z_]+): (.*)$", msg)
        if not name and m:
            name, msg = m.group(1), m.group(2)
        option = OPTIONS.get(name, name or "campaign")
        if name == "code":
            msg = "use 1-40 lower-case letters, digits, - and _, starting with a letter or digit"
        raise InvalidInput(f"{option}: {msg}") from None
    known = {t.code for t in config.tiers.levels}
    for t in campaign.tiers:
        if t not in known:
            raise InvalidInput(f"--tier: unknown tier {t!r} (tiers: {', '.join(sorted(known)) or 'none'})")
    return campaign


def _plain(campaign: Campaign) -> dict[str, Any]:
    """The campaign as TOML data: only what differs from the defaults, in model order."""
    defaults = Campaign.model_fields
    out: dict[str, Any] = {}
    for name, value in campaign.model_dump().items():
        default = defaults[name].default
        if name in ("code", "name", "starts", "ends") or (value != default and value is not None):
            out[name] = _toml_value(value)
    return out


def add(*, loaded: LoadedConfig, fields: dict[str, Any]) -> Campaign:
    """Append a campaign to campaigns.toml; refuses a code already used in either file."""
    import tomli_w

    campaign = build(loaded.config, fields)
    if loaded.config.campaign(campaign.code) is not None:
        raise Refused(f"campaign {campaign.code!r} already exists ({source_of(loaded, campaign.code)}); "
                      "choose another code")
    path = loaded.campaigns_path
    block = tomli_w.dumps({"campaigns": [_plain(campaign)]})
    if path.exists():
        old = path.read_text(encoding="utf-8-sig")
        data = _read(path)
        if set(data) - {"campaigns"} or (data.get("campaigns") and not _TABLE_RE.search(old)):
            # Not a file of [[campaigns]] tables (an inline array?): rewrite it whole.
            items = list(data.get("campaigns", [])) + [_plain(campaign)]
            _write(loaded, path, HEADER + "\n" + tomli_w.dumps({**data, "campaigns": items}))
        else:
            sep = "" if old.endswith("\n\n") else ("\n" if old.endswith("\n") or not old else "\n\n")
            _write(loaded, path, old + sep + block)
    else:
        _write(loaded, path, HEADER + "\n" + block)
    return campaign


def end(*, loaded: LoadedConfig, code: str, on: date) -> tuple[Campaign, date]:
    """Set the last day of a campaign defined in campaigns.toml; returns it and the old end."""
    import tomli_w

    current = get(loaded.config, code)
    path = loaded.campaigns_path
    if code not in _file_codes(path):
        name = loaded.path.name if loaded.path else "loyalty.toml"
        raise InvalidInput(
            f"campaign {code!r} is defined in {name}, which loyaltyctl never rewrites; "
            f"edit its `ends` there by hand (ends = {on.isoformat()})")
    if on < current.starts:
        raise InvalidInput(f"--on: {on.isoformat()} is before the campaign starts "
                           f"({current.starts.isoformat()})")
    if on > current.ends:
        raise Refused(f"campaign {code!r} already ends on {current.ends.isoformat()}; "
                      f"--on {on.isoformat()} would extend it (edit campaigns.toml to extend it)")
    old = path.read_text(encoding="utf-8-sig")
    data = _read(path)
    expected = [dict(c, ends=on) if c.get("code") == code else c for c in data["campaigns"]]
    new = _edit_ends(old, code, on)
    if new is None or tomllib.loads(new) != {**data, "campaigns": expected}:
        new = HEADER + "\n" + tomli_w.dumps({**data, "campaigns": expected})
    _write(loaded, path, new)
    return current, current.ends


def _edit_ends(text: str, code: str, on: date) -> str | None:
    """Change the `ends` line of campaign `code` in place, or None if the layout is unusual."""
    starts = [m.start() for m in _TABLE_RE.finditer(text)]
    if not starts:
        return None
    bounds = list(zip(starts, starts[1:] + [len(text)], strict=True))
    for lo, hi in bounds:
        chunk = text[lo:hi]
        try:
            parsed = tomllib.loads(chunk)
        except tomllib.TOMLDecodeError:
            return None
        items = parsed.get("campaigns") or [{}]
        if items[0].get("code") != code:
            continue
        found = list(_ENDS_RE.finditer(chunk))
        if len(found) != 1:
            return None
        m = found[0]
        chunk = chunk[:m.start(2)] + on.isoformat() + chunk[m.end(2):]
        return text[:lo] + chunk + text[hi:]
    return None


def _write(loaded: LoadedConfig, path: Path, content: str) -> None:
    """Replace the file (write beside, then rename: never half a rules file) and read the
    rules back as every command will; if they no longer load, put the old file back."""
    from loyaltyctl.config import load_config

    old = path.read_bytes() if path.exists() else None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(path)
    if loaded.path is None:  # pragma: no cover - commands always have a program file
        return
    try:
        load_config(loaded.path)
    except Exception:
        if old is None:
            path.unlink()
        else:
            tmp.write_bytes(old)
            tmp.replace(path)
        raise


# -- what a campaign brought in -------------------------------------------------------------


def _credited(column: Any, code: str) -> Any:
    """The comma-separated campaign column names `code` ("a", "a,b", "b,a")."""
    return (literal(",") + column + literal(",")).contains(f",{code},", autoescape=True)


def results(*, session: Session, config: Config, campaign: Campaign, now: datetime) -> dict[str, Any]:
    """Members acquired, and purchases, revenue and points credited to the campaign in its
    window (up to `now`)."""
    tz = config.program.timezone
    lo = local_midnight_utc(campaign.starts, tz)
    hi = min(end_of_local_day_utc(campaign.ends, tz), now)
    m, p, le = Member.__table__, Purchase.__table__, LedgerEntry.__table__
    acquired = session.execute(
        select(func.count()).select_from(m).where(m.c.acquisition_campaign == campaign.code)
    ).scalar() or 0
    codes = {campaign.code} | ({campaign.acquisition_code} if campaign.acquisition_code else set())
    if campaign.acquisition_code:
        acquired = session.execute(
            select(func.count()).select_from(m).where(m.c.acquisition_campaign.in_(codes))
        ).scalar() or 0
    purchases, revenue, refunded = session.execute(
        select(func.count(), func.coalesce(func.sum(p.c.amount), 0),
               func.coalesce(func.sum(p.c.refunded_amount), 0))
        .where(_credited(p.c.campaign, campaign.code), p.c.occurred_at >= lo, p.c.occurred_at <= hi)
    ).one()
    points = session.execute(
        select(func.coalesce(func.sum(le.c.points), 0))
        .where(_credited(le.c.campaign, campaign.code), le.c.points > 0,
               le.c.effective_at >= lo, le.c.effective_at <= hi)
    ).scalar() or 0
    return {
        "members_acquired": int(acquired),
        "purchases": int(purchases),
        "revenue": int(revenue) - int(refunded),
        "points": int(points),
    }
