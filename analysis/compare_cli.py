"""`pagedlab compare`: policies side by side on one trace across load, with a report.

    pagedlab compare                      # built-in default: preset trace, seven policies, six rates
    pagedlab compare --trace data/AzureLLMInferenceTrace_code.csv --rate-scales 1,2,4 --out out/azure

Heavy imports (pandas, matplotlib, the simulator) happen inside `run`, so `pagedlab --help` stays fast.
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path
from typing import Any

from analysis.executors import add_executor_arguments
from analysis.slo import DEFAULT_ATTAINMENT, DEFAULT_SLO
from sim.console import warn
from traces.options import add_arrival_options, add_transform_options, apply_transforms, seed_arg, transform_words

DEFAULT_POLICIES = ("vllm", "sglang", "vllm-v0", "vllm-swap", "sarathi", "orca-max", "static")
DEFAULT_OUT = "out/compare"
DEFAULT_MODEL, DEFAULT_GPU = "llama-3-8b", "h100-sxm"  # for a --trace file
DEFAULT_GOODPUT = DEFAULT_SLO.goodput_args()  # when --goodput is not given


def _entries(text: str) -> list[str]:
    """The comma-separated entries of a list option; an empty one (`1,,2`, `a,`) is a typo, not nothing."""
    entries = [x.strip() for x in text.split(",")]
    if "" in entries:
        raise argparse.ArgumentTypeError(f"empty entry in the comma-separated list {text!r}")
    return entries


def _float_list(text: str) -> list[float]:
    """Comma-separated positive numbers (rates or rate scales)."""
    entries = _entries(text)
    try:
        values = [float(x) for x in entries]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers, got {text!r}") from None
    bad = next((v for v in values if not (math.isfinite(v) and v > 0)), None)
    if bad is not None:
        raise argparse.ArgumentTypeError(f"every value must be a positive number, got {bad:g}")
    return values


def _name_list(text: str) -> list[str]:
    return _entries(text)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="compare scheduler policies on a trace across load, with a report",
        description="Replay a trace under several policies at several loads; write summary.csv, each run's "
                    "tables, report.md, a self-contained report.html and PNG plots to --out.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--trace", metavar="PATH", help="a trace file (see `pagedlab trace stats`)")
    source.add_argument("--preset", metavar="NAME", help="a built-in trace (default: 'default')")
    p.add_argument("--format", default="auto", help="trace file format (default: auto)")
    p.add_argument("--num-requests", type=int, metavar="N",
                   help="preset size, or keep only the first N requests of --trace (as --head N)")
    p.add_argument("--policies", type=_name_list, default=list(DEFAULT_POLICIES), metavar="A,B,...",
                   help=f"policies to compare (default: {','.join(DEFAULT_POLICIES)})")
    loads = p.add_mutually_exclusive_group()
    loads.add_argument("--rates", type=_float_list, metavar="R1,R2,...",
                       help="mean request rates (req/s); the trace is rescaled to each")
    loads.add_argument("--rate-scales", type=_float_list, metavar="S1,S2,...",
                       help="factors on the trace's own rate (default for --trace: 1)")
    p.add_argument("--model", help="model preset from sim.MODELS (default: the trace preset's, llama-2-7b for "
                                   f"'default'; {DEFAULT_MODEL} for --trace)")
    p.add_argument("--gpu", help=f"GPU preset from sim.GPUS (default: the trace preset's, a100-40gb for 'default'; "
                                 f"{DEFAULT_GPU} for --trace)")
    p.add_argument("--seed", type=seed_arg, default=0, help="drives trace generation and every replay (default 0)")
    p.add_argument("--block-size", type=int, help="KV block size in tokens (simulator default if unset)")
    p.add_argument("--num-gpu-blocks", type=int, help="override the KV blocks that fit on the GPU")
    p.add_argument("--max-num-seqs", type=int, help="most sequences in one batch (simulator default if unset)")
    p.add_argument("--swap-space-gib", type=float, metavar="GIB",
                   help="CPU swap pool per GPU, for vllm-v0's forked groups and vllm-swap (default 4, vLLM V0's)")
    p.add_argument("--cost-profile", metavar="NAME|PATH",
                   help="analytic cost-model constants: a name in sim/profiles/ (e.g. h100-sxm, h200: measured by "
                        "`pagedlab calibrate`) or a JSON file (default: the simulator's 'default')")
    p.add_argument("--kv-cache-dtype", metavar="auto|fp8",
                   help="KV cache element type, as vLLM's: auto = the model's dtype (default), fp8 = e4m3 "
                        "(1 byte: the KV pool doubles for a bf16 model, decode attention reads half the bytes)")
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None,
                   help="automatic prefix caching in the block manager (paged policies; keys from prefix groups "
                        "or Mooncake hash_ids; default: each policy's engine default, on under vllm and sglang)")
    p.add_argument("--schedule-policy", default=None, choices=("fcfs", "lpm"),
                   help="sglang's waiting-queue order (default fcfs, as SGLang's)")
    p.add_argument("--backend", choices=("analytic", "execute"), default="analytic",
                   help="step times from the analytic model (default) or from real kernels on a GPU (execute; "
                        "one replay at a time)")
    p.add_argument("--device", choices=("cuda", "cpu"),
                   help="execute backend: where the kernels run (default: cuda if present)")
    p.add_argument("--verify", action="store_true",
                   help="execute backend: shadow-check attention outputs against each sequence's history")
    p.add_argument("--goodput", nargs="+", metavar="NAME:MS",
                   help=f"SLOs as vLLM's benchmark takes them: ttft:MS tpot:MS e2el:MS "
                        f"(default: {' '.join(DEFAULT_GOODPUT)})")
    p.add_argument("--slo-attainment", type=float, default=DEFAULT_ATTAINMENT, metavar="F",
                   help=f"share of requests that must meet the SLOs for a load to count (default {DEFAULT_ATTAINMENT})")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="replays run in N parallel processes")
    add_executor_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"report directory (default: {DEFAULT_OUT})")
    add_arrival_options(p, seed=False)
    add_transform_options(p)
    p.set_defaults(func=run)


def canonical_command(args: argparse.Namespace, *, preset: str | None, loads_flag: str, loads: list[float],
                      goodput: list[str]) -> str:
    """The command with every effective option spelled out: rerunning it reproduces the report."""
    words = ["pagedlab", "compare"]
    words += ["--trace", args.trace] if args.trace else ["--preset", preset or ""]
    if args.trace and args.format != "auto":
        words += ["--format", args.format]
    if args.num_requests is not None:
        words += ["--num-requests", str(args.num_requests)]
    words += transform_words(args)
    words += ["--policies", ",".join(args.policies), loads_flag, ",".join(f"{x:g}" for x in loads)]
    words += ["--model", args.model, "--gpu", args.gpu, "--seed", str(args.seed)]
    for flag, value in (("--block-size", args.block_size), ("--num-gpu-blocks", args.num_gpu_blocks),
                        ("--max-num-seqs", args.max_num_seqs), ("--swap-space-gib", args.swap_space_gib),
                        ("--cost-profile", args.cost_profile), ("--kv-cache-dtype", args.kv_cache_dtype)):
        if value is not None:
            words += [flag, str(value)]
    if args.enable_prefix_caching is not None:
        words += ["--enable-prefix-caching" if args.enable_prefix_caching else "--no-enable-prefix-caching"]
    if args.schedule_policy is not None:
        words += ["--schedule-policy", args.schedule_policy]
    if args.backend != "analytic":
        words += ["--backend", args.backend] + (["--device", args.device] if args.device else [])
        words += ["--verify"] if args.verify else []
    words += ["--goodput", *goodput, "--slo-attainment", f"{args.slo_attainment:g}", "--out", args.out]
    return shlex.join(words)


def _check_name(kind: str, name: str, valid: Any) -> None:
    if name not in valid:
        raise ValueError(f"{kind}: unknown {kind} {name!r}; valid names: {', '.join(valid)}")


def run(args: argparse.Namespace) -> int:
    from sim import GPUS, MODELS

    from analysis.capacity import format_capacity
    from analysis.compare import CompareSpec, compare, load_points, trace_rate
    from analysis.presets import DEFAULT_PRESET, generate_preset, get_preset
    from analysis.findings import check_failed_message, rejection_finding
    from analysis.slo import parse_goodput
    from analysis.tables import CONSOLE_COLUMNS, formatted, to_console
    from sim.rejection_notes import context_note

    if args.trace is None:  # a preset names the model and GPU it was made for
        chosen = get_preset(args.preset or DEFAULT_PRESET)
        args.model, args.gpu = args.model or chosen.model, args.gpu or chosen.gpu
    args.model, args.gpu = args.model or DEFAULT_MODEL, args.gpu or DEFAULT_GPU
    _check_name("model", args.model, MODELS)
    _check_name("gpu", args.gpu, GPUS)
    if args.num_requests is not None and args.num_requests < 2:
        raise ValueError(f"num-requests: must be >= 2, got {args.num_requests}")
    goodput = list(args.goodput) if args.goodput else list(DEFAULT_GOODPUT)
    slo = parse_goodput(goodput)
    if args.backend != "execute" and (args.device or args.verify):
        raise ValueError("device/verify: need --backend execute (the analytic backend runs no kernels)")
    if args.backend == "execute" and args.jobs != 1:
        raise ValueError(f"jobs: the execute backend runs one replay at a time on one device; got --jobs {args.jobs}")
    engine = {k: v for k, v in (("block_size", args.block_size), ("num_gpu_blocks", args.num_gpu_blocks),
                                ("max_num_seqs", args.max_num_seqs), ("swap_space_gib", args.swap_space_gib),
                                ("cost_profile", args.cost_profile), ("device", args.device),
                                ("kv_cache_dtype", args.kv_cache_dtype)) if v is not None}
    if args.enable_prefix_caching is not None:
        engine["enable_prefix_caching"] = args.enable_prefix_caching
    if args.schedule_policy is not None:
        from sim.policies.sglang import check_schedule_policy

        check_schedule_policy(tuple(args.policies), args.schedule_policy, args.enable_prefix_caching)
        engine["schedule_policy"] = args.schedule_policy
    if args.backend != "analytic":
        engine.update(backend=args.backend, verify=args.verify)
        from sim.execute.device import resolve_device

        resolve_device(args.device)  # on the CPU: TRITON_INTERPRET=1 before triton is imported
    spec = CompareSpec(policies=tuple(args.policies), model=args.model, gpu=args.gpu, seed=args.seed,
                       engine=engine, slo=slo, slo_note="--goodput" if args.goodput else "default, no --goodput given",
                       target=args.slo_attainment, jobs=args.jobs, executor=args.executor,
                       ray_address=args.ray_address)
    from sim.policies.settings import ignored_warnings

    for warning in ignored_warnings(args.policies, engine):  # after the refusals (the spec checks them)
        warn(warning)
    # The output and the cost profile before any work (reading a large trace included).
    from analysis.atomic import check_output_dir
    from sim.cost import CostProfile

    check_output_dir(Path(args.out))
    if args.cost_profile is not None:
        CostProfile.load(args.cost_profile)

    preset_name = None
    if args.trace:
        from traces.options import load_trace

        if args.num_requests is not None:  # for a trace file, --num-requests N is --head N
            if args.head is not None:
                raise ValueError("num-requests: give --head or --num-requests, not both")
            args.head, args.num_requests = args.num_requests, None
        trace = load_trace(args.trace, args)
        base_rate = trace_rate(trace)
        description = (f"{args.trace}: {len(trace)} requests over {trace.duration_s:.0f} s "
                       f"(mean {base_rate:.3g} req/s as recorded)")
        if args.rates is None and args.rate_scales is None:
            args.rate_scales = [1.0]
    else:
        preset_name = args.preset or DEFAULT_PRESET
        preset = get_preset(preset_name)
        if args.arrivals is not None:
            raise ValueError("arrivals: a preset has its own arrivals; --arrivals is for a --trace with lengths only")
        if args.format != "auto":
            raise ValueError(f"format: {args.format!r} is for a --trace file; a preset is generated, not read")
        trace = apply_transforms(generate_preset(preset_name, seed=args.seed, num_requests=args.num_requests), args)
        base_rate = preset.base_rate * (args.rate_scale or 1.0)
        description = f"preset {preset_name!r}: {preset.description}; {len(trace)} requests, seed {args.seed}"
        if args.rates is None and args.rate_scales is None:
            args.rates = list(preset.rates)
    if args.rates is not None and args.rate_scale is not None:
        raise ValueError("rate-scale: has no effect with --rates (the trace is rescaled to each rate); "
                         "give --rate-scales")
    if args.rates is not None:
        points, flag, label = load_points(base_rate, rates=args.rates, source=trace.source), "--rates", "rate"
    else:
        points, flag, label = load_points(base_rate, rate_scales=args.rate_scales), "--rate-scales", "rate scale"
    command = canonical_command(args, preset=preset_name, loads_flag=flag, loads=[p.load for p in points],
                                goodput=slo.as_args())

    for notice in trace.notices:
        print(f"trace: {notice}")
    context_len = spec.engine_config().context_len
    note = context_note(trace, args.model, context_len)
    if note:
        warn(note)
    too_long = int(((trace.column("prompt_tokens") + trace.column("output_tokens")) > context_len).sum())
    outcome = compare(trace, points, spec, args.out, command=command, trace_description=description,
                      load_label=label, progress=not args.quiet)
    print(to_console(formatted(outcome.table, CONSOLE_COLUMNS)))
    caps = ", ".join(f"{row.policy} {format_capacity(row.capacity, row.all_loads_met, row.first_failing_load)}"
                     for row in outcome.capacity.itertuples())
    print(f"\ncapacity (req/s within {slo.describe()} for >= {100 * spec.target:g}% of requests): {caps}")
    if "verify_mismatches" in outcome.table:
        print(f"verify: {int(outcome.table['verify_checked'].sum())} sequence-steps checked, "
              f"{int(outcome.table['verify_mismatches'].sum())} mismatches")
    rejected = rejection_finding(outcome.table, {})
    # As replay does (a lost request is never a quiet success), unless the context note above said it all.
    if rejected and int(outcome.table["rejected"].max()) > too_long:
        warn(f"{rejected.rstrip('.')}; why: the report's findings, and the reason column of runs/*/requests.csv")
    if "swap_space_exhausted" in outcome.table:  # as replay warns: the real engine would have stopped
        full = outcome.table[outcome.table["swap_space_exhausted"].fillna(0) > 0]
        runs = ", ".join(f"{row.policy} at {row.load:g}" for row in full.itertuples())
        warn(f"{int(full['swap_space_exhausted'].sum())} preemptions found the CPU swap pool full and recomputed "
             f"instead ({runs}); vLLM V0 aborts there: try a larger --swap-space-gib")
    if "swapped_recomputed" in outcome.table:
        stuck = outcome.table[outcome.table["swapped_recomputed"].fillna(0) > 0]
        runs = ", ".join(f"{row.policy} at {row.load:g}" for row in stuck.itertuples())
        warn(f"{int(stuck['swapped_recomputed'].sum())} swapped requests could not come back on an idle engine and "
             f"were recomputed instead ({runs}); vLLM V0 waits for them forever: try a larger --num-gpu-blocks")
    overfull = outcome.table[outcome.table["kv_overfull_steps"] > 0]
    if not overfull.empty:
        warn(check_failed_message(overfull))
    print(f"report: {Path(outcome.out_dir) / 'report.html'} (and report.md, summary.csv, plots/, runs/); "
          f"{len(outcome.table)} runs in {outcome.wall_s:.1f} s", file=sys.stdout)
    return 0
