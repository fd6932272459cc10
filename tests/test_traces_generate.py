"""Seeded generators: determinism, arrival processes, length presets, sampling mix, prefix groups."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sim import cli
from traces import LENGTH_PRESETS, generate, load
from traces.generator import fit_lognormal_mu


def gaps(trace) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.diff(trace.column("arrival_s"))


def test_same_seed_same_bytes_other_seed_other_trace(tmp_path: Path) -> None:
    options = dict(rate=4.0, arrival="gamma", burstiness=0.5, lengths="sharegpt", parallel_fraction=0.2,
                   beam_fraction=0.1, num_prefix_groups=4, prefix_tokens=32, prefix_fraction=0.5, num_priorities=3)
    paths = [tmp_path / f"{i}.csv" for i in range(3)]
    generate(500, seed=7, **options).to_csv(paths[0])  # type: ignore[arg-type]
    generate(500, seed=7, **options).to_csv(paths[1])  # type: ignore[arg-type]
    generate(500, seed=8, **options).to_csv(paths[2])  # type: ignore[arg-type]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_one_stream_per_aspect() -> None:
    # Changing the sampling mix must not move arrivals or lengths.
    a = generate(200, rate=2.0, seed=1)
    b = generate(200, rate=2.0, seed=1, parallel_fraction=0.5, n=3)
    for name in ("arrival_s", "prompt_tokens", "output_tokens"):
        assert np.array_equal(a.column(name), b.column(name))


@pytest.mark.parametrize("arrival, burstiness, cv", [("poisson", 1.0, 1.0), ("gamma", 0.25, 2.0),
                                                     ("gamma", 4.0, 0.5), ("constant", 1.0, 0.0)])
def test_arrival_processes_rate_and_burstiness(arrival: str, burstiness: float, cv: float) -> None:
    trace = generate(20_000, rate=8.0, arrival=arrival, burstiness=burstiness, seed=2, lengths="fixed")
    g = gaps(trace)
    assert trace[0].arrival_s == 0.0
    assert 1 / g.mean() == pytest.approx(8.0, rel=0.04)
    # Gamma gaps with shape k have coefficient of variation 1/sqrt(k): burstiness 1 is Poisson.
    assert g.std() / g.mean() == pytest.approx(cv, abs=0.06)


def test_infinite_rate_sends_everything_at_zero() -> None:
    assert not generate(10, rate=float("inf"), seed=0).column("arrival_s").any()


@pytest.mark.parametrize("preset", ["sharegpt", "alpaca"])
def test_presets_match_published_mean_lengths(preset: str) -> None:
    p = LENGTH_PRESETS[preset]
    trace = generate(40_000, rate=1.0, lengths=preset, seed=3)
    prompt, output = trace.column("prompt_tokens"), trace.column("output_tokens")
    assert prompt.mean() == pytest.approx(p.prompt_mean, rel=0.03)
    assert output.mean() == pytest.approx(p.output_mean, rel=0.03)
    assert prompt.max() <= p.max_tokens and output.max() <= p.max_tokens and prompt.min() >= 1


def test_sharegpt_is_longer_and_more_variable_than_alpaca() -> None:
    share = generate(20_000, rate=1.0, lengths="sharegpt", seed=4).column("prompt_tokens")
    alpaca = generate(20_000, rate=1.0, lengths="alpaca", seed=4).column("prompt_tokens")
    assert share.mean() / alpaca.mean() == pytest.approx(8.4, rel=0.05)  # the paper's "8.4x longer"
    assert share.std() > alpaca.std()


def test_capped_lognormal_fit() -> None:
    mu = fit_lognormal_mu(300.0, 1.0, 2048)
    samples = np.minimum(np.random.default_rng(0).lognormal(mu, 1.0, 400_000), 2048)
    assert samples.mean() == pytest.approx(300.0, rel=0.01)
    assert fit_lognormal_mu(300.0, 1.0, None) == pytest.approx(np.log(300.0) - 0.5)


def test_fixed_uniform_lognormal_lengths() -> None:
    fixed = generate(100, rate=1.0, lengths="fixed", input_len=64, output_len=8, seed=0)
    assert set(fixed.column("prompt_tokens")) == {64} and set(fixed.column("output_tokens")) == {8}
    uniform = generate(5000, rate=1.0, lengths="uniform", input_len=100, output_len=10, range_ratio=0.5, seed=0)
    assert uniform.column("prompt_tokens").min() == 50 and uniform.column("prompt_tokens").max() == 150
    lognormal = generate(20_000, rate=1.0, lengths="lognormal", input_len=200, output_len=50, sigma=0.7, seed=0)
    assert lognormal.column("prompt_tokens").mean() == pytest.approx(200, rel=0.03)
    capped = generate(2000, rate=1.0, lengths="lognormal", input_len=200, max_prompt_tokens=400,
                      max_output_tokens=64, seed=0)
    assert capped.column("prompt_tokens").max() <= 400 and capped.column("output_tokens").max() <= 64


def test_sampling_mix_prefix_groups_and_priorities() -> None:
    trace = generate(10_000, rate=1.0, lengths="fixed", input_len=20, seed=5, parallel_fraction=0.3,
                     beam_fraction=0.2, n=6, num_prefix_groups=5, prefix_tokens=100, prefix_fraction=0.6,
                     num_priorities=4)
    sampling, n = trace.column("sampling"), trace.column("n")
    assert np.mean(sampling == "parallel") == pytest.approx(0.3, abs=0.02)
    assert np.mean(sampling == "beam") == pytest.approx(0.2, abs=0.02)
    assert set(n[sampling == "greedy"]) == {1} and set(n[sampling != "greedy"]) == {6}
    grouped = trace.column("prefix_group") != None  # noqa: E711 - element-wise on an object array
    assert np.mean(grouped) == pytest.approx(0.6, abs=0.02)
    assert {g for g in trace.column("prefix_group") if g} == {f"g{i}" for i in range(5)}
    assert set(trace.column("prompt_tokens")[grouped]) == {120}  # shared prefix + own prompt
    assert set(trace.column("prefix_tokens")[grouped]) == {100} and set(trace.column("prefix_tokens")[~grouped]) == {0}
    assert set(trace.column("priority")) == {0, 1, 2, 3}
    trace.requests  # every row is a valid Request


def test_max_context_clips_with_notice() -> None:
    trace = generate(1000, rate=1.0, lengths="sharegpt", seed=6, max_context=512)
    total = trace.column("prompt_tokens") + trace.column("output_tokens")
    assert total.max() <= 512 and "clipped" in trace.notices[-1]


def test_cli_gen_writes_the_native_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gen.csv"
    args = ["trace", "gen", "--out", str(out), "-n", "300", "--rate", "3", "--arrival", "gamma",
            "--burstiness", "0.5", "--lengths", "alpaca", "--seed", "9", "--beam-fraction", "0.25", "--n", "2",
            "--prefix-groups", "2", "--prefix-tokens", "16"]
    assert cli.main(args) == 0
    assert "requests    300" in capsys.readouterr().out
    expected = generate(300, rate=3.0, arrival="gamma", burstiness=0.5, lengths="alpaca", seed=9,
                        beam_fraction=0.25, n=2, num_prefix_groups=2, prefix_tokens=16)
    assert load(out).requests == expected.requests
    first = out.read_bytes()
    assert cli.main([*args, "--force"]) == 0 and out.read_bytes() == first  # byte for byte
    jsonl = tmp_path / "gen.jsonl"
    assert cli.main([*args[:3], str(jsonl), *args[4:]]) == 0
    assert load(jsonl).requests == expected.requests


@pytest.mark.parametrize("fields, message", [
    ({"prompt_mean": 0.0}, "length preset: prompt_mean: must be a finite number > 0, got 0.0"),
    ({"output_sigma": float("inf")}, "length preset: output_sigma: must be a finite number > 0"),
    ({"max_tokens": 0}, "length preset: max_tokens: must be an integer >= 1, got 0"),
])
def test_a_length_preset_out_of_range_is_refused(fields: dict, message: str) -> None:
    from dataclasses import replace

    from traces.generator import LENGTH_PRESETS

    with pytest.raises(ValueError, match=re.escape(message)):
        replace(LENGTH_PRESETS["sharegpt"], **fields)
