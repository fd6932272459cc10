"""Benchmark (a script, not a test): a 64-configuration capacity search on the Azure code trace under the
`local` and the `ray` executor in one run, and the replays the bisection needed against a full grid.

    python -m analysis.sweep_bench --num-requests 2000 --jobs 2 --out out/sweep-bench

Grid: 4 policies x 4 `max_num_seqs` x 4 KV pool sizes (`num_gpu_blocks`), Llama-3-8B on H100-SXM, SLOs
TTFT <= 2 s and TPOT <= 100 ms for 90% of requests, rate scales 0.1..4 in steps of 0.05. Both executors get
the same `--jobs` (processes, or the CPUs of a local Ray instance whose start-up counts against Ray). Then a
few configurations run as fixed loads over the full grid, to check the bisection lands on the grid's capacity.
Figures go to docs/sweep.md.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

GRID = """\
[grid]
policy = ["vllm-v0", "sarathi", "orca-max", "static"]
max_num_seqs = [16, 64, 128, 256]
num_gpu_blocks = [1500, 3000, 6000, 12000]
"""
SLO = """\
[slo]
ttft_ms = 2000
tpot_ms = 100
attainment = 0.9
"""
SEARCH = (0.1, 4.0, 0.05)


def spec_text(trace: Path, num_requests: int, loads: str | None = None, grid: str = GRID) -> str:
    low, high, precision = SEARCH
    head = f'seed = 0\n[trace]\npath = "{trace.resolve()}"\nnum_requests = {num_requests}\n'
    head += '[engine]\nmodel = "llama-3-8b"\ngpu = "h100-sxm"\n'
    tail = loads or f"[search]\nlow = {low}\nhigh = {high}\nprecision = {precision}\n"
    return head + grid + SLO + tail + '[report]\ncost = "kv_gib"\n'


def main() -> None:
    from analysis.sweep import run_sweep
    from analysis.sweep_search import Bisection, grid_scales
    from analysis.sweep_spec import Search, load_spec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=Path("data/AzureLLMInferenceTrace_code.csv"))
    parser.add_argument("--num-requests", type=int, default=2000, help="the trace's first N requests")
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

    walls: dict[str, list[float]] = {"local": [], "ray": []}
    outcomes = {}
    print(f"load average before: {os.getloadavg()}")
    # Alternate the order (local ray, ray local, ...) so a change in the machine's other load hits both alike.
    order = [e for r in range(args.repeats) for e in (("local", "ray") if r % 2 == 0 else ("ray", "local"))]
    for executor in order:
        out = args.out / executor
        if out.exists():
            import shutil

            shutil.rmtree(out)
        started = time.perf_counter()
        outcomes[executor] = run_sweep(spec, out, executor=executor, jobs=args.jobs, progress=False)
        walls[executor].append(time.perf_counter() - started)
        print(f"{executor}: {walls[executor][-1]:.1f} s wall, {outcomes[executor].replays_run} replays, "
              f"load average {os.getloadavg()}", flush=True)
    names = ["spec.json", "summary.csv", "probes.csv", "report.md", "report.html", "plots/pareto.png",
             *(f"configs/{i:04d}.json" for i in range(64))]
    identical = all((args.out / "local" / n).read_bytes() == (args.out / "ray" / n).read_bytes() for n in names)
    summary = outcomes["local"].summary
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
            import shutil

            shutil.rmtree(out)
        full = run_sweep(load_spec(path), out, jobs=args.jobs, progress=False).summary.iloc[0]
        agree.append((int(row["config"]), float(row["capacity_scale"]), float(full["capacity_scale"]),
                      int(row["replays"]), int(full["replays"])))

    local_s, ray_s = sum(walls["local"]), sum(walls["ray"])
    overhead = ray_s / local_s - 1
    lines = [
        "| executor | wall per run (s) | total (s) | replays per run |", "|---|---:|---:|---:|",
        *(f"| {e} | {', '.join(f'{w:.1f}' for w in walls[e])} | {sum(walls[e]):.1f} | {outcomes[e].replays_run} |"
          for e in walls),
        "", f"Ray overhead: {100 * overhead:+.1f}% of total wall (Ray's start-up included); outputs byte-identical: "
            f"{'yes' if identical else 'NO'}",
        f"bisection: {replays} replays for 64 configurations (max {Bisection.max_replays(search)} per configuration, "
        f"mean {replays / 64:.2f}); full grid of the same precision: {64 * full_grid} ({full_grid} per configuration), "
        f"{64 * full_grid / replays:.1f}x more",
        *(f"config #{c}: bisection capacity scale {b:g} in {rb} replays; full grid {f:g} in {rf} replays"
          for c, b, f, rb, rf in agree),
    ]
    text = "\n".join(lines)
    print(text)
    (args.out / "result.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
