"""Host (CPU) time of an engine step and CUDA-graph padding, apart from the device time of `sim.cost`.

Host work per step = `step_s + per_request_s * scheduled requests + per_token_s * sampled tokens`
(scheduling, input preparation, sampling and output processing). How it combines with the device time D:

- synchronous engines (vLLM V0, Sarathi-Serve on V0, the Orca and static baselines) run the host work
  between device steps: a step takes `D + H`;
- asynchronous ones (vLLM V1's async scheduling, SGLang's overlap scheduler) prepare step n+1 while the
  device runs step n. Pipelined, the device starts step n+1 at `max(end of D_n, end of H_{n+1})`, so each
  step takes `max(D, H)`; the host work that hides behind step n is that of step n+1, which we take to be
  step n's own (the batch changes by a few requests per step). The first step after an idle engine pays
  `D + H` in a real engine; here it pays `max(D, H)` (the engine loop does not tell the timer it idled).

A decode-only step of b sequences with `b <= max(graph_sizes)` runs a captured CUDA graph at the next
capture size: its GEMMs (and all-reduces) cost the padded batch, attention and sampling the real one. Larger
decode batches and steps with prefill tokens run eagerly, unpadded.

The policy's engine supplies the defaults (`EngineHost`, through `EngineConfig.host_engine`,
`async_scheduling` and `cuda_graph_sizes`, which `Policy.configure` fills); a cost profile's `host_step_s`,
`host_per_request_s` and `host_per_token_s` override the engine's published constants. Sources: docs/sim.md
("Host time and CUDA graphs").
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Protocol, TypeVar

from sim.json_profile import check_constants
from sim.presets import GpuSpec, ModelSpec

if TYPE_CHECKING:
    from sim.cost import CostProfile


class EngineSettings(Protocol):
    """What the host model reads of an `EngineConfig` (sim.config imports this module, not the reverse)."""

    max_num_seqs: int
    token_budget: int
    gpu_spec: GpuSpec
    model_spec: ModelSpec
    host_engine: str | None
    async_scheduling: bool | None
    cuda_graph_sizes: tuple[int, ...] | None


C = TypeVar("C", bound=EngineSettings)
HOST_FIELDS: tuple[str, ...] = ("host_step_s", "host_per_request_s", "host_per_token_s")  # CostProfile overrides


def vllm_v1_graph_sizes(config: EngineSettings) -> tuple[int, ...]:
    """vLLM 0.33's capture sizes: largest `min(2 * max_num_seqs, 512, max_num_batched_tokens)`; sizes 1, 2, 4,
    8..248 step 8, 256..max step 16, plus max_num_batched_tokens and max_num_seqs where they fit
    (vllm/config/vllm.py:2463-2471, 2549-2552, 2573-2605 @0.33.0)."""
    largest = min(2 * config.max_num_seqs, 512, config.token_budget)
    sizes = {1, 2, 4, *range(8, 256, 8), *range(256, largest + 1, 16), config.token_budget, config.max_num_seqs}
    return tuple(sorted(s for s in sizes if s <= largest))


def vllm_v0_graph_sizes(config: EngineSettings) -> tuple[int, ...]:
    """vLLM V0 (0.5/0.6): sizes 1, 2, 4, 8, 16, ..., 256 (`_BATCH_SIZES_TO_CAPTURE`), those up to max_num_seqs
    rounded by `_get_graph_batch_size` (vllm/worker/model_runner.py)."""
    seqs = config.max_num_seqs
    cap = seqs if seqs <= 2 else 4 if seqs <= 4 else (seqs + 7) // 8 * 8
    return tuple(s for s in (1, 2, 4, *range(8, 257, 8)) if s <= cap)


def sglang_graph_max_bs(memory_gib: float, tp: int) -> int:
    """SGLang 0.5.23's largest captured decode batch by GPU memory (arg_groups/memory_hook.py:90-170): under
    20 GB 8; under 35 GB 48 (tp >= 4: 160); under 60 GB - A100-40GB, L40 - 32 (160); under 160 GB - H100,
    H200 - 256 (512); else 512."""
    small_tp = tp < 4
    for below_gib, size, size_tp4 in ((20, 8, 8), (35, 48, 160), (60, 32, 160), (160, 256, 512)):
        if memory_gib < below_gib:
            return size if small_tp else size_tp4
    return 512


def sglang_graph_sizes(config: EngineSettings) -> tuple[int, ...]:
    """SGLang 0.5.23: 1, 2, 4, 8, 12, 16..256 step 8, 272..<512 step 16, 512.. step 32, up to the largest
    batch by GPU memory (`sglang_graph_max_bs`; arg_groups/cuda_graph_hook.py:500-531 @0.5.23)."""
    largest = sglang_graph_max_bs(config.gpu_spec.memory_gib, config.model_spec.tp)
    sizes = (1, 2, 4, 8, 12, *range(16, 257, 8), *range(272, 512, 16), *range(512, 1025, 32))
    return tuple(s for s in sizes if s <= largest)


def no_graphs(config: EngineSettings) -> tuple[int, ...]:
    return ()


@dataclass(frozen=True)
class EngineHost:
    """An engine's published host constants (seconds), whether it overlaps them with the device, and the
    decode batch sizes it captures as CUDA graphs."""

    step_s: float
    per_request_s: float
    per_token_s: float
    overlap: bool
    graph_sizes: Callable[[EngineSettings], tuple[int, ...]]

    def __post_init__(self) -> None:
        check_constants(self, "engine host", skip=("overlap", "graph_sizes"))


# Constants and their sources: docs/sim.md, "Host time and CUDA graphs".
_V1_STEP_S = 160e-6        # vLLM PR #11133: per-step gap left once the per-request work overlaps (150-170 us)
_V1_PER_TOKEN_S = 1.1e-6   # vLLM PR #46112: update_from_output, 0.142 ms at 128 and 0.287 ms at 256 requests
_V1_PER_REQUEST_S = 20e-6  # vLLM issue #10634: 5-6 ms between decode steps at 256 requests, synchronous V1
_V0_STEP_S = 4e-3          # vLLM RFC #6854: ~4 ms GPU bubble per V0 decode step (5-13 ms range)

ENGINES: dict[str, EngineHost] = {
    "vllm-v1": EngineHost(_V1_STEP_S, _V1_PER_REQUEST_S, _V1_PER_TOKEN_S, True, vllm_v1_graph_sizes),
    "vllm-v0": EngineHost(_V0_STEP_S, _V1_PER_REQUEST_S, _V1_PER_TOKEN_S, False, vllm_v0_graph_sizes),
    "sglang": EngineHost(_V1_STEP_S, _V1_PER_REQUEST_S, _V1_PER_TOKEN_S, True, sglang_graph_sizes),
    "eager-sync": EngineHost(_V0_STEP_S, _V1_PER_REQUEST_S, _V1_PER_TOKEN_S, False, no_graphs),
    # No host time: steps are the device's alone, as the execute backend measures them (to compare with it).
    "device-only": EngineHost(0.0, 0.0, 0.0, False, no_graphs),
}


def with_engine_host(config: C, engine: str) -> C:
    """`config` with `engine`'s host settings for every host field left unset (None)."""
    host = ENGINES[engine]
    changes: dict = {}
    if config.host_engine is None:
        changes["host_engine"] = engine
    if config.async_scheduling is None:
        changes["async_scheduling"] = host.overlap
    if config.cuda_graph_sizes is None:
        changes["cuda_graph_sizes"] = host.graph_sizes(config)
    return replace(config, **changes) if changes else config


def check_engine_name(name: object) -> None:
    if name is not None and name not in ENGINES:
        raise ValueError(f"host_engine: unknown name {name!r}; valid names: {', '.join(ENGINES)}")


def check_graph_sizes(sizes: object) -> None:
    ok = isinstance(sizes, tuple) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)
    if not ok or list(sizes) != sorted(set(sizes)):
        raise ValueError(f"cuda_graph_sizes: must be a strictly increasing tuple of integers >= 1, got {sizes!r}")


def overlaps(config: EngineSettings) -> bool:
    """Whether the engine schedules while the device runs (async scheduling): the setting, else its engine's
    default; no engine named (an unconfigured `EngineConfig`): only if set."""
    if config.async_scheduling is not None or config.host_engine is None:
        return bool(config.async_scheduling)
    return ENGINES[config.host_engine].overlap


@dataclass(frozen=True)
class HostModel:
    """The host terms and padding rule one replay uses."""

    step_s: float = 0.0
    per_request_s: float = 0.0
    per_token_s: float = 0.0
    overlap: bool = False
    graph_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_constants(self, "host model", skip=("overlap", "graph_sizes"))
        check_graph_sizes(self.graph_sizes)

    @classmethod
    def of(cls, config: EngineSettings, profile: "CostProfile") -> "HostModel":
        """The engine's host model (`config.host_engine`, filled by the policy) with the profile's overrides;
        no engine (an unconfigured `EngineConfig`): no host time, no graphs."""
        if config.host_engine is None:
            base = cls(overlap=overlaps(config), graph_sizes=config.cuda_graph_sizes or ())
        else:
            e = ENGINES[config.host_engine]
            base = cls(e.step_s, e.per_request_s, e.per_token_s, overlaps(config),
                       e.graph_sizes(config) if config.cuda_graph_sizes is None else config.cuda_graph_sizes)
        overrides = {f.removeprefix("host_"): getattr(profile, f) for f in HOST_FIELDS
                     if getattr(profile, f) is not None}
        return replace(base, **overrides) if overrides else base

    def host_s(self, requests: int, sampled: int) -> float:
        """Host seconds of a step that schedules `requests` sequences and samples `sampled` tokens."""
        return self.step_s + self.per_request_s * requests + self.per_token_s * sampled

    def padded(self, decode_seqs: int) -> int:
        """Tokens a decode-only step of `decode_seqs` sequences runs at: the next capture size, or itself
        above the largest (eager)."""
        sizes = self.graph_sizes
        if not sizes or decode_seqs > sizes[-1]:
            return decode_seqs
        return sizes[bisect_left(sizes, decode_seqs)]

    def combine(self, device_s: float, host_s: float) -> float:
        return max(device_s, host_s) if self.overlap else device_s + host_s

    def describe(self) -> dict:
        return {"host_step_s": self.step_s, "host_per_request_s": self.per_request_s,
                "host_per_token_s": self.per_token_s, "host_overlap": self.overlap,
                "cuda_graph_sizes": list(self.graph_sizes)}
