"""Arrival times: the gaps of a Poisson, gamma or constant process, and `ArrivalSpec`, which gives a length-only
trace arrival times from the same seeded stream `traces.generator.generate` draws its arrivals from.

Gamma gaps have shape `burstiness` and mean 1/rate, as in vLLM's benchmark_serving (burstiness 1 is Poisson;
< 1 burstier, > 1 more regular); `inf` rate sends everything at 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from traces.catalog import ARRIVALS

NUM_STREAMS = 6


def arrival_gaps(rng: np.random.Generator, num_gaps: int, arrival: str, rate: float, burstiness: float) -> np.ndarray:
    if math.isinf(rate):
        return np.zeros(num_gaps)
    if arrival == "poisson":
        return rng.exponential(1.0 / rate, size=num_gaps)
    if arrival == "gamma":
        return rng.gamma(burstiness, 1.0 / (rate * burstiness), size=num_gaps)
    return np.full(num_gaps, 1.0 / rate)


def seed_streams(seed: int) -> list[np.random.Generator]:
    """The independent streams one seed is split into: arrivals, prompt lengths, output lengths, sampling
    mix, prefix groups, priorities (`traces.generator.generate`, in that order)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(NUM_STREAMS)]


class ArrivalSpecError(ValueError):
    """A bad arrival spec. str() is `arrivals: reason`; `reason` alone is for a caller that names the field
    itself (`--arrivals`, a sweep spec's trace.arrivals)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"arrivals: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class ArrivalSpec:
    """Arrival times for a trace that has none: `kind` poisson, gamma or constant at `rate` req/s;
    gamma gaps have coefficient of variation `cv` (shape 1/cv**2, vLLM's burstiness; cv 1 is Poisson)."""

    kind: str
    rate: float
    cv: float = 1.0

    def __post_init__(self) -> None:
        for ok, reason in ((self.kind in ARRIVALS, f"unknown kind {self.kind!r} (expected one of {', '.join(ARRIVALS)})"),
                           (math.isfinite(self.rate) and self.rate > 0, f"rate must be a finite number > 0, got {self.rate:g}"),
                           (math.isfinite(self.cv) and self.cv > 0, f"cv must be a finite number > 0, got {self.cv:g}")):
            if not ok:
                raise ArrivalSpecError(reason)

    @classmethod
    def parse(cls, text: str) -> "ArrivalSpec":
        """`poisson:RATE`, `gamma:RATE:CV` or `constant:RATE`."""
        kind, *numbers = text.strip().split(":")
        wanted = 2 if kind == "gamma" else 1
        try:
            if kind not in ARRIVALS or len(numbers) != wanted:
                raise ValueError
            values = [float(x) for x in numbers]
        except ValueError:
            raise ArrivalSpecError(f"expected poisson:RATE, gamma:RATE:CV or constant:RATE, got {text!r}") from None
        return cls(kind, *values)

    def describe(self) -> str:
        cv = f", cv {self.cv:g}" if self.kind == "gamma" else ""
        return f"{self.kind} arrivals at {self.rate:g} req/s{cv}"

    def times(self, num_requests: int, seed: int) -> np.ndarray:
        """`num_requests` arrival times from 0, seeded by `seed`."""
        gaps = arrival_gaps(seed_streams(seed)[0], num_requests - 1, self.kind, self.rate, 1.0 / self.cv**2)
        return np.concatenate([[0.0], np.cumsum(gaps)])[:num_requests]
