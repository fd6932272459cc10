"""Build the probes' kernels for sm_90a without a GPU and print what each costs: registers and stack a thread (of
the launch; `setmaxnreg` moves them between partitions), shared memory, SASS instructions and a digest of their
opcodes (to tell a refactor that changes nothing from one that does).

`python3 docs/probes/gluon_ws/compile_probes.py` under Triton 3.6 or 3.9 (`docs/probes/sm90_build.py` reads the
builds)."""
import hashlib
import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import triton  # noqa: E402
from sm90_build import SM90, registers_and_opcodes  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402

TYPES = dict(q_ptr="*bf16", k_ptr="*fp8e4nv", v_ptr="*fp8e4nv", bt_ptr="*i32", lens_ptr="*i32", out_ptr="*bf16",
             ws_ptr="*fp32", lse_ptr="*fp32", ks_ptr="*fp32", vs_ptr="*fp32", qk_scale="fp32")


def build(module: str, kernel: str, constexprs: dict, num_warps: int, maxnreg: int | None = None) -> str:
    fn = getattr(importlib.import_module(module), kernel)
    names = fn.arg_names
    sig = {n: "constexpr" if n in constexprs else TYPES.get(n, "*fp32" if n == "out_ptr" else "i32") for n in names}
    divisible = {(names.index(n),): [["tt.divisibility", 16]] for n in names if n not in constexprs
                 and (sig[n].startswith("*") or (n.startswith("stride") and n != "stride_bt"))}
    src = GluonASTSource(fn, sig, {(names.index(k),): v for k, v in constexprs.items()}, divisible)
    options = dict(num_warps=num_warps) | ({"maxnreg": maxnreg} if maxnreg else {})
    compiled = triton.compile(src, target=SM90, options=options)
    regs, ops = registers_and_opcodes(compiled)
    digest = hashlib.md5(" ".join(ops).encode()).hexdigest()[:10]
    return f"{regs} shared {compiled.metadata.shared} sass {len(ops)} HMMA {ops.count('HMMA.16816.F32')} digest {digest}"


if __name__ == "__main__":
    base = dict(HEAD_DIM=128, BLOCK_SIZE=16, stride_scale=0)
    decode = dict(base, GROUP=4, STEP=16, NUM_BUF=4, UNITS=4, SPLIT=True)
    builds = [
        ("gluon_read", "_ring_read_kernel", dict(HEAD_DIM=128, BLOCK_SIZE=16, NUM_SLOTS=8, STEP_SLOTS=2), 1, None),
        ("gluon_read", "_ws_read_kernel", dict(HEAD_DIM=128, BLOCK_SIZE=16, NUM_SLOTS=4, EMPTY_COUNT=1,
                                               PRODUCER_REGS=40, UNITS=4), 4, 128),
        ("gluon_decode", "_ws_decode_kernel", dict(decode, SMEM_VEC=1, EARLY=2), 4, 128),
    ] + [("gluon_decode2", "_ws_decode_kernel", dict(decode, EARLY=early, CONSUMER_REGS=regs, SWAP=swap, GROUP_N=8),
          4, 128) for early, swap, regs in ((2, False, 216), (5, False, 232), (2, True, 216), (0, False, 216))]
    for module, kernel, constexprs, num_warps, maxnreg in builds:
        shown = {k: v for k, v in constexprs.items() if k in ("STEP", "NUM_BUF", "EARLY", "SWAP", "CONSUMER_REGS",
                                                              "NUM_SLOTS", "STEP_SLOTS")}
        print(f"{module}.{kernel} {shown}: {build(module, kernel, constexprs, num_warps, maxnreg)}")
