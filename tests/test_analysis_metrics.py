"""Metrics on small hand-made runs whose answers are worked out by hand in the comments."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.capacity import capacity_by_policy, capacity_of
from analysis.memory_view import memory_metrics
from analysis.metrics import percentile_key, request_latencies, serving_metrics
from analysis.slo import SLO, parse_goodput

NAN = float("nan")


def hand_requests() -> pd.DataFrame:
    """Three finished requests and one rejected; the run spans 0 s (first arrival) to 6 s (last finish).

    r0: ttft 0.5, e2e 2.5, 5 tokens -> tpot (2.5-0.5)/4 = 0.5, normalized 2.5/5 = 0.5
    r1: ttft 0.2, e2e 0.2, 1 token  -> no tpot (0 for goodput), normalized 0.2
    r2: ttft 1.0, e2e 4.0, 4 tokens -> tpot 3/3 = 1.0, normalized 1.0
    """
    return pd.DataFrame(
        {
            "request_id": [0, 1, 2, 3],
            "arrival_s": [0.0, 1.0, 2.0, 3.0],
            "first_token_s": [0.5, 1.2, 3.0, NAN],
            "finish_s": [2.5, 1.2, 6.0, NAN],
            "prompt_tokens": [10, 20, 30, 40],
            "output_tokens": [5, 1, 4, 8],
            "n": [1, 1, 1, 1],
            "status": ["finished", "finished", "finished", "rejected"],
            "ttft_s": [0.5, 0.2, 1.0, NAN],
            "e2e_s": [2.5, 0.2, 4.0, NAN],
            "generated_tokens": [5, 1, 4, 0],
        }
    )


ITL_S = np.array([0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0])  # r0's four gaps, r2's three


def test_throughputs_count_finished_requests_over_first_arrival_to_last_finish() -> None:
    m = serving_metrics(hand_requests(), ITL_S)
    assert (m["num_requests"], m["completed"], m["rejected"]) == (4, 3, 1)
    assert m["duration_s"] == 6.0
    assert m["request_throughput"] == pytest.approx(3 / 6)
    assert m["output_throughput"] == pytest.approx(10 / 6)  # 5 + 1 + 4 generated tokens
    assert m["total_token_throughput"] == pytest.approx(70 / 6)  # + 60 prompt tokens of finished requests
    assert serving_metrics(hand_requests(), ITL_S, duration_s=10.0)["request_throughput"] == pytest.approx(0.3)


def test_ttft_e2el_and_percentiles_by_linear_interpolation() -> None:
    m = serving_metrics(hand_requests(), ITL_S, percentiles=(90, 99))
    # TTFT sorted: 0.2, 0.5, 1.0 s; p90 sits at rank 0.9*2 = 1.8: 0.5 + 0.8*(1.0-0.5) = 0.9 s.
    assert m["mean_ttft_ms"] == pytest.approx(1700 / 3)
    assert m["median_ttft_ms"] == pytest.approx(500)
    assert m["p90_ttft_ms"] == pytest.approx(900)
    assert m["p99_ttft_ms"] == pytest.approx(990)
    assert m["mean_e2el_ms"] == pytest.approx(6700 / 3)
    assert m["median_e2el_ms"] == pytest.approx(2500)
    assert m["p90_e2el_ms"] == pytest.approx(2500 + 0.8 * 1500)


def test_tpot_leaves_out_single_token_requests() -> None:
    m = serving_metrics(hand_requests(), ITL_S)
    # Only r0 (0.5 s) and r2 (1.0 s) have a TPOT; r1's single token would otherwise drag the mean down.
    assert m["mean_tpot_ms"] == pytest.approx(750)
    assert m["median_tpot_ms"] == pytest.approx(750)
    assert m["p90_tpot_ms"] == pytest.approx(950)
    lat = request_latencies(hand_requests())
    assert math.isnan(lat.loc[lat["request_id"] == 1, "tpot_s"].item())


def test_itl_and_normalized_latency() -> None:
    m = serving_metrics(hand_requests(), ITL_S)
    assert m["mean_itl_ms"] == pytest.approx(5000 / 7)
    assert m["median_itl_ms"] == pytest.approx(500)
    assert m["p99_itl_ms"] == pytest.approx(1000)
    assert m["mean_normalized_latency_s"] == pytest.approx((0.5 + 0.2 + 1.0) / 3)
    assert m["median_normalized_latency_s"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("goodput", "num_good"),
    [
        (["ttft:300"], 1),  # only r1 (0.2 s)
        (["ttft:500"], 2),  # r0 sits exactly on the bound: `<=` keeps it
        (["tpot:999"], 2),  # r0 (0.5) and r1 (one token: TPOT 0); r2's 1.0 s misses
        (["tpot:1000"], 3),
        (["tpot:400"], 1),  # only the one-token r1
        (["e2el:2500"], 2),  # r0 on the bound, r1
        (["e2el:200"], 1),
        (["ttft:600", "tpot:400"], 1),  # r0 fails TPOT, r2 fails TTFT
        (["ttft:2000", "tpot:2000", "e2el:5000"], 3),  # the rejected r3 is never good
    ],
)
def test_goodput_per_slo(goodput: list[str], num_good: int) -> None:
    m = serving_metrics(hand_requests(), ITL_S, slo=parse_goodput(goodput))
    assert m["request_goodput"] == pytest.approx(num_good / 6)
    assert m["slo_attainment"] == pytest.approx(num_good / 4)


def test_no_slo_gives_nan_goodput_and_no_finished_request_gives_nan_latencies() -> None:
    m = serving_metrics(hand_requests(), ITL_S)
    assert math.isnan(m["request_goodput"]) and math.isnan(m["slo_attainment"])
    rejected = hand_requests().assign(status="rejected")
    m = serving_metrics(rejected, np.array([]), slo=SLO(ttft_ms=1000))
    assert (m["completed"], m["request_throughput"], m["request_goodput"], m["slo_attainment"]) == (0, 0.0, 0.0, 0.0)
    assert math.isnan(m["mean_ttft_ms"]) and math.isnan(m["p99_itl_ms"])


def test_percentile_key_spelling() -> None:
    assert (percentile_key(99), percentile_key(99.9), percentile_key(50.0)) == ("p99", "p99.9", "p50")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ttfb:100"], "valid names: ttft, tpot, e2el"),
        (["ttft"], "expected NAME:MILLISECONDS"),
        (["ttft:fast"], "not a number"),
        (["tpot:-5"], "positive"),
        (["ttft:1", "ttft:2"], "given twice"),
    ],
)
def test_parse_goodput_rejects_bad_input_in_one_line(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_goodput(args)
    assert "\n" not in str(info.value)


def test_parse_goodput_round_trips() -> None:
    slo = parse_goodput(["TPOT:100", "ttft:2000.5"])
    assert slo == SLO(ttft_ms=2000.5, tpot_ms=100)
    assert parse_goodput(slo.as_args()) == slo
    assert slo.describe() == "ttft<=2000.5ms, tpot<=100ms"


def hand_steps() -> pd.DataFrame:
    """Two steps on 8 blocks of 16 slots (128 slots): 1 s at 32 slots held / 20 used, 3 s at 64 held / 60 used."""
    return pd.DataFrame(
        {
            "step": [0, 1],
            "start_s": [0.0, 1.0],
            "end_s": [1.0, 4.0],
            "duration_s": [1.0, 3.0],
            "batch_size": [2, 4],
            "num_running": [5, 1],
            "kv_blocks_used": [2, 4],
            "kv_blocks_free": [6, 4],
            "kv_tokens": [20, 60],
            "kv_slots_reserved": [32, 64],
            "cow_copies": [1, 2],
            "preemptions": [0, 3],
            "swaps_out": [0, 2],
            "swaps_in": [1, 0],
        }
    )


def test_memory_view_is_time_weighted() -> None:
    m = memory_metrics(hand_steps(), {"block_size": 16, "kv_blocks_total": 8, "sharing_saved_fraction": 0.25})
    assert m["kv_usage_mean"] == pytest.approx((0.25 * 1 + 0.5 * 3) / 4)
    assert m["kv_usage_peak"] == pytest.approx(0.5)
    assert m["kv_token_usage_mean"] == pytest.approx((20 * 1 + 60 * 3) / 4 / 128)
    assert m["kv_slots_unused_mean"] == pytest.approx((12 * 1 + 4 * 3) / 4)
    assert m["kv_unused_fraction"] == pytest.approx(1 - 200 / 224)
    assert m["mean_batch_size"] == pytest.approx(3.5)
    assert m["mean_num_running"] == pytest.approx((5 * 1 + 1 * 3) / 4)
    assert (m["preemptions"], m["swaps_out"], m["swaps_in"], m["cow_copies"]) == (3, 2, 1, 3)
    assert m["sharing_saved_fraction"] == 0.25
    assert m["kv_overfull_steps"] == 0
    # A step claiming more tokens than held slots is counted (the report flags it), not averaged away silently.
    overfull = hand_steps().assign(kv_tokens=[20, 70])
    assert memory_metrics(overfull, {"block_size": 16, "kv_blocks_total": 8})["kv_overfull_steps"] == 1
    # Without kv_blocks_total the summary's blocks come from used + free.
    assert memory_metrics(hand_steps(), {"block_size": 16})["kv_usage_peak"] == pytest.approx(0.5)


def test_capacity_is_highest_load_with_every_lower_load_meeting_the_target() -> None:
    assert capacity_of([1, 2, 4, 8], [1.0, 0.95, 0.9, 0.5]) == 4  # 0.9 meets a 0.9 target
    assert capacity_of([8, 1, 4, 2], [0.5, 1.0, 0.9, 0.95]) == 4  # order of the sweep does not matter
    assert capacity_of([1, 2, 4], [0.95, 0.5, 0.95]) == 1  # a pass above a failure is not capacity
    assert math.isnan(capacity_of([1, 2], [0.85, 0.95]))
    assert capacity_of([1, 2], [0.85, 0.85], target=0.8) == 2
    with pytest.raises(ValueError, match="slo-attainment"):
        capacity_of([1], [1.0], target=1.5)


def test_capacity_search_over_hand_made_runs() -> None:
    """Two policies, three loads; each run's attainment comes from serving_metrics on its requests."""
    slo = SLO(ttft_ms=600)
    rows = []
    for policy, ttfts_by_load in {
        "fast": {1.0: [0.1, 0.2, 0.3, 0.4], 2.0: [0.1, 0.2, 0.5, 0.6], 4.0: [0.1, 0.7, 0.8, 0.9]},
        "slow": {1.0: [0.1, 0.2, 0.3, 0.9], 2.0: [0.7, 0.8, 0.9, 1.0], 4.0: [1.0, 2.0, 3.0, 4.0]},
    }.items():
        for rate, ttfts in ttfts_by_load.items():
            requests = pd.DataFrame(
                {
                    "arrival_s": [0.0, 1.0, 2.0, 3.0],
                    "finish_s": [4.0 + t for t in ttfts],
                    "prompt_tokens": 8,
                    "output_tokens": 2,
                    "status": "finished",
                    "ttft_s": ttfts,
                    "e2e_s": [t + 1.0 for t in ttfts],
                }
            )
            m = serving_metrics(requests, np.array([]), slo=slo)
            rows.append({"policy": policy, "rate": rate, "slo_attainment": m["slo_attainment"]})
    table = pd.DataFrame(rows)
    # fast: attainment 1.0, 1.0, 0.25 -> capacity 2 at a 90% target; slow: 0.75 at the lowest load -> none.
    caps = capacity_by_policy(table, target=0.9).set_index("policy")
    assert caps.loc["fast", "capacity"] == 2.0 and not caps.loc["fast", "all_loads_met"]
    assert math.isnan(caps.loc["slow", "capacity"])
    # At a 75% target slow meets only its lowest load; at 25% fast meets all three (a lower bound).
    assert capacity_by_policy(table, target=0.75).set_index("policy").loc["slow", "capacity"] == 1.0
    loose = capacity_by_policy(table, target=0.25).set_index("policy")
    assert loose.loc["fast", "capacity"] == 4.0 and loose.loc["fast", "all_loads_met"]


def test_a_request_refused_after_the_last_finish_extends_the_benchmark() -> None:
    # r3 (rejected) arrives at 9 s, after the last finish (6 s): vLLM's benchmark waits until it was sent and
    # refused, so the duration is 9 s, not 6 s, and 3 finished requests make 1/3 req/s, not 1/2.
    requests = hand_requests()
    requests.loc[3, "arrival_s"] = 9.0
    metrics = serving_metrics(requests, np.array([]))
    assert metrics["duration_s"] == pytest.approx(9.0) and metrics["request_throughput"] == pytest.approx(3 / 9)
    assert serving_metrics(hand_requests(), np.array([]))["duration_s"] == pytest.approx(6.0)
