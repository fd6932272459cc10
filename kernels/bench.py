"""`pagedlab bench kernels` / `python -m kernels.bench`: paged decode and prefill against their peers on a GPU.

Decode grid (bf16, 32 q heads, 8 KV heads, head dim 128, block 16, equal lengths, scattered block tables),
plus MHA and MQA at (32, 2048). Every method runs in the same process on the same K/V and is timed twice:
CUDA-graph replay (GPU time; L2 flushed by a read) and eager `do_bench` (host overhead included; L2 flushed by
do_bench's zeroing), both medians,
in `--rounds` interleaved rounds (each round times every method of the row once, in turn; the median round
is reported and the per-round figures are kept in the CSV).
fp8 rows run on the same K/V quantized to e4m3 with per-tensor scales. GB/s counts K/V read once + q +
out; "% copy" divides by a device-to-device copy measured in the same run. Every decode output and every causal
prefill output is checked against float64 attention over the bf16 cache (`rel_err`; a note flags one off by more
than rounding explains).
Writes CSV, PNG and markdown.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path

from kernels.bench_common import (
    DECODE_GRID, HEAD_DIM, NUM_Q_HEADS, PREFILL_GRID, check_output, copy_bandwidth_gbs, fp8_copy, gpu_identity,
    interleaved_times, join_notes, make_decode_case, median, run_main, start_gpu_run, time_eager_us, time_us,
)

DECODE_METHODS = ("one_pass", "one_pass_fp8", "two_pass", "sdpa_cudnn", "sdpa_flash", "gather_sdpa", "flex_paged",
                  "flashinfer", "flashinfer_fp8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="directory for CSV/PNG/markdown")
    parser.add_argument("--skip-flex", action="store_true", help="skip FlexAttention (it compiles per shape)")
    parser.add_argument("--skip-flashinfer", action="store_true", help="skip FlashInfer (it JIT-compiles)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="decode: every method timed once per round, in turn; the tables give the medians")


def _decode_runners(case, skip_flex: bool, skip_flashinfer: bool):
    from kernels import bench_peers as peers
    from kernels.decode import paged_decode
    from kernels.decode_two_pass import paged_decode_two_pass

    args = (case.q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
    k8, ks, v8, vs = fp8_copy(case)
    case8 = DecodeCase(case.q, k8, v8, case.block_tables, case.seq_lens, case.context)
    makers = {
        "one_pass": lambda: (lambda: paged_decode(*args), ""),
        "one_pass_fp8": lambda: (lambda: paged_decode(case.q, k8, v8, case.block_tables, case.seq_lens,
                                                      k_scale=ks, v_scale=vs), "e4m3, per-tensor scales"),
        "two_pass": lambda: (lambda: paged_decode_two_pass(*args), ""),
        "sdpa_cudnn": lambda: peers.make_sdpa_decode(case, "CUDNN_ATTENTION"),
        "sdpa_flash": lambda: peers.make_sdpa_decode(case, "FLASH_ATTENTION"),
        "gather_sdpa": lambda: peers.make_gather_sdpa(case),
        "flex_paged": lambda: peers.make_flex_paged(case),
        "flashinfer": lambda: peers.make_flashinfer_decode(case),
        "flashinfer_fp8": lambda: peers.make_flashinfer_decode(case8, float(ks), float(vs)),
    }
    for name in DECODE_METHODS:
        if (name == "flex_paged" and skip_flex) or (name.startswith("flashinfer") and skip_flashinfer):
            continue
        try:
            yield name, *makers[name]()
        except Exception as exc:  # noqa: BLE001 - a peer that fails is reported as such
            yield name, None, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def bench_decode(rows: list, copy_gbs: float, args: argparse.Namespace, gen, save) -> None:
    import torch

    from kernels.decode import paged_decode_ref
    from kernels.decode_config import choose_launch

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for num_seqs, context, kv_heads in DECODE_GRID:
        case = make_decode_case(num_seqs, context, kv_heads, gen)
        qo_bytes = 2 * case.q.numel() * case.q.element_size()
        group = NUM_Q_HEADS // kv_heads
        splits = {elem: choose_launch(num_seqs, kv_heads, context, HEAD_DIM, elem, sms, group)[0] for elem in (1, 2)}
        # every method, ours included, against float64 attention over the bf16 cache (fp8 methods: their
        # quantization error), so a wrong output points at its own method
        exact = paged_decode_ref(case.q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
        case_rows: list[dict] = []
        timed: list[tuple[dict, object]] = []
        for name, run, note in _decode_runners(case, args.skip_flex, args.skip_flashinfer):
            fp8 = name.endswith("_fp8")
            ours = splits[1 if fp8 else 2] if name.startswith("one_pass") else ""
            row = dict(kind="decode", num_seqs=num_seqs, context=context, q_heads=NUM_Q_HEADS, kv_heads=kv_heads,
                       method=name, kv_dtype="fp8" if fp8 else "bf16", us=math.nan, eager_us=math.nan, gbs=math.nan,
                       pct_copy=math.nan, tflops=math.nan, splits=ours,
                       rel_err=math.nan, note=note, us_rounds="", eager_rounds="")
            row["_bytes"] = case.kv_bytes() // (2 if fp8 else 1) + qo_bytes
            if run is not None:
                row["rel_err"], flag = check_output(run, exact, row["kv_dtype"])
                row["note"] = join_notes(row["note"], flag)
                timed.append((row, run))
            case_rows.append(row)
        # every method once per round, in turn; medians over the rounds
        for (row, _), (graph, eager, how) in zip(timed, interleaved_times([run for _, run in timed], args.rounds)):
            row["us"], row["eager_us"] = median(graph), median(eager)
            row["us_rounds"] = ";".join(f"{x:.1f}" for x in graph)
            row["eager_rounds"] = ";".join(f"{x:.1f}" for x in eager)
            if how != "graph":
                row["note"] = join_notes(row["note"], "graph capture failed: eager time in both columns")
            row["gbs"] = row["_bytes"] / row["us"] / 1e3
            row["pct_copy"] = 100 * row["gbs"] / copy_gbs
        for row in case_rows:
            row.pop("_bytes")
            rows.append(row)
            print(f"decode {num_seqs:>4} x {context:>6} kv{kv_heads:<2} {row['method']:<15} {row['us']:>8.1f} us graph "
                  f"{row['eager_us']:>8.1f} us eager {row['pct_copy']:>5.1f}% err {row['rel_err']:.1e} "
                  f"[{row['eager_rounds']}] {row['note']}", flush=True)
        del case, exact
        torch.cuda.empty_cache()
        save()  # partial results survive a run cut short


def bench_prefill(rows: list, args: argparse.Namespace, gen, save) -> None:
    import torch

    from kernels.bench_common import DecodeCase
    from kernels.bench_peers import make_flashinfer_prefill, make_sdpa_prefill
    from kernels.prefill import paged_prefill, paged_prefill_ref

    kv_heads = 8
    for num_seqs, chunk, context in PREFILL_GRID:
        case = make_decode_case(num_seqs, context, kv_heads, gen)
        k8, ks, v8, vs = fp8_copy(case)
        device = case.q.device
        q = torch.randn((num_seqs * chunk, NUM_Q_HEADS, HEAD_DIM), generator=gen, device=device, dtype=case.q.dtype)
        qsl = torch.arange(0, num_seqs + 1, device=device, dtype=torch.int32) * chunk
        first = context - chunk
        flops_causal = 4 * HEAD_DIM * NUM_Q_HEADS * num_seqs * sum(first + i + 1 for i in range(chunk))
        flops_full = 4 * HEAD_DIM * NUM_Q_HEADS * num_seqs * chunk * context
        k, v = case.contiguous_kv()
        q4 = q.view(num_seqs, chunk, NUM_Q_HEADS, HEAD_DIM).transpose(1, 2)
        # causal outputs are checked against float64 attention over the bf16 cache; SDPA flash's unmasked one is not
        exact = paged_prefill_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, qsl)
        methods = [
            ("paged_prefill", lambda: (lambda: paged_prefill(q, case.k_cache, case.v_cache, case.block_tables,
                                                             case.seq_lens, qsl, max_query_len=chunk), ""),
             flops_causal, "causal, bottom-right", True),
            ("paged_prefill_fp8", lambda: (lambda: paged_prefill(q, k8, v8, case.block_tables, case.seq_lens, qsl,
                                                                 max_query_len=chunk, k_scale=ks, v_scale=vs), ""),
             flops_causal, "causal, e4m3 cache", True),
            ("sdpa_flash", lambda: make_sdpa_prefill(q4, k, v), flops_full, f"no mask (full {chunk}x{context})",
             False),
        ]
        if not args.skip_flashinfer:
            methods.append(("flashinfer", lambda: make_flashinfer_prefill(case, q, chunk), flops_causal, "", True))
        for name, make, flops, extra, causal in methods:
            row = dict(kind="prefill", num_seqs=num_seqs, context=context, q_heads=NUM_Q_HEADS, kv_heads=kv_heads,
                       method=name, kv_dtype="fp8" if name.endswith("_fp8") else "bf16", us=math.nan,
                       eager_us=math.nan, gbs=math.nan, pct_copy=math.nan, tflops=math.nan, splits="",
                       rel_err=math.nan, note=join_notes(f"chunk {chunk}", extra))
            try:
                run, note = make()
                flag = ""
                if causal:
                    row["rel_err"], flag = check_output(run, exact, row["kv_dtype"])
                row["us"], _ = time_us(run)
                row["eager_us"] = time_eager_us(run)
                row["tflops"] = flops / row["us"] / 1e6
                row["note"] = join_notes(row["note"], note, flag)
            except Exception as exc:  # noqa: BLE001 - a peer that fails is reported as such
                row["note"] = join_notes(row["note"], f"failed: {type(exc).__name__}: "
                                         f"{str(exc).splitlines()[0][:160] if str(exc) else ''}")
            rows.append(row)
            print(f"prefill {num_seqs} x {chunk} over {context} {name:<18} {row['us']:>9.1f} us "
                  f"{row['eager_us']:>9.1f} eager {row['tflops']:>6.1f} TFLOP/s err {row['rel_err']:.1e} {row['note']}",
                  flush=True)
        del case, k, v, k8, v8, exact
        torch.cuda.empty_cache()
        save()


def run(args: argparse.Namespace) -> int:
    import torch

    gen = start_gpu_run(args, "bench kernels")
    from kernels.bench_report import markdown, write_outputs

    card = torch.cuda.get_device_name(0)
    copy_gbs = copy_bandwidth_gbs()
    print(f"{card}: device-to-device copy {copy_gbs:.0f} GB/s (read + write)", flush=True)
    rows: list[dict] = []
    meta = dict(card=card, date=dt.date.today().isoformat(), copy_gbs=copy_gbs, torch=torch.__version__,
                triton=__import__("triton").__version__,
                identity=gpu_identity(str(getattr(torch.cuda.get_device_properties(0), "uuid", ""))))
    save = lambda: write_outputs(rows, meta, args.out)  # noqa: E731
    bench_decode(rows, copy_gbs, args, gen, save)
    bench_prefill(rows, args, gen, save)
    # Copy bandwidth again at the end; the higher reading is the denominator (the stricter % of copy).
    copy_end = copy_bandwidth_gbs()
    print(f"copy bandwidth at the end: {copy_end:.0f} GB/s", flush=True)
    if copy_end > copy_gbs:
        meta["copy_gbs"] = copy_end
        for r in rows:
            r["pct_copy"] = 100 * r["gbs"] / copy_end
    save()
    print(markdown(rows, meta), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main("kernels.bench", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
