"""Plots of the runs themselves, as PNG files: latency CDFs of the requests, KV usage and batch size over time.

Each function takes the runs keyed by (policy, load), writes one PNG and returns its path; the plots of the
comparison table (one point per policy and load) are `analysis.plots`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.memory_view import kv_timeline
from analysis.metrics import request_latencies
from analysis.plot_common import (
    figure_legend, legend_columns, line_style, load_text, new_figure, plain_log_ticks, policy_styles, save,
)
from analysis.runs import RunData

RunKey = tuple[str, float]
MAX_CDF_ROWS = 4  # loads shown in the CDF grid; more would make the figure unreadable
TIMELINE_BINS = 200  # time bins drawn per policy; a bin shows the mean over the time its steps run


def pick_loads(loads: Sequence[float], count: int) -> list[float]:
    """Up to `count` of the sorted loads, evenly spread and always including the lowest and highest."""
    ordered = sorted(set(loads))
    if len(ordered) <= count:
        return ordered
    picks = np.linspace(0, len(ordered) - 1, count).round().astype(int)
    return [ordered[i] for i in sorted(set(picks))]


def _cdf(ax, values: np.ndarray, **style) -> None:  # type: ignore[no-untyped-def]
    """The empirical CDF of `values` (NaN dropped) as a step line."""
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
    # Latencies spanning a decade or more (TTFT and E2E under overload; TPOT too when a few requests decode
    # in rare rounds, as vLLM's beam search) get a log axis, else a linear one: within one decade a log axis has
    # no decade tick to label, and beyond it a linear one squeezes the bulk against zero. TPOT in ms, as the
    # tables and the SLO give it (in s its tick labels ran into each other).
    columns = [("ttft_s", "TTFT (s)", 1.0), ("tpot_s", "TPOT (ms)", 1000.0), ("e2el_s", "E2E latency (s)", 1.0)]
    fig, axes = new_figure(len(shown), len(columns), 4.2, 2.8)
    styles = policy_styles(policies)
    names = labels or {}
    for row, load in enumerate(shown):
        for col, (column, label, factor) in enumerate(columns):
            ax = axes[row, col]
            shown_values = [np.empty(0)]
            for policy in policies:
                run = runs.get((policy, load))
                if run is not None:
                    values = factor * request_latencies(run.requests)[column].to_numpy(dtype=float)
                    _cdf(ax, values, label=names.get(policy, policy), **line_style(styles, policy))
                    shown_values.append(values[np.isfinite(values) & (values > 0)])
            spread = np.concatenate(shown_values)
            scale = "log" if len(spread) and spread.max() >= 10 * spread.min() else "linear"
            ax.set_xscale(scale)
            if scale == "log":
                plain_log_ticks(ax.xaxis)
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short log ranges
            else:
                ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.set_xlabel(label)
            if col == 0:
                ax.set_ylabel(f"CDF ({load_text(load_label, load)})")
    figure_legend(fig, axes[0, 0], 7)
    fig.suptitle("Latency CDFs of finished requests (rejected requests have no latency)")
    return save(fig, path)


def binned_timeline(timeline: pd.DataFrame, durations: np.ndarray, bins: int = TIMELINE_BINS) -> pd.DataFrame:
    """Mean of each column over the busy time of `bins` equal time bins; NaN where no step runs (idle).

    Each step counts for the time it runs, spread over the bins it overlaps: plotting every step would alias
    (a batch that alternates prefill and decode steps draws a solid band), and joining only the bins where a
    step starts would draw a busy engine across idle stretches. NaN breaks the plotted line there."""
    start = timeline["time_s"].to_numpy(dtype=float)
    length = np.maximum(durations.astype(float), 0.0)
    end = start + length
    if not len(start) or end.max() <= start.min():
        return timeline
    edges = np.linspace(start.min(), end.max(), bins + 1)
    # running integrals are piecewise linear in time, with breaks at step starts and ends
    breaks = np.maximum.accumulate(np.column_stack([start, end]).ravel())

    def integral_per_bin(values: np.ndarray) -> np.ndarray:
        done = np.cumsum(values * length)
        at_breaks = np.column_stack([done - values * length, done]).ravel()
        return np.diff(np.interp(edges, breaks, at_breaks))

    busy = integral_per_bin(np.ones_like(start))
    running = busy > 1e-12 * (edges[1] - edges[0])
    out = {"time_s": (edges[:-1] + edges[1:]) / 2}
    for column in timeline.columns.drop("time_s"):
        summed = integral_per_bin(timeline[column].to_numpy(dtype=float))
        out[column] = np.where(running, summed / np.where(running, busy, 1.0), np.nan)
    return pd.DataFrame(out)


def timeline_span(ends: Mapping[str, float], spread: float = 3.0) -> float | None:
    """The time axis's end when one run outlasts the others by far (a run `spread` x the median end or more,
    e.g. `static` at a load it cannot serve, would squeeze the others against zero): a tenth past the longest
    of the rest. None when the runs are comparable (the axis takes them all)."""
    if len(ends) < 2:
        return None
    median = float(np.median(list(ends.values())))
    kept = [end for end in ends.values() if end < spread * median]
    if len(kept) == len(ends) or not kept:
        return None
    return 1.1 * max(kept)


def plot_kv_timeline(
    runs: Mapping[RunKey, RunData], policies: Sequence[str], load: float, load_label: str, path: Path,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """KV usage (held, holding tokens) and batch size over time, a line per policy, at one load; `labels` as in
    `plot_latency_cdfs`."""
    fig, axes = new_figure(3, 1, 9.0, 2.4)
    styles = policy_styles(policies)
    names = dict(labels or {})
    shown_runs = {policy: run for policy in policies
                  if (run := runs.get((policy, load))) is not None and not run.steps.empty}
    ends = {policy: float((run.steps["start_s"] + run.steps["duration_s"]).max()) for policy, run in shown_runs.items()}
    span = timeline_span(ends)
    for policy, run in shown_runs.items():
        end = ends[policy]
        if span is not None and end > span:  # cut by the axis: say how far it goes
            names[policy] = f"{names.get(policy, policy)} (runs to {end:,.0f} s)"
        timeline = binned_timeline(kv_timeline(run.steps, run.summary), run.steps["duration_s"].to_numpy(dtype=float))
        axes[0, 0].plot(timeline["time_s"], 100 * timeline["kv_usage"], label=names.get(policy, policy),
                        **line_style(styles, policy))
        axes[1, 0].plot(timeline["time_s"], 100 * timeline["kv_token_usage"], label=policy, **line_style(styles, policy))
        axes[2, 0].plot(timeline["time_s"], timeline["batch_size"], label=policy, **line_style(styles, policy))
    axes[0, 0].set_ylabel("KV slots held (%)")
    axes[1, 0].set_ylabel("KV slots with a token (%)")
    axes[2, 0].set_ylabel("batch size (seqs)")
    axes[2, 0].set_xlabel("simulated time (s)")
    for ax in axes[:, 0]:
        ax.grid(alpha=0.3)
        if span is not None:
            ax.set_xlim(0, span)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:  # no run finished a request: nothing to label
        fig.legend(handles, labels, loc="outside lower center", fontsize=8,
                   ncols=legend_columns(fig.get_figwidth(), labels, 6))
    fig.suptitle(f"KV-cache usage and batch size over time at {load_text(load_label, load)} "
                 f"\n(means over the busy time of {TIMELINE_BINS} bins; a gap is an idle engine)")
    return save(fig, path)
