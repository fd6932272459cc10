"""What a sweep's worker runs: one replay (`run_probe`), or one configuration's whole walk (`run_config`).

A capacity search's probes are sequential (each depends on the previous one's attainment), so a search runs
as one task that walks its bisection to the end: one task, one trace lookup and one result per configuration
instead of one per probe, which is most of an executor's per-task cost (Ray: scheduling, the trace's object
reference resolved, the result sent back). Fixed loads are independent, so they go out one scale a task.
The driver replays the recorded attainments through its own walk (`analysis.sweep.finish_walk`), so where a
probe ran changes nothing in the results.

Imports stay light (no report, no plots): a fresh Ray worker imports this module before its first task.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis.metrics import DEFAULT_PERCENTILES
from analysis.slo import SLO
from analysis.sweep_search import Bisection, FixedLoads, LoadWalk
from analysis.sweep_spec import Search


@dataclass(frozen=True)
class Probe:
    """One replay: a configuration at a rate scale (the trace itself travels separately, once)."""

    index: int
    policy: str
    engine: dict[str, Any]
    seed: int
    scale: float
    slo: SLO
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES


def run_probe(trace: Any, probe: Probe) -> dict[str, Any]:
    """Replay `trace` at `probe.scale` under the probe's configuration; its metrics and the replay's own time."""
    from analysis.compare import result_metrics
    from sim import EngineConfig, replay

    scaled = trace.scale_rate(probe.scale) if probe.scale != 1.0 else trace
    result = replay(scaled, EngineConfig(**probe.engine), policy=probe.policy, seed=probe.seed, progress=False)
    metrics = result_metrics(result, probe.slo, probe.percentiles)
    return {"sim_wall_s": metrics.pop("sim_wall_s"), "metrics": metrics}


@dataclass(frozen=True)
class ConfigTask:
    """One task of a sweep: a configuration's capacity search (`search`), or its fixed loads `scales`."""

    index: int
    policy: str
    engine: dict[str, Any]
    seed: int
    slo: SLO
    target: float
    search: Search | None = None
    scales: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        assert (self.search is None) != (not self.scales), "a task is a search or a list of loads"

    def walk(self) -> LoadWalk:
        return Bisection(self.search, self.target) if self.search is not None else FixedLoads(list(self.scales), self.target)


def run_config(trace: Any, task: ConfigTask) -> dict[float, dict[str, Any]]:
    """Walk the task's loads to the end, one replay after another; every probe's result by rate scale."""
    walk = task.walk()
    results: dict[float, dict[str, Any]] = {}
    while not walk.done:
        for scale in walk.take_ready():
            results[scale] = run_probe(trace, Probe(task.index, task.policy, task.engine, task.seed, scale, task.slo))
            walk.record(scale, results[scale]["metrics"]["slo_attainment"])
    return results
