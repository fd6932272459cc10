"""Shared test setup: one CPU thread per test process, Triton's interpreter when there is no GPU, and
hypothesis profiles."""
from __future__ import annotations

import os

# Tests run small tensors, often two processes (`-n 2`) on a shared machine: torch's second OpenMP thread
# only spin-waits (the execute backend's tests spent ~40% of their CPU time so). Set before torch loads;
# an explicit OMP_NUM_THREADS wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
