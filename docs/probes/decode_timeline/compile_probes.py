"""Build for sm_90a without a GPU, and print registers and stack a thread, shared memory and SASS size of: the product's
decode at its automatic launch on every row of the benchmark (bf16 and fp8 caches), the stamped copy on 16 x 16384
(the stamps must leave the product's build alone: registers within a few) and the stream-K probe (its registers say
how many programs an SM fit).
`PYTHONPATH=$PWD python3 docs/probes/decode_timeline/compile_probes.py` under Triton 3.6 or 3.9."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import torch  # noqa: E402
import triton  # noqa: E402
from sm90_build import SM90, registers_and_opcodes  # noqa: E402
from stamped import _build_kernel  # noqa: E402
from streamk import StreamK, _streamk_kernel  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import kernels.decode  # noqa: E402
from kernels import decode_launch  # noqa: E402
from kernels.bench_common import DECODE_GRID, HEAD_DIM, NUM_Q_HEADS  # noqa: E402

ALIGNED_INTS = {"stride_qs", "stride_kb", "stride_kt", "stride_kh", "stride_bt", "stride_os", "stride_oh",
                "lse_offset", "tiles_per_pair"}  # what Triton sees divisible by 16 at the benchmark's shapes


def build(fn, meta: dict, kv_type: str) -> str:
    meta = dict(meta)
    options = dict(num_warps=meta.pop("num_warps"), num_stages=meta.pop("num_stages"))
    if "maxnreg" in meta:
        options["maxnreg"] = meta.pop("maxnreg")
    names = fn.arg_names
    types = dict(q_ptr="*bf16", k_ptr=kv_type, v_ptr=kv_type, bt_ptr="*i32", lens_ptr="*i32", out_ptr="*bf16",
                 ws_ptr="*fp32", sem_ptr="*i32", ks_ptr="*fp32", vs_ptr="*fp32", ts_ptr="*i64", qk_scale="fp32")
    sig = {n: "constexpr" if n in meta else types.get(n, "i32") for n in names}
    aligned = {(names.index(n),): [["tt.divisibility", 16]] for n in names
               if n not in meta and (sig[n].startswith("*") or n in ALIGNED_INTS)}
    src = ASTSource(fn, sig, {(names.index(k),): v for k, v in meta.items()}, aligned)
    compiled = triton.compile(src, target=SM90, options=options)
    registers, ops = registers_and_opcodes(compiled)
    return f"{registers} shared {compiled.metadata.shared} sass {len(ops)}"


def main() -> None:
    decode_launch._num_sms = lambda index: 132  # an H200's SMs, for the automatic launch
    stamped = _build_kernel()
    for num_seqs, context, num_kv_heads in DECODE_GRID:
        for fp8 in (False, True):
            p = decode_launch.plan.__wrapped__(num_seqs, NUM_Q_HEADS, num_kv_heads, HEAD_DIM, 16, context,
                                               torch.bfloat16, fp8, 1 if fp8 else 2, torch.device("cuda", 0), None,
                                               None)
            kv_type = "*fp8e4nv" if fp8 else "*bf16"
            launch = f"{p.meta['BLOCK_N']}x{p.meta['num_warps']}x{p.meta['num_stages']}, {p.num_splits} splits"
            line = (f"{num_seqs} x {context} ({num_kv_heads}) {'fp8' if fp8 else 'bf16'} decode {launch}: product "
                    f"{build(kernels.decode._decode_kernel, p.meta, kv_type)}")
            if (num_seqs, context, num_kv_heads) == (16, 16384, 8):
                line += f"; stamped {build(stamped, p.meta, kv_type)}"
            print(line)
    for fp8, block_n, stages in ((True, 32, 5), (True, 16, 5), (False, 32, 3)):
        sk = StreamK(16, 32, 8, 128, 16, 16384, 8 * 132, block_n, 1, stages, fp8, torch.device("cpu"))
        print(f"stream-K {'fp8' if fp8 else 'bf16'} {block_n}x1x{stages}: "
              f"{build(_streamk_kernel, sk.meta | dict(ts_ptr=None, STAMP=False), '*fp8e4nv' if fp8 else '*bf16')}")


if __name__ == "__main__":
    main()
