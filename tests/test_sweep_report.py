"""How a sweep's report shows each configuration's capacity among the loads it probed."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from analysis.sweep_report import capacity_text, summary_rows


def _record(index: int, passed: dict[float, bool]) -> dict:
    """A configuration record whose probes at each rate scale passed or failed as given."""
    probes = [{"rate_scale": s, "meets_slos": ok, "p99_ttft_ms": 100.0 * s} for s, ok in sorted(passed.items())]
    scales = sorted(passed)
    met = [s for s in scales if passed[s]]
    # capacity: the highest scale with every lower one passing
    capacity = None
    for s in scales:
        if not passed[s]:
            break
        capacity = s
    return {"index": index, "params": {"max_num_seqs": 32}, "policy": "vllm", "costs": {"kv_gib": 10.0},
            "capacity_scale": capacity, "rate_per_scale": 1.5, "lower_bound": all(passed.values()),
            "replays": len(probes), "probes": probes}


@pytest.mark.parametrize(("passed", "rate", "scale"), [
    ({1.0: True, 2.0: False}, "1.5-3", "1-2"),          # the highest load failed: not a lower bound
    ({1.0: True, 2.0: True}, "3+", "2+"),               # every load passed
    ({1.0: False, 2.0: False}, "< 1.5", "< 1"),         # none passed
    ({1.0: True, 2.0: False, 4.0: True}, "1.5-3", "1-2"),  # a pass above a failure does not count
])
def test_capacity_shows_the_first_failing_load(passed: dict[float, bool], rate: str, scale: str) -> None:
    row = summary_rows([_record(0, passed)], ("p99_ttft_ms",))[0]
    assert capacity_text(row) == rate
    assert capacity_text(row, scale=True) == scale
    expected_failing = min((s for s, ok in passed.items() if not ok), default=math.nan)
    assert row["first_failing_scale"] == expected_failing or (math.isnan(expected_failing)
                                                              and math.isnan(row["first_failing_scale"]))


@pytest.mark.parametrize(("attainments", "bound"), [
    ({1.0: 0.95, 2.0: 0.95, 4.0: 0.95}, True),
    ({1.0: 0.95, 2.0: 0.95, 4.0: 0.5}, False),
    ({1.0: 0.95, 2.0: 0.5, 4.0: 0.95}, False),   # a pass above a failure: the capacity stops at 1
])
def test_fixed_loads_are_a_lower_bound_only_when_every_load_passed(attainments: dict[float, float],
                                                                   bound: bool) -> None:
    from analysis.sweep_search import FixedLoads

    walk = FixedLoads(sorted(attainments), 0.9)
    for scale in walk.take_ready():
        walk.record(scale, attainments[scale])
    assert walk.done and walk.lower_bound is bound


def test_a_sweep_where_no_configuration_meets_the_slos_still_reports(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from sim import cli

    spec = tmp_path / "spec.toml"
    spec.write_text('[trace.generate]\nnum_requests = 6\nrate = 2.0\nlengths = "fixed"\ninput_len = 64\n'
                    'output_len = 8\n[engine]\nmodel = "tiny"\n[grid]\npolicy = ["vllm-v0"]\n[slo]\nttft_ms = 0.001\n'
                    '[loads]\nrates = [1]\n')
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "No configuration meets the SLOs (ttft<=0.001ms) at any load tried." in report
    assert "| 0 | vllm-v0 | " in report and "< 1 |" in report
    assert (tmp_path / "out" / "plots" / "pareto.png").stat().st_size > 0


def test_configurations_sharing_the_highest_capacity_are_named_together(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # Both pass every load: the findings named only the first as having the highest capacity.
    from sim import cli

    spec = tmp_path / "spec.toml"
    spec.write_text('[trace.generate]\nnum_requests = 6\nrate = 2.0\nlengths = "fixed"\ninput_len = 64\n'
                    'output_len = 8\n[engine]\nmodel = "tiny"\n[grid]\npolicy = ["vllm-v0", "sarathi"]\n'
                    '[slo]\nttft_ms = 100000\n[loads]\nrates = [1]\n')
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    report = (tmp_path / "out" / "report.md").read_text()
    line = next(line for line in report.splitlines() if line.startswith("- Highest capacity: "))
    assert line.startswith("- Highest capacity: 1+ req/s (rate scale ")
    assert "shared by 2 configurations: #0 (policy=vllm-v0; kv_gib " in line and "#1 (policy=sarathi; kv_gib " in line
