"""Case 5: Sarathi-Serve's capacity against vLLM (V0) under a P99 TBT SLO, Mistral-7B on one A100-80GB.

Published (Agrawal et al., OSDI'24, abstract; capacity in Figs. 5-6, the artifact's "Capacity Search (Figures
5-6)"): Sarathi-Serve "improves serving throughput within desired latency SLOs of Mistral-7B by up to 2.6x on a
single A100 GPU ... over Orca and vLLM". Settings from the paper's artifact
(microsoft/sarathi-serve @02d2567, osdi-experiments/figure-5-6/mistral7b_{strict,relaxed}.yml and README.md):
strict P99 TBT 0.1 s with a Sarathi chunk of 512, relaxed 0.5 s with 2048; vLLM batch size 128; 2048 requests
per run, Poisson arrivals; arxiv-summarization and ShareGPT (8k-filtered) traces; A100 80GB PCIe; each trace's
`max_seq_len` (arxiv 16384, chat 8192) is both the model's max_model_len and vLLM's max_batched_tokens
(sarathi/benchmark/capacity_search/config/config.py, `TraceConfig.to_config_dict`). Capacity
(sarathi/benchmark/capacity_search/capacity_search.py `_is_under_sla`, main.py defaults): P99 TBT <= SLO and
median scheduling delay <= 2 s, found by binary search. The TBT samples are every sequence's
`last_token_generation_time` after each token, which is 0 for its first token (sarathi/core/datatypes/
sequence_state.py `on_token_generated`): every inter-token gap plus one zero per request, as `artifact_p99_tbt_ms`
computes. We bound the median TTFT by 2 s instead of the scheduling delay (TTFT >= scheduling delay, so ours is
a little stricter: our request records have no first-scheduled time).
Both systems ran in the Sarathi-Serve engine (the artifact's capacity search runs `sarathi.benchmark` with
scheduler `vllm` or `sarathi`), eager (sarathi/model_executor/model_runner.py captures no CUDA graph) and
synchronous; its host time per step is Vidur's measurement of that engine on an A100 (microsoft/vidur
data/profiling/a100/cpu_overheads.csv, vidur/profiling/cpu_overhead/benchmark_runner.py: sarathi's LLMEngine,
scheduler_type "vllm", Llama-2-7B, decode batches 8-64), summed as Vidur does and fitted linear in the batch size
(`engine_host_fit`, entered as the profile data/validation/sarathi-serve-a100.json).
Our bands: every setting's ratio >= 1 (the paper reports a gain in each), and the largest within 2.6x +- 25%.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from analysis.validation.case import VLLM_V0, CheckResult
from analysis.validation.ops import DATA_DIR
from analysis.validation.search import Search, bisect_capacity

if TYPE_CHECKING:
    from traces import Trace

SOURCE = ("Agrawal et al., Sarathi-Serve (OSDI'24), abstract ('up to 2.6x on a single A100 ... over Orca and "
          "vLLM', Mistral-7B) and Figs. 5-6 (capacity); settings from its artifact microsoft/sarathi-serve@02d2567 "
          "osdi-experiments/figure-5-6 "
          "(mistral7b_strict.yml, mistral7b_relaxed.yml, README.md) and sarathi/benchmark/capacity_search; arxiv "
          "lengths: data/vidur/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv")
# Both systems ran in the Sarathi-Serve engine (vLLM as its scheduler_type "vllm"), which runs the model eagerly
# (sarathi/model_executor/model_runner.py: no CUDA-graph capture) and synchronously; its host time per step is Vidur's
# measurement of that engine (data/validation/sarathi-serve-a100.json, derived by `engine_host_fit`).
HOST_PROFILE = Path(__file__).resolve().parents[2] / "data" / "validation" / "sarathi-serve-a100.json"
ENGINE = {"model": "mistral-7b", "gpu": "a100-80gb", "max_num_seqs": 128, "cost_profile": str(HOST_PROFILE),
          "cuda_graph_sizes": (), "async_scheduling": False}
SLOS = {"strict": (100.0, 512), "relaxed": (500.0, 2048)}  # name -> (P99 TBT ms, Sarathi token budget)
MEDIAN_TTFT_MS = 2000.0
REQUESTS = {"arxiv": 2048, "sharegpt": 2048}  # the artifact's num_requests
MAX_SEQ_LEN = {"arxiv": 16384, "sharegpt": 8192}  # the artifact's max_seq_len per trace (chat = sharegpt)
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
LARGEST_MISS = ("ours is above the published gain (and the paper's 2.6x is its largest over Orca and vLLM together). "
                "Measured mechanism: at its capacity vllm-v0 is bound by the P99 TBT (each prefill of an arxiv prompt"
                " stalls every running decode past 100 ms, and the share of stalled gaps grows with the rate), "
                "sarathi by the 2 s median TTFT (its throughput). Both run the Sarathi-Serve engine's measured host "
                "time (Vidur's A100 profile of that engine, 1.33 ms + 0.105 ms per request a step) and no CUDA graphs, "
                "as the artifact did; V0's 4 ms a step (vLLM RFC #6854, a different engine) gave 4.76x. Slower steps "
                "lower both capacities, so neither the cost model's speed nor host time pulls the ratio down to 2.6x; "
                "the workload can: our arxiv prompts come from Vidur's <= 4096-token filter (median 2730) while the "
                "artifact's trace allows 16384 tokens; as a diagnostic (not adopted, before the engine's host time), "
                "the same requests with prompts x2.5 (median 6750) gave 1.83x. Fix: the artifact's arxiv trace "
                "(arxiv_summarization_filtered_stats_llama2_tokenizer.csv, not in Vidur's repository); not by fitting.")
ARXIV_FILE = DATA_DIR / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
HOST_FILE = DATA_DIR / "a100-cpu_overheads-Llama-2-7b-tp1.csv"
HOST_STEP_MS, HOST_REQUEST_MS = 1.33, 0.105  # the profile's host_step_s, host_per_request_s in ms (a test re-fits)
# Vidur's CPU overhead of a step (vidur/entities/execution_time.py `_get_cpu_overhead`), medians in ms.
HOST_COLUMNS = ("SCHEDULE_MEDIAN", "SAMPLER_E2E_MEDIAN", "PREPARE_INPUTS_E2E_MEDIAN", "PROCESS_MODEL_OUTPUTS_MEDIAN",
                "RAY_COMM_TIME_MEDIAN")


def engine_host_fit() -> tuple[float, float]:
    """(seconds per step, seconds per request) of the Sarathi-Serve engine's host work: least squares over
    Vidur's A100 measurements (Llama-2-7B, tp 1, decode batches of 8-64 requests)."""
    table = pd.read_csv(HOST_FILE)
    total_ms = table[list(HOST_COLUMNS)].sum(axis=1).to_numpy()
    design = np.column_stack([np.ones(len(table)), table["batch_size"].to_numpy(dtype=float)])
    (step_ms, per_request_ms), *_ = np.linalg.lstsq(design, total_ms, rcond=None)
    return step_ms / 1e3, per_request_ms / 1e3


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


def artifact_p99_tbt_ms(itl_s: np.ndarray, first_tokens: int) -> float:
    """P99 of the artifact's TBT samples: every inter-token gap, and a 0 for each request's first token."""
    samples = np.concatenate([np.asarray(itl_s, dtype=float), np.zeros(first_tokens)])
    return float(np.percentile(samples, 99)) * 1000.0 if samples.size else float("nan")


def engine_settings(name: str, slo: str) -> dict:
    """`EngineConfig` fields of the artifact's run of trace `name` under `slo` (both policies)."""
    seq_len = MAX_SEQ_LEN[name]
    return dict(ENGINE, prefill_chunk_tokens=SLOS[slo][1], max_model_len=seq_len, max_num_batched_tokens=seq_len)


def replay_row(trace: "Trace", rate: float, policy: str, engine: dict) -> dict[str, float]:
    """One replay at `rate` req/s: its metrics row (vLLM names) and the artifact's P99 TBT."""
    from sim import EngineConfig, replay

    from analysis.compare import load_points, trace_rate
    from analysis.runs import RunData, run_metrics

    point = load_points(trace_rate(trace), rates=[rate], source=trace.source)[0]
    run = RunData.from_result(replay(trace.scale_rate(point.scale), EngineConfig(**engine), policy=policy, seed=0))
    row = run_metrics(run)
    first_tokens = int(run.requests["first_token_s"].notna().sum())
    row.update(p99_tbt_ms=artifact_p99_tbt_ms(run.itl_s, first_tokens), preemptions=run.summary["preemptions"])
    return row


def capacity(trace: "Trace", policy: str, slo: str, bracket: tuple[float, float], name: str) -> Search:
    tbt_ms = SLOS[slo][0]
    engine = engine_settings(name, slo)

    def evaluate(rate: float):
        row = replay_row(trace, rate, policy, engine)
        ok = row["p99_tbt_ms"] <= tbt_ms and row["median_ttft_ms"] <= MEDIAN_TTFT_MS and row["rejected"] == 0
        return ok, row

    return bisect_capacity(evaluate, lo=bracket[0], hi=bracket[1], steps=STEPS)


def run(quick: bool, out_dir: Path) -> list[CheckResult]:
    settings = QUICK if quick else tuple((w, s) for w in WORKLOADS for s in SLOS)
    rows, ratios = [], {}
    for name, slo in settings:
        trace = workload(name)
        caps = {}
        for policy in (VLLM_V0, "sarathi"):
            search = capacity(trace, policy, slo, SEARCH[name], name)
            caps[policy] = search.capacity
            rows += [dict(workload=name, slo=slo, policy=policy, **r) for r in search.rows]
        ratios[(name, slo)] = (caps["sarathi"] / caps[VLLM_V0], caps)
    pd.DataFrame(rows)[["workload", "slo", "policy", "load", "passed", "p99_tbt_ms", "p99_itl_ms", "median_ttft_ms",
                        "rejected", "preemptions"]].to_csv(out_dir / "sarathi_capacity.csv", index=False,
                                                           float_format="%.6g")
    checks = []
    for (name, slo), (ratio, caps) in ratios.items():
        tbt_ms, budget = SLOS[slo]
        checks.append(CheckResult(
            case="5", check=f"{name} {slo} sarathi / {VLLM_V0}", source=SOURCE,
            setting=f"Mistral-7B / A100-80GB, {name} lengths, {REQUESTS[name]} Poisson requests, "
                    f"P99 TBT <= {tbt_ms:g} ms, median TTFT <= 2 s; sarathi budget {budget}, {VLLM_V0} "
                    f"max_num_seqs 128, max_model_len = max_num_batched_tokens = {MAX_SEQ_LEN[name]}; both in the "
                    f"Sarathi-Serve engine: eager, synchronous, host {HOST_STEP_MS:.2f} ms + {HOST_REQUEST_MS:.3f} ms per "
                    f"request a step (Vidur's A100 profile of that engine) "
                    f"(capacities: sarathi {caps['sarathi']:.3g}, "
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
