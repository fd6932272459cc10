"""`pagedlab replay` end to end: files written, bad input as one line and exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim import cli
from traces import Request, Trace, load

REPO = Path(__file__).resolve().parents[1]
AZURE = REPO / "data" / "AzureLLMInferenceTrace_code.csv"


@pytest.fixture()
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    Trace([Request(f"r{i}", 0.05 * i, 30 + 7 * i, 20 + i) for i in range(12)]).to_csv(path)
    return path


def test_replay_writes_the_tables(trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert cli.main(["replay", "--trace", str(trace_file), "--policy", "sarathi", "--out", str(out)]) == 0
    assert "sarathi: 12 finished, 0 rejected" in capsys.readouterr().out
    requests = pd.read_csv(out / "requests.csv")
    for column in ("request_id", "arrival_s", "first_token_s", "finish_s", "prompt_tokens", "output_tokens",
                   "n", "sampling", "status", "reason", "ttft_s", "e2e_s", "preemptions", "generated_tokens"):
        assert column in requests.columns
    steps = pd.read_csv(out / "steps.csv")
    for column in ("step", "start_s", "end_s", "duration_s", "num_prefill_tokens", "num_prefill_seqs",
                   "num_decode_seqs", "batch_size", "num_running", "num_waiting", "num_swapped",
                   "kv_blocks_used", "kv_blocks_free", "kv_tokens", "kv_slots_reserved", "cow_copies",
                   "preemptions", "swaps_out", "swaps_in"):
        assert column in steps.columns
    summary = json.loads((out / "summary.json").read_text())
    for key in ("policy", "model", "gpu", "seed", "num_requests", "num_finished", "num_rejected",
                "sim_duration_s", "wall_s", "num_steps", "total_prompt_tokens", "total_generated_tokens",
                "preemptions", "swaps_out", "swaps_in", "cow_copies", "kv_blocks_total", "block_size",
                "kv_usage_mean", "kv_usage_peak", "slot_utilization", "sharing_saved_fraction"):
        assert key in summary
    assert summary["policy"] == "sarathi" and summary["model"] == "llama-3-8b" and summary["gpu"] == "h100-sxm"
    config = json.loads((out / "config.json").read_text())
    assert config["policy"] == "sarathi" and config["cost_model"]["backend"] == "analytic"
    assert len(np.load(out / "itl.npy")) == int((requests["output_tokens"] - 1).sum())


def test_replay_options_and_quiet(trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = ["replay", "--trace", str(trace_file), "--format", "native-csv", "--model", "mistral-7b", "--gpu",
            "a100-80gb", "--seed", "7", "--num-gpu-blocks", "50", "--quiet", "--out", str(out)]
    assert cli.main(args) == 0
    assert capsys.readouterr().out == ""
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["model"], summary["gpu"], summary["seed"], summary["kv_blocks_total"]) == \
        ("mistral-7b", "a100-80gb", 7, 50)


@pytest.mark.parametrize("extra, message", [
    (["--policy", "fifo"], "policy: unknown name 'fifo'; valid names: vllm, vllm-swap"),
    (["--model", "gpt-5"], "model: unknown name 'gpt-5'"),
    (["--gpu", "tpu"], "gpu: unknown name 'tpu'"),
    (["--num-gpu-blocks", "0"], "num_gpu_blocks: must be an integer >= 1"),
])
def test_bad_options_are_one_line_errors(trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         extra: list[str], message: str) -> None:
    code = cli.main(["replay", "--trace", str(trace_file), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("pagedlab: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_missing_trace_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["replay", "--trace", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("pagedlab: error: ") and err.count("\n") == 1


def test_replay_imports_no_torch(trace_file: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from sim import cli; "
        f"rc = cli.main(['replay', '--trace', {str(trace_file)!r}, '--quiet', '--out', {str(tmp_path / 'o')!r}]); "
        "assert rc == 0; assert 'torch' not in sys.modules and 'triton' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_azure_code_trace_head_replays(tmp_path: Path) -> None:
    from sim import EngineConfig, replay

    trace = load(AZURE).head(400)
    result = replay(trace, EngineConfig(), policy="vllm")
    assert result.summary["num_finished"] + result.summary["num_rejected"] == 400
    assert result.summary["num_finished"] >= 390
    assert result.summary["slot_utilization"] > 0.9
