"""A `BlockManager` that logs what the real KV cache must do: copy-on-write copies, swap copies, forks, frees.

The simulator's memory decisions stay exactly those of the plain block manager (this subclass only
records); the executor drains the log before each step it runs and turns it into kernel launches and
host/device copies, and into the token lineage the shadow check needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from memory import BlockManager
from memory.block_manager import Copies, SeqId


@dataclass
class Moves:
    """Everything logged since the last drain, in the order the executor must apply it."""

    swap_out: list[tuple[int, int]] = field(default_factory=list)   # (gpu block, cpu block)
    swap_in: list[tuple[int, int]] = field(default_factory=list)    # (cpu block, gpu block)
    cow: list[tuple[int, int]] = field(default_factory=list)        # (src gpu block, dst gpu block)
    # ("fork", parent, child, tokens the child shares) or ("free", sid, 0, 0), in call order
    lineage: list[tuple[str, SeqId, SeqId, int]] = field(default_factory=list)

    @property
    def moves_blocks(self) -> bool:
        return bool(self.swap_out or self.swap_in or self.cow)


class RecordingBlockManager(BlockManager):
    """`BlockManager` plus a log of the data movements and sequence lineage its calls imply."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log = Moves()

    def drain(self) -> Moves:
        log, self.log = self.log, Moves()
        return log

    def append_slots(self, seq_id: SeqId, num_new_tokens: int = 1) -> Copies:
        copies = super().append_slots(seq_id, num_new_tokens)
        if copies:
            self.log.cow.extend(copies)
        return copies

    def fork(self, parent_id: SeqId, child_id: SeqId) -> None:
        super().fork(parent_id, child_id)
        self.log.lineage.append(("fork", parent_id, child_id, self.num_tokens(parent_id)))

    def free(self, seq_id: SeqId) -> None:
        super().free(seq_id)
        self.log.lineage.append(("free", seq_id, 0, 0))

    def swap_out(self, seq_ids) -> dict[int, int]:
        mapping = super().swap_out(seq_ids)
        self.log.swap_out.extend(mapping.items())
        return mapping

    def swap_in(self, seq_ids) -> dict[int, int]:
        mapping = super().swap_in(seq_ids)
        self.log.swap_in.extend(mapping.items())
        return mapping
