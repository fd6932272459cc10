"""What the probe runners share: the ragged-length correctness cases and the timing table."""
from __future__ import annotations

from typing import Callable

import torch

from kernels.bench_common import HEAD_DIM, NUM_Q_HEADS, fp8_copy, interleaved_times, make_decode_case, median
from kernels.decode import paged_decode, paged_decode_ref
from kernels.decode_config import choose_launch

from gluon_decode import merge_ref

# (q, k, v, block_tables, seq_lens, k_scale, v_scale, num_splits, merge=True) -> out; merge=False: the kernel alone
Decode = Callable[..., torch.Tensor]
BENCH_ROWS = ((16, 16384, 8), (256, 2048, 8))  # (num_seqs, context, num_kv_heads): the fp8 goal's rows


def ragged_cases(device: str, gen: torch.Generator):
    """(label, q, k, v, block_tables, seq_lens, k_scale, v_scale): fp8 caches over scattered 16-token blocks with
    ragged lengths (tails, lengths under one block), 8, 32 and 4 KV heads of 32 query heads, per-tensor and
    per-head scales."""
    bs, hq, d = 16, 32, 128
    for hkv, lens_list in ((8, [1, 37, 300, 1024]), (32, [5, 200]), (4, [129, 16])):
        lens = torch.tensor(lens_list, dtype=torch.int32, device=device)
        nblk = [-(-n // bs) for n in lens_list]
        total = sum(nblk) + 3
        k = (torch.randn(total, bs, hkv, d, device=device, generator=gen) * 2).to(torch.float8_e4m3fn)
        v = (torch.randn(total, bs, hkv, d, device=device, generator=gen) * 2).to(torch.float8_e4m3fn)
        perm = torch.randperm(total, device=device, generator=gen).to(torch.int32)
        bt = torch.zeros(len(lens_list), max(nblk), dtype=torch.int32, device=device)
        first = 0
        for i, n in enumerate(nblk):
            bt[i, :n] = perm[first:first + n]
            first += n
        q = torch.randn(len(lens_list), hq, d, device=device, dtype=torch.bfloat16, generator=gen)
        per_tensor = (torch.tensor([0.7], device=device), torch.tensor([1.3], device=device))
        per_head = (torch.rand(hkv, device=device, generator=gen) + 0.5, torch.rand(hkv, device=device, generator=gen) + 0.5)
        for ks, vs in (per_tensor, per_head):
            yield f"hkv={hkv} scales={ks.numel()}", q, k, v, bt, lens, ks, vs


def check_ragged(decodes: dict[str, Decode], device: str = "cuda", product: Decode = paged_decode) -> None:
    """Print, for every ragged case, split count (1, 3) and decode, its max abs error against the float64
    reference beside the product's."""
    gen = torch.Generator(device=device).manual_seed(1)
    for label, q, k, v, bt, lens, ks, vs in ragged_cases(device, gen):
        ref = paged_decode_ref(q, k, v, bt, lens, k_scale=ks, v_scale=vs)
        prod_err = (product(q, k, v, bt, lens, k_scale=ks, v_scale=vs).double() - ref).abs().max().item()
        for splits in (1, 3):
            for name, decode in decodes.items():
                try:
                    err = (decode(q, k, v, bt, lens, ks, vs, splits).double() - ref).abs().max().item()
                    print(f"check {label} splits={splits} {name}: gluon err {err:.3e} product err {prod_err:.3e}")
                except Exception as exc:  # noqa: BLE001 - a probe reports and goes on
                    print(f"check FAILED {label} splits={splits} {name}: {type(exc).__name__}: {str(exc)[:400]}")


def print_rows(title: str, names: list[str], graph_rounds: list[list[float]]) -> None:
    """The timing table: median graph us of each method and its ratio to the first (the bf16 decode)."""
    bf16 = median(graph_rounds[0])
    print(title)
    for name, rounds in zip(names, graph_rounds):
        us = median(rounds)
        print(f"  {name:18s} {us:8.1f} us  over_bf16 {us / bf16:.3f}  rounds {[round(x, 1) for x in rounds]}")


def time_rows(title: str, runners: dict[str, Callable[[], torch.Tensor]], rounds: int) -> None:
    names = list(runners)
    timed = interleaved_times([runners[n] for n in names], rounds)
    print_rows(title, names, [graph for graph, _, _ in timed])


def bench_decodes(decodes: dict[str, Decode], rounds: int, rows=BENCH_ROWS, extra=None) -> None:
    """Per row: each decode's max abs difference from the product's fp8 decode, then graph us (the kernel alone,
    split partials unmerged) beside the bf16 and fp8 product decodes and `extra(k8, v8, bt, lens, splits)`'s runners."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for num_seqs, context, hkv in rows:
        case = make_decode_case(num_seqs, context, hkv, gen)
        k8, ks, v8, vs = fp8_copy(case)
        splits, config = choose_launch(num_seqs, hkv, context, HEAD_DIM, 1, sms, NUM_Q_HEADS // hkv)
        bt, lens, q = case.block_tables, case.seq_lens, case.q
        prod = paged_decode(q, k8, v8, bt, lens, k_scale=ks, v_scale=vs)
        runners = {
            "decode_bf16": lambda: paged_decode(q, case.k_cache, case.v_cache, bt, lens),
            "decode_fp8": lambda: paged_decode(q, k8, v8, bt, lens, k_scale=ks, v_scale=vs),
        }
        if extra is not None:
            runners.update(extra(k8, v8, bt, lens, splits))
        for name, decode in decodes.items():
            try:
                diff = (decode(q, k8, v8, bt, lens, ks, vs, splits).float() - prod.float()).abs().max().item()
                print(f"  {num_seqs}x{context} {name} vs product max abs diff {diff:.2e}")
            except Exception as exc:  # noqa: BLE001
                print(f"  {name} FAILED {type(exc).__name__}: {str(exc)[:300]}")
                continue
            runners[name] = lambda decode=decode: decode(q, k8, v8, bt, lens, ks, vs, splits, merge=False)
        time_rows(f"row {num_seqs}x{context}x{hkv} fp8 product splits {splits} {config}", runners, rounds)


def split_decode(ws_decode, **launch) -> Decode:
    """A `Decode` from a probe's `ws_decode(q, k, v, bt, lens, k_scale, v_scale, num_splits, **launch)`, which returns
    (out, split partials, LSEs): merged in torch where split, unless merge=False (the kernel alone, for timing)."""
    def decode(q, k, v, bt, lens, ks, vs, splits, merge=True):
        out, ws, lse = ws_decode(q, k, v, bt, lens, ks, vs, splits, **launch)
        return merge_ref(ws, lse, q.dtype) if merge and splits > 1 else out
    return decode
