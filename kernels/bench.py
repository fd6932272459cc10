"""`pagedlab bench kernels` / `python -m kernels.bench`: paged decode and prefill against their peers on a GPU.

Decode grid (bf16, 32 q heads, 8 KV heads, head dim 128, block 16, equal lengths, scattered block tables),
plus MHA and MQA at (32, 2048). Every method runs in the same process on the same K/V; times are
`triton.testing.do_bench` medians (it clears L2 before each run). GB/s counts K/V read once + q + out;
"% copy" divides by a device-to-device copy measured in the same run. Writes CSV, PNG and a markdown table.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path

DECODE_GRID: tuple[tuple[int, int, int], ...] = (
    # (num_seqs, context, num_kv_heads)
    (1, 1024, 8), (1, 32768, 8), (8, 4096, 8), (32, 2048, 8), (64, 1024, 8), (128, 512, 8), (16, 16384, 8),
    (256, 2048, 8), (32, 2048, 32), (32, 2048, 1),
)
PREFILL_GRID: tuple[tuple[int, int, int], ...] = ((1, 512, 4096), (4, 512, 4096))  # (num_seqs, chunk, context)
NUM_Q_HEADS, HEAD_DIM, BLOCK_SIZE = 32, 128, 16
DECODE_METHODS = ("one_pass", "two_pass", "sdpa_cudnn", "sdpa_flash", "gather_sdpa", "flex_paged")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="directory for CSV/PNG/markdown")
    parser.add_argument("--skip-flex", action="store_true", help="skip FlexAttention (it compiles per shape)")
    parser.add_argument("--sweep", action="store_true", help="also time one-pass tile/warp/stage/split variants")
    parser.add_argument("--seed", type=int, default=0)


_FLUSH = None  # 256 MiB scratch zeroed before each timed run so K/V come from HBM, not L2
TIMING = {"method": "graph"}


def _time_graph_us(fn, reps: int = 40) -> float:
    """Median over CUDA-graph replays of `fn`, L2 flushed before each; no host overhead in the numbers."""
    import torch

    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device="cuda")
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
        _FLUSH.zero_()  # also gives the GPU a head start over the replay's launch
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
    del graph
    return 1e3 * times[len(times) // 2]


def _time_us(fn) -> float:
    """CUDA-graph replay median; `do_bench` median (host overhead included) where capture fails."""
    import torch
    import triton.testing

    try:
        TIMING["method"] = "graph"
        return _time_graph_us(fn)
    except Exception:  # noqa: BLE001 - e.g. a peer that syncs inside: fall back, and say so
        torch.cuda.synchronize()
        TIMING["method"] = "do_bench"
        return 1e3 * triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy of 1 GiB, bytes read + written over a do_bench median after a long warm-up
    (host overhead is negligible at this size; a short warm-up once read 2.7 TB/s instead of 4.2 TB/s)."""
    import torch
    import triton.testing

    src = torch.randn(512 * 1024 * 1024 // 2, device="cuda")  # 1 GiB of fp32
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=200, rep=300, return_mode="median")
    return 2 * src.numel() * src.element_size() / ms / 1e6


def make_decode_case(num_seqs: int, context: int, num_kv_heads: int, gen: "torch.Generator"):
    import torch

    from kernels.bench_peers import DecodeCase

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


def _decode_runners(case, skip_flex: bool):
    from kernels import bench_peers as peers
    from kernels.decode import paged_decode
    from kernels.decode_two_pass import paged_decode_two_pass

    args = (case.q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
    makers = {
        "one_pass": lambda: (lambda: paged_decode(*args), ""),
        "two_pass": lambda: (lambda: paged_decode_two_pass(*args), ""),
        "sdpa_cudnn": lambda: peers.make_sdpa_decode(case, "CUDNN_ATTENTION"),
        "sdpa_flash": lambda: peers.make_sdpa_decode(case, "FLASH_ATTENTION"),
        "gather_sdpa": lambda: peers.make_gather_sdpa(case),
        "flex_paged": lambda: peers.make_flex_paged(case),
    }
    for name in DECODE_METHODS:
        if name == "flex_paged" and skip_flex:
            continue
        try:
            yield name, *makers[name]()
        except Exception as exc:  # noqa: BLE001 - a peer that fails is reported as such
            yield name, None, f"failed: {type(exc).__name__}: {str(exc)[:160]}"


def _rel_err(out, ref) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def bench_decode(rows: list, copy_gbs: float, skip_flex: bool, gen, save) -> None:
    import torch

    from kernels.decode import choose_num_splits

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for num_seqs, context, kv_heads in DECODE_GRID:
        case = make_decode_case(num_seqs, context, kv_heads, gen)
        elem = case.q.element_size()
        nbytes = 2 * num_seqs * context * kv_heads * HEAD_DIM * elem + 2 * case.q.numel() * elem
        splits = choose_num_splits(num_seqs, kv_heads, context, sms)
        ref = None
        for name, run, note in _decode_runners(case, skip_flex):
            row = dict(kind="decode", num_seqs=num_seqs, context=context, q_heads=NUM_Q_HEADS, kv_heads=kv_heads,
                       method=name, us=math.nan, gbs=math.nan, pct_copy=math.nan, tflops=math.nan,
                       splits=splits if name == "one_pass" else "", rel_err=math.nan, note=note)
            if run is not None:
                out = run()
                ref = out if ref is None else ref  # one_pass runs first; peers are checked against it
                row["rel_err"] = _rel_err(out, ref)
                row["us"] = _time_us(run)
                if TIMING["method"] != "graph":
                    row["note"] = (note + "; " if note else "") + "timed with do_bench (graph capture failed)"
                row["gbs"] = nbytes / row["us"] / 1e3
                row["pct_copy"] = 100 * row["gbs"] / copy_gbs
            rows.append(row)
            print(f"decode {num_seqs:>4} x {context:>6} kv{kv_heads:<2} {name:<12} {row['us']:>9.1f} us "
                  f"{row['gbs']:>7.0f} GB/s {row['pct_copy']:>5.1f}% err {row['rel_err']:.1e} {note}", flush=True)
        del case
        torch.cuda.empty_cache()
        save()  # partial results survive a run cut short


def bench_prefill(rows: list, gen, save) -> None:
    import torch

    from kernels.bench_peers import make_sdpa_prefill
    from kernels.prefill import paged_prefill

    kv_heads = 8
    for num_seqs, chunk, context in PREFILL_GRID:
        case = make_decode_case(num_seqs, context, kv_heads, gen)
        q = torch.randn((num_seqs * chunk, NUM_Q_HEADS, HEAD_DIM), generator=gen, device="cuda", dtype=torch.bfloat16)
        qsl = torch.arange(0, num_seqs + 1, device="cuda", dtype=torch.int32) * chunk
        first = context - chunk
        flops_ours = 4 * HEAD_DIM * NUM_Q_HEADS * num_seqs * sum(first + i + 1 for i in range(chunk))
        flops_sdpa = 4 * HEAD_DIM * NUM_Q_HEADS * num_seqs * chunk * context
        k, v = case.contiguous_kv()
        q4 = q.view(num_seqs, chunk, NUM_Q_HEADS, HEAD_DIM).transpose(1, 2)
        sdpa, note = make_sdpa_prefill(q4, k, v)
        ours = lambda: paged_prefill(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, qsl,  # noqa: E731
                                     max_query_len=chunk)
        for name, run, flops, extra in (("paged_prefill", ours, flops_ours, "causal, bottom-right"),
                                        ("sdpa_flash", sdpa, flops_sdpa, f"no mask (full {chunk}x{context}); {note}")):
            us = _time_us(run)
            row = dict(kind="prefill", num_seqs=num_seqs, context=context, q_heads=NUM_Q_HEADS, kv_heads=kv_heads,
                       method=name, us=us, gbs=math.nan, pct_copy=math.nan, tflops=flops / us / 1e6, splits="",
                       rel_err=math.nan, note=f"chunk {chunk}; {extra}")
            rows.append(row)
            print(f"prefill {num_seqs} x {chunk} over {context} {name:<14} {us:>9.1f} us {row['tflops']:>6.1f} TFLOP/s",
                  flush=True)
        del case, k, v
        torch.cuda.empty_cache()
        save()


def run(args: argparse.Namespace) -> int:
    import torch

    if not torch.cuda.is_available():
        raise ValueError("bench kernels: needs a CUDA GPU (the interpreter is for correctness, not timing)")
    from kernels.bench_report import summarize, write_outputs

    args.out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    card = torch.cuda.get_device_name(0)
    copy_gbs = copy_bandwidth_gbs()
    print(f"{card}: device-to-device copy {copy_gbs:.0f} GB/s (read + write)", flush=True)
    rows: list[dict] = []
    meta = dict(card=card, date=dt.date.today().isoformat(), copy_gbs=copy_gbs, torch=torch.__version__,
                triton=__import__("triton").__version__)
    save = lambda: write_outputs(rows, meta, args.out)  # noqa: E731
    if args.sweep:
        from kernels.bench_sweep import sweep_decode

        sweep_decode(args.out, copy_gbs, gen)
    bench_decode(rows, copy_gbs, args.skip_flex, gen, save)
    bench_prefill(rows, gen, save)
    # Copy bandwidth again at the end; the higher reading is the denominator (the stricter % of copy).
    copy_end = copy_bandwidth_gbs()
    print(f"copy bandwidth at the end: {copy_end:.0f} GB/s", flush=True)
    if copy_end > copy_gbs:
        meta["copy_gbs"] = copy_end
        for r in rows:
            r["pct_copy"] = 100 * r["gbs"] / copy_end
    save()
    print(summarize(rows, meta), flush=True)
    if args.sweep:
        from kernels.bench_sweep import sweep_prefill

        sweep_prefill(args.out, gen)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except (ValueError, OSError) as exc:
        print(f"kernels.bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
