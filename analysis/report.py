"""A policy comparison's report: plots, `summary.csv`, `capacity.csv`, `report.md` and `report.html`.

What the report says is `analysis.findings`, how it says it `analysis.report_render`, how it was made
`analysis.report_context.ReportContext`; this module writes the files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from analysis import plots, run_plots
from analysis.atomic import write_text_atomic
from analysis.findings import findings, rejection_reasons
from analysis.plot_common import policy_labels
from analysis.report_context import ReportContext
from analysis.report_render import render_html, render_markdown
from analysis.runs import RunData


def write_plots(out_dir: Path, table: pd.DataFrame, capacity: pd.DataFrame,
                runs: Mapping[tuple[str, float], RunData], ctx: ReportContext) -> list[Path]:
    """Every plot of the report, as PNG files under `out_dir/plots/`."""
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    policies = list(ctx.policies)
    labels = policy_labels(table, policies)
    return [
        run_plots.plot_latency_cdfs(runs, policies, ctx.loads, ctx.load_label, plot_dir / "latency_cdf.png", labels),
        plots.plot_latency_vs_rate(table, policies, ctx.slo, plot_dir / "latency_vs_rate.png", labels),
        plots.plot_throughput_vs_rate(table, policies, plot_dir / "throughput_vs_rate.png", labels),
        run_plots.plot_kv_timeline(runs, policies, ctx.timeline_load, ctx.load_label, plot_dir / "kv_timeline.png", labels),
        plots.plot_capacity(table, capacity, policies, ctx.target, ctx.slo, plot_dir / "capacity.png", labels),
    ]


def write_report(out_dir: Path, table: pd.DataFrame, capacity: pd.DataFrame,
                 runs: Mapping[tuple[str, float], RunData], ctx: ReportContext) -> dict[str, Path]:
    """Plots, `summary.csv`, `capacity.csv`, `report.md`, `report.html` under `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    plot_files = write_plots(out_dir, table, capacity, runs, ctx)
    write_text_atomic(out_dir / "summary.csv", table.to_csv(index=False))
    write_text_atomic(out_dir / "capacity.csv", capacity.to_csv(index=False))
    found = findings(table, capacity, ctx, rejection_reasons(runs))
    write_text_atomic(out_dir / "report.md", render_markdown(table, capacity, plot_files, ctx, found))
    write_text_atomic(out_dir / "report.html", render_html(table, capacity, plot_files, ctx, found))
    return {"summary": out_dir / "summary.csv", "markdown": out_dir / "report.md", "html": out_dir / "report.html",
            **{p.stem: p for p in plot_files}}
