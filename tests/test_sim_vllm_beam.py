"""Beam search under `vllm` (vLLM V1): the API server's rounds of 1-token requests (`sim.v1_beam_search`),
on small hand-made traces."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim import EngineConfig, replay
from sim.v1_beam_search import BeamSearch, engine_requests
from traces import Request, Trace

# One beam request alone: prompt 50, 20 output tokens, width 4; 16-token blocks.
P, L, K, BS = 50, 20, 4, 16


def beam_alone(priority: int = 0, **fields) -> tuple[object, list[tuple[int, list]]]:
    """Replay of the lone beam request, and the rounds its front end sent: (send time ns, requests)."""
    rounds: list[tuple[int, list]] = []
    send = BeamSearch.send_round

    def recording(self, now_ns: int) -> list:
        requests = send(self, now_ns)
        rounds.append((now_ns, requests))
        return requests

    BeamSearch.send_round = recording
    try:
        trace = Trace([Request("beam", 0.0, P, L, n=K, sampling="beam", priority=priority)])
        result = replay(trace, EngineConfig(check_every=1, **fields), policy="vllm")
    finally:
        BeamSearch.send_round = send
    return result, rounds


def test_a_beam_request_runs_as_rounds_of_beam_width_one_token_requests() -> None:
    result, rounds = beam_alone()
    # Round 1 is the prompt alone; each later round one request per beam; L rounds.
    assert [len(requests) for _, requests in rounds] == [1] + [K] * (L - 1)
    assert result.summary["engine_requests"] == engine_requests(K, L) == 1 + (L - 1) * K
    # Each request's prompt is the user's prompt and its beam's tokens so far; it samples one token.
    for t, (_, requests) in enumerate(rounds):
        assert all((r.prompt, r.output, r.n, r.generated) == (P + t, 1, 1, 1) for r in requests)
    assert result.steps["num_generated_tokens"].sum() == 1 + (L - 1) * K
    # requests.csv has the user's request only: n beams of L tokens, finished, not rejected.
    req = result.requests
    assert len(req) == 1 and req.loc[0, "status"] == "finished" and req.loc[0, "reason"] == ""
    assert (req.loc[0, "n"], req.loc[0, "output_tokens"], req.loc[0, "generated_tokens"]) == (K, L, K * L)


@pytest.mark.parametrize("fields", [{}, {"max_num_batched_tokens": 64, "max_num_seqs": 2,
                                         "enable_prefix_caching": False}])
def test_each_round_is_sent_when_the_previous_round_has_all_finished(fields: dict) -> None:
    # The second engine takes several steps per round (64-token budget, 2 requests at a time, no cache).
    result, rounds = beam_alone(**fields)
    for (_, done), (sent, following) in zip(rounds, rounds[1:]):
        assert sent == max(r.finish_ns for r in done)           # asyncio.gather: the whole round is back
        assert all(r.arrival_ns == sent for r in following)      # then the next round is sent
        assert all(r.finish_ns > sent for r in following)
    ends = [max(r.finish_ns for r in done) for _, done in rounds]
    if fields:
        assert len(result.steps) > 2 * L   # rounds span several steps, never overlapping
    # The user's request: first token with round 1, finished with round L, one gap per later round.
    user = result.requests.loc[0]
    assert user["first_token_s"] == ends[0] / 1e9 and user["finish_s"] == ends[-1] / 1e9
    assert user["ttft_s"] == user["first_token_s"] and user["e2e_s"] == user["finish_s"]
    assert np.allclose(result.itl_s, np.diff(ends) / 1e9) and len(result.itl_s) == L - 1


def test_on_a_busy_engine_a_round_joins_the_step_after_the_next() -> None:
    # The engine core takes its input queue between steps: a round sent at the end of step s reaches it while
    # step s + 1 (scheduled at once, here the long request's decode) runs, so it runs in step s + 2. Alone, the
    # beam request's rounds run in consecutive steps (the idle engine wakes for them).
    trace = Trace([Request("beam", 0.0, P, L, n=K, sampling="beam"), Request("long", 0.0, P, 200)])
    result = replay(trace, EngineConfig(check_every=1), policy="vllm")
    steps, beam = result.steps, result.requests.set_index("request_id").loc["beam"]
    last = int(np.flatnonzero(np.isclose(steps["end_s"], beam["finish_s"]))[0])
    assert last == 2 * (L - 1)
    rounds = steps.loc[:last, "num_prefill_seqs"].to_numpy()
    assert (rounds[2::2] == K).all() and (rounds[1::2] == 0).all()
    alone, _ = beam_alone()
    assert len(alone.steps) == L and (alone.steps["num_prefill_seqs"].iloc[1:] == K).all()


def test_later_rounds_hit_the_prompt_and_earlier_beam_tokens_blocks_in_the_prefix_cache() -> None:
    on, rounds = beam_alone()
    off, _ = beam_alone(enable_prefix_caching=False)
    # Without the cache every round computes its whole prompt: P, then K x (P + t - 1) for t = 2..L.
    assert off.summary["total_prefill_tokens"] == P + K * sum(P + t - 1 for t in range(2, L + 1)) == 4610
    # With it, round t's requests hit every full block of their prompt but one holding its last token:
    # the prompt's 3 blocks (48 tokens) through round 15 (prompt 64), then also block 3 (48-63), which
    # holds beam tokens 1-14 and was computed by the previous round's request of the beam's lineage.
    hits = [0] + [16 * ((P + t - 2) // 16) for t in range(2, L + 1)]
    assert hits[14] == 48 and hits[15] == 64
    assert on.summary["prefix_hit_tokens"] == K * sum(hits) == 3968
    assert on.summary["total_prefill_tokens"] == off.summary["total_prefill_tokens"] - 3968 == 642
    assert on.summary["prefix_hit_requests"] == K * (L - 1)


def test_beams_that_continue_one_survivor_share_its_blocks_and_diverging_beams_do_not() -> None:
    # Width 4, 40 tokens: blocks 3 and 4 fill with beam tokens (at 14 and 30 tokens). With every beam kept
    # (replace probability 0) each beam's blocks are its own; with all but one replaced every step, the
    # beams of a round are candidates of one survivor and share its blocks.
    def held(prob: float) -> pd.Series:
        trace = Trace([Request("beam", 0.0, P, 40, n=K, sampling="beam")])
        return replay(trace, EngineConfig(beam_replace_prob=prob, check_every=1), policy="vllm").steps["kv_blocks_used"]

    diverging, converging = held(0.0), held(1.0)
    # The last round: prompt 3 blocks + block 3 + block 4 + a tail block per beam.
    assert diverging.iloc[-1] == 3 + K + K + K and converging.iloc[-1] == 3 + 1 + 1 + K
    assert (converging <= diverging).all()


def test_a_beam_wider_than_max_num_seqs_runs_under_vllm_and_is_rejected_under_vllm_v0() -> None:
    trace = Trace([Request("beam", 0.0, 50, 20, n=4, sampling="beam"), Request("plain", 0.0, 50, 20)])
    config = dict(max_num_seqs=2, max_num_batched_tokens=2048, max_model_len=2048)
    v1 = replay(trace, EngineConfig(check_every=1, **config), policy="vllm").requests.set_index("request_id")
    v0 = replay(trace, EngineConfig(**config), policy="vllm-v0").requests.set_index("request_id")
    assert (v1["status"] == "finished").all()
    assert v0.loc["beam", "status"] == "rejected" and "max_num_seqs" in v0.loc["beam", "reason"]


def test_a_beam_request_whose_last_round_exceeds_the_context_is_rejected_with_the_reason() -> None:
    trace = Trace([Request("beam", 0.0, 1000, 100, n=2, sampling="beam")])
    req = replay(trace, EngineConfig(max_model_len=1024), policy="vllm").requests.loc[0]
    assert req["status"] == "rejected" and "exceeds max_model_len 1024" in req["reason"]


def test_round_requests_keep_the_users_priority_and_queue_by_it() -> None:
    # Every request of every round carries the user's priority; under priority scheduling a waiting round
    # request of a better priority is admitted ahead of one of a worse priority that arrived earlier.
    result, rounds = beam_alone(scheduling_policy="priority", priority=-3)
    assert all(r.priority == -3 for _, requests in rounds for r in requests)
    assert result.requests.loc[0, "status"] == "finished"

    def first_tokens(beam_priority: int) -> pd.Series:
        # A 64-token budget: "early" (arrived first) and the beam's round 1 compete for it at step 0.
        trace = Trace([Request("early", 0.0, 300, 2, priority=0),
                       Request("beam", 0.0, 50, 4, n=2, sampling="beam", priority=beam_priority)])
        config = EngineConfig(scheduling_policy="priority", max_num_batched_tokens=64, max_num_seqs=4, check_every=1)
        return replay(trace, config, policy="vllm").requests.set_index("request_id")["first_token_s"]

    assert first_tokens(-1)["beam"] < first_tokens(0)["beam"]


def test_beam_rounds_under_preemption_keep_the_engine_consistent_and_deterministic() -> None:
    # A small pool: round requests and long decodes preempt each other; invariants checked every step.
    reqs = [Request(f"b{i}", 0.002 * i, 60 + 37 * i, 30 + 5 * i, n=3, sampling="beam") for i in range(4)]
    reqs += [Request(f"g{i}", 0.003 * i, 200 + 50 * i, 80, priority=0) for i in range(4)]
    trace = Trace(reqs)
    config = dict(num_gpu_blocks=60, max_num_batched_tokens=128, max_num_seqs=8)
    a = replay(trace, EngineConfig(check_every=1, **config), policy="vllm", seed=5)
    b = replay(trace, EngineConfig(fast_forward=False, **config), policy="vllm", seed=5)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.steps, b.steps)
    assert a.summary["preemptions"] > 0 and (a.requests["status"] == "finished").all()
    beams = a.requests[a.requests["sampling"] == "beam"]
    engine_tokens = a.requests["generated_tokens"].sum() - (beams["n"] - 1).sum()
    assert a.steps["num_generated_tokens"].sum() == engine_tokens


def test_the_execute_backend_runs_beam_rounds_on_a_real_cache() -> None:
    """Rounds of 1-token requests on real kernels (no prefix cache there): the shadow check holds."""
    torch = pytest.importorskip("torch")
    trace = Trace([Request("b", 0.0, 20, 3, n=2, sampling="beam"), Request("g", 0.0, 30, 4)])
    config = EngineConfig(model="tiny", num_gpu_blocks=8, backend="execute", verify=True,
                          device="cuda" if torch.cuda.is_available() else "cpu",
                          max_num_batched_tokens=64, max_num_seqs=8)
    s = replay(trace, config, policy="vllm", seed=1).summary
    assert s["num_finished"] == 2 and s["engine_requests"] == 1 + engine_requests(2, 3)
    assert s["verify_checked"] > 0 and s["verify_mismatches"] == 0
