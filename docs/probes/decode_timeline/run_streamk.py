"""On a GPU, from the repository root: PYTHONPATH=$PWD python3 docs/probes/decode_timeline/run_streamk.py [rounds]

The stream-K one-warp decode against the product's decode, graph us over interleaved rounds, each output against
the product's; then one stamped launch of each stream-K grid on 16 x 16384 (fp8)."""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stamped import timeline  # noqa: E402
from streamk import StreamK  # noqa: E402

from kernels.bench_common import flush_l2, fp8_copy, make_decode_case, median, time_graph_us  # noqa: E402
from kernels.decode import paged_decode  # noqa: E402

ROWS = ((16, 16384, 8), (32, 2048, 32), (256, 2048, 8), (64, 1024, 8), (8, 4096, 8))
FP8_VARIANTS = ((8, 32, 5), (7, 32, 5), (8, 16, 5), (16, 32, 5))  # (programs an SM, tile, stages), one warp
BF16_VARIANTS = ((8, 32, 3), (4, 32, 3))


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    gen = torch.Generator(device="cuda").manual_seed(0)
    for num_seqs, context, heads in ROWS:
        case = make_decode_case(num_seqs, context, heads, gen)
        k8, k_scale, v8, v_scale = fp8_copy(case)
        args = (case.q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
        args8 = (case.q, k8, v8, case.block_tables, case.seq_lens)
        scales = dict(k_scale=k_scale, v_scale=v_scale)
        runners = {"bf16 product": lambda: paged_decode(*args), "fp8 product": lambda: paged_decode(*args8, **scales)}
        grids = {}
        for fp8, variants in ((True, FP8_VARIANTS), (False, BF16_VARIANTS)):
            for per_sm, block_n, stages in variants:
                sk = StreamK(num_seqs, 32, heads, 128, 16, context, per_sm * sms, block_n, 1, stages, fp8,
                             case.q.device)
                name = f"{'fp8' if fp8 else 'bf16'} stream-K {per_sm}/SM {block_n}x1x{stages}"
                runners[name] = (lambda sk=sk: sk(*args8, **scales)) if fp8 else (lambda sk=sk: sk(*args))
                grids[name] = sk
        ref16, ref8 = runners["bf16 product"]().float(), runners["fp8 product"]().float()
        diffs = {name: (fn().float() - (ref8 if name.startswith("fp8") else ref16)).abs().max().item()
                 for name, fn in runners.items()}
        times = {name: [] for name in runners}
        for _ in range(rounds):
            for name, fn in runners.items():
                times[name].append(time_graph_us(fn))
        bf16, fp8 = median(times["bf16 product"]), median(times["fp8 product"])
        print(f"\n== {num_seqs} x {context} ({heads} KV heads); graph us, {rounds} rounds")
        for name, t in times.items():
            us = median(t)
            print(f"  {name:28s} {us:7.1f}  /bf16 {us / bf16:.3f}  /fp8 product {us / fp8:.3f}  "
                  f"max|diff| {diffs[name]:.1e}  rounds {' '.join(f'{x:.1f}' for x in t)}")
        if (num_seqs, context) == (16, 16384):
            for name in ("fp8 stream-K 8/SM 32x1x5", "fp8 stream-K 7/SM 32x1x5"):
                sk = grids[name]
                ts = torch.zeros((sk.programs, 5), dtype=torch.int64, device="cuda")
                flush_l2()
                sk(*args8, **scales, ts=ts)
                torch.cuda.synchronize()
                print(f"  {name}: " + timeline(ts, sms).replace("\n", "\n  "))
        del case, k8, v8, runners, grids
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
