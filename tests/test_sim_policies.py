"""Each policy's defining behaviour on small hand-made traces."""
from __future__ import annotations

import numpy as np
import pytest

from sim import POLICIES, EngineConfig, replay
from traces import Request, Trace


def by_id(result) -> "object":
    return result.requests.set_index("request_id")


def test_policy_names_and_an_unknown_name_lists_the_valid_ones() -> None:
    assert list(POLICIES) == ["vllm", "vllm-v0", "vllm-swap", "sarathi", "orca-max", "orca-oracle", "orca-pow2",
                              "static", "sglang"]
    with pytest.raises(ValueError, match="unknown name 'fifo'; valid names: vllm, vllm-v0, vllm-swap, sarathi"):
        replay(Trace([Request("a", 0.0, 1, 1)]), EngineConfig(), policy="fifo")


@pytest.mark.parametrize("policy", ["vllm-v0", "vllm-swap"])
@pytest.mark.parametrize("fields, message", [
    ({"max_num_batched_tokens": 4096},
     "max_num_batched_tokens: 4096 is smaller than max_model_len 8192; vLLM V0 refuses this without chunked prefill"),
    ({"max_num_batched_tokens": 8192, "max_num_seqs": 9000},
     "max_num_batched_tokens: 8192 is smaller than max_num_seqs 9000; vLLM V0 refuses this"),
])
def test_settings_vllm_v0_refuses_at_startup_are_errors_not_rejections(policy: str, fields: dict,
                                                                       message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replay(Trace([Request("a", 0.0, 10, 10)]), EngineConfig(**fields), policy=policy)
    # the same budget with a context that fits it runs
    fits = EngineConfig(max_num_batched_tokens=4096, max_model_len=4096)
    assert replay(Trace([Request("a", 0.0, 10, 10)]), fits, policy=policy).summary["num_finished"] == 1


def test_static_makes_a_late_arrival_wait_for_the_whole_batch() -> None:
    trace = Trace([Request("A", 0.0, 100, 200), Request("B", 0.05, 100, 10)])
    static = by_id(replay(trace, EngineConfig(), policy="static"))
    assert static.loc["B", "first_token_s"] > static.loc["A", "finish_s"]
    # Iteration-level batching lets B in at once.
    for policy in ("vllm-v0", "orca-max", "sarathi"):
        other = by_id(replay(trace, EngineConfig(), policy=policy))
        assert other.loc["B", "first_token_s"] < 0.1 < other.loc["A", "finish_s"]


def test_static_batches_simultaneous_arrivals_together() -> None:
    trace = Trace([Request(f"r{i}", 0.0, 50, 10 * (i + 1)) for i in range(4)])
    result = replay(trace, EngineConfig(), policy="static")
    assert result.steps.loc[0, "num_prefill_seqs"] == 4
    assert (result.steps["num_prefill_tokens"] > 0).sum() == 1


def test_sarathi_never_stalls_decodes_behind_a_long_prefill() -> None:
    # A decodes; B's 6000-token prompt arrives meanwhile.
    trace = Trace([Request("A", 0.0, 100, 300), Request("B", 0.3, 6000, 5)])
    config = EngineConfig()
    gaps = {}
    for policy in ("vllm-v0", "sarathi"):
        result = replay(trace, config, policy=policy)
        gaps[policy] = result.itl_s[:299].max()  # A's inter-token gaps come first
        steps = result.steps
        if policy == "sarathi":
            a = by_id(result).loc["A"]
            during_a = steps[(steps["start_s"] >= a["first_token_s"]) & (steps["end_s"] <= a["finish_s"])]
            assert (during_a["num_decode_seqs"] >= 1).all()   # A decodes in every step
            assert steps["num_prefill_tokens"].max() <= config.prefill_chunk_tokens
            assert ((steps["num_prefill_tokens"] > 0) & (steps["num_decode_seqs"] > 0)).sum() >= 6000 // 512
        else:  # prefills first: one step prefills all of B while A waits
            assert steps["num_prefill_tokens"].max() == 6000
            big = steps[steps["num_prefill_tokens"] == 6000].iloc[0]
            assert big["num_decode_seqs"] == 0
    assert gaps["sarathi"] < gaps["vllm-v0"] / 4


def test_orca_max_admits_fewer_requests_than_vllm_for_the_same_memory() -> None:
    trace = Trace([Request(f"r{i}", 0.0, 200, 200) for i in range(40)])
    config = EngineConfig(model="opt-13b", gpu="a100-40gb", num_gpu_blocks=400)
    peak = {p: replay(trace, config, policy=p).steps["num_running"].max()
            for p in ("vllm-v0", "orca-oracle", "orca-max")}
    # Max reserves 2048 slots (128 blocks) each, oracle 400 (25 blocks, a 32-block buddy range); the pool of
    # 400 blocks is buddy ranges of 256 + 128 + 16 blocks; paged takes what is used.
    assert peak["orca-max"] == 256 // 128 + 128 // 128
    assert peak["orca-oracle"] == 256 // 32 + 128 // 32
    assert peak["vllm-v0"] > peak["orca-oracle"] > peak["orca-max"]


def test_orca_reserves_up_front_and_never_preempts() -> None:
    trace = Trace([Request(f"r{i}", 0.01 * i, 300, 150) for i in range(30)])
    config = EngineConfig(num_gpu_blocks=200, max_output_tokens=200)
    for policy in ("orca-max", "orca-oracle"):
        result = replay(trace, config, policy=policy)
        steps = result.steps
        assert result.summary["preemptions"] == 0
        assert (steps["kv_slots_reserved"] >= steps["kv_tokens"]).all()
        reserve = 300 + (200 if policy == "orca-max" else 150)
        assert (steps["kv_slots_reserved"] % reserve == 0).all()
    # Orca runs new prompts in the same iteration as running decodes (selective batching).
    mixed = replay(trace, config, policy="orca-oracle").steps
    assert ((mixed["num_prefill_tokens"] > 0) & (mixed["num_decode_seqs"] > 0)).any()


def test_vllm_prefills_first_and_preempts_the_newest_by_recompute() -> None:
    trace = Trace([Request(f"r{i}", 0.001 * i, 100, 300) for i in range(6)])
    result = replay(trace, EngineConfig(num_gpu_blocks=60, watermark=0.0), policy="vllm-v0")
    steps, req = result.steps, by_id(result)
    assert not ((steps["num_prefill_tokens"] > 0) & (steps["num_decode_seqs"] > 0)).any()
    assert result.summary["preemptions"] > 0 and result.summary["swaps_out"] == 0
    preempted = req[req["preemptions"] > 0]
    assert "r0" not in preempted.index                         # the oldest always keeps going
    assert (preempted["recomputed_tokens"] > preempted["prompt_tokens"]).all()
    assert (req["status"] == "finished").all()


def test_vllm_keeps_the_watermark_free_when_admitting() -> None:
    trace = Trace([Request(f"r{i}", 0.0, 160, 20) for i in range(30)])
    config = EngineConfig(num_gpu_blocks=100, watermark=0.1)
    steps = replay(trace, config, policy="vllm-v0").steps
    prefill_steps = steps[steps["num_prefill_tokens"] > 0]
    assert (prefill_steps["kv_blocks_free"] >= 10).all()
    assert replay(trace, EngineConfig(num_gpu_blocks=100, watermark=0.0)).steps["kv_blocks_free"].min() < 10


def test_vllm_swap_swaps_instead_of_recomputing() -> None:
    trace = Trace([Request(f"r{i}", 0.001 * i, 100, 300) for i in range(6)])
    config = EngineConfig(num_gpu_blocks=60, watermark=0.0)
    swap = replay(trace, config, policy="vllm-swap")
    s = swap.summary
    assert s["swaps_out"] > 0 and s["swaps_in"] == s["swaps_out"] and s["recomputed_tokens"] == 0
    assert s["swap_out_blocks"] == s["swap_in_blocks"] > 0
    recompute = replay(trace, config, policy="vllm-v0").summary
    assert recompute["recomputed_tokens"] > 0 and recompute["swaps_out"] == 0
    # Swapped requests come back before any new prefill.
    steps = swap.steps
    assert not ((steps["num_swapped"] > 0) & (steps["num_prefill_tokens"] > 0)).any()


def test_vllm_swap_recomputes_and_counts_where_v0_would_abort_without_cpu_space() -> None:
    trace = Trace([Request(f"r{i}", 0.001 * i, 100, 300) for i in range(6)])
    result = replay(trace, EngineConfig(num_gpu_blocks=60, watermark=0.0, swap_space_gib=0.0), policy="vllm-swap")
    s = result.summary
    assert s["swaps_out"] == 0 and s["recomputed_tokens"] > 0
    assert s["swap_space_exhausted"] == s["preemptions"] > 0
    assert (result.requests["status"] == "finished").all()
    assert replay(trace, EngineConfig(num_gpu_blocks=60, watermark=0.0), policy="vllm-swap").summary[
        "swap_space_exhausted"] == 0


def test_vllm_v0_recomputes_a_single_sequence_and_swaps_a_forked_group() -> None:
    # p (parallel sampling, n=2) and g (greedy) outgrow a small pool together; V0 preempts the newest running
    # request: g is recomputed when it is the victim, p swapped (V0 cannot recompute a group of sequences).
    for order in (("p", "g"), ("g", "p")):
        reqs = {"p": lambda t: Request("p", t, 100, 300, n=2, sampling="parallel"),
                "g": lambda t: Request("g", t, 100, 300)}
        trace = Trace([reqs[name](0.001 * i) for i, name in enumerate(order)])
        v0 = by_id(replay(trace, EngineConfig(num_gpu_blocks=45, watermark=0.0), policy="vllm-v0"))
        victim = v0.loc[order[1]]
        assert victim.preemptions >= 1 and (v0["status"] == "finished").all(), order
        if order[1] == "p":
            assert victim.swaps == victim.preemptions and victim.recomputed_tokens == 0
        else:
            assert victim.swaps == 0 and victim.recomputed_tokens > 0


def test_a_swapped_group_comes_back_when_v0_counts_its_shared_blocks_once() -> None:
    # p (n=4 over a 30-block prompt) is swapped out under g's growth. V0's can_swap_in counts the family's
    # distinct full blocks plus a slot per sequence (core/block_manager.py:458-510 @v0.6.6.post1): about
    # 30 + 4 x 4 + 4 of 64 blocks, so p swaps back in; counting the shared prompt once per sample (4 x 30)
    # it could never come back, and would be recomputed on the idle engine.
    trace = Trace([Request("g", 0.0, 160, 300), Request("p", 0.001, 480, 120, n=4, sampling="parallel")])
    result = replay(trace, EngineConfig(num_gpu_blocks=64, watermark=0.0, check_every=1), policy="vllm-v0")
    s, p = result.summary, by_id(result).loc["p"]
    assert p.swaps >= 1 and p.recomputed_tokens == 0 and p.status == "finished"
    assert s["swaps_in"] == s["swaps_out"] and s["swapped_recomputed"] == 0


def test_a_swapped_group_that_cannot_come_back_on_an_idle_engine_is_recomputed_and_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A swap-in refused for good (V0 would wait forever): once nothing else runs, the replay recomputes it
    # and counts the departure from V0.
    from memory import AllocStatus
    from sim.kv_paged import PagedKV
    monkeypatch.setattr(PagedKV, "swap_in_status", lambda self, group: AllocStatus.LATER)
    trace = Trace([Request("g", 0.0, 160, 300), Request("p", 0.001, 480, 120, n=4, sampling="parallel")])
    result = replay(trace, EngineConfig(num_gpu_blocks=64, watermark=0.0, check_every=1), policy="vllm-v0")
    s, p = result.summary, by_id(result).loc["p"]
    assert s["swaps_in"] == 0 and s["swapped_recomputed"] == s["swaps_out"] == p.swaps >= 1
    assert p.status == "finished" and p.recomputed_tokens > 0


def test_a_swapped_group_that_can_never_fit_fails_as_v0_fails_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from memory import AllocStatus
    from sim.kv_paged import PagedKV
    monkeypatch.setattr(PagedKV, "swap_in_status", lambda self, group: AllocStatus.NEVER)
    trace = Trace([Request("g", 0.0, 160, 300), Request("p", 0.001, 480, 120, n=4, sampling="parallel")])
    result = replay(trace, EngineConfig(num_gpu_blocks=64, watermark=0.0, check_every=1), policy="vllm-v0")
    g, p = by_id(result).loc["g"], by_id(result).loc["p"]
    assert g.status == "finished" and p.status == "rejected" and "swap back in" in p.reason
    assert result.summary["num_cpu_blocks"] > 0 and result.summary["swapped_recomputed"] == 0


def test_every_policy_serves_the_same_simple_trace() -> None:
    trace = Trace([Request(f"r{i}", 0.02 * i, 40 + i, 30) for i in range(10)])
    for policy in POLICIES:
        result = replay(trace, EngineConfig(), policy=policy)
        assert (result.requests["status"] == "finished").all(), policy
        assert result.summary["total_generated_tokens"] == 300
        assert np.isfinite(result.summary["ttft_p50_s"])
