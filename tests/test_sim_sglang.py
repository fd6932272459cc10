"""The `sglang` policy's rules (SGLang's scheduler) on small hand-made traces; docs/sim.md, "sglang"."""
from __future__ import annotations

from collections import deque

import pandas as pd
import pytest

from sim import EngineConfig, replay
from sim.engine import Engine
from sim.policies.sglang import SGLangPolicy
from sim.policies.sglang_budget import IgnoreEosStates, NewTokenRatio, PrefillBudget, default_chunked_prefill_size
from sim.policies.sglang_charges import running_reserve
from sim.policies.sglang_memory import default_mem_fraction, prefill_graph_sizes
from sim.state import DECODE, Group
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
    # Without the radix cache (`--disable-radix-cache`) SGLang turns a cache-aware order into FCFS.
    config = EngineConfig(max_num_seqs=1, watermark=0.0, schedule_policy="lpm", enable_prefix_caching=False)
    result = by_id(replay(queue_trace(3), config, policy="sglang"))
    assert result.loc["Y", "first_token_s"] > result.loc["F2", "first_token_s"]


def test_the_radix_cache_is_on_unless_turned_off() -> None:
    # Left unset, the cache is on as in SGLang (`disable_radix_cache` False): LPM puts Y, which hits P's
    # cached prompt, first. Set off, it is off; the execute backend has no prefix cache to turn on.
    config = EngineConfig(max_num_seqs=1, schedule_policy="lpm")
    result = replay(queue_trace(3), config, policy="sglang")
    assert result.summary["prefix_caching"] and result.summary["prefix_hit_tokens"] > 0
    assert by_id(result).loc["Y", "first_token_s"] < by_id(result).loc["F0", "first_token_s"]
    policy = SGLangPolicy()
    assert policy.engine_settings(EngineConfig()).enable_prefix_caching is True
    assert policy.engine_settings(EngineConfig(enable_prefix_caching=False)).enable_prefix_caching is False
    assert not policy.engine_settings(EngineConfig(backend="execute", model="tiny")).enable_prefix_caching


def test_sglang_defaults_fill_the_fields_left_unset() -> None:
    # No watermark, and max_running_requests from the pool: pool / context * 512 within [2048, 4096], at
    # most half the pool's tokens (an explicit setting wins).
    policy = SGLangPolicy()
    config = policy.engine_settings(EngineConfig(num_gpu_blocks=3000))  # 48,000 tokens, context 8192
    assert config.watermark == 0.0 and config.max_num_seqs == 3000
    assert policy.engine_settings(EngineConfig(num_gpu_blocks=10_000)).max_num_seqs == 4096
    assert policy.engine_settings(EngineConfig(num_gpu_blocks=200)).max_num_seqs == 1600  # half of 3,200
    assert policy.engine_settings(EngineConfig(num_gpu_blocks=600)).max_num_seqs == 2048  # 1,200 -> 2,048
    explicit = policy.engine_settings(EngineConfig(num_gpu_blocks=3000, max_num_seqs=64, watermark=0.05))
    assert explicit.max_num_seqs == 64 and explicit.watermark == 0.05


def test_the_pool_left_unset_is_sglangs_mem_fraction_static_less_the_weights() -> None:
    # A100-40GB (40960 MiB), Llama-2-7B: chunk 4096, decode graphs up to 32, prefill graphs up to 4096 tokens
    # (50 sizes): reserved = 512 + 1.5 * 4096 + 1/8 * 1024 + 2 * 32 = 6848 MiB -> 0.833 without the prefill
    # graphs, + 8 * 50 = 7248 MiB -> 0.823 with them (on by default). KV = floor(40 GiB * 0.823) - 13,476,298,752
    # weight bytes = 21,871,282,094 B = 41,716 tokens of 512 KiB -> 2607 blocks of 16 (4 tokens unused).
    assert len(prefill_graph_sizes(4096)) == 50 and len(prefill_graph_sizes(8192)) == 58
    policy = SGLangPolicy()
    a100 = EngineConfig(model="llama-2-7b", gpu="a100-40gb")
    assert round(1 - (512 + 1.5 * 4096 + 128 + 64) / 40960, 3) == 0.833
    assert default_mem_fraction(a100) == (0.823, 7248, 464)
    config = policy.engine_settings(a100)
    assert (config.gpu_memory_utilization, config.num_gpu_blocks) == (0.823, 2607)
    # H100 (79.6 GiB = 81510.4 MiB), Llama-3-8B: chunk 8192, decode 256, 58 prefill sizes: reserved =
    # 512 + 12288 + 128 + 512 + 464 = 13904 MiB -> 0.829; KV = floor(79.6 GiB * 0.829) - 16,059,990,016 B
    # = 54,794,514,962 B = 418,048 tokens of 128 KiB -> 26,128 blocks; max_running_requests from it: 4096.
    config = policy.engine_settings(EngineConfig())
    assert (config.gpu_memory_utilization, config.num_gpu_blocks, config.max_num_seqs) == (0.829, 26128, 4096)
    # An explicit max_running_requests caps the decode graphs: 2 * 64 instead of 2 * 256 -> 0.834.
    assert default_mem_fraction(EngineConfig(max_num_seqs=64))[0] == 0.834


def test_explicit_memory_settings_win_over_sglangs_pool() -> None:
    policy = SGLangPolicy()
    blocks = policy.engine_settings(EngineConfig(num_gpu_blocks=3000))
    assert (blocks.num_gpu_blocks, blocks.gpu_memory_utilization) == (3000, 0.9)
    # gpu_memory_utilization is SGLang's mem_fraction_static: floor(79.6 GiB * 0.85) - weights = 431,742 tokens.
    fraction = policy.engine_settings(EngineConfig(gpu_memory_utilization=0.85))
    assert (fraction.gpu_memory_utilization, fraction.num_gpu_blocks) == (0.85, 431_742 // 16)


def test_a_model_that_leaves_sglang_no_kv_memory_is_refused() -> None:
    # Llama-3-70B over 4 A100-40GB: 32.85 GiB of weights per GPU, 0.807 * 40 GiB = 32.28 GiB static memory.
    with pytest.raises(ValueError, match=r"^gpu_memory_utilization: model llama-3-70b-tp4 leaves -0.57 GiB for "
                                         r"the KV cache on a100-40gb at SGLang's mem_fraction_static 0.807"):
        SGLangPolicy().engine_settings(EngineConfig(model="llama-3-70b-tp4", gpu="a100-40gb"))


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


# ---- KV per chunk --------------------------------------------------------------------------------------
def test_kv_blocks_follow_the_chunks_step_by_step() -> None:
    # SGLang allocates each prefill batch's extend only (mem_cache/allocation.py:374-489): A's 1000 tokens in
    # chunks of 400 hold 25, 50, then 63 blocks, not all 63 from the first chunk on.
    trace = Trace([Request("A", 0.0, 1000, 3)])
    config = EngineConfig(chunked_prefill_size=400, enable_prefix_caching=False, fast_forward=False, check_every=1)
    steps = replay(trace, config, policy="sglang").steps
    assert steps["num_prefill_tokens"].tolist()[:3] == [400, 400, 200]
    assert steps["kv_blocks_used"].tolist()[:4] == [25, 50, 63, 63]
    assert steps["kv_tokens"].tolist()[:3] == [400, 800, 1000]


def test_a_cached_prefix_outlives_the_chunks_not_allocated_yet() -> None:
    # P1's then P2's prompts (groups x and y) are cached, evictable, when A's 480 tokens (30 blocks) arrive in
    # a pool of 45: the 25 blocks nobody caches hold A's first two chunks; C, which shares P1's prompt, arrives
    # meanwhile and joins A's last chunk, finding all 9 of P1's prompt blocks: A's last 5 blocks are taken
    # only after C has locked them. Allocating A's whole prompt at once would have evicted P1's blocks, the
    # least recently used, before C came (C would find 5 of them).
    reqs = [Request("P1", 0.0, 160, 1, prefix_group="x", prefix_tokens=160),
            Request("P2", 0.05, 160, 1, prefix_group="y", prefix_tokens=160),
            Request("A", 0.2, 480, 2), Request("C", 0.2001, 160, 1, prefix_group="x", prefix_tokens=160)]
    config = EngineConfig(num_gpu_blocks=45, chunked_prefill_size=200, fast_forward=False, check_every=1)
    result = replay(Trace(reqs), config, policy="sglang")
    steps = result.steps[result.steps["start_s"] >= 0.2]
    assert steps["num_prefill_tokens"].tolist()[:3] == [200, 200, 80 + 160 - 144]  # A's chunks, C beside the last
    assert steps["kv_blocks_used"].tolist()[:3] == [13, 25, 25 + 9 + 5 + 1]
    assert result.summary["prefix_hit_tokens"] == 144 and (result.requests["status"] == "finished").all()


def test_requests_of_one_pass_do_not_find_each_others_chunks() -> None:
    # SGLang inserts a chunk into the radix tree at the next schedule (managers/scheduler.py:3911-3919), so B,
    # admitted in the same pass as A, finds none of the prompt it shares with A (the sim allocates the pass's
    # chunks after choosing it); V1 caches blocks as it allocates them, and B, scheduled after A, hits them.
    trace = Trace([Request("A", 0.0, 320, 4, prefix_group="s", prefix_tokens=320),
                   Request("B", 0.0, 320, 4, prefix_group="s", prefix_tokens=320)])
    config = EngineConfig(num_gpu_blocks=200, fast_forward=False)
    sgl = replay(trace, config, policy="sglang")
    assert sgl.steps["num_prefill_tokens"].iloc[0] == 640 and sgl.summary["prefix_hit_tokens"] == 0
    assert replay(trace, config, policy="vllm").summary["prefix_hit_tokens"] == 19 * 16


def test_the_chunked_requests_next_chunk_is_charged_with_a_page_and_its_output_only_when_last() -> None:
    # `add_chunked_req` (schedule_policy.py:1140-1222): the chunk budget cut to what the estimate has left, or
    # all of it when nothing is left; the page-ceiled chunk plus a page, and max_new_tokens with the last chunk.
    a = Group(0, "A", 0, 1000, 30, 1, "greedy")
    a.prefill_len, a.prefill_done = 1000, 400
    budget = PrefillBudget(lambda: 2000, running_reserve=0.0)
    assert SGLangPolicy._next_chunk(a, budget, 400, 16) == 400
    assert (budget.total_offset, budget.current_offset) == (416, 416)  # no output: not the last chunk
    assert SGLangPolicy._next_chunk(a, PrefillBudget(lambda: 2000, 1800.0), 400, 16) == 200  # cut to what is left
    assert SGLangPolicy._next_chunk(a, PrefillBudget(lambda: 2000, 2000.0), 400, 16) == 400  # must progress
    a.prefill_done = 900
    last = PrefillBudget(lambda: 2000, running_reserve=0.0)
    assert SGLangPolicy._next_chunk(a, last, 400, 16) == 100
    assert (last.total_offset, last.current_offset) == (112 + 16 + 30, 112 + 16)


def test_a_candidates_cached_prefix_is_pinned_while_the_estimate_checks_it() -> None:
    # P's 39 prompt blocks (624 tokens) are cached and evictable when B, which shares P's prompt, arrives while D
    # decodes. B's 16-token extend + one page + 100 output tokens fit the free pool less D's reserve, ~725 tokens,
    # only counting P's blocks as free; SGLang pins B's matched prefix during its check (`_lock_node`,
    # managers/schedule_policy.py:1225-1238, 1429-1431; mem_cache/unified_cache/components/full.py:315-327), so
    # B waits for D. With 50 output tokens B goes at once, and locks P's blocks: C, admitted after B in the same
    # pass, no longer counts them as free (prefill_budget.py:91-105) and waits for B to leave.
    def run(b_output: int, *after_b: Request) -> pd.DataFrame:
        reqs = [Request("P", 0.0, 640, 1, prefix_group="s", prefix_tokens=640), Request("D", 0.0, 16, 1300),
                Request("B", 0.5, 640, b_output, prefix_group="s", prefix_tokens=640), *after_b]
        return by_id(replay(Trace(reqs), EngineConfig(num_gpu_blocks=100), policy="sglang"))

    pinned = run(100)
    assert pinned.loc["B", "first_token_s"] >= pinned.loc["D", "finish_s"]
    locked = run(50, Request("C", 0.5, 16, 10))
    assert locked.loc["B", "ttft_s"] < 0.05 and locked.loc["C", "first_token_s"] >= locked.loc["B", "finish_s"]


def test_retraction_takes_fewest_generated_then_longest_prompt_and_raises_the_ratio() -> None:
    # A and B decode; D (48-token prompt) and C (16) join later together, so they have generated fewer
    # and the same number of tokens: D, the longer prompt, is retracted first. vLLM v0 takes the newest (C).
    trace = Trace([Request("A", 0.0, 60, 300), Request("B", 0.0, 100, 300), Request("D", 0.5, 48, 300),
                   Request("C", 0.5, 16, 300)])
    engine, policy = run_engine(trace, num_gpu_blocks=64, watermark=0.0, check_every=1)
    step, victims, before, after = policy.retractions[0]
    assert victims == [2]  # D
    assert after > before and after == pytest.approx(1.0, abs=0.1)
    sched = engine.scheduler
    requests = {g.request_id: g for g in sched.groups}
    assert requests["D"].preemptions == 1 and requests["C"].preemptions == 0
    # The retracted request joined the end of the waiting queue and still finished.
    assert all(g.state == 4 for g in sched.groups)  # FINISHED
    # vLLM, in a pool where it preempts once, takes the newest (C).
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
    # blocks are free (vllm and sarathi admit it at once); the estimate's refusal latches SGLang's
    # `batch_is_full`, so no later prefill pass tries B again before A leaves the batch.
    trace = Trace([Request("A", 0.0, 16, 2000), Request("B", 0.1, 100, 1000)])
    config = EngineConfig(num_gpu_blocks=150, watermark=0.0)
    sgl = by_id(replay(trace, config, policy="sglang"))
    for other in ("vllm", "sarathi"):
        assert by_id(replay(trace, config, policy=other)).loc["B", "ttft_s"] < 0.05
    assert sgl.loc["B", "ttft_s"] > 0.3
    assert sgl.loc["B", "first_token_s"] >= sgl.loc["A", "finish_s"]
    assert (sgl["preemptions"] == 0).all()


def test_beam_search_runs_in_the_scheduler_and_beam_groups_are_retracted_last() -> None:
    # D (a beam group) arrives last, so it has the fewest generated tokens: SGLang's order would retract it
    # first, but beam groups go last, so C's two samples (each a request of its own) are retracted and D keeps
    # running.
    trace = Trace([Request("A", 0.0, 100, 1600, n=2, sampling="beam"),
                   Request("B", 9.0, 100, 1600, n=2, sampling="parallel"),
                   Request("C", 9.01, 100, 1600, n=2, sampling="parallel"),
                   Request("D", 9.02, 100, 1600, n=2, sampling="beam")])
    result = replay(trace, EngineConfig(num_gpu_blocks=320, watermark=0.0), policy="sglang")
    req = by_id(result)
    assert (req["status"] == "finished").all() and result.summary["cow_copies"] > 0
    assert req.loc["C", "preemptions"] >= 1 and req["preemptions"].sum() == req.loc["C", "preemptions"]


@pytest.mark.parametrize("radix_cache", [False, True])
def test_a_beam_group_is_charged_as_its_leader_alone(radix_cache: bool) -> None:
    # B (4 beams of 1500 tokens) arrives while A decodes. SGLang's estimate sees B's leader only: 100 + 16 +
    # 1504 tokens, well within the free pool less 0.7 of A's remaining output, so B starts at once and
    # runs beside A without a retraction (charging all four beams, 6000 tokens, would hold it back until A
    # finishes). With or without the radix cache (without it B takes the ignore_eos rule).
    trace = Trace([Request("A", 0.0, 16, 1000), Request("B", 0.05, 100, 1500, n=4, sampling="beam")])
    config = EngineConfig(num_gpu_blocks=420, watermark=0.0, enable_prefix_caching=radix_cache)
    req = by_id(replay(trace, config, policy="sglang"))
    assert req.loc["B", "ttft_s"] < 0.05 and req.loc["B", "first_token_s"] < req.loc["A", "finish_s"] / 10
    assert (req["status"] == "finished").all() and (req["preemptions"] == 0).all()


def decoding(idx: int, sampling: str, n: int, output: int, produced: int) -> Group:
    group = Group(idx, f"r{idx}", idx, 100, output, n, sampling)
    group.state, group.generated = DECODE, produced
    return group


def test_a_running_beam_leader_is_reserved_at_ratio_one_while_other_requests_decay() -> None:
    # 300 decode steps in, the ratio has decayed to ~0.4: the parallel pair keeps 2 x 800 x 0.4 tokens;
    # the beam group keeps its leader's whole remaining output, max_new_tokens (1000 + 4) less 200, at
    # ratio 1.0 (ignore_eos), and nothing for its three member rows.
    policy, g = SGLangPolicy(), 300
    ratio = policy.ratio.value(g)
    assert ratio == pytest.approx(0.7 - 300 * (0.7 - 0.098) / 600)
    running = [decoding(0, "beam", 4, 1000, 200), decoding(1, "parallel", 2, 1000, 200)]
    for group in running:
        group.join_g = g
    assert running_reserve(running, g, ratio) == pytest.approx(804 * 1.0 + 2 * 800 * ratio)
    # Past 4096 tokens to go, the leader's reserve is clipped like any request's.
    running = [decoding(0, "beam", 4, 9000, 0)]
    running[0].join_g = g
    assert running_reserve(running, g, ratio) == 4096


def test_the_ignore_eos_check_frees_each_request_as_it_finishes() -> None:
    # Rows (tokens left, tokens occupied), ascending by tokens left; going down the rows, the free tokens
    # plus those of the rows above (finished) must exceed each row's tokens left times the rows still
    # running by more than one token per row (schedule_policy.py:1295-1304).
    assert IgnoreEosStates([(300, 0), (100, 0)]).fits(302) and not IgnoreEosStates([(300, 0), (100, 0)]).fits(301)
    # The first row's 150 occupied tokens are freed before the 300-token row: 100 x 2 + 2 binds instead.
    states = IgnoreEosStates([(300, 0), (100, 150), (0, 999), (-5, 999)])
    assert states.rows == [(100, 150), (300, 0)]  # rows with nothing left drop out
    assert states.fits(203) and not states.fits(202)
    # SGLang inserts a later candidate before the first row with at least as many tokens left, and one
    # larger than all of them before the last row.
    states.insert((150, 1))
    assert states.rows == [(100, 150), (150, 1), (300, 0)]
    states.insert((999, 2))
    assert states.rows == [(100, 150), (150, 1), (999, 2), (300, 0)]


def test_without_the_radix_cache_a_beam_request_takes_the_ignore_eos_rule() -> None:
    # A (4200 tokens to go) decodes; B's leader has 1804. Through the ordinary rule B's 128 + 1804 tokens do
    # not fit the free pool less 0.7 x 4096 of A's, and B waits for the ratio to decay. Without the radix
    # cache SGLang checks that B's then A's remaining tokens fit as each finishes and frees its own, which
    # they do: B starts at once.
    trace = Trace([Request("A", 0.0, 16, 4200), Request("B", 0.05, 100, 1800, n=2, sampling="beam")])
    runs = {radix: by_id(replay(trace, EngineConfig(num_gpu_blocks=275, watermark=0.0, enable_prefix_caching=radix),
                                policy="sglang")) for radix in (False, True)}
    assert runs[False].loc["B", "ttft_s"] < 0.05 and runs[True].loc["B", "ttft_s"] > 0.5
    for req in runs.values():
        assert (req["status"] == "finished").all() and (req["preemptions"] == 0).all()


class RetractView:
    """What `_retract_for_decode` reads: decoding groups, one block each per decode step, a free pool."""

    def __init__(self, groups: list[tuple[str, str, int]], free: int) -> None:
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


def test_the_ratio_after_a_retraction_counts_a_beam_group_as_its_leader() -> None:
    # Three blocks free, four requests decoding (n=2, 1000 tokens each): P, the parallel one with the fewest
    # tokens, is retracted. SGLang's new ratio sums over the requests kept: Q's two samples (60 tokens each)
    # and the beam leaders X (40) and Y (10), whose max_new_tokens is 1000 + 4; the beams' member rows are
    # not requests. Counting every beam at 1000 tokens would give (220 + 20 x 6) / 6001 instead.
    view = RetractView([("P", "parallel", 50), ("Q", "parallel", 60), ("X", "beam", 40), ("Y", "beam", 10)],
                       free=3)
    policy = SGLangPolicy()
    assert policy._retract_for_decode(view) == 1 and view.gone == [("retracted", "P")]
    _, victims, _, after = policy.retractions[0]
    assert victims == [0] and after == pytest.approx((2 * 60 + 40 + 10 + 20 * 4) / (2 * 1000 + 2 * 1004 + 1))


def test_an_aborted_request_frees_its_memory_and_is_counted_with_the_rejected(monkeypatch) -> None:
    original = SGLangPolicy.schedule

    def schedule(self, sched):
        beams = [g for g in sched.running if g.is_beam and g.state == DECODE and g.produced(sched.G) >= 5]
        if beams:
            sched.abort(beams[0], "beam search group aborted: test")
        return original(self, sched)

    monkeypatch.setattr(SGLangPolicy, "schedule", schedule)
    trace = Trace([Request("b", 0.0, 50, 40, n=3, sampling="beam"), Request("g", 0.0, 50, 40)])
    result = replay(trace, EngineConfig(num_gpu_blocks=64, check_every=1), policy="sglang")
    req = by_id(result)
    assert req.loc["b", "status"] == "rejected" and req.loc["b", "reason"] == "beam search group aborted: test"
    assert req.loc["g", "status"] == "finished" and result.summary["num_rejected"] == 1
    assert result.steps["kv_blocks_used"].iloc[-1] < result.steps["kv_blocks_used"].max()


def test_the_last_request_whose_decode_still_does_not_fit_is_aborted() -> None:
    # Two beam groups in 13 blocks: B finishes first and, a beam group, is not waited for while its last step
    # is in flight (its KV still held); A's next decode does not fit beside it, and A is the last request of
    # the decode batch. SGLang aborts it (schedule_batch.py:3516-3538): nothing may preempt B, which has
    # finished, nor recompute A, a beam group.
    trace = Trace([Request("A", 0.0, 2, 46, n=3, sampling="beam"), Request("B", 0.001, 67, 15, n=3, sampling="beam")])
    policy = SGLangPolicy()
    engine = Engine(trace, policy.configure(EngineConfig(num_gpu_blocks=13, block_size=16, check_every=1)), policy)
    engine.run()
    a, b = engine.scheduler.groups
    assert b.state == 4 and a.state == 5 and a.preemptions == 0  # FINISHED, REJECTED
    assert a.reason == ("out of KV memory even after retracting every other request of the decode batch (SGLang "
                        "aborts the last one)")
    assert [victims for _, victims, _, _ in policy.retractions] == [[a.idx]]


# ---- parallel sampling as requests -------------------------------------------------------------------
def sampling_trace() -> Trace:
    return Trace([Request("q", 0.0, 50, 10), Request("p", 0.0, 200, 30, n=4, sampling="parallel")])


@pytest.mark.parametrize("radix_cache", [True, False])
def test_parallel_samples_are_requests_sent_after_a_prefill_only_prompt_request(radix_cache: bool) -> None:
    result = replay(sampling_trace(), EngineConfig(max_num_seqs=8, enable_prefix_caching=radix_cache,
                                                   fast_forward=False), policy="sglang")
    steps, s = result.steps, result.summary
    # Step 1: q and p's prompt request (max_new_tokens 0: it samples nothing); its samples come after it. Step 2
    # is q's decode alone: it was scheduled (overlap scheduler) before step 1's output, the prompt request's
    # return, was processed, so the samples are sent then and prefill in step 3.
    assert steps["num_prefill_tokens"].iloc[0] == 250 and steps["num_generated_tokens"].iloc[0] == 1
    assert steps["num_prefill_tokens"].iloc[1] == 0 and steps["num_decode_seqs"].iloc[1] == 1
    if radix_cache:
        # The four samples find p's 12 full prompt blocks ((200 - 1) // 16) in the cache: 8 tokens each.
        assert s["prefix_hit_tokens"] == 4 * 192 and steps["num_prefill_tokens"].iloc[2] == 4 * 8
    else:
        assert s["prefix_hit_tokens"] == 0 and steps["num_prefill_tokens"].iloc[2] == 4 * 200
    assert steps["num_generated_tokens"].iloc[2] == 4
    assert s["cow_copies"] == 0   # no fork, no copy-on-write
    assert steps["num_generated_tokens"].sum() == 10 + 4 * 30
    # vllm-v0 forks the same request into one group of four sequences.
    assert replay(sampling_trace(), EngineConfig(max_num_seqs=8), policy="vllm-v0").summary["cow_copies"] == 3


def test_the_user_request_aggregates_its_samples_as_under_vllm() -> None:
    result = replay(sampling_trace(), EngineConfig(max_num_seqs=8, fast_forward=False), policy="sglang")
    req, steps = by_id(result), result.steps
    assert len(req) == 2
    p = req.loc["p"]
    assert (p["status"], p["n"], p["generated_tokens"]) == ("finished", 4, 120)
    # First token: the first sample's (step 3, after q's decode; the prompt request streams none); finished with
    # the last sample.
    assert p["first_token_s"] == steps["end_s"].iloc[2]
    assert p["finish_s"] == steps["end_s"].iloc[-1] > req.loc["q", "finish_s"]
    assert p["ttft_s"] == p["first_token_s"] - p["arrival_s"] and p["e2e_s"] == p["finish_s"] - p["arrival_s"]
    # Each sample streams its own tokens: 4 x 29 gaps, plus q's 9.
    assert len(result.itl_s) == 4 * 29 + 9


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


def test_a_parallel_request_arriving_in_a_fast_forwarded_run_queues_its_prompt_request_alone() -> None:
    # SGLang queues a parallel request's prompt-only request on arrival and its samples only when that returns;
    # the rows of a fast-forwarded run count the arrivals inside it, which must be the prompt request alone.
    R = lambda i, a, p, o, n, s: Request(f"r{i}", a, p, o, n, s)  # noqa: E731
    reqs = [R(0, 0.0, 45, 7, 1, "greedy"), R(1, 0.0, 84, 23, 2, "beam"), R(2, 0.0, 1, 19, 3, "parallel"),
            R(3, 0.0, 1, 1, 2, "beam"), R(4, 0.0, 1, 36, 3, "parallel"), R(5, 0.2, 1, 1, 3, "beam"),
            R(6, 0.2, 1, 1, 2, "parallel"), R(7, 0.2, 1, 1, 2, "parallel"), R(8, 0.2, 1, 1, 1, "greedy"),
            R(9, 0.21, 1, 1, 2, "parallel"), R(10, 0.21, 1, 1, 1, "greedy"), R(11, 0.21, 1, 1, 1, "greedy")]
    config = dict(num_gpu_blocks=47, watermark=0.0, block_size=4, max_num_seqs=8, max_output_tokens=64,
                  prefill_chunk_tokens=24, swap_space_gib=0.0005)
    fast = replay(Trace(reqs), EngineConfig(check_every=3, **config), policy="sglang", seed=0)
    slow = replay(Trace(reqs), EngineConfig(fast_forward=False, **config), policy="sglang", seed=0)
    pd.testing.assert_frame_equal(fast.steps, slow.steps)


def test_a_request_sglangs_budget_never_admits_is_rejected_with_that_rule() -> None:
    # 20 prompt + 5 output tokens fit in 2 of the 3 blocks, but SGLang charges the page-ceiled prompt plus
    # one page plus max_new_tokens, 32 + 16 + 5 = 53 >= 48 free tokens: every other paged policy serves it.
    trace = Trace([Request("big", 0.0, 20, 5), Request("small", 0.1, 5, 5)])
    result = by_id(replay(trace, EngineConfig(num_gpu_blocks=3), policy="sglang"))
    assert result.loc["big", "status"] == "rejected" and result.loc["small", "status"] == "finished"
    assert result.loc["big", "reason"] == (
        "SGLang admits a request only if its page-ceiled prompt plus one page plus max_new_tokens, 48 + 5 tokens, "
        "stays below the 48 free tokens of the idle pool (prefill_budget.py:114-131)")
    assert by_id(replay(trace, EngineConfig(num_gpu_blocks=3), policy="vllm-v0"))["status"].eq("finished").all()


def test_a_request_whose_budget_fails_only_with_its_cached_prefix_pinned_is_rejected_saying_so() -> None:
    # B finds P's 2 cached blocks, evictable on the idle pool of 5: pinned while B is checked, they are not free
    # to it, and 48 + 10 tokens do not stay below 80 - 32 (counted free, B would be admitted).
    trace = Trace([Request("P", 0.0, 33, 1, prefix_group="s", prefix_tokens=33),
                   Request("B", 0.1, 64, 10, prefix_group="s", prefix_tokens=64), Request("S", 0.2, 5, 5)])
    result = by_id(replay(trace, EngineConfig(num_gpu_blocks=5), policy="sglang"))
    assert result.loc["B", "status"] == "rejected" and (result.loc[["P", "S"], "status"] == "finished").all()
    assert result.loc["B", "reason"] == (
        "SGLang admits a request only if its page-ceiled prompt plus one page plus max_new_tokens, 48 + 10 tokens, "
        "stays below the 80 free tokens of the idle pool less the 32 of its cached prefix (prefill_budget.py:114-131)")


def test_max_prefill_tokens_caps_the_pass_not_each_request_while_chunking() -> None:
    # With chunked prefill (always, in SGLang's model) a request larger than what is left of max_prefill_tokens
    # still joins the pass; only a spent budget stops it (schedule_policy.py:883 against 1627-1633).
    trace = Trace([Request("A", 0.0, 300, 5), Request("B", 0.0, 300, 5), Request("C", 0.0, 300, 5)])
    result = replay(trace, EngineConfig(max_prefill_tokens=400, chunked_prefill_size=8192), policy="sglang")
    first = result.steps.iloc[0]
    assert first["num_prefill_seqs"] == 2 and first["num_prefill_tokens"] == 600


def test_a_retracted_request_finds_its_prompt_cached_not_its_output() -> None:
    # SGLang frees a retracted request's KV without inserting its output into the radix tree
    # (schedule_batch.py:2389, checkpoint=False): on resume D hits its prompt's full blocks alone.
    trace = Trace([Request("A", 0.0, 60, 300), Request("B", 0.0, 100, 300), Request("D", 0.5, 48, 300),
                   Request("C", 0.5, 16, 300)])
    result = replay(trace, EngineConfig(num_gpu_blocks=64, watermark=0.0, enable_prefix_caching=True), policy="sglang")
    d = by_id(result).loc["D"]
    assert d.preemptions == 1 and d.status == "finished"
    assert result.summary["prefix_hit_tokens"] == (48 - 1) // 16 * 16
    assert d.recomputed_tokens > 200  # its prompt past the hit and its output again (with the output cached: 17)


# ---- the overlap scheduler's lag ---------------------------------------------------------------------
def finishing_trace(b_arrival: float | None) -> Trace:
    """A (a 200-token prompt, 13 KV blocks) finishes early; C decodes on; B arrives at `b_arrival`."""
    reqs = [Request("A", 0.0, 200, 5), Request("C", 0.0, 16, 60)]
    return Trace(reqs + ([Request("B", b_arrival, 100, 10)] if b_arrival is not None else []))


@pytest.mark.parametrize(("pool", "max_seqs", "overlap", "b_waits"), [
    (24, None, None, True), (24, None, False, False), (40, None, None, False), (40, 2, None, True)])
def test_a_request_finishing_in_the_batch_in_flight_keeps_its_kv_and_slot_while_the_next_batch_is_scheduled(
        pool: int, max_seqs: int | None, overlap: bool | None, b_waits: bool) -> None:
    # B arrives during A's last decode step. With the overlap scheduler (SGLang's default) the next batch is
    # scheduled before that step's result is processed, A still in the running batch (managers/scheduler.py:
    # 2083-2120): in a pool of 24 blocks B's estimate does not fit beside A's 13 blocks, so C decodes alone
    # first and B's prefill follows; with the overlap off, or a pool of 40, B goes at once. A's request slot
    # is held too: with max_running_requests 2, B waits as well.
    config = dict(num_gpu_blocks=pool, fast_forward=False, async_scheduling=overlap, check_every=1)
    if max_seqs is not None:
        config["max_num_seqs"] = max_seqs
    alone = replay(finishing_trace(None), EngineConfig(**config), policy="sglang")
    a_done = by_id(alone).loc["A", "finish_s"]
    last = alone.steps[alone.steps["end_s"] == a_done].iloc[0]
    result = replay(finishing_trace((last["start_s"] + a_done) / 2), EngineConfig(**config), policy="sglang")
    following = result.steps[result.steps["start_s"] >= a_done].iloc[:2]
    assert following["num_prefill_tokens"].tolist() == ([0, 100] if b_waits else [100, 0])
    assert (result.requests["status"] == "finished").all() and (result.requests["preemptions"] == 0).all()


def test_a_decode_that_does_not_fit_waits_for_the_requests_finishing_in_flight_instead_of_retracting(
        monkeypatch) -> None:
    # The retraction test's trace with F, whose last token comes in decode step 252: step 253 needs a block
    # the pool has only once F's are back. Scheduled while F's last step is in flight, F still holding its KV,
    # SGLang runs nothing rather than retract (managers/scheduler.py:4463-4474) and decodes once F's result
    # is processed: nobody is retracted. Retracting around F instead would have taken D.
    trace = Trace([Request("A", 0.0, 60, 300), Request("B", 0.0, 100, 300), Request("F", 0.0, 16, 253),
                   Request("D", 0.5, 48, 300), Request("C", 0.5, 16, 300)])
    policy = SGLangPolicy()
    engine = Engine(trace, policy.configure(EngineConfig(num_gpu_blocks=74, watermark=0.0, check_every=1)), policy)
    engine.run()
    assert policy.waited_for_finishing == [253] and policy.retractions == []
    assert all(g.state == 4 and g.preemptions == 0 for g in engine.scheduler.groups)  # FINISHED
    monkeypatch.setattr("sim.policies.sglang._finishing_in_flight", lambda sched: False)
    policy = SGLangPolicy()
    Engine(trace, policy.configure(EngineConfig(num_gpu_blocks=74, watermark=0.0)), policy).run()
    assert [(g, victims) for g, victims, _, _ in policy.retractions] == [(253, [3])]  # D


# ---- refreshing the cached prefixes of waiting requests ----------------------------------------------
@pytest.mark.parametrize("refresh", [True, False])
def test_fcfs_keeps_a_waiting_requests_cached_prefix_by_refreshing_it_every_32_passes(refresh: bool,
                                                                                     monkeypatch) -> None:
    # P's prompt (19 cached blocks of group "sys") is freed; 100 one-token fillers then run one at a time, one
    # prefill pass each, while Y, which shares P's prompt, waits behind them. A filler keeps one block cached
    # and takes a plain one, so once the plain blocks run out (about 39 fillers in) every filler evicts the
    # least recently used cached blocks: P's. Every 32 passes SGLang touches the prefixes of the first 128
    # waiting requests, Y's among them, which puts P's blocks behind the fillers': Y finds all 19
    # (managers/schedule_policy.py:280-304). Without the refresh they go first and Y prefills its whole prompt.
    if not refresh:
        monkeypatch.setattr("sim.policies.sglang.WAITING_PREFIX_REFRESH_INTERVAL", 10**9)  # the first pass only
    config = EngineConfig(max_num_seqs=1, num_gpu_blocks=60, check_every=7)
    result = replay(queue_trace(100), config, policy="sglang")
    assert result.summary["prefix_hit_tokens"] == (19 * 16 if refresh else 0)
    assert (result.requests["status"] == "finished").all()
    if refresh:  # vLLM has no such refresh: Y finds nothing
        assert replay(queue_trace(100), config, policy="vllm").summary["prefix_hit_tokens"] == 0


class OrderView:
    """What `_order_waiting` reads: the config, the waiting queue; it records the prefixes touched."""

    def __init__(self, num_waiting: int, schedule_policy: str = "fcfs", cache: bool = True) -> None:
        self.config = EngineConfig(enable_prefix_caching=cache, schedule_policy=schedule_policy)
        self.waiting = deque(Group(i, f"r{i}", i, 100 + i, 10, 1, "greedy") for i in range(num_waiting))
        self.touched: list[list[int]] = []

    def touch_prefix(self, group: Group) -> None:
        self.touched[-1].append(group.idx)

    def prefill_need(self, group: Group) -> int:
        return group.prompt  # nothing cached: LPM keeps the order

    def prefill_tokens(self, group: Group) -> int:
        return group.prompt

    def sort_waiting(self, key) -> None:
        self.waiting = deque(sorted(self.waiting, key=key))

    def passes(self, policy: SGLangPolicy, count: int) -> list[list[int]]:
        for _ in range(count):
            self.touched.append([])
            policy._order_waiting(self)
        return self.touched


def test_the_prefix_refresh_touches_the_first_128_waiting_head_last_every_32_passes_and_lpm_every_pass() -> None:
    # FCFS: on the first pass and every 32nd after it, the first 128 waiting requests, the head last
    # (schedule_policy.py:280-304); LPM (at most 128 waiting) matches every waiting request in queue order
    # each pass, which touches them too, and counts no FCFS pass; above 128 waiting it is FCFS.
    policy, first_128 = SGLangPolicy(), list(range(127, -1, -1))
    touched = OrderView(130).passes(policy, 65)
    assert [i for i, t in enumerate(touched) if t] == [0, 32, 64] and touched[0] == touched[32] == first_128
    lpm = SGLangPolicy()
    assert OrderView(5, "lpm").passes(lpm, 3) == [[0, 1, 2, 3, 4]] * 3 and lpm.fcfs_passes == 0
    assert OrderView(130, "lpm").passes(lpm, 33)[32] == first_128 and lpm.fcfs_passes == 33
    # Without the radix cache nothing is matched and no pass is counted.
    no_cache = SGLangPolicy()
    assert OrderView(5, cache=False).passes(no_cache, 3) == [[], [], []] and no_cache.fcfs_passes == 0


def test_a_waiting_head_the_estimate_refuses_has_its_prefix_touched(monkeypatch) -> None:
    # The adder matches each request it tries before its budget check (`init_next_round_input`,
    # managers/scheduler.py:4260): B, refused by the estimate, is touched; A, the first pass's queue,
    # by the refresh of that pass; nobody else until A leaves and B is admitted.
    from sim.policy_verbs import PolicyVerbs

    touched: list[tuple[int, str]] = []
    original = PolicyVerbs.touch_prefix

    def touch_prefix(self, group: Group) -> None:
        touched.append((self.G, group.request_id))
        original(self, group)

    monkeypatch.setattr(PolicyVerbs, "touch_prefix", touch_prefix)
    trace = Trace([Request("A", 0.0, 16, 2000), Request("B", 0.1, 100, 1000)])
    sgl = by_id(replay(trace, EngineConfig(num_gpu_blocks=150, watermark=0.0), policy="sglang"))
    assert [rid for _, rid in touched] == ["A", "B"] and touched[1][0] > 0
    assert sgl.loc["B", "first_token_s"] >= sgl.loc["A", "finish_s"]


def test_a_pass_that_counts_toward_the_prefix_refresh_is_never_folded_into_a_fast_forwarded_run() -> None:
    # B's 90 blocks pass SGLang's estimate (it has no watermark) but not the pool above the 10 blocks of the
    # watermark set here, so each of A's decode steps tries B again: a pass that counts toward the refresh
    # (every 32nd touches the waiting prefixes). A fast-forwarded run of those steps would skip their passes.
    passes = {}
    for fast_forward in (True, False):
        policy = SGLangPolicy()
        config = policy.configure(EngineConfig(num_gpu_blocks=100, watermark=0.1, fast_forward=fast_forward))
        Engine(Trace([Request("A", 0.0, 16, 100), Request("B", 0.05, 1440, 1)]), config, policy).run()
        passes[fast_forward] = policy.fcfs_passes
    assert passes[True] == passes[False] == 96
