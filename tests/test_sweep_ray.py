"""The Ray executor on a local Ray instance: the same bytes as local processes, for `sweep` and `compare`.

One Ray instance serves the module (starting one takes 5-10 s on a 2-core machine): 2 CPUs, no dashboard.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from test_sweep import RESULT_FILES, results, run_cli, write_spec

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_instance():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sigterm = signal.getsignal(signal.SIGTERM)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    signal.signal(signal.SIGTERM, sigterm)  # ray.init installs its own and never restores it: other tests check it

    @ray.remote
    def ping() -> str:
        return "pong"

    assert ray.get(ping.remote(), timeout=120) == "pong", "the local Ray instance runs no task"
    yield ray
    ray.shutdown()


def test_sweep_on_ray_writes_the_same_bytes_as_local_processes(
        ray_instance, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path)
    code, *_ = run_cli(["sweep", str(spec), "--out", str(tmp_path / "local"), "--jobs", "2", "--quiet"], capsys)
    assert code == 0
    code, stdout, _ = run_cli(["sweep", str(spec), "--out", str(tmp_path / "ray"), "--executor", "ray", "--quiet"],
                              capsys)
    assert code == 0 and "4 configurations" in stdout
    assert results(tmp_path / "ray") == results(tmp_path / "local"), "files differ: " + ", ".join(
        name for name in RESULT_FILES if (tmp_path / "ray" / name).read_bytes() != (tmp_path / "local" / name).read_bytes())
    assert '"executor": "ray"' in (tmp_path / "ray" / "manifest.json").read_text()


def test_compare_runs_on_ray_with_the_same_numbers(ray_instance, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    tiny = ["compare", "--preset", "default", "--num-requests", "24", "--policies", "vllm-v0", "--rates", "2,16", "--quiet"]
    assert run_cli([*tiny, "--out", str(tmp_path / "local")], capsys)[0] == 0
    assert run_cli([*tiny, "--executor", "ray", "--jobs", "2", "--out", str(tmp_path / "ray")], capsys)[0] == 0
    local, on_ray = (pd.read_csv(tmp_path / d / "summary.csv").drop(columns="sim_wall_s") for d in ("local", "ray"))
    pd.testing.assert_frame_equal(local, on_ray)
    reports = [(tmp_path / d / "report.md").read_text().replace(str(tmp_path / d), "OUT") for d in ("local", "ray")]
    assert reports[0] == reports[1]


def test_a_failing_replay_on_ray_raises_its_own_error(ray_instance) -> None:
    """The task's ValueError itself, not Ray's wrapper: the CLI prints it as one line."""
    from analysis.executors import make_executor
    from analysis.slo import SLO
    from analysis.sweep_task import Probe, run_probe

    with pytest.raises(ValueError, match="^block_size: must be an integer >= 1, got 0$"):
        with make_executor("ray", run_probe, None, jobs=2) as pool:
            pool.submit(0, Probe(0, "vllm-v0", {"block_size": 0}, 0, 1.0, SLO(ttft_ms=1.0)))
            pool.next_result()
