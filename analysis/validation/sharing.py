"""Case 3: memory saved by block sharing, PagedAttention (Kwon et al., SOSP'23) Sec. 6.3 / Fig. 15.

Published (text of Sec. 6.3): over beam widths / sample counts 2, 4 and 6, parallel sampling saves 6.1-9.8% of
KV memory on Alpaca and 16.2-30.5% on ShareGPT; beam search saves 37.6-55.2% on Alpaca and 44.3-66.3% on
ShareGPT. Each range spans the three widths, so each of our three values must lie inside it. The paper's metric
(Sec. 6.3): "the number of blocks we saved by sharing divided by the number of total blocks without sharing",
in the Fig. 14 serving runs (OPT-13B, vLLM); it states no request rate or averaging window. Ours:
`sim.paper.sharing_table` (the simulator's `sharing_saved_fraction`: 1 - time-integral of blocks held over the
time-integral of blocks the sequences would hold without sharing), OPT-13B on A100-40GB, `vllm-v0`, Alpaca-like
and ShareGPT-like synthetic lengths; the value does not move with the load (docs/validation.md).
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
# Known misses (found on the first run of this case, 2026-12-02; kept as expectations so a change shows). Both
# kinds follow from one identity: a group of n sequences that share a fraction S of each sequence's block-time
# saves (n-1)/n * S. `shared_fraction` in sharing.csv is that S (saving * n / (n-1)); the published ranges,
# read as width 2 at the low end and width 6 at the high end (Fig. 15's bars rise with the width), imply S.
_LENGTHS_WHY = ("parallel samples share only the prompt's full blocks, so the saving is (n-1)/n times S, the prompt's"
                " share of a sequence's block-time: a statistic of the length distribution alone. The published range"
                " implies S = 12.2% (width 2) and 11.8% (width 6) on Alpaca, 32.4% and 36.6% on ShareGPT; our "
                "lognormal lengths (means from Fig. 11, spreads our reading of its histograms, traces/generator.py) "
                "give 14.6% and 30-32%. Measured: the saving does not move with the load (Alpaca 2-30 req/s, ShareGPT"
                " 0.5-4 req/s: within 0.9 points) and moves about 1 point between seeds, so the lengths are the miss;"
                " the fix is the datasets' per-request (prompt, output) lengths under OPT's tokenizer, replayed as a "
                "length table instead of the lognormals (not shipped), not spreads tuned on this figure.")
_BEAM_WHY = ("beams save (n-1)/n times S, the shared share of a beam's block-time; the published range implies S = 75%"
             " (width 2) and 66% (width 6) on Alpaca, 89% and 80% on ShareGPT (real beams keep private suffixes, "
             "longer as the width grows), ours 76%/74% and 96%/96%. Our beam model keeps vLLM V0's mechanics (each "
             "step the beams that lost are freed and the survivors forked, copy-on-write of the last block) but draws "
             "the losers at random (beam_replace_prob=0.25, sim/config.py) instead of taking vLLM's top candidates by "
             "cumulative log-probability; measured, the rate hardly matters: from 0.1 to 1.0 per step width 6 reads "
             "54-66% (Alpaca) and 78-80% (ShareGPT), and only no re-selection at all (0) drops to the parallel-"
             "sampling value; at 0.1 Alpaca's S falls from 72% to 65% as the paper's does, but ShareGPT's stays at "
             "94-95%. No single rate fits both datasets; the fix is vLLM's selection rule (keep the n best of the "
             "beams' continuations by cumulative log-probability) replayed over per-step candidate log-probabilities "
             "recorded from a real model's beam search on the two datasets' prompts (a GPU run we have not made), "
             "not a rate fitted to this figure.")
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
    table["shared_fraction"] = table["sharing_saved_fraction"] * table["width"] / (table["width"] - 1)
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
