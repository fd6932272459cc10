"""Benchmark outputs: CSV, a PNG of decode bandwidth per method, and a markdown table with the issue's bars."""
from __future__ import annotations

import csv
import math
from pathlib import Path

FIELDS = ("kind", "num_seqs", "context", "q_heads", "kv_heads", "method", "us", "gbs", "pct_copy", "tflops",
          "splits", "rel_err", "note")
METHODS = ("one_pass", "two_pass", "sdpa_cudnn", "sdpa_flash", "gather_sdpa", "flex_paged")


def _decode_table(rows: list[dict]) -> dict[tuple[int, int, int], dict[str, dict]]:
    table: dict[tuple[int, int, int], dict[str, dict]] = {}
    for r in rows:
        if r["kind"] == "decode":
            table.setdefault((r["num_seqs"], r["context"], r["kv_heads"]), {})[r["method"]] = r
    return table


def _geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else math.nan


def bars(rows: list[dict]) -> list[tuple[str, float, float, bool]]:
    """(bar, measured, target, met) for each of the issue's bars."""
    t = _decode_table(rows)
    pct = lambda key: t.get(key, {}).get("one_pass", {}).get("pct_copy", math.nan)  # noqa: E731
    out = [(f"one-pass % of copy at ({s}, {n})", pct((s, n, 8)), target, False)
           for s, n, target in ((16, 16384, 80.0), (256, 2048, 80.0), (1, 32768, 60.0))]
    for (s, n, h), m in t.items():
        if n >= 4096 and "two_pass" in m and "one_pass" in m:
            out.append((f"one-pass speedup over two-pass at ({s}, {n})", m["two_pass"]["us"] / m["one_pass"]["us"], 2.0, False))
    for peer, target in (("flex_paged", 1.5), ("sdpa_cudnn", 0.9)):
        ratio = _geomean([m[peer]["us"] / m["one_pass"]["us"] for m in t.values() if peer in m and "one_pass" in m])
        out.append((f"geomean speedup over {peer}", ratio, target, False))
    pre = {(r["num_seqs"], r["method"]): r for r in rows if r["kind"] == "prefill"}
    for s in sorted({k[0] for k in pre}):
        if (s, "paged_prefill") in pre and (s, "sdpa_flash") in pre:
            ratio = pre[(s, "paged_prefill")]["tflops"] / pre[(s, "sdpa_flash")]["tflops"]
            out.append((f"prefill TFLOP/s vs SDPA flash, {s} seq(s) x 512 over 4096", ratio, 0.5, False))
    return [(name, v, target, bool(v >= target)) for name, v, target, _ in out]


def markdown(rows: list[dict], meta: dict) -> str:
    t = _decode_table(rows)
    lines = [f"Card: **{meta['card']}**, {meta['date']}, torch {meta['torch']}, triton {meta['triton']}; "
             f"device-to-device copy {meta['copy_gbs']:.0f} GB/s (read + write).", "",
             "| seqs x len (kv heads) | one-pass us | GB/s | % copy | splits | two-pass us | SDPA cuDNN us | "
             "SDPA flash us | gather+SDPA us | Flex paged us |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda m, k: f"{m[k]['us']:.1f}" if k in m and math.isfinite(m[k]["us"]) else "n/a"  # noqa: E731
    for (s, n, h), m in t.items():
        op = m.get("one_pass", {})
        lines.append(f"| {s} x {n} ({h}) | {fmt(m, 'one_pass')} | {op.get('gbs', math.nan):.0f} | "
                     f"{op.get('pct_copy', math.nan):.1f} | {op.get('splits', '')} | " +
                     " | ".join(fmt(m, k) for k in METHODS[1:]) + " |")
    lines += ["", "| prefill | method | us | TFLOP/s | note |", "|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "prefill":
            lines.append(f"| {r['num_seqs']} x 512 over {r['context']} | {r['method']} | {r['us']:.1f} | "
                         f"{r['tflops']:.1f} | {r['note']} |")
    lines += ["", "| bar | measured | target | met |", "|---|---|---|---|"]
    for name, v, target, met in bars(rows):
        lines.append(f"| {name} | {v:.2f} | {target:g} | {'yes' if met else '**no**'} |")
    notes = sorted({f"{r['method']}: {r['note']}" for r in rows if r["kind"] == "decode" and r["note"]})
    if notes:
        lines += ["", "Peer notes: " + "; ".join(notes)]
    return "\n".join(lines) + "\n"


def summarize(rows: list[dict], meta: dict) -> str:
    return markdown(rows, meta)


def write_outputs(rows: list[dict], meta: dict, out: Path) -> None:
    with open(out / "kernels_bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("card", "date") + FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({"card": meta["card"], "date": meta["date"], **r})
    (out / "kernels_bench.md").write_text(markdown(rows, meta))
    _plot(rows, meta, out / "kernels_bench.png")


def _plot(rows: list[dict], meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = _decode_table(rows)
    labels = [f"{s}x{n}\nkv{h}" for s, n, h in t]
    fig, ax = plt.subplots(figsize=(14, 5))
    width = 0.8 / len(METHODS)
    for i, method in enumerate(METHODS):
        ys = [m.get(method, {}).get("gbs", math.nan) for m in t.values()]
        ax.bar([x + i * width for x in range(len(labels))], ys, width, label=method)
    ax.axhline(meta["copy_gbs"], color="k", linestyle="--", linewidth=1, label="d2d copy")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels, fontsize=8)
    ax.set_ylabel("GB/s (K/V once + q + out)")
    ax.set_title(f"Paged decode, bf16, 32 q heads, head dim 128, block 16 - {meta['card']}, {meta['date']}")
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
