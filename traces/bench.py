"""Benchmark: time `traces.load` on large native and Azure CSV traces written to a temp dir.

    .venv/bin/python -m traces.bench                # 1,000,000 rows, best of 3
    .venv/bin/python -m traces.bench --rows 100000 --repeat 1

Prints a markdown table (the figures in docs/traces.md come from it): native and Azure CSV, and a Mooncake
JSONL file of the same requests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from traces.generator import generate
from traces.loader import load
from traces.trace import Trace


def write_azure_csv(path: Path, trace: Trace) -> None:
    """The trace's arrivals and lengths in the Azure 2023 layout (seven fractional digits)."""
    start = np.datetime64("2023-11-16T18:17:03.979960000", "ns")
    stamps = start + np.rint(trace.column("arrival_s") * 1e9).astype("timedelta64[ns]")
    text = pd.Series(stamps).dt.strftime("%Y-%m-%d %H:%M:%S.%f") + "0"  # %f gives 6 digits; Azure has 7
    pd.DataFrame({"TIMESTAMP": text, "ContextTokens": trace.column("prompt_tokens"),
                  "GeneratedTokens": trace.column("output_tokens")}).to_csv(path, index=False, lineterminator="\n")


def write_mooncake_jsonl(path: Path, trace: Trace) -> None:
    """The trace in the Mooncake layout: ms timestamps, one fresh hash id per 512-token block."""
    next_id = 0
    with open(path, "w", encoding="utf-8") as out:
        for ms, prompt, output in zip(np.rint(trace.column("arrival_s") * 1e3).astype(np.int64).tolist(),
                                      trace.column("prompt_tokens").tolist(), trace.column("output_tokens").tolist()):
            blocks = -(-prompt // 512)
            out.write(json.dumps({"timestamp": ms, "input_length": prompt, "output_length": output,
                                  "hash_ids": list(range(next_id, next_id + blocks))}) + "\n")
            next_id += blocks


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m traces.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    trace = generate(args.rows, rate=10.0, lengths="sharegpt", seed=0, parallel_fraction=0.1,
                     beam_fraction=0.05, num_prefix_groups=8, prefix_tokens=64, prefix_fraction=0.5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        native, azure, mooncake = Path(tmp, "native.csv"), Path(tmp, "azure.csv"), Path(tmp, "mooncake.jsonl")
        write_s, _ = best_of(1, lambda: trace.to_csv(native))
        write_azure_csv(azure, trace)
        write_mooncake_jsonl(mooncake, trace)
        for label, path in (("native CSV (all 10 fields)", native), ("Azure CSV (7-digit timestamps)", azure),
                            ("Mooncake JSONL (with hash ids)", mooncake)):
            load_s, loaded = best_of(args.repeat, lambda: load(path))
            assert isinstance(loaded, Trace) and len(loaded) == args.rows
            build_s, _ = best_of(1, lambda: loaded.requests)
            size_mb = os.path.getsize(path) / 1e6
            rows.append((label, size_mb, load_s, build_s))

    print(f"rows: {args.rows:,}; best of {args.repeat}; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}")
    print(f"native to_csv: {write_s:.2f} s\n")
    print("| file | size (MB) | `load` (s) | then `.requests` (s) |")
    print("|---|---:|---:|---:|")
    for label, size_mb, load_s, build_s in rows:
        print(f"| {label} | {size_mb:.1f} | {load_s:.2f} | {build_s:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
