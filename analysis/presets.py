"""Built-in traces for `pagedlab compare --preset NAME`: seeded synthetic workloads with default loads.

Each preset is generated once at `base_rate` (1 req/s) and rescaled to every load, so all loads of a
comparison replay the same requests with the same relative arrival pattern; only the pace changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    description: str
    num_requests: int
    rates: tuple[float, ...]  # default loads, requests/s
    generate_kwargs: dict[str, Any] = field(default_factory=dict)
    base_rate: float = 1.0
    model: str = "llama-3-8b"  # what `pagedlab compare --preset NAME` replays on unless --model / --gpu say
    gpu: str = "h100-sxm"

    def __post_init__(self) -> None:
        assert self.num_requests > 0 and self.base_rate > 0 and self.rates, "a preset needs requests and loads"


# The default puts the KV cache under pressure: Llama-2-7B has no grouped-query attention (512 KiB of KV
# per token, 4x Llama-3-8B's) and an A100-40GB leaves about 21 GiB for it (2,809 blocks of 16 tokens).
# At 1-2 req/s memory is loose; from 3-4 req/s the paged policies preempt (vllm-v0 recomputes, vllm-swap
# swaps), and sharing of parallel/beam prompts matters. The other presets' rates bracket the saturation
# point of Llama-3-8B on one H100-SXM under the analytic cost model.
PRESETS: dict[str, Preset] = {
    "default": Preset(
        "ShareGPT-like lengths, Poisson arrivals; 10% parallel sampling and 5% beam search (n=4)",
        num_requests=1000, rates=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0),
        generate_kwargs={"lengths": "sharegpt", "parallel_fraction": 0.10, "beam_fraction": 0.05, "n": 4},
        model="llama-2-7b", gpu="a100-40gb",
    ),
    "sharegpt": Preset(
        "ShareGPT-like lengths, Poisson arrivals, greedy decoding only",
        num_requests=1000, rates=(4.0, 8.0, 16.0, 24.0, 32.0, 40.0),
        generate_kwargs={"lengths": "sharegpt"},
    ),
    "parallel": Preset(
        "ShareGPT-like lengths, Poisson arrivals, every request parallel sampling with n=4",
        num_requests=300, rates=(1.0, 2.0, 4.0, 8.0, 16.0),
        generate_kwargs={"lengths": "sharegpt", "parallel_fraction": 1.0, "n": 4},
    ),
    "beam": Preset(
        "ShareGPT-like lengths, Poisson arrivals, every request beam search with width 4",
        num_requests=300, rates=(1.0, 2.0, 4.0, 8.0, 16.0),
        generate_kwargs={"lengths": "sharegpt", "beam_fraction": 1.0, "n": 4},
    ),
}
DEFAULT_PRESET = "default"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; valid names: {', '.join(PRESETS)}")
    return PRESETS[name]


def generate_preset(name: str, *, seed: int, num_requests: int | None = None):  # -> traces.Trace
    """The preset's trace at its base rate; `num_requests` overrides its size."""
    from traces import generate

    preset = get_preset(name)
    count = preset.num_requests if num_requests is None else num_requests
    return generate(count, rate=preset.base_rate, arrival="poisson", seed=seed, **preset.generate_kwargs)
