import sys, re, subprocess
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
import gluon_decode as g
fn = g._ws_decode_kernel
names = fn.arg_names
types = dict(q_ptr="*bf16", k_ptr="*fp8e4nv", v_ptr="*fp8e4nv", bt_ptr="*i32", lens_ptr="*i32", out_ptr="*bf16",
             ws_ptr="*fp32", lse_ptr="*fp32", ks_ptr="*fp32", vs_ptr="*fp32", qk_scale="fp32")
def build(split=True, step=32, nb=4, mx=128, vec=1, early=0):
    sig = {n: types.get(n, "i32") for n in names}
    cons = dict(GROUP=4, HEAD_DIM=128, BLOCK_SIZE=16, STEP=step, NUM_BUF=nb, UNITS=4, SPLIT=split, SMEM_VEC=vec, EARLY=early, stride_scale=0)
    for k in cons: sig[k] = "constexpr"
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names if n not in cons and (types.get(n, "i32").startswith("*") or n.startswith("stride") and n != "stride_bt")}
    ck = triton.compile(GluonASTSource(fn, sig, {(names.index(k),): v for k, v in cons.items()}, attrs), target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=mx))
    open("/tmp/d.cubin", "wb").write(ck.asm["cubin"]); open("/tmp/d.ttgir", "w").write(ck.asm["ttgir"]); open("/tmp/d.ptx", "w").write(ck.asm["ptx"])
    ru = subprocess.run(["/tmp/t36/triton/backends/nvidia/bin/cuobjdump", "-res-usage", "/tmp/d.cubin"], capture_output=True, text=True).stdout
    sass = subprocess.run(["/tmp/t36/triton/backends/nvidia/bin/cuobjdump", "-sass", "/tmp/d.cubin"], capture_output=True, text=True).stdout
    open("/tmp/d.sass", "w").write(sass)
    print(split, step, nb, mx, vec, early, re.search(r"REG:\d+ STACK:\d+ SHARED:\d+ LOCAL:\d+", ru).group(0), "smem", ck.metadata.shared,
          "HMMA", sass.count("HMMA"), "LDS.U8", sass.count("LDS.U8"), "LDSM", sass.count("LDSM"), "setmaxnreg", sorted(set(re.findall(r"setmaxnreg\.\w+\.sync\.aligned\.u32\s+(\d+)", ck.asm["ptx"]))))
for a in [dict(step=32, nb=3, early=0), dict(step=16, nb=4, early=2), dict(step=16, nb=4, early=3)]:
    build(**a)
