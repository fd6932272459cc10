"""`pagedlab bench kernels`: registers the kernel benchmark; torch and triton load only when it runs."""
from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from kernels.bench import add_arguments  # stdlib-only at module level

    bench = subparsers.add_parser("bench", help="benchmarks that need a GPU")
    families = bench.add_subparsers(dest="bench_family", metavar="FAMILY")
    parser = families.add_parser(
        "kernels", help="paged decode/prefill kernels vs SDPA, FlashInfer, FlexAttention, two-pass")
    add_arguments(parser)
    parser.add_argument("--sweep", action="store_true",
                        help="afterwards, time the launch configurations (kernels.bench_sweep)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kernels.bench import run as run_bench

    status = run_bench(args)
    if status == 0 and args.sweep:
        from kernels.bench_sweep import run as run_sweep

        status = run_sweep(args)
    return status
