"""Fuzzing `config validate` with generated TOML: any document ends in exit 0 or exit 4
("Error: <file>: <key>: <reason>"), never a traceback or an unexpected error.

Documents mix the real section names and keys of `config.Config` (walked from the pydantic
models, so new keys are fuzzed as soon as they exist) with wrong types, unknown keys,
out-of-order tier thresholds, empty sections, huge and non-finite numbers, and unicode; some
are one mutation away from the shipped sample, some are broken TOML or not UTF-8 at all, and
some come with a campaigns.toml beside them. In CI (CI=true) the examples are derandomised so
a run is repeatable; elsewhere each run explores new documents.
"""

from __future__ import annotations

import copy
import os
import tomllib
import types
import typing
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from loyaltyctl.cli.main import app
from loyaltyctl.config import CAMPAIGNS_FILENAME, Config, sample_config_text

EXAMPLES = int(os.environ.get("LOYALTYCTL_FUZZ_EXAMPLES", "300"))  # more for a deeper local run
COUNTS: Counter[str] = Counter()

# -- value strategies ----------------------------------------------------------------------

JUNK = st.one_of(
    st.integers(min_value=-10, max_value=10**7),
    st.integers(min_value=-(2**80), max_value=2**80),  # past 64 bits: TOML readers differ
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=24),  # any unicode, control characters included
    st.dates(),
    st.datetimes(),
    st.lists(st.integers(-5, 5), max_size=3),
    st.just({}),
)
NAMES = st.one_of(
    st.sampled_from(["gold", "silver", "bronze", "vip", "c1", "spring-sale", "GOLD", "a b",
                     "", "x" * 41, "طلایی", "survey"]),
    st.text(min_size=1, max_size=12),
)
STRINGS = st.one_of(
    st.sampled_from(["UTC", "Asia/Tehran", "Mars/Olympus", "IRR", "USD", "usd", "IR", "irn",
                     "gregorian", "jalali", "floor", "rolling", "spend", "gold", "Demo Club"]),
    st.text(max_size=16),
)


def leaf(annotation: Any) -> st.SearchStrategy:
    """Plausible values for a scalar field of the given type (often valid, sometimes not)."""
    key = repr(annotation)
    if key not in _LEAVES:
        _LEAVES[key] = _leaf(annotation)
    return _LEAVES[key]


_LEAVES: dict[str, st.SearchStrategy] = {}


def _leaf(annotation: Any) -> st.SearchStrategy:
    origin = get_origin(annotation)
    if origin is Annotated:
        return leaf(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return st.one_of([leaf(a) for a in get_args(annotation) if a is not type(None)])
    if origin is Literal:
        return st.one_of(st.sampled_from(get_args(annotation)), st.text(max_size=10))
    if origin is list:
        return st.lists(leaf(get_args(annotation)[0]), max_size=4)
    if origin is dict:
        return st.dictionaries(NAMES, leaf(get_args(annotation)[1]), max_size=3)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.one_of(st.integers(-3, 400), st.integers(0, 10**9), st.integers(2**62, 2**70))
    if annotation is Decimal:
        return st.one_of(st.integers(0, 5), st.floats(-1, 2000),
                         st.sampled_from([1.1, 1.25, 0.0, 1e308, float("inf"), float("nan")]))
    if annotation is str:
        return STRINGS
    if annotation is date:
        return st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31))
    return JUNK


def model_type(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


_MODEL_DICTS: dict[type, st.SearchStrategy] = {}
_FIELD_VALUES: dict[str, st.SearchStrategy] = {}


def model_dict(model: type[BaseModel]) -> st.SearchStrategy:
    """A table for `model`: a random subset of its keys, values of the right or wrong kind,
    now and then an unknown key. Built once per model (building strategies is costly)."""
    if model not in _MODEL_DICTS:
        optional = {name: field_value(f.annotation) for name, f in model.model_fields.items()}
        unknown = st.dictionaries(st.text(min_size=1, max_size=10), JUNK, max_size=1)
        _MODEL_DICTS[model] = st.builds(
            lambda known, extra: {**extra, **known},
            st.fixed_dictionaries({}, optional=optional),
            st.one_of(st.just({}), st.just({}), st.just({}), unknown),
        )
    return _MODEL_DICTS[model]


def field_value(annotation: Any) -> st.SearchStrategy:
    key = repr(annotation)
    if key not in _FIELD_VALUES:
        _FIELD_VALUES[key] = _field_value(annotation)
    return _FIELD_VALUES[key]


def _field_value(annotation: Any) -> st.SearchStrategy:
    origin, args = get_origin(annotation), get_args(annotation)
    sub = model_type(annotation)
    if sub is not None:
        return st.one_of(model_dict(sub), model_dict(sub), st.just({}), JUNK)
    if origin is list and args and model_type(args[0]):
        return st.one_of(st.lists(model_dict(args[0]), max_size=4), JUNK)
    if origin is dict and args and model_type(args[1]):
        return st.one_of(st.dictionaries(NAMES, model_dict(args[1]), max_size=3), JUNK)
    return st.one_of(leaf(annotation), leaf(annotation), JUNK)


SAMPLE: dict[str, Any] = tomllib.loads(sample_config_text())


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


PICK_PATH = st.sampled_from(_paths(SAMPLE))
MUTATIONS = st.sampled_from(["replace", "delete", "unknown", "empty", "swap"])


@st.composite
def mutated_sample(draw: st.DrawFn) -> dict[str, Any]:
    """The shipped sample with one or two changes: near-valid documents."""
    doc = copy.deepcopy(SAMPLE)
    for _ in range(draw(st.integers(1, 2))):
        path = draw(PICK_PATH)
        parent: Any = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            last = path[-1]
            action = draw(MUTATIONS)
            if action == "replace":
                parent[last] = draw(JUNK)
            elif action == "delete":
                del parent[last]
            elif action == "unknown" and isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(JUNK)
            elif action == "empty" and isinstance(parent, dict):
                parent[last] = {}
            elif action == "swap":  # out-of-order tier thresholds
                levels = doc.get("tiers", {}).get("levels")
                if isinstance(levels, list) and len(levels) > 1:
                    i, j = draw(st.integers(0, len(levels) - 1)), draw(st.integers(0, len(levels) - 1))
                    if isinstance(levels[i], dict) and isinstance(levels[j], dict):
                        levels[i]["threshold"], levels[j]["threshold"] = (
                            levels[j].get("threshold", 0), levels[i].get("threshold", 0))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed or replaced this path
    return doc


RANDOM_DOCS = st.builds(dict, model_dict(Config))
DOCUMENTS = st.one_of(RANDOM_DOCS, mutated_sample(), st.just({}))
CAMPAIGN_FILES = st.one_of(
    st.none(), st.none(), st.none(),
    st.builds(lambda cs: {"campaigns": cs},
              field_value(Config.model_fields["campaigns"].annotation)),
    st.dictionaries(st.text(min_size=1, max_size=8), JUNK, max_size=2),
)


DAMAGE = st.sampled_from(["none"] * 10 + ["cut", "bytes"])


@st.composite
def files(draw: st.DrawFn) -> tuple[bytes, bytes | None, str]:
    """(loyalty.toml bytes, campaigns.toml bytes or None, kind)."""
    doc = draw(DOCUMENTS)
    raw = tomli_w.dumps(doc).encode()
    kind = "toml"
    damage = draw(DAMAGE)
    if damage == "cut" and raw:  # broken TOML: cut it anywhere
        raw = raw[: draw(st.integers(0, len(raw) - 1))] + b"= ["
        kind = "broken"
    elif damage == "bytes":  # not UTF-8
        raw = b"[program]\nname = \"\xff\xfe\"\n" + raw
        kind = "broken"
    campaigns = draw(CAMPAIGN_FILES)
    return raw, (tomli_w.dumps(campaigns).encode() if campaigns is not None else None), kind


# -- the test ------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> typing.Iterator[None]:
    yield
    line = (f"config fuzz: {COUNTS['documents']} documents, {COUNTS['rejected']} rejected "
            f"with exit 4, {COUNTS['accepted']} accepted ({COUNTS['broken']} broken TOML/UTF-8, "
            f"{COUNTS['with_campaigns']} with campaigns.toml)")
    print(line)
    # On the terminal whatever the capture mode, so CI's -q log shows the figures.
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is not None and capture is not None and COUNTS["documents"]:
        with capture.global_and_fixture_disabled():
            tr.ensure_newline()
            tr.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def click_command_once() -> typing.Iterator[None]:
    """Typer's CliRunner rebuilds the click command tree on every invoke (about 0.25 s with
    every group registered); build it once for the hundreds of documents here."""
    import typer.testing
    from typer.main import get_command

    command = get_command(app)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.testing, "_get_command", lambda a: command if a is app else get_command(a))
        yield


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          derandomize=os.environ.get("CI", "").lower() == "true",
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(case=files())
def test_config_validate_exits_0_or_4_with_a_named_file(workdir: Path, case) -> None:
    raw, campaigns, kind = case
    cfg = workdir / "loyalty.toml"
    cfg.write_bytes(raw)
    camp = workdir / CAMPAIGNS_FILENAME
    if campaigns is None:
        camp.unlink(missing_ok=True)
    else:
        camp.write_bytes(campaigns)
    r = CliRunner().invoke(app, ["--config", str(cfg), "config", "validate"],
                           env={"LOYALTYCTL_CONFIG": "", "LOYALTYCTL_DB": "", "COLUMNS": "200"},
                           catch_exceptions=False)
    COUNTS["documents"] += 1
    COUNTS[kind] += 1
    COUNTS["with_campaigns"] += campaigns is not None
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert r.exit_code in (0, 4), (r.exit_code, out, raw)
    if r.exit_code == 4:
        COUNTS["rejected"] += 1
        assert r.stderr.startswith("Error: "), r.stderr
        first = r.stderr.splitlines()[0]
        assert first.startswith((f"Error: {cfg}:", f"Error: {camp}:")), r.stderr
        assert "unexpected error" not in out
    else:
        COUNTS["accepted"] += 1
        assert kind == "toml"
        assert r.stderr.startswith(f"{cfg}: OK ("), r.stderr
