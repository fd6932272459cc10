"""What a comparison report says about how it was made: the command, trace, model, policies, loads and SLOs.

Both renderings (`analysis.report_render`) list `setup_lines`; the findings (`analysis.findings`) read the
loads and SLOs from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from analysis.slo import SLO


@dataclass
class ReportContext:
    """What the report says about how it was made."""

    command: str
    trace_description: str
    model: str
    gpu: str
    seed: int
    policies: Sequence[str]
    loads: Sequence[float]
    load_label: str  # "rate" (req/s) or "rate scale" (x the trace's own rate)
    slo: SLO
    slo_note: str  # where the SLOs came from
    target: float
    timeline_load: float
    notes: list[str] = field(default_factory=list)


def setup_lines(ctx: ReportContext) -> list[tuple[str, str]]:
    """(label, text) pairs, in the order both renderings list them."""
    return [
        ("command", ctx.command),
        ("trace", ctx.trace_description),
        ("model / GPU", f"{ctx.model} on {ctx.gpu}"),
        ("seed", str(ctx.seed)),
        ("policies", ", ".join(ctx.policies)),
        ("loads", f"{ctx.load_label} " + ", ".join(f"{x:g}" for x in ctx.loads)),
        ("SLOs", f"{ctx.slo.describe()} ({ctx.slo_note}); a load meets them when >= {100 * ctx.target:g}% of requests do"),
    ]

