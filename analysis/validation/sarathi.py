"""Case 5: Sarathi-Serve's capacity against vLLM (V0) under a P99 TBT SLO, Mistral-7B on one A100-80GB.

Published (Agrawal et al., OSDI'24, abstract and Sec. 5.1 / Fig. 10): Sarathi-Serve serves up to 2.6x the
capacity of vLLM for Mistral-7B on one A100 within the SLO. Setting from the paper: Poisson arrivals;
arxiv-summarization and (openchat) ShareGPT4 workloads; strict P99 TBT SLO 0.1 s with a token budget of 512,
relaxed 0.5 s with 2048. Capacity: the highest rate with P99 TBT within the SLO and median scheduling delay
under 2 s; we bound the median TTFT by 2 s instead (TTFT >= scheduling delay, so ours is stricter).
Our bands: every setting's ratio >= 1 (the paper reports a gain in each), and the largest within 2.6x +- 25%.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.validation.case import VLLM_V0, CheckResult
from analysis.validation.ops import DATA_DIR
from analysis.validation.search import bisect_capacity, replay_metrics

SOURCE = ("Agrawal et al., Sarathi-Serve (OSDI'24), abstract ('up to 2.6x ... Mistral-7B on a single A100'), "
          "Sec. 5.1 / Fig. 10, Table 3 (P99 TBT SLOs); arxiv lengths: data/vidur/"
          "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv")
ENGINE = {"model": "mistral-7b", "gpu": "a100-80gb", "max_num_seqs": 128}
SLOS = {"strict": (100.0, 512), "relaxed": (500.0, 2048)}  # name -> (P99 TBT ms, Sarathi token budget)
MEDIAN_TTFT_MS = 2000.0
REQUESTS = {"arxiv": 400, "sharegpt": 1000}
SEARCH = {"arxiv": (0.5, 2.0), "sharegpt": (4.0, 16.0)}  # starting bracket (req/s) of the bisection
STEPS = 4
WORKLOADS = ("arxiv", "sharegpt")
QUICK = (("arxiv", "strict"),)
NOTES = {
    "arxiv": "Vidur's arxiv file is filtered to <= 4096 total tokens (median prompt 2730), shorter than the "
             "paper's arxiv-summarization (median prompt about 7k tokens, from its Table 2 as summarized).",
    "sharegpt": "our ShareGPT-like lengths (mean prompt 161, PagedAttention's ShareGPT) are about ten times shorter "
                "than the paper's openchat_sharegpt4 prompts, so prefill stalls are short and vLLM loses little: "
                "this setting does not reproduce the paper's; a ShareGPT4 length sample would.",
}
LARGEST_MISS = ("ours is above the published gain. The cost model is 20-50% fast for GEMMs of 128-512 tokens "
                "(case 1: no transition between the memory- and compute-bound regimes, no launch floor), which is "
                "exactly a Sarathi hybrid step of a 512-token budget, so our Sarathi steps are too cheap and its "
                "capacity too high; vLLM's long prefills sit in the compute-bound region the model gets right. Fix: "
                "the smooth roofline / per-GPU table of case 1; then re-check this ratio.")
ARXIV_FILE = DATA_DIR / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"


def workload(name: str, seed: int = 0):
    """`REQUESTS[name]` requests at 1 req/s (Poisson; rescaled per load)."""
    from traces import Trace, generate

    num = REQUESTS[name]
    if name == "sharegpt":
        return generate(num, rate=1.0, lengths="sharegpt", seed=seed)
    lengths = pd.read_csv(ARXIV_FILE)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(lengths), size=num, replace=False)
    gaps = rng.exponential(1.0, size=num - 1)
    frame = pd.DataFrame({"arrival_s": np.concatenate([[0.0], np.cumsum(gaps)]),
                          "prompt_tokens": lengths["num_prefill_tokens"].to_numpy()[pick],
                          "output_tokens": lengths["num_decode_tokens"].to_numpy()[pick]})
    return Trace.from_pandas(frame, source=f"{ARXIV_FILE.name} ({num} sampled, seed {seed})")


def capacity(trace, policy: str, slo: str, bracket: tuple[float, float]):
    tbt_ms, budget = SLOS[slo]
    engine = dict(ENGINE, prefill_chunk_tokens=budget)

    def evaluate(rate: float):
        row = replay_metrics(trace, rate, policy, **engine)
        ok = row["p99_itl_ms"] <= tbt_ms and row["median_ttft_ms"] <= MEDIAN_TTFT_MS and row["rejected"] == 0
        return ok, row

    return bisect_capacity(evaluate, lo=bracket[0], hi=bracket[1], steps=STEPS)


def run(quick: bool, out_dir: Path) -> list[CheckResult]:
    settings = QUICK if quick else tuple((w, s) for w in WORKLOADS for s in SLOS)
    rows, ratios = [], {}
    for name, slo in settings:
        trace = workload(name)
        caps = {}
        for policy in (VLLM_V0, "sarathi"):
            search = capacity(trace, policy, slo, SEARCH[name])
            caps[policy] = search.capacity
            rows += [dict(workload=name, slo=slo, policy=policy, **r) for r in search.rows]
        ratios[(name, slo)] = (caps["sarathi"] / caps[VLLM_V0], caps)
    pd.DataFrame(rows)[["workload", "slo", "policy", "load", "passed", "p99_itl_ms", "median_ttft_ms",
                        "rejected", "preemptions"]].to_csv(out_dir / "sarathi_capacity.csv", index=False,
                                                           float_format="%.6g")
    checks = []
    for (name, slo), (ratio, caps) in ratios.items():
        tbt_ms, budget = SLOS[slo]
        checks.append(CheckResult(
            case="5", check=f"{name} {slo} sarathi / {VLLM_V0}", source=SOURCE,
            setting=f"Mistral-7B / A100-80GB, {name} lengths, {REQUESTS[name]} Poisson requests, P99 TBT <= {tbt_ms:g} ms, "
                    f"median TTFT <= 2 s; sarathi budget {budget}, {VLLM_V0} max_num_seqs 128 (capacities: "
                    f"sarathi {caps['sarathi']:.3g}, {VLLM_V0} {caps[VLLM_V0]:.3g} req/s)",
            metric="capacity ratio", published="a gain in every setting", band_lo=1.0, band_hi=None,
            ours=ratio, unit="x", reason=NOTES.get(name, "")))
    if not quick:
        best = max(ratios, key=lambda k: ratios[k][0])
        checks.append(CheckResult(
            case="5", check="largest sarathi / vllm gain", source=SOURCE,
            setting=f"the four settings above; largest at {best[0]} {best[1]}",
            metric="largest capacity ratio", published="up to 2.6x", band_lo=1.95, band_hi=3.25,
            ours=ratios[best][0], unit="x", expect_pass=False, reason=LARGEST_MISS))
    return checks
