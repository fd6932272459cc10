"""`vllm-swap`: `vllm` with swap preemption. The newest running request's blocks move to the CPU pool
(`swap_space_gib`), costed by host bandwidth, and come back before any new prefill once the GPU pool has
room above the watermark. Falls back to recompute when the CPU pool is full."""
from __future__ import annotations

from sim.policies.vllm import VllmPolicy
from sim.state import SWAP


class VllmSwapPolicy(VllmPolicy):
    name = "vllm-swap"
    preemption = SWAP
