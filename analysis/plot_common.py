"""What every plot shares: a headless figure, policy styles and legend labels, legends, log ticks, saving.

Figures are matplotlib's Agg canvas through `Figure` (no pyplot, no GUI backend); every plot module writes
one PNG per function through `save`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P")


def load_text(load_label: str, load: float) -> str:
    """A load with its unit: `rate 4 req/s`, or `rate scale 2x` (times the trace's own rate)."""
    return f"rate {load:g} req/s" if load_label == "rate" else f"{load_label} {load:g}x"


def legend(ax) -> None:  # type: ignore[no-untyped-def]
    """A legend where something was drawn (matplotlib warns about an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def figure_legend(fig, axes, columns: int) -> None:  # type: ignore[no-untyped-def]
    """One legend for the labelled lines of `axes` (each label once), below the whole figure, where it can hide
    no data point."""
    entries: dict[str, object] = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", fontsize=8,
                   ncols=legend_columns(fig.get_figwidth(), list(entries), columns))


def legend_columns(width_in: float, labels: Sequence[str], columns: int) -> int:
    """Columns of a figure legend in 8-point text whose rows fit the figure's width: a column is as wide as
    the longest label (about 4.4 points a character) plus its line sample and padding (about 40 points); long
    labels (a policy's rejected count, the SLOs) take fewer columns, never past the edges."""
    entry_pt = 4.4 * max(map(len, labels)) + 40
    return max(1, min(len(labels), columns, int(width_in * 72 // entry_pt)))


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


def plain_log_ticks(axis) -> None:  # type: ignore[no-untyped-def]
    """Tick labels of a log axis as plain numbers (0.1, 20, 100, 10,000), not 2x10^1 or 1e+05; minor ticks
    labelled only on a short range, as matplotlib's default does."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    class PlainLogFormatter(LogFormatter):
        def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:  # 0.7, not 7e-01
            return plain_number(x)

    axis.set_major_formatter(FuncFormatter(lambda value, _: plain_number(value)))
    axis.set_minor_formatter(PlainLogFormatter(minor_thresholds=(1, 0.4)))


def plain_number(value: float) -> str:
    """A tick value as written by hand: 20, 10,000, 0.7, 0.05."""
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def new_figure(nrows: int, ncols: int, width: float, height: float):  # -> (Figure, axes 2-D array)
    """A constrained-layout figure of `nrows` x `ncols` panels, each `width` x `height` inches."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), dpi=100, layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def policy_styles(policies: Sequence[str]) -> dict[str, dict]:
    """Colour, dash and marker per policy: policies with identical numbers still show as distinct lines."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {
        policy: {"color": cmap(i % 10), "linestyle": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)]}
        for i, policy in enumerate(policies)
    }


def line_style(styles: dict[str, dict], policy: str) -> dict:
    """Style of a plain line (no markers)."""
    return {"color": styles[policy]["color"], "linestyle": styles[policy]["linestyle"]}


def save(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Write `fig` as a PNG at `path` (tests patch it in a plot module to look at the figure)."""
    fig.savefig(path, format="png")
    return path
