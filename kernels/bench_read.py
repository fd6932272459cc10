"""`python -m kernels.bench_read`: how fast a decode launch's structure reads the paged cache, against the decode.

For the benchmark's bandwidth-bound decode rows (bf16 cache, and its e4m3 copy with per-tensor scales, as
`kernels.bench`), CUDA-graph replay medians (L2 flushed by a read) over `--rounds` interleaved rounds of:
the decode at its automatic launch (`decode_*`); `kernels.paged_read` at that same split count and configuration
(`read_*_same`: the reads alone, so where the decode is slower it waits on its math, and where it is as fast it
waits on the reads); and `paged_read` of the fp8 cache at other structures (`READ_CONFIGS`, at the fp8 decode's
split count). Every time is also given over the bf16 decode's (the fp8 goal's ratio). Writes read_ceiling.csv
and prints a markdown table; docs/kernels.md ("What was tried" 51) reads it.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from kernels.bench_common import (
    HEAD_DIM, NUM_Q_HEADS, fp8_copy, gpu_identity, interleaved_times, make_decode_case, median, run_main,
    start_gpu_run,
)
from kernels.decode_config import DecodeConfig

READ_ROWS = ((16, 16384, 8), (256, 2048, 8), (32, 2048, 32), (8, 4096, 8))  # (num_seqs, context, num_kv_heads)
READ_CONFIGS = (DecodeConfig(16, 1, 5), DecodeConfig(32, 1, 5), DecodeConfig(32, 2, 5), DecodeConfig(64, 4, 5),
                DecodeConfig(128, 4, 5))
COLUMNS = ("num_seqs", "context", "kv_heads", "method", "kv_dtype", "block_n", "num_warps", "num_stages", "splits",
           "us", "over_bf16_decode", "us_rounds")


def _label(config: DecodeConfig) -> str:
    return f"{config.block_n}x{config.num_warps}x{config.num_stages}"


def row_runners(num_seqs: int, context: int, num_kv_heads: int, gen) -> list[tuple[dict, object]]:
    """(description, runner) of every method timed on one row."""
    import torch

    from kernels.decode import paged_decode
    from kernels.decode_config import choose_launch
    from kernels.paged_read import paged_read

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    case = make_decode_case(num_seqs, context, num_kv_heads, gen)
    k8, k_scale, v8, v_scale = fp8_copy(case)
    group = NUM_Q_HEADS // num_kv_heads
    out = []
    for kv_dtype, k, v in (("bf16", case.k_cache, case.v_cache), ("fp8", k8, v8)):
        splits, config = choose_launch(num_seqs, num_kv_heads, context, HEAD_DIM, k.element_size(), sms, group)
        scales = dict(k_scale=k_scale, v_scale=v_scale) if kv_dtype == "fp8" else {}
        decode = (lambda k=k, v=v, scales=scales:
                  paged_decode(case.q, k, v, case.block_tables, case.seq_lens, **scales))
        out.append((dict(method=f"decode_{kv_dtype}", kv_dtype=kv_dtype, config=config, splits=splits), decode))
        reads = [(f"read_{kv_dtype}_same", config)]
        if kv_dtype == "fp8":  # other structures; the decode's own is `read_fp8_same`
            reads += [(f"read_fp8_{_label(c)}", c) for c in READ_CONFIGS if c != config]
        for method, read_config in reads:
            read = (lambda k=k, v=v, splits=splits, read_config=read_config:
                    paged_read(k, v, case.block_tables, case.seq_lens, num_splits=splits, config=read_config))
            out.append((dict(method=method, kv_dtype=kv_dtype, config=read_config, splits=splits), read))
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    gen = start_gpu_run(args, "bench_read")
    props = torch.cuda.get_device_properties(0)
    card = f"{props.name} ({gpu_identity(str(getattr(props, 'uuid', '')))})"
    records = []
    for num_seqs, context, num_kv_heads in READ_ROWS:
        described = row_runners(num_seqs, context, num_kv_heads, gen)
        timed = interleaved_times([runner for _, runner in described], args.rounds)
        graph = {desc["method"]: median(rounds) for (desc, _), (rounds, _, _) in zip(described, timed)}
        for (desc, _), (rounds, _, _) in zip(described, timed):
            config, us = desc["config"], graph[desc["method"]]
            records.append(dict(
                num_seqs=num_seqs, context=context, kv_heads=num_kv_heads, method=desc["method"],
                kv_dtype=desc["kv_dtype"], block_n=config.block_n, num_warps=config.num_warps,
                num_stages=config.num_stages, splits=desc["splits"], us=round(us, 2),
                over_bf16_decode=round(us / graph["decode_bf16"], 3), us_rounds=";".join(f"{t:.1f}" for t in rounds)))
        torch.cuda.empty_cache()
    with open(args.out / "read_ceiling.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(records)
    print(f"Card: {card}; graph us (read flush), median of {args.rounds} rounds; "
          "(x) = over the bf16 decode's time\n")
    print("| seqs x len (kv heads) | method | tile x warps x stages | splits | us |")
    print("|---|---|---|---|---|")
    for r in records:
        tile = f"{r['block_n']}x{r['num_warps']}x{r['num_stages']}"
        print(f"| {r['num_seqs']} x {r['context']} ({r['kv_heads']}) | {r['method']} | {tile} | {r['splits']} | "
              f"{r['us']} ({r['over_bf16_decode']}) |")
    return 0


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="directory for read_ceiling.csv")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random K/V and block tables")
    parser.add_argument("--rounds", type=int, default=3,
                        help="every method timed once per round, in turn; the table gives the medians")


def main(argv: list[str] | None = None) -> int:
    return run_main("kernels.bench_read", __doc__, _add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
