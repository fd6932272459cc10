"""Benchmark (a script, not a test): a 64-configuration capacity search on the Azure code trace under the
`local` and the `ray` executor in one run, and the replays the bisection needed against a full grid.

    python -m analysis.sweep_bench --num-requests 4000 --jobs 2 --repeats 2 --verify 1 --out out/sweep-bench

Grid: 4 policies x 4 `max_num_seqs` x 4 KV pool sizes (`num_gpu_blocks`), Llama-3-8B on H100-SXM, SLOs
TTFT <= 2 s and TPOT <= 100 ms for 90% of requests, rate scales 0.1..4 in steps of 0.05, the whole trace
(8,819 requests; `--num-requests N` keeps the first N). Both executors get the same `--jobs` (processes, or
the CPUs of a local Ray instance whose start-up and shut-down count against Ray), alternating the order
(local ray, ray local, ...). Every run reports wall time, CPU time (this process and every process it
started: pool workers, Ray's daemons and workers, sampled from /proc) and the executor's start-up and
shut-down steps, with the load average. Then `--verify K` configurations run as fixed loads over the full
grid, to check the bisection lands on the grid's capacity. Figures go to docs/sweep.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from analysis.slo import DEFAULT_ATTAINMENT, DEFAULT_SLO

GRID = """\
[grid]
policy = ["vllm-v0", "sarathi", "orca-max", "static"]
max_num_seqs = [16, 64, 128, 256]
num_gpu_blocks = [1500, 3000, 6000, 12000]
"""
SLO = ("[slo]\n" + "".join(f"{name}_ms = {ms:g}\n" for name, ms in DEFAULT_SLO.items())
       + f"attainment = {DEFAULT_ATTAINMENT}\n")
SEARCH = (0.1, 4.0, 0.05)


def spec_text(trace: Path, num_requests: int, loads: str | None = None, grid: str = GRID) -> str:
    """The spec; `num_requests` 0 keeps the whole trace."""
    low, high, precision = SEARCH
    head = f'seed = 0\n[trace]\npath = "{trace.resolve()}"\n'
    head += f"num_requests = {num_requests}\n" if num_requests else ""
    head += '[engine]\nmodel = "llama-3-8b"\ngpu = "h100-sxm"\n'
    tail = loads or f"[search]\nlow = {low}\nhigh = {high}\nprecision = {precision}\n"
    return head + grid + SLO + tail + '[report]\ncost = "kv_gib"\n'


def _processes() -> dict[int, tuple[int, str, float, str]]:
    """pid -> (parent pid, start time in ticks, CPU seconds, a name) for every process /proc shows."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        found[int(entry.name)] = (int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / tick,
                                  _name(argv))
    return found


def _name(argv: list[str]) -> str:
    """Ray sets its workers' and agents' titles (`ray::IDLE`, `ray::DashboardAgent`); daemons are binaries or
    scripts; anything else this process started is a forked copy of it (a pool worker)."""
    title = " ".join(argv)
    if not title:
        return ""  # a zombie (its command line gone): keeps the name it had
    if title.startswith("ray::"):
        kind = title.split()[0]
        return "ray worker" if kind in ("ray::IDLE", "ray::_ray_task") else kind
    for arg in argv:
        base = os.path.basename(arg)
        if base in ("gcs_server", "raylet") or base.endswith(".py"):
            return base
    return "forked worker"


class TreeCPU:
    """CPU seconds of this process and of every process it starts while running, by name. The descendants are
    sampled from /proc (Ray's workers are the raylet's children and not reaped by this process); a process
    that ends between two samples loses at most `interval` of its CPU time."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._seen: dict[tuple[int, int], tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        procs = _processes()
        children = defaultdict(list)
        for pid, (ppid, *_rest) in procs.items():
            children[ppid].append(pid)
        todo = list(children[os.getpid()])
        while todo:
            pid = todo.pop()
            _, start, cpu, name = procs[pid]
            self._seen[(pid, start)] = (cpu, name or self._seen.get((pid, start), (0.0, "forked worker"))[1])
            todo.extend(children[pid])

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "TreeCPU":
        self._started = time.process_time()
        self._sample()
        self._before = dict(self._seen)  # processes that were there already count only their growth
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.driver_s = time.process_time() - self._started
        self.by_name: dict[str, float] = defaultdict(float)
        for key, (cpu, name) in self._seen.items():
            self.by_name[name] += cpu - self._before.get(key, (0.0, name))[0]
        self.total_s = self.driver_s + sum(self.by_name.values())


def run_once(executor: str, spec: Any, out: Path, jobs: int) -> dict[str, Any]:
    from analysis.sweep import run_sweep

    if out.exists():
        shutil.rmtree(out)
    load_before = os.getloadavg()
    with TreeCPU() as cpu:
        started = time.perf_counter()
        outcome = run_sweep(spec, out, executor=executor, jobs=jobs, progress=False)
        wall = time.perf_counter() - started
    return {"executor": executor, "wall_s": wall, "cpu_s": cpu.total_s, "driver_cpu_s": cpu.driver_s,
            "cpu_by_process": {k: round(v, 2) for k, v in sorted(cpu.by_name.items(), key=lambda kv: -kv[1])},
            "replay_s": outcome.replay_s, "replays": outcome.replays_run, "executor_s": outcome.executor_s,
            "load_before": load_before, "load_after": os.getloadavg(), "outcome": outcome}


def main() -> None:
    from analysis.sweep import run_sweep
    from analysis.sweep_search import Bisection, grid_scales
    from analysis.sweep_spec import Search
    from analysis.sweep_spec_load import load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=Path("data/AzureLLMInferenceTrace_code.csv"))
    parser.add_argument("--num-requests", type=int, default=0, help="the trace's first N requests (0: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs per executor, alternating the order")
    parser.add_argument("--verify", type=int, default=2, metavar="K", help="configurations rerun on the full grid")
    parser.add_argument("--out", type=Path, default=Path("out/sweep-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    spec_path = args.out / "spec.toml"
    spec_path.write_text(spec_text(args.trace, args.num_requests))
    spec = load_spec(spec_path)
    assert len(spec.configs) == 64

    runs: list[dict[str, Any]] = []
    # Alternate the order (local ray, ray local, ...) so a change in the machine's other load hits both alike.
    order = [e for r in range(args.repeats) for e in (("local", "ray") if r % 2 == 0 else ("ray", "local"))]
    for n, executor in enumerate(order):
        run = run_once(executor, spec, args.out / f"{executor}-{n}", args.jobs)
        runs.append(run)
        steps = ", ".join(f"{k} {v:.2f}" for k, v in run["executor_s"].items())
        print(f"run {n + 1} {executor}: {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU "
              f"(driver {run['driver_cpu_s']:.1f}; {json.dumps(run['cpu_by_process'])}), "
              f"replays {run['replays']} taking {run['replay_s']:.1f} s; executor: {steps}; load average "
              f"{'/'.join(f'{x:.2f}' for x in run['load_before'])} before, "
              f"{'/'.join(f'{x:.2f}' for x in run['load_after'])} after", flush=True)
    names = ["spec.json", "summary.csv", "probes.csv", "report.md", "report.html", "plots/pareto.png",
             *(f"configs/{i:04d}.json" for i in range(64))]
    first = args.out / f"{order[0]}-0"
    identical = all((first / name).read_bytes() == (args.out / f"{r['executor']}-{n}" / name).read_bytes()
                    for n, r in enumerate(runs) for name in names)
    summary = runs[0]["outcome"].summary
    search = Search(*SEARCH)
    full_grid = len(grid_scales(search))
    replays = int(summary["replays"].sum())

    # A few configurations over the full grid as fixed loads: the bisection's capacity must be the grid's.
    picked = summary.dropna(subset=["capacity"]).iloc[:: max(len(summary) // max(args.verify, 1), 1)].head(args.verify)
    agree = []
    for _, row in picked.iterrows():
        grid = "[grid]\n" + "".join(f"{k} = [{json.dumps(row[k]) if isinstance(row[k], str) else int(row[k])}]\n"
                                    for k in ("policy", "max_num_seqs", "num_gpu_blocks"))
        scales = ", ".join(f"{s:g}" for s in grid_scales(search))
        path = args.out / f"full-{row['config']}.toml"
        path.write_text(spec_text(args.trace, args.num_requests, f"[loads]\nrate_scales = [{scales}]\n", grid))
        out = args.out / f"full-{row['config']}"
        if out.exists():
            shutil.rmtree(out)
        full = run_sweep(load_spec(path), out, jobs=args.jobs, progress=False).summary.iloc[0]
        agree.append((int(row["config"]), float(row["capacity_scale"]), float(full["capacity_scale"]),
                      int(row["replays"]), int(full["replays"])))

    def total(executor: str, key: str) -> float:
        return sum(r[key] for r in runs if r["executor"] == executor)

    def startup(run: dict[str, Any]) -> float:
        return sum(v for k, v in run["executor_s"].items() if k.startswith("ray_"))

    ray_fixed = sum(startup(r) for r in runs if r["executor"] == "ray")
    lines = [
        "| run | executor | wall (s) | CPU (s) | Ray start-up + shut-down (s) | replay-s per wall-s | load average before / after |",
        "|---:|---|---:|---:|---:|---:|---|",
        *(f"| {n + 1} | {r['executor']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
          f"{f'{startup(r):.1f}' if r['executor'] == 'ray' else '-'} | {r['replay_s'] / r['wall_s']:.2f} | "
          f"{r['load_before'][0]:.2f} / {r['load_after'][0]:.2f} |" for n, r in enumerate(runs)),
        "",
        f"Ray against local, all runs summed: wall {100 * (total('ray', 'wall_s') / total('local', 'wall_s') - 1):+.1f}%, "
        f"CPU {100 * (total('ray', 'cpu_s') / total('local', 'cpu_s') - 1):+.1f}%; without Ray's start-up and "
        f"shut-down ({ray_fixed:.1f} s in all): wall "
        f"{100 * ((total('ray', 'wall_s') - ray_fixed) / total('local', 'wall_s') - 1):+.1f}%. "
        f"Outputs byte-identical across all runs: {'yes' if identical else 'NO'}",
        f"bisection: {replays} replays for 64 configurations (max {Bisection.max_replays(search)} per configuration, "
        f"mean {replays / 64:.2f}); full grid of the same precision: {64 * full_grid} ({full_grid} per configuration), "
        f"{64 * full_grid / replays:.1f}x more",
        *(f"config #{c}: bisection capacity scale {b:g} in {rb} replays; full grid {f:g} in {rf} replays"
          for c, b, f, rb, rf in agree),
    ]
    text = "\n".join(lines)
    print(text)
    (args.out / "result.md").write_text(text + "\n")
    (args.out / "runs.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "outcome"} for r in runs],
                                                   indent=1) + "\n")


if __name__ == "__main__":
    main()
