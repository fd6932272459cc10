"""`run_sweep`: every configuration of a spec, each a capacity search or fixed loads, on an executor.

Each probe is an independent replay `sim.replay(trace.scale_rate(s), config, policy, seed)`, its metrics
row from `analysis.compare.result_metrics` (the one definition `compare` uses). The driver keeps a small window
of configurations active (twice the executor's parallelism) and submits each one's next probes as results
arrive, so configurations finish (and are saved) steadily and an interrupted sweep loses little.

The output directory:
    spec.json           what the results depend on (spec and trace fingerprint); written first, checked by resume
    configs/NNNN.json   one per configuration, written atomically when its search ends; --resume skips these
    summary.csv, probes.csv, report.md, report.html, plots/pareto.png   written at the end
    manifest.json       last: executor and wall times, the one file that differs between executors
Everything but the manifest is a function of the spec and the trace alone, byte for byte.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.atomic import write_text_atomic
from analysis.compare import load_points, result_metrics
from analysis.metrics import DEFAULT_PERCENTILES
from analysis.slo import SLO
from analysis.sweep_report import write_sweep_outputs
from analysis.sweep_search import Bisection, FixedLoads, LoadWalk
from analysis.sweep_spec import SweepConfig, SweepSpec

SWEEP_KIND = "pagedlab-sweep"
SPEC_FILE = "spec.json"
CONFIG_DIR = "configs"


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
    from sim import EngineConfig, replay

    scaled = trace.scale_rate(probe.scale) if probe.scale != 1.0 else trace
    result = replay(scaled, EngineConfig(**probe.engine), policy=probe.policy, seed=probe.seed, progress=False)
    metrics = result_metrics(result, probe.slo, probe.percentiles)
    return {"sim_wall_s": metrics.pop("sim_wall_s"), "metrics": metrics}


def config_costs(config: SweepConfig) -> dict[str, float]:
    """What one replica of the configuration costs: GPUs, their memory, the KV cache over all of them."""
    from sim.presets import GIB

    engine = config.engine_config()
    tp = engine.model_spec.tp
    return {"num_gpus": tp, "gpu_memory_gib": engine.gpu_spec.memory_gib * tp,
            "kv_gib": round(engine.kv_blocks * engine.block_bytes * tp / GIB, 6)}


def trace_fingerprint(trace: Any) -> str:
    return hashlib.sha256(trace.to_pandas().to_csv(index=False).encode()).hexdigest()


def _json(data: Any) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(data), indent=1, allow_nan=False) + "\n"


def _differing_key(old: Any, new: Any, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                return _differing_key(old.get(key), new.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "spec"


def prepare_out_dir(out: Path, fingerprint: dict[str, Any], resume: bool) -> dict[int, dict[str, Any]]:
    """Create `out` for a new sweep, or check it holds this very sweep (with --resume); the finished configs."""
    spec_file = out / SPEC_FILE
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        try:
            old = json.loads(spec_file.read_text())
            assert old.get("kind") == SWEEP_KIND
        except (OSError, ValueError, AssertionError, AttributeError):
            raise OSError(f"out: {out} exists and is not a pagedlab sweep; give an empty or new --out") from None
        if not resume:
            raise ValueError(f"out: {out} already holds a sweep; add --resume to finish it, or give a new --out")
        if old != fingerprint:
            raise ValueError(f"resume: {out} holds a sweep of another spec or trace "
                             f"({_differing_key(old, fingerprint)} differs); give a new --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(spec_file, _json(fingerprint))
    (out / CONFIG_DIR).mkdir(exist_ok=True)
    done = {}
    for path in sorted((out / CONFIG_DIR).glob("[0-9]*.json")):
        record = json.loads(path.read_text())
        done[int(record["index"])] = record
    return done


def config_path(out: Path, index: int) -> Path:
    return out / CONFIG_DIR / f"{index:04d}.json"


def _walk(spec: SweepSpec, base_rate: float) -> LoadWalk:
    if spec.search is not None:
        return Bisection(spec.search, spec.target)
    kind, values = spec.loads  # type: ignore[misc]
    points = load_points(base_rate, **{kind: values})
    return FixedLoads([p.scale for p in points], spec.target)


def config_record(spec: SweepSpec, config: SweepConfig, walk: LoadWalk, rows: dict[float, dict[str, Any]],
                  base_rate: float) -> dict[str, Any]:
    """A finished configuration: its probes by rising load and the capacity they give."""
    probes = [{"rate_scale": s, "rate": s * base_rate, "meets_slos": walk.passes(s), **rows[s]}
              for s in sorted(rows)]
    capacity = walk.capacity_scale
    return {"index": config.index, "name": config.name, "params": config.params, "policy": config.policy,
            "engine": config.engine, "costs": config_costs(config),
            "mode": "search" if spec.search is not None else "loads",
            "capacity_scale": capacity, "capacity": capacity * base_rate, "rate_per_scale": base_rate,
            "lower_bound": walk.lower_bound, "replays": len(probes), "probes": probes}


@dataclass
class SweepOutcome:
    summary: pd.DataFrame
    probes: pd.DataFrame
    out_dir: Path
    configs_run: int
    configs_skipped: int
    replays_run: int
    wall_s: float


def run_sweep(spec: SweepSpec, out_dir: str | Path, *, executor: str = "local", jobs: int = 1,
              ray_address: str | None = None, resume: bool = False, progress: bool = True,
              command: str = "") -> SweepOutcome:
    """Run every configuration of `spec` not yet finished in `out_dir`, then write the tables and report."""
    from tqdm import tqdm

    from analysis.executors import check_executor, make_executor

    started = time.perf_counter()
    check_executor(executor, jobs, ray_address)
    trace, base_rate, description = spec.load_trace()
    out = Path(out_dir).resolve()
    fingerprint = {"kind": SWEEP_KIND, "spec": spec.canonical(), "trace_sha256": trace_fingerprint(trace),
                   "num_requests": len(trace), "configurations": len(spec.configs)}
    done = prepare_out_dir(out, fingerprint, resume)
    todo = [c for c in spec.configs if c.index not in done]
    replays = 0
    sim_s = 0.0
    if todo:
        bar_c = tqdm(total=len(spec.configs), initial=len(done), desc="configs", unit="cfg", position=0,
                     disable=not progress, file=sys.stderr)
        bar_p = tqdm(desc="probes", unit="replay", position=1, disable=not progress, file=sys.stderr)
        try:
            with make_executor(executor, run_probe, trace, jobs=jobs, address=ray_address) as pool:
                walks: dict[int, LoadWalk] = {}
                rows: dict[int, dict[float, dict[str, Any]]] = {}
                waiting = list(reversed(todo))

                def submit_ready(config: SweepConfig) -> None:
                    for scale in walks[config.index].take_ready():
                        pool.submit((config.index, scale), Probe(config.index, config.policy, config.engine,
                                                                 spec.seed, scale, spec.slo))

                def activate() -> None:
                    while waiting and len(walks) < 2 * pool.parallelism:
                        config = waiting.pop()
                        walks[config.index], rows[config.index] = _walk(spec, base_rate), {}
                        submit_ready(config)

                activate()
                while pool.pending:
                    (index, scale), result = pool.next_result()
                    replays += 1
                    sim_s += result["sim_wall_s"]
                    walk = walks[index]
                    walk.record(scale, result["metrics"]["slo_attainment"])
                    rows[index][scale] = result["metrics"]
                    bar_p.update()
                    config = spec.configs[index]
                    if walk.done:
                        record = config_record(spec, config, walk, rows.pop(index), base_rate)
                        write_text_atomic(config_path(out, index), _json(record))
                        done[index] = json.loads(_json(record))  # as read back on resume: NaN as null
                        del walks[index]
                        bar_c.set_postfix_str(config.name[:60])
                        bar_c.update()
                        activate()
                    else:
                        submit_ready(config)
                assert not walks and not waiting, "every configuration finished"
        finally:
            bar_p.close()
            bar_c.close()
    records = [done[c.index] for c in spec.configs]
    summary, probes = write_sweep_outputs(out, spec, records, description, base_rate)
    wall_s = time.perf_counter() - started
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    write_text_atomic(out / "manifest.json", _json({
        "kind": SWEEP_KIND, "command": command, "executor": executor, "ray_address": ray_address, "jobs": jobs,
        "configs_run": len(todo), "configs_skipped": len(spec.configs) - len(todo), "replays_run": replays,
        "replay_s": round(sim_s, 3), "wall_s": round(wall_s, 3), "files": [*files, "manifest.json"]}))
    return SweepOutcome(summary=summary, probes=probes, out_dir=out, configs_run=len(todo),
                        configs_skipped=len(spec.configs) - len(todo), replays_run=replays, wall_s=wall_s)
