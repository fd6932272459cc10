"""pagedlab traces: a request schema, loaders for the public trace formats, seeded generators, and
validation that never loses a request silently.

    from traces import Request, Trace, load, generate

Exports resolve lazily so that importing `traces.cli` (every `pagedlab` start) does not pull in
pandas.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from traces.catalog import FORMATS

if TYPE_CHECKING:
    from traces.generator import LENGTH_PRESETS, generate
    from traces.loader import load
    from traces.request import Request
    from traces.trace import Trace

_EXPORTS = {
    "Request": "traces.request",
    "Trace": "traces.trace",
    "load": "traces.loader",
    "generate": "traces.generator",
    "LENGTH_PRESETS": "traces.generator",
}
__all__ = ["FORMATS", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value  # resolve once
        return value
    raise AttributeError(f"module 'traces' has no attribute {name!r}")
