"""Plots of the comparison table as PNG files: latency, throughput and SLO attainment against request rate,
and each policy's capacity.

Each function takes the table (a row per policy and load, with `policy`, `load`, `rate` and the metrics),
writes one PNG and returns its path; the plots of the runs themselves are `analysis.run_plots`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.capacity import format_capacity
from analysis.plot_common import figure_legend, legend, new_figure, plain_log_ticks, policy_styles, save
from analysis.slo import SLO


def rate_axis(table: pd.DataFrame) -> tuple[str, str]:
    """The column the load plots run along, and its label: the request rate, or the rate scale for a trace
    whose requests all arrive at once (every scale of it is an infinite rate)."""
    if len(table) and not np.isfinite(table["rate"].to_numpy(dtype=float)).all():
        return "load", "rate scale (every request arrives at once: no rate)"
    return "rate", "request rate (req/s)"


def _by_policy(table: pd.DataFrame, policies: Sequence[str]) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each policy's rows in rate order, in the order of `policies` (a policy with none is skipped)."""
    for policy in policies:
        group = table[table["policy"] == policy].sort_values(rate_axis(table)[0])
        if not group.empty:
            yield policy, group


def plot_latency_vs_rate(table: pd.DataFrame, policies: Sequence[str], slo: SLO | None, path: Path,
                         labels: Mapping[str, str] | None = None) -> Path:
    """p99 TTFT, p99 TPOT and mean normalized latency against request rate; SLOs as dashed lines.

    The legend goes below the panels (inside one it hid lines); `labels` as in `run_plots.plot_latency_cdfs`."""
    panels = [("p99_ttft_ms", "p99 TTFT (ms)", "ttft"), ("p99_tpot_ms", "p99 TPOT (ms)", "tpot"),
              ("mean_normalized_latency_s", "mean normalized latency (s/token)", None)]
    fig, axes = new_figure(1, len(panels), 4.2, 3.2)
    styles = policy_styles(policies)
    names = labels or {}
    x, xlabel = rate_axis(table)
    bounds = dict(slo.items()) if slo else {}
    slo_text = slo.describe() if slo else ""
    for ax, (column, label, slo_name) in zip(axes[0], panels):
        for policy, group in _by_policy(table, policies):
            ax.plot(group[x], group[column], label=names.get(policy, policy), **styles[policy])
        if slo_name in bounds:
            ax.axhline(bounds[slo_name], color="gray", linestyle="--", linewidth=1, label=f"SLO ({slo_text})")
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    figure_legend(fig, axes, 8)
    fig.suptitle("Latency against load")
    return save(fig, path)


def plot_throughput_vs_rate(table: pd.DataFrame, policies: Sequence[str], path: Path,
                            labels: Mapping[str, str] | None = None) -> Path:
    """Output token throughput and request throughput/goodput against request rate; `labels` as in
    `run_plots.plot_latency_cdfs`."""
    fig, axes = new_figure(1, 2, 4.6, 3.2)
    styles = policy_styles(policies)
    names = labels or {}
    x, xlabel = rate_axis(table)
    for policy, group in _by_policy(table, policies):
        axes[0, 0].plot(group[x], group["output_throughput"], label=names.get(policy, policy), **styles[policy])
        axes[0, 1].plot(group[x], group["request_throughput"], label=policy, **styles[policy])
        if group["request_goodput"].notna().any():
            axes[0, 1].plot(group[x], group["request_goodput"], color=styles[policy]["color"], marker="x",
                            linestyle=":", linewidth=1)
    axes[0, 0].set_ylabel("output throughput (tok/s)")
    from matplotlib.lines import Line2D

    axes[0, 1].set_ylabel("request throughput, goodput (req/s)")
    axes[0, 1].legend(handles=[Line2D([], [], color="gray", label="throughput"),
                               Line2D([], [], color="gray", marker="x", linestyle=":", label="goodput (within the SLOs)")],
                      fontsize=7, loc="upper left")
    for ax in axes[0]:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    legend(axes[0, 0])
    fig.suptitle("Throughput against load")
    return save(fig, path)


def plot_capacity(
    table: pd.DataFrame, capacity: pd.DataFrame, policies: Sequence[str], target: float, slo: SLO | None, path: Path,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Left: SLO attainment against rate with the target; right: each policy's capacity (req/s); `labels` as in
    `run_plots.plot_latency_cdfs`."""
    fig, axes = new_figure(1, 2, 4.6, 3.2)
    styles = policy_styles(policies)
    names = labels or {}
    x, xlabel = rate_axis(table)
    for policy, group in _by_policy(table, policies):
        axes[0, 0].plot(group[x], 100 * group["slo_attainment"], label=names.get(policy, policy), **styles[policy])
    axes[0, 0].axhline(100 * target, color="gray", linestyle="--", linewidth=1)
    axes[0, 0].set_xlabel(xlabel)
    axes[0, 0].set_ylabel("SLO attainment (%)")
    axes[0, 0].grid(alpha=0.3)
    legend(axes[0, 0])
    caps = capacity.set_index("policy").reindex(list(policies))
    # No bar for no capacity, nor for an infinite one (a trace whose requests all arrive at once): its label says it.
    heights = [c if math.isfinite(c) else 0.0 for c in caps["capacity"]]
    bars = axes[0, 1].bar(range(len(policies)), heights, color=[styles[p]["color"] for p in policies])
    for bar, (policy, row) in zip(bars, caps.iterrows()):
        text = format_capacity(row["capacity"], row["all_loads_met"], row["first_failing_load"])
        axes[0, 1].annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    axes[0, 1].set_xticks(range(len(policies)), list(policies), rotation=30, ha="right")
    axes[0, 1].set_ylabel("capacity (req/s)")
    # A capacity is never negative; with none found (every bar 0, labelled `< R`) the axis runs to the lowest
    # tested rate rather than matplotlib's -0.06..0.06 around nothing.
    top = max(heights, default=0.0)
    if top <= 0:
        top = float(table["rate"].min()) if len(table) else 1.0
        top = top if math.isfinite(top) else 1.0
    axes[0, 1].set_ylim(0, 1.15 * top)  # room for the value labels
    axes[0, 1].grid(alpha=0.3, axis="y")
    slo_text = slo.describe() if slo else "none"
    fig.suptitle(f"Capacity: highest rate with >= {100 * target:g}% of requests within SLOs ({slo_text})")
    return save(fig, path)
