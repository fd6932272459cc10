"""`report.md` and a self-contained `report.html` (PNG plots embedded as base64) for a policy comparison."""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from analysis import plots, run_plots
from analysis.atomic import write_text_atomic
from analysis.capacity import format_capacity
from analysis.plot_common import policy_labels
from analysis.runs import RunData
from analysis.slo import SLO
from analysis.tables import LATENCY_COLUMNS, MEMORY_COLUMNS, format_value, formatted, to_html, to_markdown

PLOT_TITLES: dict[str, str] = {
    "latency_cdf.png": "Latency CDFs per policy",
    "latency_vs_rate.png": "p99 TTFT, p99 TPOT and normalized latency against request rate",
    "throughput_vs_rate.png": "Throughput against request rate",
    "kv_timeline.png": "KV-cache usage and batch size over time",
    "capacity.png": "Capacity under the SLOs",
}


@dataclass
class ReportContext:
    """What the report says about how it was made."""

    command: str
    trace_description: str
    model: str
    gpu: str
    seed: int
    policies: Sequence[str]
    loads: Sequence[float]
    load_label: str  # "rate" (req/s) or "rate scale" (x the trace's own rate)
    slo: SLO
    slo_note: str  # where the SLOs came from
    target: float
    timeline_load: float
    notes: list[str] = field(default_factory=list)


def rejection_reasons(runs: Mapping[tuple[str, float], RunData]) -> dict[str, dict[str, int]]:
    """Per policy, each reason a request was rejected (or aborted) for and how many, over all its runs."""
    out: dict[str, dict[str, int]] = {}
    for (policy, _), run in runs.items():
        req = run.requests
        counts = out.setdefault(policy, {})
        for reason, count in req.loc[req["status"] == "rejected", "reason"].value_counts(sort=False).items():
            counts[str(reason)] = counts.get(str(reason), 0) + int(count)
    return out


def rejection_finding(table: pd.DataFrame, reasons: Mapping[str, Mapping[str, int]]) -> str | None:
    """One sentence: how many requests each policy rejected per load and why (None if no policy did)."""
    per_load = table.groupby("policy", sort=False)["rejected"].agg(["min", "max"])
    if not (per_load["max"] > 0).any():
        return None
    total = int(table["num_requests"].max())
    parts, clean = [], []
    for policy, r in per_load.iterrows():
        if r["max"] == 0:
            clean.append(str(policy))
            continue
        count = f"{r['min']}" if r["min"] == r["max"] else f"{r['min']}-{r['max']}"
        top = sorted(reasons.get(str(policy), {}).items(), key=lambda item: -item[1])[:2]
        why = "; ".join(f"'{reason}'" for reason, _ in top)
        parts.append(f"{policy} {count} of {total} at each load ({why})" if why else f"{policy} {count} of {total}")
    return ("Rejected requests, which count as missing the SLOs in goodput and SLO attainment: " + "; ".join(parts)
            + (f"; none under {', '.join(clean)}" if clean else "") + ".")


def _fewer_requests(row: pd.Series) -> str:
    """A caveat for a policy named best or worst in a run where it rejected requests: its latencies and
    throughput cover only the requests it ran, so it did less work than a policy that ran them all."""
    rejected = int(row.get("rejected", 0) or 0)
    if rejected <= 0:
        return ""
    return f", over the requests it ran: it rejected {rejected} of {int(row['num_requests'])}"


TIE_TOLERANCE = 0.01  # figures this close are reported as a tie, not as one policy winning


def findings(table: pd.DataFrame, capacity: pd.DataFrame, ctx: ReportContext,
             reasons: Mapping[str, Mapping[str, int]] | None = None) -> list[str]:
    """Plain sentences read off the numbers: who has the most capacity, who wins at the highest load, memory,
    and which requests were rejected (with `reasons`, from `rejection_reasons`)."""
    out: list[str] = []
    caps = capacity.dropna(subset=["capacity"]).sort_values("capacity", ascending=False)
    lowest = min(capacity["first_failing_load"].min(), capacity["capacity"].min()) if len(capacity) else float("nan")
    if caps.empty:
        out.append(f"No policy meets the SLOs ({ctx.slo.describe()}) for {100 * ctx.target:g}% of requests at any tested "
                   f"load: every capacity is below the lowest tested rate ({lowest:.3g} req/s).")
    else:
        parts = [f"{r.policy} {format_capacity(r.capacity, r.all_loads_met, r.first_failing_load)}"
                 for r in caps.itertuples()]
        none = capacity[capacity["capacity"].isna()]
        below = ", ".join(f"{r.policy} {format_capacity(r.capacity, r.all_loads_met, r.first_failing_load)}"
                          for r in none.itertuples())
        out.append(
            f"Capacity (req/s with >= {100 * ctx.target:g}% of requests within {ctx.slo.describe()}; between the highest "
            "tested rate that passes and the first that fails): "
            + ", ".join(parts) + (f"; {below}" if below else "")
            + ". `R+` means every tested rate passed (R the highest); `< R` that even the lowest failed."
        )
    top = table[table["load"] == max(ctx.loads)]
    if not top.empty and not (top["completed"] > 0).any():
        out.append(f"At the highest load ({ctx.load_label} {max(ctx.loads):g}, {top['rate'].iloc[0]:.3g} req/s) no "
                   "policy finished a request.")
    elif not top.empty:
        best_tput = top.loc[top["output_throughput"].idxmax()]
        where = f"At the highest load ({ctx.load_label} {max(ctx.loads):g}, {best_tput['rate']:.3g} req/s)"
        # Policies that all keep up with the load deliver the same throughput: no policy wins by a rounding error.
        tied = top[top["output_throughput"] >= (1 - TIE_TOLERANCE) * best_tput["output_throughput"]]
        if len(tied) > 1:
            out.append(f"{where} {', '.join(tied['policy'])} share the highest output throughput "
                       f"({best_tput['output_throughput']:.0f} tok/s, within {TIE_TOLERANCE:.0%} of each other).")
        else:
            out.append(f"{where} {best_tput['policy']} has the highest output throughput "
                       f"({best_tput['output_throughput']:.0f} tok/s{_fewer_requests(best_tput)}).")
        for column, what, unit in (("p99_ttft_ms", "p99 TTFT", "ms"), ("p99_tpot_ms", "p99 TPOT", "ms"),
                                   ("mean_normalized_latency_s", "mean normalized latency", "s/token")):
            valid = top.dropna(subset=[column])
            if len(valid) > 1 and valid[column].max() <= (1 + TIE_TOLERANCE) * valid[column].min():
                who = "every policy" if len(valid) == len(top) else ", ".join(valid["policy"])
                out.append(f"At that load the {what} is the same for {who} "
                           f"({format_value(column, valid[column].min())} {unit}, within {TIE_TOLERANCE:.0%}).")
            elif not valid.empty:
                best = valid.loc[valid[column].idxmin()]
                worst = valid.loc[valid[column].idxmax()]
                out.append(f"At that load the lowest {what} is {best['policy']}'s ({format_value(column, best[column])} {unit}"
                           f"{_fewer_requests(best)}), the highest {worst['policy']}'s "
                           f"({format_value(column, worst[column])} {unit}{_fewer_requests(worst)}).")
        batch = ", ".join(f"{r.policy} {r.mean_batch_size:.0f}/{r.mean_num_running:.0f}" for r in top.itertuples()
                          if r.mean_batch_size == r.mean_batch_size)  # no step ran: no batch to show (NaN)
        if batch:
            out.append(f"Sequences computed per step / requests admitted and unfinished there (time-weighted means; "
                       f"a parallel or beam request counts once, its sequences each): {batch}.")
    waste = table.groupby("policy", sort=False)["kv_unused_fraction"].mean().dropna()
    if not waste.empty:
        out.append("Held but unused KV slots (mean over loads): "
                   + ", ".join(f"{p} {100 * v:.1f}%" for p, v in waste.sort_values().items()) + ".")
    events = table.groupby("policy", sort=False)[["preemptions", "swaps_out", "cow_copies"]].sum()
    busy = events[(events > 0).any(axis=1)]
    if not busy.empty:
        out.append("Preemptions / swap-outs / copy-on-write copies over all loads: "
                   + ", ".join(f"{p} {int(r.preemptions)}/{int(r.swaps_out)}/{int(r.cow_copies)}" for p, r in busy.iterrows()) + ".")
    rejected = rejection_finding(table, reasons or {})
    if rejected:
        out.append(rejected)
    overfull = table[table["kv_overfull_steps"] > 0]
    if not overfull.empty:
        out.append(check_failed_message(overfull))
    return out


def check_failed_message(overfull: pd.DataFrame) -> str:
    """What to say about runs whose steps hold more tokens than reserved slots (the simulator's tables disagree)."""
    runs = ", ".join(f"{r.policy}@{r.load:g}" for r in overfull.itertuples())
    return (f"CHECK FAILED: in {len(overfull)} run(s) ({runs}) some steps report more KV tokens than reserved KV slots, "
            "which cannot happen; kv_token_usage_mean and kv_unused_fraction of those runs are not trustworthy.")


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


def _setup_lines(ctx: ReportContext) -> list[tuple[str, str]]:
    return [
        ("command", ctx.command),
        ("trace", ctx.trace_description),
        ("model / GPU", f"{ctx.model} on {ctx.gpu}"),
        ("seed", str(ctx.seed)),
        ("policies", ", ".join(ctx.policies)),
        ("loads", f"{ctx.load_label} " + ", ".join(f"{x:g}" for x in ctx.loads)),
        ("SLOs", f"{ctx.slo.describe()} ({ctx.slo_note}); a load meets them when >= {100 * ctx.target:g}% of requests do"),
    ]


def _capacity_display(capacity: pd.DataFrame) -> pd.DataFrame:
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
    lines = ["# Policy comparison", ""]
    lines += [f"- **{k}**: `{v}`" if k == "command" else f"- **{k}**: {v}" for k, v in _setup_lines(ctx)]
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
    for key, value in _setup_lines(ctx):
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
