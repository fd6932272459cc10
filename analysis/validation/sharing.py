"""Case 3: memory saved by block sharing, PagedAttention (Kwon et al., SOSP'23) Sec. 6.3 / Fig. 15.

Published (text of Sec. 6.3): over beam widths / sample counts 2, 4 and 6, parallel sampling saves 6.1-9.8% of
KV memory on Alpaca and 16.2-30.5% on ShareGPT; beam search saves 37.6-55.2% on Alpaca and 44.3-66.3% on
ShareGPT. Each range spans the three widths, so each of our three values must lie inside it. Ours:
`sim.paper.sharing_table` (the simulator's `sharing_saved_fraction`: time-weighted blocks used with sharing
against without), OPT-13B on A100-40GB, `vllm-v0`, Alpaca-like and ShareGPT-like synthetic lengths.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.validation.case import VLLM_V0, CheckResult
from analysis.validation.figures import plot_sharing

WIDTHS = (2, 4, 6)
SOURCE = "Kwon et al., PagedAttention (SOSP'23), Sec. 6.3 and Fig. 15 (memory saving by sharing)"
PUBLISHED = {  # (lengths, sampling) -> (low, high) over widths 2, 4, 6
    ("alpaca", "parallel"): (0.061, 0.098),
    ("alpaca", "beam"): (0.376, 0.552),
    ("sharegpt", "parallel"): (0.162, 0.305),
    ("sharegpt", "beam"): (0.443, 0.663),
}
# Known misses (found on the first run of this case, 2026-12-02; kept as expectations so a change shows).
_LENGTHS_WHY = ("our Alpaca/ShareGPT lengths are lognormals fitted to the paper's mean lengths with guessed spreads "
                "(traces/generator.py), and the saving of parallel sampling is the shared prompt's share of each "
                "group's blocks, so it follows the prompt/output length mix; the fix is the real datasets' length "
                "samples (not shipped) rather than tuning the spreads on this figure.")
_BEAM_WHY = ("our beam model (each step a beam is replaced by a fork of another with probability "
             "beam_replace_prob=0.25, sim/config.py) keeps beams sharing longer prefixes than the paper's real beam "
             "search, so sharing saves more as the width grows; the fix is a beam-divergence rate measured on real "
             "beam search (an engine trace), not one fitted to this figure.")
KNOWN_MISSES = {
    ("sharegpt", "parallel", 2): _LENGTHS_WHY,
    ("alpaca", "parallel", 4): _LENGTHS_WHY,
    ("alpaca", "parallel", 6): _LENGTHS_WHY,
    ("alpaca", "beam", 4): _BEAM_WHY,
    ("alpaca", "beam", 6): _BEAM_WHY,
    ("sharegpt", "beam", 4): _BEAM_WHY,
    ("sharegpt", "beam", 6): _BEAM_WHY,
}
REQUESTS = 200
QUICK_WIDTHS = (2, 6)  # --quick: the ends of the published ranges, same settings as the full run


def run(quick: bool, out_dir: Path) -> list[CheckResult]:
    from sim.paper import sharing_table

    assert sharing_table.__module__ == "sim.paper"
    requests = REQUESTS
    widths = QUICK_WIDTHS if quick else WIDTHS
    table = pd.concat([sharing_table(requests, width=w).assign(width=w) for w in widths], ignore_index=True)
    table.to_csv(out_dir / "sharing.csv", index=False, float_format="%.6g")
    plot_sharing(table, PUBLISHED, out_dir / "sharing.png")
    checks = []
    for row in table.itertuples():
        lo, hi = PUBLISHED[(row.lengths, row.sampling)]
        miss = KNOWN_MISSES.get((row.lengths, row.sampling, row.width), "")
        checks.append(CheckResult(
            case="3", check=f"{row.lengths} {row.sampling} width {row.width}", source=SOURCE,
            setting=f"OPT-13B / A100-40GB, {VLLM_V0}, {row.lengths}-like lengths, {requests} requests at 2 req/s",
            metric="KV memory saved by sharing", published=f"{lo:.1%}-{hi:.1%} over widths 2-6",
            band_lo=lo, band_hi=hi, ours=float(row.sharing_saved_fraction), unit="fraction",
            expect_pass=not miss, reason=miss))
    return checks
