"""In the CPU interpreter (TRITON_INTERPRET=1, set here): the stream-K probe against `paged_decode_ref` (float64)
on fp16 and fp8 caches, grids from 3 to 40 programs over ragged tails, programs covering 1-2 pairs; twice each, so
the arrival counters must be left at zero. `python3 docs/probes/decode_timeline/check_streamk.py`."""
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from streamk import StreamK  # noqa: E402

from kernels._common import fp8_scales, quantize_fp8  # noqa: E402
from kernels.decode import paged_decode_ref  # noqa: E402


CASES = ((2, 2, 100, 3), (3, 2, 64, 7), (1, 2, 200, 5), (4, 1, 40, 3), (2, 4, 96, 16), (2, 2, 33, 40))  # seqs,
# KV heads, context, programs asked


def make_case(num_seqs, num_kv_heads, context, fp8, block_size=16, head_dim=64, num_q_heads=8, seed=0):
    """fp16 (or e4m3, per-tensor scales) K/V over permuted blocks, every sequence `context` tokens long."""
    gen = torch.Generator().manual_seed(seed)
    used = num_seqs * -(-context // block_size)
    shape = (used + 3, block_size, num_kv_heads, head_dim)
    k = torch.randn(shape, generator=gen).half()
    v = torch.randn(shape, generator=gen).half()
    block_tables = torch.randperm(used + 3, generator=gen)[:used].view(num_seqs, -1).int()
    q = torch.randn(num_seqs, num_q_heads, head_dim, generator=gen).half()
    seq_lens = torch.full((num_seqs,), context, dtype=torch.int32)
    scales = {}
    if fp8:
        k_scale, v_scale = fp8_scales(k), fp8_scales(v)
        k = quantize_fp8(k.flatten(0, 1), k_scale).view(shape)
        v = quantize_fp8(v.flatten(0, 1), v_scale).view(shape)
        scales = dict(k_scale=k_scale, v_scale=v_scale)
    return q, k, v, block_tables, seq_lens, scales


def main() -> None:
    worst = 0.0
    for num_seqs, num_kv_heads, context, programs in CASES:
        for fp8 in (False, True):
            q, k, v, block_tables, seq_lens, scales = make_case(num_seqs, num_kv_heads, context, fp8)
            sk = StreamK(num_seqs, q.shape[1], num_kv_heads, q.shape[2], 16, context, programs, 32, 1, 1, fp8,
                         q.device, q.dtype)
            ref = paged_decode_ref(q.double(), k, v, block_tables, seq_lens, **scales)
            for _ in range(2):  # a second launch finds the arrival counters at zero or merges wrongly
                err = (sk(q, k, v, block_tables, seq_lens, **scales).double() - ref).abs().max().item()
                assert err < 2e-3, (num_seqs, num_kv_heads, context, programs, fp8, err)
                worst = max(worst, err)
            assert int(sk.sem.abs().sum()) == 0
            print(f"{num_seqs} seqs x {num_kv_heads} KV heads x {context} tokens, {sk.programs} programs, "
                  f"{'fp8' if fp8 else 'fp16'}: max abs error {err:.2e}")
    print(f"all agree with float64; worst {worst:.2e}")


if __name__ == "__main__":
    main()
