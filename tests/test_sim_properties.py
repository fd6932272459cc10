"""Random small traces on random small engines: every policy conserves requests and tokens, respects the
pool, passes the block manager's invariant checks, and fast-forwarding changes no table."""
from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sim_engine import sampled_tokens

from sim import POLICIES, EngineConfig, replay
from traces import Request, Trace


@st.composite
def requests(draw: st.DrawFn) -> list[Request]:
    count = draw(st.integers(1, 14))
    out, t = [], 0.0
    for i in range(count):
        t += draw(st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.2]))
        sampling = draw(st.sampled_from(["greedy", "greedy", "parallel", "beam"]))
        n = 1 if sampling == "greedy" else draw(st.integers(2, 4))
        prompt = draw(st.one_of(st.integers(1, 90), st.sampled_from([16, 32, 48])))  # block-aligned too
        out.append(Request(f"r{i}", t, prompt, draw(st.integers(1, 60)), n=n, sampling=sampling))
    return out


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # examples: the hypothesis profile
@given(requests(), st.sampled_from(list(POLICIES)), st.integers(12, 60), st.sampled_from([0.0, 0.05]),
       st.sampled_from([4, 16]), st.integers(0, 3))
def test_any_trace_any_policy(reqs: list[Request], policy: str, pool: int, watermark: float, block_size: int,
                              seed: int) -> None:
    trace = Trace(reqs)
    config = dict(num_gpu_blocks=pool, watermark=watermark, block_size=block_size, max_num_seqs=8,
                  max_output_tokens=64, prefill_chunk_tokens=24, swap_space_gib=0.0005)
    fast = replay(trace, EngineConfig(check_every=3, **config), policy=policy, seed=seed)
    slow = replay(trace, EngineConfig(fast_forward=False, **config), policy=policy, seed=seed)
    pd.testing.assert_frame_equal(fast.requests, slow.requests)
    pd.testing.assert_frame_equal(fast.steps, slow.steps)
    assert np.array_equal(fast.itl_s, slow.itl_s)

    req, steps = fast.requests, fast.steps
    done = req[req["status"] == "finished"]
    assert len(done) + (req["status"] == "rejected").sum() == len(reqs)
    assert (req.loc[req["status"] == "rejected", "reason"].str.len() > 0).all()
    assert (done["generated_tokens"] == done["output_tokens"] * done["n"]).all()
    # sglang aborts a beam group it cannot keep: its tokens were generated, the request reports none.
    aborted = req["reason"].str.startswith("beam search group aborted").any()
    assert steps["num_generated_tokens"].sum() == sampled_tokens(done, policy) or (
        aborted and steps["num_generated_tokens"].sum() > done["generated_tokens"].sum())
    assert (done["arrival_s"] <= done["first_token_s"]).all() and (done["first_token_s"] <= done["finish_s"]).all()
    assert (steps["kv_blocks_used"] <= pool).all() and (steps["kv_tokens"] <= steps["kv_slots_reserved"]).all()
    # One stream per request (samples in lockstep); under vllm and sglang each parallel sample is its own request.
    streams = np.where((done["sampling"] == "parallel") & (policy in ("vllm", "sglang")), done["n"], 1)
    assert len(fast.itl_s) == int(((done["output_tokens"] - 1) * streams).sum())
