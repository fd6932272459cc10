import sys, re, subprocess
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
import gluon_decode2 as g
fn = g._ws_decode_kernel
names = fn.arg_names
types = dict(q_ptr="*bf16", k_ptr="*fp8e4nv", v_ptr="*fp8e4nv", bt_ptr="*i32", lens_ptr="*i32", out_ptr="*bf16",
             ws_ptr="*fp32", lse_ptr="*fp32", ks_ptr="*fp32", vs_ptr="*fp32", qk_scale="fp32")
def build(split=True, step=16, nb=4, mx=128, early=2, cr=216, swap=False):
    sig = {n: types.get(n, "i32") for n in names}
    cons = dict(GROUP=4, HEAD_DIM=128, BLOCK_SIZE=16, STEP=step, NUM_BUF=nb, UNITS=4, SPLIT=split, EARLY=early, CONSUMER_REGS=cr, SWAP=swap, GROUP_N=8, stride_scale=0)
    for k in cons: sig[k] = "constexpr"
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names if n not in cons and (types.get(n, "i32").startswith("*") or n.startswith("stride") and n != "stride_bt")}
    ck = triton.compile(GluonASTSource(fn, sig, {(names.index(k),): v for k, v in cons.items()}, attrs), target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=mx))
    open("/tmp/e.cubin", "wb").write(ck.asm["cubin"]); open("/tmp/e.ptx", "w").write(ck.asm["ptx"])
    ru = subprocess.run(["/tmp/t36/triton/backends/nvidia/bin/cuobjdump", "-res-usage", "/tmp/e.cubin"], capture_output=True, text=True).stdout
    sass = subprocess.run(["/tmp/t36/triton/backends/nvidia/bin/cuobjdump", "-sass", "/tmp/e.cubin"], capture_output=True, text=True).stdout
    open("/tmp/e.sass", "w").write(sass)
    print(split, step, nb, mx, early, cr, swap, re.search(r"REG:\d+ STACK:\d+", ru).group(0), "smem", ck.metadata.shared,
          "HMMA", sass.count("HMMA"), "BAR", sass.count("BAR."), "STL", sass.count("STL"), "setmaxnreg", sorted(set(re.findall(r"setmaxnreg\.\w+\.sync\.aligned\.u32\s+(\d+)", ck.asm["ptx"]))), re.findall(r"\.reqntid \d+", ck.asm["ptx"]))
for a in [dict(swap=True), dict(swap=True, mx=80, cr=136), dict(swap=True, mx=80, cr=136, nb=3), dict(swap=True, mx=80, cr=128, nb=3), dict(swap=True, mx=72, cr=120, nb=3)]:
    try: build(**a)
    except Exception as e: print(a, "FAILED", str(e)[:1500])
