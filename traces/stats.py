"""Summary figures of a trace: size, duration, arrival rate, and length percentiles."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from traces.trace import Trace

PERCENTILES: tuple[int, ...] = (50, 90, 99)


@dataclass(frozen=True)
class TraceStats:
    count: int
    duration_s: float
    mean_rate: float  # requests/s over the span of arrivals: (count - 1) / duration; nan if undefined
    prompt: dict[str, float]  # p50, p90, p99, max, mean
    output: dict[str, float]
    sampling: dict[str, int]
    num_prefix_groups: int
    skipped: dict[str, int]


def _summary(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {key: float("nan") for key in (*(f"p{p}" for p in PERCENTILES), "max", "mean")}
    # Nearest-rank percentiles: every figure is a length some request really has.
    out = {f"p{p}": float(np.percentile(values, p, method="inverted_cdf")) for p in PERCENTILES}
    out["max"] = float(values.max())
    out["mean"] = float(values.mean())
    return out


def summarize(trace: Trace) -> TraceStats:
    count, duration = len(trace), trace.duration_s
    groups = {g for g in trace.column("prefix_group") if g is not None}
    return TraceStats(
        count=count,
        duration_s=duration,
        mean_rate=(count - 1) / duration if count > 1 and duration > 0 else float("nan"),
        prompt=_summary(trace.column("prompt_tokens")),
        output=_summary(trace.column("output_tokens")),
        sampling=dict(sorted(Counter(trace.column("sampling").tolist()).items())),
        num_prefix_groups=len(groups),
        skipped=dict(trace.skipped),
    )


def format_stats(stats: TraceStats, *, source: str = "", notices: list[str] | tuple[str, ...] = ()) -> str:
    """A plain-text report: what `pagedlab trace stats` prints."""
    lines = [f"trace       {source}"] if source else []
    rate = "n/a" if np.isnan(stats.mean_rate) else f"{stats.mean_rate:.4g} req/s"
    at_once = " (every request at 0 s)" if stats.count > 1 and stats.duration_s == 0 else ""
    lines += [
        f"requests    {stats.count}",
        f"duration    {stats.duration_s:.3f} s{at_once}",
        f"mean rate   {rate}",
        f"{'tokens':<10}" + "".join(f"{k:>10}" for k in (*(f"p{p}" for p in PERCENTILES), "max", "mean")),
    ]
    for name, summary in (("prompt", stats.prompt), ("output", stats.output)):
        cells = [f"{summary[f'p{p}']:>10.0f}" for p in PERCENTILES]
        lines.append(f"{name:<10}" + "".join(cells) + f"{summary['max']:>10.0f}{summary['mean']:>10.1f}")
    lines.append("sampling    " + ", ".join(f"{mode} {count}" for mode, count in stats.sampling.items()))
    if stats.num_prefix_groups:
        lines.append(f"prefix      {stats.num_prefix_groups} groups")
    total_skipped = sum(stats.skipped.values())
    lines.append(f"skipped     {total_skipped} rows" + (
        " (" + ", ".join(f"{count} {reason}" for reason, count in stats.skipped.items()) + ")"
        if total_skipped else ""))
    lines += [f"notice: {notice}" for notice in notices]
    return "\n".join(lines)
