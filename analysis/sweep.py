"""`run_sweep`: every configuration of a spec, each a capacity search or fixed loads, on an executor.

Each probe is an independent replay `sim.replay(trace.scale_rate(s), config, policy, seed)`, its metrics
row from `analysis.compare.result_metrics` (the one definition `compare` uses). A configuration's capacity
search is one task that runs its probes one after another (`analysis.sweep_task.run_config`); fixed loads are
one task per load. The driver keeps twice the executor's parallelism of tasks in flight, in configuration
order, and replays each finished configuration's attainments through its own walk (`finish_walk`), so
configurations are saved as they finish, an interrupted sweep loses little, and where a task ran changes
nothing in the results.

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
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.atomic import write_text_atomic
from analysis.compare import load_points
from analysis.sweep_report import write_sweep_outputs
from analysis.sweep_search import Bisection, FixedLoads, LoadWalk
from analysis.sweep_spec import SweepConfig, SweepSpec
from analysis.sweep_task import ConfigTask, run_config
from sim.result import check_makeable

SWEEP_KIND = "pagedlab-sweep"
SPEC_FILE = "spec.json"
CONFIG_DIR = "configs"


def config_costs(config: SweepConfig) -> dict[str, float]:
    """What one replica of the configuration costs: GPUs, their memory, the KV cache over all of them. The
    KV cache is the pool the replay uses: a policy may size its own (`sglang` as SGLang does, `vllm` as
    V1 does), so it is the engine settings after the policy's `configure`, as `sim.replay` takes them."""
    from sim.policies import make_policy
    from sim.presets import GIB

    engine = make_policy(config.policy).configure(config.engine_config())
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
            raise OSError(f"{out}: out: exists and is not a pagedlab sweep; give an empty or new --out") from None
        if not resume:
            raise ValueError(f"{out}: out: already holds a sweep; add --resume to finish it, or give a new --out")
        if old != fingerprint:
            raise ValueError(f"resume: {out} holds a sweep of another spec or trace "
                             f"({_differing_key(old, fingerprint)} differs); give a new --out")
    else:
        check_makeable(out)  # one line naming --out, not the system's `file:` form
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


def _walk(spec: SweepSpec, base_rate: float, source: str) -> LoadWalk:
    if spec.search is not None:
        return Bisection(spec.search, spec.target)
    kind, values = spec.loads  # type: ignore[misc]
    points = load_points(base_rate, **{kind: values}, source=source)
    return FixedLoads([p.scale for p in points], spec.target)


def config_tasks(spec: SweepSpec, config: SweepConfig, walk: LoadWalk) -> list[ConfigTask]:
    """A capacity search is one task that walks the whole bisection (its probes are sequential anyway);
    fixed loads are independent, one task per scale."""
    common = {"index": config.index, "policy": config.policy, "engine": config.engine, "seed": spec.seed,
              "slo": spec.slo, "target": spec.target}
    if spec.search is not None:
        return [ConfigTask(**common, search=spec.search)]
    return [ConfigTask(**common, scales=(scale,)) for scale in walk.scales]


def finish_walk(walk: LoadWalk, attainment: dict[float, float]) -> LoadWalk:
    """Feed the attainments the tasks measured through the driver's own walk, in the walk's order: the
    driver takes every decision as if it had run the probes itself (and checks the tasks ran no other)."""
    while not walk.done:
        ready = walk.take_ready()
        missing = [s for s in ready if s not in attainment]
        assert ready and not missing, f"the tasks did not probe the scales {missing}"
        for scale in ready:
            walk.record(scale, attainment[scale])
    assert set(walk.attainment) == set(attainment), "the tasks probed scales the walk never asked for"
    return walk


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
    replay_s: float = 0.0  # the replays' own time, summed over probes
    executor_s: dict[str, float] = field(default_factory=dict)  # the executor's start-up and shut-down


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
    _walk(spec, base_rate, trace.source)  # loads the trace cannot reach are refused before any output
    done = prepare_out_dir(out, fingerprint, resume)
    todo = [c for c in spec.configs if c.index not in done]
    replays = 0
    sim_s = 0.0
    timings: dict[str, float] = {}
    if todo:
        bar_c = tqdm(total=len(spec.configs), initial=len(done), desc="configs", unit="cfg", position=0,
                     disable=not progress, file=sys.stderr)
        bar_p = tqdm(desc="probes", unit="replay", position=1, disable=not progress, file=sys.stderr)
        try:
            walks = {c.index: _walk(spec, base_rate, trace.source) for c in todo}
            queue = deque((c.index, task) for c in todo for task in config_tasks(spec, c, walks[c.index]))
            # No more local processes than first replays: `--jobs 64` for 6 configurations started 64.
            workers = min(jobs, len(queue)) if executor == "local" else jobs
            with make_executor(executor, run_config, trace, jobs=max(workers, 1), address=ray_address) as pool:
                timings = pool.timings
                tasks_left = Counter(index for index, _ in queue)
                results: dict[int, dict[float, dict[str, Any]]] = {c.index: {} for c in todo}

                def submit() -> None:  # a small window in flight: configurations finish (and are saved) in order
                    while queue and pool.pending < 2 * pool.parallelism:
                        pool.submit(*queue.popleft())

                submit()
                while pool.pending:
                    index, probed = pool.next_result()
                    replays += len(probed)
                    sim_s += sum(r["sim_wall_s"] for r in probed.values())
                    bar_p.update(len(probed))
                    results[index].update(probed)
                    tasks_left[index] -= 1
                    if not tasks_left[index]:
                        config, rows = spec.configs[index], results.pop(index)
                        walk = finish_walk(walks.pop(index), {s: r["metrics"]["slo_attainment"] for s, r in rows.items()})
                        record = config_record(spec, config, walk, {s: r["metrics"] for s, r in rows.items()}, base_rate)
                        write_text_atomic(config_path(out, index), _json(record))
                        done[index] = json.loads(_json(record))  # as read back on resume: NaN as null
                        bar_c.set_postfix_str(config.name[:60])
                        bar_c.update()
                    submit()
                assert not walks and not queue, "every configuration finished"
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
        "replay_s": round(sim_s, 3), "executor_s": {k: round(v, 3) for k, v in timings.items()},
        "wall_s": round(wall_s, 3), "files": [*files, "manifest.json"]}))
    return SweepOutcome(summary=summary, probes=probes, out_dir=out, configs_run=len(todo),
                        configs_skipped=len(spec.configs) - len(todo), replays_run=replays, wall_s=wall_s,
                        replay_s=sim_s, executor_s=dict(timings))
