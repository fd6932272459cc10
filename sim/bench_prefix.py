"""Cost of prefix caching in the simulator: `python -m sim.bench_prefix [--repeat N] [--cases ...]`.

Each figure is the WHOLE `python -m sim replay ... --out DIR` command in a subprocess (interpreter start,
imports, trace loading, replay, writing): wall seconds, CPU seconds (user + system, from `wait4`: the
machine may be shared, CPU time is what the command itself used) and peak resident memory (ru_maxrss).
Runs of one case alternate between its variants, so that load changes hit them alike.

- azure: the Azure LLM inference code trace (data/) under `vllm-v0` and under `vllm` (V1; prefix caching
  on by default).
- conversation: `--requests` (100,000) generated requests with conversation-like lengths (lognormal,
  mean prompt 161 and output 200 tokens, as `sim.bench`), 64 shared-prefix groups of 256 tokens (half the
  requests: system prompts), under `vllm`.
- mooncake: a Mooncake-style conversation trace written as Mooncake JSONL (`hash_ids`: one id per
  512-token block; a turn's prompt is the previous turn's prompt and answer plus a new message, so
  turns share their history's full hash blocks), replayed on qwen2.5-7b (32k context) under `vllm` with
  and without prefix caching. Mooncake's own trace files are not available offline.
Prints one markdown row per variant: best and median wall, CPU, peak memory, and the replay's summary.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sim.console import machine_line
from sim.schema import SUMMARY_JSON

REPO = Path(__file__).resolve().parents[1]
AZURE = REPO / "data" / "AzureLLMInferenceTrace_code.csv"
HASH_BLOCK = 512


def run_command(args: list[str], out: Path) -> tuple[float, float, float, dict]:
    """Wall s, CPU s (user + system) and peak RSS MiB of one replay command, and its summary."""
    cmd = [sys.executable, "-m", "sim", "replay", *args, "--quiet", "--out", str(out)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"bench_prefix: {' '.join(cmd)} failed with exit {proc.returncode}")
    summary = json.loads((out / SUMMARY_JSON).read_text())
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, summary


def bench_case(name: str, variants: dict[str, list[str]], repeat: int, root: Path) -> dict[str, dict]:
    """Alternate the variants `repeat` times; print a row per variant; return their figures."""
    runs: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    summaries: dict[str, dict] = {}
    for i in range(repeat):
        for variant, args in variants.items():
            wall, cpu, rss, summaries[variant] = run_command(args, root / f"{name}-{variant}-{i}")
            runs[variant].append((wall, cpu, rss))
    figures = {}
    for variant, rows in runs.items():
        walls, cpus, rsss = zip(*rows)
        s = summaries[variant]
        figures[variant] = dict(wall=min(walls), wall_median=statistics.median(walls), cpu=min(cpus),
                                rss=max(rsss))
        print(f"| {name} | {variant} | {s['num_requests']:,} | {min(walls):.2f} | {statistics.median(walls):.2f} | "
              f"{min(cpus):.2f} | {max(rsss):.0f} | {s['num_steps']:,} | {s.get('prefix_hit_rate', 0.0):.1%} | "
              f"{s.get('preemptions', 0):,} |", flush=True)
    return figures


def mooncake_conversations(num_requests: int, seed: int, rate: float) -> list[dict]:
    """Multi-turn conversations as Mooncake rows: turn k+1's prompt is turn k's prompt and answer plus a
    new message; hash ids name 512-token blocks, so the turns share their history's full blocks (a
    partial last block is new content in the next turn). Lengths near Mooncake's conversation trace
    (long prompts, a few hundred output tokens), capped to a 32k context."""
    rng = np.random.default_rng(seed)
    rows, next_id, t = [], 0, 0.0
    while len(rows) < num_requests:
        turns = int(rng.integers(1, 9))
        history, ids = 0, []
        start = t
        for _ in range(turns):
            message = int(rng.lognormal(np.log(2500), 0.8)) + 1
            prompt = history + message
            output = int(rng.lognormal(np.log(300), 0.6)) + 1
            if prompt + output > 32000 or len(rows) >= num_requests:
                break
            full = history // HASH_BLOCK  # the history's full hash blocks are shared
            ids = ids[:full]
            while len(ids) * HASH_BLOCK < prompt:
                ids.append(next_id)
                next_id += 1
            rows.append({"timestamp": int(start * 1000), "input_length": prompt, "output_length": output,
                         "hash_ids": list(ids)})
            start += float(rng.exponential(30.0))  # the user reads and answers
            history = prompt + output
        t += float(rng.exponential(1.0 / rate))
    rows.sort(key=lambda r: r["timestamp"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.bench_prefix", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (default 3)")
    parser.add_argument("--cases", nargs="+", default=["azure", "conversation", "mooncake"],
                        choices=["azure", "conversation", "mooncake"])
    parser.add_argument("--requests", type=int, default=100_000, help="conversation requests (default 100000)")
    parser.add_argument("--mooncake-requests", type=int, default=3_000, help="Mooncake-style requests")
    args = parser.parse_args(argv)
    print(machine_line("sim.bench_prefix"))
    print("| case | variant | requests | best wall s | median wall s | best CPU s | peak RSS MiB | steps | "
          "prefix hit rate | preemptions |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-prefix-") as tmp:
        root = Path(tmp)
        if "azure" in args.cases:
            trace = ["--trace", str(AZURE)]
            f = bench_case("azure", {"vllm-v0": [*trace, "--policy", "vllm-v0"],
                                     "vllm": [*trace, "--policy", "vllm"]}, args.repeat, root)
            print(f"vllm / vllm-v0: wall {f['vllm']['wall'] / f['vllm-v0']['wall']:.2f}x, "
                  f"CPU {f['vllm']['cpu'] / f['vllm-v0']['cpu']:.2f}x")
        if "conversation" in args.cases:
            from traces import generate

            path = root / "conversation.csv"
            generate(args.requests, rate=20.0, seed=0, lengths="lognormal", input_len=161, output_len=200,
                     sigma=1.0, num_prefix_groups=64, prefix_tokens=256, prefix_fraction=0.5).to_csv(path)
            bench_case("conversation", {"vllm": ["--trace", str(path), "--policy", "vllm"]}, args.repeat, root)
        if "mooncake" in args.cases:
            path = root / "mooncake_conversation.jsonl"
            rows = mooncake_conversations(args.mooncake_requests, seed=0, rate=0.5)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            base = ["--trace", str(path), "--format", "mooncake", "--policy", "vllm", "--model", "qwen2.5-7b"]
            f = bench_case("mooncake", {"caching off": [*base, "--no-enable-prefix-caching"], "caching on": base},
                           args.repeat, root)
            on, off = f["caching on"], f["caching off"]
            print(f"caching on / off: wall {on['wall'] / off['wall']:.2f}x, CPU {on['cpu'] / off['cpu']:.2f}x, "
                  f"peak RSS {on['rss'] / off['rss']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
