"""SGLang's server defaults (sglang 0.5.23, paths under `python/sglang/srt/`) for the `sglang` policy, as
`sim.policies.vllm.v1_config` gives `vllm` those of `vllm serve`: a field left at the simulator's default
takes SGLang's, an explicit setting wins. The KV pool, unless `num_gpu_blocks` is set, is SGLang's
(`sim.policies.sglang_memory`), with an explicit `gpu_memory_utilization` as its `mem_fraction_static`.
docs/sim.md ("sglang") lists each with its line and test.
"""
from __future__ import annotations

from dataclasses import replace

from sim.config import EngineConfig, field_defaults, with_server_defaults
from sim.policies.sglang_memory import sglang_memory
from sim.presets import GIB

# arg_groups/fields/memory.py:64-70: `disable_radix_cache` defaults to False, so the radix cache is on.
# mem_cache/prefill_budget.py:62-169: admission keeps no free-pool watermark (only a page per request).
SGLANG_DEFAULTS = {"enable_prefix_caching": True, "watermark": 0.0}


def max_running_requests(pool_tokens: int, context_len: int) -> int:
    """SGLang's `max_running_requests` when not set, from the KV pool's token capacity
    (mem_cache/kv_cache_configurator.py:3119-3132): `pool / context_len * 512` clamped to [2048, 4096], at
    most half the pool."""
    estimated = max(min(int(pool_tokens / context_len * 512), 4096), 2048)
    return min(estimated, pool_tokens // 2)


def sglang_config(config: EngineConfig) -> EngineConfig:
    """`config` with SGLang's defaults for every field left at the simulator's default."""
    defaults = field_defaults()
    config = with_server_defaults(config, SGLANG_DEFAULTS)
    pool_tokens = config.kv_blocks * config.block_size
    if config.num_gpu_blocks is None:  # SGLang's pool instead of our constant activation reserve
        explicit = config.gpu_memory_utilization != defaults["gpu_memory_utilization"]
        memory = sglang_memory(config, config.gpu_memory_utilization if explicit else None)
        # SGLang's pool is in tokens (page size 1); ours in whole blocks, the rest of a block unused.
        blocks = memory.pool_tokens // config.block_size
        if blocks < 1:
            raise ValueError(f"gpu_memory_utilization: model {config.model} leaves {memory.available / GIB:.2f} GiB "
                             f"for the KV cache on {config.gpu} at SGLang's mem_fraction_static "
                             f"{memory.mem_fraction_static:g} (no KV block fits)")
        config = replace(config, gpu_memory_utilization=memory.mem_fraction_static, num_gpu_blocks=blocks)
        pool_tokens = memory.pool_tokens
    if config.max_num_seqs == defaults["max_num_seqs"]:
        seqs = max_running_requests(pool_tokens, config.context_len)
        config = replace(config, max_num_seqs=max(seqs, 1))
    return config
