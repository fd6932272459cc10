"""`EngineConfig`: one model replica's settings, validated; the KV pool follows from memory left after weights."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from sim.host_time import check_engine_name, check_graph_sizes
from sim.presets import GIB, GPUS, KV_CACHE_DTYPES, MODELS, GpuSpec, ModelSpec, lookup

DEFAULT_POLICY = "vllm-v0"  # the policy a replay runs when none is named
# vLLM refuses a swap space above 0.7 of the host's memory (`CacheConfig.verify_with_parallel_config`, "Too large
# swap space"); the simulator has no host, so it takes the largest H100/H200 servers' (DGX: 2 TiB).
MAX_SWAP_SPACE_GIB = 0.7 * 2048
BACKENDS: tuple[str, ...] = ("analytic", "execute")
DEVICES: tuple[str, ...] = ("cuda", "cpu")


@dataclass(frozen=True)
class EngineConfig:
    """Settings of one engine (model replica). Unknown names and bad values raise a one-line ValueError.

    The KV pool is `num_gpu_blocks` if given, else what fits in `gpu_memory_utilization` of the GPU after
    the weights and `activation_reserve_gib` (activations, CUDA graphs, allocator slack: vLLM's profiling
    run measures this; we take a constant).
    """

    model: str = "llama-3-8b"
    gpu: str = "h100-sxm"
    block_size: int = 16
    # vLLM V0's defaults (v0.6.6.post1): utilization, max_num_seqs, swap space (vllm/engine/arg_utils.py:119,
    # 121, 213), token budget (vllm/config.py:1442), watermark (vllm/core/block_manager.py:65).
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None   # None: max(max_model_len, 2048), vLLM's default
    prefill_chunk_tokens: int = 512             # sarathi's per-step token budget (chunked prefill)
    swap_space_gib: float = 4.0                 # CPU swap pool per GPU (vllm-v0's forked groups, vllm-swap)
    num_gpu_blocks: int | None = None           # override the computed pool size
    watermark: float = 0.01                     # fraction of GPU blocks kept free at admission (paged)
    max_model_len: int | None = None            # None: the model's context length
    max_output_tokens: int | None = None        # orca-max/static reserve prompt + this (None: up to max_model_len)
    beam_replace_prob: float = 0.25             # beam search: chance a beam is dropped for a fork each step
    activation_reserve_gib: float = 1.5
    backend: str = "analytic"
    cost_profile: str = "default"               # a name in sim/profiles/ or a path to a JSON profile
    fast_forward: bool = True                   # False: schedule every step (slow; same tables)
    check_every: int = 0                        # > 0: full invariant checks about every N steps (tests)
    # execute backend (sim/execute): real kernels on a real KV cache; see docs/execute.md
    device: str | None = None                   # "cuda" or "cpu" (Triton interpreter); None: cuda if present
    verify: bool = False                        # shadow check of attention outputs against a reference
    verify_every: int = 1                       # check every N-th step (and every step that moves blocks)
    enable_prefix_caching: bool | None = None   # paged policies: reuse cached full prompt blocks (docs/sim.md);
                                                # None: the engine's default (on for `vllm` and `sglang`, else off)
    # vLLM V1 (`vllm` policy) scheduler options; see docs/sim.md for the source line of each
    long_prefill_token_threshold: int = 0       # > 0: most prefill tokens one request takes per step (0: off)
    scheduling_policy: str = "fcfs"             # V1's SchedulerConfig.policy: "fcfs" or "priority" (trace column)
    enable_chunked_prefill: bool | None = None  # vllm: V1's chunked prefill (None: on, V1's default)
    # V1's KV pool sizing (`vllm` only, sim/v1_memory.py): memory outside torch (NCCL, cuBLAS), and what one
    # captured CUDA graph takes
    non_torch_gib: float = 0.16
    cudagraph_mib_per_graph: float = 24.0
    # ---- sglang policy (sim/policies/sglang.py; docs/sim.md "sglang") ----
    schedule_policy: str = "fcfs"               # waiting order: "fcfs" or "lpm" (longest cached prefix first)
    chunked_prefill_size: int | None = None     # None: SGLang's default by GPU memory (8192 on H100/H200)
    max_prefill_tokens: int = 16384             # prompt tokens one prefill batch may add
    # KV-cache element type, vLLM's --kv-cache-dtype: "auto" = the model's dtype, "fp8" = e4m3, 1 byte
    # per element (block bytes halve for bf16 models, so the pool doubles; decode attention reads half)
    kv_cache_dtype: str = "auto"
    # ---- host time and CUDA graphs (sim/host_time.py); None: the policy's engine default ----
    host_engine: str | None = None              # whose published host constants: vllm-v1, vllm-v0, sglang, eager-sync
    async_scheduling: bool | None = None        # host work overlaps the device (step = max) instead of adding to it
    cuda_graph_sizes: tuple[int, ...] | None = None  # decode batch sizes with a captured graph; (): eager

    def __post_init__(self) -> None:
        lookup("model", MODELS, self.model)
        lookup("gpu", GPUS, self.gpu)
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype: unknown name {self.kv_cache_dtype!r}; valid names: "
                             f"{', '.join(KV_CACHE_DTYPES)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: unknown name {self.backend!r}; valid names: {', '.join(BACKENDS)}")
        if self.device is not None and self.device not in DEVICES:
            raise ValueError(f"device: unknown name {self.device!r}; valid names: {', '.join(DEVICES)}")
        if self.backend != "execute" and (self.verify or self.device is not None):
            raise ValueError("verify/device: need backend 'execute' (the analytic backend runs no kernels)")
        _positive_int("verify_every", self.verify_every)
        if self.enable_prefix_caching is not None and not isinstance(self.enable_prefix_caching, bool):
            raise ValueError(f"enable_prefix_caching: must be a bool, got {self.enable_prefix_caching!r}")
        if self.enable_prefix_caching and self.backend == "execute":
            # The executor's K/V of a position depends on the sequence, not on a shared prefix: a hit
            # would fail the shadow check. Not supported rather than silently wrong.
            raise ValueError("enable_prefix_caching: not supported by the execute backend (use backend 'analytic')")
        _check_sglang_fields(self)
        _check_host_fields(self)
        if self.enable_chunked_prefill is not None and not isinstance(self.enable_chunked_prefill, bool):
            raise ValueError(f"enable_chunked_prefill: must be a bool, got {self.enable_chunked_prefill!r}")
        if self.scheduling_policy not in SCHEDULING_POLICIES:
            raise ValueError(f"scheduling_policy: unknown name {self.scheduling_policy!r}; valid names: "
                             f"{', '.join(SCHEDULING_POLICIES)}")
        _positive_int("block_size", self.block_size)
        _positive_int("max_num_seqs", self.max_num_seqs)
        _positive_int("prefill_chunk_tokens", self.prefill_chunk_tokens)
        for name in ("max_num_batched_tokens", "num_gpu_blocks", "max_model_len", "max_output_tokens"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if (not isinstance(self.long_prefill_token_threshold, int) or isinstance(self.long_prefill_token_threshold, bool)
                or self.long_prefill_token_threshold < 0):
            raise ValueError(f"long_prefill_token_threshold: must be an integer >= 0, got "
                             f"{self.long_prefill_token_threshold!r}")
        if not isinstance(self.check_every, int) or self.check_every < 0:
            raise ValueError(f"check_every: must be an integer >= 0, got {self.check_every!r}")
        _fraction("gpu_memory_utilization", self.gpu_memory_utilization, low_open=True, high_closed=True)
        _fraction("watermark", self.watermark, low_open=False, high_closed=False)
        _fraction("beam_replace_prob", self.beam_replace_prob, low_open=False, high_closed=True)
        for name in ("swap_space_gib", "activation_reserve_gib", "non_torch_gib", "cudagraph_mib_per_graph"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
        limit = MAX_SWAP_SPACE_GIB / self.model_spec.tp  # every GPU of the node swaps to the same host
        if self.swap_space_gib > limit:
            raise ValueError(f"swap_space_gib: {self.swap_space_gib:g} GiB a GPU (x{self.model_spec.tp}) is more than "
                             f"vLLM accepts of a 2 TiB host (0.7 of it); give at most {limit:g}")
        if self.max_model_len is not None and self.max_model_len > self.model_spec.max_model_len:
            raise ValueError(f"max_model_len: {self.max_model_len} exceeds {self.model}'s context of "
                             f"{self.model_spec.max_model_len} tokens")
        if self.num_gpu_blocks is None and self._memory_blocks() < 1:
            free_gib = self._kv_memory_bytes() / GIB
            if free_gib > 0:  # the weights fit; one block does not
                raise ValueError(f"block_size: one KV block of {self.block_size} tokens takes "
                                 f"{self.block_bytes / GIB:.2f} GiB, more than the {free_gib:.2f} GiB {self.model} "
                                 f"leaves for the KV cache on {self.gpu}")
            raise ValueError(f"model {self.model} does not fit on {self.gpu}: {free_gib:.2f} GiB left for the KV "
                             f"cache at gpu_memory_utilization={self.gpu_memory_utilization}")
        memory = self.gpu_spec.memory_gib * GIB
        if self.num_gpu_blocks is not None and self.num_gpu_blocks * self.block_bytes > memory:
            # No GPU holds such a pool; the simulator would still try to allocate its bookkeeping.
            raise ValueError(f"num_gpu_blocks: {self.num_gpu_blocks} blocks of {self.block_bytes / 2**20:g} MiB are "
                             f"{self.num_gpu_blocks * self.block_bytes / GIB:.4g} GiB, more than the "
                             f"{self.gpu_spec.memory_gib:g} GiB of a {self.gpu} (at most "
                             f"{int(memory // self.block_bytes)} blocks)")

    # ---- derived -------------------------------------------------------------------------------------
    @property
    def model_spec(self) -> ModelSpec:
        return MODELS[self.model]

    @property
    def gpu_spec(self) -> GpuSpec:
        return GPUS[self.gpu]

    @property
    def context_len(self) -> int:
        """The longest sequence (prompt + output) the engine serves."""
        return self.max_model_len or self.model_spec.max_model_len

    @property
    def token_budget(self) -> int:
        """Tokens one unchunked step may prefill."""
        return self.max_num_batched_tokens or max(self.context_len, 2048)

    @property
    def block_bytes(self) -> int:
        """One KV block on one GPU (K and V, all layers), in the KV cache's dtype."""
        return self.model_spec.kv_bytes_per_token(self.kv_cache_dtype) * self.block_size

    def _kv_memory_bytes(self) -> float:
        gpu, model = self.gpu_spec, self.model_spec
        budget = gpu.memory_gib * GIB * self.gpu_memory_utilization
        return budget - model.weight_bytes_per_gpu - self.activation_reserve_gib * GIB

    def _memory_blocks(self) -> int:
        return max(int(self._kv_memory_bytes() // self.block_bytes), 0)

    @property
    def kv_blocks(self) -> int:
        """GPU KV blocks: the override, or what fits in memory."""
        return self.num_gpu_blocks if self.num_gpu_blocks is not None else self._memory_blocks()

    @property
    def cpu_blocks(self) -> int:
        return int(self.swap_space_gib * GIB // self.block_bytes)

    def to_dict(self) -> dict:
        """The settings plus what follows from them (JSON-able), for `config.json`."""
        out = asdict(self)
        model = self.model_spec
        out.update(
            derived_num_gpu_blocks=self.kv_blocks,
            derived_num_cpu_blocks=self.cpu_blocks,
            derived_token_budget=self.token_budget,
            derived_context_len=self.context_len,
            derived_block_bytes=self.block_bytes,
            derived_kv_gib=self.kv_blocks * self.block_bytes / GIB,
            model_spec=asdict(model) | {"num_params": model.num_params},
            gpu_spec=asdict(self.gpu_spec),
        )
        return out


SCHEDULE_POLICIES: tuple[str, ...] = ("fcfs", "lpm")
SCHEDULING_POLICIES: tuple[str, ...] = ("fcfs", "priority")   # vLLM V1 (config/scheduler.py:159-165)


def _check_sglang_fields(config: EngineConfig) -> None:
    if config.schedule_policy not in SCHEDULE_POLICIES:
        raise ValueError(f"schedule_policy: unknown name {config.schedule_policy!r}; valid names: "
                         f"{', '.join(SCHEDULE_POLICIES)}")
    if config.chunked_prefill_size is not None:
        _positive_int("chunked_prefill_size", config.chunked_prefill_size)
    _positive_int("max_prefill_tokens", config.max_prefill_tokens)


def _check_host_fields(config: EngineConfig) -> None:
    check_engine_name(config.host_engine)
    if config.async_scheduling is not None and not isinstance(config.async_scheduling, bool):
        raise ValueError(f"async_scheduling: must be a bool, got {config.async_scheduling!r}")
    if isinstance(config.cuda_graph_sizes, list):  # from JSON
        object.__setattr__(config, "cuda_graph_sizes", tuple(config.cuda_graph_sizes))
    if config.cuda_graph_sizes is not None:
        check_graph_sizes(config.cuda_graph_sizes)


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")


def _fraction(name: str, value: object, *, low_open: bool, high_closed: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > 0 if low_open else value >= 0) and (value <= 1 if high_closed else value < 1)
    if not ok:
        lo, hi = ("(0" if low_open else "[0"), ("1]" if high_closed else "1)")
        raise ValueError(f"{name}: must be a number in {lo}, {hi}, got {value!r}")


def field_defaults() -> dict[str, Any]:
    """Every `EngineConfig` field's default, by name."""
    return {f.name: f.default for f in fields(EngineConfig)}


def with_server_defaults(config: EngineConfig, wanted: Mapping[str, Any]) -> EngineConfig:
    """`config` with an engine's server defaults `wanted` for every field left at the simulator's default: an
    explicit setting wins (so one equal to ours, e.g. watermark=0.01, reads as unset: pass another value).
    The execute backend has no prefix cache, so it keeps our `enable_prefix_caching`."""
    defaults = field_defaults()
    changes = {k: v for k, v in wanted.items() if getattr(config, k) == defaults[k]
               and not (k == "enable_prefix_caching" and config.backend != "analytic")}
    return replace(config, **changes) if changes else config
