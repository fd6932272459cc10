"""`pagedlab bench kernels --sweep` / `python -m kernels.bench_sweep`: time the kernels' launch configurations.

A config list plus a pruning function, as Triton's autotune takes them (`configs`, `prune_configs_by`):
configs whose pipelined K/V tiles would not fit in shared memory are dropped before timing, and each
remaining one is passed to the kernel wrapper explicitly (`config=`). This is how
`default_decode_config`, `choose_num_splits` and `default_prefill_config` were picked. Results go to
decode_sweep.csv and prefill_sweep.csv.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import sys
from pathlib import Path

from kernels.bench_common import (
    DECODE_GRID, HEAD_DIM, NUM_Q_HEADS, PREFILL_GRID, copy_bandwidth_gbs, make_decode_case, run_main, start_gpu_run,
    time_us,
)

SMEM_LIMIT = 227 * 1024  # bytes of shared memory per program on Hopper
DECODE_TILES = [(bn, w, s) for bn, w, s in itertools.product((32, 64, 128), (4, 8), (2, 3, 5))]
SPLITS = (1, 2, 4, 8, 16, 32, 64)
PREFILL_TILES = [(128, 64, 8, 3), (128, 64, 4, 3), (128, 64, 8, 2), (128, 64, 8, 5), (128, 128, 8, 3), (128, 128, 8, 5),
                 (128, 32, 8, 3), (64, 64, 4, 3), (64, 128, 4, 3), (64, 32, 4, 2)]


def prune_decode_configs(configs: list, head_dim: int, elem_size: int) -> list:
    """Drop decode configs whose K and V tile buffers exceed shared memory."""
    from kernels._common import next_pow2
    from kernels.decode_config import kv_buffers

    return [c for c in configs if kv_buffers(c.num_stages) * 2 * c.block_n * next_pow2(head_dim) * elem_size <= SMEM_LIMIT]


def prune_prefill_configs(configs: list, head_dim: int, elem_size: int) -> list:
    """Drop prefill configs whose q tile plus K/V tile buffers exceed shared memory."""
    from kernels._common import next_pow2
    from kernels.decode_config import kv_buffers

    d = next_pow2(head_dim) * elem_size
    return [c for c in configs if c.block_m * d + kv_buffers(c.num_stages) * 2 * c.block_n * d <= SMEM_LIMIT]


def sweep_decode(out: Path, copy_gbs: float, gen) -> None:
    import torch

    from kernels.decode import paged_decode
    from kernels.decode_config import DecodeConfig, choose_num_splits

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    tiles = prune_decode_configs([DecodeConfig(*c) for c in DECODE_TILES], HEAD_DIM, 2)
    rows = []
    for num_seqs, context, kv_heads in DECODE_GRID:
        case = make_decode_case(num_seqs, context, kv_heads, gen)
        args = (case.q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
        nbytes = case.kv_bytes() + 2 * case.q.numel() * 2
        auto = choose_num_splits(num_seqs, kv_heads, context, sms)
        # tile configs at the automatic split count; split counts with the default tiles (None)
        variants = [(cfg, auto) for cfg in tiles] + [(None, s) for s in SPLITS if s * 64 <= context]
        best = None
        for cfg, splits in variants:
            try:
                us, _ = time_us(lambda: paged_decode(*args, num_splits=splits, config=cfg))
            except Exception as exc:  # noqa: BLE001 - e.g. out of resources: record and go on
                print(f"sweep {num_seqs}x{context} kv{kv_heads} {cfg} s{splits}: {type(exc).__name__}", flush=True)
                continue
            pct = 100 * nbytes / us / 1e3 / copy_gbs
            name = "default" if cfg is None else f"{cfg.block_n}x{cfg.num_warps}x{cfg.num_stages}"
            rows.append(dict(num_seqs=num_seqs, context=context, kv_heads=kv_heads, config=name, splits=splits,
                             auto_splits=auto, us=round(us, 2), pct_copy=round(pct, 1)))
            if best is None or us < best[0]:
                best = (us, name, splits, pct)
        if best is not None:
            print(f"sweep {num_seqs}x{context} kv{kv_heads}: best {best[1]} splits {best[2]} {best[0]:.1f} us "
                  f"{best[3]:.1f}% copy (auto splits {auto})", flush=True)
        del case
        torch.cuda.empty_cache()
    _write(out / "decode_sweep.csv", rows)


def sweep_prefill(out: Path, gen) -> None:
    import torch

    from kernels.prefill import PrefillConfig, paged_prefill

    tiles = prune_prefill_configs([PrefillConfig(*c) for c in PREFILL_TILES], HEAD_DIM, 2)
    rows = []
    for num_seqs, chunk, context in PREFILL_GRID:
        case = make_decode_case(num_seqs, context, 8, gen)
        q = torch.randn((num_seqs * chunk, NUM_Q_HEADS, HEAD_DIM), generator=gen, device="cuda", dtype=torch.bfloat16)
        qsl = torch.arange(0, num_seqs + 1, device="cuda", dtype=torch.int32) * chunk
        flops = 4 * HEAD_DIM * NUM_Q_HEADS * num_seqs * sum(context - chunk + i + 1 for i in range(chunk))
        for cfg in tiles:
            try:
                us, _ = time_us(lambda: paged_prefill(q, case.k_cache, case.v_cache, case.block_tables,
                                                      case.seq_lens, qsl, max_query_len=chunk, config=cfg))
            except Exception as exc:  # noqa: BLE001
                print(f"prefill sweep {cfg}: {type(exc).__name__}", flush=True)
                continue
            name = f"{cfg.block_m}x{cfg.block_n}x{cfg.num_warps}x{cfg.num_stages}"
            rows.append(dict(num_seqs=num_seqs, chunk=chunk, context=context, config=name, us=round(us, 2),
                             tflops=round(flops / us / 1e6, 1)))
            print(f"prefill sweep {num_seqs}x{chunk}/{context} {name}: {us:.1f} us {flops / us / 1e6:.1f} TFLOP/s",
                  flush=True)
        del case
    _write(out / "prefill_sweep.csv", rows)


def _write(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run(args: argparse.Namespace) -> int:
    gen = start_gpu_run(args, "bench kernels --sweep")
    sweep_decode(args.out, copy_bandwidth_gbs(), gen)
    sweep_prefill(args.out, gen)
    return 0


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    return run_main("kernels.bench_sweep", __doc__, _add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
