"""Automatic prefix caching for `PagedKV` (`EngineConfig(enable_prefix_caching=True)`).

The simulator has no token ids, so each request's full prompt blocks are keyed from its trace fields
(`memory.block_keys`): Mooncake `hash_ids` when the trace has them, else its shared-prefix group (blocks
inside the group's `prefix_tokens` are the group's, the rest the request's own, so a recompute after
preemption finds its own prompt). The keys stop one token short of the prompt, so a prefill always
computes at least one token (the one that samples the first output token, as vLLM).

A hit only counts once the KV of those blocks is computed: blocks a (re)prefill registered are *pending*
until a chunk of that prefill covering them has run (a step plans after the previous step ended, so the
step that computes them has completed). A prompt whose cached prefix runs into pending blocks still being
prefilled by their holder reuses only the computed blocks before them and allocates the rest privately,
unregistered (no waiting on another request's prefill). Pending blocks whose holder was preempted before
computing them (orphans, unreferenced) are taken over: the new request computes and owns them.

Cost: keys are `memory.block_keys.ChainKeys` - a prefix group's shared keys are one tuple for all its
requests, a request's own blocks have no key object and no registry entry. Its own blocks can be looked
up only by itself after it released them (a recompute), so they are registered on release, not at
allocation (`PrefixCache.lazy`; same lookups, free queue and evictions), and a finished request's blocks
are cached unreachable - or left plain while no reachable cached block is free (`memory.evictor`).
"""
from __future__ import annotations

from typing import Hashable, Sequence

from memory import BlockManager, PrefixCachingBlockManager
from memory.block_keys import ChainKeys, PrivateChain, hash_id_block_keys

from sim.state import Group

MOONCAKE_HASH_BLOCK_TOKENS = 512


def request_block_keys(prompt: int, block_size: int, request_key: Hashable, prefix_group: Hashable | None,
                       prefix_tokens: int, hash_ids: Sequence[int] | None,
                       group_keys: dict | None = None) -> ChainKeys:
    """A request's cache keys, one per full prompt block but never the prompt's last token: the shared
    ones (its prefix group's blocks, or its Mooncake hash ids) and then its own, private ones
    (`memory.block_keys.ChainKeys`; listed, `("own", request_key, i)`). `group_keys` memoizes a prefix
    group's key list across its requests. Hash ids come interned from the trace (`traces.validate`), so
    equal ids of two requests are one object and the cache compares their keys by pointer."""
    num_blocks = max(prompt - 1, 0) // block_size
    if hash_ids is not None:
        shared = hash_id_block_keys(list(map(int, hash_ids)), prompt, block_size, MOONCAKE_HASH_BLOCK_TOKENS)
        del shared[num_blocks:]  # its own list: cut in place
        return ChainKeys(shared, len(shared), PrivateChain(request_key))
    shared_blocks = min(max(int(prefix_tokens), 0) // block_size, prompt // block_size)
    if shared_blocks and prefix_group is not None:
        memo = {} if group_keys is None else group_keys
        shared = memo.get((prefix_group, shared_blocks))
        if shared is None:
            shared = memo[(prefix_group, shared_blocks)] = tuple(
                ("prefix", prefix_group, i) for i in range(shared_blocks))
    else:
        shared = ()
    return ChainKeys(shared, num_blocks, PrivateChain(request_key))


class NoPrefixCache:
    """Prefix caching off: every prompt block is allocated and computed (the null `PrefixCache`)."""

    hash_output = False

    def __init__(self, bm: BlockManager, block_size: int) -> None:
        self.bm = bm

    def assign_block_keys(self, group: Group, request_key: Hashable, prefix_group: Hashable | None,
                          prefix_tokens: int, hash_ids: Sequence[int] | None) -> None:
        return None

    def blocks_saved(self, group: Group) -> int:
        return 0

    def cached_tokens(self, group: Group) -> int:
        return 0

    def touch(self, group: Group) -> None:
        return None

    def evictable_hits(self, group: Group) -> int:
        return 0

    def allocate(self, sid: int, group: Group) -> int:
        self.bm.allocate(sid, group.prompt)
        return 0

    def allocate_hits(self, sid: int, group: Group) -> tuple[None, int]:
        self.bm.allocate(sid, 0)
        return None, 0

    def prompt_keys(self, group: Group, request_key: Hashable, prefix_group: Hashable | None,
                    prefix_tokens: int, hash_ids: Sequence[int] | None) -> None:
        return None

    def progress(self, group: Group) -> None:
        return None

    def release(self, group: Group, cache_output: bool = True) -> None:
        return None

    def summary(self) -> dict:
        return no_prefix_summary()


class PrefixCache:
    """The engine's view of the block manager's prefix cache: which hits are computed, hit counters."""

    def __init__(self, bm: PrefixCachingBlockManager, block_size: int, hash_output: bool = True,
                 lazy: bool | None = None) -> None:
        self.bm, self.bs = bm, block_size
        self.hash_output = hash_output
        # A request's private blocks can be looked up only by itself, and only once it has released them
        # (recompute): they are registered on release, which leaves every lookup, free-queue position and
        # eviction as registering them at allocation. Not with a CPU pool (swap-out releases differently).
        self.lazy = bm.num_cpu_blocks == 0 if lazy is None else lazy
        # Registered blocks whose KV no prefill has computed yet (by block id; stale flags of evicted
        # blocks are harmless: a block is flagged again whenever it is registered).
        self.pending = bytearray(bm.num_gpu_blocks)
        self.flagged = False  # whether any block was ever flagged pending (never under `vllm`'s per-chunk caching)
        self.group_keys: dict = {}  # memo of prefix groups' key lists
        self.query_tokens = 0  # tokens allocated (first prefills and recomputes: `tokens`)
        self.hit_tokens = 0    # ... whose prefill was skipped
        self.hits = 0          # allocations with at least one reused block

    def assign_block_keys(self, group: Group, request_key: Hashable, prefix_group: Hashable | None,
                          prefix_tokens: int, hash_ids: Sequence[int] | None) -> None:
        parent = group.parent
        if parent is None:
            group.block_keys = request_block_keys(group.prompt, self.bs, request_key, prefix_group, prefix_tokens,
                                                  hash_ids, self.group_keys)
            return
        # A child request (V1 parallel sampling): its whole keyed prompt is shared with its siblings (one
        # key list, kept on the parent, which never runs); only its own output is private.
        if parent.block_keys is None:
            keys = request_block_keys(parent.prompt, self.bs, request_key, prefix_group, prefix_tokens,
                                      hash_ids, self.group_keys)
            parent.block_keys = tuple(keys.listed())
        shared = parent.block_keys
        group.block_keys = ChainKeys(shared, len(shared), PrivateChain(("sample", group.idx)))

    def tokens(self, group: Group) -> int:
        """Tokens the (re)prefill allocates through the cache: the prompt, and a lone sample's own output
        when it is recomputed (its full blocks were cached, `hash_output`)."""
        if group.generated and group.n == 1 and self.hash_output:
            return group.prompt + group.generated
        return group.prompt

    def allocate_hits(self, sid: int, group: Group) -> tuple[ChainKeys, int]:
        """V1's admission: only the request's computed prefix hits are allocated (kv_cache_manager.py:266-328;
        its chunks take their blocks later). Returns its keys and its number of hit blocks."""
        keys, ready = self.plan(group)
        cached = ready * self.bs
        found = self.bm.allocate(sid, cached, keys.head(ready))
        assert found == cached, "the allocation found other hits than the lookup just before"
        self.query_tokens += group.prompt
        if ready:
            self.hits += 1
            self.hit_tokens += cached
        return keys, ready

    def prompt_keys(self, group: Group, request_key: Hashable, prefix_group: Hashable | None,
                    prefix_tokens: int, hash_ids: Sequence[int] | None) -> tuple[Hashable, ...]:
        """The keys of every full block of `group`'s prompt, the last one included."""
        keys = request_block_keys(group.prompt + 1, self.bs, request_key, prefix_group, prefix_tokens, hash_ids,
                                  self.group_keys)
        return tuple(keys.listed())

    def plan(self, group: Group) -> tuple[ChainKeys, int]:
        """The keys to allocate with, and how many leading blocks are computed hits."""
        keys, ready, _ = self._lookup(group)
        return keys, ready

    def _lookup(self, group: Group) -> tuple[ChainKeys, int, list[int]]:
        """`plan`, and the cached blocks the lookup found (the first `ready` are the computed hits)."""
        keys = group.block_keys
        tokens = self.tokens(group)
        if tokens > group.prompt:
            keys = keys.head((tokens - 1) // self.bs)
        hits = self.bm.find_cached_prefix(keys)
        ready = bytes(map(self.pending.__getitem__, hits)).find(1) if self.flagged else -1
        if ready >= 0:
            rc = self.bm.gpu_refcounts
            if max(map(rc.__getitem__, hits[ready:])):  # still being prefilled by a live holder
                keys = keys.head(ready)
        else:
            ready = len(hits)
        return keys, ready, hits

    def blocks_saved(self, group: Group) -> int:
        """Blocks the allocation would not take from the free pool."""
        keys, _ = self.plan(group)
        tokens = self.tokens(group)
        return -(-tokens // self.bs) - self.bm.num_blocks_to_allocate(tokens, keys)

    def cached_tokens(self, group: Group) -> int:
        """Tokens the group's (re)prefill would skip if allocated now."""
        return self.plan(group)[1] * self.bs

    def touch(self, group: Group) -> None:
        """The group's computed hits (those `cached_tokens` counts) are matched now, not taken: their
        evictable blocks become the most recently used, as SGLang's match refreshes a path's LRU time."""
        keys, ready = self.plan(group)
        if ready:
            self.bm.touch_cached_prefix(keys.head(ready))

    def evictable_hits(self, group: Group) -> int:
        """The group's computed hits (those `cached_tokens` counts) that no request holds: evictable blocks,
        counted free."""
        _, ready, hits = self._lookup(group)
        rc = self.bm.gpu_refcounts
        return sum(1 for block in hits[:ready] if not rc[block])

    def allocate(self, sid: int, group: Group) -> int:
        """Allocate the (re)prefill's tokens through the cache (`tokens`); returns the tokens whose
        prefill is skipped."""
        keys, ready = self.plan(group)
        lazy, tokens = self.lazy, self.tokens(group)
        hit = self.bm.allocate(sid, tokens, keys, lazy) // self.bs
        # Orphaned pending hits and newly registered blocks: this prefill computes them.
        end = max(hit, min(len(keys), keys.num_shared)) if lazy else len(keys)
        if ready < end:
            blocks = self.bm.block_table(sid)[ready:end]
            pending = self.pending
            for block in blocks:
                pending[block] = 1
            self.flagged = True
            group.pending = [ready, ready, blocks]  # next position to compute, first position, blocks
        self.query_tokens += tokens
        if ready:
            self.hits += 1
            self.hit_tokens += ready * self.bs
        return ready * self.bs

    def progress(self, group: Group) -> None:
        """The group's prefill has computed `prefill_done` tokens: the blocks they cover are real."""
        at, first, blocks = group.pending
        upto = min(group.prefill_done // self.bs, first + len(blocks))
        if upto <= at:
            return
        pending = self.pending
        for block in blocks[at - first:upto - first]:
            pending[block] = 0
        if upto == first + len(blocks):
            group.pending = []
        else:
            group.pending[0] = upto

    def release(self, group: Group, cache_output: bool = True) -> None:
        """Before the group's blocks are freed (it finished, or is preempted to be recomputed): its
        computed full blocks are cached - the private prompt blocks the allocation deferred, and with
        `hash_output` and `cache_output` its output (a recompute finds them; a finished request's stay
        cached unreachable, evicted in turn). Only what a (re)prefill computed counts: the last sampled
        token has no KV. A finished request's private blocks registered earlier (at allocation with a CPU
        pool, or at a preemption) become unreachable too: only the blocks others can hit stay countable."""
        finished = group.generated >= group.output
        self._cache_released(group, cache_output, finished)
        if finished and group.block_keys is not None:
            self.bm.forget_private(group.block_keys)
            group.block_keys = None  # nobody looks its keys up again

    def _cache_released(self, group: Group, cache_output: bool, finished: bool) -> None:
        seqs = group.seqs
        if not seqs or not (self.lazy or self.hash_output):
            return
        bm, bs, keys = self.bm, self.bs, group.block_keys
        prefilled = group.prefill_done >= group.prefill_len
        # A complete (re)prefill's sequence holds prompt + generated tokens, all but the last computed;
        # an interrupted one registers what its allocation keyed (pending where not computed).
        output = self.hash_output and cache_output
        if prefilled:
            tokens = group.prompt + group.generated if output else group.prompt
        else:
            tokens = self.tokens(group)
        if group.n == 1 and tokens > group.prompt:
            keys = keys.head(max((tokens - 1) // bs, len(keys)))
        full = bm.num_tokens(seqs[0].sid) // bs  # a request allocated chunk by chunk may hold less than its prompt
        if len(keys) > full:
            keys = keys.head(full)
        start, blocks = bm.cache_full_blocks(seqs[0].sid, keys, reachable=not finished)
        if blocks and not finished:
            done, pending = (group.prefill_done if not prefilled else 1 << 62) // bs, self.pending
            for i, block in enumerate(blocks, start):
                pending[block] = i >= done
            self.flagged = self.flagged or start + len(blocks) > done
        if output and prefilled and group.n > 1:
            # The samples' own output blocks (parallel sampling, beams): cached, never looked up (a
            # recompute restores them without the cache).
            keys = keys.head((tokens - 1) // bs)
            for seq in seqs:
                bm.cache_full_blocks(seq.sid, keys, False)

    def summary(self) -> dict:
        return {
            "prefix_hit_rate": self.hit_tokens / self.query_tokens if self.query_tokens else 0.0,
            "prefix_hit_tokens": self.hit_tokens,
            "prefix_hit_requests": self.hits,
            "prefix_cached_blocks": self.bm.num_cached_blocks,
            "prefix_evicted_blocks": self.bm.num_evicted_blocks,
        }


def no_prefix_summary() -> dict:
    return {"prefix_hit_rate": 0.0, "prefix_hit_tokens": 0, "prefix_hit_requests": 0, "prefix_cached_blocks": 0,
            "prefix_evicted_blocks": 0}
