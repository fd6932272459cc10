"""A comparison report rendered twice from the same parts: `report.md`, and a self-contained `report.html`
(inline styles, PNG plots embedded as base64). The HTML page's style and text escaping serve the sweep
report too.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis.capacity import format_capacity
from analysis.report_context import ReportContext, setup_lines
from analysis.tables import LATENCY_COLUMNS, MEMORY_COLUMNS, formatted, to_html, to_markdown

PLOT_TITLES: dict[str, str] = {
    "latency_cdf.png": "Latency CDFs per policy",
    "latency_vs_rate.png": "p99 TTFT, p99 TPOT and normalized latency against request rate",
    "throughput_vs_rate.png": "Throughput against request rate",
    "kv_timeline.png": "KV-cache usage and batch size over time",
    "capacity.png": "Capacity under the SLOs",
}


def _capacity_display(capacity: pd.DataFrame) -> pd.DataFrame:
    """The capacity table as shown: bounds as text, `-` where there is none."""
    return pd.DataFrame({
        "policy": capacity["policy"],
        "capacity (req/s)": [format_capacity(c, m, f) for c, m, f in
                             zip(capacity["capacity"], capacity["all_loads_met"], capacity["first_failing_load"])],
        "highest rate passed": ["-" if math.isnan(c) else f"{c:.3g}" for c in capacity["capacity"]],
        "first rate failed": ["-" if math.isnan(f) else f"{f:.3g}" for f in capacity["first_failing_load"]],
        "highest rate tested": [f"{x:.3g}" for x in capacity["max_load_tested"]],
        "every rate met": ["yes" if m else "no" for m in capacity["all_loads_met"]],
    })


# What the tables' columns measure, under each table of both renderings.
LATENCY_NOTE = ("Latencies in ms (normalized latency in s per output token); `request_throughput` and "
                "`request_goodput` in req/s, `output_throughput` in tokens/s, per second of the run (first arrival "
                "to last finish); `request_goodput` counts requests within every SLO; `rejected` requests never "
                "finish, so they count against goodput and `slo_attainment`.")
MEMORY_NOTE = ("KV usage is the time-weighted share of GPU KV slots held; `kv_unused_fraction` is the share of held "
               "slots holding no token (over-reservation and block fragmentation).")


def html_text(text: str) -> str:
    """Escaped text with its Markdown `code` spans as <code> (findings and notes are written once, for both)."""
    pieces = html.escape(text).split("`")
    if len(pieces) % 2 == 0:  # an unpaired backtick stays as it is
        return html.escape(text)
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def render_markdown(table: pd.DataFrame, capacity: pd.DataFrame, plot_files: Sequence[Path], ctx: ReportContext,
                    found: Sequence[str]) -> str:
    """`report.md`: setup, findings, the tables with their notes, the plots as links under `plots/`."""
    lines = ["# Policy comparison", ""]
    lines += [f"- **{k}**: `{v}`" if k == "command" else f"- **{k}**: {v}" for k, v in setup_lines(ctx)]
    lines += [f"- {note}" for note in ctx.notes]
    lines += ["", "## Findings", ""] + [f"- {s}" for s in found]
    lines += ["", "## Latency and throughput", "", to_markdown(formatted(table, LATENCY_COLUMNS)), ""]
    lines += [LATENCY_NOTE, ""]
    lines += ["## Capacity", "", to_markdown(_capacity_display(capacity)), ""]
    lines += ["## Memory", "", to_markdown(formatted(table, MEMORY_COLUMNS)), ""]
    lines += [MEMORY_NOTE, ""]
    lines += ["## Plots", ""]
    for path in plot_files:
        lines += [f"### {PLOT_TITLES.get(path.name, path.stem)}", "", f"![{path.stem}](plots/{path.name})", ""]
    lines += ["Every metric of every run is in `summary.csv`; each replay's tables are under `runs/<policy>-<load>/`.", ""]
    return "\n".join(lines)


# Wide tables scroll inside their own box (the page never scrolls sideways); cells never wrap, so a
# policy name stays on one line and stays in view (sticky first column); numbers align right.
HTML_STYLE = """body{font-family:sans-serif;max-width:1800px;margin:2em auto;padding:0 1em;color:#222}
ul,p{max-width:1200px}
.table-box{overflow-x:auto;max-width:100%;margin:1em 0}
table{border-collapse:separate;border-spacing:0;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ccc;border-width:0 1px 1px 0;padding:3px 7px;white-space:nowrap}
tr>:first-child{border-left-width:1px;position:sticky;left:0;background:#fff}thead th{border-top-width:1px}
th{background:#f2f2f2}tr>th:first-child{background:#f2f2f2}.num{text-align:right}.text{text-align:left}
img{max-width:100%;border:1px solid #eee}code{background:#f5f5f5;padding:1px 4px;overflow-wrap:anywhere}"""


def _table_box(table: pd.DataFrame) -> str:
    return f"<div class='table-box'>{to_html(table)}</div>"


def render_html(table: pd.DataFrame, capacity: pd.DataFrame, plot_files: Sequence[Path], ctx: ReportContext,
                found: Sequence[str]) -> str:
    """One file with no outside references: styles inline, plots as data: URIs."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'><title>pagedlab policy comparison</title>"
             f"<style>{HTML_STYLE}</style></head><body><h1>Policy comparison</h1><ul>"]
    for key, value in setup_lines(ctx):
        shown = f"<code>{html.escape(value)}</code>" if key == "command" else html.escape(value)
        parts.append(f"<li><b>{html.escape(key)}</b>: {shown}</li>")
    parts += [f"<li>{html_text(note)}</li>" for note in ctx.notes]
    parts.append("</ul><h2>Findings</h2><ul>")
    parts += [f"<li>{html_text(s)}</li>" for s in found]
    parts.append("</ul><h2>Latency and throughput</h2>" + _table_box(formatted(table, LATENCY_COLUMNS))
                 + f"<p>{html_text(LATENCY_NOTE)}</p>")
    parts.append("<h2>Capacity</h2>" + _table_box(_capacity_display(capacity)))
    parts.append("<h2>Memory</h2>" + _table_box(formatted(table, MEMORY_COLUMNS)) + f"<p>{html_text(MEMORY_NOTE)}</p>"
                 + "<h2>Plots</h2>")
    for path in plot_files:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        title = html.escape(PLOT_TITLES.get(path.name, path.stem))
        parts.append(f"<h3>{title}</h3><img alt='{html.escape(path.name)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
