"""Service-level objectives: the `--goodput ttft:MS tpot:MS e2el:MS` syntax of vLLM's serving benchmark.

A request is *good* when it finished and every SLO given holds with `<=` (vLLM's rule). TPOT is taken as 0
for a request with a single output token, so the TPOT SLO never fails it (also vLLM's rule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

SLO_NAMES: tuple[str, ...] = ("ttft", "tpot", "e2el")
DEFAULT_ATTAINMENT = 0.9  # share of requests that must meet the SLOs for a load to count


@dataclass(frozen=True)
class SLO:
    """Latency bounds in milliseconds; None leaves that metric unconstrained."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None

    def __post_init__(self) -> None:
        for name in SLO_NAMES:
            value = getattr(self, f"{name}_ms")
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"goodput: {name}: SLO must be a positive number of milliseconds, got {value!r}")

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, f"{name}_ms") is None for name in SLO_NAMES)

    def items(self) -> list[tuple[str, float]]:
        """The constrained metrics as (name, milliseconds), in SLO_NAMES order."""
        return [(name, float(v)) for name in SLO_NAMES if (v := getattr(self, f"{name}_ms")) is not None]

    def goodput_args(self) -> tuple[str, ...]:
        """The `--goodput` words for these bounds: `("ttft:2000", "tpot:100")`."""
        return tuple(f"{name}:{ms:g}" for name, ms in self.items())

    def describe(self) -> str:
        """`ttft<=2000ms, tpot<=100ms`, or `none` for an empty SLO."""
        return ", ".join(f"{name}<={ms:g}ms" for name, ms in self.items()) or "none"

    def as_args(self) -> list[str]:
        """The `--goodput` arguments that parse back to this SLO."""
        return [f"{name}:{ms:g}" for name, ms in self.items()]


def parse_goodput(items: Sequence[str]) -> SLO:
    """Parse vLLM-style `ttft:MS tpot:MS e2el:MS` pairs (any subset, each name at most once)."""
    values: dict[str, float] = {}
    for item in items:
        name, sep, raw = item.partition(":")
        name = name.strip().lower()
        if not sep:
            raise ValueError(f"goodput: {item!r}: expected NAME:MILLISECONDS, e.g. ttft:2000")
        if name not in SLO_NAMES:
            raise ValueError(f"goodput: unknown SLO {name!r}; valid names: {', '.join(SLO_NAMES)}")
        if name in values:
            raise ValueError(f"goodput: {name}: given twice")
        try:
            values[name] = float(raw)
        except ValueError:
            raise ValueError(f"goodput: {name}: {raw!r} is not a number of milliseconds") from None
    return SLO(**{f"{name}_ms": ms for name, ms in values.items()})


# Used where no SLO is given: a chat-style bound on waiting for the first token and on decode pace.
DEFAULT_SLO = SLO(ttft_ms=2000, tpot_ms=100)
