"""The program's rules: `loyalty.toml` (plus `campaigns.toml` beside it), typed and validated.

All money in config is in the currency's minor units (rials for IRR, cents for USD), like
everywhere else in loyaltyctl. Multipliers are exact decimals, never binary floats.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from loyaltyctl.errors import ConfigError

CONFIG_FILENAME = "loyalty.toml"
CAMPAIGNS_FILENAME = "campaigns.toml"
ENV_CONFIG = "LOYALTYCTL_CONFIG"


def _to_decimal(value: Any) -> Any:
    # TOML gives floats for 1.5; read them through their shortest repr so 1.1 stays 1.1.
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    return value


Multiplier = Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0, le=1000)]
Code = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
NonNeg = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(gt=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Program(Section):
    name: str = "Loyalty Club"
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "IRR"
    decimals: Annotated[int, Field(ge=0, le=4)] = 0
    timezone: str = "UTC"
    calendar: Literal["gregorian", "jalali"] = "gregorian"
    phone_region: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "IR"
    point_value: NonNeg = 0
    """What one point is worth, in minor units, when redeemed as a discount."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {v!r}") from exc
        return v


class Earning(Section):
    spend: Positive = 100_000
    """Spend this many minor units ..."""
    points: Positive = 1
    """... to earn this many points."""
    min_purchase: NonNeg = 0
    rounding: Literal["floor", "half_up", "ceil"] = "floor"
    excluded_categories: list[str] = []
    category_multipliers: dict[str, Multiplier] = {}
    pending_days: NonNeg = 0


class Expiry(Section):
    mode: Literal["rolling", "end_of_period", "never"] = "rolling"
    days: Positive = 365
    period: Literal["month", "quarter", "year"] = "year"
    periods: NonNeg = 1
    """For end_of_period: points expire at the end of the period this many periods after
    the one they were earned in (0 = the end of the same period)."""


class Tier(Section):
    code: Code
    name: str
    threshold: NonNeg
    multiplier: Multiplier = Decimal(1)
    retention_days: NonNeg = 365
    benefits: str = ""


class Tiers(Section):
    metric: Literal["spend", "points", "purchases"] = "spend"
    window_days: Positive = 365
    levels: list[Tier] = []

    @model_validator(mode="after")
    def _ascending(self) -> Tiers:
        seen: set[str] = set()
        for i, level in enumerate(self.levels):
            if level.code in seen:
                raise ValueError(f"levels[{i}].code: duplicate tier code {level.code!r}")
            seen.add(level.code)
            if i and level.threshold <= self.levels[i - 1].threshold:
                raise ValueError(
                    f"levels[{i}].threshold: {level.threshold} must be greater than the "
                    f"threshold of {self.levels[i - 1].code!r} ({self.levels[i - 1].threshold})"
                )
        return self

    def get(self, code: str | None) -> Tier | None:
        return next((t for t in self.levels if t.code == code), None)


class Referral(Section):
    referrer_points: NonNeg = 0
    referee_points: NonNeg = 0
    trigger: Literal["signup", "first_purchase"] = "first_purchase"


class Bonuses(Section):
    signup: NonNeg = 0
    birthday: NonNeg = 0
    referral: Referral = Referral()


class Event(Section):
    name: str
    points: Positive
    max_per_period: Positive = 1
    period: Literal["day", "week", "month", "year", "ever"] = "year"


class Reward(Section):
    code: Code
    name: str
    cost: Positive
    kind: Literal["gift", "discount", "free_shipping", "voucher"] = "gift"
    value: NonNeg = 0
    """Money value of the reward in minor units (for reports)."""
    stock: NonNeg | None = None
    valid_from: date | None = None
    valid_until: date | None = None
    tiers: list[str] = []
    """Tier codes allowed to redeem it; empty means every member."""

    @model_validator(mode="after")
    def _window(self) -> Reward:
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            raise ValueError("valid_until: is before valid_from")
        return self


class Ladder(Section):
    repeat_min_purchases: Annotated[int, Field(ge=2)] = 2
    loyal_min_purchases: Annotated[int, Field(ge=2)] = 3
    active_days: Positive = 90

    @model_validator(mode="after")
    def _order(self) -> Ladder:
        if self.loyal_min_purchases < self.repeat_min_purchases:
            raise ValueError("loyal_min_purchases: must be at least repeat_min_purchases")
        return self


class Campaign(Section):
    code: Code
    name: str
    starts: date
    ends: date
    """Last day of the campaign, inclusive, in the program's timezone."""
    multiplier: Multiplier = Decimal(1)
    flat_bonus: NonNeg = 0
    min_amount: NonNeg = 0
    tiers: list[str] = []
    categories: list[str] = []
    channels: list[str] = []
    budget: NonNeg = 0
    expected_revenue: NonNeg = 0
    acquisition_code: str | None = None

    @model_validator(mode="after")
    def _window(self) -> Campaign:
        if self.ends < self.starts:
            raise ValueError("ends: is before starts")
        return self


class Config(Section):
    program: Program = Program()
    earning: Earning = Earning()
    expiry: Expiry = Expiry()
    tiers: Tiers = Tiers()
    bonuses: Bonuses = Bonuses()
    events: dict[str, Event] = {}
    rewards: list[Reward] = []
    ladder: Ladder = Ladder()
    campaigns: list[Campaign] = []

    @model_validator(mode="after")
    def _cross_refs(self) -> Config:
        tier_codes = {t.code for t in self.tiers.levels}
        for name, items in (("rewards", self.rewards), ("campaigns", self.campaigns)):
            seen: set[str] = set()
            for i, item in enumerate(items):
                if item.code in seen:
                    raise ValueError(f"{name}[{i}].code: duplicate code {item.code!r}")
                seen.add(item.code)
                for t in item.tiers:
                    if t not in tier_codes:
                        raise ValueError(f"{name}[{i}].tiers: unknown tier {t!r}")
        for code in self.events:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", code):
                raise ValueError(f"events.{code}: event names are lower-case letters, digits, - and _")
        return self

    def reward(self, code: str) -> Reward | None:
        return next((r for r in self.rewards if r.code == code), None)

    def campaign(self, code: str) -> Campaign | None:
        return next((c for c in self.campaigns if c.code == code), None)


class LoadedConfig:
    """A validated config with the file it came from."""

    def __init__(self, config: Config, path: Path | None) -> None:
        self.config = config
        self.path = path

    @property
    def directory(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    @property
    def campaigns_path(self) -> Path:
        return self.directory / CAMPAIGNS_FILENAME


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(
            ("function-", "constrained-")
        ):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _raise_validation(path: Path | str, exc: ValidationError) -> None:
    lines = []
    for err in exc.errors():
        loc = _format_loc(tuple(err.get("loc", ())))
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
        elif err.get("type") == "missing":
            msg = "required key is missing"
        msg = msg.removeprefix("Value error, ")
        # Model-level checks put the sub-path at the start of the message.
        m = re.match(r"^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): (.*)$", msg)
        if m and m.group(1).split(".")[0].split("[")[0] not in ("", "must"):
            loc = f"{loc}.{m.group(1)}" if loc else m.group(1)
            msg = m.group(2)
        lines.append((loc or None, msg))
    key, reason = lines[0]
    if len(lines) > 1:
        reason += "".join(f"\n{path}: {k}: {r}" for k, r in lines[1:])
    raise ConfigError(path, key, reason)


def parse_config(data: dict[str, Any], path: Path | str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        _raise_validation(path, exc)
        raise  # unreachable


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(path, None, "file not found") from exc
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {exc.strerror}") from exc
    try:
        return tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, "not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"not valid TOML: {exc}") from exc


def find_config(explicit: Path | str | None) -> Path | None:
    """--config, then $LOYALTYCTL_CONFIG, then ./loyalty.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    here = Path.cwd() / CONFIG_FILENAME
    return here if here.exists() else None


def load_config(path: Path) -> LoadedConfig:
    data = _read_toml(path)
    campaigns_path = path.parent / CAMPAIGNS_FILENAME
    if campaigns_path.exists():
        extra = _read_toml(campaigns_path)
        unknown = set(extra) - {"campaigns"}
        if unknown:
            raise ConfigError(campaigns_path, sorted(unknown)[0], "unknown key")
        own = data.get("campaigns", [])
        if not isinstance(own, list):  # merged below, so check its shape here
            raise ConfigError(path, "campaigns", "must be an array of tables ([[campaigns]])")
        try:
            # The program file first (its errors name it), then the campaigns with the
            # program's tiers, so a campaign's `tiers` is checked against them.
            parse_config(data, path)
            parse_config({"tiers": data.get("tiers", {}), "campaigns": extra.get("campaigns", [])},
                         campaigns_path)
        except ConfigError:
            raise
        except Exception:  # pragma: no cover - parse_config raises ConfigError
            raise
        data = {**data, "campaigns": own + list(extra.get("campaigns", []))}
    return LoadedConfig(parse_config(data, path), path)


def config_to_dict(config: Config) -> dict[str, Any]:
    """The effective config as plain TOML/JSON-ready data (decimals as numbers)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Decimal):
            return int(v) if v == v.to_integral_value() else float(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return plain(config.model_dump())


def sample_config_text() -> str:
    """The shipped, commented sample program file."""
    from importlib.resources import files

    return (files("loyaltyctl") / "data" / "loyalty.toml").read_text(encoding="utf-8")
