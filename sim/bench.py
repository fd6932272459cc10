"""Simulator speed: `python -m sim.bench [--repeat N] [--requests N]`.

1. The full Azure LLM inference trace (code, 8,819 requests) replayed with `vllm-v0` on Llama-3-8B/H100:
   wall time of the WHOLE command (`python -m sim replay ... --out DIR` in a subprocess: interpreter
   start, imports, trace loading, replay, writing the five files).
2. 100,000 generated requests with conversation-like lengths, the same whole command on a trace file:
   lognormal lengths with mean prompt 161 and mean output 200 tokens, and the ShareGPT preset
   (mean output 338 tokens), at a rate that keeps the engine busy.
Prints one markdown row per case: wall seconds (best and median of N runs), requests and generated
tokens per wall second. Figures go to docs/sim.md with the date and machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sim.config import DEFAULT_POLICY
from sim.console import machine_line
from sim.schema import SUMMARY_JSON

REPO = Path(__file__).resolve().parents[1]
AZURE = REPO / "data" / "AzureLLMInferenceTrace_code.csv"


def time_command(trace: Path, policy: str, repeat: int, out_root: Path) -> tuple[list[float], dict]:
    """Wall seconds of each run of the whole `replay` command, and the last run's summary."""
    walls, summary = [], {}
    for i in range(repeat):
        out = out_root / f"{trace.stem}-{policy}-{i}"
        cmd = [sys.executable, "-m", "sim", "replay", "--trace", str(trace), "--policy", policy, "--quiet",
               "--out", str(out)]
        started = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO)
        walls.append(time.perf_counter() - started)
        summary = json.loads((out / SUMMARY_JSON).read_text())
    return walls, summary


def row(name: str, walls: list[float], summary: dict) -> str:
    best, median = min(walls), statistics.median(walls)
    requests, tokens = summary["num_requests"], summary["total_generated_tokens"]
    return (f"| {name} | {requests:,} | {tokens:,} | {best:.2f} | {median:.2f} | {requests / best:,.0f} | "
            f"{tokens / best:,.0f} | {summary['num_steps']:,} | {summary['wall_s']:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--requests", type=int, default=100_000, help="generated requests (default 100000)")
    parser.add_argument("--rate", type=float, default=20.0, help="arrival rate of the generated traces")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help=f"policy replayed (default {DEFAULT_POLICY})")
    parser.add_argument("--skip-generated", action="store_true", help="only the Azure trace")
    parser.add_argument("--azure", type=Path, default=AZURE, help=f"the Azure code trace (default {AZURE})")
    args = parser.parse_args(argv)

    print(machine_line("sim.bench"))
    print("| case | requests | generated tokens | best wall s | median wall s | requests/s | tokens/s | "
          "steps | replay() s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="sim-bench-") as tmp:
        root = Path(tmp)
        if args.azure.is_file():
            walls, summary = time_command(args.azure, args.policy, args.repeat, root)
            print(row(f"Azure code trace, {args.policy}, llama-3-8b/h100-sxm", walls, summary), flush=True)
        else:
            print(f"(skipped: {args.azure} not found)")
        if args.skip_generated:
            return 0
        from traces import generate

        cases = [
            ("conversation (mean output 200)", dict(lengths="lognormal", input_len=161, output_len=200, sigma=1.0)),
            ("sharegpt (mean output 338)", dict(lengths="sharegpt")),
        ]
        for name, lengths in cases:
            trace = generate(args.requests, rate=args.rate, seed=0, **lengths)
            path = root / f"{name.split()[0]}.csv"
            trace.to_csv(path)
            walls, summary = time_command(path, args.policy, args.repeat, root)
            print(row(f"{args.requests:,} {name}, {args.rate:g} req/s, {args.policy}", walls, summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
