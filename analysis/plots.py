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

from analysis.capacity import format_capacity
from analysis.memory_view import kv_timeline
from analysis.metrics import request_latencies
from analysis.runs import RunData
from analysis.slo import SLO

RunKey = tuple[str, float]


def load_text(load_label: str, load: float) -> str:
    """A load with its unit: `rate 4 req/s`, or `rate scale 2x` (times the trace's own rate)."""
    return f"rate {load:g} req/s" if load_label == "rate" else f"{load_label} {load:g}x"


MAX_CDF_ROWS = 4  # loads shown in the CDF grid; more would make the figure unreadable
TIMELINE_BINS = 200  # time bins drawn per policy; a bin shows the time-weighted mean of its steps


def _legend(ax) -> None:  # type: ignore[no-untyped-def]
    """A legend where something was drawn (matplotlib warns about an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _figure_legend(fig, axes, columns: int) -> None:  # type: ignore[no-untyped-def]
    """One legend for the labelled lines of `axes` (each label once), below the whole figure, where it can hide
    no data point."""
    entries: dict[str, object] = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", fontsize=8,
                   ncols=min(len(entries), columns))


def policy_labels(table: pd.DataFrame, policies: Sequence[str]) -> dict[str, str]:
    """Legend text per policy: its name, plus how many requests it rejected where it rejected any (its latency
    lines then describe fewer requests than the others', and its goodput counts the rejected as misses)."""
    labels = {policy: policy for policy in policies}
    if "rejected" not in table.columns:
        return labels
    for policy, rejected in table.groupby("policy", sort=False)["rejected"]:
        low, high = int(rejected.min()), int(rejected.max())
        if policy in labels and high > 0:
            labels[policy] = f"{policy} ({low if low == high else f'{low}-{high}'} rejected)"
    return labels


def _plain_log_ticks(axis) -> None:  # type: ignore[no-untyped-def]
    """Tick labels of a log axis as plain numbers (0.1, 20, 100, 10,000), not 2x10^1 or 1e+05; minor ticks
    labelled only on a short range, as matplotlib's default does."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}"))
    axis.set_minor_formatter(LogFormatter(minor_thresholds=(1, 0.4)))

def _figure(nrows: int, ncols: int, width: float, height: float):  # -> (Figure, axes 2-D array)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), dpi=100, layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P")


def policy_styles(policies: Sequence[str]) -> dict[str, dict]:
    """Colour, dash and marker per policy: policies with identical numbers still show as distinct lines."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {
        policy: {"color": cmap(i % 10), "linestyle": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)]}
        for i, policy in enumerate(policies)
    }


def _line(styles: dict[str, dict], policy: str) -> dict:
    """Style of a plain line (no markers)."""
    return {"color": styles[policy]["color"], "linestyle": styles[policy]["linestyle"]}


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
    runs: Mapping[RunKey, RunData], policies: Sequence[str], loads: Sequence[float], load_label: str, path: Path,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Grid: a row per load (up to MAX_CDF_ROWS), columns TTFT / TPOT / E2E latency; a line per policy.

    `labels` (from `policy_labels`) names each policy in the legend, below the grid."""
    from matplotlib.ticker import MaxNLocator, NullFormatter

    shown = pick_loads(loads, MAX_CDF_ROWS)
    # TTFT and E2E latency span decades under overload: log axes in s. TPOT stays within a narrow band: linear,
    # in ms as the tables and the SLO give it (in s its tick labels ran into each other).
    columns = [("ttft_s", "TTFT (s)", "log", 1.0), ("tpot_s", "TPOT (ms)", "linear", 1000.0),
               ("e2el_s", "E2E latency (s)", "log", 1.0)]
    fig, axes = _figure(len(shown), len(columns), 4.2, 2.8)
    styles = policy_styles(policies)
    names = labels or {}
    for row, load in enumerate(shown):
        for col, (column, label, scale, factor) in enumerate(columns):
            ax = axes[row, col]
            for policy in policies:
                run = runs.get((policy, load))
                if run is not None:
                    values = factor * request_latencies(run.requests)[column].to_numpy(dtype=float)
                    _cdf(ax, values, label=names.get(policy, policy), **_line(styles, policy))
            ax.set_xscale(scale)
            if scale == "log":
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short log ranges
            else:
                ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.set_xlabel(label)
            if col == 0:
                ax.set_ylabel(f"CDF ({load_text(load_label, load)})")
    _figure_legend(fig, axes[0, 0], 7)
    fig.suptitle("Latency CDFs of finished requests (rejected requests have no latency)")
    return _save(fig, path)


def _by_policy(table: pd.DataFrame, policies: Sequence[str]):
    for policy in policies:
        group = table[table["policy"] == policy].sort_values("rate")
        if not group.empty:
            yield policy, group


def plot_latency_vs_rate(table: pd.DataFrame, policies: Sequence[str], slo: SLO | None, path: Path,
                         labels: Mapping[str, str] | None = None) -> Path:
    """p99 TTFT, p99 TPOT and mean normalized latency against request rate; SLOs as dashed lines.

    The legend goes below the panels (inside one it hid lines); `labels` as in `plot_latency_cdfs`."""
    panels = [("p99_ttft_ms", "p99 TTFT (ms)", "ttft"), ("p99_tpot_ms", "p99 TPOT (ms)", "tpot"),
              ("mean_normalized_latency_s", "mean normalized latency (s/token)", None)]
    fig, axes = _figure(1, len(panels), 4.2, 3.2)
    styles = policy_styles(policies)
    names = labels or {}
    bounds = dict(slo.items()) if slo else {}
    slo_text = slo.describe() if slo else ""
    for ax, (column, label, slo_name) in zip(axes[0], panels):
        for policy, group in _by_policy(table, policies):
            ax.plot(group["rate"], group[column], label=names.get(policy, policy), **styles[policy])
        if slo_name in bounds:
            ax.axhline(bounds[slo_name], color="gray", linestyle="--", linewidth=1, label=f"SLO ({slo_text})")
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    _figure_legend(fig, axes, 8)
    fig.suptitle("Latency against load")
    return _save(fig, path)


def plot_throughput_vs_rate(table: pd.DataFrame, policies: Sequence[str], path: Path,
                            labels: Mapping[str, str] | None = None) -> Path:
    """Output token throughput and request throughput/goodput against request rate; `labels` as in
    `plot_latency_cdfs`."""
    fig, axes = _figure(1, 2, 4.6, 3.2)
    styles = policy_styles(policies)
    names = labels or {}
    for policy, group in _by_policy(table, policies):
        axes[0, 0].plot(group["rate"], group["output_throughput"], label=names.get(policy, policy), **styles[policy])
        axes[0, 1].plot(group["rate"], group["request_throughput"], label=policy, **styles[policy])
        if group["request_goodput"].notna().any():
            axes[0, 1].plot(group["rate"], group["request_goodput"], color=styles[policy]["color"], marker="x",
                            linestyle=":", linewidth=1)
    axes[0, 0].set_ylabel("output throughput (tok/s)")
    from matplotlib.lines import Line2D

    axes[0, 1].set_ylabel("request throughput, goodput (req/s)")
    axes[0, 1].legend(handles=[Line2D([], [], color="gray", label="throughput"),
                               Line2D([], [], color="gray", marker="x", linestyle=":", label="goodput (within the SLOs)")],
                      fontsize=7, loc="upper left")
    for ax in axes[0]:
        ax.set_xlabel("request rate (req/s)")
        ax.grid(alpha=0.3)
    _legend(axes[0, 0])
    fig.suptitle("Throughput against load")
    return _save(fig, path)


def binned_timeline(timeline: pd.DataFrame, durations: np.ndarray, bins: int = TIMELINE_BINS) -> pd.DataFrame:
    """Time-weighted mean of each column over `bins` equal time bins (bins with no step are dropped).

    Plotting every step aliases: a batch that alternates prefill and decode steps would draw a solid band."""
    if len(timeline) <= bins:
        return timeline
    time = timeline["time_s"].to_numpy()
    edges = np.linspace(time.min(), time.max(), bins + 1)
    weights = np.where(durations > 0, durations, 1e-12)
    total, _ = np.histogram(time, edges, weights=weights)
    keep = total > 0
    out = {"time_s": ((edges[:-1] + edges[1:]) / 2)[keep]}
    for column in timeline.columns.drop("time_s"):
        summed, _ = np.histogram(time, edges, weights=weights * timeline[column].to_numpy())
        out[column] = summed[keep] / total[keep]
    return pd.DataFrame(out)


def plot_kv_timeline(
    runs: Mapping[RunKey, RunData], policies: Sequence[str], load: float, load_label: str, path: Path,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """KV usage (held, holding tokens) and batch size over time, a line per policy, at one load; `labels` as in
    `plot_latency_cdfs`."""
    fig, axes = _figure(3, 1, 9.0, 2.4)
    styles = policy_styles(policies)
    names = labels or {}
    for policy in policies:
        run = runs.get((policy, load))
        if run is None or run.steps.empty:
            continue
        timeline = binned_timeline(kv_timeline(run.steps, run.summary), run.steps["duration_s"].to_numpy(dtype=float))
        axes[0, 0].plot(timeline["time_s"], 100 * timeline["kv_usage"], label=names.get(policy, policy),
                        **_line(styles, policy))
        axes[1, 0].plot(timeline["time_s"], 100 * timeline["kv_token_usage"], label=policy, **_line(styles, policy))
        axes[2, 0].plot(timeline["time_s"], timeline["batch_size"], label=policy, **_line(styles, policy))
    axes[0, 0].set_ylabel("KV slots held (%)")
    axes[1, 0].set_ylabel("KV slots with a token (%)")
    axes[2, 0].set_ylabel("batch size (seqs)")
    axes[2, 0].set_xlabel("simulated time (s)")
    for ax in axes[:, 0]:
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:  # no run finished a request: nothing to label
        fig.legend(handles, labels, loc="outside lower center", fontsize=8, ncols=min(len(policies), 6))
    fig.suptitle(f"KV-cache usage and batch size over time at {load_text(load_label, load)} "
                 f"(time-weighted means of {TIMELINE_BINS} bins)")
    return _save(fig, path)


def plot_capacity(
    table: pd.DataFrame, capacity: pd.DataFrame, policies: Sequence[str], target: float, slo: SLO | None, path: Path,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Left: SLO attainment against rate with the target; right: each policy's capacity (req/s); `labels` as in
    `plot_latency_cdfs`."""
    fig, axes = _figure(1, 2, 4.6, 3.2)
    styles = policy_styles(policies)
    names = labels or {}
    for policy, group in _by_policy(table, policies):
        axes[0, 0].plot(group["rate"], 100 * group["slo_attainment"], label=names.get(policy, policy), **styles[policy])
    axes[0, 0].axhline(100 * target, color="gray", linestyle="--", linewidth=1)
    axes[0, 0].set_xlabel("request rate (req/s)")
    axes[0, 0].set_ylabel("SLO attainment (%)")
    axes[0, 0].grid(alpha=0.3)
    _legend(axes[0, 0])
    caps = capacity.set_index("policy").reindex(list(policies))
    heights = [0.0 if math.isnan(c) else c for c in caps["capacity"]]
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
    axes[0, 1].set_ylim(0, 1.15 * top)  # room for the value labels
    axes[0, 1].grid(alpha=0.3, axis="y")
    slo_text = slo.describe() if slo else "none"
    fig.suptitle(f"Capacity: highest rate with >= {100 * target:g}% of requests within SLOs ({slo_text})")
    return _save(fig, path)
