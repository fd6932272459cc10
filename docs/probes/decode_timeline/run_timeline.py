"""On a GPU, from the repository root: PYTHONPATH=$PWD python3 docs/probes/decode_timeline/run_timeline.py

For the bandwidth-bound decode rows, bf16 and fp8 caches: the product's and the stamped kernel's graph times (the
stamps' cost), the timeline of one launch after an L2 flush, then the SM clock (from the stamps) under the
benchmark's timers (graph then eager, as `kernels.bench` interleaves them) and after idle / busy stretches, and the
floors of reading half the bytes (torch sum and copy of 512 MiB against 1 GiB)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamped import STAMP_FIELDS, decode_plan, programs, stamped_decode, timeline  # noqa: E402

from kernels.bench_common import (  # noqa: E402
    fp8_copy, flush_l2, make_decode_case, median, time_eager_us, time_graph_us,
)
from kernels.decode import paged_decode  # noqa: E402

ROWS = ((16, 16384, 8), (256, 2048, 8), (32, 2048, 32))


def clock_of(ts: torch.Tensor) -> str:
    ts = ts.cpu()
    mhz = ts[:, 4].double() / (ts[:, 3] - ts[:, 1]).double() * 1e3
    return f"{mhz.median().item():.0f} MHz"


def floors() -> None:
    full = torch.ones(256 * 1024 * 1024, dtype=torch.float32, device="cuda")  # 1 GiB
    dst = torch.empty_like(full)
    half, dst_half = full[: full.numel() // 2], dst[: full.numel() // 2]
    runners = {"sum 1 GiB": full.sum, "sum 512 MiB": half.sum, "copy 1 GiB": lambda: dst.copy_(full),
               "copy 512 MiB": lambda: dst_half.copy_(half)}
    times = {name: [] for name in runners}
    for _ in range(3):
        for name, fn in runners.items():
            times[name].append(time_graph_us(fn))
    us = {name: median(t) for name, t in times.items()}
    print("\nfloors, graph us: " + ", ".join(f"{name} {t:.1f}" for name, t in us.items()))
    sum_ratio, copy_ratio = us["sum 512 MiB"] / us["sum 1 GiB"], us["copy 512 MiB"] / us["copy 1 GiB"]
    print(f"  half / full: sum {sum_ratio:.4f}, copy {copy_ratio:.4f}")


def main() -> None:
    smi = ["nvidia-smi", "--query-gpu=name,serial,clocks.max.sm,power.limit", "--format=csv,noheader"]
    print(subprocess.run(smi, capture_output=True, text=True).stdout.strip())
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    gen = torch.Generator(device="cuda").manual_seed(0)
    for num_seqs, context, heads in ROWS:
        case = make_decode_case(num_seqs, context, heads, gen)
        k8, k_scale, v8, v_scale = fp8_copy(case)
        caches = {"bf16": (case.k_cache, case.v_cache, {}), "fp8": (k8, v8, dict(k_scale=k_scale, v_scale=v_scale))}
        print(f"\n== {num_seqs} x {context} ({heads} KV heads)")
        stamped = {}
        for label, (k, v, scales) in caches.items():
            p = decode_plan(case.q, k, case.block_tables)
            ts = torch.zeros((programs(p), STAMP_FIELDS), dtype=torch.int64, device="cuda")
            args = (case.q, k, v, case.block_tables, case.seq_lens)
            product = lambda args=args, scales=scales: paged_decode(*args, **scales)  # noqa: E731
            run = lambda args=args, scales=scales, ts=ts: stamped_decode(*args, ts, **scales)  # noqa: E731
            diff = (run().float() - product().float()).abs().max().item()
            times = [(time_graph_us(product), time_graph_us(run)) for _ in range(3)]
            flush_l2()
            run()
            torch.cuda.synchronize()
            launch = f"{p.meta['BLOCK_N']}x{p.meta['num_warps']}x{p.meta['num_stages']}, {p.num_splits} splits"
            print(f" {label} ({launch}): graph us product / stamped "
                  f"{median([t[0] for t in times]):.1f} / {median([t[1] for t in times]):.1f}, max |diff| {diff:.1e}")
            print("  " + timeline(ts, sms).replace("\n", "\n  "))
            stamped[label] = (run, ts)
        print(" SM clock under the benchmark's timers (graph then eager, each cache in turn, 3 rounds):")
        for r in range(3):
            for label, (run, ts) in stamped.items():
                graph = time_graph_us(run)
                graph_clock = clock_of(ts)
                eager = time_eager_us(run)
                print(f"  round {r} {label}: graph {graph:.1f} us at {graph_clock}, "
                      f"eager {eager:.1f} us at {clock_of(ts)}")
        print(" one call after 1 s idle / after 1.5 s of back-to-back calls:")
        for label, (run, ts) in stamped.items():
            torch.cuda.synchronize()
            time.sleep(1.0)
            flush_l2()
            run()
            torch.cuda.synchronize()
            idle = f"span {(ts[:, 3].max() - ts[:, 1].min()).item() / 1e3:.1f} us at {clock_of(ts)}"
            stop = time.time() + 1.5
            while time.time() < stop:
                for _ in range(100):
                    run()
                torch.cuda.synchronize()
            flush_l2()
            run()
            torch.cuda.synchronize()
            print(f"  {label}: idle {idle}; busy span {(ts[:, 3].max() - ts[:, 1].min()).item() / 1e3:.1f} us "
                  f"at {clock_of(ts)}")
        del case, k8, v8, stamped
        torch.cuda.empty_cache()
    floors()


if __name__ == "__main__":
    main()
