"""Engine configuration, presets and the analytic cost model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sim import GPUS, MODELS, AnalyticCostModel, CostProfile, EngineConfig, StepBatch
from sim.cost import make_cost_model
from sim.presets import GIB


@pytest.mark.parametrize("name, params", [
    ("llama-3-8b", 8.03e9), ("llama-2-7b", 6.74e9), ("mistral-7b", 7.24e9), ("llama-3-70b-tp4", 70.55e9),
    ("opt-13b", 12.85e9), ("llama-3.1-8b", 8.03e9), ("qwen2.5-7b", 7.61e9),
])
def test_model_presets_have_the_published_sizes(name: str, params: float) -> None:
    assert MODELS[name].num_params == pytest.approx(params, rel=0.01)


def test_preset_names() -> None:
    assert set(MODELS) == {"llama-3-8b", "llama-3.1-8b", "qwen2.5-7b", "llama-2-7b", "mistral-7b", "llama-3-70b-tp4",
                           "opt-13b", "tiny"}
    assert set(GPUS) == {"h100-sxm", "h200", "a100-80gb", "a100-40gb"}
    tiny = MODELS["tiny"]
    assert (tiny.num_layers, tiny.num_q_heads, tiny.num_kv_heads, tiny.head_dim) == (2, 4, 2, 64)
    assert MODELS["llama-3-70b-tp4"].tp == 4


def test_kv_bytes_per_token() -> None:
    # Llama-3-8B: 32 layers x 8 KV heads x 128 x (K, V) x 2 bytes = 128 KiB; TP 4 splits the 70B's heads.
    assert MODELS["llama-3-8b"].kv_bytes_per_token_per_gpu == 131072
    assert MODELS["llama-3-70b-tp4"].kv_bytes_per_token_per_gpu == 2 * 80 * 2 * 128 * 2
    assert MODELS["opt-13b"].kv_bytes_per_token_per_gpu == 2 * 40 * 40 * 128 * 2


def test_kv_blocks_follow_the_memory_left_after_weights() -> None:
    config = EngineConfig()
    model, gpu = MODELS["llama-3-8b"], GPUS["h100-sxm"]
    free = gpu.memory_gib * GIB * 0.9 - model.num_params * 2 - 1.5 * GIB
    assert config.kv_blocks == int(free // (131072 * 16))
    assert EngineConfig(gpu_memory_utilization=0.95).kv_blocks > config.kv_blocks
    assert EngineConfig(gpu="h200").kv_blocks > 1.9 * config.kv_blocks
    assert EngineConfig(num_gpu_blocks=123).kv_blocks == 123
    assert EngineConfig(block_size=32).kv_blocks == config.kv_blocks // 2
    assert config.cpu_blocks == int(4 * GIB // (131072 * 16))
    # The paper's setting: OPT-13B on an A100-40GB leaves room for about 14k tokens.
    assert 12_000 < EngineConfig(model="opt-13b", gpu="a100-40gb").kv_blocks * 16 < 16_000


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "gpt-5"}, "model: unknown name 'gpt-5'; valid names: llama-3-8b"),
    ({"gpu": "tpu"}, "gpu: unknown name 'tpu'; valid names: h100-sxm, h200, a100-80gb, a100-40gb"),
    ({"backend": "vidur"}, "backend: unknown name 'vidur'; valid names: analytic"),
    ({"block_size": 0}, "block_size: must be an integer >= 1"),
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization: must be a number in (0, 1]"),
    ({"watermark": 1.0}, "watermark: must be a number in [0, 1)"),
    ({"max_model_len": 100_000}, "max_model_len: 100000 exceeds llama-3-8b's context"),
    ({"swap_space_gib": -1}, "swap_space_gib: must be a finite number >= 0"),
    ({"swap_space_gib": 1e9}, "swap_space_gib: 1e+09 GiB a GPU (x1) is more than vLLM accepts of a 2 TiB host"),
    ({"swap_space_gib": 400, "model": "llama-3-70b-tp4"}, "give at most 358.4"),
    ({"model": "llama-3-70b-tp4", "gpu": "a100-40gb", "gpu_memory_utilization": 0.5}, "does not fit"),
    # the weights fit: the block is what is too large (it read "model llama-3-8b does not fit on h100-sxm")
    ({"block_size": 100_000_000}, "block_size: one KV block of 100000000 tokens takes 12207.03 GiB, more than the "
                                  "55.18 GiB llama-3-8b leaves for the KV cache on h100-sxm"),
    # a pool no GPU holds (its bookkeeping alone ended in a MemoryError traceback)
    ({"num_gpu_blocks": 10**12}, "num_gpu_blocks: 1000000000000 blocks of 2 MiB are 1.953e+09 GiB, more than the"),
])
def test_bad_settings_raise_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        EngineConfig(**kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_config_dict_is_json_and_carries_derived_sizes() -> None:
    data = json.loads(json.dumps(EngineConfig().to_dict()))
    assert data["derived_num_gpu_blocks"] == EngineConfig().kv_blocks
    assert data["model_spec"]["num_layers"] == 32 and data["gpu_spec"]["name"] == "h100-sxm"


def test_cost_profile_loads_by_name_or_path(tmp_path) -> None:
    default = CostProfile.load("default")
    assert 0 < default.gemm_compute_efficiency <= 1 and default.step_overhead_s > 0
    path = tmp_path / "measured.json"
    path.write_text(json.dumps({"name": "measured", "step_overhead_s": 0.01}))
    assert CostProfile.load(str(path)).step_overhead_s == 0.01
    path.write_text(json.dumps({"name": "bad", "warp_speed": 9}))
    with pytest.raises(ValueError, match=f"^{path}:1: warp_speed: unknown key; valid keys: "):
        CostProfile.load(str(path))
    with pytest.raises(ValueError, match="cost_profile: unknown name 'nope'; valid names: default"):
        CostProfile.load("nope")
    with pytest.raises(ValueError, match="must be in"):
        CostProfile(gemm_compute_efficiency=1.5)


def test_a_bad_profile_file_is_named_with_the_line_of_its_key(tmp_path) -> None:
    # A file without "name" was blamed on "cost profile default", the shipped profile.
    path = tmp_path / "fast.json"
    path.write_text('{\n  "step_overhead_s": 0.001,\n  "gemm_compute_efficiency": 2\n}\n')
    with pytest.raises(ValueError) as info:
        CostProfile.load(str(path))
    assert str(info.value) == f"{path}:3: gemm_compute_efficiency: must be in (0, 1], got 2"
    path.write_text("[0.5]")
    with pytest.raises(ValueError, match=f"^{path}:1: json: expected an object of constants, got list$"):
        CostProfile.load(str(path))
    # A path that is not .json (a CSV, a directory) is named as a path, not looked up as a profile name.
    (tmp_path / "measured.csv").write_text("a,b\n")
    for other in (tmp_path / "measured.csv", tmp_path):
        with pytest.raises(ValueError, match=f"^{other}: cost_profile: a profile file must be JSON"):
            CostProfile.load(str(other))


def test_profile_changes_step_times() -> None:
    config = EngineConfig()
    slow = AnalyticCostModel(config.model_spec, config.gpu_spec, CostProfile(step_overhead_s=0.05))
    fast = make_cost_model(config)
    batch = StepBatch(decode_seqs=8, decode_context=8000, sampled_seqs=8)
    assert slow.step_time(batch) == pytest.approx(fast.step_time(batch) + 0.05 - fast.profile.step_overhead_s)


def test_decode_times_agree_with_step_time_and_grow_linearly() -> None:
    cost = make_cost_model(EngineConfig())
    context = np.array([1000, 5000, 9000])
    times = cost.decode_times(16, context)
    for c, t in zip(context, times):
        assert t == pytest.approx(cost.step_time(StepBatch(decode_seqs=16, decode_context=int(c), sampled_seqs=16)))
    assert times[2] - times[1] == pytest.approx(times[1] - times[0])
    # Decoding reads the weights once: an 8B model in bf16 on an H100 needs several ms per step.
    assert 0.005 < times[0] < 0.02


def test_prefill_is_compute_bound_and_tensor_parallel_pays_all_reduces() -> None:
    cost = make_cost_model(EngineConfig())
    small = cost.step_time(StepBatch(prefill_tokens=512, prefill_seqs=1, prefill_attn_pairs=512 * 256.5,
                                     prefill_kv_tokens=512, sampled_seqs=1))
    big = cost.step_time(StepBatch(prefill_tokens=8192, prefill_seqs=1, prefill_attn_pairs=8192 * 4096.5,
                                   prefill_kv_tokens=8192, sampled_seqs=1))
    assert big > 10 * small
    # ~2 * 8e9 FLOPs per token at 70% of 989 TFLOP/s: an 8k prompt takes on the order of 0.2 s.
    assert 0.1 < big < 0.6
    tp = make_cost_model(EngineConfig(model="llama-3-70b-tp4"))
    assert tp._ar_fixed_s > 0 and tp.step_time(StepBatch(decode_seqs=1, decode_context=10, sampled_seqs=1)) > 0.01
