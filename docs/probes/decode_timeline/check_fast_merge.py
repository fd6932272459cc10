"""In the CPU interpreter (TRITON_INTERPRET=1, set here): the ticket-first split end (`fast_merge.py`) against
`paged_decode_ref` (float64) and the product's own error, fp16 and fp8 caches, 2-5 splits, an empty last split
included; twice each, so both counters must be left at zero. `python3 docs/probes/decode_timeline/check_fast_merge.py`
"""
import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_streamk import make_case  # noqa: E402
from fast_merge import FastMergeDecode  # noqa: E402

from kernels.decode import paged_decode, paged_decode_ref  # noqa: E402
from kernels.decode_launch import plan  # noqa: E402

CASES = ((2, 2, 100, 3), (3, 2, 64, 4), (1, 2, 200, 5), (2, 1, 40, 3), (2, 4, 96, 2))  # seqs, KV heads, context, splits


def main() -> None:
    for num_seqs, num_kv_heads, context, splits in CASES:
        for fp8 in (False, True):
            q, k, v, block_tables, seq_lens, scales = make_case(num_seqs, num_kv_heads, context, fp8)
            p = plan(num_seqs, q.shape[1], num_kv_heads, q.shape[2], k.shape[1], block_tables.shape[1] * k.shape[1],
                     q.dtype, fp8, k.element_size(), q.device, splits, None)
            fast = FastMergeDecode(p, q.device)
            ref = paged_decode_ref(q.double(), k, v, block_tables, seq_lens, **scales)
            product_err = (paged_decode(q, k, v, block_tables, seq_lens, num_splits=splits, **scales).double()
                           - ref).abs().max().item()
            for _ in range(2):
                err = (fast(q, k, v, block_tables, seq_lens, **scales).double() - ref).abs().max().item()
                assert err <= product_err * 1.01 + 1e-6, (num_seqs, num_kv_heads, context, splits, fp8, err, product_err)
            assert int(fast.counters.abs().sum()) == 0
            print(f"{num_seqs} seqs x {num_kv_heads} KV heads x {context} tokens, {splits} splits, "
                  f"{'fp8' if fp8 else 'fp16'}: max abs error {err:.2e} (product {product_err:.2e})")


if __name__ == "__main__":
    main()
