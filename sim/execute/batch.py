"""`ExecBatch`: the exact picture of one engine step for the executor, read from the scheduler's state.

Layout as vLLM's: prefill slices first, then one token per decoding sequence. A slice is `q_len` new
tokens at the end of `seq_len` cached ones in one sequence's block table. A request's (re)prefill is
`prompt + n * generated` tokens (see `PolicyVerbs.prefill_tokens`): the prompt goes through the first
sequence, and each sample's restored tokens through its own sequence. Prompt tokens are also written
into every other sequence of the request whose slot differs (a recompute's copied partial block, or
the separate regions of reserved memory): `extra_*`.

Lazy decoding sequences are read, not synced: at decode step g a lazy sequence holds
`length + g - synced_g` tokens, and its block table already covers them (`PagedKV.reserve_bucket`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from sim.execute.lineage import prompt_owner
from sim.scheduler_output import RunningView, SchedulerOutput
from sim.state import DECODE, Group

if TYPE_CHECKING:
    from memory import BlockManager


@dataclass(slots=True)
class SeqSlice:
    """`q_len` new tokens ending a sequence of `seq_len` cached tokens (after this step's writes)."""

    sid: int
    request: int
    table: list[int]
    seq_len: int
    q_len: int


@dataclass
class ExecBatch:
    prefills: list[SeqSlice] = field(default_factory=list)
    decodes: list[SeqSlice] = field(default_factory=list)
    owners: list[np.ndarray] = field(default_factory=list)     # per new token, in batch order
    positions: list[np.ndarray] = field(default_factory=list)
    slots: list[np.ndarray] = field(default_factory=list)
    extra_tokens: list[np.ndarray] = field(default_factory=list)  # batch index of a prompt token ...
    extra_slots: list[np.ndarray] = field(default_factory=list)   # ... and another slot it goes to
    sample_tokens: list[int] = field(default_factory=list)        # batch indices whose logits are computed
    groups: dict[int, Group] = field(default_factory=dict)        # sid -> group, for lineage roots

    @property
    def num_prefill_tokens(self) -> int:
        return sum(s.q_len for s in self.prefills)

    @property
    def num_tokens(self) -> int:
        return self.num_prefill_tokens + len(self.decodes)


def slots_of(table: list[int], block_size: int, start: int, end: int) -> np.ndarray:
    """Physical slots of positions [start, end) through a block table."""
    pos = np.arange(start, end, dtype=np.int64)
    blocks = np.asarray(table, dtype=np.int64)[pos // block_size]
    return blocks * block_size + pos % block_size


def build_exec_batch(scheduler: RunningView, out: SchedulerOutput) -> ExecBatch:
    """The step about to run: its prefill chunks (before `prefill_done` advances), then its decodes."""
    bm, bs, g_now = scheduler.block_manager, scheduler.bs, out.g
    batch = ExecBatch()
    for group, q in out.prefills:
        _add_prefill(batch, bm, bs, group, q)
    if out.num_decode_seqs:
        base = batch.num_prefill_tokens
        for group in scheduler.running:
            if group.state != DECODE:
                continue
            for seq in group.seqs:
                length = seq.length + (g_now - seq.synced_g) if seq.phase >= 0 else seq.length
                table = bm.block_table(seq.sid)
                assert len(table) * bs >= length, f"sequence {seq.sid}: blocks do not cover its {length} tokens"
                t = base + len(batch.decodes)
                batch.decodes.append(SeqSlice(seq.sid, group.idx, table, length, 1))
                batch.owners.append(np.array([seq.sid], dtype=np.int64))
                batch.positions.append(np.array([length - 1], dtype=np.int64))
                batch.slots.append(slots_of(table, bs, length - 1, length))
                batch.sample_tokens.append(t)
                batch.groups[seq.sid] = group
        assert len(batch.decodes) == scheduler.decode_seqs, "decode batch differs from the scheduler's count"
    return batch


def _add_prefill(batch: ExecBatch, bm: "BlockManager", bs: int, group: Group, q: int) -> None:
    c, prompt, generated = group.prefill_done, group.prompt, group.generated
    seqs = group.seqs
    for seq in seqs:
        batch.groups[seq.sid] = group
    tables = [bm.block_table(s.sid) for s in seqs]
    first_token = batch.num_prefill_tokens
    # The prompt's share of the chunk, through the first sequence.
    a, b = c, min(c + q, prompt)
    if b > a:
        slots = slots_of(tables[0], bs, a, b)
        _append_slice(batch, SeqSlice(seqs[0].sid, group.idx, tables[0], b, b - a),
                      np.full(b - a, prompt_owner(group.idx), dtype=np.int64), a, slots)
        for table in tables[1:]:
            other = slots_of(table, bs, a, b)
            differ = np.flatnonzero(other != slots)
            if differ.size:
                batch.extra_tokens.append(first_token + differ)
                batch.extra_slots.append(other[differ])
    # Each sample's restored tokens (after a recompute preemption), through its own sequence.
    if generated:
        for j, seq in enumerate(seqs):
            lo = prompt + j * generated
            a2, b2 = max(c, lo), min(c + q, lo + generated)
            if b2 > a2:
                start, end = prompt + a2 - lo, prompt + b2 - lo
                _append_slice(batch, SeqSlice(seq.sid, group.idx, tables[j], end, end - start),
                              np.full(end - start, seq.sid, dtype=np.int64), start,
                              slots_of(tables[j], bs, start, end))
    if c + q == group.prefill_len:
        # The step samples each sample's next token from the chunk's last position (n rows, as costed).
        batch.sample_tokens.extend([batch.num_prefill_tokens - 1] * group.n)


def _append_slice(batch: ExecBatch, piece: SeqSlice, owners: np.ndarray, start: int, slots: np.ndarray) -> None:
    assert not batch.decodes, "prefill slices come before decode tokens"
    batch.prefills.append(piece)
    batch.owners.append(owners)
    batch.positions.append(np.arange(start, start + piece.q_len, dtype=np.int64))
    batch.slots.append(slots)
