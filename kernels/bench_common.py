"""What every kernel benchmark shares: the problem grid, the paged test case, timers and the copy ceiling.

Two timers, both medians with L2 flushed before each run: `time_graph_us` replays a CUDA graph of the
call (GPU time only, no host overhead) after a read of 256 MiB (`flush_l2`), and `time_eager_us` is
`triton.testing.do_bench` of the plain call (what a PyTorch user sees; host overhead included wherever it
exceeds the flush that precedes the call; its flush zeroes a buffer, whose write-back lands in the call).
Torch and triton are imported inside functions so `kernels.bench_cli` stays light.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

DECODE_GRID: tuple[tuple[int, int, int], ...] = (
    # (num_seqs, context, num_kv_heads)
    (1, 1024, 8), (1, 32768, 8), (8, 4096, 8), (32, 2048, 8), (64, 1024, 8), (128, 512, 8), (16, 16384, 8),
    (256, 2048, 8), (32, 2048, 32), (32, 2048, 1),
)
PREFILL_GRID: tuple[tuple[int, int, int], ...] = ((1, 512, 4096), (4, 512, 4096))  # (num_seqs, chunk, context)
NUM_Q_HEADS, HEAD_DIM, BLOCK_SIZE = 32, 128, 16

Runner = Callable[[], "torch.Tensor"]


@dataclass
class DecodeCase:
    q: "torch.Tensor"             # [num_seqs, num_q_heads, head_dim]
    k_cache: "torch.Tensor"       # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: "torch.Tensor"
    block_tables: "torch.Tensor"  # int32 [num_seqs, context // block_size], scattered
    seq_lens: "torch.Tensor"      # int32, all equal to `context`
    context: int

    def contiguous_kv(self) -> tuple["torch.Tensor", "torch.Tensor"]:
        """K, V as [num_seqs, num_kv_heads, context, head_dim], the layout SDPA wants."""
        b, (_, _, h, d) = self.q.shape[0], self.k_cache.shape
        idx = self.block_tables.long()
        k = self.k_cache[idx].reshape(b, -1, h, d)[:, : self.context].transpose(1, 2).contiguous()
        v = self.v_cache[idx].reshape(b, -1, h, d)[:, : self.context].transpose(1, 2).contiguous()
        return k, v

    def kv_bytes(self) -> int:
        return self.k_cache.element_size() * 2 * self.q.shape[0] * self.context * self.k_cache.shape[2] * HEAD_DIM


def make_decode_case(num_seqs: int, context: int, num_kv_heads: int, gen: "torch.Generator") -> DecodeCase:
    """bf16 K/V ~ N(0, 1) over randomly permuted blocks; every sequence `context` tokens long."""
    import torch

    blocks_per_seq = context // BLOCK_SIZE
    num_blocks = num_seqs * blocks_per_seq
    shape = (num_blocks, BLOCK_SIZE, num_kv_heads, HEAD_DIM)
    k_cache = torch.randn(shape, generator=gen, device="cuda", dtype=torch.bfloat16)
    v_cache = torch.randn(shape, generator=gen, device="cuda", dtype=torch.bfloat16)
    perm = torch.randperm(num_blocks, generator=gen, device="cuda")
    block_tables = perm.view(num_seqs, blocks_per_seq).to(torch.int32)
    seq_lens = torch.full((num_seqs,), context, dtype=torch.int32, device="cuda")
    q = torch.randn((num_seqs, NUM_Q_HEADS, HEAD_DIM), generator=gen, device="cuda", dtype=torch.bfloat16)
    return DecodeCase(q, k_cache, v_cache, block_tables, seq_lens, context)


def fp8_copy(case: DecodeCase) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """(k8, k_scale, v8, v_scale): the case's K/V quantized to e4m3 with per-tensor scales (amax / 448), as
    `write_kv` would store them."""
    from kernels._common import fp8_scales, quantize_fp8

    k_scale, v_scale = fp8_scales(case.k_cache), fp8_scales(case.v_cache)
    quantize = lambda c, s: quantize_fp8(c.flatten(0, 1), s).view(c.shape)  # noqa: E731
    return quantize(case.k_cache, k_scale), k_scale, quantize(case.v_cache, v_scale), v_scale


FLUSH_BYTES = 256 * 1024 * 1024  # well above the H100's 50 MB and the H200's 60 MB of L2
_FLUSH: dict[str, "torch.Tensor"] = {}  # device -> float32 buffer of FLUSH_BYTES, ones


def flush_l2(device: str = "cuda") -> None:
    """Evict L2 by reading FLUSH_BYTES, so that the next kernel reads its inputs from device memory.

    A read, not a write: zeroing a buffer (what `do_bench` does) leaves L2 full of dirty lines whose write-back
    then runs inside the timed kernel (H200: 9-12 us more on a 140-250 us decode, docs/kernels.md).
    """
    import torch

    buf = _FLUSH.get(device)
    if buf is None:
        buf = _FLUSH[device] = torch.ones(FLUSH_BYTES // 4, dtype=torch.float32, device=device)
    buf.sum()


def time_graph_us(fn: Runner, reps: int = 40) -> float:
    """Median over CUDA-graph replays of `fn`, L2 flushed (`flush_l2`) before each; no host overhead in them."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        flush_l2()  # also gives the GPU a head start over the replay's launch
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
    del graph
    return 1e3 * times[len(times) // 2]


def time_eager_us(fn: Runner, rep_ms: int = 100) -> float:
    """`triton.testing.do_bench` median of the plain call (it zeroes a 256 MiB buffer before each run)."""
    import triton.testing

    return 1e3 * triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")


def interleaved_times(runners: list[Runner], rounds: int) -> list[tuple[list[float], list[float], str]]:
    """Per runner (graph us per round, eager us per round, how): every round times each runner once in turn,
    so a slow stretch of the machine (host or GPU) touches all methods alike instead of one."""
    results: list[tuple[list[float], list[float], str]] = [([], [], "graph") for _ in runners]
    for _ in range(rounds):
        for i, fn in enumerate(runners):
            graph, eager, _ = results[i]
            us, how = time_us(fn)
            graph.append(us)
            eager.append(time_eager_us(fn))
            results[i] = (graph, eager, how)
    return results


def median(xs: list[float]) -> float:
    ordered = sorted(xs)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def time_us(fn: Runner) -> tuple[float, str]:
    """(us, how): a graph-replay median, or the eager median where the call cannot be captured."""
    import torch

    try:
        return time_graph_us(fn), "graph"
    except Exception:  # noqa: BLE001 - e.g. a peer that syncs inside: fall back, and say so
        torch.cuda.synchronize()
        return time_eager_us(fn), "eager"


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy of 1 GiB, bytes read + written over a do_bench median after a long warm-up
    (host overhead is negligible at this size; a short warm-up once read 2.7 TB/s instead of 4.2 TB/s)."""
    import torch
    import triton.testing

    src = torch.randn(512 * 1024 * 1024 // 2, device="cuda")  # 1 GiB of fp32
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=200, rep=300, return_mode="median")
    return 2 * src.numel() * src.element_size() / ms / 1e6


def rel_err(out: "torch.Tensor", ref: "torch.Tensor") -> float:
    """L2 norm of (out - ref) over that of ref; shapes must match (a silent broadcast would read as an error)."""
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    return float((out.double() - ref.double()).norm() / ref.double().norm())


# Relative error against the float64 reference above which an output is wrong rather than rounded: bf16 outputs
# land at 1e-3 to 4e-3 of it, those over an e4m3 cache at about 4e-2 (3 mantissa bits; docs/kernels.md).
MAX_REL_ERR = {"bf16": 2e-2, "fp8": 1e-1}


def disagreement(err: float, kv_dtype: str) -> str:
    """A note for a method whose output is off the float64 reference by more than rounding explains (NaN too)."""
    return "" if err <= MAX_REL_ERR[kv_dtype] else f"output off the float64 reference by {err:.1e}"


def check_output(run: Runner, exact: "torch.Tensor", kv_dtype: str) -> tuple[float, str]:
    """(relative error of one call's output against the float64 reference, a note: empty, or why it is off);
    an output of another shape is a note, not an exception, so one bad peer does not end the run."""
    try:
        err = rel_err(run(), exact)
    except ValueError as exc:
        return math.nan, str(exc)
    return err, disagreement(err, kv_dtype)


def join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def gpu_identity(uuid: str) -> str:
    """Serial, driver and maximum SM clock of the GPU `uuid` (`nvidia-smi`), "" where it cannot say: cards of one
    model differ by a few percent, and by more for some kernels than for others (docs/kernels.md, runs 13-15), so
    a run names the card it ran on."""
    if not uuid:
        return ""
    uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"  # torch prints the bare hex, nvidia-smi wants GPU-
    query = ["nvidia-smi", "-i", uuid, "--query-gpu=serial,driver_version,clocks.max.sm", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    fields = [f.strip() for f in done.stdout.strip().split(",")]
    if done.returncode != 0 or len(fields) != 3:
        return ""
    return f"serial {fields[0]}, driver {fields[1]}, SM clock max {fields[2]}"


def run_main(module: str, doc: str, add_arguments: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int], argv: list[str] | None) -> int:
    """`python -m <module>`: parse `argv`, run, and turn bad input (ValueError, OSError) into one line on stderr
    and exit status 2."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except (ValueError, OSError) as exc:
        print(f"{module}: error: {exc}", file=sys.stderr)
        return 2


def start_gpu_run(args: argparse.Namespace, what: str) -> "torch.Generator":
    """A GPU benchmark's start: `--rounds` (where it has one) at least 1 and a CUDA GPU, else a ValueError naming
    `what`; the output directory made; the CUDA generator every case draws from, seeded by `--seed`."""
    import torch

    rounds = getattr(args, "rounds", 1)
    if rounds < 1:
        raise ValueError(f"--rounds: must be >= 1, got {rounds}")
    if not torch.cuda.is_available():
        raise ValueError(f"{what}: needs a CUDA GPU (the interpreter is for correctness, not timing)")
    args.out.mkdir(parents=True, exist_ok=True)
    return torch.Generator(device="cuda").manual_seed(args.seed)
