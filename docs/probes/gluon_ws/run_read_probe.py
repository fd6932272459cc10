"""On the H200: Gluon read structures (item 54) beside the fp8 decode and paged_read: each program's sums checked
against `paged_read_ref`, then graph us. `PYTHONPATH=$PWD python3 docs/probes/gluon_ws/run_read_probe.py [rounds]`."""
import sys, time
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
import torch
from kernels.bench_common import make_decode_case, fp8_copy, NUM_Q_HEADS, HEAD_DIM
from probe_common import time_rows
from kernels.decode import paged_decode
from kernels.decode_config import choose_launch, DecodeConfig
from kernels.paged_read import paged_read, paged_read_ref
import gluon_read as g

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
gen = torch.Generator(device="cuda").manual_seed(0)
sms = torch.cuda.get_device_properties(0).multi_processor_count
print(torch.cuda.get_device_properties(0).name, time.strftime("%H:%M:%S", time.gmtime()))
for num_seqs, context, hkv in ((16, 16384, 8), (256, 2048, 8)):
    case = make_decode_case(num_seqs, context, hkv, gen)
    k8, ks, v8, vs = fp8_copy(case)
    s16, c16 = choose_launch(num_seqs, hkv, context, HEAD_DIM, 2, sms, NUM_Q_HEADS // hkv)
    s8, c8 = choose_launch(num_seqs, hkv, context, HEAD_DIM, 1, sms, NUM_Q_HEADS // hkv)
    bt, lens = case.block_tables, case.seq_lens
    ref = paged_read_ref(k8, v8, bt, lens, num_splits=s8, block_n=32).float()
    runners = {
        "decode_bf16": lambda: paged_decode(case.q, case.k_cache, case.v_cache, bt, lens),
        "decode_fp8": lambda: paged_decode(case.q, k8, v8, bt, lens, k_scale=ks, v_scale=vs),
        "read_fp8_same": lambda: paged_read(k8, v8, bt, lens, num_splits=s8, config=c8),
        "read_fp8_16x1x5": lambda: paged_read(k8, v8, bt, lens, num_splits=s8, config=DecodeConfig(16, 1, 5)),
    }
    for slots, step in ((8, 1), (8, 2), (10, 2), (12, 2), (8, 4)):
        runners[f"ring_{slots}_{step}"] = (lambda slots=slots, step=step: g.ring_read(k8, v8, bt, lens, s8, slots, step))
    for slots, mx in ((4, 128), (6, 128), (6, 96)):
        runners[f"ws_{slots}_r{mx}"] = (lambda slots=slots, mx=mx: g.ws_read(k8, v8, bt, lens, s8, slots, maxnreg=mx))
    for name, fn in runners.items():
        if name.startswith(("ring", "ws", "read")):
            try:
                out = fn(); torch.cuda.synchronize()
                err = ((out - ref).abs().max() / ref.abs().max()).item()
                print(f"check {name}: max rel err {err:.2e}")
            except Exception as exc:
                print(f"check {name}: FAILED {type(exc).__name__}: {str(exc)[:300]}")
                runners[name] = None
    time_rows(f"row {num_seqs}x{context} splits bf16 {s16} {c16} fp8 {s8} {c8}",
              {n: f for n, f in runners.items() if f is not None}, rounds)
