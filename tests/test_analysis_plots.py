"""What the comparison plots say: legends that hide no line and name rejected requests, readable tick labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import plot_common, plots, run_plots
from analysis.runs import RunData
from analysis.slo import SLO
from test_analysis_report import fake_run

POLICIES = ("vllm", "sglang")


def _table() -> pd.DataFrame:
    rows = []
    for policy, rejected in (("vllm", (51, 51)), ("sglang", (0, 0))):
        for rate, count in zip((1.0, 2.0), rejected):
            rows.append({"policy": policy, "load": rate, "rate": rate, "rejected": count,
                         "p99_ttft_ms": 150.0 * rate ** 6, "p99_tpot_ms": 20.0 * rate,
                         "mean_normalized_latency_s": 0.02 * rate})
    return pd.DataFrame(rows)


def test_a_policy_that_rejected_requests_says_how_many_in_its_label() -> None:
    table = _table()
    assert plot_common.policy_labels(table, POLICIES) == {"vllm": "vllm (51 rejected)", "sglang": "sglang"}
    table.loc[(table["policy"] == "vllm") & (table["rate"] == 1.0), "rejected"] = 12
    assert plot_common.policy_labels(table, POLICIES)["vllm"] == "vllm (12-51 rejected)"
    assert plot_common.policy_labels(table.drop(columns="rejected"), POLICIES) == {"vllm": "vllm", "sglang": "sglang"}


def test_latency_against_load_has_one_legend_below_the_panels_and_plain_log_ticks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = []
    save = plots.save
    monkeypatch.setattr(plots, "save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    table = _table()
    plots.plot_latency_vs_rate(table, POLICIES, SLO(ttft_ms=2000, tpot_ms=100), tmp_path / "latency.png",
                               plot_common.policy_labels(table, POLICIES))
    (fig,) = figures
    assert all(ax.get_legend() is None for ax in fig.axes)  # a legend inside a panel hid its lines
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts == ["vllm (51 rejected)", "sglang", "SLO (ttft<=2000ms, tpot<=100ms)"]
    ttft = fig.axes[0]
    fig.canvas.draw()
    labels = [t.get_text() for t in ttft.get_yticklabels() if t.get_text()]
    assert "10,000" in labels and not any("^" in label or "e+" in label for label in labels)


def test_the_tpot_cdfs_are_in_milliseconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = []
    save = run_plots.save
    monkeypatch.setattr(run_plots, "save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    run: RunData = fake_run("vllm", 1.0)
    run_plots.plot_latency_cdfs({("vllm", 1.0): run}, ["vllm"], [1.0], "rate", tmp_path / "cdf.png",
                                {"vllm": "vllm (3 rejected)"})
    (fig,) = figures
    tpot = fig.axes[1]
    assert tpot.get_xlabel() == "TPOT (ms)"
    x = np.concatenate([line.get_xdata() for line in tpot.get_lines()])
    assert x.min() > 1.0  # milliseconds: a TPOT of a few ms, not 0.00x s
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["vllm (3 rejected)"]


def test_the_kv_timeline_shows_idle_stretches_as_gaps_and_spreads_long_steps_over_their_bins() -> None:
    # busy 0-10 s at 4 sequences (ten 1 s steps), idle 10-30 s, then one 10 s step of 2 sequences
    starts = np.concatenate([np.arange(10.0), [30.0]])
    durations = np.concatenate([np.ones(10), [10.0]])
    timeline = pd.DataFrame({"time_s": starts, "batch_size": np.concatenate([np.full(10, 4.0), [2.0]])})
    binned = run_plots.binned_timeline(timeline, durations, bins=8)  # 5 s bins over 0-40 s
    assert binned["time_s"].tolist() == [2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 32.5, 37.5]
    batch = binned["batch_size"].to_numpy()
    assert batch[:2].tolist() == [4.0, 4.0] and batch[6:].tolist() == [2.0, 2.0]
    assert np.isnan(batch[2:6]).all()  # no step runs there: nothing is drawn, not a line from 4 to 2


def test_a_run_far_longer_than_the_others_does_not_squeeze_the_kv_timeline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_plots.timeline_span({"a": 3.0, "b": 2.5}) is None  # comparable runs: the axis takes them all
    assert run_plots.timeline_span({"a": 3.0, "b": 2.5, "static": 300.0}) == pytest.approx(3.3)
    figures = []
    save = run_plots.save
    monkeypatch.setattr(run_plots, "save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    long = fake_run("static", 1.0)
    long.steps["start_s"] *= 100  # 3 s of steps spread over 290 s
    runs = {("vllm", 1.0): fake_run("vllm", 1.0), ("sglang", 1.0): fake_run("sglang", 1.0), ("static", 1.0): long}
    run_plots.plot_kv_timeline(runs, ["vllm", "sglang", "static"], 1.0, "rate", tmp_path / "kv.png")
    (fig,) = figures
    assert fig.axes[0].get_xlim() == pytest.approx((0.0, 3.3))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["vllm", "sglang", "static (runs to 290 s)"]


def test_the_pareto_plot_keeps_its_legend_off_the_points_and_rings_a_front_of_one_point(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis import sweep_report

    figures = []
    save = sweep_report.save
    monkeypatch.setattr(sweep_report, "save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    # two configurations on the front at one point, one cheap but slow one in the lower right corner
    summary = pd.DataFrame({"config": [0, 1, 2], "kv_gib": [20.0, 20.0, 11.7], "capacity": [3.0, 3.0, 1.0],
                            "lower_bound": [False, False, False]})
    sweep_report.plot_pareto(summary, "kv_gib", tmp_path / "pareto.png")
    (fig,) = figures
    (ax,) = fig.axes
    assert ax.get_legend() is None and len(fig.legends) == 1  # a legend in the corner hid configuration #2
    (front,) = [line for line in ax.get_lines() if line.get_label() == "Pareto front"]
    assert front.get_marker() == "o" and len(front.get_xdata()) >= 1


def test_a_latency_cdf_gets_a_log_axis_across_decades_and_a_linear_one_within_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = []
    save = run_plots.save
    monkeypatch.setattr(run_plots, "save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    run: RunData = fake_run("vllm", 1.0)
    run.requests["ttft_s"] = 0.140 + 0.0005 * np.arange(len(run.requests))  # every request arrived at once
    run.requests["e2e_s"] = np.geomspace(0.3, 30.0, len(run.requests))       # two decades
    run_plots.plot_latency_cdfs({("vllm", 1.0): run}, ["vllm"], [1.0], "rate", tmp_path / "cdf.png")
    (fig,) = figures
    fig.canvas.draw()
    ttft, tpot, e2e = fig.axes[:3]
    assert ttft.get_xscale() == "linear" and e2e.get_xscale() == "log"
    assert tpot.get_xscale() == "log"  # decode times from e2e's two decades: a few slow requests, as beam rounds
    for ax in (ttft, e2e):  # a log axis inside one decade had no labelled tick at all
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) >= 2 and not any("e-0" in label or "^" in label for label in labels), labels


def test_load_plots_of_a_trace_arriving_at_once_run_along_the_rate_scale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = []
    save = plots.save
    monkeypatch.setattr(plots, "save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    table = _table().assign(rate=np.inf)  # every scale of an all-at-once trace is an infinite rate
    plots.plot_latency_vs_rate(table, POLICIES, None, tmp_path / "latency.png")
    (fig,) = figures
    ttft = fig.axes[0]
    assert ttft.get_xlabel().startswith("rate scale")
    assert sorted({float(x) for line in ttft.get_lines() for x in line.get_xdata()}) == [1.0, 2.0]


def test_a_long_legend_wraps_inside_the_figure_and_narrow_log_axes_read_plainly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = []
    save = plots.save
    monkeypatch.setattr(plots, "save", lambda fig, path: (figures.append(fig), save(fig, path))[1])
    names = ("vllm", "sglang", "vllm-v0", "vllm-swap", "sarathi", "orca-max", "static")
    rows = [{"policy": p, "load": r, "rate": r, "rejected": 300 if p in ("orca-max", "static") else 8,
             "p99_ttft_ms": 1e5 + r, "p99_tpot_ms": 150.0 + r, "mean_normalized_latency_s": 0.55 + 0.005 * r}
            for p in names for r in (20.0, 40.0)]
    table = pd.DataFrame(rows)
    plots.plot_latency_vs_rate(table, names, SLO(ttft_ms=2000, tpot_ms=100), tmp_path / "latency.png",
                               plot_common.policy_labels(table, names))
    (fig,) = figures
    fig.canvas.draw()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # a legend of one row of eight was cut at both edges
    normalized = fig.axes[2]
    labels = [t.get_text() for t in normalized.get_yticklabels(minor=True) if t.get_text()]
    assert labels and not any("e-" in label or "e+" in label for label in labels), labels
