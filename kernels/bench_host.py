"""`python -m kernels.bench_host`: host (CPU) time per eager call of each kernel wrapper and of its peers.

Each call is issued `--calls` times back to back on a shape whose GPU work (a few microseconds) is shorter
than the host work, so the GPU waits on the host and wall time per call is the host's cost: validation,
allocations, Triton's launcher (argument binding, specialization key, driver launch). `triton_launch` is
the bare `_decode_kernel[grid](...)` call with every argument precomputed (Triton's own launch path);
`paged_decode` calls the compiled kernel's launcher directly (`kernels._launch`), shown beside the same
wrapper through `JITFunction.run`.
A cProfile of `paged_decode` follows, with the functions that cost most.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

from kernels.bench_common import HEAD_DIM, NUM_Q_HEADS, make_decode_case, run_main


def host_us(fn, calls: int) -> float:
    import torch

    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = time.perf_counter() - start
    torch.cuda.synchronize()
    return 1e6 * host / calls


def callables(gen) -> dict:
    import torch

    from kernels import bench_peers as peers
    from kernels.cache_ops import copy_blocks, write_kv
    from kernels.decode import LOG2E, _decode_kernel, _launch_decode, paged_decode
    from kernels.decode_launch import plan
    from kernels.prefill import paged_prefill

    case = make_decode_case(1, 1024, 8, gen)
    q, kc, vc, bt, sl = case.q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens
    out = torch.empty_like(q)
    launch = plan(1, NUM_Q_HEADS, 8, HEAD_DIM, 16, bt.shape[1] * 16, q.dtype, False, 2, q.device, 1, None)
    grid, meta = launch.grid, launch.meta
    launch_args = (q, kc, vc, bt, sl, out, out, out, kc, vc, *q.stride()[:2], *kc.stride()[:3], bt.stride(0),
                   *out.stride()[:2], 0, LOG2E / HEAD_DIM ** 0.5, 1, 0)
    k_new = torch.randn((4, 8, HEAD_DIM), generator=gen, device="cuda", dtype=torch.bfloat16)
    slots = torch.arange(4, device="cuda")
    pairs = torch.tensor([[0, 60], [1, 61]], device="cuda")
    qp = torch.randn((16, NUM_Q_HEADS, HEAD_DIM), generator=gen, device="cuda", dtype=torch.bfloat16)
    qsl = torch.tensor([0, 16], dtype=torch.int32, device="cuda")
    def normal_launch():
        _launch_decode.enabled = False  # Triton's own JITFunction.run path
        try:
            return paged_decode(q, kc, vc, bt, sl)
        finally:
            _launch_decode.enabled = True

    fns = {
        "paged_decode (auto splits)": lambda: paged_decode(q, kc, vc, bt, sl),
        "paged_decode (auto splits, JITFunction.run)": normal_launch,
        "paged_decode (1 split, out=)": lambda: paged_decode(q, kc, vc, bt, sl, num_splits=1, out=out),
        "triton_launch (bare, 1 split)": lambda: _decode_kernel[grid](*launch_args, SPLIT=False, **{
            k: v for k, v in meta.items() if k != "SPLIT"}),
        "paged_prefill (16 tokens)": lambda: paged_prefill(qp, kc, vc, bt, sl, qsl, max_query_len=16),
        "write_kv (4 tokens)": lambda: write_kv(k_new, k_new, kc, vc, slots),
        "copy_blocks (2 pairs)": lambda: copy_blocks(kc, vc, pairs),
        "torch.empty_like(q)": lambda: torch.empty_like(q),
    }
    for name, make in (("sdpa_flash", lambda: peers.make_sdpa_decode(case, "FLASH_ATTENTION")),
                       ("sdpa_cudnn", lambda: peers.make_sdpa_decode(case, "CUDNN_ATTENTION")),
                       ("flashinfer", lambda: peers.make_flashinfer_decode(case))):
        try:
            fns[name] = make()[0]
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported
            print(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")
    return fns


def run(args: argparse.Namespace) -> int:
    import torch

    if not torch.cuda.is_available():
        raise ValueError("bench_host: needs a CUDA GPU")
    gen = torch.Generator(device="cuda").manual_seed(0)
    fns = callables(gen)
    lines = ["| call (1 x 1024, bf16, 32/8 heads) | host us per call |", "|---|---|"]
    for name, fn in fns.items():
        lines.append(f"| {name} | {host_us(fn, args.calls):.1f} |")
    print("\n".join(lines), flush=True)
    prof = cProfile.Profile()
    fn = fns["paged_decode (auto splits)"]
    prof.enable()
    for _ in range(args.calls):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(18)
    print(text.getvalue())
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "host_overhead.md").write_text("\n".join(lines) + "\n\n```\n" + text.getvalue() + "```\n")
    return 0


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)


def main(argv: list[str] | None = None) -> int:
    return run_main("kernels.bench_host", __doc__, _add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
