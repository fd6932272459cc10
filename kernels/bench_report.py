"""Benchmark outputs: CSV, a PNG of decode bandwidth per method, and markdown tables (graph, eager, fp8,
prefill) with geomean ratios against each peer. Plain figures only: targets live in the docs, not here."""
from __future__ import annotations

import csv
import math
from pathlib import Path

from kernels.bench_common import FLUSH_BYTES

FIELDS = ("kind", "num_seqs", "context", "q_heads", "kv_heads", "method", "kv_dtype", "us", "eager_us", "gbs",
          "pct_copy", "tflops", "splits", "rel_err", "note", "us_rounds", "eager_rounds")
PEERS = ("two_pass", "sdpa_cudnn", "sdpa_flash", "gather_sdpa", "flex_paged", "flashinfer")
EAGER_PEERS = ("sdpa_flash", "sdpa_cudnn", "flashinfer")


def decode_table(rows: list[dict]) -> dict[tuple[int, int, int], dict[str, dict]]:
    """{(num_seqs, context, kv_heads): {method: row}} for the decode rows, in run order."""
    table: dict[tuple[int, int, int], dict[str, dict]] = {}
    for r in rows:
        if r["kind"] == "decode":
            table.setdefault((r["num_seqs"], r["context"], r["kv_heads"]), {})[r["method"]] = r
    return table


def geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else math.nan


def _us(m: dict, method: str, col: str = "us") -> float:
    return m.get(method, {}).get(col, math.nan)


def speedups(rows: list[dict], col: str = "us") -> dict[str, float]:
    """Geomean over the decode rows of peer time / one_pass time (> 1: ours faster), per peer."""
    t = decode_table(rows)
    return {peer: geomean([_us(m, peer, col) / _us(m, "one_pass", col) for m in t.values()]) for peer in PEERS}


def _f(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def markdown(rows: list[dict], meta: dict) -> str:
    t = decode_table(rows)
    identity = f" ({meta['identity']})" if meta.get("identity") else ""
    lines = [f"Card: **{meta['card']}**{identity}, {meta['date']}, torch {meta['torch']}, triton {meta['triton']}; "
             f"device-to-device copy {meta['copy_gbs']:.0f} GB/s (read + write).", "",
             f"CUDA-graph replay (GPU time; L2 flushed by a {FLUSH_BYTES >> 20} MiB read before each replay), "
             "microseconds:", "",
             "| seqs x len (kv heads) | one-pass | GB/s | % copy | splits | " + " | ".join(PEERS) + " |",
             "|---|---|---|---|---|" + "---|" * len(PEERS)]
    for (s, n, h), m in t.items():
        op = m.get("one_pass", {})
        lines.append(f"| {s} x {n} ({h}) | {_f(_us(m, 'one_pass'))} | {_f(op.get('gbs', math.nan), 0)} | "
                     f"{_f(op.get('pct_copy', math.nan))} | {op.get('splits', '')} | "
                     + " | ".join(_f(_us(m, k)) for k in PEERS) + " |")
    lines += ["", "Eager calls (`do_bench` median, host overhead included; median of the interleaved rounds), "
              "microseconds; ratio = one-pass over the faster of SDPA flash and cuDNN:", "",
              "| seqs x len (kv heads) | one-pass | " + " | ".join(EAGER_PEERS) + " | ratio |",
              "|---|---|" + "---|" * len(EAGER_PEERS) + "---|"]
    for (s, n, h), m in t.items():
        best = min(_us(m, "sdpa_flash", "eager_us"), _us(m, "sdpa_cudnn", "eager_us"))
        lines.append(f"| {s} x {n} ({h}) | {_f(_us(m, 'one_pass', 'eager_us'))} | "
                     + " | ".join(_f(_us(m, k, "eager_us")) for k in EAGER_PEERS)
                     + f" | {_f(_us(m, 'one_pass', 'eager_us') / best, 2)} |")
    lines += ["", "fp8 (e4m3) cache, per-tensor scales; graph us; % copy counts fp8 bytes; error vs float64 "
              "attention over the bf16 cache (the bf16 one-pass error in brackets):", "",
              "| seqs x len (kv heads) | bf16 us | fp8 us | fp8 / bf16 | fp8 % copy | rel. err vs exact | "
              "FlashInfer fp8 us |", "|---|---|---|---|---|---|---|"]
    for (s, n, h), m in t.items():
        f8 = m.get("one_pass_fp8", {})
        lines.append(f"| {s} x {n} ({h}) | {_f(_us(m, 'one_pass'))} | {_f(_us(m, 'one_pass_fp8'))} | "
                     f"{_f(_us(m, 'one_pass_fp8') / _us(m, 'one_pass'), 2)} | {_f(f8.get('pct_copy', math.nan))} | "
                     f"{f8.get('rel_err', math.nan):.1e} ({_us(m, 'one_pass', 'rel_err'):.1e}) | "
                     f"{_f(_us(m, 'flashinfer_fp8'))} |")
    lines += ["", "Prefill; rel. err against float64 causal attention over the bf16 cache (n/a: not causal):", "",
              "| prefill | method | graph us | eager us | TFLOP/s | rel. err vs exact | note |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "prefill":
            err = r.get("rel_err", math.nan)
            lines.append(f"| {r['num_seqs']} x 512 over {r['context']} | {r['method']} | {_f(r['us'])} | "
                         f"{_f(r['eager_us'])} | {_f(r['tflops'])} | {f'{err:.1e}' if math.isfinite(err) else 'n/a'} | "
                         f"{r['note']} |")
    graph, eager = speedups(rows, "us"), speedups(rows, "eager_us")
    lines += ["", "Geomean over the decode rows of peer time / one-pass time (> 1: one-pass faster):", "",
              "| peer | graph | eager |", "|---|---|---|"]
    lines += [f"| {p} | {_f(graph[p], 2)} | {_f(eager[p], 2)} |" for p in PEERS]
    notes = sorted({f"{r['method']}: {r['note']}" for r in rows if r["kind"] == "decode" and r["note"]})
    if notes:
        lines += ["", "Notes: " + "; ".join(notes)]
    return "\n".join(lines) + "\n"


def write_outputs(rows: list[dict], meta: dict, out: Path) -> None:
    with open(out / "kernels_bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("card", "date") + FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({"card": meta["card"], "date": meta["date"], **{k: r.get(k, "") for k in FIELDS}})
    (out / "kernels_bench.md").write_text(markdown(rows, meta))
    _plot(rows, meta, out / "kernels_bench.png")


def plotted_methods(table: dict[tuple[int, int, int], dict[str, dict]]) -> tuple[str, ...]:
    """The decode methods, in the report's order, that have a finite GB/s on some row: a peer that was skipped
    (`--skip-flex`) or could not run gets no bar and no legend entry."""
    return tuple(method for method in ("one_pass", "one_pass_fp8") + PEERS
                 if any(math.isfinite(m.get(method, {}).get("gbs", math.nan)) for m in table.values()))


def _plot(rows: list[dict], meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = decode_table(rows)
    methods = plotted_methods(t)
    labels = [f"{s}x{n}\nkv{h}" for s, n, h in t]
    fig, ax = plt.subplots(figsize=(15, 5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        ys = [m.get(method, {}).get("gbs", math.nan) for m in t.values()]
        ax.bar([x + i * width for x in range(len(labels))], ys, width, label=method)
    ax.axhline(meta["copy_gbs"], color="k", linestyle="--", linewidth=1, label="d2d copy")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels, fontsize=8)
    ax.set_ylabel("GB/s (K/V once + q + out; graph replay)")
    ax.set_title(f"Paged decode, bf16 q, 32 q heads, head dim 128, block 16 - {meta['card']}, {meta['date']}")
    ax.legend(fontsize=8, ncol=5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
