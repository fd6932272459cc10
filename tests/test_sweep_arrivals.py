"""A sweep of a length-only trace file: `[trace] arrivals` is `--arrivals` of replay and compare (same parser,
seeded by the spec's seed), and the error without it names that key."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.sweep_spec_load import load_spec
from test_sweep import run_cli, write_spec
from traces import load

LENGTHS = "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n" + "".join(
    f"{100 + 7 * i},{20 + i},{120 + 8 * i},1.0\n" for i in range(12))
SPEC = """\
seed = 5
[trace]
path = "lengths.csv"
num_requests = 10
{arrivals}
[grid]
policy = ["vllm"]
[slo]
ttft_ms = 2000
[loads]
rate_scales = [1]
"""


@pytest.fixture
def lengths(tmp_path: Path) -> Path:
    path = tmp_path / "lengths.csv"
    path.write_text(LENGTHS)
    return path


def test_arrivals_draw_the_times_replay_would(tmp_path: Path, lengths: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, SPEC.format(arrivals='arrivals = "gamma:2:3"'))
    trace, rate, description = load_spec(spec).load_trace()
    expected = load(lengths, arrivals="gamma:2:3", seed=5).head(10)
    assert np.array_equal(trace.column("arrival_s"), expected.column("arrival_s"))
    assert "gamma arrivals at 2 req/s, cv 3, seed 5" in description
    code, _, err = run_cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 0, err


def test_a_length_only_trace_without_arrivals_names_the_spec_key(tmp_path: Path, lengths: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, SPEC.format(arrivals=""))
    code, out, err = run_cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"pagedlab: error: {lengths}:1: arrived_at: missing column: this trace has lengths only; "
                          "give it arrival times with the spec's trace.arrivals key, e.g. arrivals = \"poisson:RATE\"")
    assert "--arrivals" not in err


@pytest.mark.parametrize("arrivals, where", [
    ('arrivals = "poisson:-1"', "spec.toml:5: trace.arrivals: rate must be a finite number > 0, got -1"),
    ('arrivals = "weibull:1"', "spec.toml:5: trace.arrivals: expected poisson:RATE, gamma:RATE:CV or constant:RATE, "
                               "got 'weibull:1'"),
    ("arrivals = 2", 'spec.toml:5: trace.arrivals: must be a string such as "poisson:2", got 2'),
])
def test_bad_arrivals_are_one_line_at_their_key(tmp_path: Path, lengths: Path, capsys: pytest.CaptureFixture[str],
                                                arrivals: str, where: str) -> None:
    spec = write_spec(tmp_path, SPEC.format(arrivals=arrivals))
    code, out, err = run_cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2 and err == f"pagedlab: error: {tmp_path}/{where}\n"


def test_arrivals_are_for_a_trace_file_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, SPEC.replace('path = "lengths.csv"', 'preset = "default"').format(
        arrivals='arrivals = "poisson:1"'))
    code, out, err = run_cli(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    assert code == 2 and "spec.toml:5: trace.arrivals: only with trace.path" in err
