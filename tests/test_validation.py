"""`pagedlab validate`: verdict logic, the capacity bisection, per-operator times, the shipped Vidur data, the
quick suite staying in its bands, and one-line errors for bad options."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from analysis.validation.case import RESULT_COLUMNS, CheckResult
from analysis.validation.runner import CASE_MODULES, parse_cases, run_suite
from analysis.validation.search import bisect_capacity
from sim import cli


def _check(ours: float, expect_pass: bool = True, lo: float | None = 1.0, hi: float | None = 2.0) -> CheckResult:
    return CheckResult(case="0", check="c", source="s", setting="x", metric="m", published="p", band_lo=lo,
                       band_hi=hi, ours=ours, expect_pass=expect_pass, reason="" if expect_pass else "why")


@pytest.mark.parametrize("ours,expect_pass,verdict", [
    (1.5, True, "pass"), (1.0, True, "pass"), (2.0, True, "pass"), (2.01, True, "FAIL"), (math.nan, True, "FAIL"),
    (3.0, False, "expected-fail"), (1.5, False, "unexpected-pass"),
])
def test_verdict_follows_band_and_expectation(ours: float, expect_pass: bool, verdict: str) -> None:
    assert _check(ours, expect_pass).verdict == verdict


def test_one_sided_bands() -> None:
    assert _check(0.5, lo=None, hi=1.0).in_band and not _check(1.5, lo=None, hi=1.0).in_band
    assert _check(9.0, lo=1.0, hi=None).in_band and not _check(0.9, lo=1.0, hi=None).in_band


def test_known_miss_must_say_why() -> None:
    with pytest.raises(AssertionError):
        CheckResult(case="0", check="c", source="s", setting="x", metric="m", published="p", band_lo=0.0,
                    band_hi=1.0, ours=2.0, expect_pass=False)


@pytest.mark.parametrize("threshold", [0.3, 1.7, 3.0, 25.0])
def test_bisection_brackets_the_threshold(threshold: float) -> None:
    search = bisect_capacity(lambda load: (load <= threshold, {}), lo=0.5, hi=2.0, steps=6)
    assert search.capacity <= threshold
    failing = [load for load, ok in zip(search.loads, search.passed) if not ok]
    assert failing and min(failing) > threshold
    assert min(failing) / search.capacity < 1.2  # six bisections of at most a factor 2


def test_bisection_edges() -> None:
    assert math.isnan(bisect_capacity(lambda load: (False, {}), 0.5, 2.0, steps=3).capacity)
    every = bisect_capacity(lambda load: (True, {}), 0.5, 2.0, steps=3, max_expand=2)
    assert every.capacity == max(every.loads) and all(every.passed)


def test_op_times_follow_the_roofline() -> None:
    from sim.cost import CostProfile
    from sim.op_times import OPS, layer_gemm_time, op_times
    from sim.presets import GPUS, MODELS

    m, g, p = MODELS["llama-2-7b"], GPUS["h100-sxm"], CostProfile.load("default")
    ops = op_times(m, g, p, 4096)
    assert tuple(ops) == OPS and all(v > 0 for v in ops.values())
    # Large batch: the QKV projection is compute-bound, 2 FLOPs per weight per token.
    qkv = 2 * 4096 * m.hidden_size * 3 * m.hidden_size / (g.peak_flops * p.gemm_compute_efficiency)
    assert ops["attn_pre_proj"] == pytest.approx(qkv)
    # One token: the layer streams its weights once.
    weights = m.layer_params * m.dtype_bytes / (g.hbm_bandwidth * p.gemm_memory_efficiency)
    assert layer_gemm_time(m, g, p, 1) == pytest.approx(weights, rel=1e-3)
    assert layer_gemm_time(m, g, p, 4096) == pytest.approx(
        2 * 4096 * m.layer_params / (g.peak_flops * p.gemm_compute_efficiency))
    with pytest.raises(ValueError, match="tokens"):
        op_times(m, g, p, 0)


def test_vidur_data_is_shipped() -> None:
    from analysis.validation.ops import DATA_DIR, SETTINGS, load_measured

    assert (DATA_DIR / "LICENSE").is_file() and "MIT" in (DATA_DIR / "LICENSE").read_text()
    for stem, *_ in SETTINGS:
        table = load_measured(stem)
        assert table["num_tokens"].min() == 1 and table["num_tokens"].max() == 4096 and len(table) > 200
        assert (table["layer_ms"] > 0).all() and table["layer_ms"].iloc[-1] > 10 * table["layer_ms"].iloc[0]


@pytest.fixture(scope="module")
def quick_suite(tmp_path_factory: pytest.TempPathFactory):
    return run_suite(tmp_path_factory.mktemp("validate") / "out", quick=True)


def test_quick_suite_stays_in_its_bands(quick_suite) -> None:
    regressions = [f"case {c.case} {c.check}: {c.ours:.4g} outside {c.band_lo}..{c.band_hi}"
                   for c in quick_suite.regressions]
    assert not regressions, "\n".join(regressions)
    assert {c.case for c in quick_suite.checks} == set(CASE_MODULES)
    assert any(c.verdict == "pass" for c in quick_suite.checks)


def test_quick_suite_writes_its_report(quick_suite) -> None:
    out = Path(quick_suite.out_dir)
    table = pd.read_csv(out / "validation.csv")
    assert tuple(table.columns) == RESULT_COLUMNS and len(table) == len(quick_suite.checks)
    assert table["source"].str.len().min() > 10
    assert table.loc[~table["expect_pass"], "reason"].str.len().min() > 20  # every known miss says why
    text = (out / "validation.md").read_text()
    assert "expected-fail" in text and "Wall time" in text
    for figure in ("ops_layer_time.png", "orca_normalized_latency.png", "sharing.png"):
        assert (out / figure).stat().st_size > 1000, figure


def test_parse_cases() -> None:
    assert parse_cases(None) == list(CASE_MODULES) and parse_cases("3, 1") == ["3", "1"]
    with pytest.raises(ValueError, match="unknown case '9'"):
        parse_cases("1,9")
    with pytest.raises(ValueError, match="case '1' given twice in '1,3,1'"):
        parse_cases("1,3,1")


@pytest.mark.parametrize("argv,needle", [
    (["validate", "--cases", "9"], "unknown case '9'"),
    (["validate", "--cases", ","], "unknown case"),
    (["validate", "--quick=yes"], "validate:"),
    (["validate", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_options_give_one_line_and_exit_2(argv: list[str], needle: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err and err.startswith("pagedlab: error:")


def test_out_on_a_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "a_file"
    target.write_text("x")
    assert cli.main(["validate", "--cases", "4", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(target) in err


def test_a_check_leaving_its_band_exits_1_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import sys
    import types

    from analysis.validation import runner

    case = types.ModuleType("drifted_case")
    case.run = lambda quick, out_dir: [  # type: ignore[attr-defined]
        CheckResult(case="4", check="share drifted", source="a published figure", setting="x", metric="m",
                    published="p", band_lo=1.0, band_hi=2.0, ours=2.5, expect_pass=True)]
    monkeypatch.setitem(sys.modules, "drifted_case", case)
    monkeypatch.setitem(runner.CASE_MODULES, "4", "drifted_case")
    assert cli.main(["validate", "--cases", "4", "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "FAIL  case 4  share drifted: ours 2.5" in captured.out
    assert captured.err.strip().splitlines() == [
        "pagedlab: error: validate: 1 check(s) left their band: case 4 share drifted"]
