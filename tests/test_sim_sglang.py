"""The `sglang` policy's rules (SGLang's scheduler) on small hand-made traces; docs/sim.md, "sglang"."""
from __future__ import annotations

import pandas as pd
import pytest

from sim import EngineConfig, replay
from sim.engine import Engine
from sim.policies.sglang import SGLangPolicy
from sim.policies.sglang_budget import NewTokenRatio, default_chunked_prefill_size
from traces import Request, Trace


def by_id(result) -> pd.DataFrame:
    return result.requests.set_index("request_id")


def run_engine(trace: Trace, **config) -> tuple[Engine, SGLangPolicy]:
    policy = SGLangPolicy()
    engine = Engine(trace, EngineConfig(**config), policy)
    engine.run()
    return engine, policy


def queue_trace(fillers: int) -> Trace:
    """P fills the prefix cache; while it runs alone (max_num_seqs=1), `fillers` requests and then Y,
    which shares P's prompt, queue up behind it."""
    reqs = [Request("P", 0.0, 320, 8, prefix_group="sys", prefix_tokens=320)]
    reqs += [Request(f"F{i}", 0.001, 20, 1) for i in range(fillers)]
    reqs.append(Request("Y", 0.002, 320, 1, prefix_group="sys", prefix_tokens=320))
    return Trace(reqs)


@pytest.mark.parametrize("fillers", [3, 100])
def test_lpm_puts_the_longest_cached_prefix_first_and_fcfs_keeps_arrival_order(fillers: int) -> None:
    config = dict(max_num_seqs=1, enable_prefix_caching=True, watermark=0.0)
    lpm = by_id(replay(queue_trace(fillers), EngineConfig(schedule_policy="lpm", **config), policy="sglang"))
    fcfs = by_id(replay(queue_trace(fillers), EngineConfig(**config), policy="sglang"))
    assert lpm.loc["Y", "first_token_s"] < lpm.loc["F0", "first_token_s"]
    assert fcfs.loc["Y", "first_token_s"] > fcfs.loc[f"F{fillers - 1}", "first_token_s"]
    assert (lpm["status"] == "finished").all() and (fcfs["status"] == "finished").all()


def test_lpm_falls_back_to_fcfs_above_128_waiting() -> None:
    config = EngineConfig(max_num_seqs=1, enable_prefix_caching=True, watermark=0.0, schedule_policy="lpm")
    result = by_id(replay(queue_trace(130), config, policy="sglang"))  # 131 wait when P finishes
    assert result.loc["Y", "first_token_s"] > result.loc["F0", "first_token_s"]


def test_lpm_needs_the_prefix_cache() -> None:
    # Without the radix cache SGLang turns a cache-aware order into FCFS.
    config = EngineConfig(max_num_seqs=1, watermark=0.0, schedule_policy="lpm")
    result = by_id(replay(queue_trace(3), config, policy="sglang"))
    assert result.loc["Y", "first_token_s"] > result.loc["F2", "first_token_s"]


def test_prefill_first_steps_never_mix_and_chunks_follow_the_chunk_size() -> None:
    # A decodes; B's 20,000-token prompt arrives meanwhile and is prefilled in 8192-token chunks (H100).
    trace = Trace([Request("A", 0.0, 100, 300), Request("B", 0.3, 20_000, 5), Request("C", 0.31, 50, 5)])
    result = replay(trace, EngineConfig(model="llama-3.1-8b", gpu="h100-sxm", watermark=0.0), policy="sglang")
    steps = result.steps
    prefill = steps["num_prefill_tokens"] > 0
    assert not (prefill & (steps["num_decode_seqs"] > 0)).any()
    assert steps.loc[prefill, "num_prefill_tokens"].max() == 8192
    assert list(steps.loc[prefill, "num_prefill_tokens"])[1:4] == [8192, 8192, 20_000 - 2 * 8192 + 50]
    # A's decodes stop while B prefills: its longest gap spans the three chunk steps.
    chunk_steps = steps.loc[prefill & (steps["start_s"] > 0.3), "duration_s"].iloc[:3].sum()
    assert result.itl_s[:299].max() >= chunk_steps
    custom = replay(trace, EngineConfig(model="llama-3.1-8b", watermark=0.0, chunked_prefill_size=4096), policy="sglang").steps
    assert custom["num_prefill_tokens"].max() == 4096


def test_chunk_size_default_follows_gpu_memory() -> None:
    assert [default_chunked_prefill_size(g) for g in (16, 24, 40, 79.6, 140.4, 180)] == [
        2048, 4096, 4096, 8192, 8192, 16384]


def test_retraction_takes_fewest_generated_then_longest_prompt_and_raises_the_ratio() -> None:
    # A and B decode; D (48-token prompt) and C (16) join later together, so they have generated fewer
    # and the same number of tokens: D, the longer prompt, is retracted first. vLLM v0 takes the newest (C).
    trace = Trace([Request("A", 0.0, 60, 300), Request("B", 0.0, 100, 300), Request("D", 0.5, 48, 300),
                   Request("C", 0.5, 16, 300)])
    engine, policy = run_engine(trace, num_gpu_blocks=76, watermark=0.0, check_every=1)
    step, victims, before, after = policy.retractions[0]
    assert victims == [2]  # D
    assert after > before and after == pytest.approx(1.0, abs=0.1)
    sched = engine.scheduler
    requests = {g.request_id: g for g in sched.groups}
    assert requests["D"].preemptions == 1 and requests["C"].preemptions == 0
    # The retracted request joined the end of the waiting queue and still finished.
    assert all(g.state == 4 for g in sched.groups)  # FINISHED
    vllm = by_id(replay(trace, EngineConfig(num_gpu_blocks=76, watermark=0.0), policy="vllm"))
    assert vllm.loc["C", "preemptions"] >= 1 and vllm.loc["D", "preemptions"] == 0


def test_ratio_decays_per_decode_step_to_its_floor_and_resets() -> None:
    ratio = NewTokenRatio()
    assert ratio.value(0) == 0.7
    assert ratio.value(300) == pytest.approx(0.7 - 300 * (0.7 - 0.098) / 600)
    assert ratio.value(10_000) == pytest.approx(0.098)
    assert ratio.after_retraction(50, generated=100, max_new=399, kept=2) == pytest.approx(140 / 400)
    assert ratio.value(50) == pytest.approx(0.35) and ratio.value(51) < 0.35
    ratio.reset(60)
    assert ratio.value(60) == 0.7


def test_the_estimate_holds_back_a_request_the_pool_would_admit() -> None:
    # A has ~2000 tokens to go: 0.7 of them are reserved, so B (1000 to go) waits although its prompt
    # blocks are free (vllm and sarathi admit it at once).
    trace = Trace([Request("A", 0.0, 16, 2000), Request("B", 0.1, 100, 1000)])
    config = EngineConfig(num_gpu_blocks=150, watermark=0.0)
    sgl = by_id(replay(trace, config, policy="sglang"))
    for other in ("vllm", "sarathi"):
        assert by_id(replay(trace, config, policy=other)).loc["B", "ttft_s"] < 0.05
    assert sgl.loc["B", "ttft_s"] > 0.3
    assert sgl.loc["B", "first_token_s"] < sgl.loc["A", "finish_s"]  # admitted once the ratio decayed
    assert (sgl["preemptions"] == 0).all()


def test_beam_search_runs_in_the_scheduler_and_beam_groups_are_retracted_last() -> None:
    # D (a beam group) arrives last, so it has the fewest generated tokens: SGLang's order would retract it
    # first, but beam groups go last, so C (parallel) is retracted and D keeps running.
    trace = Trace([Request("A", 0.0, 100, 1600, n=2, sampling="beam"),
                   Request("B", 9.0, 100, 1600, n=2, sampling="parallel"),
                   Request("C", 9.01, 100, 1600, n=2, sampling="parallel"),
                   Request("D", 9.02, 100, 1600, n=2, sampling="beam")])
    result = replay(trace, EngineConfig(num_gpu_blocks=320, watermark=0.0), policy="sglang")
    req = by_id(result)
    assert (req["status"] == "finished").all() and result.summary["cow_copies"] > 0
    assert req.loc["C", "preemptions"] == 1 and req["preemptions"].sum() == 1


class RetractView:
    """What `_retract_for_decode` reads: decoding groups, one block each per decode step, a free pool."""

    def __init__(self, groups: list[tuple[str, str, int]], free: int) -> None:
        from sim.state import DECODE, Group

        self.G, self.free, self.running, self.gone = 0, free, [], []
        for i, (rid, sampling, produced) in enumerate(groups):
            group = Group(i, rid, i, 100, 1000, 2, sampling)
            group.state, group.generated = DECODE, produced
            self.running.append(group)

    def decode_need(self) -> int:
        return len(self.running)

    def num_free_blocks(self) -> int:
        return self.free

    def retract(self, group) -> None:
        self.running.remove(group)
        self.gone.append(("retracted", group.request_id))

    def abort(self, group, reason: str) -> None:
        assert "beam search group aborted" in reason
        self.running.remove(group)
        self.gone.append(("aborted", group.request_id))


def test_a_beam_group_that_must_go_is_aborted_after_every_other_request() -> None:
    # One block free, four requests decoding: three must go. The parallel ones go first (fewest tokens
    # first) although the beam groups have fewer tokens; then the beam group with the fewest tokens is
    # aborted (not requeued), and the last one is kept.
    view = RetractView([("P", "parallel", 50), ("X", "beam", 40), ("Y", "beam", 10), ("Q", "parallel", 60)], free=1)
    assert SGLangPolicy()._retract_for_decode(view) == 3
    assert view.gone == [("retracted", "P"), ("retracted", "Q"), ("aborted", "Y")]


def test_an_aborted_request_frees_its_memory_and_is_counted_with_the_rejected(monkeypatch) -> None:
    original = SGLangPolicy.schedule

    def schedule(self, sched):
        beams = [g for g in sched.running if g.is_beam and g.state == DECODE and g.produced(sched.G) >= 5]
        if beams:
            sched.abort(beams[0], "beam search group aborted: test")
        return original(self, sched)

    from sim.state import DECODE

    monkeypatch.setattr(SGLangPolicy, "schedule", schedule)
    trace = Trace([Request("b", 0.0, 50, 40, n=3, sampling="beam"), Request("g", 0.0, 50, 40)])
    result = replay(trace, EngineConfig(num_gpu_blocks=64, check_every=1), policy="sglang")
    req = by_id(result)
    assert req.loc["b", "status"] == "rejected" and req.loc["b", "reason"] == "beam search group aborted: test"
    assert req.loc["g", "status"] == "finished" and result.summary["num_rejected"] == 1
    assert result.steps["kv_blocks_used"].iloc[-1] < result.steps["kv_blocks_used"].max()


def sharing_trace() -> Trace:
    reqs, t = [], 0.0
    for i in range(60):
        t += 0.004 * (i % 5)
        group = f"g{i % 3}" if i % 4 else None
        reqs.append(Request(f"r{i}", t, 150 + 37 * (i % 11), 20 + 13 * (i % 17), n=1 + (i % 7 == 0),
                            sampling="parallel" if i % 7 == 0 else "greedy", prefix_group=group,
                            prefix_tokens=128 if group else 0))
    return Trace(reqs)


@pytest.mark.parametrize("options", [{}, {"enable_prefix_caching": True, "schedule_policy": "lpm"}])
@pytest.mark.parametrize("pool", [None, 90])
def test_invariants_determinism_and_fast_forward(options: dict, pool: int | None) -> None:
    trace = sharing_trace()
    checked = replay(trace, EngineConfig(num_gpu_blocks=pool, check_every=1, **options), policy="sglang")
    again = replay(trace, EngineConfig(num_gpu_blocks=pool, **options), policy="sglang")
    stepwise = replay(trace, EngineConfig(num_gpu_blocks=pool, fast_forward=False, **options), policy="sglang")
    requests = checked.requests
    assert (requests["status"] == "finished").all()
    assert (requests["generated_tokens"] == requests["output_tokens"] * requests["n"]).all()
    assert (requests["first_token_s"] >= requests["arrival_s"]).all()
    assert (requests["finish_s"] >= requests["first_token_s"]).all()
    assert (checked.steps["start_s"].diff().dropna() > 0).all()
    for other in (again, stepwise):
        pd.testing.assert_frame_equal(other.requests, checked.requests)
        assert (other.itl_s == checked.itl_s).all()
    if pool is not None:
        assert checked.steps["preemptions"].sum() > 0  # retraction exercised
    if options:
        assert checked.summary["prefix_hit_tokens"] > 0


def test_schedule_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="schedule_policy: unknown name 'lpf'; valid names: fcfs, lpm"):
        EngineConfig(schedule_policy="lpf")
    with pytest.raises(ValueError, match="chunked_prefill_size: must be an integer >= 1"):
        EngineConfig(chunked_prefill_size=0)
