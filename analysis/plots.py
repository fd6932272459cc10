"""Comparison plots as PNG files (matplotlib's Agg canvas through `Figure`: no pyplot, no GUI backend).

Each function takes the comparison table (a row per policy and load, with `policy`, `load`, `rate` and the
metrics) and/or the runs keyed by (policy, load), writes one PNG and returns its path.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.memory_view import kv_timeline
from analysis.metrics import request_latencies
from analysis.runs import RunData
from analysis.slo import SLO

RunKey = tuple[str, float]
MAX_CDF_ROWS = 4  # loads shown in the CDF grid; more would make the figure unreadable
MAX_TIMELINE_POINTS = 2000  # steps drawn per policy; longer timelines are thinned evenly


def _figure(nrows: int, ncols: int, width: float, height: float):  # -> (Figure, axes 2-D array)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), dpi=100, layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def policy_colors(policies: Sequence[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {policy: cmap(i % 10) for i, policy in enumerate(policies)}


def _save(fig, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def pick_loads(loads: Sequence[float], count: int) -> list[float]:
    """Up to `count` of the sorted loads, evenly spread and always including the lowest and highest."""
    ordered = sorted(set(loads))
    if len(ordered) <= count:
        return ordered
    picks = np.linspace(0, len(ordered) - 1, count).round().astype(int)
    return [ordered[i] for i in sorted(set(picks))]


def _cdf(ax, values: np.ndarray, **style) -> None:
    values = np.sort(values[~np.isnan(values)])
    if values.size:
        ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", **style)


def plot_latency_cdfs(
    runs: Mapping[RunKey, RunData], policies: Sequence[str], loads: Sequence[float], load_label: str, path: Path
) -> Path:
    """Grid: a row per load (up to MAX_CDF_ROWS), columns TTFT / TPOT / E2E latency; a line per policy."""
    from matplotlib.ticker import NullFormatter

    shown = pick_loads(loads, MAX_CDF_ROWS)
    columns = [("ttft_s", "TTFT (s)"), ("tpot_s", "TPOT (s)"), ("e2el_s", "E2E latency (s)")]
    fig, axes = _figure(len(shown), len(columns), 4.2, 2.8)
    colors = policy_colors(policies)
    for row, load in enumerate(shown):
        for col, (column, label) in enumerate(columns):
            ax = axes[row, col]
            for policy in policies:
                run = runs.get((policy, load))
                if run is not None:
                    values = request_latencies(run.requests)[column].to_numpy(dtype=float)
                    _cdf(ax, values, color=colors[policy], label=policy)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short log ranges
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.set_xlabel(label)
            if col == 0:
                ax.set_ylabel(f"CDF  ({load_label} {load:g})")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Latency CDFs of finished requests")
    return _save(fig, path)


def _by_policy(table: pd.DataFrame, policies: Sequence[str]):
    for policy in policies:
        group = table[table["policy"] == policy].sort_values("rate")
        if not group.empty:
            yield policy, group


def plot_latency_vs_rate(table: pd.DataFrame, policies: Sequence[str], slo: SLO | None, path: Path) -> Path:
    """p99 TTFT, p99 TPOT and mean normalized latency against request rate; SLOs as dashed lines."""
    panels = [("p99_ttft_ms", "p99 TTFT (ms)", "ttft"), ("p99_tpot_ms", "p99 TPOT (ms)", "tpot"),
              ("mean_normalized_latency_s", "mean normalized latency (s/token)", None)]
    fig, axes = _figure(1, len(panels), 4.2, 3.2)
    colors = policy_colors(policies)
    bounds = dict(slo.items()) if slo else {}
    for ax, (column, label, slo_name) in zip(axes[0], panels):
        for policy, group in _by_policy(table, policies):
            ax.plot(group["rate"], group[column], marker="o", color=colors[policy], label=policy)
        if slo_name in bounds:
            ax.axhline(bounds[slo_name], color="gray", linestyle="--", linewidth=1, label=f"SLO {bounds[slo_name]:g} ms")
        ax.set_yscale("log")
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Latency against load")
    return _save(fig, path)


def plot_throughput_vs_rate(table: pd.DataFrame, policies: Sequence[str], path: Path) -> Path:
    """Output token throughput and request throughput/goodput against request rate."""
    fig, axes = _figure(1, 2, 4.6, 3.2)
    colors = policy_colors(policies)
    for policy, group in _by_policy(table, policies):
        axes[0, 0].plot(group["rate"], group["output_throughput"], marker="o", color=colors[policy], label=policy)
        axes[0, 1].plot(group["rate"], group["request_throughput"], marker="o", color=colors[policy], label=policy)
        if group["request_goodput"].notna().any():
            axes[0, 1].plot(group["rate"], group["request_goodput"], marker="x", linestyle=":", color=colors[policy])
    axes[0, 0].set_ylabel("output throughput (tok/s)")
    axes[0, 1].set_ylabel("requests/s: throughput (o), goodput (x)")
    for ax in axes[0]:
        ax.set_xlabel("request rate (req/s)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Throughput against load")
    return _save(fig, path)


def _thin(frame: pd.DataFrame) -> pd.DataFrame:
    if len(frame) <= MAX_TIMELINE_POINTS:
        return frame
    return frame.iloc[np.linspace(0, len(frame) - 1, MAX_TIMELINE_POINTS).round().astype(int)]


def plot_kv_timeline(
    runs: Mapping[RunKey, RunData], policies: Sequence[str], load: float, load_label: str, path: Path
) -> Path:
    """KV usage (held: solid, holding tokens: dotted) and batch size over time, a line per policy, at one load."""
    fig, axes = _figure(2, 1, 9.0, 2.8)
    colors = policy_colors(policies)
    for policy in policies:
        run = runs.get((policy, load))
        if run is None or run.steps.empty:
            continue
        timeline = _thin(kv_timeline(run.steps, run.summary))
        axes[0, 0].plot(timeline["time_s"], 100 * timeline["kv_usage"], color=colors[policy], label=policy)
        axes[0, 0].plot(timeline["time_s"], 100 * timeline["kv_token_usage"], color=colors[policy], linestyle=":")
        axes[1, 0].plot(timeline["time_s"], timeline["batch_size"], color=colors[policy], label=policy)
    axes[0, 0].set_ylabel("share of KV slots (%)")
    axes[1, 0].set_ylabel("batch size (seqs)")
    axes[1, 0].set_xlabel("simulated time (s)")
    for ax in axes[:, 0]:
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncols=min(len(policies), 6))
    fig.suptitle(f"KV slots held (solid) and holding tokens (dotted), batch size; over time at {load_label} {load:g}")
    return _save(fig, path)


def plot_capacity(
    table: pd.DataFrame, capacity: pd.DataFrame, policies: Sequence[str], target: float, slo: SLO | None, path: Path
) -> Path:
    """Left: SLO attainment against rate with the target; right: each policy's capacity (req/s)."""
    fig, axes = _figure(1, 2, 4.6, 3.2)
    colors = policy_colors(policies)
    for policy, group in _by_policy(table, policies):
        axes[0, 0].plot(group["rate"], 100 * group["slo_attainment"], marker="o", color=colors[policy], label=policy)
    axes[0, 0].axhline(100 * target, color="gray", linestyle="--", linewidth=1)
    axes[0, 0].set_xlabel("request rate (req/s)")
    axes[0, 0].set_ylabel("SLO attainment (%)")
    axes[0, 0].grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    caps = capacity.set_index("policy").reindex(list(policies))
    heights = [0.0 if math.isnan(c) else c for c in caps["capacity"]]
    bars = axes[0, 1].bar(range(len(policies)), heights, color=[colors[p] for p in policies])
    for bar, (policy, row) in zip(bars, caps.iterrows()):
        text = "none" if math.isnan(row["capacity"]) else f"{row['capacity']:g}" + ("+" if row["all_loads_met"] else "")
        axes[0, 1].annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    axes[0, 1].set_xticks(range(len(policies)), list(policies), rotation=30, ha="right")
    axes[0, 1].set_ylabel("capacity (req/s)")
    axes[0, 1].grid(alpha=0.3, axis="y")
    slo_text = slo.describe() if slo else "none"
    fig.suptitle(f"Capacity: highest rate with >= {100 * target:g}% of requests within SLOs ({slo_text})")
    return _save(fig, path)
