"""`pagedlab compare` end to end on tiny traces with the real simulator, and its load sweep."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from analysis.compare import load_points

AZURE = Path(__file__).resolve().parents[1] / "data" / "AzureLLMInferenceTrace_code.csv"


def test_load_points_from_rates_and_from_scales() -> None:
    points = load_points(2.0, rates=[8, 1])
    assert [(p.load, p.rate, p.scale) for p in points] == [(1, 1, 0.5), (8, 8, 4)]  # sorted by load
    points = load_points(2.5, rate_scales=[1, 2])
    assert [(p.load, p.rate, p.scale, p.label) for p in points] == [(1, 2.5, 1, "1"), (2, 5.0, 2, "2")]
    for bad, message in (([], "at least one"), ([1, -1], "positive"), ([1, 1], "repeat")):
        with pytest.raises(ValueError, match=message):
            load_points(1.0, rates=bad)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from sim import cli

    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors exit from parse_args
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


TINY = ["compare", "--preset", "default", "--num-requests", "24", "--policies", "vllm-v0,static", "--rates", "2,16",
        "--quiet"]


def test_compare_end_to_end_on_a_tiny_preset_serial_and_parallel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    code, stdout, _ = run_cli([*TINY, "--out", str(out)], capsys)
    assert code == 0
    assert "p99_ttft_ms" in stdout and f"report: {out.resolve() / 'report.html'}" in stdout
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary[["policy", "load"]].itertuples(index=False, name=None)) == [
        ("vllm-v0", 2), ("vllm-v0", 16), ("static", 2), ("static", 16)]
    assert (summary["completed"] + summary["rejected"] == 24).all()
    for policy, load in (("vllm-v0", 2), ("static", 16)):
        run_dir = out / "runs" / f"{policy}-{load}"
        assert {p.name for p in run_dir.iterdir()} >= {"requests.csv", "steps.csv", "summary.json", "config.json", "itl.npy"}
    page = (out / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 5 and all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    report = (out / "report.md").read_text()
    assert "pagedlab compare --preset default --num-requests 24 --policies vllm-v0,static --rates 2,16" in report

    # Worker processes give the same numbers (the simulator's own run time aside).
    parallel = tmp_path / "parallel"
    assert run_cli([*TINY, "--jobs", "2", "--out", str(parallel)], capsys)[0] == 0
    drop = ["sim_wall_s"]
    pd.testing.assert_frame_equal(summary.drop(columns=drop), pd.read_csv(parallel / "summary.csv").drop(columns=drop))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--policies", "vllm-v0,fifo"], "unknown policy 'fifo'; valid names: "),
        (["--model", "gpt-5"], "unknown model 'gpt-5'; valid names: "),
        (["--gpu", "tpu"], "unknown gpu 'tpu'; valid names: "),
        (["--preset", "nope"], "unknown preset 'nope'; valid names: default"),
        (["--goodput", "ttfb:5"], "valid names: ttft, tpot, e2el"),
        (["--rates", "0,1"], "rates: every value must be a positive number"),
        # a value that starts with a minus is the option's value, as after `--rates=`
        (["--rates", "-1,2"], "compare: --rates: every value must be a positive number, got -1 (see pagedlab compare"),
        (["--rate-scales", "-0.5"], "--rate-scales: every value must be a positive number, got -0.5"),
        (["--rates", "1,x"], "--rates: expected comma-separated positive numbers, got '1,x'"),
        (["--rates", "1,,2"], "--rates: empty entry in the comma-separated list '1,,2'"),
        (["--rate-scales", "1,2,"], "--rate-scales: empty entry in the comma-separated list '1,2,'"),
        (["--policies", "vllm,,vllm-v0"], "--policies: empty entry in the comma-separated list 'vllm,,vllm-v0'"),
        (["--policies", "vllm-v0,vllm", "--gpu", "a100-80gb", "--max-num-seqs", "4096"],
         "max_num_batched_tokens: 2048 is smaller than max_num_seqs 4096; vLLM V1 refuses this"),
    ],
)
def test_bad_input_is_one_line_error_listing_valid_names(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli([*TINY, *extra, "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_unknown_trace_format_lists_valid_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,5\n1,10,5\n")
    code, _, err = run_cli(["compare", "--trace", str(trace), "--format", "bogus", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "bogus" in err and "azure" in err and err.count("\n") == 1


def test_interrupted_compare_leaves_no_report(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import analysis.compare as compare_module

    real_run_job = compare_module.run_job
    calls = []

    def interrupted(job: compare_module.Job) -> dict:
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run_job(job)

    monkeypatch.setattr(compare_module, "run_job", interrupted)
    code, _, err = run_cli([*TINY, "--out", str(tmp_path / "out")], capsys)
    assert code == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []  # no report, no temporary directory


def test_compare_on_the_azure_code_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "azure"
    code, stdout, _ = run_cli(["compare", "--trace", str(AZURE), "--num-requests", "40", "--policies", "vllm-v0,orca-max",
                               "--rate-scales", "1,4", "--quiet", "--out", str(out)], capsys)
    assert code == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["rate_scale"]) == [1, 4, 1, 4]
    assert summary["rate"].iloc[1] == pytest.approx(4 * summary["rate"].iloc[0])
    assert (summary["completed"] + summary["rejected"] == 40).all()


def test_compare_with_a_measured_profile_changes_the_numbers(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", "--preset", "default", "--num-requests", "20", "--policies", "vllm-v0", "--rates", "4", "--quiet"]
    assert run_cli([*argv, "--out", str(tmp_path / "default")], capsys)[0] == 0
    code, out, _ = run_cli([*argv, "--cost-profile", "h100-sxm", "--out", str(tmp_path / "h100")], capsys)
    assert code == 0
    default = pd.read_csv(tmp_path / "default" / "summary.csv")
    measured = pd.read_csv(tmp_path / "h100" / "summary.csv")
    assert default["mean_ttft_ms"].iloc[0] != measured["mean_ttft_ms"].iloc[0]
    assert "--cost-profile h100-sxm" in (tmp_path / "h100" / "report.md").read_text()


def test_execute_backend_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["compare", "--num-requests", "4", "--policies", "vllm-v0", "--rates", "4", "--out", str(tmp_path / "x")]
    code, _, err = run_cli([*base, "--verify"], capsys)
    assert code == 2 and err.startswith("pagedlab: error: device/verify: need --backend execute")
    code, _, err = run_cli([*base, "--backend", "execute", "--device", "cpu", "--jobs", "2"], capsys)
    assert code == 2 and "jobs: the execute backend runs one replay at a time" in err
    assert err.count("\n") == 1


def test_compare_on_the_execute_backend_with_the_shadow_check(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    # Real Triton kernels (interpreter on CPU) on the tiny model; a 12-block pool forces preemption.
    trace = tmp_path / "tiny.csv"
    trace.write_text("request_id,arrival_s,prompt_tokens,output_tokens,n,sampling\n"
                     "0,0,20,4,1,greedy\n1,0.001,33,3,2,parallel\n2,0.002,17,3,2,beam\n")
    code, out, err = run_cli(["compare", "--trace", str(trace), "--model", "tiny", "--policies", "vllm-v0",
                              "--backend", "execute", "--device", "cpu", "--verify", "--num-gpu-blocks", "12",
                              "--quiet", "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "r" / "summary.csv")
    assert table["completed"].iloc[0] == 3
    assert table["verify_checked"].iloc[0] > 0 and table["verify_mismatches"].iloc[0] == 0
    assert re.search(r"verify: \d+ sequence-steps checked, 0 mismatches", out)


def test_compare_with_prefix_caching_reports_hits_and_saves_ttft(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from traces import generate

    path = tmp_path / "groups.csv"
    generate(60, rate=4.0, lengths="fixed", input_len=600, output_len=8, num_prefix_groups=2, prefix_tokens=512,
             prefix_fraction=1.0, seed=3).to_csv(path)
    argv = ["compare", "--trace", str(path), "--policies", "vllm-v0,sarathi", "--quiet"]
    assert run_cli([*argv, "--out", str(tmp_path / "off")], capsys)[0] == 0
    code, _, err = run_cli([*argv, "--enable-prefix-caching", "--out", str(tmp_path / "on")], capsys)
    assert code == 0, err
    off = pd.read_csv(tmp_path / "off" / "summary.csv").set_index("policy")
    on = pd.read_csv(tmp_path / "on" / "summary.csv").set_index("policy")
    assert "prefix_hit_rate" not in off
    assert (on["prefix_hit_rate"] > 0.3).all() and (on["prefix_hit_tokens"] > 0).all()
    assert (on["mean_ttft_ms"] < off["mean_ttft_ms"]).all()
    assert "--enable-prefix-caching" in (tmp_path / "on" / "report.md").read_text()


def test_sigterm_unwinds_like_ctrl_c_and_leaves_no_report(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal

    import analysis.compare as compare_module

    real_run_job = compare_module.run_job
    calls = []

    def terminated(job: compare_module.Job) -> dict:
        calls.append(job)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a job scheduler would
        return real_run_job(job)

    monkeypatch.setattr(compare_module, "run_job", terminated)
    code, _, err = run_cli([*TINY, "--out", str(tmp_path / "out")], capsys)
    assert code == 143 and err.strip().endswith("pagedlab: terminated")
    assert list(tmp_path.iterdir()) == []  # no report, no hidden .out.tmp-PID-* directory
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the command


def test_sigterm_to_a_parallel_compare_process_leaves_nothing(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    argv = [sys.executable, "-m", "sim", "compare", "--num-requests", "400", "--jobs", "2", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()):  # the replays have started
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.strip().endswith("pagedlab: terminated"), err
    assert list(tmp_path.iterdir()) == []


def test_an_empty_directory_the_user_made_is_filled_not_replaced(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    out.chmod(0o750)
    before = out.stat()
    code, _, _ = run_cli([*TINY, "--out", str(out)], capsys)
    after = out.stat()
    assert code == 0 and (out / "report.html").is_file() and (out / "manifest.json").is_file()
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)  # the same directory, same permissions
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_read_only_out_directory_is_refused_not_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere: answer as the kernel would for anyone else
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == out and mode & os.W_OK
                            else real_access(p, mode, **kw))
    before = out.stat()
    code, _, err = run_cli([*TINY, "--out", str(out)], capsys)
    assert code == 2
    assert err == f"pagedlab: error: {out}: out: the directory exists and is not writable (permission denied)\n"
    after = out.stat()
    assert (after.st_ino, after.st_mode & 0o777) == (before.st_ino, 0o555) and list(out.iterdir()) == []
    out.chmod(0o755)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("x"), "{out}: out: exists and is not a directory"),
    (lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")),
     "{out}: out: exists, holds other files and is not an earlier pagedlab report (no manifest.json); give an "
     "empty or new --out"),
])
def test_out_problems_are_one_line_in_the_documented_form(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          make, message: str) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    make(out)
    code, _, err = run_cli([*TINY, "--out", str(out)], capsys)
    assert code == 2 and err == f"pagedlab: error: {message.format(out=out)}\n"
    if out.is_file():  # a directory below a file cannot be made ([Errno 20] before)
        code, _, err = run_cli([*TINY, "--out", str(out / "sub")], capsys)
        assert code == 2 and err == f"pagedlab: error: {out}: out: not a directory, so {out / 'sub'} cannot be made\n"


def test_the_default_comparison_puts_memory_under_pressure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "default"
    code, _, _ = run_cli(["compare", "--num-requests", "300", "--policies", "vllm-v0,vllm-swap,orca-max", "--rates", "2,6",
                          "--quiet", "--out", str(out)], capsys)
    assert code == 0
    command = (out / "manifest.json").read_text()
    assert "--model llama-2-7b --gpu a100-40gb" in command  # the default preset's setting
    s = pd.read_csv(out / "summary.csv").set_index(["policy", "load"])
    # Light load: memory is loose. Heavy load: vllm-v0 recomputes single requests and swaps forked groups,
    # vllm-swap swaps every victim, orca-max reserves.
    assert s.loc[("vllm-v0", 2), "preemptions"] == 0 and s.loc[("vllm-v0", 6), "preemptions"] > 0
    assert 0 < s.loc[("vllm-v0", 6), "swaps_out"] < s.loc[("vllm-swap", 6), "swaps_out"]
    assert s.loc[("vllm-v0", 6), "swaps_out"] < s.loc[("vllm-v0", 6), "preemptions"]
    assert s.loc[("vllm-v0", 6), "kv_usage_peak"] == pytest.approx(1.0, abs=0.02)
    assert s.loc[("vllm-v0", 6), "p99_ttft_ms"] != s.loc[("vllm-swap", 6), "p99_ttft_ms"]
    assert s.loc[("orca-max", 6), "kv_unused_fraction"] > 0.5 > s.loc[("vllm-v0", 6), "kv_unused_fraction"]


def test_compare_warns_once_about_requests_longer_than_the_context_and_plots_quietly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    from traces import Request, Trace

    path = tmp_path / "long.csv"
    Trace([Request(f"r{i}", 0.5 * i, 9000, 50) for i in range(20)]).to_csv(path)  # none fits llama-3-8b
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_cli(["compare", "--trace", str(path), "--policies", "vllm-v0,static", "--rate-scales", "1,2",
                                "--quiet", "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and [str(w.message) for w in caught] == []
    assert err == ("pagedlab: warning: 100% of requests (20 of 20) will be rejected: 20 exceed max_model_len 8192 of "
                   "llama-3-8b (prompt + output, up to 9050 tokens); try --model mistral-7b or --max-context 8192\n")


def test_compare_turns_vllm_s_default_prefix_caching_off_and_sets_sglang_s_order(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from traces import generate

    path = tmp_path / "groups.csv"
    generate(40, rate=4.0, lengths="fixed", input_len=600, output_len=8, num_prefix_groups=2, prefix_tokens=512,
             prefix_fraction=1.0, seed=3).to_csv(path)
    argv = ["compare", "--trace", str(path), "--policies", "vllm,sglang", "--rates", "4", "--quiet"]
    assert run_cli([*argv, "--out", str(tmp_path / "default")], capsys)[0] == 0
    # (lpm without the prefix cache would be fcfs, and is refused: the order spelled out is fcfs)
    code, _, err = run_cli([*argv, "--no-enable-prefix-caching", "--schedule-policy", "fcfs",
                            "--out", str(tmp_path / "off")], capsys)
    assert code == 0, err
    default = pd.read_csv(tmp_path / "default" / "summary.csv").set_index("policy")
    assert default.loc["vllm", "prefix_hit_rate"] > 0.3  # V1 caches by default
    off = pd.read_csv(tmp_path / "off" / "summary.csv").set_index("policy")
    assert "prefix_hit_rate" not in off or not (off["prefix_hit_rate"] > 0).any()
    report = (tmp_path / "off" / "report.md").read_text()
    assert "--no-enable-prefix-caching" in report and "--schedule-policy fcfs" in report


def test_replay_takes_sglang_s_schedule_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from traces import generate

    path = tmp_path / "t.csv"
    generate(20, rate=4.0, lengths="fixed", input_len=100, output_len=8, seed=1).to_csv(path)
    out = tmp_path / "r"
    assert run_cli(["replay", "--trace", str(path), "--policy", "sglang", "--schedule-policy", "lpm",
                    "--enable-prefix-caching", "--quiet", "--out", str(out)], capsys)[0] == 0
    assert json.loads((out / "config.json").read_text())["schedule_policy"] == "lpm"
    code, _, err = run_cli(["replay", "--trace", str(path), "--schedule-policy", "sjf", "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and "--schedule-policy" in err


def test_a_file_format_for_a_preset_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # --format names how to read a --trace file; with a preset it was ignored without a word.
    code, _, err = run_cli([*TINY, "--format", "azure", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err == ("pagedlab: error: format: 'azure' is for a --trace file; a preset is generated, "
                                 "not read\n")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command, options, message", [
    ("replay", ["--policy", "vllm", "--schedule-policy", "lpm", "--enable-prefix-caching"],
     "schedule_policy: lpm is sglang's waiting-queue order; vllm would ignore it (vllm's queue order is "
     "--scheduling-policy)"),
    ("replay", ["--policy", "sglang", "--schedule-policy", "lpm"],
     "schedule_policy: lpm orders the queue by cached prefix and needs the prefix cache (--enable-prefix-caching"),
    ("compare", ["--policies", "vllm,sarathi", "--schedule-policy", "lpm", "--enable-prefix-caching"],
     "schedule_policy: lpm is sglang's waiting-queue order; vllm, sarathi would ignore it"),
])
def test_a_schedule_policy_that_would_change_nothing_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, options: list[str], message: str) -> None:
    # lpm was silently served as fcfs: under a policy other than sglang, or without a prefix cache.
    from traces import generate

    path = tmp_path / "t.csv"
    generate(4, rate=4.0, lengths="fixed", input_len=100, output_len=8, seed=1).to_csv(path)
    code, _, err = run_cli([command, "--trace", str(path), *options, "--quiet", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.startswith(f"pagedlab: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_setting_a_compared_policy_ignores_is_a_one_line_warning(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*TINY, "--rates", "2", "--schedule-policy", "fcfs", "--out", str(tmp_path / "out")]
    code, _, err = run_cli(argv, capsys)
    assert code == 0
    assert [line for line in err.splitlines() if "warning" in line] == [
        "pagedlab: warning: schedule_policy: policy vllm-v0 ignores it (it has no such setting); policy static "
        "ignores it (it has no such setting)"]


def test_compare_never_replaces_a_validation_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "manifest.json").write_text('{"kind": "pagedlab-validate", "files": []}')
    (out / "validation.md").write_text("kept")
    code, _, err = run_cli([*TINY, "--out", str(out)], capsys)
    assert code == 2 and err == (f"pagedlab: error: {out}: out: holds a `pagedlab validate` report, which "
                                 "`pagedlab compare` does not replace; give another --out\n")
    assert (out / "validation.md").read_text() == "kept"


def test_compare_checks_out_and_cost_profile_before_reading_the_trace(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "file"
    taken.write_text("x")
    code, out, err = run_cli(["compare", "--trace", str(AZURE), "--out", str(taken)], capsys)
    assert (code, out) == (2, "") and err == f"pagedlab: error: {taken}: out: exists and is not a directory\n"
    code, out, err = run_cli(["compare", "--trace", str(AZURE), "--cost-profile", "nope",
                              "--out", str(tmp_path / "o")], capsys)
    assert (code, out) == (2, "") and err.startswith("pagedlab: error: cost_profile: unknown name 'nope'")


def test_compare_warns_when_a_policy_rejects_requests_the_context_note_did_not_announce(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from traces import Request, Trace

    path = tmp_path / "t.csv"
    Trace([Request(f"r{i}", 0.5 * i, 2000 if i % 3 == 0 else 100, 50) for i in range(12)]).to_csv(path)
    code, _, err = run_cli(["compare", "--trace", str(path), "--policies", "vllm-v0,static", "--rate-scales", "1",
                            "--num-gpu-blocks", "60", "--quiet", "--out", str(tmp_path / "o")], capsys)
    assert code == 0
    assert err == ("pagedlab: warning: Rejected requests, which count as missing the SLOs in goodput and SLO "
                   "attainment: vllm-v0 4 of 12; static 12 of 12; why: the report's findings, and the reason column "
                   "of runs/*/requests.csv\n")


def test_compare_passes_the_swap_space_to_every_run_and_its_command(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out = tmp_path / "o"
    code, _, err = run_cli(["compare", "--num-requests", "50", "--policies", "vllm-v0,vllm-swap", "--rates", "6",
                            "--swap-space-gib", "0.05", "--quiet", "--out", str(out)], capsys)
    assert code == 0 and "--swap-space-gib 0.05" in (out / "manifest.json").read_text() and err == ""
    for policy in ("vllm-v0", "vllm-swap"):  # 0.05 GiB of Llama-2-7B's 8 MiB blocks
        assert json.loads((out / "runs" / f"{policy}-6" / "summary.json").read_text())["num_cpu_blocks"] == 6
    # A pool that runs full: the runs count it and compare says so, as replay does.
    code, _, err = run_cli(["compare", "--num-requests", "300", "--policies", "vllm-v0,vllm-swap", "--rates", "6",
                            "--swap-space-gib", "0.01", "--quiet", "--out", str(tmp_path / "full")], capsys)
    assert code == 0 and err.startswith("pagedlab: warning: ") and "found the CPU swap pool full" in err
    assert "vllm-swap at 6" in err
