"""Example tests of the block allocator and block manager: the seed's fork/copy-on-write cases, beam-search
churn, refusals that leave no trace, swap families, counters and the invariant checker."""
from __future__ import annotations

import random

import pytest

from memory import AllocStatus, BlockAllocator, BlockManager, InvariantError, NoFreeBlocksError


# ---- BlockAllocator ------------------------------------------------------------------------------------
def test_allocator_refcounts_and_free_list() -> None:
    pool = BlockAllocator(3)
    a, b = pool.allocate(), pool.allocate()
    assert (a, b) == (0, 1) and pool.num_free_blocks == 1
    pool.incref(a)
    assert pool.refcount(a) == 2 and pool.num_shared_blocks == 1
    assert pool.decref(a) is False and pool.refcount(a) == 1 and pool.num_shared_blocks == 0
    assert pool.decref(a) is True and pool.refcount(a) == 0 and pool.num_free_blocks == 2
    assert pool.allocate() == a  # LIFO: the block just freed is reused first


def test_allocator_rejects_empty_pool_double_free_and_bad_ids() -> None:
    pool = BlockAllocator(1)
    block = pool.allocate()
    with pytest.raises(NoFreeBlocksError):
        pool.allocate()
    pool.decref(block)
    with pytest.raises(ValueError, match="double free"):
        pool.decref(block)
    with pytest.raises(ValueError, match="free block"):
        pool.incref(block)
    for bad in (-1, 1, 1.0, True):
        with pytest.raises(ValueError, match="out of range"):
            pool.refcount(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BlockAllocator(-1)


# ---- fork and copy-on-write (the seed's cases) -----------------------------------------------------------
def test_fork_then_append_copies_the_shared_partial_block_once() -> None:
    bm = BlockManager(num_gpu_blocks=8, block_size=4)
    bm.allocate("parent", 6)  # blocks [0 full, 1 holding 2 of 4]
    free_before = bm.num_free_gpu_blocks
    bm.fork("parent", "child")
    assert bm.num_free_gpu_blocks == free_before  # a fork allocates nothing
    assert bm.block_table("child") == bm.block_table("parent") == [0, 1]
    assert bm.refcount(0) == bm.refcount(1) == 2 and bm.num_shared_gpu_blocks == 2

    copies = bm.append_slots("child")
    assert list(copies) == [(1, 2)]  # exactly the shared partial block, once
    assert bm.block_table("child") == [0, 2] and bm.block_table("parent") == [0, 1]
    assert bm.refcount(1) == 1 and bm.refcount(2) == 1 and bm.refcount(0) == 2
    assert bm.num_cow_copies == 1 and bm.num_free_gpu_blocks == free_before - 1

    # The other branch now owns block 1 alone and appends in place: no copy, no new block.
    assert list(bm.append_slots("parent")) == []
    assert bm.block_table("parent") == [0, 1] and bm.num_free_gpu_blocks == free_before - 1
    # Neither branch copies again while filling its own last block.
    assert list(bm.append_slots("child", 2)) == [] and bm.num_cow_copies == 1
    assert bm.slot_mapping("child", 4, 8) == [8, 9, 10, 11]  # block 2, offsets 0..3
    assert bm.slot_mapping("parent", 0, 7) == [0, 1, 2, 3, 4, 5, 6]
    bm.check_invariants()


def test_fork_of_full_last_block_appends_into_a_new_block_without_copy() -> None:
    bm = BlockManager(num_gpu_blocks=8, block_size=4)
    bm.allocate(0, 8)
    bm.fork(0, 1)
    assert list(bm.append_slots(1)) == [] and bm.block_table(1) == [0, 1, 2]
    assert list(bm.append_slots(0)) == [] and bm.block_table(0) == [0, 1, 3]
    assert bm.num_cow_copies == 0 and bm.num_shared_gpu_blocks == 2
    bm.check_invariants()


def test_multi_token_append_costs_blocks_not_tokens_and_copies_first() -> None:
    bm = BlockManager(num_gpu_blocks=16, block_size=4)
    bm.allocate("a", 3)
    bm.fork("a", "b")
    copies = bm.append_slots("b", 10)  # CoW of block 0, then 3 more blocks for 13 tokens
    assert list(copies) == [(0, 1)] and bm.block_table("b") == [1, 2, 3, 4]
    assert bm.num_tokens("b") == 13 and bm.num_allocated_unused_slots == 1 + 3  # a: 1 unused, b: 3
    assert bm.append_slots("a", 0) == () and bm.num_tokens("a") == 3
    bm.check_invariants()


def test_single_token_append_returns_the_shared_empty_tuple() -> None:
    bm = BlockManager(num_gpu_blocks=4, block_size=16)
    bm.allocate("s", 1)
    first, second = bm.append_slots("s"), bm.append_slots("s")
    assert first == () and first is second  # no new object on the hot path


def test_beam_search_fork_free_churn_leaks_nothing() -> None:
    rng = random.Random(7)
    bm = BlockManager(num_gpu_blocks=256, block_size=4)
    bm.allocate(("beam", 0), 13)
    beams, next_id = [("beam", 0)], 1
    for step in range(120):
        # Each beam proposes two continuations; keep the best four (here: random), as beam search does.
        candidates = []
        for beam in beams:
            child = ("beam", next_id)
            next_id += 1
            bm.fork(beam, child)
            candidates += [beam, child]
        keep = set(rng.sample(candidates, k=min(4, len(candidates))))
        for seq in candidates:
            if seq not in keep:
                bm.free(seq)
        beams = sorted(keep)
        for beam in beams:
            bm.append_slots(beam, rng.choice([1, 1, 1, 3]))
        if step % 10 == 0:
            bm.check_invariants()
    assert bm.num_cow_copies > 0 and bm.num_shared_gpu_blocks > 0
    for beam in beams:
        bm.free(beam)
    bm.check_invariants()
    assert bm.num_free_gpu_blocks == 256 and bm.num_used_gpu_blocks == 0
    assert bm.num_shared_gpu_blocks == 0 and bm.num_allocated_unused_slots == 0


# ---- admission and refusals --------------------------------------------------------------------------
def test_can_allocate_follows_the_watermark() -> None:
    bm = BlockManager(num_gpu_blocks=10, block_size=4, watermark=0.2)  # 2 blocks held back
    assert bm.watermark_blocks == 2
    assert bm.can_allocate(32) is AllocStatus.OK  # 8 blocks, leaves 2
    assert bm.can_allocate(33) is AllocStatus.NEVER  # 9 blocks can never leave 2
    bm.allocate("x", 4)
    assert bm.can_allocate(32) is AllocStatus.LATER
    bm.allocate("y", 36)  # allocate itself only refuses what does not fit at all
    with pytest.raises(NoFreeBlocksError):
        bm.allocate("z", 1)
    with pytest.raises(ValueError):
        BlockManager(10, 4, watermark=1.0)


def _state(bm: BlockManager) -> tuple:
    seqs = {s: (bm.block_table(s), bm.num_tokens(s)) for s in ("a", "b", "c") if bm.has_seq(s)}
    return (seqs, [bm.refcount(b) for b in range(bm.num_gpu_blocks)], bm.num_free_gpu_blocks,
            bm.num_allocated_unused_slots, bm.num_cow_copies)


def test_refused_allocate_and_append_leave_no_trace() -> None:
    bm = BlockManager(num_gpu_blocks=3, block_size=2)
    bm.allocate("a", 3)
    bm.fork("a", "b")
    before = _state(bm)
    with pytest.raises(NoFreeBlocksError):
        bm.allocate("c", 3)  # needs 2 blocks, 1 free
    assert _state(bm) == before and not bm.has_seq("c")
    assert bm.can_append_slots("b", 3) is False  # CoW + 1 new block > 1 free
    with pytest.raises(NoFreeBlocksError):
        bm.append_slots("b", 3)
    assert _state(bm) == before
    assert bm.can_append_slots("b", 1) is True
    with pytest.raises(ValueError, match="already exists"):
        bm.allocate("a", 1)
    with pytest.raises(ValueError, match="unknown"):
        bm.append_slots("nope")
    with pytest.raises(ValueError, match="unknown"):
        bm.free("nope")
    assert _state(bm) == before
    bm.check_invariants()


# ---- swap ----------------------------------------------------------------------------------------
def test_swap_family_round_trip_keeps_sharing_and_refcounts() -> None:
    bm = BlockManager(num_gpu_blocks=8, block_size=4, num_cpu_blocks=4)
    bm.allocate("a", 6)
    bm.fork("a", "b")
    bm.append_slots("b")  # a: [0, 1], b: [0, 2]; block 0 shared
    with pytest.raises(ValueError, match="shared with 'b'.*must move together"):
        bm.swap_out(["a"])
    with pytest.raises(ValueError, match="family"):
        bm.can_swap_out(["a"])
    assert bm.can_swap_out(["a", "b"])
    out = bm.swap_out(["b", "a"])
    assert sorted(out) == [0, 1, 2] and len(set(out.values())) == 3  # the shared block moves once
    assert bm.is_swapped("a") and bm.is_swapped("b")
    assert bm.cpu_refcount(out[0]) == 2 and bm.num_free_gpu_blocks == 8 and bm.num_free_cpu_blocks == 1
    assert bm.block_table("b") == [out[0], out[2]]
    with pytest.raises(ValueError, match="swapped out"):
        bm.append_slots("a")
    with pytest.raises(ValueError, match="swapped out"):
        bm.slot_mapping("a", 0, 1)
    back = bm.swap_in(["a", "b"])
    assert bm.block_table("a") == [back[out[0]], back[out[1]]]
    assert bm.refcount(back[out[0]]) == 2 and bm.num_swapped_out_blocks == bm.num_swapped_in_blocks == 3
    assert bm.num_allocated_unused_slots == 2 + 1  # a's last block holds 2 of 4, b's holds 3 of 4
    bm.check_invariants()


def test_swap_refusals() -> None:
    bm = BlockManager(num_gpu_blocks=4, block_size=4, num_cpu_blocks=1)
    bm.allocate("a", 8)
    assert bm.can_swap_out(["a"]) is False
    with pytest.raises(NoFreeBlocksError):
        bm.swap_out(["a"])
    assert not bm.is_swapped("a") and bm.num_free_cpu_blocks == 1
    with pytest.raises(ValueError, match="on the GPU"):
        bm.swap_in(["a"])
    with pytest.raises(ValueError, match="twice"):
        bm.can_swap_out(["a", "a"])
    bm.free("a")
    bm.allocate("b", 4)
    bm.swap_out(["b"])
    bm.allocate("c", 16)  # the GPU is full now
    assert bm.can_swap_in(["b"]) is False
    with pytest.raises(NoFreeBlocksError):
        bm.swap_in(["b"])
    assert bm.is_swapped("b")
    bm.free("b")  # a swapped sequence frees its CPU blocks
    assert bm.num_free_cpu_blocks == 1
    bm.check_invariants()


def test_full_blocks_to_swap_in_count_a_shared_block_once_and_no_partial_block() -> None:
    bm = BlockManager(num_gpu_blocks=16, block_size=4, num_cpu_blocks=16)
    bm.allocate("a", 10)      # blocks: 2 full + 1 partial (2 tokens)
    bm.fork("a", "b")         # shares all three
    bm.append_slots("b", 3)   # b copies the partial block on write and fills it, then a new partial one
    bm.swap_out(["a", "b"])
    # a: 2 shared full + its partial; b: the 2 shared full + its own full copy + a 1-token partial
    assert bm.num_full_blocks_to_swap_in(["a", "b"]) == 3
    bm.allocate("c", 8)
    bm.swap_out(["c"])
    assert bm.num_full_blocks_to_swap_in(["c"]) == 2  # exactly full: no partial block
    with pytest.raises(ValueError, match="on the CPU|swapped|not"):
        bm.num_full_blocks_to_swap_in(["zz"])


# ---- invariant checker finds corruption --------------------------------------------------------------
@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda bm: bm._gpu._refcounts.__setitem__(0, 3), "refcount"),
        (lambda bm: bm._gpu._free.append(0), "free list"),
        (lambda bm: bm._gpu_seqs["a"].blocks.append(5), "blocks for"),
        (lambda bm: setattr(bm, "_gpu_filled_slots", 0), "filled-slot"),
        (lambda bm: setattr(bm._gpu, "_num_shared", 0), "shared counter"),
    ],
)
def test_check_invariants_names_the_violation(corrupt, message: str) -> None:  # type: ignore[no-untyped-def]
    bm = BlockManager(num_gpu_blocks=8, block_size=4)
    bm.allocate("a", 5)
    bm.fork("a", "b")
    bm.check_invariants()
    corrupt(bm)
    with pytest.raises(InvariantError, match=message):
        bm.check_invariants()


def test_constructor_validates() -> None:
    for args in [(0, 4), (4, 0), (4, 4, -1), (4.0, 4)]:
        with pytest.raises(ValueError):
            BlockManager(*args)  # type: ignore[arg-type]


# ---- demo command and benchmark script ---------------------------------------------------------------
def test_demo_memory_command(capsys: pytest.CaptureFixture[str]) -> None:
    from sim import cli

    assert cli.main(["demo-memory"]) == 0
    out = capsys.readouterr().out
    assert "copy-on-write [(2, 3)]" in out and "in place, no copy" in out
    assert "swapped out/in 5/5 blocks" in out and "gpu free 16/16, cpu free 16/16" in out
    assert cli.main(["demo-memory", "--gpu-blocks", "4"]) == 2
    assert "the demo needs 5 blocks" in capsys.readouterr().err
    # the pools it names are enough: 3 prompt blocks, then 2 copies (the last sample writes in place)
    assert cli.main(["demo-memory", "--gpu-blocks", "5", "--cpu-blocks", "5"]) == 0
    assert "gpu free 5/5, cpu free 5/5" in capsys.readouterr().out
    # a prompt of whole blocks: every sample's first token needs a new block
    assert cli.main(["demo-memory", "--prompt-tokens", "8", "--gpu-blocks", "4"]) == 2
    assert "the demo needs 5 blocks" in capsys.readouterr().err


def test_bench_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from memory import bench

    cases = [c for c in bench._cases(quick=True) if "2M" not in c[1]]  # skip the huge pool here
    for op, case, _, make in cases:
        assert make()() > 0, f"{op} {case} did no operations"
    assert bench._pin_one_core(-1) == "not pinned"
