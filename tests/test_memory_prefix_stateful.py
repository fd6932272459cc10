"""Stateful property test of the prefix-caching block manager against two shadow models.

Slot contents: every GPU and CPU slot's token, as in `test_memory_stateful.py`. A prompt's keyed blocks
hold tokens derived from the whole chain of keys up to them, so a block shared or revived for the wrong
chain (e.g. under keys -1 and -2, which Python hashes alike) reads back wrong tokens. Cache hits are not
written: they must already hold the right tokens.

The cache: which key chains are registered to which block, the evictor's LRU order down to its segments,
and the cache's counters, predicted from the operations alone. Both models are in `prefix_cache_models`;
the rules here run the operations and tell the models what each did. After every step both models must
agree with the manager and `check_invariants()` must pass; refused operations must leave no trace.

Compact keys: an allocation may pass its keys as `ChainKeys` over one remembered `PrivateChain` per key
list, as the simulator's beam-search rounds do, and such keys are looked up after every step: the cache's
memo on the chain (kept across allocations) must be its answer now, after evictions and registrations.

    HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest tests/test_memory_prefix_stateful.py
"""
from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, multiple, rule
from memory_shadow import SEQS, SeqId, ShadowMachine
from prefix_cache_models import CacheModel, ChainTokens

from memory import NoFreeBlocksError, PrefixCachingBlockManager
from memory.block_keys import ChainKeys, PrivateChain

KEYS = st.sampled_from([0, 1, 2, -1, -2])  # hash(-1) == hash(-2): the cache must still tell them apart


class PrefixCacheMachine(ShadowMachine):
    @initialize(
        block_size=st.sampled_from([1, 2, 3, 4]),
        num_gpu_blocks=st.integers(1, 14),
        num_cpu_blocks=st.integers(0, 10),
        watermark=st.sampled_from([0.0, 0.0, 0.1, 0.3]),
    )
    def setup(self, block_size: int, num_gpu_blocks: int, num_cpu_blocks: int, watermark: float) -> None:
        bm = PrefixCachingBlockManager(num_gpu_blocks, block_size, num_cpu_blocks, watermark)
        self.init_shadow(bm, block_size)
        self.cached_tokens: dict[SeqId, int] = {}
        self.used_keys: list[list[int]] = []
        self.next_id = 0
        self.cache, self.source = CacheModel(), ChainTokens(block_size)
        self.counts = dict(cow=0, out=0, into=0)  # copies and swaps: the block manager's, not the cache's
        self.chains: dict[tuple, tuple[list, PrivateChain]] = {}  # key list -> (its one list, its chain)

    # ---- helpers -----------------------------------------------------------------------------------
    def new_id(self) -> SeqId:
        self.next_id += 1
        return ("s", self.next_id - 1)

    def compact(self, keys: list, num_blocks: int) -> ChainKeys:
        """`keys[:num_blocks]` as compact keys over the key list's one chain (whose memo they share)."""
        shared, chain = self.chains.setdefault(tuple(keys), (list(keys), PrivateChain(("memo", len(self.chains)))))
        return ChainKeys(shared, num_blocks, chain)

    def linked_blocks(self, seq_id: SeqId) -> set[int]:
        """A family is tied by shared blocks that are not cached (a cached block may be shared across a
        swap boundary)."""
        bm, where = self.bm, self.swapped[seq_id]
        return {b for b in bm.block_table(seq_id) if where or not bm.is_cached(b)}

    def snapshot(self) -> Any:
        bm = self.bm
        return (
            {s: (bm.is_swapped(s), bm.block_table(s), bm.num_tokens(s)) for s in self.tokens},
            [(bm.refcount(b), bm.is_cached(b)) for b in range(bm.num_gpu_blocks)],
            [bm.cpu_refcount(b) for b in range(bm.num_cpu_blocks)],
            bm.evictable_blocks(), bm.num_free_gpu_blocks, bm.num_free_cpu_blocks,
            bm.num_allocated_unused_slots, bm.num_shared_gpu_blocks, bm.num_cow_copies,
            bm.num_swapped_out_blocks, bm.num_swapped_in_blocks, bm.num_evicted_blocks,
            bm.num_revived_blocks, bm.num_prefix_queries, bm.num_prefix_hit_tokens,
            [list(segment) for segment in bm._gpu._queue.segments.values()],
        )

    # ---- rules -------------------------------------------------------------------------------------
    @rule(target=SEQS, data=st.data(), num_full=st.integers(0, 5), reuse=st.booleans(), all_keys=st.booleans(),
          compact=st.booleans())
    def allocate(self, data: st.DataObject, num_full: int, reuse: bool, all_keys: bool, compact: bool) -> Any:
        bm, bs, seq_id = self.bm, self.bs, self.new_id()
        num_tokens = num_full * bs + data.draw(st.integers(0, bs - 1))
        num_keys = num_full if all_keys else data.draw(st.integers(0, num_full))
        keys = data.draw(st.lists(KEYS, min_size=num_keys, max_size=num_keys))
        if reuse and self.used_keys:  # continue an earlier prompt: hits are likely
            keys = (data.draw(st.sampled_from(self.used_keys)) + keys)[:num_keys]
        cache, hits = self.cache, self.cache.hits(keys)
        asked = self.compact(keys, len(keys)) if compact else keys
        live = [b for b in hits if bm.refcount(b) > 0]
        required = -(-num_tokens // bs)
        take, free, plain = required - len(live), bm.num_free_gpu_blocks, cache.plain_free(bm)
        status = bm.can_allocate(num_tokens, asked)
        assert bm.num_blocks_to_allocate(num_tokens, asked) == take
        self.check_alloc_status(status, required, take)
        before = self.snapshot()
        try:
            cached = bm.allocate(seq_id, num_tokens, asked)
        except NoFreeBlocksError:
            assert take > free and self.snapshot() == before
            return multiple()  # nothing new in the bundle
        assert take <= free and bm.num_free_gpu_blocks == free - take
        table = bm.block_table(seq_id)
        assert cached == len(hits) * bs and table[: len(hits)] == hits
        for block in hits:
            cache.revive(block)
        evicted = cache.evict(max(0, required - len(hits) - len(plain)))
        assert set(table[len(hits):]) <= plain | set(evicted)
        # The evicted blocks come first, most recently used first (the former free stack's order).
        assert table[len(hits):len(hits) + len(evicted)] == evicted[::-1]
        cache.allocated(keys, table, len(hits), num_tokens, cached)
        if cached:
            self.cached_tokens[seq_id] = cached
        self.used_keys.append(keys)
        toks = self.source.prompt(keys, num_tokens)
        self.tokens[seq_id], self.swapped[seq_id] = toks[:cached], False
        self.write(seq_id, cached, toks[cached:])  # cached tokens are not written: they must be there
        return seq_id

    @rule(seq_id=SEQS, num_new=st.one_of(st.just(1), st.integers(0, 9)))
    def append(self, seq_id: SeqId, num_new: int) -> None:
        bm = self.bm
        if self.swapped[seq_id]:  # a swapped sequence cannot grow until it is swapped back in
            self.check_misuse("append_swapped", [(bm.append_slots, (seq_id, num_new))])
            return
        n, table = len(self.tokens[seq_id]), bm.block_table(seq_id)
        cow = num_new > 0 and n % self.bs != 0 and bm.refcount(table[-1]) > 1
        needed = -(-(n + num_new) // self.bs) - len(table) + cow
        free, plain = bm.num_free_gpu_blocks, self.cache.plain_free(bm)
        can = bm.can_append_slots(seq_id, num_new)
        before = self.snapshot()
        try:
            copies = bm.append_slots(seq_id, num_new)
        except NoFreeBlocksError:
            assert not can and needed > free and self.snapshot() == before
            return
        assert can and bm.num_free_gpu_blocks == free - needed
        self.cache.evict(max(0, needed - len(plain)))
        if cow:
            ((src, dst),) = copies
            assert src == table[-1] and not bm.is_cached(dst) and bm.refcount(dst) == 1
            self.counts["cow"] += 1
        else:
            assert len(copies) == 0
        if table:
            assert bm.block_table(seq_id)[: len(table) - 1] == table[:-1]  # full blocks never move
        gpu = self.mem[False]
        for src, dst in copies:  # copy-on-write: the source stays live for the other sharers
            for off in range(self.bs):
                if src * self.bs + off in gpu:
                    gpu[dst * self.bs + off] = gpu[src * self.bs + off]
        self.write(seq_id, n, [self.source.fresh() for _ in range(num_new)])

    # fork, free: shared, see tests/memory_shadow.py; these hooks add the cache model's part.
    def check_fork(self, child: SeqId) -> None:
        assert self.bm.num_cached_tokens(child) == 0

    def on_free(self, seq_id: SeqId, swapped: bool, released: list[int]) -> None:
        if not swapped:
            self.cache.release_cached(released[::-1])  # cached blocks are a prefix: tail first
        self.cached_tokens.pop(seq_id, None)

    @rule(data=st.data(), seq_id=SEQS)
    def swap(self, data: st.DataObject, seq_id: SeqId) -> None:
        bm = self.bm
        swapped = self.swapped[seq_id]
        fam = data.draw(st.permutations(self.family(seq_id)))
        tables = {s: bm.block_table(s) for s in fam}
        refs: dict[int, int] = {}
        depth: dict[int, int] = {}
        for s in fam:
            for i, b in enumerate(tables[s]):
                refs[b] = refs.get(b, 0) + 1
                if not swapped and bm.is_cached(b):
                    depth[b] = i
        src_rc = bm.cpu_refcount if swapped else bm.refcount
        old_rc = {b: src_rc(b) for b in refs}
        free, plain = bm.num_free_gpu_blocks, self.cache.plain_free(bm)
        can = bm.can_swap_in(fam) if swapped else bm.can_swap_out(fam)
        before = self.snapshot()
        try:
            mapping = bm.swap_in(fam) if swapped else bm.swap_out(fam)
        except NoFreeBlocksError:
            assert not can and self.snapshot() == before
            return
        if not swapped:
            assert can  # exact without a watermark
        assert set(mapping) == set(refs) and len(set(mapping.values())) == len(refs)
        for s in fam:
            assert bm.block_table(s) == [mapping[b] for b in tables[s]]
            self.swapped[s] = not swapped
        if swapped:
            assert all(bm.refcount(t) == old_rc[b] and not bm.is_cached(t) for b, t in mapping.items())
            assert bm.num_free_gpu_blocks == free - len(refs)
            self.cache.evict(max(0, len(refs) - len(plain)))
            self.copy(mapping, True, set(mapping))
            self.counts["into"] += len(mapping)
            return
        for b, twin in mapping.items():
            assert bm.cpu_refcount(twin) == refs[b] and bm.refcount(b) == old_rc[b] - refs[b]
        released = [b for b in refs if old_rc[b] == refs[b]]
        self.cache.release_cached(sorted((b for b in released if b in depth), key=depth.__getitem__,
                                         reverse=True), together=False)  # one reference dropped at a time
        self.copy(mapping, False, {b for b in released if b not in self.cache.chain_of})
        self.counts["out"] += len(mapping)

    # swap_part_of_family: shared, see tests/memory_shadow.py

    def check_misuse(self, kind: str, calls: list[tuple[Any, tuple]]) -> None:
        """Each call must raise `ValueError` and change nothing."""
        before = self.snapshot()
        for op, args in calls:
            try:
                op(*args)
            except ValueError:
                pass
            else:
                raise AssertionError(f"misuse {kind}: {op.__name__}{args} did not raise")
        assert self.snapshot() == before

    @rule(kind=st.sampled_from(["too_many", "unhashable", "string", "negative"]))
    def bad_keys(self, kind: str) -> None:
        bm = self.bm
        num_tokens, keys = {"too_many": (2 * self.bs - 1, [0, 0]), "unhashable": (self.bs, [[0]]),
                            "string": (2 * self.bs, "ab"), "negative": (-1, None)}[kind]
        self.check_misuse(kind, [(bm.can_allocate, (num_tokens, keys)),
                                 (bm.num_blocks_to_allocate, (num_tokens, keys)),
                                 (bm.allocate, (("new",), num_tokens, keys))])

    @rule(data=st.data())
    def look_up_a_head(self, data: st.DataObject) -> None:
        """Compact keys asked for fewer blocks than the memo may hold, or more."""
        if self.chains:
            keys = data.draw(st.sampled_from(list(self.chains)))
            n = data.draw(st.integers(0, len(keys)))
            assert self.bm.find_cached_prefix(self.compact(list(keys), n)) == self.cache.hits(list(keys[:n]))

    @rule(data=st.data(), compact=st.booleans())
    def touch_a_prefix(self, data: st.DataObject, compact: bool) -> None:
        """A cached prefix used without being taken (SGLang's LRU refresh of a waiting request's prefix):
        its evictable blocks join the LRU tail, deepest first; nothing else changes."""
        if not self.used_keys:
            return
        keys = data.draw(st.sampled_from(self.used_keys))
        keys = keys[:data.draw(st.integers(0, len(keys)))] + data.draw(st.lists(KEYS, max_size=1))
        free = [b for b in self.cache.hits(keys) if self.bm.refcount(b) == 0]
        assert self.bm.touch_cached_prefix(self.compact(keys, len(keys)) if compact else keys) == len(free)
        self.cache.touch(free)

    @rule(seq_id=SEQS)
    def duplicate_allocate(self, seq_id: SeqId) -> None:
        self.check_misuse("dup", [(self.bm.allocate, (seq_id, 0))])

    # ---- invariants --------------------------------------------------------------------------------
    def check_seq(self, seq_id: SeqId, toks: list[int], table: list[int], slots: list[int]) -> None:
        assert self.bm.num_cached_tokens(seq_id) == self.cached_tokens.get(seq_id, 0)

    @invariant()
    def manager_matches_both_models(self) -> None:
        bm, bs = self.bm, self.bs
        self.check_slots_and_refcounts()  # the slot model
        self.cache.check(bm)  # the cache model
        for keys, (shared, chain) in self.chains.items():  # from the memo, after this step's changes
            assert bm.find_cached_prefix(ChainKeys(shared, len(shared), chain)) == self.cache.hits(shared)
        for chain, block in self.cache.block_of.items():  # a cached block holds its chain's tokens, evictable too
            assert self.mem[False].get(block * bs) == self.source.of_chain[chain, 0]
        c = self.counts
        assert (bm.num_cow_copies, bm.num_swapped_out_blocks, bm.num_swapped_in_blocks) == (
            c["cow"], c["out"], c["into"])

    def check_empty(self) -> None:
        assert self.bm.num_cached_blocks == len(self.cache.chain_of)  # every cached block is evictable now


TestPrefixCacheMachine = PrefixCacheMachine.TestCase
TestPrefixCacheMachine.settings = settings(stateful_step_count=80)
