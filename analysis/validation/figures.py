"""The validation cases' figures: ours against the published numbers, one PNG each (matplotlib `Figure`, no
pyplot, as in `analysis.plots`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _figure(ncols: int, width: float = 5.0, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=110, layout="constrained")
    return fig, np.atleast_1d(fig.subplots(1, ncols, squeeze=False)[0])


def plot_layer_times(points: pd.DataFrame, path: Path) -> Path:
    """Case 1: measured and predicted per-layer time against tokens, one panel per data file."""
    stems = list(dict.fromkeys(points["data"]))
    fig, axes = _figure(len(stems))
    for ax, stem in zip(axes, stems):
        p = points[points["data"] == stem]
        ax.loglog(p["num_tokens"], p["measured_ms"], "k.", label="Vidur measured")
        ax.loglog(p["num_tokens"], p["ops_ms"], "-", label="ours: per-operator model (checked)")
        ax.loglog(p["num_tokens"], p["layer_ms"], ":", label="ours: step cost model")
        ax.loglog(p["num_tokens"], p["per_op_ms"], "--", label="ours: per-operator roofline")
        ax.set(title=stem, xlabel="tokens")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("one layer, non-attention ops (ms)")
    axes[0].legend()
    fig.savefig(path)
    return path


def plot_normalized_latency(rows: pd.DataFrame, threshold_s: float, path: Path) -> Path:
    """Case 2: mean normalized latency at every rate the search tried, per policy, with the threshold."""
    fig, (ax,) = _figure(1, width=6.0)
    for policy, group in rows.groupby("policy", sort=False):
        g = group.sort_values("load")
        ax.plot(g["load"], g["mean_normalized_latency_s"], "o-", label=policy)
    ax.axhline(threshold_s, color="grey", linestyle=":", label=f"threshold {threshold_s:g} s/token")
    ax.set(xlabel="request rate (req/s)", ylabel="mean normalized latency (s/token)", ylim=(0, 1),
           title="OPT-13B / A100-40GB, ShareGPT-like (cf. PagedAttention Fig. 12a)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.savefig(path)
    return path


def plot_sharing(table: pd.DataFrame, published: dict[tuple[str, str], tuple[float, float]], path: Path) -> Path:
    """Case 3: memory saved per width, bars, with the published range shaded, one panel per dataset x mode."""
    keys = list(published)
    fig, axes = _figure(len(keys), width=3.2)
    for ax, (lengths, sampling) in zip(axes, keys):
        t = table[(table["lengths"] == lengths) & (table["sampling"] == sampling)].sort_values("width")
        lo, hi = published[(lengths, sampling)]
        ax.axhspan(100 * lo, 100 * hi, color="tab:green", alpha=0.2, label="published range")
        ax.bar(t["width"].astype(str), 100 * t["sharing_saved_fraction"], color="tab:blue", label="ours")
        ax.set(title=f"{lengths} {sampling}", xlabel="width", ylim=(0, 100))
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("KV memory saved by sharing (%)")
    axes[0].legend()
    fig.savefig(path)
    return path
