"""On the H200: gluon_decode2 (independent one-warp consumers; swapped; widening producer): correctness against
the float64 reference, then graph us beside the product. Edit `variants` for other forms: (step, buffers, EARLY,
maxnreg, consumer registers, swapped) or ('w16', copies, buffers, direct)."""
import sys, time
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
import torch
from kernels.bench_common import make_decode_case, fp8_copy, interleaved_times, median, NUM_Q_HEADS, HEAD_DIM
from kernels.decode import paged_decode, paged_decode_ref
from kernels.decode_config import choose_launch, DecodeConfig
from kernels.paged_read import paged_read
import gluon_decode as g1
import gluon_decode2 as g
import gluon_read as gr

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
variants = [(16, 4, 2, 128, 216, False), (16, 4, 5, 128, 232, False), (16, 6, 5, 128, 232, False)]
print(torch.cuda.get_device_properties(0).name, time.strftime("%H:%M:%S", time.gmtime()))
gen = torch.Generator(device="cuda").manual_seed(1)

def runner(q, k, v, bt, lens, ks, vs, splits, var):
    if var[0] == 'w16':
        _, copies, nb, direct = var
        return lambda: g.ws16_decode(q, k, v, bt, lens, ks, vs, splits, copies=copies, num_buf=nb, direct=bool(direct))
    step, nb, early, mx, cr, sw = var
    return lambda: g.ws_decode(q, k, v, bt, lens, ks, vs, splits, step=step, num_buf=nb, early=early, maxnreg=mx, consumer_regs=cr, swap=sw)

def gl_decode(q, k, v, bt, lens, ks, vs, splits, var):
    out, ws, lse = runner(q, k, v, bt, lens, ks, vs, splits, var)()
    return g.merge_ref(ws, lse, q.dtype) if splits > 1 else out

# correctness: ragged lengths, tails, empty splits, per-tensor and per-head scales
for hkv, lens_list in ((8, [1, 37, 300, 1024]), (32, [5, 200]), (4, [129, 16])):
    bs, hq = 16, 32
    lens = torch.tensor(lens_list, dtype=torch.int32, device="cuda")
    nblk = [-(-n // bs) for n in lens_list]
    total = sum(nblk) + 3
    k = (torch.randn(total, bs, hkv, 128, device="cuda", generator=gen) * 2).to(torch.float8_e4m3fn)
    v = (torch.randn(total, bs, hkv, 128, device="cuda", generator=gen) * 2).to(torch.float8_e4m3fn)
    perm = torch.randperm(total, device="cuda", generator=gen).to(torch.int32)
    bt = torch.zeros(len(lens_list), max(nblk), dtype=torch.int32, device="cuda")
    o = 0
    for i, n in enumerate(nblk):
        bt[i, :n] = perm[o:o + n]; o += n
    q = torch.randn(len(lens_list), hq, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    for ks, vs in ((torch.tensor([0.7], device="cuda"), torch.tensor([1.3], device="cuda")),
                   (torch.rand(hkv, device="cuda", generator=gen) + 0.5, torch.rand(hkv, device="cuda", generator=gen) + 0.5)):
        ref = paged_decode_ref(q, k, v, bt, lens, k_scale=ks, v_scale=vs)
        prod = paged_decode(q, k, v, bt, lens, k_scale=ks, v_scale=vs)
        for splits in (1, 3):
            for var in variants:
                try:
                    out = gl_decode(q, k, v, bt, lens, ks, vs, splits, var)
                    torch.cuda.synchronize()
                    err = (out.double() - ref).abs().max().item()
                    print(f"check hkv={hkv} scales={ks.numel()} splits={splits} {var}: gluon err {err:.3e} product err {(prod.double() - ref).abs().max().item():.3e}")
                except Exception as exc:
                    print(f"check FAILED {var}: {type(exc).__name__}: {str(exc)[:400]}")

gen = torch.Generator(device="cuda").manual_seed(0)
sms = torch.cuda.get_device_properties(0).multi_processor_count
for num_seqs, context, hkv in ((16, 16384, 8), (256, 2048, 8)):
    case = make_decode_case(num_seqs, context, hkv, gen)
    k8, ks, v8, vs = fp8_copy(case)
    s8, c8 = choose_launch(num_seqs, hkv, context, HEAD_DIM, 1, sms, NUM_Q_HEADS // hkv)
    bt, lens, q = case.block_tables, case.seq_lens, case.q
    prod = paged_decode(q, k8, v8, bt, lens, k_scale=ks, v_scale=vs)
    runners = {
        "decode_bf16": lambda: paged_decode(q, case.k_cache, case.v_cache, bt, lens),
        "decode_fp8": lambda: paged_decode(q, k8, v8, bt, lens, k_scale=ks, v_scale=vs),
        "ws_read_4": lambda: gr.ws_read(k8, v8, bt, lens, s8, 4),

    }
    for var in variants:
        for splits in sorted({s8}):
            name = "gl_" + "_".join(map(str, var))
            try:
                out = gl_decode(q, k8, v8, bt, lens, ks, vs, splits, var)
                diff = (out.float() - prod.float()).abs().max().item()
                print(f"  {num_seqs}x{context} {name} vs product max abs diff {diff:.2e}")
            except Exception as exc:
                print(f"  {name} FAILED {type(exc).__name__}: {str(exc)[:300]}")
                continue
            runners[name] = runner(q, k8, v8, bt, lens, ks, vs, splits, var)
    names = list(runners)
    timed = interleaved_times([runners[n] for n in names], rounds)
    bf16 = median(timed[0][0])
    print(f"row {num_seqs}x{context}x{hkv} fp8 product splits {s8} {c8}")
    for n, (graph, eager, how) in zip(names, timed):
        us = median(graph)
        print(f"  {n:18s} {us:8.1f} us  over_bf16 {us / bf16:.3f}  rounds {[round(x, 1) for x in graph]}")
