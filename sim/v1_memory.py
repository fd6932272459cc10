"""vLLM V1's KV pool size (vllm 0.33.0, `Worker.determine_available_memory`), for the `vllm` policy.

    requested = ceil(total GPU memory * gpu_memory_utilization)            v1/worker/utils.py:716-726
    available = requested - weights - non-torch memory - activation peak   v1/worker/gpu_worker.py:688-700,
                - CUDA-graph memory                                          753-757; utils/mem_utils.py:312-321
    blocks    = available // block_bytes - 1 (the null block)              v1/core/kv_cache_planning.py:681;
                                                                             v1/core/block_pool.py:191

V1 measures the middle terms in a profiling run; the simulator estimates them (docs/sim.md has the
figures per preset):

- activation peak of the profile run at `max_num_batched_tokens` T (a dummy forward of T tokens, then the
  sampler over `max_num_seqs` S rows, gpu_worker.py:697): one gated MLP's live tensors per token, residual
  and normed input [T, H], gate_up [T, 2I] and its product [T, I] (a plain MLP: [T, I] twice), in the
  model's dtype, plus the sampler's
  fp32 logits [S, vocab];
- CUDA-graph memory (on by default since v0.21, envs.py:329): V1 captures two graphs of each mode and
  charges `first + (n - 1) * per_graph` (gpu_model_runner.py:6268-6415); we take `n * per_graph` for the
  PIECEWISE graphs (one per capture size) and the FULL decode graphs (capture sizes <= max_num_seqs,
  cudagraph_dispatcher.py:203-225), with `EngineConfig.cudagraph_mib_per_graph` per graph;
- non-torch memory (NCCL, cuBLAS workspaces): `EngineConfig.non_torch_gib`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sim.config import EngineConfig
from sim.presets import GIB

MIB = 1 << 20


def cudagraph_capture_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> list[int]:
    """V1's default capture sizes (config/vllm.py:2460-2605): up to min(2 * max_num_seqs, 512,
    max_num_batched_tokens): 1, 2, 4, then every 8 below 256, every 16 from 256; plus the token budget and
    `max_num_seqs` where they fit."""
    largest = min(max_num_seqs * 2, 512, max_num_batched_tokens)
    sizes = [i for i in (1, 2, 4) if i <= largest]
    if largest >= 8:
        sizes += list(range(8, min(largest + 1, 256), 8))
    if largest >= 256:
        sizes += list(range(256, largest + 1, 16))
    for extra in (max_num_batched_tokens, max_num_seqs):
        if extra <= largest:
            sizes.append(extra)
    return sorted(set(sizes))


@dataclass(frozen=True)
class V1Memory:
    """The terms of V1's KV budget on one GPU, in bytes, and the pool they leave."""

    requested: int
    weights: int
    non_torch: int
    activation_peak: int
    cudagraph: int
    num_graphs: int
    available: int
    block_bytes: int

    @property
    def num_gpu_blocks(self) -> int:
        return max(self.available // self.block_bytes - 1, 0)

    def as_gib(self) -> dict[str, float]:
        return {name: getattr(self, name) / GIB
                for name in ("requested", "weights", "non_torch", "activation_peak", "cudagraph", "available")}


def v1_memory(config: EngineConfig) -> V1Memory:
    """The KV budget V1 derives for `config` (its `max_num_batched_tokens` and `max_num_seqs` as set)."""
    model, gpu = config.model_spec, config.gpu_spec
    requested = math.ceil(gpu.memory_gib * GIB * config.gpu_memory_utilization)
    tokens, seqs = config.token_budget, config.max_num_seqs
    h, i = model.hidden_size, model.intermediate_size // model.tp
    mlp = (3 if model.gated_mlp else 2) * i
    activation = tokens * (2 * h + mlp) * model.dtype_bytes + seqs * model.vocab_size * 4
    sizes = cudagraph_capture_sizes(seqs, tokens)
    num_graphs = len(sizes) + sum(1 for s in sizes if s <= seqs)
    cudagraph = int(num_graphs * config.cudagraph_mib_per_graph * MIB)
    non_torch = int(config.non_torch_gib * GIB)
    weights = model.weight_bytes_per_gpu
    available = requested - weights - non_torch - activation - cudagraph
    return V1Memory(requested, weights, non_torch, activation, cudagraph, num_graphs, available,
                    config.block_bytes)
