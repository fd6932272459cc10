"""Seeded synthetic traces: arrivals, lengths, sampling mix, shared-prefix groups, priorities.

One seed drives everything: it is split (numpy SeedSequence.spawn) into one stream per aspect, so
e.g. changing the sampling mix leaves arrivals and lengths unchanged. Same arguments, same trace,
byte for byte (`Trace.to_csv`).

Arrivals (`rate` in requests/s; `inf` sends everything at 0) -- the first request arrives at 0:
  - "poisson": exponential gaps with mean 1/rate.
  - "gamma": gamma gaps with shape = burstiness and mean 1/rate, as in vLLM's benchmark_serving
    (burstiness 1 is Poisson; < 1 burstier, > 1 more regular).
  - "constant": every gap is 1/rate.

`traces.arrivals.ArrivalSpec` ("poisson:RATE", "gamma:RATE:CV", "constant:RATE") gives a length-only trace
(e.g. Vidur's arxiv-summarization lengths) arrival times from the same seeded stream `generate` uses.

Lengths: "fixed" (input_len, output_len), "uniform" (integers in [len*(1-range_ratio),
len*(1+range_ratio)], vLLM's random-dataset convention), "lognormal" (mean input_len/output_len,
log-space std `sigma`), or a preset from `LENGTH_PRESETS`:

  - "sharegpt": mean prompt 161.31 tokens, mean output 337.99 tokens.
  - "alpaca": mean prompt 19.31 tokens, mean output 58.45 tokens.

  Source of both: Kwon et al., "Efficient Memory Management for Large Language Model Serving with
  PagedAttention" (vLLM, SOSP 2023), Sec. 6.1 and Fig. 11 (input/output length distributions of
  the ShareGPT and Alpaca datasets, OPT tokenizer; "ShareGPT has 8.4x longer input prompts and
  5.8x longer outputs on average than Alpaca, with higher variance"). The means above are the
  published figures; each side is lognormal, capped at the 2048-token context of that evaluation,
  with the location fitted so the capped mean equals the published mean. The paper gives
  histograms, not spreads: the sigmas (ShareGPT 1.25 prompt / 1.0 output, Alpaca 0.5 / 0.8) are
  our reading of those histograms (long-tailed ShareGPT, short and tight Alpaca prompts), an
  assumption rather than a published figure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from traces.arrivals import arrival_gaps, seed_streams
from traces.catalog import ARRIVALS, LENGTH_DISTRIBUTIONS, PRESET_NAMES
from traces.request import FIELDS, MAX_ARRIVAL_S
from traces.trace import Trace



@dataclass(frozen=True)
class LengthPreset:
    """Lognormal prompt and output lengths fitted to a dataset's published mean lengths."""

    prompt_mean: float
    output_mean: float
    prompt_sigma: float
    output_sigma: float
    max_tokens: int  # cap on each side
    source: str

    def __post_init__(self) -> None:
        for name in ("prompt_mean", "output_mean", "prompt_sigma", "output_sigma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"length preset: {name}: must be a finite number > 0, got {value!r}")
        if not (isinstance(self.max_tokens, int) and self.max_tokens >= 1):
            raise ValueError(f"length preset: max_tokens: must be an integer >= 1, got {self.max_tokens!r}")


_VLLM_PAPER = "Kwon et al., SOSP 2023 (vLLM), Sec. 6.1 / Fig. 11"
LENGTH_PRESETS: dict[str, LengthPreset] = {
    "sharegpt": LengthPreset(161.31, 337.99, 1.25, 1.0, 2048, _VLLM_PAPER),
    "alpaca": LengthPreset(19.31, 58.45, 0.5, 0.8, 2048, _VLLM_PAPER),
}
assert tuple(LENGTH_PRESETS) == PRESET_NAMES, "traces.catalog.PRESET_NAMES must list every preset"


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _capped_lognormal_mean(mu: float, sigma: float, cap: float) -> float:
    """E[min(X, cap)] for X ~ lognormal(mu, sigma)."""
    log_cap = math.log(cap)
    return (math.exp(mu + sigma**2 / 2) * _normal_cdf((log_cap - mu - sigma**2) / sigma)
            + cap * (1.0 - _normal_cdf((log_cap - mu) / sigma)))


def fit_lognormal_mu(mean: float, sigma: float, cap: float | None) -> float:
    """The log-space location whose (capped) lognormal has the given mean."""
    if cap is None:
        return math.log(mean) - sigma**2 / 2
    if not mean < cap:
        raise ValueError(f"generate: lengths: mean {mean:g} must be below the cap {cap:g}")
    lo, hi = math.log(mean) - 20.0, math.log(cap) + 20.0 * sigma
    for _ in range(200):  # the capped mean grows monotonically with mu: bisect
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _capped_lognormal_mean(mid, sigma, cap) < mean else (lo, mid)
    return (lo + hi) / 2


def _lengths(rng: np.random.Generator, num: int, dist: str, mean: float, range_ratio: float,
             sigma: float, cap: int | None) -> np.ndarray:
    if dist == "fixed":
        return np.full(num, int(mean), dtype=np.int64)
    if dist == "uniform":
        low, high = max(1, int(mean * (1 - range_ratio))), max(1, int(mean * (1 + range_ratio)))
        return rng.integers(low, high + 1, size=num, dtype=np.int64)
    mu = fit_lognormal_mu(mean, sigma, cap)
    values = np.rint(rng.lognormal(mu, sigma, size=num))
    return np.clip(values, 1, cap if cap is not None else np.inf).astype(np.int64)


def _check(ok: bool, name: str, reason: str) -> None:
    if not ok:
        raise ValueError(f"generate: {name}: {reason}")


def generate(num_requests: int, *, rate: float, arrival: str = "poisson", burstiness: float = 1.0,
             lengths: str = "sharegpt", seed: int = 0, parallel_fraction: float = 0.0,
             beam_fraction: float = 0.0, n: int = 4, num_prefix_groups: int = 0, prefix_tokens: int = 0,
             prefix_fraction: float = 1.0, input_len: int = 512, output_len: int = 128,
             range_ratio: float = 0.5, sigma: float = 1.0, max_prompt_tokens: int | None = None,
             max_output_tokens: int | None = None, num_priorities: int = 1,
             max_context: int | None = None) -> Trace:
    """A synthetic trace (see the module docstring for every option's meaning).

    Sampling: each request is parallel sampling with probability `parallel_fraction`, beam search
    with `beam_fraction` (both with `n` samples / beams), else greedy. Prefixes: with
    `num_prefix_groups` > 0, a `prefix_fraction` of requests joins one of the groups uniformly and
    its prompt is the group's `prefix_tokens` shared tokens followed by its own sampled prompt.
    Priorities are uniform in [0, num_priorities). `max_prompt_tokens` / `max_output_tokens` clip
    the sampled lengths after sampling (so a cap below the tail lowers the mean); `max_context`
    clips the result with `Trace.clip`.
    """
    _check(num_requests >= 1, "num_requests", f"must be >= 1, got {num_requests}")
    _check(rate > 0, "rate", f"must be > 0 requests/s, got {rate}")
    _check(arrival in ARRIVALS, "arrival", f"unknown {arrival!r} (expected one of {', '.join(ARRIVALS)})")
    _check(math.isfinite(burstiness) and burstiness > 0, "burstiness", f"must be > 0, got {burstiness}")
    known_lengths = (*LENGTH_DISTRIBUTIONS, *LENGTH_PRESETS)
    _check(lengths in known_lengths, "lengths", f"unknown {lengths!r} (expected one of {', '.join(known_lengths)})")
    _check(input_len >= 1 and output_len >= 1, "input_len/output_len", "must be >= 1")
    _check(0 <= range_ratio < 1, "range_ratio", f"must be in [0, 1), got {range_ratio}")
    _check(sigma > 0, "sigma", f"must be > 0, got {sigma}")
    _check(0 <= parallel_fraction and 0 <= beam_fraction and parallel_fraction + beam_fraction <= 1,
           "parallel_fraction/beam_fraction", "must be >= 0 and sum to at most 1")
    _check(n >= 2 or parallel_fraction + beam_fraction == 0, "n", f"parallel sampling and beam search need n >= 2, got {n}")
    _check(num_prefix_groups >= 0, "num_prefix_groups", f"must be >= 0, got {num_prefix_groups}")
    _check(num_prefix_groups == 0 or prefix_tokens >= 1, "prefix_tokens", "prefix groups need prefix_tokens >= 1")
    _check(0 <= prefix_fraction <= 1, "prefix_fraction", f"must be in [0, 1], got {prefix_fraction}")
    _check(num_priorities >= 1, "num_priorities", f"must be >= 1, got {num_priorities}")
    for name, cap in (("max_prompt_tokens", max_prompt_tokens), ("max_output_tokens", max_output_tokens)):
        _check(cap is None or cap >= 1, name, f"must be >= 1, got {cap}")

    rng_arrival, rng_prompt, rng_output, rng_sampling, rng_prefix, rng_priority = seed_streams(seed)
    num = num_requests

    gaps = arrival_gaps(rng_arrival, num - 1, arrival, rate, burstiness)
    arrival_s = np.concatenate([[0.0], np.cumsum(gaps)])
    _check(arrival_s[-1] <= MAX_ARRIVAL_S, "rate", f"{num} requests at {rate:g} req/s span {arrival_s[-1]:.3g} s, "
           f"more than the {MAX_ARRIVAL_S:.0e} s a trace may span")

    if lengths in LENGTH_PRESETS:
        p = LENGTH_PRESETS[lengths]
        prompt = _lengths(rng_prompt, num, "lognormal", p.prompt_mean, 0.0, p.prompt_sigma, p.max_tokens)
        output = _lengths(rng_output, num, "lognormal", p.output_mean, 0.0, p.output_sigma, p.max_tokens)
    else:
        # Fitted uncapped: input_len / output_len are the means; the caps below only clip.
        prompt = _lengths(rng_prompt, num, lengths, input_len, range_ratio, sigma, None)
        output = _lengths(rng_output, num, lengths, output_len, range_ratio, sigma, None)
    if max_prompt_tokens is not None:
        prompt = np.minimum(prompt, max_prompt_tokens)
    if max_output_tokens is not None:
        output = np.minimum(output, max_output_tokens)

    draw = rng_sampling.random(num)
    parallel = draw < parallel_fraction
    beam = ~parallel & (draw < parallel_fraction + beam_fraction)
    sampling = np.where(parallel, "parallel", np.where(beam, "beam", "greedy")).astype(object)

    prefix_group = np.full(num, None, dtype=object)
    prefix = np.zeros(num, dtype=np.int64)
    if num_prefix_groups > 0:
        joins = rng_prefix.random(num) < prefix_fraction
        group = rng_prefix.integers(0, num_prefix_groups, size=num)
        prefix_group[joins] = np.char.add("g", group[joins].astype(str)).astype(object)
        prefix[joins] = prefix_tokens
        prompt = prompt + prefix

    cols = {
        "request_id": np.arange(num).astype(str).astype(object),
        "arrival_s": arrival_s, "prompt_tokens": prompt, "output_tokens": output,
        "n": np.where(parallel | beam, n, 1).astype(np.int64), "sampling": sampling,
        "priority": (rng_priority.integers(0, num_priorities, size=num, dtype=np.int64)
                     if num_priorities > 1 else np.zeros(num, dtype=np.int64)),
        "prefix_group": prefix_group, "prefix_tokens": prefix,
        "hash_ids": np.full(num, None, dtype=object),
    }
    assert set(cols) == set(FIELDS)
    burst = f", burstiness {burstiness:g}" if arrival == "gamma" else ""
    notice = (f"generated {num} requests: {arrival} arrivals at {rate:g} req/s{burst}, {lengths} lengths, "
              f"{parallel.sum()} parallel / {beam.sum()} beam (n={n}), {num_prefix_groups} prefix groups, "
              f"seed {seed}")
    trace = Trace._from_columns(cols, source=f"generate(seed={seed})", notices=[notice])
    return trace.clip(max_context) if max_context is not None else trace
