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
"""
from __future__ import annotations

from typing import Hashable, Sequence

from memory import BlockManager, PrefixCachingBlockManager
from memory.block_keys import hash_id_block_keys, prefix_group_block_keys

from sim.state import Group

MOONCAKE_HASH_BLOCK_TOKENS = 512


def request_block_keys(prompt: int, block_size: int, request_key: Hashable, prefix_group: Hashable | None,
                       prefix_tokens: int, hash_ids: Sequence[int] | None) -> list[Hashable]:
    """A request's cache keys, one per full prompt block but never the prompt's last token."""
    if hash_ids is not None:
        keys = hash_id_block_keys([int(h) for h in hash_ids], prompt, block_size, MOONCAKE_HASH_BLOCK_TOKENS)
    else:
        group = None if prefix_tokens <= 0 else prefix_group
        keys = prefix_group_block_keys(prompt, block_size, request_key, group, max(int(prefix_tokens), 0))
    return keys[:max(prompt - 1, 0) // block_size]


class NoPrefixCache:
    """Prefix caching off: every prompt block is allocated and computed (the null `PrefixCache`)."""

    def __init__(self, bm: BlockManager, block_size: int) -> None:
        self.bm = bm

    def assign_block_keys(self, group: Group, request_key: Hashable, prefix_group: Hashable | None,
                          prefix_tokens: int, hash_ids: Sequence[int] | None) -> None:
        return None

    def blocks_saved(self, group: Group) -> int:
        return 0

    def cached_tokens(self, group: Group) -> int:
        return 0

    def allocate(self, sid: int, group: Group) -> int:
        self.bm.allocate(sid, group.prompt)
        return 0

    def progress(self, group: Group) -> None:
        return None

    def summary(self) -> dict:
        return no_prefix_summary()


class PrefixCache:
    """The engine's view of the block manager's prefix cache: which hits are computed, hit counters."""

    def __init__(self, bm: PrefixCachingBlockManager, block_size: int) -> None:
        self.bm, self.bs = bm, block_size
        self.pending: dict[int, None] = {}  # registered blocks whose KV no prefill has computed yet
        self.query_tokens = 0  # prompt tokens allocated (first prefills and recomputes)
        self.hit_tokens = 0    # ... whose prefill was skipped
        self.hits = 0          # allocations with at least one reused block

    def assign_block_keys(self, group: Group, request_key: Hashable, prefix_group: Hashable | None,
                          prefix_tokens: int, hash_ids: Sequence[int] | None) -> None:
        group.block_keys = request_block_keys(group.prompt, self.bs, request_key, prefix_group, prefix_tokens,
                                              hash_ids)

    def plan(self, group: Group) -> tuple[list[Hashable], int]:
        """The keys to allocate with, and how many leading blocks are computed hits."""
        keys = group.block_keys
        hits = self.bm.find_cached_prefix(keys)
        pending, ready = self.pending, 0
        while ready < len(hits) and hits[ready] not in pending:
            ready += 1
        if ready < len(hits):
            refcount = self.bm.refcount
            if any(refcount(b) for b in hits[ready:]):  # still being prefilled by a live holder
                keys = keys[:ready]
        return keys, ready

    def blocks_saved(self, group: Group) -> int:
        """Prompt blocks the allocation would not take from the free pool."""
        keys, _ = self.plan(group)
        return -(-group.prompt // self.bs) - self.bm.num_blocks_to_allocate(group.prompt, keys)

    def cached_tokens(self, group: Group) -> int:
        """Prompt tokens the group's (re)prefill would skip if allocated now."""
        return self.plan(group)[1] * self.bs

    def allocate(self, sid: int, group: Group) -> int:
        """Allocate the prompt through the cache; returns the tokens whose prefill is skipped."""
        keys, ready = self.plan(group)
        self.bm.allocate(sid, group.prompt, keys)
        bs, table = self.bs, self.bm.block_table(sid)
        # Orphaned pending hits and newly registered blocks: this prefill computes them.
        group.pending = [((i + 1) * bs, table[i]) for i in range(ready, len(keys))]
        for _, block in group.pending:
            self.pending[block] = None
        self.query_tokens += group.prompt
        if ready:
            self.hits += 1
            self.hit_tokens += ready * bs
        return ready * bs

    def progress(self, group: Group) -> None:
        """The group's prefill has computed `prefill_done` tokens: the blocks they cover are real."""
        done, todo, i = group.prefill_done, group.pending, 0
        while i < len(todo) and todo[i][0] <= done:
            self.pending.pop(todo[i][1], None)
            i += 1
        del todo[:i]

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
