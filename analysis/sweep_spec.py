"""A sweep spec: a TOML file naming a trace, a grid over engine options, SLOs, and fixed loads or a capacity search.

    seed = 0                      # drives trace generation and every replay
    [trace]                       # one of: path (+ format, num_requests), preset (+ num_requests), [trace.generate]
    path = "../data/AzureLLMInferenceTrace_code.csv"   # relative to this file
    [engine]                      # the same for every configuration: any sim.EngineConfig field, and policy
    model = "llama-3-8b"
    [grid]                        # every combination of these lists, in this order
    policy = ["vllm-v0", "sarathi"]
    max_num_seqs = [64, 256]
    [slo]                         # vLLM's goodput SLOs; a load meets them when `attainment` of requests do
    ttft_ms = 2000
    tpot_ms = 100
    attainment = 0.9
    [search]                      # capacity: the highest rate scale meeting the SLOs, by bisection
    low = 0.25
    high = 4.0
    precision = 0.05              # rate-scale step of the grid the bisection walks
    # or: [loads] rate_scales = [0.5, 1, 2]  (or rates = [...] in req/s): fixed loads, as `pagedlab compare`
    [report]
    cost = "kv_gib"               # Pareto x axis: kv_gib, num_gpus or gpu_memory_gib

Every mistake is a one-line `ValueError` `spec.toml:LINE: key: reason` naming the offending key.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from analysis.capacity import DEFAULT_ATTAINMENT
from analysis.slo import SLO, SLO_NAMES

TOP_KEYS = ("seed", "trace", "engine", "grid", "slo", "search", "loads", "report")
TRACE_KEYS = ("path", "format", "num_requests", "preset", "generate")
SEARCH_KEYS = ("low", "high", "precision")
LOAD_KEYS = ("rate_scales", "rates")
COSTS = ("kv_gib", "num_gpus", "gpu_memory_gib")
MAX_GRID_STEPS = 100_000  # (high - low) / precision: a bisection needs ~log2 of it replays, a full grid all


class SpecError(ValueError):
    """A one-line error about a spec file."""


class _Locator:
    """Line numbers of TOML keys (tomllib keeps none): `[table]` headers and `key =` lines under them."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines: dict[str, int] = {}
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if header := re.match(r"^\[\s*([A-Za-z0-9_.\-\s\"']+?)\s*\]", stripped):
                table = header.group(1).replace(" ", "").replace('"', "").replace("'", "")
                self.lines.setdefault(table, number)
            elif key := re.match(r"^([A-Za-z0-9_\-.\"']+)\s*=", stripped):
                name = key.group(1).replace('"', "").replace("'", "")
                self.lines.setdefault(f"{table}.{name}" if table else name, number)

    def error(self, key: str, reason: str) -> SpecError:
        """`path:line: key: reason`, at the key's line, else its table's, else line 1."""
        line, probe = 1, key
        while probe:
            if probe in self.lines:
                line = self.lines[probe]
                break
            probe = probe.rpartition(".")[0]
        return SpecError(f"{self.path}:{line}: {key}: {reason}")


@dataclass(frozen=True)
class Search:
    """Bisection over the rate scales low, low + precision, ..., high (see analysis.sweep_search)."""

    low: float
    high: float
    precision: float


@dataclass(frozen=True)
class SweepConfig:
    """One point of the grid: its index, the grid values (`params`), the policy, every engine option."""

    index: int
    params: dict[str, Any]
    policy: str
    engine: dict[str, Any]

    @property
    def name(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params.items())

    def engine_config(self):  # -> sim.EngineConfig
        from sim import EngineConfig

        return EngineConfig(**self.engine)


@dataclass
class SweepSpec:
    path: Path
    text: str
    seed: int
    trace: dict[str, Any]
    engine: dict[str, Any]
    grid: dict[str, list[Any]]
    slo: SLO
    target: float
    search: Search | None
    loads: tuple[str, tuple[float, ...]] | None  # ("rate_scales" | "rates", values)
    cost: str = "kv_gib"
    configs: list[SweepConfig] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # settings some of the grid's policies ignore

    def canonical(self) -> dict[str, Any]:
        """What the results depend on, as plain JSON data (a resumed sweep must match it)."""
        return {"seed": self.seed, "trace": self.trace, "engine": self.engine, "grid": self.grid,
                "slo": dict(self.slo.items()), "attainment": self.target,
                "search": None if self.search is None else vars(self.search),
                "loads": None if self.loads is None else {self.loads[0]: list(self.loads[1])}}

    def load_trace(self):  # -> (traces.Trace, base rate req/s, description)
        from analysis.compare import trace_rate
        from analysis.presets import generate_preset, get_preset

        source = self.trace
        if "path" in source:
            from traces import load

            trace = load(self.path.parent / source["path"], format=source.get("format", "auto"))
            if "num_requests" in source:
                trace = trace.head(source["num_requests"])
            what = f"{source['path']}"
        elif "preset" in source:
            trace = generate_preset(source["preset"], seed=self.seed, num_requests=source.get("num_requests"))
            what = f"preset {source['preset']!r} ({get_preset(source['preset']).description}), seed {self.seed}"
        else:
            from traces import generate

            trace = generate(**source["generate"], seed=self.seed)
            what = "generated (" + ", ".join(f"{k}={v}" for k, v in source["generate"].items()) + f"), seed {self.seed}"
        rate = trace_rate(trace)
        return trace, rate, f"{what}: {len(trace)} requests over {trace.duration_s:.0f} s (mean {rate:.3g} req/s)"


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


def _table(where: _Locator, data: dict, key: str, allowed: tuple[str, ...], parent: str = "") -> dict[str, Any]:
    """`data[key]` (a table, else {}), with every key in `allowed`; `parent` prefixes names in errors."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise where.error(parent + key, f"must be a table ([{parent + key}]), got {value!r}")
    for name in value:
        if name not in allowed:
            raise where.error(f"{parent}{key}.{name}", f"unknown key; valid keys: {', '.join(allowed)}")
    return value


def _number(where: _Locator, key: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            (positive and value <= 0):
        raise where.error(key, f"must be a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


def parse_spec(data: dict[str, Any], *, path: Path, text: str = "") -> SweepSpec:
    from sim import POLICIES, EngineConfig

    where = _Locator(path, text)
    for key in data:
        if key not in TOP_KEYS:
            raise where.error(key, f"unknown key; valid keys: {', '.join(TOP_KEYS)}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise where.error("seed", f"must be an integer >= 0, got {seed!r}")
    trace = _parse_trace(where, _table(where, data, "trace", TRACE_KEYS))
    if "path" in trace:
        resolved = path.parent / trace["path"]
        if not resolved.is_file():  # before any work, and said where the spec names it
            missing = "no such file" if not resolved.exists() else "not a file"
            raise where.error("trace.path", f"{missing}: {resolved} (a relative path is relative to the spec file)")

    engine_keys = ("policy", *(f.name for f in fields(EngineConfig)))
    engine = dict(_table(where, data, "engine", engine_keys))
    if "grid" not in data:
        raise where.error("grid", "missing; give at least one option with a list of values, e.g. policy = [\"vllm-v0\"]")
    grid = _table(where, data, "grid", engine_keys)
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

    slo, target = _parse_slo(where, _table(where, data, "slo", (*(f"{n}_ms" for n in SLO_NAMES), "attainment")))
    search, loads = _parse_loads(where, data)
    if slo.is_empty:  # fixed loads too: their capacity and Pareto front are judged by the SLOs
        what = "capacity search" if search is not None else "a sweep's capacity, even at fixed loads,"
        raise where.error("slo", f"{what} needs at least one SLO ({', '.join(f'{n}_ms' for n in SLO_NAMES)})")
    report = _table(where, data, "report", ("cost",))
    cost = report.get("cost", "kv_gib")
    if cost not in COSTS:
        raise where.error("report.cost", f"unknown cost {cost!r}; valid names: {', '.join(COSTS)}")

    spec = SweepSpec(path=path, text=text, seed=seed, trace=trace, engine=engine, grid=grid, slo=slo, target=target,
                     search=search, loads=loads, cost=cost)
    spec.configs = _expand(where, engine, grid)
    spec.warnings = _ignored_settings(where, engine, grid)
    return spec


def _ignored_settings(where: _Locator, engine: dict[str, Any], grid: dict[str, list[Any]]) -> list[str]:
    """A grid key that no policy of the sweep reads is refused at its line: every value would give the same
    results. One that some policies ignore, or an [engine] setting they ignore, is a warning (those
    configurations repeat each other)."""
    from sim.policies import POLICIES
    from sim.policies.settings import ignored_note, ignored_settings

    policies = [POLICIES[p] for p in grid.get("policy", [engine.get("policy", "vllm-v0")])]
    warnings = []
    for table, keys in (("grid", grid), ("engine", engine)):
        for name in keys:
            deaf = [cls for cls in policies if ignored_settings(cls, (name,))]
            if not deaf:
                continue
            notes = "; ".join(ignored_note(cls, name).removeprefix(f"{name}: ") for cls in deaf)
            if table == "grid" and len(deaf) == len(policies) and len(keys[name]) > 1:
                raise where.error(f"grid.{name}", f"{notes}: every value gives the same results; set it for a "
                                                  f"policy that reads it, or drop it")
            where_line = where.error(f"{table}.{name}", "").args[0].rstrip(": ")
            warnings.append(f"{where_line}: {notes}" + (": those configurations repeat each other"
                                                         if table == "grid" and len(keys[name]) > 1 else ""))
    return warnings


def _parse_trace(where: _Locator, trace: dict[str, Any]) -> dict[str, Any]:
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
    if "preset" in trace and trace["preset"] not in PRESETS:
        raise where.error("trace.preset", f"unknown preset {trace['preset']!r}; valid names: {', '.join(PRESETS)}")
    if "generate" in trace:
        import inspect

        from traces import generate

        parameters = inspect.signature(generate).parameters
        allowed = tuple(name for name in parameters if name != "seed")
        options = _table(where, trace, "generate", allowed, parent="trace.")
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


def _parse_slo(where: _Locator, table: dict[str, Any]) -> tuple[SLO, float]:
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


def _parse_loads(where: _Locator, data: dict[str, Any]) -> tuple[Search | None, tuple[str, tuple[float, ...]] | None]:
    if ("search" in data) == ("loads" in data):
        raise where.error("search", "give [search] (capacity search) or [loads] (fixed loads), exactly one")
    if "search" in data:
        table = _table(where, data, "search", SEARCH_KEYS)
        for key in SEARCH_KEYS:
            if key not in table:
                raise where.error(f"search.{key}", "missing")
        low, high, precision = (_number(where, f"search.{k}", table[k]) for k in SEARCH_KEYS)
        if high <= low:
            raise where.error("search.high", f"must be above search.low ({low:g}), got {high:g}")
        if (high - low) / precision > MAX_GRID_STEPS:
            raise where.error("search.precision", f"{precision:g} makes more than {MAX_GRID_STEPS} steps "
                                                  f"from {low:g} to {high:g}")
        return Search(low, high, precision), None
    table = _table(where, data, "loads", LOAD_KEYS)
    if len(table) != 1:
        raise where.error("loads", "give exactly one of rate_scales or rates")
    (kind, values), = table.items()
    if not isinstance(values, list) or not values:
        raise where.error(f"loads.{kind}", f"must be a non-empty list of numbers, got {values!r}")
    numbers = tuple(sorted(_number(where, f"loads.{kind}", v) for v in values))
    if len(set(numbers)) != len(numbers):
        raise where.error(f"loads.{kind}", "a value is listed twice")
    return None, (kind, numbers)


def _expand(where: _Locator, engine: dict[str, Any], grid: dict[str, list[Any]]) -> list[SweepConfig]:
    """Every combination, in grid order; each one's EngineConfig is built now so a bad value fails up front."""
    from sim import EngineConfig
    from sim.policies import make_policy
    from sim.policies.sglang import check_schedule_policy

    policies = tuple(grid.get("policy", [engine.get("policy", "vllm-v0")]))
    if "lpm" in grid.get("schedule_policy", [engine.get("schedule_policy")]):
        try:  # sglang's queue order; no other policy reads it
            check_schedule_policy(tuple(map(str, policies)), "lpm", True)
        except ValueError as exc:
            raise where.error("grid.schedule_policy" if "schedule_policy" in grid else "engine.schedule_policy",
                              str(exc).removeprefix("schedule_policy: ")) from None
    configs = []
    for index, values in enumerate(itertools.product(*grid.values())):
        params = dict(zip(grid, values))
        options = {**engine, **params}
        policy = options.pop("policy", "vllm-v0")
        try:
            # the policy's own rules too (vLLM V1 refuses a token budget below max_num_seqs, ...)
            make_policy(policy).configure(EngineConfig(**options))
            if policy == "sglang":  # lpm without a prefix cache is fcfs
                check_schedule_policy((policy,), options.get("schedule_policy"), options.get("enable_prefix_caching"))
        except (ValueError, TypeError) as exc:
            message = " ".join(str(exc).split())
            # the key the message starts with; else one it names
            culprit = next((k for k in params if message.startswith(f"{k}:")), None) or \
                next((k for k in params if f" {k} " in f" {message} "), None)
            key = f"grid.{culprit}" if culprit else next((f"engine.{k}" for k in engine if message.startswith(f"{k}:")),
                                                         "grid")
            shown = " ".join(f"{k}={v}" for k, v in params.items())
            raise where.error(key, f"configuration {shown}: {message}") from None
        configs.append(SweepConfig(index=index, params=params, policy=policy, engine=options))
    return configs
