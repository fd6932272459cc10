"""Full consistency checks of a running engine (tests turn them on with `EngineConfig(check_every=N)`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from sim.state import DECODE, PREFILL, WAITING

if TYPE_CHECKING:
    from sim.engine import Engine


def check_engine(engine: "Engine", final: bool = False) -> None:
    """The block manager's invariants, and the engine's running counters against a recount."""
    kv = engine.kv
    kv.sync_all(engine.G)
    kv.bm.check_invariants()
    assert kv.used_blocks() <= kv.bm.num_gpu_blocks
    if kv.memory == "paged":
        seqs = [s for grp in engine.running if grp.state == DECODE or grp.state == PREFILL for s in grp.seqs]
        assert kv.logical == sum(kv.bm.num_blocks(s.sid) for s in seqs), "logical block count drifted"
        lazy = [s for s in seqs if s.phase >= 0]
        assert all(kv.bm.num_tokens(s.sid) == s.length for s in lazy), "lazy sequence out of sync"
        assert kv.lazy_b == len(lazy) == sum(kv.counts)
    assert engine.decode_seqs == sum(len(grp.seqs) for grp in engine.running if grp.state == DECODE)
    if final:
        assert not engine.running and not engine.waiting and not engine.swapped
        assert kv.used_blocks() == 0 and kv.kv_tokens(engine.G) == 0
    assert all(grp.state == WAITING for grp in engine.waiting)
