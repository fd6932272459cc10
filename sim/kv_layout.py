"""`KVLayout`: the one interface between the scheduler and KV memory, implemented in full by every layout.

`PagedKV` (vLLM's blocks on demand, sharing, copy-on-write, swap, prefix caching), `ChunkedPagedKV`
(the same allocated per scheduled chunk, as vLLM V1 and SGLang do), `ReservedKV`
(static's up-front reservations) and `ContiguousKV` (Orca's contiguous per-request buffers from a buddy
allocator, with external fragmentation) implement every method; where a layout has nothing to do the
method is a real no-op (a reservation never grows, so a decode step takes no block; nothing is shared, so
`logical` equals the blocks used). The scheduler therefore never asks which layout it holds; layouts are
chosen by name from `sim.kv_layouts.LAYOUTS` ("paged-per-chunk" for a policy that allocates per chunk).

Decoding sequences are lazy (`state.Seq`): the layout keeps O(1) sums over them, so a decode step's
context and KV token count cost nothing per sequence. `counts[r]` is how many lazy sequences take a new
block at decode steps `g = r (mod block_size)`, `growing = sum(counts)`: a run of decode steps needs
`sum(counts[(g + i) % block_size])` blocks, known without touching a sequence (all zero when decoding
takes no memory).
"""
from __future__ import annotations

from typing import Hashable, Protocol, Sequence

from memory import AllocStatus, BlockManager

from sim.state import Group, Seq


class KVLayout(Protocol):
    bm: BlockManager
    bs: int                 # tokens per block
    counts: list[int]       # lazy sequences taking a block at decode steps = r (mod bs)
    lazy_b: int             # lazy (decoding) sequences
    step_copies: int        # copy-on-write block copies of the current step (reset by the scheduler)

    # ---- requests and admission --------------------------------------------------------------------
    def assign_block_keys(self, group: Group, request_key: Hashable, prefix_group: Hashable | None,
                          prefix_tokens: int, hash_ids: Sequence[int] | None) -> None:
        """On arrival: the prompt's prefix-cache keys (a no-op without a prefix cache)."""

    def never_fits(self, group: Group) -> str | None:
        """Why the request can never be held by this pool, or None."""

    def status(self, group: Group) -> AllocStatus:
        """Whether the group's (re)prefill can be allocated now (OK), later, or never."""

    def cached_tokens(self, group: Group) -> int:
        """Prompt tokens a (re)prefill admitted now would find computed in the prefix cache."""

    def touch_prefix(self, group: Group) -> None:
        """A waiting request's computed cached prefix is matched now without being taken (SGLang's LRU
        refresh): its evictable blocks become the most recently used. A no-op without a prefix cache."""

    def evictable_prefix_blocks(self, group: Group) -> int:
        """Blocks of the computed cached prefix `cached_tokens` counts that are free now (evictable, held by no
        request): SGLang's budget check pins them, so they are not free to the request itself. 0 without a
        prefix cache."""

    def allocate(self, group: Group) -> int:
        """Memory for the group's (re)prefill at admission; returns the prompt tokens found computed
        (skipped). A layout that allocates per chunk takes only the prefix hits here."""

    def chunk_need(self, group: Group, tokens: int) -> int:
        """Blocks `allocate_chunk` would take for a scheduled prefill chunk of `tokens` (0 where admission
        already took the whole prefill: reservations, and paged layouts of the V0-style policies)."""

    def allocate_chunk(self, group: Group, tokens: int) -> bool:
        """Memory for one scheduled prefill chunk (vLLM V1, SGLang: blocks for the chunk only, step by step);
        False, taking nothing, if the pool is short. A no-op returning True where admission already took
        the whole prefill."""

    # ---- prefill progress --------------------------------------------------------------------------
    def begin_prefill(self, group: Group) -> None:
        """`group.prefill_len - group.prefill_done` tokens are allocated and not computed yet."""

    def computed(self, group: Group, tokens: int) -> None:
        """A prefill chunk of `tokens` ran (`group.prefill_done` already counts it)."""

    def abort_prefill(self, group: Group) -> None:
        """A chunked prefill was preempted before it finished: its uncomputed tokens go."""

    def share_samples(self, group: Group) -> None:
        """The (re)prefill finished: parallel samples/beams share its blocks (may mark the group dirty)."""

    def free(self, group: Group, g: int, cache_output: bool = True) -> None:
        """Release the group's memory at decode step g; a prefix cache keeps its computed blocks, its output's
        only with `cache_output` (SGLang's retraction frees the output uncached)."""

    def hold(self, group: Group, g: int) -> None:
        """The group finished at decode step g but keeps its memory (freed by a later `free`): its sequences
        stop growing."""

    # ---- decoding ------------------------------------------------------------------------------------
    @property
    def growing(self) -> int:
        """Lazy sequences whose decode steps take blocks (`sum(counts)`)."""

    def lazy_context(self, g: int) -> int: ...

    def join(self, seq: Seq, g: int) -> None: ...

    def sync_all(self, g: int) -> None:
        """Tell the block manager every lazy sequence's tokens up to decode step g (checks)."""

    def crossings(self, g: int) -> int:
        """Blocks the lazy sequences take in decode step g."""

    def reserve_bucket(self, g: int) -> None:
        """Take decode step g's blocks for the lazy sequences (after `crossings(g)` fit)."""

    def reserve_run(self, g_first: int, g_last: int) -> None:
        """Take decode steps g_first..g_last's blocks at once (the caller checked they fit)."""

    def steps_memory_allows(self, g1: int) -> int:
        """Step g1 (already reserved) plus the following decode steps whose blocks fit the free pool."""

    def group_need(self, group: Group, g: int) -> int:
        """New blocks the group's sequences take in decode step g."""

    def commit_group(self, group: Group, g: int) -> None:
        """Decode step g's slots for one group (after `group_need` fit)."""

    def drop_seq(self, seq: Seq) -> None:
        """Beam re-selection: a losing beam's memory goes."""

    def fork_seq(self, parent: Seq) -> Seq:
        """Beam re-selection: a new beam continuing `parent`."""

    # ---- swap ----------------------------------------------------------------------------------------
    def can_swap_out(self, group: Group) -> bool: ...

    def swap_out(self, group: Group, g: int) -> int:
        """Move the group to the CPU pool; returns the blocks moved."""

    def swap_in_status(self, group: Group) -> AllocStatus:
        """Whether the swapped group fits back now (OK), later, or never."""

    def swap_in(self, group: Group) -> int:
        """Bring the group back; returns the blocks moved."""

    def drop_swapped(self, group: Group) -> None:
        """A swapped group that will be recomputed instead: free its CPU blocks."""

    # ---- per-step figures and checks -----------------------------------------------------------------
    def used_blocks(self) -> int:
        """Blocks held (not free): what nobody else can allocate."""

    def logical_blocks(self) -> int:
        """Blocks the running sequences would hold without sharing."""

    def kv_tokens(self, g: int) -> int:
        """Slots holding a computed token at decode step g."""

    def reserved_slots(self) -> int:
        """Slots held for the running sequences (whole blocks, or exact reservations)."""

    def check(self, groups: Sequence[Group], g: int) -> None:
        """Assert the layout's bookkeeping against a recount over the running groups."""

    def summary(self) -> dict:
        """Run totals of the layout (prefix cache hits; zeros without a prefix cache)."""
