"""Per-chunk KV allocation (vLLM V1, SGLang): a (re)prefill holds its prefix hits and the chunks scheduled so far.

V1 allocates a request's blocks step by step, for the tokens scheduled in that step
(`vllm/v1/core/kv_cache_manager.py` `allocate_slots`, 551-588; admission takes only the computed prefix
hits, 266-328), not the whole prompt at admission as `sim.kv_paged.PagedKV` does. SGLang 0.5.23 does the
same: a new request takes its matched prefix, and each prefill batch allocates only the tokens it extends,
the chunked request's chunk included (`alloc_for_extend`, mem_cache/allocation.py:374-489). One sequence
holds the (re)prefill: V1 runs every parallel sample as its own request, and a beam group (SGLang's
scheduler) forks its beams from it once the prefill is done (`share_samples`), as SGLang's beam leader
prefills alone and its member rows alias its prompt KV (beam_search/fork.py:1-28, coordinator.py:293-351).
Full prompt blocks are cached as their chunk is allocated (V1, 616-625); a request's private blocks are
registered when released (`sim.kv_prefix`). SGLang inserts a chunk into its radix tree only when it schedules
the next batch (`checkpoint_kv_cache`, managers/scheduler.py:3911-3919, mem_cache/common.py:271-281);
`sim.policies.sglang` allocates a pass's chunks after choosing its requests, as SGLang does, so no request of
that pass finds them and the next pass does, computed: the same hits as caching them then.
"""
from __future__ import annotations

from typing import Hashable, Sequence

from memory import BlockManager
from memory.block_keys import ChainKeys, PrivateChain

from sim.config import EngineConfig
from sim.kv_paged import PagedKV
from sim.state import Group, Seq


class ChunkedPagedKV(PagedKV):
    """`PagedKV` with per-chunk allocation. Implements `sim.kv_layout.KVLayout`."""

    def __init__(self, config: EngineConfig, swap: bool, block_manager_cls: type[BlockManager] = BlockManager,
                 credit_live_hits: bool = True, watermark_while_idle: bool = True) -> None:
        super().__init__(config, swap, block_manager_cls, credit_live_hits, watermark_while_idle)
        self.chunk_keys: dict[int, tuple[Sequence[Hashable], int]] = {}  # sid -> (keys, blocks registered)

    def allocate(self, group: Group) -> int:
        """Admission: the request's computed prefix hits, nothing else (V1 kv_cache_manager.py:266-328; SGLang
        locks its matched prefix, schedule_policy.py:1685-1690); the chunks take their blocks in
        `allocate_chunk`. Returns the tokens found computed."""
        # A forked group's recompute restores each sample's own tokens, which one sequence cannot hold; neither
        # engine has one (V1 runs samples as requests, SGLang aborts a beam group rather than retract it).
        assert group.n == 1 or not group.generated, "per-chunk allocation cannot recompute a forked group"
        seq = Seq(self.new_sid(), 0)
        keys, ready = self.prefix.allocate_hits(seq.sid, group)
        if keys is not None:
            self.chunk_keys[seq.sid] = (keys, ready)
        cached = ready * self.bs
        seq.length = cached
        self.logical += -(-cached // self.bs)  # the blocks of its hits
        group.seqs, group.pending = [seq], []
        return cached

    # ---- beam search as rounds of requests (sim.v1_beam_search) ------------------------------------------
    def beam_prompt_keys(self, group: Group, request_key: Hashable, prefix_group: Hashable | None,
                         prefix_tokens: int, hash_ids: Sequence[int] | None) -> tuple[Hashable, ...] | None:
        """The cache keys of every full block of a beam-search request's prompt, the last one included (its
        rounds' prompts run past it); None with prefix caching off."""
        return self.prefix.prompt_keys(group, request_key, prefix_group, prefix_tokens, hash_ids)

    def assign_beam_keys(self, group: Group, keys: tuple[Hashable, ...],
                         chain: PrivateChain | None) -> PrivateChain:
        """A round's request: `keys` name every full block of its prompt (the user's prompt and the beam's
        tokens); it looks up all but a last one holding its last token (V1 never hits a prompt's last token,
        kv_cache_manager.py:295-302), and registers that one too once computed (`free`).

        Every request with these `keys` (this round's beams and the next rounds' that filled no block) shares
        one `chain` (returned; a new one if None), on which the cache remembers its answer for them
        (`memory.chain_registry.ChainRegistry.match_chain`); no private block is ever registered on it."""
        chain = PrivateChain(("beam", group.idx)) if chain is None else chain
        group.block_keys = ChainKeys(keys, max(group.prompt - 1, 0) // self.bs, chain)
        return chain

    def chunk_need(self, group: Group, tokens: int) -> int:
        """Blocks `allocate_chunk(group, tokens)` takes: ceil((allocated + tokens) / block_size) less the
        blocks held (V1 allocate_slots, kv_cache_manager.py:551-588)."""
        seq = group.seqs[0]
        return -(-(seq.length + tokens) // self.bs) - self.bm.num_blocks(seq.sid)

    def allocate_chunk(self, group: Group, tokens: int) -> bool:
        """Slots for a scheduled prefill chunk of `tokens`; False (nothing taken) if the free pool is short.
        Full prompt blocks are cached as they are allocated (kv_cache_manager.py:616-625): a request
        scheduled later in the same step already hits them (each layer writes the step's new K/V into the
        cache before its attention reads it), so they are never pending."""
        need = self.chunk_need(group, tokens)
        bm, seq = self.bm, group.seqs[0]
        if need > bm.num_free_gpu_blocks:
            return False
        bm.append_slots(seq.sid, tokens)
        seq.length += tokens
        self.logical += need
        self.uncomputed += tokens
        entry = self.chunk_keys.get(seq.sid)
        if entry is not None:
            keys, done = entry
            full = min(len(keys), seq.length // self.bs)
            if self.prefix.lazy:  # private blocks are registered on release (only this request looks them up)
                full = min(full, keys.num_shared)
            if full > done:
                start, added = bm.cache_full_blocks(seq.sid, keys.head(full))
                if start + len(added) < full:  # another request cached that content first: ours stays private
                    del self.chunk_keys[seq.sid]
                else:
                    self.chunk_keys[seq.sid] = (keys, full)
        return True

    def begin_prefill(self, group: Group) -> None:
        return None  # each chunk counts its own tokens uncomputed as it is allocated

    def abort_prefill(self, group: Group) -> None:
        self.uncomputed -= group.seqs[0].length - group.prefill_done  # chunks allocated in this step, not run

    def free(self, group: Group, g: int, cache_output: bool = True) -> None:
        for seq in group.seqs:
            self.chunk_keys.pop(seq.sid, None)
        self._cache_unlooked_blocks(group)
        super().free(group, g, cache_output)

    def _cache_unlooked_blocks(self, group: Group) -> None:
        """Keyed full blocks past those the request could look up (a beam round's last prompt block,
        `assign_beam_keys`), once computed: V1 caches every full computed block of the request
        (kv_cache_manager.py:617-627) and the next round finds it, so it is registered reachable here,
        before the release caches a finished request's blocks unreachable."""
        keys = group.block_keys
        if type(keys) is not ChainKeys or len(keys.shared) <= len(keys) or not group.seqs:
            return
        sid = group.seqs[0].sid
        computed = min(len(keys.shared), group.prefill_done // self.bs, self.bm.num_tokens(sid) // self.bs)
        if computed > len(keys):
            self.bm.cache_full_blocks(sid, keys.head(computed))
