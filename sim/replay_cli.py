"""`pagedlab replay`: replay a trace under one policy and write its tables.

Imports stay light at module level (the dispatcher imports every subcommand module on each start);
numpy/pandas/simpy load inside `run`. No torch on this path.
"""
from __future__ import annotations

import argparse
import time

DEFAULT_POLICY = "vllm"
POLICY_NAMES = ("vllm", "vllm-swap", "sarathi", "orca-max", "orca-oracle", "static")


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
    p.add_argument("--model", default="llama-3-8b", metavar="M", help="model preset (default llama-3-8b)")
    p.add_argument("--gpu", default="h100-sxm", metavar="G", help="GPU preset (default h100-sxm)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of all randomness (default 0)")
    p.add_argument("--num-gpu-blocks", type=int, default=None, metavar="N",
                   help="KV pool size in blocks (default: what fits in GPU memory)")
    p.add_argument("--block-size", type=int, default=16, metavar="B", help="tokens per KV block (default 16)")
    p.add_argument("--max-num-seqs", type=int, default=256, metavar="N", help="batch limit (default 256)")
    p.add_argument("--backend", default="analytic", choices=("analytic", "execute"),
                   help="step-time source: the analytic model (default) or real kernels on a GPU (execute)")
    p.add_argument("--device", default=None, choices=("cuda", "cpu"),
                   help="execute backend: where the kernels run (default: cuda if present; cpu runs the "
                        "Triton interpreter, for the tiny model)")
    p.add_argument("--verify", action="store_true",
                   help="execute backend: shadow-check attention outputs against each sequence's history")
    p.add_argument("--verify-every", type=int, default=1, metavar="N",
                   help="with --verify: check every N-th step and every step that copies or swaps (default 1)")
    p.add_argument("--cost-profile", default="default", metavar="NAME|PATH",
                   help="cost-model constants: a name in sim/profiles/ or a JSON file (default: default)")
    p.add_argument("--enable-prefix-caching", action="store_true",
                   help="reuse cached full prompt blocks across requests (paged policies, analytic backend; "
                        "keys from the trace's prefix groups or Mooncake hash_ids)")
    p.add_argument("--no-fast-forward", action="store_true",
                   help="schedule every step one by one (slow; the same tables)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if needed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from sim.config import EngineConfig
    from sim.policies import make_policy
    from sim.simulate import replay
    from traces import load

    make_policy(args.policy)  # an unknown name fails before the trace is read
    execute = args.backend == "execute"
    if not execute and (args.verify or args.device):
        raise ValueError("--verify/--device: need --backend execute")
    config = EngineConfig(
        model=args.model, gpu=args.gpu, num_gpu_blocks=args.num_gpu_blocks, block_size=args.block_size,
        max_num_seqs=args.max_num_seqs, backend=args.backend, cost_profile=args.cost_profile,
        fast_forward=not args.no_fast_forward, device=args.device if execute else None, verify=args.verify,
        verify_every=args.verify_every, enable_prefix_caching=args.enable_prefix_caching,
    )
    if execute:
        from sim.execute.device import resolve_device

        resolve_device(args.device)  # on the CPU: TRITON_INTERPRET=1 before triton is imported
    trace = load(args.trace, format=args.format)
    result = replay(trace, config, policy=args.policy, seed=args.seed, progress=args.progress)
    result.write(args.out)
    if not args.quiet:
        s = result.summary
        print(f"{args.policy}: {s['num_finished']} finished, {s['num_rejected']} rejected of {s['num_requests']} "
              f"requests in {s['sim_duration_s']:.1f} simulated s; {s['num_steps']} steps, "
              f"{s['preemptions']} preemptions; KV slot utilization {s['slot_utilization']:.1%}; "
              f"wall {time.perf_counter() - started:.2f} s -> {args.out}")
        if s.get("prefix_caching"):
            print(f"prefix cache: {s['prefix_hit_rate']:.1%} of prompt tokens hit ({s['prefix_hit_tokens']} tokens), "
                  f"{s['prefix_evicted_blocks']} blocks evicted")
        if "verify_checked" in s:
            print(f"verify: {s['verify_checked']} sequence-steps checked, {s['verify_mismatches']} mismatches")
    return 0
