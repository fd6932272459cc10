"""Case 5: Sarathi-Serve's capacity against vLLM (V0) under a P99 TBT SLO, Mistral-7B on one A100-80GB.

Published (Agrawal et al., OSDI'24, abstract and Sec. 5.1 / Fig. 10): Sarathi-Serve serves up to 2.6x the
capacity of vLLM for Mistral-7B on one A100 within the SLO. Settings from the paper's artifact
(microsoft/sarathi-serve @02d2567, osdi-experiments/figure-5-6/mistral7b_{strict,relaxed}.yml and README.md):
strict P99 TBT 0.1 s with a Sarathi chunk of 512, relaxed 0.5 s with 2048; vLLM batch size 128; 2048 requests
per run, Poisson arrivals; arxiv-summarization and ShareGPT (8k-filtered) traces; A100 80GB PCIe. Capacity
(sarathi/benchmark/capacity_search/capacity_search.py `_is_under_sla`, main.py defaults): P99 TBT <= SLO and
median scheduling delay <= 2 s, found by binary search. We bound the median TTFT by 2 s instead of the
scheduling delay (TTFT >= scheduling delay, so ours is a little stricter) and use P99 ITL as the TBT.
Our bands: every setting's ratio >= 1 (the paper reports a gain in each), and the largest within 2.6x +- 25%.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.validation.case import VLLM_V0, CheckResult
from analysis.validation.ops import DATA_DIR
from analysis.validation.search import Search, bisect_capacity, replay_metrics

if TYPE_CHECKING:
    from traces import Trace

SOURCE = ("Agrawal et al., Sarathi-Serve (OSDI'24), abstract ('up to 2.6x ... Mistral-7B on a single A100') and "
          "Fig. 10; settings from its artifact microsoft/sarathi-serve@02d2567 osdi-experiments/figure-5-6 "
          "(mistral7b_strict.yml, mistral7b_relaxed.yml, README.md) and sarathi/benchmark/capacity_search; arxiv "
          "lengths: data/vidur/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv")
ENGINE = {"model": "mistral-7b", "gpu": "a100-80gb", "max_num_seqs": 128}
SLOS = {"strict": (100.0, 512), "relaxed": (500.0, 2048)}  # name -> (P99 TBT ms, Sarathi token budget)
MEDIAN_TTFT_MS = 2000.0
REQUESTS = {"arxiv": 2048, "sharegpt": 2048}  # the artifact's num_requests
SEARCH = {"arxiv": (0.5, 2.0), "sharegpt": (4.0, 16.0)}  # starting bracket (req/s) of the bisection
STEPS = 4
WORKLOADS = ("arxiv", "sharegpt")
QUICK = (("arxiv", "strict"),)
NOTES = {
    "arxiv": "Vidur's arxiv file is filtered to <= 4096 total tokens (median prompt 2730); the paper's arxiv "
             "trace allows 16384 tokens (max_seq_len in its config), so its prompts can be longer. Our a100-80gb "
             "preset has the SXM part's 2.04 TB/s; the paper ran the PCIe part (1.94 TB/s).",
    "sharegpt": "our ShareGPT-like lengths (mean prompt 161 tokens: PagedAttention's OPT-tokenized ShareGPT) are much "
                "shorter than the paper's sharegpt_8k_filtered trace (whole conversations up to 8192 Llama-2 "
                "tokens; not shipped), so prefill stalls are short and vLLM loses little: this setting does not "
                "reproduce the paper's; that trace's length sample would.",
}
LARGEST_MISS = ("ours is above the published gain; the cause is not isolated. Candidates: (1) on the A100 the cost "
                "model is 15-54% fast for steps of 128-256 tokens, 17-27% for 1-64 and 4-13% for 512-4096 (case 1), "
                "so Sarathi's small hybrid steps are flattered more than vLLM's long prefills; (2) our arxiv prompts "
                "are shorter than the paper's (Vidur's <= 4096-token filter), which shortens vLLM's stalls and "
                "Sarathi's chunk count alike; (3) P99 ITL and median TTFT stand in for the artifact's decode-time and "
                "scheduling-delay metrics. Fix: the case-1 model change (smooth roofline or per-GPU tables) and the "
                "paper's arxiv trace, then re-check; not by fitting this ratio.")
ARXIV_FILE = DATA_DIR / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"


def workload(name: str, seed: int = 0) -> "Trace":
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


def capacity(trace: "Trace", policy: str, slo: str, bracket: tuple[float, float]) -> Search:
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
            setting=f"Mistral-7B / A100-80GB, {name} lengths, {REQUESTS[name]} Poisson requests, "
                    f"P99 TBT <= {tbt_ms:g} ms, median TTFT <= 2 s; sarathi budget {budget}, {VLLM_V0} "
                    f"max_num_seqs 128 (capacities: sarathi {caps['sarathi']:.3g}, "
                    f"{VLLM_V0} {caps[VLLM_V0]:.3g} req/s)",
            metric="capacity ratio", published="a gain in every setting", band_lo=1.0, band_hi=None,
            ours=ratio, unit="x", reason=NOTES.get(name, "")))
    if not quick:
        best = max(ratios, key=lambda k: ratios[k][0])
        checks.append(CheckResult(
            case="5", check="largest sarathi / vllm-v0 gain", source=SOURCE,
            setting=f"the four settings above; largest at {best[0]} {best[1]}",
            metric="largest capacity ratio", published="up to 2.6x", band_lo=1.95, band_hi=3.25,
            ours=ratios[best][0], unit="x", expect_pass=False, reason=LARGEST_MISS))
    return checks
