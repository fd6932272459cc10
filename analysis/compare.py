"""Run every policy at every load on one trace, then write the comparison report.

Runs are independent replays of the same trace (rescaled per load) with the same seed, so policies see
identical requests. With `jobs > 1` they run in worker processes, or as Ray tasks with `executor="ray"`
(see `analysis.executors`). Everything lands in `out_dir` atomically (see `analysis.atomic`).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from analysis.atomic import atomic_directory, write_manifest
from analysis.capacity import capacity_by_policy, check_attainment_target
from analysis.metrics import DEFAULT_PERCENTILES
from analysis.report import write_report
from analysis.report_context import ReportContext
from analysis.runs import RunData, run_metrics
from analysis.slo import DEFAULT_ATTAINMENT, SLO
from sim.schema import V0_DEPARTURES


@dataclass(frozen=True)
class LoadPoint:
    """One load of a sweep: `load` as the user gave it, the trace's resulting mean `rate` (req/s), and the
    factor `scale` applied to the base trace's arrival rate."""

    load: float
    rate: float
    scale: float

    @property
    def label(self) -> str:
        return f"{self.load:g}"


def trace_rate(trace: Any) -> float:
    """Mean arrival rate of a trace: (requests - 1) / (last arrival - first arrival); infinite when every
    request arrives at once. Rate scales need no finite rate (a scaled trace still arrives at once);
    absolute rates do (`load_points` refuses them)."""
    return (len(trace) - 1) / trace.duration_s if trace.duration_s > 0 else math.inf


def _positive(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{what}: give at least one value")
    bad = [v for v in out if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"{what}: every value must be a positive number, got {bad[0]:g}")
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: values repeat")
    return sorted(out)


def load_points(base_rate: float, *, rates: Sequence[float] | None = None,
                rate_scales: Sequence[float] | None = None, source: str = "trace") -> list[LoadPoint]:
    """Loads from target rates (req/s) or from factors on `base_rate`, the base trace's rate (`trace_rate`
    of the trace read from `source`, named in the error when it has no finite rate to rescale to `rates`)."""
    assert (rates is None) != (rate_scales is None), "exactly one of rates, rate_scales"
    if rates is not None:
        if not math.isfinite(base_rate):
            raise ValueError(f"{source}: arrival_s: every request arrives at the same time, so the trace has no "
                             f"rate to rescale to target rates (req/s); give rate scales instead")
        return [LoadPoint(load=r, rate=r, scale=r / base_rate) for r in _positive(rates, "rates")]
    return [LoadPoint(load=s, rate=s * base_rate, scale=s) for s in _positive(rate_scales or [], "rate-scales")]


@dataclass
class CompareSpec:
    """What to compare and how. `engine` holds extra `EngineConfig` fields (block_size, num_gpu_blocks...)."""

    policies: tuple[str, ...]
    model: str = "llama-3-8b"
    gpu: str = "h100-sxm"
    seed: int = 0
    engine: dict[str, Any] = field(default_factory=dict)
    slo: SLO = field(default_factory=SLO)
    slo_note: str = "given"
    target: float = DEFAULT_ATTAINMENT
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    jobs: int = 1
    executor: str = "local"  # or "ray" (analysis.executors)
    ray_address: str | None = None

    def __post_init__(self) -> None:
        from analysis.executors import check_executor
        from sim import POLICIES

        if not self.policies:
            raise ValueError("policies: give at least one policy")
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown:
            raise ValueError(f"policies: unknown policy {unknown[0]!r}; valid names: {', '.join(POLICIES)}")
        if len(set(self.policies)) != len(self.policies):
            raise ValueError("policies: a policy is listed twice")
        check_executor(self.executor, self.jobs, self.ray_address)
        check_attainment_target(self.target)
        config = self.engine_config()  # unknown model/GPU or a bad field fails here, before any replay
        from sim.policies import make_policy

        for policy in self.policies:  # and so does a setting an engine refuses (e.g. vLLM V1's limits)
            make_policy(policy).configure(config)

    def engine_config(self):  # -> sim.EngineConfig
        from sim import EngineConfig

        return EngineConfig(model=self.model, gpu=self.gpu, **self.engine)


@dataclass(frozen=True)
class Job:
    policy: str
    point: LoadPoint
    trace: Any  # the base trace; the worker rescales it
    spec: CompareSpec
    run_dir: Path


def run_job(job: Job) -> dict[str, Any]:
    """Replay one (policy, load), write its tables to `job.run_dir`, return its metrics row."""
    from sim import replay

    trace = job.trace.scale_rate(job.point.scale) if job.point.scale != 1.0 else job.trace
    result = replay(trace, job.spec.engine_config(), policy=job.policy, seed=job.spec.seed, progress=False)
    result.write(job.run_dir)
    return {"policy": job.policy, "load": job.point.load, "rate": job.point.rate, "rate_scale": job.point.scale,
            **result_metrics(result, job.spec.slo, job.spec.percentiles)}


def result_metrics(result: Any, slo: SLO, percentiles: Sequence[float]) -> dict[str, Any]:
    """The metrics row of one replay (a `sim.SimResult`): serving and memory metrics, prefix-cache hits,
    the execute backend's verdict. `compare` and `sweep` both take their rows from here."""
    row = run_metrics(RunData.from_result(result), slo, percentiles)
    if result.summary.get("prefix_caching"):
        row.update(prefix_hit_rate=result.summary["prefix_hit_rate"],
                   prefix_hit_tokens=result.summary["prefix_hit_tokens"])
    for departure in V0_DEPARTURES:  # where vLLM V0 would have stopped (aborted, waited forever)
        if result.summary.get(departure):
            row[departure] = result.summary[departure]
    if "verify_checked" in result.summary:  # execute backend with --verify: the shadow check's verdict
        row.update(verify_checked=result.summary["verify_checked"],
                   verify_mismatches=result.summary["verify_mismatches"])
    return row


def _run_shared_trace_job(trace: Any, job: Job) -> tuple[str, float, dict[str, Any]]:
    # The executor ships the trace once per worker (or once to Ray's object store), not with every job.
    return job.policy, job.point.load, run_job(replace(job, trace=trace))


def run_jobs(jobs: list[Job], workers: int, progress: bool, executor: str = "local",
             ray_address: str | None = None) -> list[dict[str, Any]]:
    """Rows in job order, run by `executor` (see analysis.executors) with `workers` parallel replays; a
    progress bar on stderr unless `progress` is False. Every job replays the same trace."""
    from tqdm import tqdm

    from analysis.executors import make_executor

    assert jobs and all(job.trace is jobs[0].trace for job in jobs), "one trace per comparison"
    rows: list[dict[str, Any] | None] = [None] * len(jobs)
    with tqdm(total=len(jobs), desc="compare", unit="run", disable=not progress, file=sys.stderr) as bar, \
            make_executor(executor, _run_shared_trace_job, jobs[0].trace, jobs=min(workers, len(jobs)),
                          address=ray_address) as pool:
        for i, job in enumerate(jobs):
            pool.submit(i, replace(job, trace=None))
        while pool.pending:
            i, (policy, load, row) = pool.next_result()
            rows[i] = row
            bar.set_postfix_str(f"{policy} @ {load:g}")
            bar.update()
    assert all(row is not None for row in rows)
    return rows  # type: ignore[return-value]


@dataclass
class CompareOutcome:
    table: pd.DataFrame
    capacity: pd.DataFrame
    out_dir: Path
    wall_s: float


def compare(trace: Any, points: list[LoadPoint], spec: CompareSpec, out_dir: str | Path, *, command: str,
            trace_description: str, load_label: str, progress: bool = True) -> CompareOutcome:
    """Replay `trace` under every policy at every load point and write the report to `out_dir`."""
    started = time.perf_counter()
    final = Path(out_dir)
    with atomic_directory(final) as tmp:
        jobs = [Job(policy, point, trace, spec, tmp / "runs" / f"{policy}-{point.label}")
                for policy in spec.policies for point in points]
        table = pd.DataFrame(run_jobs(jobs, spec.jobs, progress, spec.executor, spec.ray_address))
        runs = {(job.policy, job.point.load): RunData.from_dir(job.run_dir) for job in jobs}
        capacity = capacity_by_policy(table, target=spec.target, load_column="rate")
        ctx = ReportContext(
            command=command, trace_description=trace_description, model=spec.model, gpu=spec.gpu, seed=spec.seed,
            policies=spec.policies, loads=[p.load for p in points], load_label=load_label, slo=spec.slo,
            slo_note=spec.slo_note, target=spec.target, timeline_load=max(p.load for p in points),
            notes=[f"trace: {n}" for n in getattr(trace, "notices", [])],
        )
        write_report(tmp, table, capacity, runs, ctx)
        wall_s = time.perf_counter() - started
        write_manifest(tmp, {"command": command, "seed": spec.seed, "policies": list(spec.policies),
                             "loads": [p.load for p in points], "wall_s": round(wall_s, 3)})
    return CompareOutcome(table=table, capacity=capacity, out_dir=final.resolve(), wall_s=wall_s)
