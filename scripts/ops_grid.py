"""Per-operator GPU times for `sim.ops_fit`: bf16 linears at Llama-2-7B / Llama-3-8B shapes (and their lm heads)
and the elementwise ops of a layer, tokens 1..4096, written to $OUT/ops-grid-h200.csv (rename for another card).

Each point: a CUDA graph of R back-to-back calls (GEMM weights rotated over copies so that more than 2x the L2
is streamed, as consecutive layers do), replayed 7 times after 2 warm-ups; the median replay time / R. Kernel
time without host launch gaps, as a CUDA-graph decode step runs. Usage on a GPU machine: `python3
scripts/ops_grid.py` (about 30 s on an H200). Produced data/ops/ops-grid-h200.csv (2026-12-02)."""
import csv, datetime, math, os, sys, time
import torch
import torch.nn.functional as F

dev = torch.device("cuda")
torch.manual_seed(0)
props = torch.cuda.get_device_properties(dev)
name = props.name
OUT = os.environ.get("OUT", ".")
TOKENS = ([1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128] + list(range(144, 513, 16))
          + list(range(576, 1025, 64)) + list(range(1152, 4097, 128)))
GEMMS = [  # (label, K, N)
    ("llama2_qkv", 4096, 12288), ("o_proj", 4096, 4096), ("llama2_up", 4096, 22016), ("llama2_down", 11008, 4096),
    ("llama3_qkv", 4096, 6144), ("llama3_up", 4096, 28672), ("llama3_down", 14336, 4096),
    ("llama2_head", 4096, 32000), ("llama3_head", 4096, 128256),
]
STREAM_BYTES = 160e6  # > 2x the 60 MB L2


def time_graph(fn, reps):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(2):
            fn(i)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(reps):
            fn(i)
    times = []
    for i in range(9):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); b.record(); b.synchronize()
        if i >= 2:
            times.append(a.elapsed_time(b) / reps * 1e3)  # us per call
    times.sort()
    del g
    return times[len(times) // 2]


rows = []
t0 = time.time()
for label, K, N in GEMMS:
    wbytes = K * N * 2
    copies = max(2, math.ceil(STREAM_BYTES / wbytes))
    ws = [torch.randn(N, K, device=dev, dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
    xmax = torch.randn(max(TOKENS), K, device=dev, dtype=torch.bfloat16)
    ymax = torch.empty(max(TOKENS), N, device=dev, dtype=torch.bfloat16)
    for M in TOKENS:
        x, y = xmax[:M], ymax[:M]
        est_us = max(2 * M * K * N / 700e12, wbytes / 3.5e12) * 1e6 + 3
        reps = int(min(64, max(copies, 3000 / est_us)))
        us = time_graph(lambda i: torch.mm(x, ws[i % copies].t(), out=y), reps)
        rows.append(("linear", label, M, K, N, us))
    del ws, xmax, ymax
    torch.cuda.empty_cache()
    print(label, f"{time.time()-t0:.1f}s", flush=True)

# Elementwise ops as the executor runs them (torch eager kernels), at both models' widths.
H = 4096
cos = torch.randn(max(TOKENS), 64, device=dev, dtype=torch.bfloat16)
sin = torch.randn(max(TOKENS), 64, device=dev, dtype=torch.bfloat16)
wn = torch.ones(H, device=dev, dtype=torch.bfloat16)


def rope(q, c, s):
    x = q.view(q.shape[0], -1, 128)
    x1, x2 = x[..., :64], x[..., 64:]
    c, s = c[:, None, :], s[:, None, :]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


ELEM = [  # (label, width tuple, builder)
    ("rms_norm", H), ("add", H), ("silu_mul_11008", 11008), ("silu_mul_14336", 14336),
    ("rope_8192", 8192), ("rope_5120", 5120),
]
for label, W in ELEM:
    n_copies = 1
    for M in TOKENS:
        nbytes = M * W * 2
        copies = max(2, math.ceil(STREAM_BYTES / max(nbytes, 1)))
        copies = min(copies, 64)
        if label == "rms_norm":
            xs = [torch.randn(M, W, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
            fn = lambda i: F.rms_norm(xs[i % copies], (W,), wn, eps=1e-5)
        elif label == "add":
            xs = [torch.randn(M, W, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
            r = torch.randn(M, W, device=dev, dtype=torch.bfloat16)
            fn = lambda i: xs[i % copies].add_(r)
        elif label.startswith("silu"):
            xs = [torch.randn(M, 2 * W, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
            fn = lambda i: F.silu(xs[i % copies][:, :W]).mul_(xs[i % copies][:, W:])
        else:
            xs = [torch.randn(M, W, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
            fn = lambda i: rope(xs[i % copies], cos[:M], sin[:M])
        us = time_graph(fn, max(copies, 32))
        rows.append(("elementwise", label, M, W, 0, us))
        del xs
    torch.cuda.empty_cache()
    print(label, f"{time.time()-t0:.1f}s", flush=True)

path = os.path.join(OUT, "ops-grid-h200.csv")
with open(path, "w", newline="") as f:
    f.write(f"# measured {datetime.date.today()} on {name} ({props.multi_processor_count} SMs), torch {torch.__version__}, "
            f"bf16, CUDA-graph replay of back-to-back calls, median of 7 replays\n")
    w = csv.writer(f)
    w.writerow(["kind", "op", "tokens", "k", "n", "us"])
    for r in rows:
        w.writerow(r[:5] + (f"{r[5]:.3f}",))
print("rows", len(rows), f"{time.time()-t0:.1f}s")
