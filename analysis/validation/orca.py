"""Case 2: request rate at equal normalized latency, vLLM against Orca, PagedAttention (SOSP'23) Fig. 12.

Published (Sec. 6.2, Fig. 12a, ShareGPT, OPT-13B on one A100-40GB): vLLM sustains 1.7-2.7x the request rate of
Orca (Oracle) and 2.7-8x that of Orca (Max) at the same normalized latency (E2E latency / output tokens). Ours:
the capacity of each policy = the highest rate at which mean normalized latency stays <= 0.5 s/token (Fig. 12
plots 0-1 s/token; latency is flat, then shoots up at the knee, so the threshold moves the knee little), found
by bisection over Poisson-arrival rates of one ShareGPT-like trace, then the ratio vLLM / Orca.
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
BANDS = {"orca-oracle": (1.7, 2.7), "orca-max": (2.7, 8.0)}
QUICK_BASELINES = ("orca-max",)
MISS = ("our Orca baselines reserve their blocks (prompt + true output for Oracle, the whole max_model_len "
        "context for Max) from the same paged pool as vLLM, so they suffer internal reservation waste but no "
        "external fragmentation; the paper's Orca allocates one contiguous buffer per request (and Orca Pow2 rounds "
        "it to a power of two). Fix: a contiguous-buffer KV layout with fragmentation for the Orca policies, plus "
        "Orca Pow2 (a sim/ KV-layout change, outside this case).")
KNOWN_MISSES = {"orca-oracle": MISS}
NOTE = ("in band although our Orca has no external fragmentation: Orca (Max) reserves the whole max_model_len "
        "context, so its reservation waste alone caps its batch; a contiguous layout would lower its capacity "
        "further. The ratio depends on the trace length (overload latency grows with it): 600 requests gave 6.2x, "
        "2000 give the figure here.")


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
            metric="request-rate ratio at equal normalized latency", published=f"{lo:g}-{hi:g}x",
            band_lo=lo, band_hi=hi, ours=ours / theirs, unit="x",
            expect_pass=policy not in KNOWN_MISSES, reason=KNOWN_MISSES.get(policy, NOTE)))
    return checks
