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
    (["--policy", "fifo"], "policy: unknown name 'fifo'; valid names: vllm, vllm-v0, vllm-swap"),
    (["--model", "gpt-5"], "model: unknown name 'gpt-5'"),
    (["--gpu", "tpu"], "gpu: unknown name 'tpu'"),
    (["--num-gpu-blocks", "0"], "num_gpu_blocks: must be an integer >= 1"),
    (["--policy", "vllm", "--gpu", "a100-80gb", "--max-num-seqs", "4096"],
     "max_num_batched_tokens: 2048 is smaller than max_num_seqs 4096; vLLM V1 refuses this"),
    (["--policy", "vllm-v0", "--scheduling-policy", "priority"],
     "scheduling_policy: 'priority' is modelled for policy vllm only"),
    (["--policy", "vllm", "--gpu", "a100-80gb", "--no-enable-chunked-prefill"],
     "max_num_batched_tokens: 2048 is smaller than max_model_len 8192 with chunked prefill off"),
    # an option that would be ignored: it only says how often --verify checks
    (["--verify-every", "5"], "--verify-every: needs --verify (it says how often --verify checks)"),
])
def test_bad_options_are_one_line_errors(trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         extra: list[str], message: str) -> None:
    code = cli.main(["replay", "--trace", str(trace_file), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("pagedlab: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [["trace", "gen", "--out", "T/x.csv"], ["replay", "--trace", "TRACE", "--out", "T/o"],
                                     ["compare", "--preset", "default", "--out", "T/c"],
                                     ["calibrate", "--gpu-name", "x", "--out", "T/k"]])
def test_a_negative_seed_is_a_one_line_error_naming_the_option(trace_file: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               command: list[str]) -> None:
    argv = [str(trace_file) if a == "TRACE" else a.replace("T/", f"{tmp_path}/") for a in command]
    with pytest.raises(SystemExit) as refused:  # argparse refuses it while parsing
        cli.main([*argv, "--seed", "-1"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "--seed: must be >= 0, got -1" in err and err.count("\n") == 1
    assert not any((tmp_path / name).exists() for name in ("x.csv", "o", "c", "k"))


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
    result = replay(trace, EngineConfig(), policy="vllm-v0")
    assert result.summary["num_finished"] + result.summary["num_rejected"] == 400
    assert result.summary["num_finished"] >= 390
    assert result.summary["slot_utilization"] > 0.9


def write_trace(path: Path, requests: list[Request]) -> Path:
    Trace(requests).to_csv(path)
    return path


def test_replay_prints_the_traces_notices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens,extra\n1.0,30,5,x\n0.5,20,5,y\n\n2.0,36,5,z\n")
    assert cli.main(["replay", "--trace", str(path), "--max-context", "40", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:6] == [
        "trace: read as native-csv", "trace: ignored 1 blank lines", "trace: ignored columns: extra",
        "trace: arrivals shifted by -0.5 s so the first request arrives at 0",
        "trace: arrivals out of order (1 rows arrived before an earlier row, first at "
        f"{path}:3); sorted stably by arrival",
        "trace: clipped 1 of 3 requests to a 40-token context: 1 output shortened; output tokens 15 -> 14",
    ]
    assert out[6].startswith("vllm-v0: 3 finished, 0 rejected of 3 requests")


def test_replay_says_in_one_line_why_many_requests_were_rejected(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    too_long = write_trace(tmp_path / "long.csv", [Request(f"r{i}", 0.1 * i, 9000 if i < 6 else 100, 50)
                                                   for i in range(13)])
    assert cli.main(["replay", "--trace", str(too_long), "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert err == ("pagedlab: warning: 46% of requests (6 of 13) were rejected: 6 exceed max_model_len 8192 of "
                   "llama-3-8b (prompt + output, up to 9050 tokens); try --model mistral-7b or --max-context 8192\n")
    # Another cause is named from the requests table's reason column.
    wide = write_trace(tmp_path / "wide.csv", [Request(f"r{i}", 0.1 * i, 100, 20, n=4, sampling="parallel")
                                               for i in range(4)] + [Request("g", 1.0, 100, 20)])
    assert cli.main(["replay", "--trace", str(wide), "--max-num-seqs", "2", "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().err == ("pagedlab: warning: 80% of requests (4 of 5) were rejected: 4 for this reason "
                                       "(request r0): n=4 exceeds max_num_seqs 2\n")
    # A pool too small for one request: the reason is the block manager's, with its subject.
    big = write_trace(tmp_path / "big.csv", [Request(f"r{i}", 0.1 * i, 2000 if i < 2 else 100, 20) for i in range(5)])
    assert cli.main(["replay", "--trace", str(big), "--num-gpu-blocks", "50", "--out", str(tmp_path / "p")]) == 0
    assert capsys.readouterr().err == ("pagedlab: warning: 40% of requests (2 of 5) were rejected: 2 for this reason "
                                       "(request r0): needs 127 KV blocks at its longest; the pool has 50\n")
    # One kind of reason, different figures: the warning quotes one and says the figures differ.
    sizes = write_trace(tmp_path / "sizes.csv", [Request(f"s{i}", 0.1 * i, 1500 + 500 * i if i < 2 else 100, 20)
                                                 for i in range(5)])
    assert cli.main(["replay", "--trace", str(sizes), "--num-gpu-blocks", "50", "--out", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().err == ("pagedlab: warning: 40% of requests (2 of 5) were rejected: 2 for reasons of "
                                       "this kind, their figures differing (request s0: needs 95 KV blocks at its "
                                       "longest; the pool has 50)\n")
    # --quiet drops the summary lines, not the warning: losing requests is not a quiet success.
    assert cli.main(["replay", "--trace", str(big), "--num-gpu-blocks", "50", "--quiet",
                     "--out", str(tmp_path / "q")]) == 0
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err.startswith("pagedlab: warning: 40% of requests (2 of 5) were rejected: ")
    # One of 21 is said too; none rejected, nothing.
    few = write_trace(tmp_path / "few.csv", [Request(f"r{i}", 0.1 * i, 9000 if i == 0 else 100, 20) for i in range(21)])
    assert cli.main(["replay", "--trace", str(few), "--out", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().err == ("pagedlab: warning: 5% of requests (1 of 21) were rejected: 1 exceed max_model_len "
                                       "8192 of llama-3-8b (prompt + output, up to 9020 tokens); try --model "
                                       "mistral-7b or --max-context 8192\n")
    fit = write_trace(tmp_path / "fit.csv", [Request(f"r{i}", 0.1 * i, 100, 20) for i in range(21)])
    assert cli.main(["replay", "--trace", str(fit), "--out", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().err == ""


def test_replay_where_no_request_can_run_is_a_one_line_error_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_trace(tmp_path / "long.csv", [Request(f"r{i}", 0.1 * i, 9000, 50) for i in range(3)])
    assert cli.main(["replay", "--trace", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == (f"pagedlab: error: {path}: requests: no request can run on this engine: 100% of requests (3 of 3) "
                   "were rejected: 3 exceed max_model_len 8192 of llama-3-8b (prompt + output, up to 9050 tokens); "
                   "try --model mistral-7b or --max-context 8192\n")
    assert not (tmp_path / "o").exists()


def test_replay_warns_where_vllm_v0_would_have_aborted_for_lack_of_swap_space(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_trace(tmp_path / "t.csv", [Request(f"r{i}", 0.001 * i, 100, 300) for i in range(6)])
    argv = ["replay", "--trace", str(path), "--policy", "vllm-swap", "--num-gpu-blocks", "60", "--quiet"]
    assert cli.main([*argv, "--swap-space-gib", "0", "--out", str(tmp_path / "a")]) == 0
    exhausted = json.loads((tmp_path / "a" / "summary.json").read_text())["swap_space_exhausted"]
    assert exhausted > 0 and capsys.readouterr().err == (
        f"pagedlab: warning: {exhausted} preemptions found the CPU swap pool (0 GiB) full and recomputed instead; "
        "vLLM V0 aborts there (\"Aborted due to the lack of CPU swap space\"): try a larger --swap-space-gib\n")
    assert cli.main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().err == ""


def test_replay_and_compare_rows_say_where_a_swapped_request_was_recomputed_on_an_idle_engine(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis.compare import result_metrics
    from analysis.slo import SLO
    from memory import AllocStatus
    from sim import EngineConfig, replay
    from sim.kv_paged import PagedKV
    monkeypatch.setattr(PagedKV, "swap_in_status", lambda self, group: AllocStatus.LATER)  # V0 would wait forever
    requests = [Request("g", 0.0, 160, 300), Request("p", 0.001, 480, 120, n=4, sampling="parallel")]
    path = write_trace(tmp_path / "t.csv", requests)
    argv = ["replay", "--trace", str(path), "--policy", "vllm-v0", "--num-gpu-blocks", "64", "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    stuck = json.loads((tmp_path / "a" / "summary.json").read_text())["swapped_recomputed"]
    assert stuck == 1 and capsys.readouterr().err == (
        "pagedlab: warning: 1 swapped requests could not come back on an idle engine (their blocks need the "
        "watermark's) and were recomputed instead; vLLM V0 waits for them forever: try a larger pool "
        "(--num-gpu-blocks)\n")
    result = replay(Trace(requests), EngineConfig(num_gpu_blocks=64), policy="vllm-v0")
    assert result_metrics(result, SLO(), (50.0,))["swapped_recomputed"] == 1


def test_replay_console_never_prints_nan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One request of one token: no inter-token gap, no TPOT.
    path = write_trace(tmp_path / "t.csv", [Request("r0", 0.0, 10, 1)] + [Request(f"r{i}", 0.1 * i, 9000, 50)
                                                                          for i in range(1, 3)])
    assert cli.main(["replay", "--trace", str(path), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "1 finished, 2 rejected" in out
    assert "nan" not in out.lower()


def test_replay_console_tells_kv_cache_use_from_slot_fill(trace_file: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # The console said only "KV slot utilization 99.7%" of a run whose cache was 8% held on average: it read as
    # a full cache. It gives the cache's use (held blocks over the pool) and how full the held slots are.
    out = tmp_path / "o"
    assert cli.main(["replay", "--trace", str(trace_file), "--num-gpu-blocks", "64", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    printed = capsys.readouterr().out
    assert (f"KV cache {s['kv_usage_mean']:.1%} held on average (peak {s['kv_usage_peak']:.1%}), "
            f"{s['slot_utilization']:.1%} of held slots filled;") in printed
    # The console's wall time covers loading and writing too; it names the replay's own, summary.json's wall_s.
    assert f"(the replay {s['wall_s']:.2f} s, summary.json's wall_s)" in printed


def test_out_and_system_errors_are_one_line_in_the_documented_form(trace_file: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    occupied = tmp_path / "file"
    occupied.write_text("x")
    assert cli.main(["replay", "--trace", str(trace_file), "--out", str(occupied)]) == 2
    assert capsys.readouterr().err == f"pagedlab: error: {occupied}: out: exists and is not a directory\n"
    assert cli.main(["replay", "--trace", str(trace_file), "--out", str(occupied / "o")]) == 2
    assert capsys.readouterr().err == (f"pagedlab: error: {occupied}: out: not a directory, so {occupied / 'o'} "
                                       "cannot be made\n")
    # What the system says ([Errno 13] Permission denied: 'x') reads as `path: file: reason`.
    assert cli.error_message(PermissionError(13, "Permission denied", "out/x.csv")) == \
        "out/x.csv: file: permission denied"
    assert cli.error_message(FileExistsError(17, "File exists", "out")) == "out: file: file exists"
    assert cli.error_message(ValueError("t.csv:3: prompt_tokens: not a number: 'x'")) == \
        "t.csv:3: prompt_tokens: not a number: 'x'"


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("command", ["replay", "compare"])
def test_an_out_the_system_will_not_make_is_refused_up_front_naming_out(
        trace_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str) -> None:
    # As root the permission bits allow /proc, yet no directory can be made there: the replay used to run to the
    # end and fail on writing (`/proc/x: file: ...`), compare named its temporary directory. Simulate root.
    import os

    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)
    out = Path("/proc/pagedlab-out/run")
    extra = ["--policies", "vllm-v0", "--rates", "2", "--quiet"] if command == "compare" else ["--quiet"]
    assert cli.main([command, "--trace", str(trace_file), *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pagedlab: error: {out}: out: cannot be made (") and err.count("\n") == 1


def test_checking_that_an_out_can_be_made_leaves_nothing_behind(tmp_path: Path) -> None:
    from sim.result import check_makeable

    check_makeable(tmp_path / "a" / "b" / "c")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match=r"file/d: out: cannot be made \(not a directory\)"):
        check_makeable(tmp_path / "file" / "d")


def test_replay_help_names_every_policy_model_and_gpu() -> None:
    from sim.host_time import ENGINES
    from sim.policies import POLICIES
    from sim.presets import GPUS, MODELS
    from sim import config, replay_cli
    from sim.replay_cli import GPU_NAMES, HOST_ENGINE_NAMES, MODEL_NAMES, POLICY_NAMES

    assert HOST_ENGINE_NAMES == tuple(ENGINES)
    assert POLICY_NAMES == tuple(POLICIES)
    assert replay_cli.DEFAULT_POLICY == config.DEFAULT_POLICY
    assert MODEL_NAMES == tuple(MODELS)
    assert GPU_NAMES == tuple(GPUS)
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["replay"].format_help().split())
    for name in (*POLICY_NAMES, *MODEL_NAMES, *GPU_NAMES):
        assert name in help_text


def test_replay_says_when_the_trace_gives_the_prefix_cache_nothing_to_hit(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    plain = write_trace(tmp_path / "plain.csv", [Request(f"r{i}", 0.1 * i, 100, 5) for i in range(3)])
    shared = write_trace(tmp_path / "shared.csv", [Request(f"r{i}", 0.1 * i, 100, 5, prefix_group="sys",
                                                           prefix_tokens=64) for i in range(3)])
    note = "(the trace names no shared prompt tokens: no prefix groups or hash ids, so no prompt can hit)"
    assert cli.main(["replay", "--trace", str(plain), "--policy", "vllm", "--out", str(tmp_path / "a")]) == 0
    assert note in capsys.readouterr().out
    assert cli.main(["replay", "--trace", str(shared), "--policy", "vllm", "--out", str(tmp_path / "b")]) == 0
    printed = capsys.readouterr().out
    assert "prefix cache: " in printed and note not in printed
    # Under vllm the samples of a parallel request share its prompt through the cache: hits, so no such note.
    forked = write_trace(tmp_path / "forked.csv", [Request("p", 0.0, 100, 5, n=4, sampling="parallel")])
    assert cli.main(["replay", "--trace", str(forked), "--policy", "vllm", "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "prefix cache: 72.0% of prompt tokens hit (288 tokens)" in printed and note not in printed


def test_replay_never_writes_over_a_directory_of_other_files(trace_file: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # The trace's own directory holds the user's files; a replay there would overwrite a requests.csv of theirs.
    mine = trace_file.parent / "requests.csv"
    mine.write_text("mine\n")
    assert cli.main(["replay", "--trace", str(trace_file), "--quiet", "--out", str(trace_file.parent)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{trace_file.parent}: out: the directory holds other files" in err
    assert mine.read_text() == "mine\n"
    # An earlier replay's directory is replayed into again; a compare report (with a manifest) is not.
    out = tmp_path / "run"
    assert cli.main(["replay", "--trace", str(trace_file), "--quiet", "--out", str(out)]) == 0
    assert cli.main(["replay", "--trace", str(trace_file), "--quiet", "--policy", "sarathi", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["policy"] == "sarathi"
    (out / "manifest.json").write_text("{}")
    assert cli.main(["replay", "--trace", str(trace_file), "--quiet", "--out", str(out)]) == 2


def test_priority_order_on_a_trace_without_priorities_warns(trace_file: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # Every request at priority 0: the priority order is FCFS, which the run gave without a word.
    argv = ["replay", "--trace", str(trace_file), "--policy", "vllm", "--scheduling-policy", "priority"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().err == ("pagedlab: warning: --scheduling-policy priority: every request of the trace has "
                                       "priority 0 (no priority column): requests are ordered by arrival alone\n")
    ranked = write_trace(tmp_path / "ranked.csv", [Request(f"r{i}", 0.1 * i, 50, 5, priority=i % 2) for i in range(4)])
    assert cli.main([*argv[:2], str(ranked), *argv[3:], "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().err == ""


def test_a_setting_the_policy_ignores_is_a_one_line_warning(trace_file: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = ["replay", "--trace", str(trace_file), "--out", str(tmp_path / "o"), "--policy", "vllm-v0"]
    assert cli.main([*args, "--schedule-policy", "fcfs"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ["pagedlab: warning: schedule_policy: policy vllm-v0 ignores it (it has no such setting)"]
    assert cli.main([*args[:-1], "sglang", "--schedule-policy", "fcfs"]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize(("count", "total", "text"), [(3, 3, "100%"), (8775, 8819, "99.5%"), (99999, 100000, ">99.9%"),
                                                      (1, 1000, "0.1%"), (1, 100000, "<0.1%"), (6, 13, "46%")])
def test_a_rejected_share_reads_100_percent_only_when_every_request_was_rejected(count: int, total: int,
                                                                                  text: str) -> None:
    from sim.rejection_notes import share_of_requests
    assert share_of_requests(count, total) == f"{text} of requests ({count} of {total})"
