"""The simulator's contracts on every policy: conservation, time order, capacity, determinism, and
fast-forwarding giving exactly the tables of stepping one by one."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim import POLICIES, EngineConfig, replay
from sim.v1_beam_search import engine_requests
from traces import Request, Trace

PAGED = ("vllm-v0", "vllm-swap", "sarathi")


def sampled_tokens(done: pd.DataFrame, policy: str) -> int:
    """Tokens the engine sampled for the finished requests: each sample's or beam's output, but under vllm
    a beam request's rounds of 1-token requests sample 1 + (output - 1) x width (`sim.v1_beam_search`)."""
    beam = (done["sampling"] == "beam") & (done["n"] > 1) & (policy == "vllm")
    rounds = engine_requests(done["n"].to_numpy(), done["output_tokens"].to_numpy())
    return int(np.where(beam, rounds, done["generated_tokens"]).sum())


def mixed_trace(num: int = 90, seed: int = 1, rate: float = 40.0) -> Trace:
    """Greedy, parallel and beam requests with varied lengths, arriving in bursts."""
    rng = np.random.default_rng(seed)
    requests, t = [], 0.0
    for i in range(num):
        t += float(rng.exponential(1 / rate))
        sampling = str(rng.choice(["greedy", "parallel", "beam"], p=[0.7, 0.15, 0.15]))
        n = 1 if sampling == "greedy" else int(rng.integers(2, 5))
        requests.append(Request(f"r{i}", t, int(rng.integers(1, 700)), int(rng.integers(1, 300)), n=n,
                                sampling=sampling))
    return Trace(requests)


@pytest.fixture(scope="module")
def trace() -> Trace:
    return mixed_trace()


# Tight pools force preemption (and swapping); None is the whole H100.
POOLS = (None, 160)


def run(trace: Trace, policy: str, pool: int | None, **kw) -> object:
    if policy in ("orca-max", "static") and pool is not None:
        kw.setdefault("max_output_tokens", 300)  # a 2048-slot max reservation would not fit 160 blocks
    return replay(trace, EngineConfig(num_gpu_blocks=pool, **kw), policy=policy, seed=3)


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("pool", POOLS)
def test_conservation_order_and_capacity(trace: Trace, policy: str, pool: int | None) -> None:
    result = run(trace, policy, pool, check_every=5)  # full invariant checks about every 5 steps
    req, steps = result.requests, result.steps
    assert len(req) == len(trace)
    assert set(req["status"]) <= {"finished", "rejected"}
    done = req[req["status"] == "finished"]
    rejected = req[req["status"] == "rejected"]
    assert (rejected["reason"].str.len() > 0).all() and (done["reason"] == "").all()
    assert rejected[["first_token_s", "finish_s", "ttft_s", "e2e_s"]].isna().all().all()
    # Conservation: each sample produced its output; the steps' token counts agree.
    assert (done["generated_tokens"] == done["output_tokens"] * done["n"]).all()
    assert steps["num_generated_tokens"].sum() == sampled_tokens(done, policy)
    # Time order per request and along the steps.
    assert (done["arrival_s"] <= done["first_token_s"]).all()
    assert (done["first_token_s"] <= done["finish_s"]).all()
    assert (steps["duration_s"] > 0).all()
    assert (steps["start_s"].to_numpy()[1:] >= steps["end_s"].to_numpy()[:-1]).all()
    assert np.allclose(steps["end_s"] - steps["start_s"], steps["duration_s"])
    # Capacity: never more blocks than the pool, never more tokens than reserved slots.
    total = result.summary["kv_blocks_total"]
    assert (steps["kv_blocks_used"] <= total).all() and (steps["kv_blocks_free"] >= 0).all()
    assert (steps["kv_tokens"] <= steps["kv_slots_reserved"]).all() and (steps["kv_tokens"] >= 0).all()
    # Inter-token gaps: one per token after the first of each stream, all positive (a group's samples
    # decode in lockstep: one stream; under vllm and sglang each sample of a parallel request is its own request).
    streams = np.where((done["sampling"] == "parallel") & (policy in ("vllm", "sglang")), done["n"], 1)
    assert len(result.itl_s) == int(((done["generated_tokens"] // done["n"] - 1) * streams).sum())
    assert (result.itl_s > 0).all()
    if pool is not None and policy in PAGED:
        assert result.summary["preemptions"] > 0


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("pool", POOLS)
def test_fast_forward_gives_the_tables_of_single_steps(trace: Trace, policy: str, pool: int | None) -> None:
    fast = run(trace, policy, pool)
    slow = run(trace, policy, pool, fast_forward=False)
    pd.testing.assert_frame_equal(fast.requests, slow.requests)
    pd.testing.assert_frame_equal(fast.steps, slow.steps)
    assert np.array_equal(fast.itl_s, slow.itl_s)
    assert fast.summary["num_records"] <= slow.summary["num_records"]


def test_fast_forward_runs_long_stretches() -> None:
    requests = [Request(f"r{i}", 0.001 * i, 100, 400) for i in range(20)]
    result = replay(Trace(requests), EngineConfig())
    assert result.summary["num_steps"] > 10 * result.summary["num_records"]


@pytest.mark.parametrize("policy", ["vllm", "vllm-v0", "vllm-swap", "sarathi"])
def test_same_inputs_same_tables(trace: Trace, policy: str) -> None:
    a, b = run(trace, policy, 160), run(trace, policy, 160)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.steps, b.steps)
    assert np.array_equal(a.itl_s, b.itl_s)


def test_seed_drives_beam_search() -> None:
    requests = [Request(f"b{i}", 0.01 * i, 100, 80, n=4, sampling="beam") for i in range(4)]
    a = replay(Trace(requests), EngineConfig(), seed=1)
    b = replay(Trace(requests), EngineConfig(), seed=2)
    assert a.summary["cow_copies"] != b.summary["cow_copies"] or not a.steps.equals(b.steps)


def test_requests_that_never_fit_are_rejected_and_the_run_goes_on() -> None:
    requests = [
        Request("ok1", 0.0, 100, 50),
        Request("too-long", 0.0, 8000, 500),                          # over max_model_len 8192
        Request("too-wide", 0.0, 10, 10, n=8, sampling="parallel"),   # n > max_num_seqs
        Request("too-big", 0.0, 1000, 10),                             # more blocks than the pool
        Request("ok2", 0.1, 30, 20),
    ]
    result = replay(Trace(requests), EngineConfig(num_gpu_blocks=40, max_num_seqs=4))
    req = result.requests.set_index("request_id")
    assert list(req.loc[["ok1", "ok2"], "status"]) == ["finished", "finished"]
    assert "max_model_len" in req.loc["too-long", "reason"]
    assert "max_num_seqs" in req.loc["too-wide", "reason"]
    assert "KV blocks" in req.loc["too-big", "reason"]
    assert result.summary["num_rejected"] == 3


def test_a_prompt_over_the_token_budget_needs_chunking() -> None:
    requests = [Request("long", 0.0, 3000, 5)]
    config = EngineConfig(max_num_batched_tokens=2048)
    assert replay(Trace(requests), config, policy="orca-max").requests.loc[0, "status"] == "rejected"
    chunked = replay(Trace(requests), config, policy="sarathi")
    assert chunked.requests.loc[0, "status"] == "finished"
    assert chunked.steps["num_prefill_tokens"].max() <= config.prefill_chunk_tokens


def test_parallel_sampling_forks_the_prompt_and_copies_on_write() -> None:
    # 100 prompt tokens: 6 full blocks shared by all 4 samples, the partial 7th copied by 3 of them.
    result = replay(Trace([Request("p", 0.0, 100, 40, n=4, sampling="parallel")]), EngineConfig(check_every=1))
    steps = result.steps
    prefill, first_decode = steps.iloc[0], steps.iloc[1]
    assert prefill["kv_blocks_used"] == 7 and prefill["num_generated_tokens"] == 4
    assert first_decode["cow_copies"] == 3 and first_decode["kv_blocks_used"] == 6 + 4
    assert first_decode["kv_blocks_unshared"] == 4 * 7
    assert steps["cow_copies"].sum() == 3
    assert 0 < result.summary["sharing_saved_fraction"] < 1
    assert result.requests.loc[0, "generated_tokens"] == 160


def test_beam_search_forks_and_frees_every_step() -> None:
    trace = Trace([Request(f"b{i}", 0.0, 200, 120, n=4, sampling="beam") for i in range(3)])
    result = replay(trace, EngineConfig(check_every=3), seed=0)
    assert result.summary["cow_copies"] > 50
    assert result.summary["sharing_saved_fraction"] > 0.3
    assert (result.requests["generated_tokens"] == 480).all()


def test_swap_preemption_moves_whole_families_and_brings_them_back(trace: Trace) -> None:
    result = run(trace, "vllm-swap", 160)
    s = result.summary
    assert s["swaps_out"] > 0 and s["swaps_in"] == s["swaps_out"]
    assert s["swap_in_blocks"] == s["swap_out_blocks"] > 0
    assert (result.requests["swaps"] > 0).any()


def test_inter_token_gaps_are_the_decode_steps_of_a_lone_request() -> None:
    result = replay(Trace([Request("a", 0.0, 50, 30)]), EngineConfig())
    steps = result.steps
    assert len(result.itl_s) == 29 and len(steps) == 30
    assert np.allclose(result.itl_s, steps["duration_s"].to_numpy()[1:])


def test_write_creates_the_five_files(tmp_path, trace: Trace) -> None:
    result = run(trace, "vllm-v0", None)
    out = result.write(tmp_path / "run")
    for name in ("requests.csv", "steps.csv", "summary.json", "config.json", "itl.npy"):
        assert (out / name).is_file()
    assert not list(out.glob(".*"))  # no temp files left behind
    back = pd.read_csv(out / "requests.csv", keep_default_na=True)
    assert list(back.columns) == list(result.requests.columns)
    assert np.allclose(back["finish_s"], result.requests["finish_s"], equal_nan=True)
    pd.testing.assert_frame_equal(pd.read_csv(out / "steps.csv"), result.steps, check_dtype=False)
    assert np.array_equal(np.load(out / "itl.npy"), result.itl_s)


def test_decode_touches_the_block_manager_once_per_new_block(monkeypatch: pytest.MonkeyPatch) -> None:
    from memory import BlockManager

    calls = []
    real = BlockManager.append_slots

    def counting(self, seq_id, num_new_tokens=1):
        calls.append(num_new_tokens)
        return real(self, seq_id, num_new_tokens)

    monkeypatch.setattr(BlockManager, "append_slots", counting)
    requests = [Request(f"r{i}", 0.002 * i, 40, 401) for i in range(20)]  # 400 decode tokens each
    for fast_forward in (True, False):
        calls.clear()
        replay(Trace(requests), EngineConfig(fast_forward=fast_forward))
        # Each request grows from 3 blocks (40 tokens) to 28 (440): 25 new blocks, one call each at most.
        assert len(calls) <= 20 * 25 and sum(calls) <= 20 * 400
