"""`vllm-swap`: the V0 swap variant: `vllm-v0` with swap preemption (vLLM V1 has no swap space; its
`vllm` preempts by recompute only). The newest running request's blocks move to the CPU pool
(`swap_space_gib`), costed by host bandwidth, and come back before any new prefill once the GPU pool has
room above the watermark. Falls back to recompute when the CPU pool is full."""
from __future__ import annotations

from sim.policies.vllm_v0 import VllmV0Policy
from sim.state import SWAP


class VllmSwapPolicy(VllmV0Policy):
    name = "vllm-swap"
    preemption = SWAP
    settings = VllmV0Policy.settings | {"swap_space_gib"}
