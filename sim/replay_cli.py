"""`pagedlab replay`: replay a trace under one policy and write its tables.

Imports stay light at module level (the dispatcher imports every subcommand module on each start);
numpy/pandas/simpy load inside `run`. No torch on this path.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from sim.console import warn
from traces.options import add_arrival_options, add_transform_options, load_trace, seed_arg

DEFAULT_POLICY = "vllm-v0"  # sim.config.DEFAULT_POLICY, spelled out as the names below are
# The names `sim.policies.POLICIES`, `sim.presets.MODELS`, `GPUS` and `sim.host_time.ENGINES` register, spelled
# out for --help so that building the parser imports none of them (a test keeps them equal).
POLICY_NAMES = ("vllm", "vllm-v0", "vllm-swap", "sarathi", "orca-max", "orca-oracle", "orca-pow2", "static", "sglang")
MODEL_NAMES = ("llama-3-8b", "llama-3.1-8b", "qwen2.5-7b", "llama-2-7b", "mistral-7b", "llama-3-70b-tp4", "opt-13b",
               "tiny")
GPU_NAMES = ("h100-sxm", "h200", "a100-80gb", "a100-40gb")
HOST_ENGINE_NAMES = ("vllm-v1", "vllm-v0", "sglang", "eager-sync", "device-only")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay",
        help="replay a trace through the simulator under one scheduler policy",
        description="Replay a trace on one simulated engine (real block manager; analytic step times, or "
                    "measured ones with --backend execute) and write requests.csv, steps.csv, summary.json, "
                    "config.json and itl.npy (execute: also exec_steps.csv) to --out.",
    )
    p.add_argument("--trace", required=True, metavar="PATH", help="trace file (any format `pagedlab trace` reads)")
    p.add_argument("--format", default="auto", metavar="F", help="trace format (default: auto-detect)")
    p.add_argument("--policy", default=DEFAULT_POLICY, metavar="NAME",
                   help=f"scheduler policy: {', '.join(POLICY_NAMES)} (default {DEFAULT_POLICY})")
    p.add_argument("--model", default="llama-3-8b", metavar="M",
                   help=f"model preset: {', '.join(MODEL_NAMES)} (default llama-3-8b)")
    p.add_argument("--gpu", default="h100-sxm", metavar="G", help=f"GPU preset: {', '.join(GPU_NAMES)} (default h100-sxm)")
    p.add_argument("--seed", type=seed_arg, default=0, metavar="S", help="seed of all randomness (default 0)")
    p.add_argument("--num-gpu-blocks", type=int, default=None, metavar="N",
                   help="KV pool size in blocks (default: what fits in GPU memory)")
    p.add_argument("--block-size", type=int, default=16, metavar="B", help="tokens per KV block (default 16)")
    p.add_argument("--max-num-seqs", type=int, default=256, metavar="N", help="batch limit (default 256)")
    p.add_argument("--swap-space-gib", type=float, default=None, metavar="GIB",
                   help="CPU swap pool per GPU, for vllm-v0's forked groups and vllm-swap (default 4, vLLM V0's)")
    p.add_argument("--backend", default="analytic", choices=("analytic", "execute"),
                   help="step-time source: the analytic model (default) or real kernels on a GPU (execute)")
    p.add_argument("--device", default=None, choices=("cuda", "cpu"),
                   help="execute backend: where the kernels run (default: cuda if present; cpu runs the "
                        "Triton interpreter, for the tiny model)")
    p.add_argument("--verify", action="store_true",
                   help="execute backend: shadow-check attention outputs against each sequence's history")
    p.add_argument("--verify-every", type=int, default=None, metavar="N",
                   help="with --verify: check every N-th step and every step that copies or swaps (default 1)")
    p.add_argument("--host-engine", default=None, choices=HOST_ENGINE_NAMES, metavar="NAME",
                   help=f"whose host (CPU) time each analytic step adds: {', '.join(HOST_ENGINE_NAMES)} (default: the "
                        "policy's engine); device-only adds none, as the execute backend measures steps")
    p.add_argument("--cost-profile", default="default", metavar="NAME|PATH",
                   help="cost-model constants: a name in sim/profiles/ or a JSON file (default: default)")
    p.add_argument("--kv-cache-dtype", default="auto", metavar="auto|fp8",
                   help="KV cache element type, as vLLM's: auto = the model's dtype (default), fp8 = e4m3 "
                        "(1 byte: the KV pool doubles for a bf16 model, decode attention reads half the bytes)")
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None,
                   help="reuse cached full prompt blocks across requests (paged policies, analytic backend; "
                        "keys from the trace's prefix groups or Mooncake hash_ids; default: on under vllm and "
                        "sglang, else off; --no-enable-prefix-caching turns it off, as SGLang's "
                        "--disable-radix-cache)")
    p.add_argument("--schedule-policy", default=None, choices=("fcfs", "lpm"),
                   help="sglang's waiting-queue order: fcfs (default, as SGLang's) or lpm (longest cached prefix first)")
    p.add_argument("--scheduling-policy", default=None, choices=("fcfs", "priority"),
                   help="vllm's queue order, as vLLM's --scheduling-policy: fcfs (default) or priority (the "
                        "trace's priority column, lower first; the worst running request is preempted)")
    p.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction, default=None,
                   help="vllm: split prompts over steps (default: on, as vLLM V1; off needs "
                        "max_num_batched_tokens >= max_model_len)")
    p.add_argument("--no-fast-forward", action="store_true",
                   help="schedule every step one by one (slow; the same tables)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--quiet", action="store_true",
                   help="print no progress or summary lines; warnings (ignored settings, rejected requests) still go to stderr")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory: new, empty or an earlier replay's (created if needed)")
    add_arrival_options(p, seed=False)
    add_transform_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from sim.config import EngineConfig
    from sim.policies import make_policy
    from sim.simulate import replay

    make_policy(args.policy)  # an unknown name fails before the trace is read
    from sim.policies.sglang import check_schedule_policy

    check_schedule_policy((args.policy,), args.schedule_policy, args.enable_prefix_caching)
    execute = args.backend == "execute"
    if not execute and (args.verify or args.device):
        raise ValueError("--verify/--device: need --backend execute")
    if args.verify_every is not None and not args.verify:
        raise ValueError("--verify-every: needs --verify (it says how often --verify checks)")
    config = EngineConfig(
        model=args.model, gpu=args.gpu, num_gpu_blocks=args.num_gpu_blocks, block_size=args.block_size,
        max_num_seqs=args.max_num_seqs, backend=args.backend, cost_profile=args.cost_profile,
        **({} if args.swap_space_gib is None else {"swap_space_gib": args.swap_space_gib}),
        host_engine=args.host_engine,
        fast_forward=not args.no_fast_forward, device=args.device if execute else None, verify=args.verify,
        verify_every=1 if args.verify_every is None else args.verify_every,
        enable_prefix_caching=args.enable_prefix_caching,
        kv_cache_dtype=args.kv_cache_dtype, schedule_policy=args.schedule_policy or "fcfs",
        scheduling_policy=args.scheduling_policy or "fcfs", enable_chunked_prefill=args.enable_chunked_prefill,
    )
    make_policy(args.policy).configure(config)  # the policy's refusals before its warnings
    from sim.policies.settings import ignored_warnings

    given = [name for name in ("schedule_policy", "scheduling_policy", "enable_chunked_prefill",
                               "enable_prefix_caching", "swap_space_gib") if getattr(args, name) is not None]
    for warning in ignored_warnings((args.policy,), given):
        warn(warning)
    if execute:
        from sim.execute.device import resolve_device

        resolve_device(args.device)  # on the CPU: TRITON_INTERPRET=1 before triton is imported
    check_out_dir(args.out)
    trace = load_trace(args.trace, args)
    if not args.quiet:
        for notice in trace.notices:
            print(f"trace: {notice}")
        if args.policy == "vllm" and args.scheduling_policy == "priority" and not trace.column("priority").any():
            warn("--scheduling-policy priority: every request of the trace has priority 0 (no "
                 "priority column): requests are ordered by arrival alone")
    result = replay(trace, config, policy=args.policy, seed=args.seed, progress=args.progress)
    from sim.rejection_notes import rejection_note

    note = rejection_note(result.requests, config.model, config.context_len)
    if len(result.requests) and result.summary["num_rejected"] == len(result.requests):
        # Nothing ran: the configuration cannot serve this trace at all (an error, not a result to report).
        raise ValueError(f"{args.trace}: requests: no request can run on this engine: {note}")
    result.write(args.out)
    if not args.quiet:
        s = result.summary
        print(f"{args.policy}: {s['num_finished']} finished, {s['num_rejected']} rejected of {s['num_requests']} "
              f"requests in {s['sim_duration_s']:.1f} simulated s; {s['num_steps']} steps, "
              f"{s['preemptions']} preemptions; KV cache {percent(s['kv_usage_mean'])} held on average (peak "
              f"{percent(s['kv_usage_peak'])}), {percent(s['slot_utilization'])} of held slots filled; "
              f"wall {time.perf_counter() - started:.2f} s with loading and writing (the replay {s['wall_s']:.2f} s, "
              f"summary.json's wall_s) -> {args.out}")
    if note:  # even with --quiet: losing requests is not a quiet success
        warn(note)
    exhausted = result.summary["swap_space_exhausted"]
    if exhausted:  # the real engine would have stopped: not a quiet success either
        warn(f"{exhausted} preemptions found the CPU swap pool ({config.swap_space_gib:g} GiB) full and recomputed "
             f"instead; vLLM V0 aborts there (\"Aborted due to the lack of CPU swap space\"): try a larger "
             f"--swap-space-gib")
    stuck = result.summary["swapped_recomputed"]
    if stuck:
        warn(f"{stuck} swapped requests could not come back on an idle engine (their blocks need the watermark's) "
             f"and were recomputed instead; vLLM V0 waits for them forever: try a larger pool (--num-gpu-blocks)")
    if not args.quiet:
        s = result.summary
        if s.get("prefix_caching"):
            print(f"prefix cache: {percent(s['prefix_hit_rate'])} of prompt tokens hit ({s['prefix_hit_tokens']} "
                  f"tokens), {s['prefix_evicted_blocks']} blocks evicted"
                  f"{'' if s['prefix_hit_tokens'] else no_prefix_note(trace)}")
        if "verify_checked" in s:
            print(f"verify: {s['verify_checked']} sequence-steps checked, {s['verify_mismatches']} mismatches")
    return 0


def no_prefix_note(trace: object) -> str:
    """Why a prefix cache cannot hit: the trace says nothing about which prompts share tokens."""
    groups = trace.column("prefix_group")  # type: ignore[attr-defined]
    hash_ids = trace.column("hash_ids")  # type: ignore[attr-defined]
    if any(g is not None for g in groups) or any(h is not None for h in hash_ids):
        return ""
    return " (the trace names no shared prompt tokens: no prefix groups or hash ids, so no prompt can hit)"


def percent(fraction: float) -> str:
    """`12.3%`, or `-` where there is nothing to measure (no request ran)."""
    return "-" if fraction is None or not math.isfinite(fraction) else f"{fraction:.1%}"


def check_out_dir(out: str) -> None:
    """Refuse, in one line, an --out that cannot become a directory we may write."""
    import os

    from sim.result import check_makeable

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OSError(f"{path}: out: exists and is not a directory")
    if path.is_dir() and not _is_replay_dir(path):
        entries = sorted(p.name for p in path.iterdir())
        if entries:  # a replay writes requests.csv, steps.csv, ...: never over someone else's files
            raise OSError(f"{path}: out: the directory holds other files (e.g. {entries[0]}) and no earlier replay; "
                          "give a new or empty directory, or an earlier replay's")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise OSError(f"{existing}: out: not a directory, so {path} cannot be made")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OSError(f"{existing}: out: permission denied (not writable)")
    check_makeable(path)


def _is_replay_dir(path: Path) -> bool:
    """An earlier replay's output (its summary.json names a policy and a request count), not a compare or
    sweep report (those have a manifest and are replaced whole by their own command)."""
    import json

    from sim.schema import SUMMARY_JSON

    if (path / "manifest.json").exists():
        return False
    try:
        summary = json.loads((path / SUMMARY_JSON).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and "policy" in summary and "num_requests" in summary
