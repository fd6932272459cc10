"""A trace whose requests all arrive at once has no finite rate: rate scales still apply (the scaled trace
arrives at once too), absolute rates are refused in one line naming the trace and the field."""
from __future__ import annotations

from pathlib import Path

import pytest

from sim import cli
from test_sweep import write_spec


@pytest.fixture
def at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "at_once.csv"
    assert cli.main(["trace", "gen", "--out", str(path), "-n", "12", "--rate", "inf"]) == 0
    capsys.readouterr()
    return path


def test_compare_scales_a_trace_arriving_at_once(tmp_path: Path, at_once: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["compare", "--trace", str(at_once), "--policies", "vllm", "--rate-scales", "1,2",
                     "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "report.html").is_file()


def test_compare_refuses_rates_for_a_trace_arriving_at_once(tmp_path: Path, at_once: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["compare", "--trace", str(at_once), "--policies", "vllm", "--rates", "1",
                     "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"pagedlab: error: {at_once}: arrival_s: every request arrives at the same time"), err
    assert not (tmp_path / "out").exists()


SPEC = """\
[trace]
path = "at_once.csv"
[grid]
policy = ["vllm", "sglang"]
[slo]
ttft_ms = 2000
[loads]
{loads}
"""


def test_sweep_scales_a_trace_arriving_at_once(tmp_path: Path, at_once: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, SPEC.format(loads="rate_scales = [1]"))
    code = cli.main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "summary.csv").is_file()


def test_sweep_refuses_rates_for_a_trace_arriving_at_once(tmp_path: Path, at_once: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, SPEC.format(loads="rates = [1]"))
    code = cli.main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"pagedlab: error: {at_once}: arrival_s: every request arrives at the same time"), err
    assert not (tmp_path / "out").exists()


def test_scaling_keeps_requests_arriving_at_once(at_once: Path) -> None:
    from traces import load

    assert (load(at_once).scale_rate(2.0).to_pandas()["arrival_s"] == 0).all()
