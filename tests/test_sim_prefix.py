"""Automatic prefix caching in the simulator (`EngineConfig(enable_prefix_caching=True)`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_sim_engine import PAGED, mixed_trace, sampled_tokens

from sim import EngineConfig, cli, replay
from traces import Request, Trace


def prefix_trace(num: int = 90, seed: int = 1, rate: float = 40.0) -> Trace:
    """`test_sim_engine.mixed_trace` (greedy, parallel, beam) with most prompts opening with one of three
    shared prefixes of 100-400 tokens."""
    rng = np.random.default_rng(seed + 100)
    prefix_len = {"a": 400, "b": 250, "c": 100}
    requests = []
    for req in mixed_trace(num, seed, rate).requests:
        group = str(rng.choice(["a", "b", "c", "none"]))
        if group == "none":
            requests.append(req)
            continue
        p = prefix_len[group]
        requests.append(Request(req.request_id, req.arrival_s, p + req.prompt_tokens, req.output_tokens,
                                n=req.n, sampling=req.sampling, prefix_group=group, prefix_tokens=p))
    return Trace(requests)


@pytest.fixture(scope="module")
def trace() -> Trace:
    return prefix_trace()


def run(trace: Trace, policy: str, pool: int | None, caching: bool = True, **kw) -> object:
    config = EngineConfig(num_gpu_blocks=pool, enable_prefix_caching=caching, **kw)
    return replay(trace, config, policy=policy, seed=3)


def check_tables(result, trace: Trace, policy: str) -> None:
    """The conservation, time-order and capacity checks of `test_sim_engine`."""
    req, steps = result.requests, result.steps
    assert len(req) == len(trace) and set(req["status"]) <= {"finished", "rejected"}
    done = req[req["status"] == "finished"]
    assert (done["generated_tokens"] == done["output_tokens"] * done["n"]).all()
    assert steps["num_generated_tokens"].sum() == sampled_tokens(done, policy)
    assert (done["arrival_s"] <= done["first_token_s"]).all() and (done["first_token_s"] <= done["finish_s"]).all()
    assert (steps["duration_s"] > 0).all()
    assert (steps["start_s"].to_numpy()[1:] >= steps["end_s"].to_numpy()[:-1]).all()
    total = result.summary["kv_blocks_total"]
    assert (steps["kv_blocks_used"] <= total).all() and (steps["kv_blocks_free"] >= 0).all()
    assert (steps["kv_tokens"] <= steps["kv_slots_reserved"]).all() and (steps["kv_tokens"] >= 0).all()
    streams = np.where((done["sampling"] == "parallel") & (policy in ("vllm", "sglang")), done["n"], 1)
    assert len(result.itl_s) == int(((done["generated_tokens"] // done["n"] - 1) * streams).sum())
    assert (result.itl_s > 0).all()


@pytest.mark.parametrize("policy", PAGED + ("vllm",))  # vllm: beam requests as rounds of 1-token requests
@pytest.mark.parametrize("pool", (None, 160))
def test_caching_saves_prefill_and_keeps_the_engine_consistent(trace: Trace, policy: str, pool: int | None) -> None:
    on = run(trace, policy, pool, check_every=5)  # full engine + prefix-cache invariant checks
    off = run(trace, policy, pool, caching=False)
    check_tables(on, trace, policy)
    s = on.summary
    assert s["prefix_caching"] and s["prefix_hit_tokens"] > 0 and 0 < s["prefix_hit_rate"] <= 1
    assert s["prefix_hit_tokens"] % 16 == 0 and s["prefix_hit_requests"] > 0
    assert s["total_prefill_tokens"] < off.summary["total_prefill_tokens"]
    if pool is None:  # no preemption: exactly the hits are not computed
        assert off.summary["total_prefill_tokens"] - s["total_prefill_tokens"] == s["prefix_hit_tokens"]
        assert on.requests["ttft_s"].mean() < off.requests["ttft_s"].mean()
        assert s["prefix_cached_blocks"] > 0  # all freed at the end, still cached
    else:
        assert s["preemptions"] > 0
    assert off.summary["prefix_hit_tokens"] == 0 and off.summary["prefix_hit_rate"] == 0.0


def test_prefix_fields_are_ignored_with_caching_off(trace: Trace) -> None:
    plain = Trace([Request(r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens, n=r.n, sampling=r.sampling)
                   for r in trace.requests])
    a, b = run(trace, "vllm-v0", 160, caching=False), run(plain, "vllm-v0", 160, caching=False)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.steps, b.steps)


@pytest.mark.parametrize("policy", PAGED + ("vllm",))
def test_fast_forward_equals_stepwise_with_caching(trace: Trace, policy: str) -> None:
    fast, slow = run(trace, policy, 160), run(trace, policy, 160, fast_forward=False)
    pd.testing.assert_frame_equal(fast.requests, slow.requests)
    pd.testing.assert_frame_equal(fast.steps, slow.steps)
    assert np.array_equal(fast.itl_s, slow.itl_s)
    assert fast.summary["prefix_hit_tokens"] == slow.summary["prefix_hit_tokens"]


def test_same_inputs_same_tables_with_caching(trace: Trace) -> None:
    a, b = run(trace, "sarathi", 160), run(trace, "sarathi", 160)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.steps, b.steps)
    assert {k: v for k, v in a.summary.items() if k.startswith("prefix")} == \
        {k: v for k, v in b.summary.items() if k.startswith("prefix")}


def test_generated_trace_with_prefix_groups_hits() -> None:
    from traces import generate

    tr = generate(60, rate=10, seed=2, num_prefix_groups=2, prefix_tokens=512, prefix_fraction=1.0,
                  max_context=2048)
    s = replay(tr, EngineConfig(enable_prefix_caching=True, check_every=10)).summary
    # Every request but the first of each group (and any that came while it prefilled) reuses 512 tokens.
    assert s["prefix_hit_tokens"] >= 512 * (60 - 2 - 4) and s["num_finished"] == 60


def test_a_hit_needs_the_holders_prefill_to_have_run() -> None:
    # b arrives with a (same step: a's blocks are not computed yet); c arrives after a's prefill.
    reqs = [Request("a", 0.0, 600, 50, prefix_group="g", prefix_tokens=512),
            Request("b", 0.0, 600, 50, prefix_group="g", prefix_tokens=512),
            Request("c", 1.0, 600, 50, prefix_group="g", prefix_tokens=512)]
    result = replay(Trace(reqs), EngineConfig(enable_prefix_caching=True, check_every=1))
    assert result.summary["prefix_hit_tokens"] == 512 and result.summary["prefix_hit_requests"] == 1
    steps = result.steps
    assert steps["num_prefill_tokens"].tolist()[0] == 1200  # a and b computed in full
    assert 600 - 512 in steps["num_prefill_tokens"].tolist()  # c only its own 88 tokens


def test_mooncake_hash_ids_hit() -> None:
    # Two prompts of 1100 tokens with the same first two 512-token hash blocks, one with a different one.
    reqs = [Request("a", 0.0, 1100, 20, hash_ids=(1, 2, 3)), Request("b", 1.0, 1100, 20, hash_ids=(1, 2, 4)),
            Request("c", 2.0, 1100, 20, hash_ids=(5, 2, 3))]
    s = replay(Trace(reqs), EngineConfig(enable_prefix_caching=True, check_every=1)).summary
    # b reuses a's blocks of 16 that lie in hash blocks 1 and 2 (1024 tokens); c shares no first block.
    assert s["prefix_hit_tokens"] == 1024 and s["prefix_hit_requests"] == 1


def test_a_whole_cached_prompt_still_computes_its_last_token() -> None:
    reqs = [Request("a", 0.0, 512, 10, prefix_group="g", prefix_tokens=512),
            Request("b", 1.0, 512, 10, prefix_group="g", prefix_tokens=512)]
    result = replay(Trace(reqs), EngineConfig(enable_prefix_caching=True))
    prefill = result.steps["num_prefill_tokens"]
    assert prefill[prefill > 0].tolist() == [512, 16]  # 31 of 32 blocks cached: the last one is computed
    assert result.summary["prefix_hit_tokens"] == 496


@pytest.mark.parametrize("policy, credits", [("vllm", True), ("sglang", True), ("vllm-v0", False),
                                              ("vllm-swap", False), ("sarathi", False)])
def test_admission_credits_live_shared_blocks_except_under_v0(policy: str, credits: bool) -> None:
    # 100 blocks: a holds 66 (1040 prompt tokens); b fits beside it only if its 64 blocks shared with a are
    # credited. V1 and SGLang take only the blocks they lack; V0's can_allocate counts every prompt block
    # (vllm/core/block_manager.py:108-145 @v0.6.6.post1), so b waits for a under vllm-v0 and sarathi.
    reqs = [Request("a", 0.0, 1040, 100, prefix_group="g", prefix_tokens=1024),
            Request("b", 0.5, 1040, 100, prefix_group="g", prefix_tokens=1024)]
    results = {on: replay(Trace(reqs), EngineConfig(num_gpu_blocks=100, enable_prefix_caching=on, check_every=1),
                          policy=policy)
               for on in (False, True)}
    for on, result in results.items():
        a, b = result.requests.set_index("request_id").loc[["a", "b"]].itertuples()
        assert (b.first_token_s < a.finish_s) == (on and credits)
        check_tables(result, Trace(reqs), policy)
    assert results[True].summary["prefix_hit_tokens"] == 1024  # b hits a's blocks either way (V0: once freed)
    if credits:
        assert results[True].steps["kv_blocks_used"].max() <= 64 + 2 * 7


def test_finished_requests_own_blocks_are_not_counted_as_cached_with_or_without_a_cpu_pool() -> None:
    # Greedy requests only (none is swapped: vllm-v0 recomputes single sequences), so a CPU pool changes
    # nothing but when private blocks are registered (at allocation with one, at release without). The
    # counters of blocks a lookup could find must not see that: a finished request's own blocks never count.
    greedy = Trace([r for r in prefix_trace(120, seed=2, rate=60.0).requests if r.n == 1])
    runs = [replay(greedy, EngineConfig(num_gpu_blocks=300, enable_prefix_caching=True, swap_space_gib=gib,
                                        check_every=5), policy="vllm-v0") for gib in (0.0, 4.0)]
    lazy, eager = (run.summary for run in runs)
    assert lazy["num_cpu_blocks"] == 0 < eager["num_cpu_blocks"]
    assert runs[0].steps.equals(runs[1].steps) and lazy["preemptions"] > 0 and lazy["prefix_evicted_blocks"] > 0
    for key in ("prefix_hit_tokens", "prefix_cached_blocks", "prefix_evicted_blocks"):
        assert lazy[key] == eager[key], key


def test_recompute_after_preemption_finds_its_own_prompt() -> None:
    # A tiny pool forces recompute preemptions; each re-prefill reuses the request's own cached blocks.
    reqs = [Request(f"r{i}", 0.01 * i, 300, 200) for i in range(6)]
    on = replay(Trace(reqs), EngineConfig(num_gpu_blocks=60, enable_prefix_caching=True, check_every=1))
    off = replay(Trace(reqs), EngineConfig(num_gpu_blocks=60))
    assert on.summary["preemptions"] > 0 and on.summary["prefix_hit_tokens"] > 0
    assert on.summary["recomputed_tokens"] < off.summary["recomputed_tokens"]


@pytest.mark.parametrize("policy", ["orca-max", "orca-oracle", "static"])
def test_reserved_policies_refuse_caching(policy: str) -> None:
    with pytest.raises(ValueError, match="enable_prefix_caching: needs a paged policy"):
        replay(Trace([Request("a", 0.0, 10, 5)]), EngineConfig(enable_prefix_caching=True), policy=policy)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="enable_prefix_caching: not supported by the execute backend"):
        EngineConfig(backend="execute", model="tiny", enable_prefix_caching=True)
    with pytest.raises(ValueError, match="enable_prefix_caching: must be a bool"):
        EngineConfig(enable_prefix_caching=1)


def test_cli_flag(tmp_path: Path, trace: Trace, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "trace.csv"
    trace.to_csv(path)
    out = tmp_path / "out"
    assert cli.main(["replay", "--trace", str(path), "--enable-prefix-caching", "--out", str(out)]) == 0
    assert "prefix cache:" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prefix_caching"] and summary["prefix_hit_tokens"] > 0
    code = cli.main(["replay", "--trace", str(path), "--policy", "static", "--enable-prefix-caching",
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("pagedlab: error: enable_prefix_caching") and err.count("\n") == 1
    code = cli.main(["replay", "--trace", str(path), "--backend", "execute", "--enable-prefix-caching",
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "not supported by the execute backend" in err and err.count("\n") == 1


def test_sglang_caches_unless_told_not_to(tmp_path: Path, trace: Trace, capsys: pytest.CaptureFixture[str]) -> None:
    # SGLang's radix cache is on by default: `replay --policy sglang` hits without a flag, and
    # `--no-enable-prefix-caching` (SGLang's `--disable-radix-cache`) turns it off, as under vllm.
    path = tmp_path / "trace.csv"
    trace.to_csv(path)
    for policy in ("sglang", "vllm"):
        on, off = tmp_path / f"{policy}-on", tmp_path / f"{policy}-off"
        assert cli.main(["replay", "--trace", str(path), "--policy", policy, "--quiet", "--out", str(on)]) == 0
        assert cli.main(["replay", "--trace", str(path), "--policy", policy, "--no-enable-prefix-caching",
                         "--quiet", "--out", str(off)]) == 0
        summary_on = json.loads((on / "summary.json").read_text())
        summary_off = json.loads((off / "summary.json").read_text())
        assert summary_on["prefix_caching"] and summary_on["prefix_hit_tokens"] > 0
        assert not summary_off["prefix_caching"] and summary_off.get("prefix_hit_tokens", 0) == 0
