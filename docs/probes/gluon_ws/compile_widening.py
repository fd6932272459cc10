import sys, re, subprocess
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
import gluon_decode2 as g
fn = g._ws16_decode_kernel
names = fn.arg_names
types = dict(q_ptr="*bf16", k_ptr="*fp8e4nv", v_ptr="*fp8e4nv", bt_ptr="*i32", lens_ptr="*i32", out_ptr="*bf16",
             ws_ptr="*fp32", lse_ptr="*fp32", ks_ptr="*fp32", vs_ptr="*fp32", qk_scale="fp32")
def build(copies=4, nb=2, mx=128, direct=False, cr=208):
    sig = {n: types.get(n, "i32") for n in names}
    cons = dict(GROUP=4, HEAD_DIM=128, BLOCK_SIZE=16, COPIES=copies, NUM_BUF=nb, UNITS=4, SPLIT=True, DIRECT=direct, CONSUMER_REGS=cr, stride_scale=0)
    for k in cons: sig[k] = "constexpr"
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names if n not in cons and (types.get(n, "i32").startswith("*") or n.startswith("stride") and n != "stride_bt")}
    ck = triton.compile(GluonASTSource(fn, sig, {(names.index(k),): v for k, v in cons.items()}, attrs), target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=mx))
    open("/tmp/f.cubin", "wb").write(ck.asm["cubin"]); open("/tmp/f.ptx", "w").write(ck.asm["ptx"])
    ru = subprocess.run(["/tmp/t36/triton/backends/nvidia/bin/cuobjdump", "-res-usage", "/tmp/f.cubin"], capture_output=True, text=True).stdout
    sass = subprocess.run(["/tmp/t36/triton/backends/nvidia/bin/cuobjdump", "-sass", "/tmp/f.cubin"], capture_output=True, text=True).stdout
    open("/tmp/f.sass", "w").write(sass)
    print(copies, nb, mx, direct, cr, re.search(r"REG:\d+ STACK:\d+", ru).group(0), "smem", ck.metadata.shared,
          "HMMA", sass.count("HMMA"), "STL", sass.count("STL"), "LDSM", sass.count("LDSM"), "setmaxnreg", sorted(set(re.findall(r"setmaxnreg\.\w+\.sync\.aligned\.u32\s+(\d+)", ck.asm["ptx"]))))
import ast
for a in [dict(copies=3, nb=2), dict(copies=3, nb=2, direct=True), dict(copies=4, nb=1), dict(copies=4, nb=1, direct=True), dict(copies=2, nb=2, direct=True)]:
    try: build(**a)
    except Exception as e:
        c = e
        while c.__cause__ or c.__context__: c = c.__cause__ or c.__context__
        print(a, "FAILED", str(e)[-600:].replace("\n", " | "), "|| root:", str(c)[:300])
