"""Compile a gluon kernel for sm_90a without a GPU; print regs/smem and dump PTX."""
import sys, importlib
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource

def build(fn, signature, constexprs, num_warps=1, dump=None):
    sig = dict(signature)
    for k in constexprs: sig[k] = "constexpr"
    const = {(fn.arg_names.index(k),): v for k, v in constexprs.items()}
    attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k, t in signature.items()
             if t.startswith("*") or (k.startswith("stride") and k not in ("stride_bt",))}
    src = GluonASTSource(fn, sig, const, attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))
    print(fn.__name__, "shared", ck.metadata.shared, "regs?", getattr(ck, "n_regs", None))
    if dump:
        open(dump + ".ptx", "w").write(ck.asm["ptx"])
        open(dump + ".ttgir", "w").write(ck.asm["ttgir"])
        if "cubin" in ck.asm: open(dump + ".cubin", "wb").write(ck.asm["cubin"])
    return ck
