"""Stateful property test of the block manager against a shadow model of every physical KV slot.

The model stores the token written to each GPU and CPU slot. Every write goes to the slot the writing
sequence's own block table names, after performing the copies `append_slots` returned; every swap copies
block contents the way the returned mapping says and poisons the source. After each step every live
sequence must read back exactly its own tokens, so a write that leaks into a shared block, a lost copy or
a wrong swap mapping shows up as a wrong token. Refused operations must leave no trace.

    HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest tests/test_memory_stateful.py   # 10,000 runs
"""
from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, multiple, rule
from memory_shadow import SEQS, SeqId, ShadowMachine

from memory import AllocStatus, BlockManager, NoFreeBlocksError


class BlockManagerMachine(ShadowMachine):
    @initialize(
        block_size=st.sampled_from([1, 2, 3, 4, 8]),
        num_gpu_blocks=st.integers(1, 16),
        num_cpu_blocks=st.integers(0, 12),
        watermark=st.sampled_from([0.0, 0.0, 0.1, 0.3]),
    )
    def setup(self, block_size: int, num_gpu_blocks: int, num_cpu_blocks: int, watermark: float) -> None:
        self.init_shadow(BlockManager(num_gpu_blocks, block_size, num_cpu_blocks, watermark), block_size)
        self.next_token = 0
        self.next_id = 0
        self.cow_copies = 0
        self.blocks_out = 0
        self.blocks_in = 0

    # ---- helpers -----------------------------------------------------------------------------------
    def new_id(self) -> SeqId:
        self.next_id += 1
        i = self.next_id
        return (i, f"s{i}", ("beam", i))[i % 3]  # any hashable is a sequence id

    def new_tokens(self, n: int) -> list[int]:
        start = self.next_token
        self.next_token += n
        return list(range(start, start + n))

    def snapshot(self) -> Any:
        bm = self.bm
        return (
            {s: (bm.is_swapped(s), bm.block_table(s), bm.num_tokens(s)) for s in self.tokens},
            [bm.refcount(b) for b in range(bm.num_gpu_blocks)],
            [bm.cpu_refcount(b) for b in range(bm.num_cpu_blocks)],
            bm.num_free_gpu_blocks, bm.num_free_cpu_blocks, bm.num_allocated_unused_slots,
            bm.num_shared_gpu_blocks, bm.num_cow_copies, bm.num_swapped_out_blocks,
            bm.num_swapped_in_blocks,
        )

    # ---- rules -------------------------------------------------------------------------------------
    @rule(target=SEQS, num_tokens=st.integers(0, 40))
    def allocate(self, num_tokens: int) -> Any:
        bm, seq_id = self.bm, self.new_id()
        required = -(-num_tokens // self.bs)
        free = bm.num_free_gpu_blocks
        status = bm.can_allocate(num_tokens)
        self.check_alloc_status(status, required, required)
        before = self.snapshot()
        try:
            bm.allocate(seq_id, num_tokens)
        except NoFreeBlocksError:
            assert required > free and status is not AllocStatus.OK
            assert self.snapshot() == before
            return multiple()  # nothing new in the bundle
        assert required <= free and bm.num_free_gpu_blocks == free - required
        self.tokens[seq_id], self.swapped[seq_id] = [], False
        self.write(seq_id, 0, self.new_tokens(num_tokens))
        return seq_id

    @rule(seq_id=SEQS, num_new=st.one_of(st.just(1), st.integers(0, 12)))
    def append(self, seq_id: SeqId, num_new: int) -> None:
        bm = self.bm
        if self.swapped[seq_id]:  # a swapped sequence cannot grow until it is swapped back in
            self.check_misuse(lambda: bm.append_slots(seq_id, num_new))
            self.check_misuse(lambda: bm.can_append_slots(seq_id, num_new))
            return
        n = len(self.tokens[seq_id])
        table = bm.block_table(seq_id)
        cow_needed = num_new > 0 and n % self.bs != 0 and bm.refcount(table[-1]) > 1
        new_blocks = -(-(n + num_new) // self.bs) - len(table)
        free = bm.num_free_gpu_blocks
        can = bm.can_append_slots(seq_id, num_new)
        before = self.snapshot()
        try:
            copies = bm.append_slots(seq_id, num_new)
        except NoFreeBlocksError:
            assert not can and new_blocks + cow_needed > free
            assert self.snapshot() == before
            return
        assert can and bm.num_free_gpu_blocks == free - new_blocks - cow_needed
        if cow_needed:
            ((src, dst),) = copies
            assert src == table[-1] and before[1][dst] == 0 and bm.refcount(dst) == 1
            self.cow_copies += 1
        else:
            assert len(copies) == 0
        if table:
            assert bm.block_table(seq_id)[: len(table) - 1] == table[:-1]  # full blocks never move
        self.copy_and_keep(dict(copies))
        self.write(seq_id, n, self.new_tokens(num_new))

    def copy_and_keep(self, mapping: dict[int, int]) -> None:
        # Copy-on-write: the source stays live for the other sharers, so copy without poisoning.
        gpu = self.mem[False]
        for s_block, d_block in mapping.items():
            for off in range(self.bs):
                s_slot, d_slot = s_block * self.bs + off, d_block * self.bs + off
                if s_slot in gpu:
                    gpu[d_slot] = gpu[s_slot]
                else:
                    gpu.pop(d_slot, None)

    # fork, free: shared, see tests/memory_shadow.py

    @rule(data=st.data(), seq_id=SEQS)
    def swap(self, data: st.DataObject, seq_id: SeqId) -> None:
        """Swap the family of a sequence out (if on the GPU) or in (if swapped)."""
        bm = self.bm
        swapped = self.swapped[seq_id]
        fam = data.draw(st.permutations(self.family(seq_id)))
        tables = {s: bm.block_table(s) for s in fam}
        distinct = {b for t in tables.values() for b in t}
        src_rc = bm.cpu_refcount if swapped else bm.refcount
        dst_rc = bm.refcount if swapped else bm.cpu_refcount
        old_rc = {b: src_rc(b) for b in distinct}
        can = bm.can_swap_in(fam) if swapped else bm.can_swap_out(fam)
        before = self.snapshot()
        try:
            mapping = bm.swap_in(fam) if swapped else bm.swap_out(fam)
        except NoFreeBlocksError:
            assert not can and self.snapshot() == before
            return
        if not swapped:
            assert can  # swap out has no watermark: can_swap_out is exact
        assert set(mapping) == distinct and len(set(mapping.values())) == len(distinct)
        for b, twin in mapping.items():
            assert dst_rc(twin) == old_rc[b] and src_rc(b) == 0  # a shared block moves once
        for s in fam:
            assert bm.block_table(s) == [mapping[b] for b in tables[s]]
            self.swapped[s] = not swapped
        self.copy(mapping, swapped, poison=set(mapping))  # the freed source must never be read again
        if swapped:
            self.blocks_in += len(mapping)
        else:
            self.blocks_out += len(mapping)

    # swap_part_of_family: shared, see tests/memory_shadow.py

    def check_misuse(self, call: Any) -> None:
        """`call` must raise `ValueError` and change nothing."""
        before = self.snapshot()
        try:
            call()
        except ValueError:
            pass
        else:
            raise AssertionError("misuse did not raise")
        assert self.snapshot() == before

    @rule(seq_id=SEQS, other=SEQS, kind=st.sampled_from(["dup_alloc", "dup_fork", "wrong_way", "bad_count"]))
    def misuse(self, seq_id: SeqId, other: SeqId, kind: str) -> None:
        bm = self.bm
        if kind == "dup_alloc":
            self.check_misuse(lambda: bm.allocate(seq_id, 1))
        elif kind == "dup_fork":
            self.check_misuse(lambda: bm.fork(seq_id, other))
        elif kind == "wrong_way":  # swap in from the GPU, or out from the CPU
            self.check_misuse(lambda: (bm.swap_out if self.swapped[seq_id] else bm.swap_in)([seq_id]))
        else:
            self.check_misuse(lambda: bm.append_slots(seq_id, -1))

    @rule()
    def free_unknown(self) -> None:
        self.check_misuse(lambda: self.bm.free(("never", "allocated")))

    # ---- invariants --------------------------------------------------------------------------------
    def check_seq(self, seq_id: SeqId, toks: list[int], table: list[int], slots: list[int]) -> None:
        bm = self.bm
        assert len(table) == -(-len(toks) // self.bs) == bm.num_blocks(seq_id)
        if not self.swapped[seq_id]:
            assert bm.slot_mapping(seq_id, 0, len(toks)) == slots

    @invariant()
    def every_sequence_reads_back_its_own_tokens(self) -> None:
        bm = self.bm
        refs, _ = self.check_slots_and_refcounts()
        assert bm.num_used_gpu_blocks == len(refs[False])
        assert bm.num_shared_gpu_blocks == sum(1 for c in refs[False].values() if c > 1)
        assert bm.num_cow_copies == self.cow_copies
        assert (bm.num_swapped_out_blocks, bm.num_swapped_in_blocks) == (self.blocks_out, self.blocks_in)


TestBlockManagerMachine = BlockManagerMachine.TestCase
# Longer runs than the default 50 steps reach deeper fork chains and swap round trips; the example count
# comes from the active profile (`ci` or `thorough`, see tests/conftest.py).
TestBlockManagerMachine.settings = settings(stateful_step_count=80)
