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

`analysis.sweep_spec_load.load_spec` reads and checks one: every mistake is a one-line `ValueError`
`spec.toml:LINE: key: reason` naming the offending key. This module holds what it returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.slo import SLO


# How a spec gives arrival times to a length-only trace file (`--arrivals` of replay and compare).
ARRIVALS_KEY = ('the spec\'s trace.arrivals key, e.g. arrivals = "poisson:RATE" ("gamma:RATE:CV", "constant:RATE") '
                'under [trace]')


@dataclass(frozen=True)
class Search:
    """Bisection over the rate scales low, low + precision, ..., high (see analysis.sweep_search)."""

    low: float
    high: float
    precision: float

    def __post_init__(self) -> None:
        if not (0 < self.low < self.high and self.precision > 0):
            raise ValueError(f"search: needs 0 < low < high and precision > 0, got low {self.low:g}, "
                             f"high {self.high:g}, precision {self.precision:g}")


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

            trace = load(self.path.parent / source["path"], format=source.get("format", "auto"),
                         arrivals=source.get("arrivals"), seed=self.seed, arrivals_hint=ARRIVALS_KEY)
            if "num_requests" in source:
                trace = trace.head(source["num_requests"])
            what = f"{source['path']}"
            if "arrivals" in source:
                from traces.arrivals import ArrivalSpec

                what += f" ({ArrivalSpec.parse(source['arrivals']).describe()}, seed {self.seed})"
        elif "preset" in source:
            trace = generate_preset(source["preset"], seed=self.seed, num_requests=source.get("num_requests"))
            what = f"preset {source['preset']!r} ({get_preset(source['preset']).description}), seed {self.seed}"
        else:
            from traces import generate

            trace = generate(**source["generate"], seed=self.seed)
            what = "generated (" + ", ".join(f"{k}={v}" for k, v in source["generate"].items()) + f"), seed {self.seed}"
        rate = trace_rate(trace)
        return trace, rate, f"{what}: {len(trace)} requests over {trace.duration_s:.0f} s (mean {rate:.3g} req/s)"
