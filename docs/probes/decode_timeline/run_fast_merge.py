"""On a GPU, from the repository root: PYTHONPATH=$PWD python3 docs/probes/decode_timeline/run_fast_merge.py [rounds]

The product's decode against the same kernel with the ticket-first split end (`fast_merge.py`) on the benchmark's
split rows, bf16 and fp8 caches: graph us over interleaved rounds, and each output against the product's."""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fast_merge import FastMergeDecode  # noqa: E402
from stamped import decode_plan  # noqa: E402

from kernels.bench_common import fp8_copy, make_decode_case, median, time_graph_us  # noqa: E402
from kernels.decode import paged_decode  # noqa: E402

ROWS = ((16, 16384, 8), (32, 2048, 1), (1, 32768, 8), (8, 4096, 8), (1, 1024, 8))


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    gen = torch.Generator(device="cuda").manual_seed(0)
    for num_seqs, context, heads in ROWS:
        case = make_decode_case(num_seqs, context, heads, gen)
        k8, k_scale, v8, v_scale = fp8_copy(case)
        print(f"\n== {num_seqs} x {context} ({heads} KV heads); graph us, {rounds} rounds")
        for label, k, v, scales in (("bf16", case.k_cache, case.v_cache, {}),
                                    ("fp8", k8, v8, dict(k_scale=k_scale, v_scale=v_scale))):
            args = (case.q, k, v, case.block_tables, case.seq_lens)
            p = decode_plan(case.q, k, case.block_tables)
            fast = FastMergeDecode(p, case.q.device)
            runners = {"product": lambda args=args, scales=scales: paged_decode(*args, **scales),
                       "ticket-first": lambda args=args, scales=scales, fast=fast: fast(*args, **scales)}
            diff = (runners["ticket-first"]().float() - runners["product"]().float()).abs().max().item()
            times = {name: [] for name in runners}
            for _ in range(rounds):
                for name, fn in runners.items():
                    times[name].append(time_graph_us(fn))
            prod, new = median(times["product"]), median(times["ticket-first"])
            rounds_text = " / ".join(" ".join(f"{t:.1f}" for t in times[name]) for name in runners)
            print(f"  {label} ({p.num_splits} splits, MERGE_S {p.meta['MERGE_S']}): product {prod:.1f}, ticket-first "
                  f"{new:.1f} ({new / prod:.3f}), max |diff| {diff:.1e}; rounds {rounds_text}")
        del case, k8, v8
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
