"""Host time and CUDA-graph padding in step times: added by synchronous engines, overlapped (`max`) by
asynchronous ones, decode-only batches padded to the next capture size, a profile's host constants
winning over the engine's, bad values as one-line errors, and fast-forwarding charging all of it exactly
as single steps do."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from sim import EngineConfig, cli, replay
from sim.cost import CostProfile, StepBatch
from sim.host_time import ENGINES, EngineHost, HostModel, sglang_graph_sizes, vllm_v0_graph_sizes, vllm_v1_graph_sizes
from sim.policies import make_policy
from sim.timer import AnalyticTimer
from traces import Request, Trace

STEP, PER_REQUEST, PER_TOKEN = 3e-3, 1e-4, 2e-5  # host constants of the test profiles


def ns(seconds: float) -> int:
    return max(int(seconds * 1e9 + 0.5), 1)


def profile(tmp_path: Path, name: str, **host: float) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, **host}))
    return str(path)


def lone_request(prompt: int = 64, output: int = 6) -> Trace:
    return Trace([Request("r0", 0.0, prompt, output)])


def durations_ns(result) -> list[int]:
    steps = result.steps
    return [round(d * 1e9) for d in (steps["end_s"] - steps["start_s"])]


def device_only(trace: Trace, policy: str, tmp_path: Path, **config) -> pd.DataFrame:
    """The same replay with every host constant at zero: device time alone."""
    zero = profile(tmp_path, "zero", host_step_s=0, host_per_request_s=0, host_per_token_s=0)
    return replay(trace, EngineConfig(cost_profile=zero, **config), policy).steps


@pytest.mark.parametrize("policy", ["vllm-v0", "sarathi", "orca-max", "static"])
def test_a_synchronous_engine_adds_host_time_to_every_step(tmp_path: Path, policy: str) -> None:
    trace = lone_request()
    host = profile(tmp_path, "host", host_step_s=STEP, host_per_request_s=PER_REQUEST, host_per_token_s=PER_TOKEN)
    result = replay(trace, EngineConfig(cost_profile=host, cuda_graph_sizes=()), policy)
    device = device_only(trace, policy, tmp_path, cuda_graph_sizes=())
    assert len(result.steps) == len(device) == 6  # one prefill, five decodes of one sequence
    # Each step schedules one request and samples one token: host = 3 ms + 0.1 ms + 0.02 ms, added.
    expected = [ns(d + STEP + PER_REQUEST + PER_TOKEN) for d in device["duration_s"]]
    got = durations_ns(result)
    assert all(abs(g - e) <= 2 for g, e in zip(got, expected)), (got, expected)


def test_an_overlapping_engine_takes_the_longer_of_host_and_device(tmp_path: Path) -> None:
    trace = lone_request()
    device = device_only(trace, "vllm", tmp_path)["duration_s"].tolist()
    # Host far longer than any step of one sequence (about 7-8 ms on an H100): every step takes the host time.
    slow_host = profile(tmp_path, "slow", host_step_s=0.05, host_per_request_s=PER_REQUEST,
                        host_per_token_s=PER_TOKEN)
    got = durations_ns(replay(trace, EngineConfig(cost_profile=slow_host), "vllm"))
    assert max(device) < 0.05
    assert got == [ns(0.05 + PER_REQUEST + PER_TOKEN)] * len(device)
    # Host shorter than the device: fully hidden, the step times are the device's.
    fast_host = profile(tmp_path, "fast", host_step_s=STEP, host_per_request_s=PER_REQUEST,
                        host_per_token_s=PER_TOKEN)
    got = durations_ns(replay(trace, EngineConfig(cost_profile=fast_host), "vllm"))
    assert min(device) > STEP + PER_REQUEST + PER_TOKEN
    assert all(abs(g - ns(d)) <= 2 for g, d in zip(got, device))


def test_async_scheduling_is_a_setting_of_the_config_not_of_the_policy_name(tmp_path: Path) -> None:
    trace = lone_request()
    host = profile(tmp_path, "host", host_step_s=STEP, host_per_request_s=PER_REQUEST, host_per_token_s=PER_TOKEN)
    device = device_only(trace, "vllm", tmp_path)["duration_s"]
    sync = durations_ns(replay(trace, EngineConfig(cost_profile=host, async_scheduling=False), "vllm"))
    assert all(abs(g - ns(d + STEP + PER_REQUEST + PER_TOKEN)) <= 2 for g, d in zip(sync, device))
    assert make_policy("vllm").configure(EngineConfig()).async_scheduling is True
    assert make_policy("sglang").configure(EngineConfig()).async_scheduling is True
    for name in ("vllm-v0", "vllm-swap", "sarathi", "orca-max", "orca-oracle", "orca-pow2", "static"):
        assert make_policy(name).configure(EngineConfig()).async_scheduling is False, name


def test_padding_picks_the_next_capture_size_and_never_pads_above_the_largest() -> None:
    host = HostModel(graph_sizes=(1, 2, 4, 8, 16))
    assert [host.padded(b) for b in (1, 2, 3, 4, 5, 8, 9, 16, 17, 40)] == [1, 2, 4, 4, 8, 8, 16, 16, 17, 40]
    assert HostModel(graph_sizes=()).padded(5) == 5  # eager


def test_a_decode_step_costs_its_padded_batch_and_a_mixed_step_is_not_padded() -> None:
    config = make_policy("vllm-v0").configure(EngineConfig(cuda_graph_sizes=(1, 2, 4, 8, 16)))
    timer = AnalyticTimer(config)
    cost, h = timer.cost, timer.host
    base5, slope = cost.decode_coefficients(5, 8)
    assert base5 > cost.decode_coefficients(5)[0]  # padding costs GEMM work (tokens 8, not 5)
    context = 5 * 700
    expected = ns((base5 + slope * context) + h.host_s(5, 5))
    assert timer.decode_ns(5, context, 1) == [expected]
    # The same step through the general path (decode steps with block copies or swaps take it).
    batch = StepBatch(decode_seqs=5, decode_context=context, sampled_seqs=5)
    assert ns(timer.step_s(batch)) == expected
    # Above the largest capture size: eager, unpadded.
    base17, slope17 = cost.decode_coefficients(17)
    assert timer.decode_ns(17, 17 * 700, 1) == [ns((base17 + slope17 * 17 * 700) + h.host_s(17, 17))]
    # A step with prefill tokens runs its real token count.
    mixed = StepBatch(prefill_tokens=3, prefill_seqs=1, prefill_attn_pairs=3 * 2.0, prefill_kv_tokens=3,
                      decode_seqs=2, decode_context=1400, sampled_seqs=3)
    assert timer.step_s(mixed) == pytest.approx(cost.step_time(mixed) + h.host_s(3, 3), rel=0, abs=1e-15)


def test_engine_capture_sizes_follow_their_sources() -> None:
    v1 = vllm_v1_graph_sizes(make_policy("vllm").configure(EngineConfig(gpu="h100-sxm")))
    assert len(v1) == 51 and v1[:5] == (1, 2, 4, 8, 16) and v1[-3:] == (480, 496, 512) and 248 in v1 and 264 not in v1
    small = make_policy("vllm").configure(EngineConfig(gpu="h100-sxm", max_num_seqs=100))
    assert vllm_v1_graph_sizes(small)[-2:] == (192, 200)  # max 2 * 100, with max_num_seqs itself added
    assert make_policy("vllm").configure(EngineConfig()).cuda_graph_sizes == v1
    v0 = vllm_v0_graph_sizes(EngineConfig())  # max_num_seqs 256
    assert v0 == (1, 2, 4, *range(8, 257, 8)) and len(v0) == 35
    assert vllm_v0_graph_sizes(EngineConfig(max_num_seqs=20))[-1] == 24
    assert sglang_graph_sizes(EngineConfig())[:6] == (1, 2, 4, 8, 12, 16) and sglang_graph_sizes(EngineConfig())[-1] == 256
    # SGLang sizes its graphs by GPU memory: an A100-40GB captures decode batches up to 32 only.
    assert sglang_graph_sizes(EngineConfig(model="llama-2-7b", gpu="a100-40gb"))[-2:] == (24, 32)
    assert sglang_graph_sizes(EngineConfig(gpu="h200"))[-1] == 256
    assert sglang_graph_sizes(EngineConfig(model="llama-3-70b-tp4", gpu="a100-40gb"))[-1] == 160
    assert make_policy("orca-max").configure(EngineConfig()).cuda_graph_sizes == ()


def test_padding_shows_in_a_replay(tmp_path: Path) -> None:
    trace = Trace([Request(f"r{i}", 0.0, 32, 4) for i in range(5)])
    eager = replay(trace, EngineConfig(cuda_graph_sizes=()), "vllm-v0").steps
    padded = replay(trace, EngineConfig(cuda_graph_sizes=(8,)), "vllm-v0").steps
    decodes = eager["num_decode_seqs"] == 5
    assert decodes.sum() == 3 and (padded.loc[decodes, "duration_s"] > eager.loc[decodes, "duration_s"]).all()
    prefill = eager["num_prefill_tokens"] > 0
    assert (padded.loc[prefill, "duration_s"] == eager.loc[prefill, "duration_s"]).all()


def test_a_profile_overrides_the_engines_host_constants(tmp_path: Path) -> None:
    config = make_policy("vllm-v0").configure(EngineConfig())
    engine = ENGINES["vllm-v0"]
    default = HostModel.of(config, CostProfile.load("default"))
    assert (default.step_s, default.per_request_s, default.per_token_s) == \
        (engine.step_s, engine.per_request_s, engine.per_token_s)
    measured = CostProfile.load(profile(tmp_path, "measured", host_step_s=0.0125))
    host = HostModel.of(config, measured)
    assert (host.step_s, host.per_request_s, host.per_token_s) == (0.0125, engine.per_request_s, engine.per_token_s)
    trace = lone_request()
    a = replay(trace, EngineConfig(cost_profile=profile(tmp_path, "a", host_step_s=0.001)), "vllm-v0").steps
    b = replay(trace, EngineConfig(cost_profile=profile(tmp_path, "b", host_step_s=0.004)), "vllm-v0").steps
    assert (b["duration_s"] - a["duration_s"]).round(9).tolist() == [0.003] * len(a)
    assert replay(trace, EngineConfig(), "vllm-v0").config["cost_model"]["host_step_s"] == engine.step_s


@pytest.mark.parametrize("fields, message", [
    ({"host_step_s": -1.0}, "cost profile default: host_step_s: must be a finite number >= 0, got -1.0"),
    ({"host_per_request_s": float("inf")}, "host_per_request_s: must be a finite number >= 0, got inf"),
    ({"host_per_token_s": "fast"}, "host_per_token_s: must be a finite number >= 0, got 'fast'"),
    ({"host_per_token_s": True}, "host_per_token_s: must be a finite number >= 0, got True"),
])
def test_bad_profile_host_values_are_one_line_errors(fields: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        CostProfile(**fields)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("fields, message", [
    ({"host_engine": "vllm-v2"}, "host_engine: unknown name 'vllm-v2'; valid names: vllm-v1, vllm-v0, sglang"),
    ({"async_scheduling": "yes"}, "async_scheduling: must be a bool, got 'yes'"),
    ({"cuda_graph_sizes": (8, 4)}, "cuda_graph_sizes: must be a strictly increasing tuple of integers >= 1"),
    ({"cuda_graph_sizes": (0, 4)}, "cuda_graph_sizes: must be a strictly increasing tuple of integers >= 1"),
])
def test_bad_host_settings_are_one_line_errors(fields: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        EngineConfig(**fields)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert EngineConfig(cuda_graph_sizes=[1, 2, 4]).cuda_graph_sizes == (1, 2, 4)  # JSON lists are accepted


def test_a_bad_host_value_in_a_profile_file_is_a_one_line_cli_error(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace.csv"
    lone_request().to_csv(trace)
    bad = profile(tmp_path, "bad", host_step_s=-0.5)
    code = cli.main(["replay", "--trace", str(trace), "--cost-profile", bad, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("pagedlab: error: ") and err.count("\n") == 1
    assert "host_step_s: must be a finite number >= 0, got -0.5" in err


@pytest.mark.parametrize("policy, fields", [
    ("vllm", {}),                                  # overlapped, graphs up to 512
    ("vllm-v0", {"cuda_graph_sizes": (2, 6, 12)}),  # added, padding 5 -> 6 -> 12 as requests finish
    ("sglang", {}),
])
def test_fast_forward_charges_host_time_and_padding_as_single_steps(tmp_path: Path, policy: str,
                                                                     fields: dict) -> None:
    # Host time close to the device time, so that max(device, host) switches inside a run of decode steps
    # as the contexts grow; staggered lengths so the batch (and its padding) changes.
    host = profile(tmp_path, "host", host_step_s=7.5e-3, host_per_request_s=2e-5, host_per_token_s=1e-6)
    trace = Trace([Request(f"r{i}", 0.002 * i, 200 + 300 * i, 60 + 45 * i) for i in range(11)])
    runs = [replay(trace, EngineConfig(cost_profile=host, fast_forward=ff, **fields), policy) for ff in (True, False)]
    fast, slow = runs
    assert len(fast.steps) == len(slow.steps)
    pd.testing.assert_frame_equal(fast.steps, slow.steps)
    pd.testing.assert_frame_equal(fast.requests, slow.requests)
    assert fast.summary["num_records"] < slow.summary["num_records"]
    hosts = 7.5e-3 + (2e-5 + 1e-6) * fast.steps["num_decode_seqs"]
    decode_only = fast.steps["num_prefill_tokens"] == 0
    if ENGINES[make_policy(policy).host_engine].overlap:
        # Some steps are host-bound (exactly the host time), others device-bound.
        bound = (fast.steps.loc[decode_only, "duration_s"] - hosts[decode_only]).abs() < 2e-9
        assert 0 < bound.sum() < decode_only.sum()
    else:
        assert (fast.steps["duration_s"] > hosts).all()


@pytest.mark.parametrize("policy", ["vllm-v0", "vllm", "sglang"])
def test_the_device_only_engine_is_the_replay_without_host_time(tmp_path: Path, policy: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # What the execute backend measures: `replay --host-engine device-only` equals a zero-host profile.
    trace = Trace([Request(f"r{i}", 0.01 * i, 64, 6) for i in range(4)])
    path = tmp_path / "t.csv"
    trace.to_pandas().to_csv(path, index=False)
    assert cli.main(["replay", "--trace", str(path), "--policy", policy, "--host-engine", "device-only",
                     "--quiet", "--out", str(tmp_path / "d")]) == 0
    steps = pd.read_csv(tmp_path / "d" / "steps.csv")
    device = device_only(trace, policy, tmp_path)
    assert steps["duration_s"].round(9).tolist() == device["duration_s"].round(9).tolist()
    if policy == "vllm-v0":  # V0 adds its 4 ms a step; the overlapping engines hide theirs under these steps
        assert replay(trace, EngineConfig(), policy).steps["duration_s"].sum() > device["duration_s"].sum() + 0.02


@pytest.mark.parametrize("make, message", [
    (lambda: HostModel(step_s=-1e-3), "host model: step_s: must be a finite number >= 0, got -0.001"),
    (lambda: HostModel(per_token_s=float("nan")), "host model: per_token_s: must be a finite number >= 0"),
    (lambda: HostModel(graph_sizes=(8, 4)), "cuda_graph_sizes: must be a strictly increasing tuple"),
    (lambda: EngineHost(1e-3, -1.0, 0.0, True, lambda config: ()), "engine host: per_request_s: must be a finite"),
])
def test_host_terms_are_checked_where_they_are_made(make, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_a_gpu_preset_with_a_rate_of_zero_is_refused() -> None:
    from dataclasses import replace

    from sim.presets import GPUS

    with pytest.raises(ValueError, match="gpu h100-sxm: hbm_bandwidth: must be a finite number > 0, got 0"):
        replace(GPUS["h100-sxm"], hbm_bandwidth=0)
