"""The replay's output schema, defined once: file names and the column lists of its tables.

Everything that writes or reads a replay directory (`SimResult.write`, `analysis.runs`, the execute
backend's fidelity tool) names files and columns through this module.
"""
from __future__ import annotations

REQUESTS_CSV = "requests.csv"
STEPS_CSV = "steps.csv"
SUMMARY_JSON = "summary.json"
CONFIG_JSON = "config.json"
ITL_NPY = "itl.npy"
EXEC_STEPS_CSV = "exec_steps.csv"   # execute backend only: measured and predicted time of every step

# The five files every replay writes (execute adds EXEC_STEPS_CSV).
OUTPUT_FILES: tuple[str, ...] = (REQUESTS_CSV, STEPS_CSV, SUMMARY_JSON, CONFIG_JSON, ITL_NPY)

# requests.csv: one row per request, in trace order.
REQUEST_COLUMNS: tuple[str, ...] = (
    "request_id", "arrival_s", "first_token_s", "finish_s", "prompt_tokens", "output_tokens", "n", "sampling",
    "status", "reason", "ttft_s", "e2e_s", "preemptions", "swaps", "generated_tokens", "recomputed_tokens",
)

# steps.csv: one row per engine step.
STEP_COLUMNS: tuple[str, ...] = (
    "step", "start_s", "end_s", "duration_s", "num_prefill_tokens", "num_prefill_seqs", "num_decode_seqs",
    "batch_size", "num_generated_tokens", "num_running", "num_waiting", "num_swapped", "kv_blocks_used",
    "kv_blocks_free", "kv_tokens", "kv_slots_reserved", "kv_blocks_unshared", "cow_copies", "preemptions",
    "swaps_out", "swaps_in", "swap_out_blocks", "swap_in_blocks",
)

# exec_steps.csv: the measured step, and the analytic model's inputs and prediction for the same batch.
EXEC_STEP_COLUMNS: tuple[str, ...] = (
    "step", "measured_s", "predicted_s", "prefill_tokens", "prefill_seqs", "prefill_attn_pairs",
    "prefill_kv_tokens", "decode_seqs", "decode_context", "sampled_seqs", "cow_copies", "swap_blocks",
    "verify_checked", "verify_mismatches",
)

# summary.json counters of where a replay went on where vLLM V0 would have stopped (sim.preemption): swap
# preemptions that found the CPU pool full (V0 aborts), swapped requests recomputed on an idle engine (V0 waits).
V0_DEPARTURES: tuple[str, ...] = ("swap_space_exhausted", "swapped_recomputed")
