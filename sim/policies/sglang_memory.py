"""SGLang's KV pool size (sglang 0.5.23, paths under `python/sglang/srt/`), for the `sglang` policy when
`num_gpu_blocks` is unset, as `sim.v1_memory` sizes V1's pool for `vllm`.

    mem_fraction_static = round((gpu_mem - reserved) / gpu_mem, 3)          arg_groups/memory_hook.py:281-330
    reserved (MiB) = 512 + 1.5 * max(chunked_prefill_size, 2048) + tp * pp / 8 * 1024
                     + 2 * decode graph max_bs + 8 * (prefill graph sizes),  memory_hook.py:357-399
                     at least 10 GiB on GPUs over 60 GiB
    KV bytes = free before load * mem_fraction_static - weights            mem_cache/kv_cache_configurator.py:
                                                                             2990-3060 (rest_memory)
    tokens   = KV bytes // bytes per token (page size 1)                   model_executor/pool_configurator.py:
                                                                             637-647

Prefill CUDA graphs (the breakable backend) are on by default on CUDA
(model_executor/cuda_graph_config.py:119-123, 146-154) for a dense model at pp 1, capturing token counts
up to `chunked_prefill_size` (Llama-2 models: at most 4096; arg_groups/memory_hook.py:232-236, 260-263,
cuda_graph_hook.py:480-497); post-capture KV sizing, which would skip the graph reserve, is off by
default (environ.py:640, arg_groups/overrides.py:1791-1804).

Modelling choices: `gpu_mem` is the preset's memory in MiB and the free memory before loading is all of
it (no CUDA context); pp is 1; the token pool is floored to whole simulator blocks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sim.config import EngineConfig
from sim.host_time import sglang_graph_max_bs
from sim.policies.sglang_budget import default_chunked_prefill_size
from sim.presets import GIB

MIB = 1 << 20
FLOOR_ABOVE_60_GIB_MIB = 10 * 1024       # memory_hook.py:314-315
LLAMA2_PREFILL_GRAPH_MAX = 4096          # memory_hook.py:260-263 (the model path names llama-2)


def prefill_graph_sizes(max_bs: int) -> list[int]:
    """Token counts SGLang captures as prefill graphs up to `max_bs` (arg_groups/cuda_graph_hook.py:480-497)."""
    sizes = [*range(4, 33, 4), *range(48, 257, 16), *range(288, 513, 32), *range(576, 1025, 64),
             *range(1280, 4097, 256), *range(4608, max_bs + 1, 512)]
    return [s for s in sizes if s <= max_bs]


@dataclass(frozen=True)
class SGLangMemory:
    """SGLang's static-memory fraction on one GPU, what it reserves outside it, and the pool it leaves."""

    gpu_mib: float
    reserved_mib: float
    graph_reserve_mib: float
    mem_fraction_static: float   # the one used: SGLang's heuristic, or the user's gpu_memory_utilization
    weights: int
    available: int               # KV bytes
    token_bytes: int

    @property
    def pool_tokens(self) -> int:
        return max(self.available // self.token_bytes, 0)


def default_mem_fraction(config: EngineConfig) -> tuple[float, float, float]:
    """SGLang's `mem_fraction_static` for `config` left unset: (fraction, reserved MiB, graph reserve MiB)."""
    gpu_mib = config.gpu_spec.memory_gib * 1024
    tp = config.model_spec.tp
    chunk = config.chunked_prefill_size or default_chunked_prefill_size(config.gpu_spec.memory_gib)
    # Decode graphs: the largest batch by GPU memory, at most an explicit max_running_requests
    # (memory_hook.py:182-189); an explicit size list gives its largest; none captured: no reserve.
    if config.cuda_graph_sizes is None:
        decode_max_bs = sglang_graph_max_bs(config.gpu_spec.memory_gib, tp)
        if config.max_num_seqs != EngineConfig.max_num_seqs:
            decode_max_bs = min(decode_max_bs, config.max_num_seqs)
    else:
        decode_max_bs = max(config.cuda_graph_sizes, default=0)
    prefill_max_bs = chunk
    if config.model.startswith("llama-2"):
        prefill_max_bs = min(prefill_max_bs, LLAMA2_PREFILL_GRAPH_MAX)
    graph = 2 * decode_max_bs + 8 * len(prefill_graph_sizes(prefill_max_bs))
    reserved = 512 + 1.5 * max(chunk, 2048) + tp / 8 * 1024 + graph
    if gpu_mib > 60 * 1024:
        reserved = max(reserved, FLOOR_ABOVE_60_GIB_MIB)
    return round((gpu_mib - reserved) / gpu_mib, 3), reserved, graph


def sglang_memory(config: EngineConfig, mem_fraction_static: float | None = None) -> SGLangMemory:
    """The KV budget SGLang derives for `config` under `mem_fraction_static` (None: SGLang's heuristic)."""
    fraction, reserved, graph = default_mem_fraction(config)
    if mem_fraction_static is not None:
        fraction = mem_fraction_static
    gpu_bytes = config.gpu_spec.memory_gib * GIB
    weights = config.model_spec.weight_bytes_per_gpu
    # rest_memory = free after load - free before load * (1 - f) = before * f - weights
    available = math.floor(gpu_bytes * fraction) - weights
    return SGLangMemory(config.gpu_spec.memory_gib * 1024, reserved, graph, fraction, weights, available,
                        config.model_spec.kv_bytes_per_token(config.kv_cache_dtype))
