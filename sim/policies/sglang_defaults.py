"""SGLang's server defaults (sglang 0.5.23, paths under `python/sglang/srt/`) for the `sglang` policy, as
`sim.policies.vllm.v1_config` gives `vllm` those of `vllm serve`: a field left at the simulator's default
takes SGLang's, an explicit setting wins. docs/sim.md ("sglang") lists each with its line and test.
"""
from __future__ import annotations

from dataclasses import fields, replace

from sim.config import EngineConfig

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
    defaults = {f.name: f.default for f in fields(EngineConfig)}
    wanted = dict(SGLANG_DEFAULTS)
    if config.backend != "analytic":
        wanted.pop("enable_prefix_caching")  # the execute backend has no prefix cache
    # A field at our default takes SGLang's (so an explicit watermark=0.01 reads as unset: pass another value).
    changes = {k: v for k, v in wanted.items() if getattr(config, k) == defaults[k]}
    config = replace(config, **changes) if changes else config
    if config.max_num_seqs == defaults["max_num_seqs"]:
        seqs = max_running_requests(config.kv_blocks * config.block_size, config.context_len)
        config = replace(config, max_num_seqs=max(seqs, 1))
    return config
