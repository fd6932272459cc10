"""One validation check: its source, setting, published band, our value and the verdict.

A check *passes* when our value lies in `[band_lo, band_hi]` (inclusive; None leaves a side open). Every check
also says what we expect: `expect_pass=False` marks a known miss, with `reason` saying why it misses and what
would fix it. The verdict then reads:

- `pass`: expected to pass and passes;
- `FAIL`: expected to pass and fails (a regression: the test suite fails on it);
- `expected-fail`: a known miss that still misses;
- `unexpected-pass`: a known miss that now passes (update the expectation and the docs).

`used_for_fitting` marks a check whose published number supplied a model constant: it is reported but does not
count as validation.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

VERDICTS: tuple[str, ...] = ("pass", "FAIL", "expected-fail", "unexpected-pass")
RESULT_COLUMNS: tuple[str, ...] = (
    "case", "check", "source", "setting", "metric", "published", "band_lo", "band_hi", "ours", "unit",
    "in_band", "expect_pass", "verdict", "used_for_fitting", "reason",
)

# The V0-style vLLM scheduler (prefill-first, no chunking) that PagedAttention and Sarathi-Serve compared
# against. One name, so the rename when a V1 policy lands is one line.
VLLM_V0 = "vllm-v0"


@dataclass(frozen=True)
class CheckResult:
    case: str            # "1", "2", ... (docs/validation.md's numbering)
    check: str           # short id inside the case, e.g. "h100-llama-2-7b layer"
    source: str          # paper / section / figure, or data file
    setting: str         # model, GPU, workload, policy, SLO
    metric: str          # what is compared
    published: str       # the published value or band, as the source states it
    band_lo: float | None
    band_hi: float | None
    ours: float
    unit: str = ""
    expect_pass: bool = True
    used_for_fitting: bool = False
    reason: str = ""     # why a known miss misses and what fixes it; or a note on the setting

    def __post_init__(self) -> None:
        assert self.band_lo is not None or self.band_hi is not None, "a band needs at least one side"
        if self.band_lo is not None and self.band_hi is not None:
            assert self.band_lo <= self.band_hi, f"{self.check}: band_lo > band_hi"
        assert self.expect_pass or self.reason, f"{self.check}: a known miss must say why"

    @property
    def in_band(self) -> bool:
        if not math.isfinite(self.ours):
            return False
        return ((self.band_lo is None or self.ours >= self.band_lo)
                and (self.band_hi is None or self.ours <= self.band_hi))

    @property
    def verdict(self) -> str:
        if self.expect_pass:
            return "pass" if self.in_band else "FAIL"
        return "unexpected-pass" if self.in_band else "expected-fail"

    def row(self) -> dict:
        out = asdict(self)
        out.update(in_band=self.in_band, verdict=self.verdict)
        return {k: out[k] for k in RESULT_COLUMNS}


def band_text(lo: float | None, hi: float | None, fmt: str = "{:.3g}") -> str:
    if lo is None:
        return "<= " + fmt.format(hi)
    if hi is None:
        return ">= " + fmt.format(lo)
    return f"{fmt.format(lo)} .. {fmt.format(hi)}"
