"""`pagedlab sweep SPEC.toml --out DIR`: a grid of engine configurations, each with its capacity under SLOs.

    pagedlab sweep spec.toml --out out/sweep                      # local processes, one per CPU
    pagedlab sweep spec.toml --out out/sweep --executor ray       # Ray tasks on a local Ray instance
    pagedlab sweep spec.toml --out out/sweep --executor ray --ray-address HEAD_IP:6379   # on a Ray cluster
    pagedlab sweep spec.toml --out out/sweep --resume             # finish an interrupted sweep

The spec format is in `analysis.sweep_spec` and docs/sweep.md. Heavy imports happen inside `run`.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from analysis.executors import add_executor_arguments, default_jobs
from sim.console import warn


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="a grid of engine configurations on one trace: capacity under SLOs, Pareto plot, report",
        description="Replay a trace under every configuration of a TOML spec's grid, at fixed loads or searching "
                    "each one's capacity (the highest rate scale meeting the SLOs) by bisection; write each "
                    "configuration's record as it finishes, then summary.csv, probes.csv, a Pareto plot and a "
                    "report to --out.",
    )
    p.add_argument("spec", metavar="SPEC.toml", help="the sweep spec (see docs/sweep.md)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (new, empty, or with --resume)")
    p.add_argument("--jobs", type=int, default=default_jobs(), metavar="N",
                   help="parallel replays: local processes, or the CPUs of a local Ray instance "
                        "(default: the CPUs here; a Ray cluster uses all of its CPUs)")
    add_executor_arguments(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out: skip configurations already finished there")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.sweep import run_sweep
    from analysis.sweep_report import capacity_text
    from analysis.sweep_spec_load import load_spec

    spec = load_spec(args.spec)
    for warning in spec.warnings:
        warn(warning)
    command = shlex.join(["pagedlab", "sweep", args.spec, "--out", args.out, "--executor", args.executor,
                          "--jobs", str(args.jobs)] + (["--ray-address", args.ray_address] if args.ray_address else [])
                         + (["--resume"] if args.resume else []))
    outcome = run_sweep(spec, args.out, executor=args.executor, jobs=args.jobs, ray_address=args.ray_address,
                        resume=args.resume, progress=not args.quiet, command=command)
    summary = outcome.summary.sort_values("capacity", ascending=False, na_position="last")
    width = max(len(" ".join(f"{k}={row[k]}" for k in spec.grid)) for _, row in summary.iterrows())
    for _, row in summary.iterrows():
        name = " ".join(f"{k}={row[k]}" for k in spec.grid)
        print(f"#{row['config']:<4} {name:<{width}}  capacity {capacity_text(row):>9} "
              f"req/s  {spec.cost} {row[spec.cost]:g}  replays {row['replays']}{'  pareto' if row['pareto'] else ''}")
    skipped = f", {outcome.configs_skipped} already done" if outcome.configs_skipped else ""
    print(f"report: {Path(outcome.out_dir) / 'report.html'} (and report.md, summary.csv, probes.csv, plots/, configs/); "
          f"{outcome.configs_run} configurations{skipped}, {outcome.replays_run} replays in {outcome.wall_s:.1f} s",
          file=sys.stdout)
    return 0
