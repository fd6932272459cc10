"""Moving whole families of forked sequences between the GPU and CPU pools.

Sequences forked from one another share blocks. They can only move together: moving part of a family
would have to split a shared block into two copies, silently breaking the sharing (and doubling its
memory). A block's refcount tells whether the request holds all of its references, so the check costs
O(blocks of the requested sequences) and needs no family bookkeeping. A block the pool caches by content
(prefix caching) is full and immutable, so it may be held outside the request: its copy cannot diverge.
"""
from __future__ import annotations

from typing import Callable, Iterable

from memory.block_allocator import BlockPool
from memory.types import BlockMapping, SeqBlocks, SeqId


def collect_family(
    seq_ids: Iterable[SeqId],
    where: dict[SeqId, SeqBlocks],
    pool: BlockPool,
    what: str,
    missing: Callable[[SeqId, str], Exception],
) -> tuple[dict[SeqId, SeqBlocks], dict[int, int], list[int]]:
    """The requested sequences, per distinct block its references among them, and the (cached) blocks
    also held outside the request. Raises `ValueError` for a duplicate, a sequence not in `where`, or an
    uncached block also held outside the request."""
    seqs: dict[SeqId, SeqBlocks] = {}
    for seq_id in seq_ids:
        if seq_id in seqs:
            raise ValueError(f"{what}: sequence {seq_id!r} listed twice")
        if seq_id not in where:
            raise missing(seq_id, what)
        seqs[seq_id] = where[seq_id]
    refs: dict[int, int] = {}
    for seq in seqs.values():
        for block in seq.blocks:
            refs[block] = refs.get(block, 0) + 1
    refcounts, kept = pool.refcounts, []
    for block, count in refs.items():
        if count == refcounts[block]:
            continue
        if pool.is_cached(block):
            kept.append(block)
        else:
            # Error path only: name the family members left behind (a scan of all sequences).
            others = sorted(repr(s) for s, q in where.items() if s not in seqs and block in q.blocks)
            raise ValueError(
                f"{what}: block {block} is shared with {', '.join(others)} outside the request; "
                f"a family of forked sequences must move together"
            )
    return seqs, refs, kept


def move_family(
    seqs: dict[SeqId, SeqBlocks],
    refs: dict[int, int],
    src_seqs: dict[SeqId, SeqBlocks],
    dst_seqs: dict[SeqId, SeqBlocks],
    src: BlockPool,
    dst: BlockPool,
) -> BlockMapping:
    """Give each distinct block one twin in `dst` with the request's references, drop those references
    from the original, and rewrite the tables. The caller has checked that `dst` has `len(refs)` free
    blocks."""
    mapping: BlockMapping = dict(zip(refs, dst.allocate_with_refcounts(list(refs.values()))))
    src.release_refs(refs, seqs.values())  # before the tables change: a caching pool reads them
    for seq_id, seq in seqs.items():
        seq.blocks = [mapping[b] for b in seq.blocks]
        dst_seqs[seq_id] = src_seqs.pop(seq_id)
    return mapping
