"""Shadow-model machinery shared by the stateful block-manager tests.

`ShadowMachine` keeps the token written to every GPU and CPU slot (`mem`), each live sequence's tokens and
whether it is swapped out, and provides the rules and checks that both `test_memory_stateful.py` and
`test_memory_prefix_stateful.py` run unchanged. Subclasses set `self.bm`/`self.bs` via `init_shadow` and
fill in the hooks (`linked_blocks`, `check_seq`, `check_empty`).

Live sequence ids travel in the `SEQS` bundle: rules that create a sequence (allocate, fork) return it into
the bundle, `free` consumes it, and rules that act on a sequence draw it from the bundle (hypothesis runs
them only while it is not empty). Whether a sequence is swapped is the model's state, not the bundle's:
rules that need one place or the other branch on it and check both outcomes.

Imported as a plain module: pytest (default "prepend" import mode) puts tests/ on sys.path.
"""
from __future__ import annotations

from typing import Any, Hashable

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, precondition, rule

from memory import AllocStatus

SeqId = Hashable
SEQS: Bundle = Bundle("seqs")  # live sequence ids, GPU or swapped


class ShadowMachine(RuleBasedStateMachine):
    bm: Any
    bs: int

    def init_shadow(self, bm: Any, block_size: int) -> None:
        self.bm = bm
        self.bs = block_size
        self.mem: dict[bool, dict[int, int]] = {False: {}, True: {}}  # swapped? -> slot -> token
        self.tokens: dict[SeqId, list[int]] = {}
        self.swapped: dict[SeqId, bool] = {}

    # ---- helpers -----------------------------------------------------------------------------------
    def linked_blocks(self, seq_id: SeqId) -> set[int]:
        """The blocks through which seq_id is tied to its family (hook)."""
        return set(self.bm.block_table(seq_id))

    def families(self) -> list[list[SeqId]]:
        """Every family of more than one sequence (O(sequences^2): the test's pools are small)."""
        seen: set[SeqId] = set()
        out = []
        for seq_id in sorted(self.tokens, key=repr):
            if seq_id not in seen:
                fam = self.family(seq_id)
                seen.update(fam)
                if len(fam) > 1:
                    out.append(fam)
        return out

    def family(self, seq_id: SeqId) -> list[SeqId]:
        """Sequences on the same device connected to seq_id through shared (linked) blocks."""
        where = self.swapped[seq_id]
        tables = {s: self.linked_blocks(s) for s in self.tokens if self.swapped[s] == where}
        fam, blocks, grew = {seq_id}, set(tables[seq_id]), True
        while grew:
            grew = False
            for s, t in tables.items():
                if s not in fam and t & blocks:
                    fam.add(s)
                    blocks |= t
                    grew = True
        return sorted(fam, key=repr)

    def write(self, seq_id: SeqId, start: int, toks: list[int]) -> None:
        slots = self.bm.slot_mapping(seq_id, start, start + len(toks))
        self.mem[False].update(zip(slots, toks))
        self.tokens[seq_id].extend(toks)

    def copy(self, mapping: dict[int, int], src_swapped: bool, poison: set[int]) -> None:
        """Copy block contents across devices; source blocks in `poison` are emptied."""
        src, dst = self.mem[src_swapped], self.mem[not src_swapped]
        for s_block, d_block in mapping.items():
            for off in range(self.bs):
                s_slot, d_slot = s_block * self.bs + off, d_block * self.bs + off
                if s_slot in src:
                    dst[d_slot] = src[s_slot]
                    if s_block in poison:
                        del src[s_slot]  # released: must never be read again
                else:
                    dst.pop(d_slot, None)

    def check_alloc_status(self, status: Any, required: int, take: int) -> None:
        """`can_allocate` said `status` for a prompt of `required` blocks that takes `take` free blocks."""
        bm = self.bm
        if required > bm.num_gpu_blocks - bm.watermark_blocks:
            assert status is AllocStatus.NEVER
        elif bm.num_free_gpu_blocks - take >= bm.watermark_blocks:
            assert status is AllocStatus.OK
        else:
            assert status is AllocStatus.LATER

    def snapshot(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def new_id(self) -> SeqId:  # pragma: no cover - overridden
        raise NotImplementedError

    def check_fork(self, child: SeqId) -> None:
        """Extra checks on a new fork (hook)."""

    def on_free(self, seq_id: SeqId, swapped: bool, released: list[int]) -> None:
        """Model update after seq_id was freed, releasing `released` blocks in table order (hook)."""

    # ---- shared rules ------------------------------------------------------------------------------
    @rule(target=SEQS, parent=SEQS)
    def fork(self, parent: SeqId) -> SeqId:
        bm, child = self.bm, self.new_id()
        free = bm.num_free_gpu_blocks, bm.num_free_cpu_blocks
        bm.fork(parent, child)
        assert bm.block_table(child) == bm.block_table(parent)
        assert (bm.num_free_gpu_blocks, bm.num_free_cpu_blocks) == free
        self.check_fork(child)
        self.tokens[child] = list(self.tokens[parent])
        self.swapped[child] = self.swapped[parent]
        return child

    @rule(seq_id=consumes(SEQS))
    def free(self, seq_id: SeqId) -> None:
        bm = self.bm
        swapped, table = self.swapped[seq_id], bm.block_table(seq_id)
        rc = bm.cpu_refcount if swapped else bm.refcount
        released = [b for b in table if rc(b) == 1]
        free = bm.num_free_cpu_blocks if swapped else bm.num_free_gpu_blocks
        bm.free(seq_id)
        assert (bm.num_free_cpu_blocks if swapped else bm.num_free_gpu_blocks) == free + len(released)
        assert not bm.has_seq(seq_id)
        del self.tokens[seq_id], self.swapped[seq_id]
        self.on_free(seq_id, swapped, released)

    @precondition(lambda self: len(self.tokens) > 1 and self.families())
    @rule(data=st.data())
    def swap_part_of_family(self, data: st.DataObject) -> None:
        fam = data.draw(st.sampled_from(self.families()))
        part = data.draw(st.lists(st.sampled_from(fam), min_size=1, max_size=len(fam) - 1, unique=True))
        bm, swapped = self.bm, self.swapped[fam[0]]
        before = self.snapshot()
        for op in (bm.can_swap_in, bm.swap_in) if swapped else (bm.can_swap_out, bm.swap_out):
            try:
                op(part)
            except ValueError as exc:
                assert "family" in str(exc)
            else:
                raise AssertionError(f"{op.__name__} of part of a family {part} of {fam} did not raise")
        assert self.snapshot() == before

    # ---- shared checks -----------------------------------------------------------------------------
    def check_seq(self, seq_id: SeqId, toks: list[int], table: list[int], slots: list[int]) -> None:
        """Extra per-sequence checks (hook)."""

    def check_slots_and_refcounts(self) -> tuple[dict[bool, dict[int, int]], set[int]]:
        """Every sequence reads back its own tokens; refcounts and free counts match the tables.
        Returns the per-device block reference counts and the filled GPU slots."""
        bm, bs = self.bm, self.bs
        bm.check_invariants()
        refs: dict[bool, dict[int, int]] = {False: {}, True: {}}
        filled: set[int] = set()
        for seq_id, toks in self.tokens.items():
            swapped = self.swapped[seq_id]
            assert bm.is_swapped(seq_id) == swapped and bm.num_tokens(seq_id) == len(toks)
            table = bm.block_table(seq_id)
            slots = [table[p // bs] * bs + p % bs for p in range(len(toks))]
            self.check_seq(seq_id, toks, table, slots)
            if not swapped:
                filled.update(slots)
            assert [self.mem[swapped].get(s) for s in slots] == toks, f"{seq_id!r} reads wrong tokens"
            for b in table:
                refs[swapped][b] = refs[swapped].get(b, 0) + 1
        pools = ((False, bm.num_gpu_blocks, bm.refcount), (True, bm.num_cpu_blocks, bm.cpu_refcount))
        for swapped, total, rc in pools:
            assert [rc(b) for b in range(total)] == [refs[swapped].get(b, 0) for b in range(total)]
        assert bm.num_free_gpu_blocks + len(refs[False]) == bm.num_gpu_blocks
        assert bm.num_free_cpu_blocks + len(refs[True]) == bm.num_cpu_blocks
        assert bm.num_allocated_unused_slots == len(refs[False]) * bs - len(filled)
        return refs, filled

    def check_empty(self) -> None:
        """Extra checks once every sequence is freed (hook)."""

    def teardown(self) -> None:
        if not hasattr(self, "bm"):
            return
        bm = self.bm
        for seq_id in sorted(self.tokens, key=repr):
            bm.free(seq_id)
        bm.check_invariants()
        assert bm.num_free_gpu_blocks == bm.num_gpu_blocks and bm.num_free_cpu_blocks == bm.num_cpu_blocks
        assert bm.num_allocated_unused_slots == 0 and bm.num_shared_gpu_blocks == 0
        self.check_empty()
