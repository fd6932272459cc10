"""What a trace may hold (time and token ranges), arrival times drawn for length-only traces, and the trace
options every command shares: --window, --head, --rate-scale, --max-context (clip or drop), --arrivals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim import cli
from traces import Request, Trace, generate, load
from traces.arrivals import ArrivalSpec
from traces.request import MAX_ARRIVAL_S, MAX_TOKENS

REPO = Path(__file__).resolve().parents[1]
ARXIV = REPO / "data" / "vidur" / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"


# --- ranges -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    ({"arrival_s": 1e300}, "arrival_s"), ({"arrival_s": MAX_ARRIVAL_S * 2}, "arrival_s"),
    ({"prompt_tokens": MAX_TOKENS + 1}, "prompt_tokens"), ({"output_tokens": 2**63 - 1}, "output_tokens"),
    ({"priority": -(2**63)}, "priority"),
])
def test_request_refuses_values_out_of_range(kwargs: dict, field: str) -> None:
    fields = {"request_id": "a", "arrival_s": 0.0, "prompt_tokens": 10, "output_tokens": 5, **kwargs}
    with pytest.raises(ValueError, match=f"request 'a': {field}: must be"):
        Request(**fields)


def test_transforms_and_generators_cannot_push_arrivals_out_of_range() -> None:
    trace = Trace([Request(str(i), float(i), 10, 5) for i in range(10)])
    with pytest.raises(ValueError, match="scale_rate: factor: 1e-09 stretches the trace to 9e\\+09 s"):
        trace.scale_rate(1e-9)
    with pytest.raises(ValueError, match="generate: rate: 100 requests at 1e-07 req/s span"):
        generate(100, rate=1e-7)
    frame = pd.DataFrame({"arrival_s": [0.0, 2e8], "prompt_tokens": [1, 1], "output_tokens": [1, 1]})
    with pytest.raises(ValueError, match="<DataFrame>:1: arrival_s: arrives 2e\\+08 s after the first request"):
        Trace.from_pandas(frame)


# --- drawn arrivals -------------------------------------------------------------------------------------

def test_arrival_specs_parse_and_refuse_in_one_line() -> None:
    assert ArrivalSpec.parse("poisson:2") == ArrivalSpec("poisson", 2.0)
    assert ArrivalSpec.parse("gamma:3:0.5") == ArrivalSpec("gamma", 3.0, 0.5)
    assert ArrivalSpec.parse("constant:4").describe() == "constant arrivals at 4 req/s"
    for bad in ("poisson", "poisson:x", "gamma:2", "uniform:2", "constant:2:3"):
        with pytest.raises(ValueError, match="arrivals: expected poisson:RATE, gamma:RATE:CV or constant:RATE"):
            ArrivalSpec.parse(bad)
    for bad in ("poisson:0", "poisson:inf", "gamma:1:0", "constant:-1"):
        with pytest.raises(ValueError, match="^arrivals: (rate|cv) must be a finite number > 0, got "):
            ArrivalSpec.parse(bad)


def test_the_shipped_arxiv_lengths_get_seeded_arrivals() -> None:
    trace = load(ARXIV, arrivals="poisson:2", seed=3)
    assert len(trace) == 28257
    assert trace.notices[0] == "read as vidur"
    assert "no arrival times: drew poisson arrivals at 2 req/s (seed 3), in file order" in trace.notices
    # The same stream `generate` draws its arrivals from: one seed, one arrival pattern.
    assert np.array_equal(trace.column("arrival_s"), generate(len(trace), rate=2.0, seed=3).column("arrival_s"))
    raw = pd.read_csv(ARXIV)
    assert np.array_equal(trace.column("prompt_tokens"), raw["num_prefill_tokens"])  # file order kept
    assert not np.array_equal(trace.column("arrival_s"), load(ARXIV, arrivals="poisson:2", seed=4).column("arrival_s"))


@pytest.mark.parametrize("spec, cv", [("poisson:5", 1.0), ("gamma:5:2", 2.0), ("gamma:5:0.5", 0.5), ("constant:5", 0.0)])
def test_drawn_arrivals_have_the_rate_and_burstiness_asked_for(spec: str, cv: float) -> None:
    gaps = np.diff(ArrivalSpec.parse(spec).times(20000, seed=0))
    assert 1 / gaps.mean() == pytest.approx(5.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, abs=0.05)


def test_arrivals_replace_a_timed_traces_own_with_a_notice(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    Trace([Request(str(i), 10.0 * i, 10, 5) for i in range(5)]).to_csv(path)
    trace = load(path, arrivals="constant:2")
    assert list(trace.column("arrival_s")) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert any(n.startswith("replaced the recorded arrival times by constant arrivals") for n in trace.notices)


def test_replay_of_a_length_only_trace_needs_arrivals_and_is_seeded(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lengths.csv"
    pd.read_csv(ARXIV).head(40).to_csv(path, index=False)
    assert cli.main(["replay", "--trace", str(path), "--out", str(tmp_path / "o0")]) == 2
    assert "arrived_at: missing column: this trace has lengths only" in capsys.readouterr().err
    arrivals = []
    for seed, out in ((1, "a"), (1, "b"), (2, "c")):
        assert cli.main(["replay", "--trace", str(path), "--arrivals", "gamma:4:2", "--seed", str(seed),
                         "--out", str(tmp_path / out)]) == 0
        arrivals.append(pd.read_csv(tmp_path / out / "requests.csv")["arrival_s"].to_numpy())
    assert "trace: no arrival times: drew gamma arrivals at 4 req/s, cv 2 (seed 1), in file order" in capsys.readouterr().out
    assert np.array_equal(arrivals[0], arrivals[1]) and not np.array_equal(arrivals[0], arrivals[2])


def test_a_bad_arrivals_option_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["replay", "--trace", str(ARXIV), "--arrivals", "weibull:2", "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    assert "expected poisson:RATE, gamma:RATE:CV or constant:RATE, got 'weibull:2'" in capsys.readouterr().err


# --- transformations on replay and compare --------------------------------------------------------------

@pytest.fixture()
def long_trace(tmp_path: Path) -> Path:
    """12 requests a second apart; every other one needs 12,000 tokens, more than llama-3-8b's 8192."""
    path = tmp_path / "long.csv"
    Trace([Request(f"r{i}", float(i), 12000 if i % 2 else 300, 40) for i in range(12)]).to_csv(path)
    return path


def test_replay_max_context_clips_or_drops_as_stated(long_trace: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["replay", "--trace", str(long_trace), "--max-context", "8192", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert ("trace: clipped 6 of 12 requests to a 8192-token context: 6 prompts truncated to 8191 tokens (their "
            "outputs to 1 token); prompt tokens 73800 -> 50946, output tokens 480 -> 246") in out
    clipped = pd.read_csv(tmp_path / "c" / "requests.csv")
    assert (clipped["status"] == "finished").all() and clipped["prompt_tokens"].max() == 8191
    assert cli.main(["replay", "--trace", str(long_trace), "--max-context", "8192", "--over-context", "drop",
                     "--out", str(tmp_path / "d")]) == 0
    assert "trace: dropped 6 of 12 requests longer than a 8192-token context (prompt + output)" in capsys.readouterr().out
    dropped = pd.read_csv(tmp_path / "d" / "requests.csv")
    assert list(dropped["request_id"]) == [f"r{i}" for i in range(0, 12, 2)]
    assert json.loads((tmp_path / "d" / "config.json").read_text())["trace_notices"][-1].startswith("dropped 6 of 12")


def test_replay_head_window_and_rate_scale(long_trace: Path, tmp_path: Path) -> None:
    args = ["replay", "--trace", str(long_trace), "--window", "2:10", "--head", "5", "--rate-scale", "2",
            "--max-context", "8192", "--quiet", "--out", str(tmp_path / "o")]
    assert cli.main(args) == 0
    requests = pd.read_csv(tmp_path / "o" / "requests.csv")
    assert list(requests["request_id"]) == ["r2", "r3", "r4", "r5", "r6"]
    assert list(requests["arrival_s"]) == [0.0, 0.5, 1.0, 1.5, 2.0]  # re-based to the window, then twice as fast


def test_long_context_presets_take_what_llama_3_8b_refuses(long_trace: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from sim.presets import MODELS

    assert MODELS["llama-3.1-8b"].max_model_len == 131072 and MODELS["qwen2.5-7b"].max_model_len == 32768
    assert MODELS["qwen2.5-7b"].kv_bytes_per_token_per_gpu == 2 * 28 * 4 * 128 * 2
    for model in ("llama-3.1-8b", "qwen2.5-7b"):
        assert cli.main(["replay", "--trace", str(long_trace), "--model", model, "--quiet",
                         "--out", str(tmp_path / model)]) == 0
        assert (pd.read_csv(tmp_path / model / "requests.csv")["status"] == "finished").all()


def test_compare_takes_the_trace_options_and_records_them(long_trace: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert cli.main(["compare", "--trace", str(long_trace), "--policies", "vllm-v0", "--rate-scales", "1",
                     "--window", "0:8", "--head", "6", "--rate-scale", "3", "--max-context", "4096",
                     "--over-context", "drop", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trace: dropped 3 of 6 requests longer than a 4096-token context" in printed
    summary = pd.read_csv(out / "summary.csv")
    assert summary["completed"].tolist() == [3] and summary["rejected"].tolist() == [0]
    assert summary["rate"].iloc[0] == pytest.approx(3 * 2 / 4)  # r0, r2, r4 at 0, 2/3, 4/3 s: 2 gaps in 4/3 s
    command = json.loads((out / "manifest.json").read_text())["command"]
    assert "--window 0:8 --head 6 --rate-scale 3 --max-context 4096 --over-context drop" in command


def test_compare_refuses_rate_scale_with_rates(long_trace: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compare", "--trace", str(long_trace), "--rates", "1,2", "--rate-scale", "2",
                     "--out", str(tmp_path / "o")]) == 2
    assert "rate-scale: has no effect with --rates" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("option, value, reason", [
    ("--window", "5:3", "need 0 <= START < END, got '5:3'"),
    ("--window", "2:nan", "need 0 <= START < END, got '2:nan'"),
    ("--head", "0", "must be >= 1, got 0"),
    ("--head", "two", "expected an integer, got 'two'"),
    ("--rate-scale", "0", "must be a finite number > 0, got '0'"),
    ("--rate-scale", "inf", "must be a finite number > 0, got 'inf'"),
    ("--max-context", "1", "must be >= 2, got 1"),
    ("--arrivals", "gamma:1", "expected poisson:RATE, gamma:RATE:CV or constant:RATE, got 'gamma:1'"),
])
def test_a_bad_trace_option_is_one_line_naming_the_option(long_trace: Path, tmp_path: Path, option: str,
                                                          value: str, reason: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["replay", "--trace", str(long_trace), option, value, "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"pagedlab: error: replay: {option}: {reason} (see pagedlab replay --help)\n"
    assert not (tmp_path / "o").exists()


def test_a_window_holding_no_request_is_refused(long_trace: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["replay", "--trace", str(long_trace), "--out", str(tmp_path / "o")],
                    ["trace", "stats", str(long_trace)]):
        assert cli.main([*command, "--window", "50:60"]) == 2
        assert capsys.readouterr().err == (f"pagedlab: error: {long_trace}: window: no request arrives in [50, 60) s; "
                                           "the trace's arrivals span 0 to 11 s\n")
    assert not (tmp_path / "o").exists()
    assert cli.main(["trace", "stats", str(long_trace), "--window", "0:2"]) == 0
    assert "window [0, 2) s: kept 2 of 12 requests; arrivals shifted by 0 s" in capsys.readouterr().out
