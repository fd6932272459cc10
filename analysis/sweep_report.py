"""A sweep's tables (`summary.csv`, `probes.csv`), its Pareto plot and `report.md` / `report.html`.

Capacity is shown as `analysis.capacity.format_capacity` shows it (`< 1.38`, `1.38-2.76`, `2.76+` for a lower bound);
the page styles and table renderers are `compare`'s.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from analysis.atomic import write_text_atomic
from analysis.capacity import format_capacity
from analysis.plot_common import figure_legend, new_figure, save
from analysis.report_render import HTML_STYLE, html_text
from analysis.sweep_spec import SweepSpec
from analysis.tables import format_value, to_html, to_markdown

# Metrics of the probe at each configuration's capacity shown in the summary (vLLM names).
AT_CAPACITY: tuple[str, ...] = ("slo_attainment", "request_goodput", "output_throughput", "p99_ttft_ms",
                                "p99_tpot_ms", "kv_usage_mean", "preemptions")
COST_LABELS = {"kv_gib": "KV cache (GiB, all GPUs of a replica)", "num_gpus": "GPUs per replica",
               "gpu_memory_gib": "GPU memory (GiB per replica)"}
COST_UNITS = {"kv_gib": "GiB", "num_gpus": "GPUs", "gpu_memory_gib": "GiB"}


def pareto_front(summary: pd.DataFrame, cost: str) -> pd.Series:
    """True for each configuration no other beats: none costs no more and has at least its capacity, with
    one of the two strictly better. Configurations without a capacity are never on the front."""
    capacity = summary["capacity"].astype(float)
    costs = summary[cost].astype(float)
    front = []
    for i in summary.index:
        if math.isnan(capacity[i]):
            front.append(False)
            continue
        dominated = ((costs <= costs[i]) & (capacity >= capacity[i]) &
                     ((costs < costs[i]) | (capacity > capacity[i]))).any()
        front.append(not bool(dominated))
    # bool even when empty: an empty object Series would select columns, not rows
    return pd.Series(front, index=summary.index, dtype=bool)


def plot_pareto(summary: pd.DataFrame, cost: str, path: Path) -> Path:
    """Capacity (req/s) against cost, one point per configuration; the Pareto front joined and labelled."""
    fig, axes = new_figure(1, 1, 8.0, 5.0)
    ax = axes[0, 0]
    rated = summary.dropna(subset=["capacity"])
    for bound, marker, label in ((False, "o", "capacity"), (True, "^", "capacity (lower bound: every load met)")):
        part = rated[rated["lower_bound"].astype(bool) == bound]
        if not part.empty:
            ax.scatter(part[cost], part["capacity"], marker=marker, color="tab:blue", alpha=0.6, label=label)
    front = rated[pareto_front(rated, cost)].sort_values(cost)
    if not front.empty:
        # ringed points: a front of one point, or of coinciding points, draws no line
        ax.step(front[cost], front["capacity"], where="post", color="tab:red", marker="o", markersize=9,
                markerfacecolor="none", label="Pareto front")
        for (x, y), tied in front.groupby([cost, "capacity"], sort=False)["config"]:
            ax.annotate(" ".join(f"#{c}" for c in tied), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(COST_LABELS[cost])
    ax.set_ylabel("capacity (req/s within the SLOs)")
    ax.set_title(f"Capacity against cost: {len(rated)} of {len(summary)} configurations meet the SLOs at some load")
    ax.grid(alpha=0.3)
    figure_legend(fig, axes, columns=3)  # below the axes, where it hides no configuration
    return save(fig, path)


def summary_rows(records: Sequence[dict[str, Any]], at_capacity: Sequence[str]) -> list[dict[str, Any]]:
    """One row per configuration: its grid values, costs, capacity, and `at_capacity` metrics of the probe there."""
    out = []
    for record in records:
        capacity_scale = math.nan if record["capacity_scale"] is None else record["capacity_scale"]
        # JSON has no infinity: a trace whose requests all arrive at once has an infinite rate, saved as null.
        per_scale = math.inf if record["rate_per_scale"] is None else record["rate_per_scale"]
        probe = next((p for p in record["probes"] if p["rate_scale"] == capacity_scale), None)
        # The lowest load that failed bounds the capacity from above (NaN when every load passed).
        failing_scale = min((p["rate_scale"] for p in record["probes"] if not p["meets_slos"]), default=math.nan)
        row = {"config": record["index"], **record["params"], "policy": record["policy"], **record["costs"],
               "capacity_scale": capacity_scale, "capacity": capacity_scale * per_scale,
               "first_failing_scale": failing_scale, "first_failing": failing_scale * per_scale,
               "lower_bound": record["lower_bound"], "replays": record["replays"]}
        row.update({f"{m}@capacity": (probe or {}).get(m) for m in at_capacity})
        out.append(row)
    return out


def probe_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"config": r["index"], **r["params"], "policy": r["policy"], **probe}
            for r in records for probe in r["probes"]]
    return pd.DataFrame(rows)


def _display(summary: pd.DataFrame, front: pd.Series, spec: SweepSpec) -> pd.DataFrame:
    params = [k for k in spec.grid if k != "policy"]
    shown = pd.DataFrame({"#": summary["config"].astype(str), "policy": summary["policy"]})
    for key in params:
        shown[key] = summary[key].astype(str)
    shown[spec.cost] = [format_value(spec.cost, v) for v in summary[spec.cost]]
    shown["capacity (req/s)"] = [capacity_text(row) for _, row in summary.iterrows()]
    shown["rate scale"] = [capacity_text(row, scale=True) for _, row in summary.iterrows()]
    shown["replays"] = summary["replays"].astype(str)
    for metric in ("slo_attainment", "p99_ttft_ms", "p99_tpot_ms", "output_throughput"):
        shown[metric] = [format_value(metric, v) for v in summary[f"{metric}@capacity"]]
    shown["Pareto"] = ["yes" if f else "" for f in front]
    return shown


def capacity_text(row: pd.Series, scale: bool = False) -> str:
    """A configuration's capacity among its probed loads (req/s, or rate scales with `scale`): `2.76+` when
    the highest load passed, `1.38-2.76` between the last pass and the first failure, `< 1.38` when none passed."""
    capacity, failing = ("capacity_scale", "first_failing_scale") if scale else ("capacity", "first_failing")
    return format_capacity(float(row[capacity]), bool(row["lower_bound"]), float(row[failing]))


def _setup(spec: SweepSpec, description: str, base_rate: float, replays: int) -> list[tuple[str, str]]:
    grid = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in spec.grid.items())
    if spec.search is not None:
        s = spec.search
        loads = (f"capacity search by bisection over rate scales {s.low:g}..{s.high:g} in steps of {s.precision:g} "
                 f"(x {base_rate:.4g} req/s, the trace's rate)")
    else:
        kind, values = spec.loads  # type: ignore[misc]
        loads = f"fixed loads, {kind.replace('_', ' ')} " + ", ".join(f"{v:g}" for v in values)
    fixed = ", ".join(f"{k}={v}" for k, v in spec.engine.items()) or "simulator defaults"
    return [("spec", str(spec.path)), ("trace", description), ("seed", str(spec.seed)),
            ("grid", f"{len(spec.configs)} configurations: {grid}"), ("fixed options", fixed),
            ("SLOs", f"{spec.slo.describe()}; a load meets them when >= {100 * spec.target:g}% of requests do"),
            ("loads", loads), ("replays", str(replays))]


def findings(summary: pd.DataFrame, front: pd.Series, spec: SweepSpec) -> list[str]:
    out = []
    rated = summary.dropna(subset=["capacity"])
    if rated.empty:
        return [f"No configuration meets the SLOs ({spec.slo.describe()}) at any load tried."]
    best = rated.loc[rated["capacity"].idxmax()]
    unit = COST_UNITS[spec.cost]
    # Configurations at the same capacity (the same probed load) share it: naming one alone reads as a win.
    tied = rated[(rated["capacity"] == best["capacity"]) & (rated["lower_bound"] == best["lower_bound"])]
    if len(tied) > 1:
        names = ", ".join(f"#{r['config']} ({_name(r, spec)}; {spec.cost} {format_value(spec.cost, r[spec.cost])} "
                          f"{unit})" for _, r in tied.iterrows())
        out.append(f"Highest capacity: {capacity_text(best)} req/s (rate scale {best['capacity_scale']:g}), shared by "
                   f"{len(tied)} configurations: {names}.")
    else:
        out.append(f"Highest capacity: #{best['config']} ({_name(best, spec)}) at "
                   f"{capacity_text(best)} req/s "
                   f"(rate scale {best['capacity_scale']:g}), {spec.cost} {format_value(spec.cost, best[spec.cost])} "
                   f"{unit}.")
    parts = []
    on_front = summary[front].sort_values([spec.cost, "config"], kind="stable")
    for (cost, _), tied in on_front.groupby([spec.cost, "capacity"], sort=False):
        first = tied.iloc[0]
        names = ", ".join(f"#{r['config']} ({_name(r, spec)})" for _, r in tied.iterrows())
        parts.append(f"{capacity_text(first)} req/s for "
                     f"{format_value(spec.cost, cost)} {unit}: {names}")
    out.append(f"Pareto front of capacity against {spec.cost} (tied configurations together): "
               + "; ".join(parts) + ".")
    none = summary[summary["capacity"].isna()]
    if len(none):
        out.append(f"{len(none)} configuration(s) miss the SLOs even at the lowest load: "
                   + ", ".join(f"#{c}" for c in none["config"]) + ".")
    return out


def _name(row: pd.Series, spec: SweepSpec) -> str:
    return " ".join(f"{k}={row[k]}" for k in spec.grid)


CAPACITY_NOTE = ("Capacity: the highest rate meeting the SLOs with every lower tested rate meeting them too; `a-b`: a "
                 "passed, b (the next load tried) failed; `+` marks a lower bound (every load tried passed); `< b`: "
                 "even the lowest load tried, b, failed. Metrics are those of the replay at the capacity.")


def render_markdown(shown: pd.DataFrame, lines: list[str], setup: list[tuple[str, str]], spec: SweepSpec) -> str:
    out = ["# Sweep", ""] + [f"- **{k}**: {v}" for k, v in setup]
    out += ["", "## Findings", ""] + [f"- {s}" for s in lines]
    out += ["", "## Configurations", "", to_markdown(shown), "",
            CAPACITY_NOTE, "",
            "## Capacity against cost", "", "![pareto](plots/pareto.png)", "",
            "## Spec", "", "```toml", spec.text.rstrip(), "```", "",
            "Every probe's metrics are in `probes.csv`; each configuration's record in `configs/NNNN.json`.", ""]
    return "\n".join(out)


def render_html(shown: pd.DataFrame, lines: list[str], setup: list[tuple[str, str]], spec: SweepSpec,
                plot: Path) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>pagedlab sweep</title>"
             f"<style>{HTML_STYLE}</style></head><body><h1>Sweep</h1><ul>"]
    parts += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in setup]
    parts.append("</ul><h2>Findings</h2><ul>")
    parts += [f"<li>{html.escape(s)}</li>" for s in lines]
    parts.append("</ul><h2>Configurations</h2>" + to_html(shown) + f"<p>{html_text(CAPACITY_NOTE)}</p>")
    data = base64.b64encode(plot.read_bytes()).decode("ascii")
    parts.append(f"<h2>Capacity against cost</h2><img alt='pareto' src='data:image/png;base64,{data}'>")
    parts.append(f"<h2>Spec</h2><pre>{html.escape(spec.text)}</pre></body></html>")
    return "\n".join(parts)


def write_sweep_outputs(out: Path, spec: SweepSpec, records: Sequence[dict[str, Any]], description: str,
                        base_rate: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`summary.csv`, `probes.csv`, `plots/pareto.png`, `report.md`, `report.html` under `out`."""
    summary = pd.DataFrame(summary_rows(records, AT_CAPACITY))
    probes = probe_table(records)
    front = pareto_front(summary, spec.cost)
    summary["pareto"] = front
    (out / "plots").mkdir(exist_ok=True)
    plot = plot_pareto(summary, spec.cost, out / "plots" / "pareto.png")
    shown = _display(summary, front, spec)
    setup = _setup(spec, description, base_rate, int(summary["replays"].sum()))
    lines = findings(summary, front, spec)
    write_text_atomic(out / "summary.csv", summary.to_csv(index=False))
    write_text_atomic(out / "probes.csv", probes.to_csv(index=False))
    write_text_atomic(out / "report.md", render_markdown(shown, lines, setup, spec))
    write_text_atomic(out / "report.html", render_html(shown, lines, setup, spec, plot))
    return summary, probes
