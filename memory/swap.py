"""Moving whole families of forked sequences between the GPU and CPU pools.

Sequences forked from one another share blocks. They can only move together: moving part of a family
would have to split a shared block into two copies, silently breaking the sharing (and doubling its
memory). A block's refcount tells whether the request holds all of its references, so the check costs
O(blocks of the requested sequences) and needs no family bookkeeping.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from memory.block_allocator import BlockAllocator

if TYPE_CHECKING:
    from memory.block_manager import SeqId, _Seq


def collect_family(
    seq_ids: Iterable[SeqId],
    where: dict[SeqId, _Seq],
    pool: BlockAllocator,
    what: str,
    missing: Callable[[SeqId, str], Exception],
) -> tuple[dict[SeqId, _Seq], dict[int, int]]:
    """The requested sequences and, per distinct block, its references among them. Raises
    `ValueError` for a duplicate, a sequence not in `where`, or a block also held outside the request."""
    seqs: dict[SeqId, _Seq] = {}
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
    for block, count in refs.items():
        if count != pool._refcounts[block]:
            # Error path only: name the family members left behind (a scan of all sequences).
            others = sorted(repr(s) for s, q in where.items() if s not in seqs and block in q.blocks)
            raise ValueError(
                f"{what}: block {block} is shared with {', '.join(others)} outside the request; "
                f"a family of forked sequences must move together"
            )
    return seqs, refs


def move_family(
    seqs: dict[SeqId, _Seq],
    refs: dict[int, int],
    src_seqs: dict[SeqId, _Seq],
    dst_seqs: dict[SeqId, _Seq],
    src: BlockAllocator,
    dst: BlockAllocator,
) -> dict[int, int]:
    """Give each distinct block one twin in `dst` with the same refcount, release the original, and
    rewrite the tables. The caller has checked that `dst` has `len(refs)` free blocks."""
    mapping: dict[int, int] = {}
    for block, count in refs.items():
        twin = dst.allocate()
        for _ in range(count - 1):
            dst.incref(twin)
        for _ in range(count):
            src.decref(block)
        mapping[block] = twin
    for seq_id, seq in seqs.items():
        seq.blocks = [mapping[b] for b in seq.blocks]
        dst_seqs[seq_id] = src_seqs.pop(seq_id)
    return mapping
