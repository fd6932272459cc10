"""One definition of every memory and latency figure: the replay's summary.json and the comparison
report's summary.csv agree on the same run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim import cli
from sim.metrics import kv_usage, memory_figures, percentiles, time_per_output_token, time_weighted_mean

SHARING = Path(__file__).resolve().parent / "data" / "sim_sharing_trace.csv"
SHARED_FIGURES = ("kv_usage_mean", "kv_usage_peak", "kv_token_usage_mean", "mean_batch_size")


@pytest.mark.parametrize("policy", ["orca-max", "vllm-v0", "orca-oracle"])
def test_summary_json_and_compare_summary_csv_agree(policy: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    argv = ["compare", "--trace", str(SHARING), "--num-requests", "120", "--policies", policy,
            "--num-gpu-blocks", "1500", "--quiet", "--out", str(out)]
    assert cli.main(argv) == 0
    capsys.readouterr()
    row = pd.read_csv(out / "summary.csv").iloc[0]
    summary = json.loads((out / "runs" / f"{policy}-1" / "summary.json").read_text())
    for name in SHARED_FIGURES:
        assert row[name] == pytest.approx(summary[name], rel=1e-12), name
    assert row["kv_unused_fraction"] == pytest.approx(1 - summary["slot_utilization"], rel=1e-12)
    # TPOT, which the compare report leads with, is in a replay's summary too, in seconds
    assert 1000 * summary["tpot_p50_s"] == pytest.approx(row["median_tpot_ms"], rel=1e-9)
    assert 1000 * summary["tpot_p99_s"] == pytest.approx(row["p99_tpot_ms"], rel=1e-9)
    assert 1000 * summary["ttft_p99_s"] == pytest.approx(row["p99_ttft_ms"], rel=1e-9)
    steps = pd.read_csv(out / "runs" / f"{policy}-1" / "steps.csv")
    held = steps["kv_blocks_used"] / summary["kv_blocks_total"]
    assert summary["kv_usage_mean"] == pytest.approx(np.average(held, weights=steps["duration_s"]), rel=1e-12)
    if policy == "orca-oracle":
        # Reservations of prompt + output are not whole blocks: slots reserved would give a smaller figure.
        reserved = steps["kv_slots_reserved"] / (summary["kv_blocks_total"] * summary["block_size"])
        assert np.average(reserved, weights=steps["duration_s"]) < summary["kv_usage_mean"] - 1e-4


def test_kv_usage_is_blocks_held_over_the_pool() -> None:
    steps = pd.DataFrame({"kv_blocks_used": [2, 4], "kv_slots_reserved": [20, 50], "kv_tokens": [10, 40],
                          "kv_blocks_unshared": [3, 4], "duration_s": [1.0, 3.0], "batch_size": [1, 3]})
    assert kv_usage(steps, 8).tolist() == [0.25, 0.5]
    figures = memory_figures(steps, kv_blocks_total=8, block_size=16)
    assert figures["kv_usage_mean"] == pytest.approx((0.25 + 3 * 0.5) / 4)
    assert figures["slot_utilization"] == pytest.approx((10 + 3 * 40) / (20 + 3 * 50))
    assert figures["sharing_saved_fraction"] == pytest.approx(1 - (2 + 3 * 4) / (3 + 3 * 4))
    assert figures["mean_batch_size"] == pytest.approx(2.5)


def test_empty_samples_and_zero_durations() -> None:
    assert all(np.isnan(percentiles(np.array([]), (50, 99))))
    assert percentiles(np.array([1.0, np.nan, 3.0]), (50,)) == [2.0]
    assert np.isnan(time_weighted_mean(np.array([]), np.array([])))
    assert time_weighted_mean(np.array([1.0, 3.0]), np.array([0.0, 0.0])) == 2.0


def test_time_per_output_token_skips_the_first_token_and_has_none_for_a_one_token_request() -> None:
    tpot = time_per_output_token(np.array([1.0, 1.0, 2.0]), np.array([3.0, 9.0, 2.5]), np.array([1, 5, 2]))
    assert np.isnan(tpot[0]) and tpot[1:].tolist() == [2.0, 0.5]


def test_analysis_column_needs_are_columns_of_the_replay_schema() -> None:
    from analysis import memory_view, metrics
    from sim.schema import REQUEST_COLUMNS, STEP_COLUMNS

    assert set(metrics.REQUIRED_REQUEST_COLUMNS) <= set(REQUEST_COLUMNS)
    assert set(memory_view.REQUIRED_STEP_COLUMNS) <= set(STEP_COLUMNS)
