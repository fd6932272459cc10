"""Case 2: request rate at equal normalized latency, vLLM against Orca, PagedAttention (SOSP'23) Fig. 12.

Published (Sec. 6.2, Fig. 12a, ShareGPT, OPT-13B on one A100-40GB): vLLM sustains 1.7-2.7x the request rate of
Orca (Oracle) and 2.7-8x that of Orca (Max) at the same normalized latency (E2E latency / output tokens); the text
gives no ratio for Orca (Pow2), whose reservation lies between the two (and its batch, Fig. 13: 9.81 requests
against Max's 7.00 on ShareGPT), so its band is the union, 1.7-8x. Ours: the
Orca policies keep one contiguous buddy-allocated buffer per sequence (`sim.kv_contiguous`, Sec. 6.1's
assumption), and the capacity of each policy = the highest rate at which mean normalized latency stays <= 0.5
s/token (Fig. 12 plots 0-1 s/token; latency is flat, then shoots up at the knee, so the threshold moves the
knee little), found by bisection over Poisson-arrival rates of one ShareGPT-like trace, then the ratio vLLM /
Orca.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.validation.case import VLLM_V0, CheckResult
from analysis.validation.figures import plot_normalized_latency
from analysis.validation.search import Search, bisect_capacity, replay_metrics

SOURCE = "Kwon et al., PagedAttention (SOSP'23), Sec. 6.2 and Fig. 12(a) (ShareGPT, OPT-13B, 1x A100-40GB)"
SETTING = {"model": "opt-13b", "gpu": "a100-40gb"}
NORMALIZED_LATENCY_S = 0.5
REQUESTS = 2000
STEPS = 5
BANDS = {"orca-oracle": (1.7, 2.7), "orca-pow2": (1.7, 8.0), "orca-max": (2.7, 8.0)}
PUBLISHED = {"orca-oracle": "1.7-2.7x", "orca-pow2": "between Oracle and Max (1.7-8x)", "orca-max": "2.7-8x"}
QUICK_BASELINES = ("orca-max",)
KNOWN_MISSES: dict[str, str] = {}
NOTE = ("The ratio depends on the trace length (overload latency grows with it); 2000 requests is our choice "
        "(the paper's trace length is not stated for this figure).")


def capacity(policy: str, seed: int = 0) -> Search:
    from traces import generate

    trace = generate(REQUESTS, rate=1.0, lengths="sharegpt", seed=seed)

    def evaluate(rate: float):
        row = replay_metrics(trace, rate, policy, seed, **SETTING)
        return row["mean_normalized_latency_s"] <= NORMALIZED_LATENCY_S, row

    return bisect_capacity(evaluate, lo=0.5, hi=2.0, steps=STEPS)


def run(quick: bool, out_dir: Path) -> list[CheckResult]:
    baselines = QUICK_BASELINES if quick else tuple(BANDS)
    searches = {p: capacity(p) for p in (VLLM_V0, *baselines)}
    rows = pd.DataFrame([dict(policy=p, **r) for p, s in searches.items() for r in s.rows])
    plot_normalized_latency(rows, NORMALIZED_LATENCY_S, out_dir / "orca_normalized_latency.png")
    rows[["policy", "load", "passed", "mean_normalized_latency_s", "completed", "rejected",
                        "slot_utilization", "preemptions"]].to_csv(out_dir / "orca_rates.csv", index=False,
                                                                     float_format="%.6g")
    ours = searches[VLLM_V0].capacity
    checks = []
    for policy in baselines:
        lo, hi = BANDS[policy]
        theirs = searches[policy].capacity
        checks.append(CheckResult(
            case="2", check=f"{VLLM_V0} / {policy} rate", source=SOURCE,
            setting=f"OPT-13B / A100-40GB, ShareGPT-like, {REQUESTS} requests, Poisson; capacity at mean "
                    f"normalized latency <= {NORMALIZED_LATENCY_S} s/token ({VLLM_V0} {ours:.3g} req/s, "
                    f"{policy} {theirs:.3g} req/s)",
            metric="request-rate ratio at equal normalized latency", published=PUBLISHED[policy],
            band_lo=lo, band_hi=hi, ours=ours / theirs, unit="x",
            expect_pass=policy not in KNOWN_MISSES, reason=KNOWN_MISSES.get(policy, NOTE)))
    return checks
