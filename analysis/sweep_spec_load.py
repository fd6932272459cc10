"""Read a sweep spec (the format is in `analysis.sweep_spec`) and check every section before any replay.

Every mistake is a one-line `SpecError` (a `ValueError`) `spec.toml:LINE: key: reason` naming the offending key.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from analysis.slo import DEFAULT_ATTAINMENT
from analysis.slo import SLO, SLO_NAMES
from analysis.spec_locator import Locator, SpecError, check_number, check_table
from analysis.sweep_grid import expand_grid, grid_warnings
from analysis.sweep_spec import Search, SweepSpec

TOP_KEYS = ("seed", "trace", "engine", "grid", "slo", "search", "loads", "report")
TRACE_KEYS = ("path", "format", "arrivals", "num_requests", "preset", "generate")
SEARCH_KEYS = ("low", "high", "precision")
LOAD_KEYS = ("rate_scales", "rates")
COSTS = ("kv_gib", "num_gpus", "gpu_memory_gib")
MAX_GRID_STEPS = 100_000  # (high - low) / precision: a bisection needs ~log2 of it replays, a full grid all


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a spec; every configuration's engine options are validated before any replay."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise SpecError(f"{path}:{line.group(1) if line else 1}: toml: {str(exc).split(' (at')[0]}") from None
    return parse_spec(data, path=path, text=text)


def parse_spec(data: dict[str, Any], *, path: Path, text: str = "") -> SweepSpec:
    """The spec in `data` (parsed TOML) checked section by section; `text` locates keys for errors."""
    from sim import POLICIES, EngineConfig

    where = Locator(path, text)
    for key in data:
        if key not in TOP_KEYS:
            raise where.error(key, f"unknown key; valid keys: {', '.join(TOP_KEYS)}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise where.error("seed", f"must be an integer >= 0, got {seed!r}")
    trace = _parse_trace(where, check_table(where, data, "trace", TRACE_KEYS))
    if "path" in trace:
        resolved = path.parent / trace["path"]
        if not resolved.is_file():  # before any work, and said where the spec names it
            missing = "no such file" if not resolved.exists() else "not a file"
            raise where.error("trace.path", f"{missing}: {resolved} (a relative path is relative to the spec file)")

    engine_keys = ("policy", *(f.name for f in fields(EngineConfig)))
    engine = dict(check_table(where, data, "engine", engine_keys))
    if "grid" not in data:
        raise where.error("grid", "missing; give at least one option with a list of values, e.g. policy = [\"vllm-v0\"]")
    grid = check_table(where, data, "grid", engine_keys)
    if not grid:
        raise where.error("grid", "empty; give at least one option with a list of values")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise where.error(f"grid.{name}", f"must be a non-empty list of values, got {values!r}")
        if len({repr(v) for v in values}) != len(values):
            raise where.error(f"grid.{name}", "a value is listed twice")
        if name in engine:
            raise where.error(f"grid.{name}", "also set in [engine]; set it in one place")
    for name, values in grid.items():
        if name == "policy":
            for value in values:
                if value not in POLICIES:
                    raise where.error("grid.policy", f"unknown policy {value!r}; valid names: {', '.join(POLICIES)}")
    if "policy" in engine and engine["policy"] not in POLICIES:
        raise where.error("engine.policy", f"unknown policy {engine['policy']!r}; valid names: {', '.join(POLICIES)}")

    slo, target = _parse_slo(where, check_table(where, data, "slo", (*(f"{n}_ms" for n in SLO_NAMES), "attainment")))
    search, loads = _parse_loads(where, data)
    if slo.is_empty:  # fixed loads too: their capacity and Pareto front are judged by the SLOs
        what = "capacity search" if search is not None else "a sweep's capacity, even at fixed loads,"
        raise where.error("slo", f"{what} needs at least one SLO ({', '.join(f'{n}_ms' for n in SLO_NAMES)})")
    report = check_table(where, data, "report", ("cost",))
    cost = report.get("cost", "kv_gib")
    if cost not in COSTS:
        raise where.error("report.cost", f"unknown cost {cost!r}; valid names: {', '.join(COSTS)}")

    spec = SweepSpec(path=path, text=text, seed=seed, trace=trace, engine=engine, grid=grid, slo=slo, target=target,
                     search=search, loads=loads, cost=cost)
    spec.configs = expand_grid(where, engine, grid)
    spec.warnings = grid_warnings(where, engine, grid)
    return spec


def _parse_trace(where: Locator, trace: dict[str, Any]) -> dict[str, Any]:
    from analysis.presets import PRESETS

    sources = [k for k in ("path", "preset", "generate") if k in trace]
    if len(sources) != 1:
        raise where.error("trace", "give exactly one of path, preset or [trace.generate]")
    if "num_requests" in trace:
        n = trace["num_requests"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise where.error("trace.num_requests", f"must be an integer >= 2, got {n!r}")
    if "path" in trace and not isinstance(trace["path"], str):
        raise where.error("trace.path", f"must be a string, got {trace['path']!r}")
    if "format" in trace and "path" not in trace:
        raise where.error("trace.format", "only with trace.path")
    if "arrivals" in trace:
        _check_arrivals(where, trace)
    if "preset" in trace and trace["preset"] not in PRESETS:
        raise where.error("trace.preset", f"unknown preset {trace['preset']!r}; valid names: {', '.join(PRESETS)}")
    if "generate" in trace:
        import inspect

        from traces import generate
        from traces.gen_rules import ignored_option

        parameters = inspect.signature(generate).parameters
        allowed = tuple(name for name in parameters if name != "seed")
        options = check_table(where, trace, "generate", allowed, parent="trace.")
        if "num_requests" not in options:
            raise where.error("trace.generate.num_requests", "missing")
        if "num_requests" in trace:
            raise where.error("trace.num_requests", "give trace.generate.num_requests instead")
        for name, value in options.items():
            kind = str(parameters[name].annotation).split(" ")[0]  # "int", "float", "str", "int | None" -> "int"
            if kind in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise where.error(f"trace.generate.{name}", f"must be a number, got {value!r}")
            if kind == "str" and not isinstance(value, str):
                raise where.error(f"trace.generate.{name}", f"must be a string, got {value!r}")
        ignored = ignored_option(options, _spec_setting)
        if ignored is not None:  # the rules of `trace gen`'s options, in the spec's words
            name, why = ignored
            raise where.error(f"trace.generate.{name}", f"would be ignored: {why}")
        trace = {"generate": {"rate": 1.0, **options}}
        try:  # every other rule of generate's, at its line, before any work
            generate(**trace["generate"])
        except TypeError as exc:
            raise where.error("trace.generate", " ".join(str(exc).split())) from None
        except ValueError as exc:
            name, _, reason = str(exc).removeprefix("generate: ").partition(": ")
            key = f"trace.generate.{name}" if name in options else "trace.generate"
            raise where.error(key, reason if name in options else str(exc)) from None
    return trace


def _check_arrivals(where: Locator, trace: dict[str, Any]) -> None:
    """`arrivals`: `--arrivals` of `replay` and `compare` (the same parser), for a trace file's requests."""
    from traces.arrivals import ArrivalSpec, ArrivalSpecError

    if "path" not in trace:
        raise where.error("trace.arrivals", "only with trace.path (a preset or [trace.generate] has its own arrivals)")
    text = trace["arrivals"]
    if not isinstance(text, str):
        raise where.error("trace.arrivals", f"must be a string such as \"poisson:2\", got {text!r}")
    try:
        ArrivalSpec.parse(text)
    except ArrivalSpecError as exc:
        raise where.error("trace.arrivals", exc.reason) from None


def _spec_setting(name: str, value: Any = None) -> str:
    """A `[trace.generate]` option as the spec writes it: `arrival`, or `arrival = "gamma"` with a value."""
    return name if value is None else f"{name} = {json.dumps(value)}"


def _parse_slo(where: Locator, table: dict[str, Any]) -> tuple[SLO, float]:
    bounds = {}
    for name in SLO_NAMES:
        key = f"{name}_ms"
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise where.error(f"slo.{key}", f"must be a positive number of milliseconds, got {value!r}")
            bounds[key] = float(value)
    target = table.get("attainment", DEFAULT_ATTAINMENT)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise where.error("slo.attainment", f"must be a share of requests in (0, 1], got {target!r}")
    return SLO(**bounds), float(target)


def _parse_loads(where: Locator, data: dict[str, Any]) -> tuple[Search | None, tuple[str, tuple[float, ...]] | None]:
    if ("search" in data) == ("loads" in data):
        raise where.error("search", "give [search] (capacity search) or [loads] (fixed loads), exactly one")
    if "search" in data:
        table = check_table(where, data, "search", SEARCH_KEYS)
        for key in SEARCH_KEYS:
            if key not in table:
                raise where.error(f"search.{key}", "missing")
        low, high, precision = (check_number(where, f"search.{k}", table[k]) for k in SEARCH_KEYS)
        if high <= low:
            raise where.error("search.high", f"must be above search.low ({low:g}), got {high:g}")
        if (high - low) / precision > MAX_GRID_STEPS:
            raise where.error("search.precision", f"{precision:g} makes more than {MAX_GRID_STEPS} steps "
                                                  f"from {low:g} to {high:g}")
        return Search(low, high, precision), None
    table = check_table(where, data, "loads", LOAD_KEYS)
    if len(table) != 1:
        raise where.error("loads", "give exactly one of rate_scales or rates")
    (kind, values), = table.items()
    if not isinstance(values, list) or not values:
        raise where.error(f"loads.{kind}", f"must be a non-empty list of numbers, got {values!r}")
    numbers = tuple(sorted(check_number(where, f"loads.{kind}", v) for v in values))
    if len(set(numbers)) != len(numbers):
        raise where.error(f"loads.{kind}", "a value is listed twice")
    return None, (kind, numbers)
