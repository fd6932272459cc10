"""Names of the trace formats and generator options, importable without numpy or pandas so that
`pagedlab` starts fast (the CLI needs them for its help text)."""
from __future__ import annotations

FORMATS: tuple[str, ...] = ("native-csv", "native-jsonl", "azure", "burstgpt", "mooncake", "vidur")
ARRIVALS: tuple[str, ...] = ("poisson", "gamma", "constant")
LENGTH_DISTRIBUTIONS: tuple[str, ...] = ("fixed", "uniform", "lognormal")
PRESET_NAMES: tuple[str, ...] = ("sharegpt", "alpaca")
