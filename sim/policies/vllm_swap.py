"""`vllm-swap`: `vllm-v0` with `preemption_mode="swap"` (vllm/core/scheduler.py:1543-1547 @v0.6.6.post1): every
victim is swapped, single-sequence requests too (vLLM V1 has no swap space; its `vllm` preempts by recompute
only). The newest running request's blocks move to the CPU pool (`swap_space_gib`), costed by host
bandwidth, and come back before any new prefill once the GPU pool has room above the watermark. Where the
CPU pool is full, V0 aborts (:1605-1610); the replay recomputes that victim instead and counts it
(`swap_space_exhausted` in the summary)."""
from __future__ import annotations

from sim.policies.vllm_v0 import VllmV0Policy
from sim.state import SWAP


class VllmSwapPolicy(VllmV0Policy):
    name = "vllm-swap"
    preemption = SWAP
    settings = VllmV0Policy.settings | {"swap_space_gib"}
