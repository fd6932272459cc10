"""`vllm` (vLLM V1) rules on small hand-made traces, each against `vllm-v0` where the engines differ."""
from __future__ import annotations

import random
from pathlib import Path

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


def test_the_watermark_holds_only_beside_running_requests_as_v1_applies_it() -> None:
    # 100 blocks, a 10-block watermark (kv_cache_manager.py:518-525; has_scheduled_reqs=bool(self.running)).
    # `big` needs 94 blocks: V1 admits it on an idle engine (V0 would call it NEVER, 94 > 100 - 10).
    config = EngineConfig(num_gpu_blocks=100, watermark=0.1, check_every=1)
    alone = by_id(replay(Trace([Request("big", 0.0, 1400, 100)]), config, policy="vllm"))
    assert alone.loc["big", "status"] == "finished"
    # b (55 blocks) arrives while a (40 blocks) runs: it fits the free blocks but not above the watermark,
    # so it waits for a; with no watermark it runs beside a.
    trace = Trace([Request("a", 0.0, 600, 40), Request("b", 0.01, 840, 40)])
    for watermark, waits in ((0.1, True), (0.0, False)):
        requests = by_id(replay(trace, EngineConfig(num_gpu_blocks=100, watermark=watermark, check_every=1),
                                policy="vllm"))
        assert (requests.loc["b", "first_token_s"] > requests.loc["a", "finish_s"]) == waits, watermark


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
    ({"enable_chunked_prefill": False, "max_num_batched_tokens": 4096},
     "max_num_batched_tokens: 4096 is smaller than max_model_len 8192 with chunked prefill off"),
    ({"model": "llama-3.1-8b", "gpu_memory_utilization": 0.4},
     "max_model_len: one 131072-token sequence needs 8192 KV blocks; vLLM V1's memory profile leaves 6686"),
    ({"gpu_memory_utilization": 0.22}, "gpu_memory_utilization: model llama-3-8b leaves -"),
])
def test_settings_vllm_v1_refuses_are_one_line_errors(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replay(Trace([Request("a", 0.0, 10, 10)]), EngineConfig(**fields), policy="vllm")
    with pytest.raises(ValueError, match="long_prefill_token_threshold: must be an integer >= 0"):
        EngineConfig(long_prefill_token_threshold=-1)


def test_a_token_budget_below_the_block_size_is_accepted_as_v1_accepts_it() -> None:
    # vLLM V1 checks the budget against max_num_seqs and max_model_len, not the block size
    # (config/scheduler.py:317-360): prompts then run in chunks of at most the budget.
    trace = Trace([Request("a", 0.0, 40, 5), Request("b", 0.001, 20, 5)])
    result = replay(trace, EngineConfig(max_num_batched_tokens=8, max_num_seqs=4, block_size=16), policy="vllm")
    steps = result.steps
    assert (result.requests["status"] == "finished").all()
    assert (steps["num_prefill_tokens"] + steps["num_decode_seqs"] <= 8).all()
    assert steps["num_prefill_tokens"].sum() == 60 - result.summary["prefix_hit_tokens"]


# ---- KV blocks per scheduled chunk ------------------------------------------------------------------
def test_kv_blocks_follow_the_scheduled_chunks_step_by_step() -> None:
    trace = Trace([Request("a", 0.0, 1000, 3), Request("b", 0.0, 300, 3)])
    config = EngineConfig(max_num_batched_tokens=256, prefill_chunk_tokens=256, max_num_seqs=16,
                          enable_prefix_caching=False, fast_forward=False)
    steps = replay(trace, config, policy="vllm").steps
    prefill = steps[steps["num_decode_seqs"] == 0]
    # One chunk per step (a first, then b): blocks held = ceil((computed + scheduled) / block_size) summed.
    computed = {"a": 0, "b": 0}
    for tokens, used in zip(prefill["num_prefill_tokens"], prefill["kv_blocks_used"]):
        for rid, prompt in (("a", 1000), ("b", 300)):
            take = min(prompt - computed[rid], tokens)
            computed[rid] += take
            tokens -= take
        assert used == sum(-(-c // 16) for c in computed.values())
    assert list(prefill["kv_blocks_used"][:4]) == [16, 32, 48, 63 + 2]   # a's last chunk + b's first 24
    # sarathi (vLLM V0's chunked prefill) holds the whole prompt from its first chunk on.
    sarathi = replay(trace, config, policy="sarathi").steps
    assert sarathi["kv_blocks_used"].iloc[0] == 63


def test_a_running_request_whose_chunk_does_not_fit_is_preempted() -> None:
    # b is admitted (its whole prompt fits then) and allocates chunk by chunk while a's decode grows:
    # the pool runs out mid-prefill and V1's victim, the last admitted (b itself), is preempted.
    trace = Trace([Request("a", 0.0, 100, 200), Request("b", 0.001, 500, 5)])
    config = EngineConfig(num_gpu_blocks=40, max_num_batched_tokens=16, max_num_seqs=4,
                          enable_prefix_caching=False, fast_forward=False)
    result = replay(trace, config, policy="vllm")
    req, steps = by_id(result), result.steps
    assert req.loc["a", "preemptions"] == 0 and req.loc["b", "preemptions"] == 1
    assert (req["status"] == "finished").all()
    first = steps.index[steps["preemptions"] > 0][0]
    before, at = steps.loc[first - 1], steps.loc[first]
    assert before["num_prefill_seqs"] == 1 and before["kv_blocks_used"] == 40   # b mid-prefill, pool full
    assert at["num_prefill_tokens"] == 0 and at["num_decode_seqs"] == 1       # only a's decode ran
    assert at["kv_blocks_used"] < 10 and at["num_waiting"] == 1                 # b's chunks were freed


# ---- preemption victim and the priority policy ------------------------------------------------------
@pytest.mark.parametrize("policy, victim", [("fcfs", "C"), ("priority", "B")])
def test_the_victim_is_the_last_admitted_under_fcfs_and_the_worst_priority_under_priority(
        policy: str, victim: str) -> None:
    trace = Trace([Request("A", 0.0, 100, 300, priority=0), Request("B", 0.001, 100, 300, priority=5),
                   Request("C", 0.002, 100, 300, priority=1)])
    req = by_id(replay(trace, EngineConfig(num_gpu_blocks=60, scheduling_policy=policy), policy="vllm"))
    assert (req["status"] == "finished").all()
    assert req.loc[victim, "preemptions"] == 1
    assert req["preemptions"].sum() == 1


def test_the_waiting_queue_is_ordered_by_priority_then_arrival_under_priority() -> None:
    trace = Trace([Request("low", 0.0, 100, 20, priority=5), Request("high", 0.0, 100, 20, priority=-1),
                   Request("high-later", 0.0, 100, 20, priority=-1), Request("mid", 0.0, 100, 20, priority=2)])
    config = dict(max_num_seqs=1, max_num_batched_tokens=128)
    order = lambda r: list(r.requests.sort_values("first_token_s")["request_id"])  # noqa: E731
    fcfs = replay(trace, EngineConfig(**config), policy="vllm")
    prio = replay(trace, EngineConfig(scheduling_policy="priority", **config), policy="vllm")
    assert order(fcfs) == ["low", "high", "high-later", "mid"]
    assert order(prio) == ["high", "high-later", "mid", "low"]


# ---- parallel sampling as child requests ------------------------------------------------------------
def test_parallel_samples_are_child_requests_sharing_the_prompt_through_the_prefix_cache() -> None:
    trace = Trace([Request("p", 0.0, 200, 30, n=4, sampling="parallel")])
    config = dict(max_num_seqs=2, max_num_batched_tokens=1024, fast_forward=False)
    on = replay(trace, EngineConfig(**config), policy="vllm")
    off = replay(trace, EngineConfig(enable_prefix_caching=False, **config), policy="vllm")
    # 12 full prompt blocks ((200 - 1) // 16) are computed once and hit by the 3 other children.
    assert on.summary["prefix_hit_tokens"] == 3 * 192 and off.summary["prefix_hit_tokens"] == 0
    # Two children run at once (max_num_seqs 2): 13 + 1 blocks with the cache, 2 x 13 without.
    assert on.steps["kv_blocks_used"].iloc[0] == 14 and off.steps["kv_blocks_used"].iloc[0] == 26
    assert on.steps["num_prefill_tokens"].iloc[0] == 200 + 8 and off.steps["num_prefill_tokens"].iloc[0] == 400
    assert on.summary["cow_copies"] == 0 and off.summary["cow_copies"] == 0   # no fork, no copy-on-write
    # vllm-v0 forks one group of 4 sequences: more than max_num_seqs 2, so it is rejected there.
    v0 = EngineConfig(**config, max_model_len=config["max_num_batched_tokens"])  # V0 needs budget >= context
    assert by_id(replay(trace, v0, policy="vllm-v0")).loc["p", "status"] == "rejected"


def test_the_user_request_aggregates_its_children() -> None:
    trace = Trace([Request("q", 0.0, 50, 10), Request("p", 0.0, 200, 30, n=4, sampling="parallel")])
    result = replay(trace, EngineConfig(max_num_seqs=2, max_num_batched_tokens=1024, fast_forward=False),
                    policy="vllm")
    req, steps = by_id(result), result.steps
    assert len(req) == 2
    p = req.loc["p"]
    assert (p["status"], p["n"], p["generated_tokens"]) == ("finished", 4, 120)
    # First token: the first child's (the first step); finished: with its last child (the last step).
    assert p["first_token_s"] == steps["end_s"].iloc[0]
    assert p["finish_s"] == steps["end_s"].iloc[-1] > req.loc["q", "finish_s"]
    assert p["ttft_s"] == p["first_token_s"] - p["arrival_s"] and p["e2e_s"] == p["finish_s"] - p["arrival_s"]
    # Each child streams its own tokens: 4 x 29 gaps, plus q's 9.
    assert len(result.itl_s) == 4 * 29 + 9


# ---- KV pool sizing ---------------------------------------------------------------------------------
def test_the_kv_pool_is_sized_as_v1_profiles_it() -> None:
    from sim.presets import GIB
    from sim.v1_memory import cudagraph_capture_sizes

    sizes = cudagraph_capture_sizes(1024, 8192)
    assert sizes == [1, 2, 4, *range(8, 256, 8), *range(256, 513, 16)] and len(sizes) == 51
    assert cudagraph_capture_sizes(256, 2048) == [1, 2, 4, *range(8, 256, 8), *range(256, 513, 16)]
    assert cudagraph_capture_sizes(4, 64) == [1, 2, 4, 8]
    cfg = v1_config(EngineConfig())
    spec = cfg.model_spec
    requested = -(-int(79.6 * GIB * 0.92 * 1000) // 1000)  # ceil(total * utilization)
    activation = 8192 * (2 * 4096 + 3 * 14336) * 2 + 1024 * 128256 * 4
    graphs = 2 * 51 * 24 * (1 << 20)  # PIECEWISE and FULL decode graphs, 24 MiB each
    available = requested - spec.weight_bytes_per_gpu - int(0.16 * GIB) - activation - graphs
    assert abs(cfg.num_gpu_blocks - (available // cfg.block_bytes - 1)) <= 1
    result = replay(Trace([Request("a", 0.0, 10, 5)]), EngineConfig(), policy="vllm")
    assert result.summary["kv_blocks_total"] == cfg.num_gpu_blocks
    # A larger budget profiles more activation memory; more graph memory leaves less; V0 keeps its sizing.
    assert v1_config(EngineConfig(max_num_batched_tokens=16384)).num_gpu_blocks < cfg.num_gpu_blocks
    assert v1_config(EngineConfig(cudagraph_mib_per_graph=48.0)).num_gpu_blocks < cfg.num_gpu_blocks
    assert v1_config(EngineConfig(num_gpu_blocks=123)).num_gpu_blocks == 123
    assert replay(Trace([Request("a", 0.0, 10, 5)]), EngineConfig(), policy="vllm-v0").summary[
        "kv_blocks_total"] == EngineConfig().kv_blocks


def test_chunked_prefill_off_never_splits_a_prompt() -> None:
    trace = Trace([Request(f"r{i}", 0.0, 3000 + 100 * i, 5) for i in range(4)])
    on = replay(trace, EngineConfig(), policy="vllm").steps
    off = replay(trace, EngineConfig(enable_chunked_prefill=False), policy="vllm").steps
    assert on["num_prefill_tokens"].iloc[0] == 8192                  # r2 is split to fill the budget
    prefills = off.loc[off["num_prefill_tokens"] > 0, "num_prefill_tokens"].tolist()
    assert prefills == [3000 + 3100, 3200 + 3300]                     # whole prompts only


@pytest.mark.parametrize("fields, policy, message", [
    ({"scheduling_policy": "priority"}, "vllm-v0", "scheduling_policy: 'priority' is modelled for policy vllm only"),
    ({"enable_chunked_prefill": True}, "sarathi", "enable_chunked_prefill: a vllm setting"),
])
def test_v1_settings_on_other_policies_are_one_line_errors(fields: dict, policy: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replay(Trace([Request("a", 0.0, 10, 10)]), EngineConfig(**fields), policy=policy)
    with pytest.raises(ValueError, match="scheduling_policy: unknown name 'lifo'; valid names: fcfs, priority"):
        EngineConfig(scheduling_policy="lifo")


def test_the_cli_reads_the_trace_priority_column_under_priority_scheduling(tmp_path) -> None:
    from sim import cli

    trace = tmp_path / "t.csv"
    trace.write_text("request_id,arrival_s,prompt_tokens,output_tokens,priority\n"
                     "low,0.0,100,20,3\nhigh,0.0,100,20,-2\n")
    order = {}
    for policy in ("fcfs", "priority"):
        out = tmp_path / policy
        assert cli.main(["replay", "--trace", str(trace), "--policy", "vllm", "--max-num-seqs", "1",
                         "--scheduling-policy", policy, "--quiet", "--out", str(out)]) == 0
        requests = pd.read_csv(out / "requests.csv")
        order[policy] = list(requests.sort_values("first_token_s")["request_id"])
    assert order == {"fcfs": ["low", "high"], "priority": ["high", "low"]}


def test_blocks_cached_as_chunks_allocate_them_are_hit_and_never_cached_twice() -> None:
    from memory import PrefixCachingBlockManager

    bm = PrefixCachingBlockManager(16, 4)
    keys = ["k0", "k1", "k2"]
    bm.allocate("a", 0)
    bm.append_slots("a", 6)                            # a first chunk: one full block
    table = bm.block_table("a")
    assert bm.cache_full_blocks("a", keys[:1]) == (0, table[:1])
    bm.append_slots("a", 6)                            # the next chunk fills blocks 1 and 2
    table = bm.block_table("a")
    assert bm.cache_full_blocks("a", keys[:3]) == (1, table[1:3])
    assert bm.cache_full_blocks("a", keys[:3]) == (3, [])  # registered once
    assert bm.find_cached_prefix(keys) == table[:3]
    assert bm.allocate("b", 13, keys) == 12            # a later request hits all three
    bm.allocate("c", 0)
    bm.append_slots("c", 8)
    assert bm.cache_full_blocks("c", keys[:2]) == (0, [])  # the same content is cached once (a's copy)
    assert not bm.is_cached(bm.block_table("c")[0])
    assert bm.find_cached_prefix(keys) == bm.block_table("a")[:3]
    bm.check_invariants()


def test_the_execute_backend_runs_vllm_chunk_allocation_on_a_real_cache() -> None:
    """Blocks allocated chunk by chunk, child requests and preemptions: the real kernels' shadow check holds."""
    torch = pytest.importorskip("torch")
    spec = [(30, 6, 1), (20, 6, 2), (40, 5, 1)]
    trace = Trace([Request(f"r{i}", 0.0, p, o, n=n, sampling="parallel" if n > 1 else "greedy")
                   for i, (p, o, n) in enumerate(spec)])
    config = EngineConfig(model="tiny", num_gpu_blocks=6, backend="execute", verify=True,
                          device="cuda" if torch.cuda.is_available() else "cpu",
                          max_num_batched_tokens=64, max_num_seqs=8)
    s = replay(trace, config, policy="vllm", seed=1).summary
    assert s["num_finished"] == len(spec) and s["preemptions"] > 0
    assert s["verify_checked"] >= s["num_steps"] and s["verify_mismatches"] == 0, s["verify_first_mismatches"]


# ---- the running loop's order -----------------------------------------------------------------------
def v1_running_loop(running: list[tuple[object, bool | None, int]], budget: int, cap: int) -> dict:
    """vLLM V1's running loop as written (sched/scheduler.py:795-849, 1002), memory aside: walk `running`
    (request, decoding or None if its last step is in flight, tokens left) in order while budget is left; a
    finishing request is skipped (800-814), a decode takes one token, a prefill `min(rest, cap if cap > 0,
    budget)`. Returns request -> tokens."""
    tokens = {}
    for request, decoding, rest in running:
        if budget <= 0:
            break
        if decoding is None:
            continue
        n = 1 if decoding else rest
        if 0 < cap < n:
            n = cap
        n = min(n, budget)
        tokens[request] = n
        budget -= n
    return tokens


@pytest.mark.parametrize("seed, scheduling", [(0, "fcfs"), (1, "fcfs"), (2, "priority"), (3, "priority")])
def test_the_running_loop_gives_each_request_the_tokens_v1_gives_walking_running_in_order(
        monkeypatch, seed: int, scheduling: str) -> None:
    """Every step without preemption schedules exactly what V1's loop over `running` does, including steps
    where decodes follow unfinished prefills and the budget runs out (long_prefill_token_threshold on)."""
    from sim.policies.vllm import VllmPolicy
    from sim.state import DECODE, FINISHED

    rng = random.Random(seed)
    arrivals = sorted(rng.uniform(0.0, 0.4) for _ in range(80))
    trace = Trace([Request(f"r{i}", t, rng.choice([rng.randint(3, 40), rng.randint(100, 700)]), rng.randint(2, 80),
                           priority=rng.randint(0, 3)) for i, t in enumerate(arrivals)])
    config = EngineConfig(max_num_batched_tokens=128, max_num_seqs=16, long_prefill_token_threshold=48,
                          num_gpu_blocks=100, scheduling_policy=scheduling, fast_forward=False)
    original, seen = VllmPolicy.schedule, {"checked": 0, "interleaved": 0, "preempting": 0, "finishing": 0}

    def schedule(self, sched):
        budget = sched.config.token_budget
        cap = sched.config.long_prefill_token_threshold if len(sched.running) + len(sched.waiting) > 1 else 0
        before = [(g, None if g.state == FINISHED else g.state == DECODE, g.prefill_len - g.prefill_done)
                  for g in sched.running]
        plan = original(self, sched)
        if not all(g in sched.running for g, _, _ in before):
            seen["preempting"] += 1    # memory ran short: V1's walk with preemption decided
            return plan
        ran = {g: q for g, q in plan.prefills if g in dict.fromkeys(r for r, _, _ in before)}
        ran.update({g: 1 for g, decoding, _ in before if decoding and plan.decode})
        seen["finishing"] += any(decoding is None for _, decoding, _ in before)
        assert ran == v1_running_loop(before, budget, cap)
        seen["checked"] += 1
        first_prefill = next((i for i, (_, decoding, _) in enumerate(before) if decoding is False), len(before))
        demand = sum(1 if d else min(rest, cap or rest) for _, d, rest in before)
        seen["interleaved"] += any(d for _, d, _ in before[first_prefill:]) and demand > budget
        return plan

    monkeypatch.setattr(VllmPolicy, "schedule", schedule)
    result = replay(trace, config, policy="vllm")
    assert (result.requests["status"] == "finished").all()
    assert seen["checked"] > 100 and seen["interleaved"] > 0 and seen["preempting"] > 0 and seen["finishing"] > 0, seen


class WalkView:
    """Just what V1's walk reads: running requests with a block need each, a pool of free blocks."""

    def __init__(self, spec: list[tuple[str, str, int, int, int]], free: int, budget: int) -> None:
        from types import SimpleNamespace

        from sim.state import DECODE, FINISHED, PREFILL, Group

        self.config, self.free = SimpleNamespace(token_budget=budget), free
        self.running, self.need, self.holds, self.preempted = [], {}, {}, []
        for i, (rid, state, priority, need, holds) in enumerate(spec):
            group = Group(i, rid, i, 100, 10, 1, "greedy", priority)
            group.state = {"decode": DECODE, "prefill": PREFILL, "finishing": FINISHED}[state]
            group.prefill_len, group.prefill_done = (100, 0) if state == "prefill" else (0, 0)
            self.running.append(group)
            self.need[rid], self.holds[rid] = need, holds

    def reserve_slots(self, group, tokens: int) -> bool:
        if self.need[group.request_id] > self.free:
            return False
        self.free -= self.need[group.request_id]
        self.holds[group.request_id] += self.need[group.request_id]
        return True

    def preempt(self, group) -> None:
        from sim.state import WAITING

        self.running.remove(group)
        self.free += self.holds[group.request_id]
        group.state = WAITING
        self.preempted.append(group.request_id)


# (request, state, priority, blocks needed this step, blocks held), free blocks; policy; expected outcome
WALKS = [
    # H's decode slot does not fit: under priority the victim is L, already scheduled, whose token goes
    # back to the budget, so P's chunk gets 31 of 32 (scheduler.py:944-962); under FCFS the victim is
    # the last running request, P (scheduler.py:969-970).
    ("priority", [("L", "decode", 5, 0, 3), ("H", "decode", 0, 1, 2), ("P", "prefill", 1, 2, 0)], 0,
     ["L"], {"P": 31}),
    ("fcfs", [("L", "decode", 5, 0, 3), ("H", "decode", 0, 1, 2), ("P", "prefill", 1, 2, 4)], 0,
     ["P"], {}),
    # B is its own victim: under FCFS the loop stops (C, after it, was preempted first); under priority it
    # is passed over and C, after it, still runs (scheduler.py:978-993).
    ("fcfs", [("A", "decode", 0, 0, 1), ("B", "decode", 9, 1, 0), ("C", "prefill", 0, 1, 0)], 0,
     ["C", "B"], {}),
    ("priority", [("A", "decode", 0, 0, 1), ("B", "decode", 9, 1, 2), ("C", "prefill", 0, 1, 0)], 0,
     ["B"], {"C": 31}),
    # F finished in the step in flight (async scheduling): the walk skips it, yet as the last of `running`
    # it is FCFS's victim, and its blocks let A decode (scheduler.py:800-814, 969-970).
    ("fcfs", [("A", "decode", 0, 1, 1), ("F", "finishing", 0, 0, 2), ("P", "prefill", 0, 1, 0)], 0,
     ["P", "F"], {}),
]


@pytest.mark.parametrize("policy, spec, free, victims, chunks", WALKS)
def test_the_walk_preempts_v1s_victim_in_running_order_and_gives_its_tokens_back(
        policy: str, spec: list, free: int, victims: list, chunks: dict) -> None:
    from sim.policies.vllm import VllmPolicy, _walk
    from sim.state import DECODE

    view = WalkView(spec, free, budget=32)
    victim = VllmPolicy().victim(EngineConfig(scheduling_policy=policy))
    got, budget, preempted = _walk(view, 32, victim, policy == "priority")
    assert view.preempted == victims and preempted == len(victims)
    assert {g.request_id: q for g, q in got} == chunks
    decodes = sum(g.state == DECODE for g in view.running)
    assert budget == 32 - decodes - sum(chunks.values())


def test_vllm_allocates_through_the_per_chunk_layout_and_v0_at_admission() -> None:
    from memory import BlockManager
    from sim.kv_layouts import make_kv_layout
    from sim.kv_paged import PagedKV
    from sim.kv_paged_chunked import ChunkedPagedKV
    from sim.policies import make_policy
    from sim.state import Group

    config = EngineConfig(num_gpu_blocks=64, block_size=16, enable_prefix_caching=False)
    v1 = make_kv_layout(config, make_policy("vllm"), BlockManager)
    v0 = make_kv_layout(config, make_policy("vllm-v0"), BlockManager)
    assert type(v1) is ChunkedPagedKV and type(v0) is PagedKV
    a, b = Group(0, "a", 0, 100, 5, 1, "greedy"), Group(1, "b", 0, 100, 5, 1, "greedy")
    assert v0.allocate(a) == 0 and v0.bm.num_blocks(a.seqs[0].sid) == 7  # the whole prompt at admission
    assert v0.chunk_need(a, 40) == 0 and v0.allocate_chunk(a, 40)
    assert v1.allocate(b) == 0 and v1.bm.num_blocks(b.seqs[0].sid) == 0   # nothing but prefix hits
    assert v1.chunk_need(b, 40) == 3 and v1.allocate_chunk(b, 40) and v1.bm.num_blocks(b.seqs[0].sid) == 3
    assert v1.chunk_need(b, 60) == 4 and not v1.allocate_chunk(b, 62 * 16)  # short pool: nothing taken
    assert v1.bm.num_blocks(b.seqs[0].sid) == 3 and v1.logical_blocks() == 3


@pytest.mark.parametrize("async_scheduling", [None, False])
def test_a_finished_request_keeps_its_slot_while_the_next_step_is_scheduled(async_scheduling: bool | None) -> None:
    # A finishes while C runs; B waits for A's slot (max_num_seqs 2). With async scheduling (V1's default) the
    # step after A's last is scheduled before A's output is processed: B joins the step after that.
    trace = Trace([Request("A", 0.0, 16, 5), Request("C", 0.0, 16, 40), Request("B", 0.001, 16, 5)])
    result = replay(trace, EngineConfig(max_num_seqs=2, async_scheduling=async_scheduling, check_every=1),
                    policy="vllm")
    steps = result.steps
    a_done = by_id(result).loc["A", "finish_s"]
    following = steps[steps["start_s"] >= a_done].iloc[:2]
    if async_scheduling is None:  # C decodes alone, then B's prefill joins it
        assert following["num_prefill_tokens"].tolist() == [0, 16]
    else:
        assert following["num_prefill_tokens"].tolist()[0] == 16
    assert (result.requests["status"] == "finished").all()


@pytest.mark.parametrize("scheduling", ["fcfs", "priority"])
def test_every_preemption_shows_on_its_users_row(scheduling: str) -> None:
    # Under pressure V1 also preempts requests whose last step is in flight (held, already finished): their
    # preemption is counted on the user's row even when its children or beam round were summed into it.
    from traces import load

    trace = load(str(Path(__file__).parent / "data" / "sim_sharing_trace.csv"))
    result = replay(trace, EngineConfig(num_gpu_blocks=600, scheduling_policy=scheduling), policy="vllm")
    assert result.summary["preemptions"] > 0
    assert int(result.requests["preemptions"].sum()) == result.summary["preemptions"]
