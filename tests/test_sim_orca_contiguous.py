"""Orca's contiguous KV buffers: the buddy allocator, external fragmentation, the Pow2 reservation, and the
simulator's contracts under the three Orca policies on pools small enough to fragment."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import EngineConfig, replay
from sim.kv_contiguous import BuddyAllocator, next_pow2
from traces import Request, Trace

ORCA = ("orca-max", "orca-pow2", "orca-oracle")


def by_id(result) -> pd.DataFrame:
    return result.requests.set_index("request_id")


def test_buddy_pool_of_any_size_is_cut_into_aligned_power_of_two_ranges() -> None:
    buddy = BuddyAllocator(400)  # 256 + 128 + 16
    assert [sorted(s) for s in buddy.free_ranges if s] == [[384], [256], [0]]
    assert buddy.capacity(5) == 8 + 4 and buddy.capacity(7) == 3 and buddy.capacity(9) == 0
    assert buddy.largest_free_order() == 8
    buddy.check()


def test_buddy_frees_coalesce_back_into_whole_ranges() -> None:
    buddy = BuddyAllocator(8)
    starts = [buddy.allocate(0) for _ in range(8)]
    assert starts == list(range(8)) and buddy.num_free_units == 0
    buddy.free(0)
    buddy.free(2)  # not buddies: no merge
    assert buddy.free_ranges[0] == {0, 2} and buddy.capacity(1) == 0
    buddy.free(1)  # 0+1 merge, then 0..1 has no free buddy (2..3 is half taken)
    assert buddy.free_ranges[0] == {2} and buddy.free_ranges[1] == {0}
    buddy.free(3)  # 2+3 -> 2..3, which merges with 0..1 into 0..3
    assert buddy.free_ranges[2] == {0} and not buddy.free_ranges[0] and not buddy.free_ranges[1]
    for s in (4, 5, 6, 7):
        buddy.free(s)
    assert buddy.free_ranges[3] == {0} and buddy.num_free_units == 8
    buddy.check()


def test_buddy_refuses_when_the_free_total_suffices_but_no_range_does() -> None:
    buddy = BuddyAllocator(8)
    a, b, c, d = (buddy.allocate(1) for _ in range(4))
    buddy.free(a)
    buddy.free(c)
    assert buddy.num_free_units == 4 and buddy.capacity(2) == 0  # 0..1 and 4..5 free, not adjacent buddies
    buddy.free(b)
    assert buddy.capacity(2) == 1 and buddy.allocate(2) == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.lists(st.tuples(st.booleans(), st.integers(0, 6), st.integers(0, 10 ** 6)),
                                    max_size=80))
def test_buddy_tiles_the_pool_and_returns_to_its_start(num_units: int, ops: list) -> None:
    buddy = BuddyAllocator(num_units)
    initial = [set(s) for s in buddy.free_ranges]
    pool = [buddy.capacity(order) for order in range(10)]  # the empty pool's ranges of each order
    held: list[int] = []
    for take, order, pick in ops:
        if take and buddy.capacity(order) > 0:
            free_before = buddy.num_free_units
            start = buddy.allocate(order)
            assert start % (1 << order) == 0 and buddy.num_free_units == free_before - (1 << order)
            held.append(start)
        elif held:
            buddy.free(held.pop(pick % len(held)))
        buddy.check()
        for order in range(10):
            assert buddy.capacity(order, free_only=False) == pool[order]
            assert [buddy.fits(order, n) for n in range(4)] == [buddy.capacity(order) >= n for n in range(4)]
    for start in held:
        buddy.free(start)
    assert buddy.free_ranges == initial and buddy.num_free_units == num_units


def test_next_power_of_two() -> None:
    assert [next_pow2(x) for x in (0, 1, 2, 3, 25, 32, 33)] == [1, 1, 2, 4, 32, 32, 64]


@pytest.mark.parametrize("output, reserved", [(25, 100 + 32), (32, 100 + 32), (33, 100 + 64), (1, 101)])
def test_pow2_reserves_the_output_rounded_up_to_a_power_of_two(output: int, reserved: int) -> None:
    result = replay(Trace([Request("a", 0.0, 100, output)]), EngineConfig(), policy="orca-pow2")
    held = result.steps[result.steps["num_running"] > 0]
    assert (held["kv_slots_reserved"] == reserved).all()
    # The buddy range: the reservation's blocks rounded up to a power of two.
    assert (held["kv_blocks_used"] == next_pow2(-(-reserved // 16))).all()


def test_oracle_and_max_reserve_exactly_and_pay_the_buddy_rounding_in_blocks() -> None:
    trace = Trace([Request("a", 0.0, 100, 100)])
    config = EngineConfig(max_output_tokens=300)
    oracle = replay(trace, config, policy="orca-oracle").steps.iloc[0]
    assert oracle["kv_slots_reserved"] == 200 and oracle["kv_blocks_used"] == 16  # 13 blocks -> 16
    biggest = replay(trace, config, policy="orca-max").steps.iloc[0]
    assert biggest["kv_slots_reserved"] == 400 and biggest["kv_blocks_used"] == 32  # 25 blocks -> 32


@pytest.mark.parametrize("policy", ["orca-pow2", "orca-oracle"])
def test_external_fragmentation_keeps_a_request_out_although_enough_slots_are_free(policy: str) -> None:
    # A pool of 8 blocks (128 slots). Four requests take two blocks each (ranges 0, 2, 4, 6); s0 and s1 finish
    # first and free blocks 0-1 and 4-5: four free blocks, but no free aligned range of four. "big" needs
    # three blocks (48 slots -> a range of four) and waits for a long request although 4 >= 3 blocks are free.
    reqs = [Request("s0", 0.0, 20, 2), Request("l0", 0.0, 16, 16), Request("s1", 0.0, 20, 2),
            Request("l1", 0.0, 16, 16), Request("big", 0.0, 40, 8)]
    config = EngineConfig(num_gpu_blocks=8)
    result = replay(Trace(reqs), EngineConfig(num_gpu_blocks=8, check_every=1), policy=policy)
    req, steps = by_id(result), result.steps
    assert (req["status"] == "finished").all()
    assert req.loc["big", "first_token_s"] > min(req.loc["l0", "finish_s"], req.loc["l1", "finish_s"])
    blocked = steps[(steps["num_waiting"] == 1) & (steps["kv_blocks_free"] >= 4)]
    assert len(blocked) > 0  # free slots enough for big (48 <= 64), yet it waits
    # A paged reservation of the same memory admits it as soon as three blocks are free.
    paged = by_id(replay(Trace(reqs), config, policy="vllm"))
    assert paged.loc["big", "first_token_s"] < req.loc["big", "first_token_s"]


def test_a_request_no_range_of_the_empty_pool_holds_is_rejected_with_its_reason() -> None:
    # 24 blocks = ranges of 16 + 8; a reserves 200 + 128 slots = 21 blocks, a range of 32.
    result = replay(Trace([Request("a", 0.0, 200, 72), Request("b", 0.0, 10, 5)]), EngineConfig(num_gpu_blocks=24),
                    policy="orca-pow2")
    req = by_id(result)
    assert req.loc["a", "status"] == "rejected" and "contiguous range" in req.loc["a", "reason"]
    assert req.loc["b", "status"] == "finished"


def fragmenting_trace(num: int = 60, seed: int = 5) -> Trace:
    rng = np.random.default_rng(seed)
    t, reqs = 0.0, []
    for i in range(num):
        t += float(rng.exponential(1 / 30))
        n = int(rng.choice([1, 1, 1, 2, 3]))
        reqs.append(Request(f"r{i}", t, int(rng.integers(1, 400)), int(rng.integers(1, 200)), n=n,
                            sampling="greedy" if n == 1 else "parallel"))
    return Trace(reqs)


@pytest.mark.parametrize("policy", ORCA)
def test_orca_contracts_on_a_fragmenting_pool(policy: str) -> None:
    trace = fragmenting_trace()
    config = dict(num_gpu_blocks=100, max_output_tokens=200)
    result = replay(trace, EngineConfig(**config, check_every=1), policy=policy, seed=2)
    req, steps = result.requests, result.steps
    done = req[req["status"] == "finished"]
    assert (done["generated_tokens"] == done["output_tokens"] * done["n"]).all()          # conservation
    assert steps["num_generated_tokens"].sum() == done["generated_tokens"].sum()
    assert (done["arrival_s"] <= done["first_token_s"]).all() and (done["first_token_s"] <= done["finish_s"]).all()
    assert (steps["start_s"].to_numpy()[1:] >= steps["end_s"].to_numpy()[:-1]).all()    # time order
    assert (steps["kv_blocks_used"] <= 100).all() and (steps["kv_tokens"] <= steps["kv_slots_reserved"]).all()
    assert result.summary["preemptions"] == 0
    again = replay(trace, EngineConfig(**config), policy=policy, seed=2)                  # determinism
    pd.testing.assert_frame_equal(again.requests, req)
    pd.testing.assert_frame_equal(again.steps, steps)
    slow = replay(trace, EngineConfig(**config, fast_forward=False), policy=policy, seed=2)  # fast-forward
    pd.testing.assert_frame_equal(slow.requests, req)
    pd.testing.assert_frame_equal(slow.steps, steps)
    assert np.array_equal(slow.itl_s, result.itl_s)
