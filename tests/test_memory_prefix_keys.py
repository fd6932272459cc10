"""The block-key helpers (token, prefix-group and Mooncake hash-id keys), and that a prefix-caching
manager given no keys behaves exactly like `BlockManager`."""
from __future__ import annotations

import random

import pytest

from memory import BlockManager, NoFreeBlocksError, PrefixCachingBlockManager
from memory.block_keys import hash_id_block_keys, prefix_group_block_keys, token_block_keys


# ---- the key helpers -----------------------------------------------------------------------------------
def test_block_key_helpers() -> None:
    assert token_block_keys([1, 2, 3, 4, 5], 2) == [(1, 2), (3, 4)]
    assert prefix_group_block_keys(9, 4, "r1", "g", 5) == [("prefix", "g", 0), ("own", "r1", 1)]
    assert prefix_group_block_keys(3, 4, "r1") == []
    with pytest.raises(ValueError, match="prefix_group"):
        prefix_group_block_keys(8, 4, "r1", None, 4)
    with pytest.raises(ValueError, match="exceeds"):
        prefix_group_block_keys(8, 4, "r1", "g", 9)
    # Mooncake: 512-token hash blocks, our blocks of 256 (two per hash block) and of 384 (straddling).
    assert hash_id_block_keys([7, 8], 1000, 256) == [7, 7, 8]
    assert hash_id_block_keys([7, 8, 9], 1400, 384) == [7, (7, 8), (8, 9)]
    assert hash_id_block_keys([7], 2000, 256) == [7, 7]  # past the ids: no keys
    assert hash_id_block_keys([7, 8], 1000, 16) == [7] * 32 + [8] * 30
    # Two Mooncake requests agreeing on their first hash id share exactly the blocks inside it.
    bm = PrefixCachingBlockManager(num_gpu_blocks=16, block_size=256)
    bm.allocate("m1", 1200, hash_id_block_keys([7, 8, 9], 1200, 256))
    assert bm.allocate("m2", 1100, hash_id_block_keys([7, 5, 6], 1100, 256)) == 512
    bm.check_invariants()


# ---- without keys it is the base block manager -------------------------------------------------------
def _apply(bm: BlockManager, op: str, seq: int | None, live: list[int], n: int, step: int) -> object:
    """One operation; its result, or the type of the error it raised."""
    try:
        if op == "alloc":
            status = bm.can_allocate(n)
            bm.allocate(step, n)  # the prefix manager returns 0 cached tokens here; compared elsewhere
            return status
        if seq is None:
            return None
        if op == "append":
            return bm.can_append_slots(seq, n), tuple(bm.append_slots(seq, n))
        if op == "fork":
            return bm.fork(seq, step)
        if op == "free":
            return bm.free(seq)
        same_place = [s for s in live if bm.is_swapped(s) == bm.is_swapped(seq)]
        return bm.swap_in(same_place) if bm.is_swapped(seq) else bm.swap_out(same_place)
    except (NoFreeBlocksError, ValueError) as exc:
        return type(exc)


def test_without_keys_it_behaves_exactly_like_the_block_manager() -> None:
    rng = random.Random(3)
    base = BlockManager(24, 4, num_cpu_blocks=12, watermark=0.1)
    pc = PrefixCachingBlockManager(24, 4, num_cpu_blocks=12, watermark=0.1)
    live: list[int] = []
    outcomes = set()
    for step in range(600):
        op = rng.choice(["alloc", "append", "append", "fork", "free", "swap"])
        seq = rng.choice(live) if live else None
        n = rng.randint(0, 30) if op == "alloc" else rng.choice([1, 1, 5])
        result = _apply(base, op, seq, live, n, step)
        assert _apply(pc, op, seq, live, n, step) == result, (step, op)
        outcomes.add((op, result if isinstance(result, type) else "ok"))
        if base.has_seq(step):
            live.append(step)
        if seq is not None and not base.has_seq(seq):
            live.remove(seq)
        tables = {s: (base.block_table(s), base.num_tokens(s), base.is_swapped(s)) for s in live}
        assert tables == {s: (pc.block_table(s), pc.num_tokens(s), pc.is_swapped(s)) for s in live}
        assert (base.num_free_gpu_blocks, base.num_free_cpu_blocks, base.num_allocated_unused_slots,
                base.num_cow_copies) == (pc.num_free_gpu_blocks, pc.num_free_cpu_blocks,
                                         pc.num_allocated_unused_slots, pc.num_cow_copies)
    pc.check_invariants()
    assert pc.num_cached_blocks == 0 and pc.num_prefix_hits == 0
    # The walk reached refusals as well as successes of the operations that can fail.
    assert {("alloc", NoFreeBlocksError), ("swap", "ok"), ("append", NoFreeBlocksError)} <= outcomes


def test_prefix_bench_script_runs() -> None:
    from memory import bench_prefix

    for op, case, _, make in bench_prefix._cases(quick=True):
        assert make()() > 0, f"{op} {case} did no operations"
