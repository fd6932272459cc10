"""`vllm` (vLLM V1) rules on small hand-made traces, each against `vllm-v0` where the engines differ."""
from __future__ import annotations

import pandas as pd
import pytest

from sim import EngineConfig, replay
from sim.policies.vllm import serve_limits, v1_config
from traces import Request, Trace


def by_id(result) -> pd.DataFrame:
    return result.requests.set_index("request_id")


def mixed(steps: pd.DataFrame) -> pd.Series:
    return (steps["num_prefill_tokens"] > 0) & (steps["num_decode_seqs"] > 0)


def test_a_step_mixes_decodes_and_a_prefill_chunk_under_vllm_never_under_vllm_v0() -> None:
    trace = Trace([Request("long-decode", 0.0, 50, 400), Request("late", 0.05, 3000, 10)])
    assert mixed(replay(trace, EngineConfig(), policy="vllm").steps).any()
    assert not mixed(replay(trace, EngineConfig(), policy="vllm-v0").steps).any()


@pytest.mark.parametrize("budget", [64, 256])
def test_the_token_budget_is_shared_by_decodes_and_chunks_and_never_exceeded(budget: int) -> None:
    trace = Trace([Request(f"r{i}", 0.003 * i, 50 + 97 * i, 30 + i) for i in range(24)])
    config = EngineConfig(max_num_batched_tokens=budget, max_num_seqs=16)
    steps = replay(trace, config, policy="vllm").steps
    used = steps["num_prefill_tokens"] + steps["num_decode_seqs"]
    assert (used <= budget).all()
    assert (used == budget).any()                 # long prompts fill the budget exactly (chunked)
    assert (steps["num_prefill_tokens"] > 0).sum() > len(trace)   # prompts were split over steps


def test_long_prefill_token_threshold_caps_one_request_per_step() -> None:
    trace = Trace([Request("a", 0.0, 2000, 5), Request("b", 0.0, 2000, 5)])
    capped = replay(trace, EngineConfig(long_prefill_token_threshold=300), policy="vllm").steps
    assert capped["num_prefill_tokens"].max() <= 600 and (capped["num_prefill_tokens"] == 600).any()
    # Ignored while only one request is running or waiting.
    alone = replay(Trace([Request("a", 0.0, 2000, 5)]), EngineConfig(long_prefill_token_threshold=300),
                   policy="vllm").steps
    assert alone["num_prefill_tokens"].max() == 2000


def test_the_victim_is_the_last_running_request_and_goes_back_to_wait() -> None:
    trace = Trace([Request(f"r{i}", 0.001 * i, 100, 300) for i in range(6)])
    result = replay(trace, EngineConfig(num_gpu_blocks=60), policy="vllm")
    req, s = by_id(result), result.summary
    assert s["preemptions"] > 0 and s["swaps_out"] == 0       # recompute only: V1 has no swap
    assert req.loc["r0", "preemptions"] == 0                   # the first admitted is never the victim
    assert req.loc["r5", "preemptions"] > 0
    assert (req["status"] == "finished").all()


def test_a_resumed_request_hits_its_own_cached_prompt_blocks() -> None:
    trace = Trace([Request("a", 0.0, 100, 600), Request("b", 0.001, 400, 400)])
    on = replay(trace, EngineConfig(num_gpu_blocks=70), policy="vllm")
    off = replay(trace, EngineConfig(num_gpu_blocks=70, enable_prefix_caching=False), policy="vllm")
    assert on.summary["prefix_caching"] is True and off.summary["prefix_caching"] is False
    b_on, b_off = by_id(on).loc["b"], by_id(off).loc["b"]
    assert b_on["preemptions"] == b_off["preemptions"] == 1
    # Its 24 full prompt blocks (399 // 16) and the full output blocks it had computed (less evicted ones).
    hit = on.summary["prefix_hit_tokens"]
    assert hit > 384 and hit % 16 == 0
    assert b_off["recomputed_tokens"] - b_on["recomputed_tokens"] == hit


def test_no_request_is_admitted_in_a_step_that_preempted() -> None:
    trace = Trace([Request(f"r{i}", 0.001 * i, 100, 300) for i in range(10)])
    steps = replay(trace, EngineConfig(num_gpu_blocks=60, fast_forward=False), policy="vllm").steps
    preempting = steps[steps["preemptions"] > 0]
    assert len(preempting) > 0
    # A preempting step only runs the decodes and chunks of requests already running before it.
    before = steps["num_running"].shift(1).fillna(0)
    assert (preempting["num_running"] <= before[preempting.index]).all()


def test_beam_search_is_rejected_with_a_reason_under_vllm() -> None:
    trace = Trace([Request("beam", 0.0, 50, 20, n=2, sampling="beam"), Request("plain", 0.0, 50, 20)])
    req = by_id(replay(trace, EngineConfig(), policy="vllm"))
    assert req.loc["beam", "status"] == "rejected" and "beam search" in req.loc["beam", "reason"]
    assert req.loc["plain", "status"] == "finished"
    assert (by_id(replay(trace, EngineConfig(), policy="vllm-v0"))["status"] == "finished").all()


def test_serve_defaults_follow_the_gpu_class_and_explicit_settings_win() -> None:
    assert serve_limits(EngineConfig(gpu="h100-sxm")) == (8192, 1024)
    assert serve_limits(EngineConfig(gpu="h200")) == (8192, 1024)
    assert serve_limits(EngineConfig(gpu="a100-80gb")) == (2048, 256)
    cfg = v1_config(EngineConfig())
    assert (cfg.token_budget, cfg.max_num_seqs, cfg.gpu_memory_utilization, cfg.watermark,
            cfg.enable_prefix_caching) == (8192, 1024, 0.92, 0.0, True)
    own = v1_config(EngineConfig(max_num_batched_tokens=4096, max_num_seqs=64, watermark=0.05))
    assert (own.token_budget, own.max_num_seqs, own.watermark) == (4096, 64, 0.05)


@pytest.mark.parametrize("fields, message", [
    ({"max_num_batched_tokens": 100, "max_num_seqs": 128},
     "max_num_batched_tokens: 100 is smaller than max_num_seqs 128; vLLM V1 refuses this"),
    ({"long_prefill_token_threshold": 9000}, "long_prefill_token_threshold: 9000 exceeds max_model_len"),
])
def test_settings_vllm_v1_refuses_are_one_line_errors(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replay(Trace([Request("a", 0.0, 10, 10)]), EngineConfig(**fields), policy="vllm")
    with pytest.raises(ValueError, match="long_prefill_token_threshold: must be an integer >= 0"):
        EngineConfig(long_prefill_token_threshold=-1)
