"""Shared test setup: Triton's interpreter when there is no GPU, and hypothesis profiles."""
from __future__ import annotations

import os

# Must be set before triton is first imported: without a GPU, kernels run in the interpreter.
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass

from hypothesis import HealthCheck, settings

# `ci` (default) keeps the suite fast; `thorough` is for a deliberate long run:
#   HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest tests/test_memory_stateful.py
settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
