"""Options of `traces.generate` that the others make it ignore, for `pagedlab trace gen` and a sweep spec's
`[trace.generate]` alike: one rule set, each caller naming the options as its users write them.

Such an option would change nothing, silently (a `burstiness` with Poisson arrivals, an `input_len` with
ShareGPT's own lengths), so both refuse it.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from traces.catalog import PRESET_NAMES
from traces.generator import generate

# How a caller writes an option, set to a value (or bare with None): `--arrival gamma`, `arrival = "gamma"`.
Spell = Callable[[str, Any], str]

GENERATE_DEFAULTS: dict[str, Any] = {name: p.default for name, p in inspect.signature(generate).parameters.items()
                                     if p.default is not inspect.Parameter.empty}


def ignored_option(options: Mapping[str, Any], spell: Spell) -> tuple[str, str] | None:
    """The first of `options` (`generate`'s keyword arguments; those left out at its defaults) that the
    others make `generate` ignore, and why, in `spell`'s words; None when every option counts."""
    o, d = {**GENERATE_DEFAULTS, **options}, GENERATE_DEFAULTS
    own = (f"{spell('lengths', o['lengths'])} has its own lengths; give {spell('lengths', None)} fixed, "
           f"uniform or lognormal")
    preset = o["lengths"] in PRESET_NAMES
    rules = (
        ("burstiness", o["burstiness"] != d["burstiness"] and o["arrival"] != "gamma",
         f"it shapes gamma arrivals only: add {spell('arrival', 'gamma')}"),
        ("n", o["n"] != d["n"] and not (o["parallel_fraction"] or o["beam_fraction"]),
         f"it is the width of parallel and beam requests: add {spell('parallel_fraction', None)} or "
         f"{spell('beam_fraction', None)}"),
        ("prefix_tokens", o["prefix_tokens"] != d["prefix_tokens"] and o["num_prefix_groups"] == 0,
         f"it needs {spell('num_prefix_groups', None)}"),
        ("prefix_fraction", o["prefix_fraction"] != d["prefix_fraction"] and o["num_prefix_groups"] == 0,
         f"it needs {spell('num_prefix_groups', None)}"),
        ("sigma", o["sigma"] != d["sigma"] and o["lengths"] != "lognormal",
         f"it is the spread of {spell('lengths', 'lognormal')}"),
        ("range_ratio", o["range_ratio"] != d["range_ratio"] and o["lengths"] != "uniform",
         f"it is the spread of {spell('lengths', 'uniform')}"),
        ("input_len", o["input_len"] != d["input_len"] and preset, own),
        ("output_len", o["output_len"] != d["output_len"] and preset, own),
    )
    for name, ignored, why in rules:
        if ignored:
            return name, why
    return None
