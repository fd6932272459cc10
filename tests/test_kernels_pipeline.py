"""The decode launch's stage counts rest on how Triton pipelines a paged kernel's loads: K/V addresses come
from a block-table load in the same loop, so K/V get (num_stages - 1) // 2 shared-memory buffers
(`kernels.decode_config.kv_buffers`). Checked by compiling the decode kernel for Hopper (sm_90), which needs
Triton's NVIDIA backend but no GPU, and reading the buffers off the TTGIR."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels.decode_config import (
    FP8_DEEP_MIN_TILES, FP8_WARP_CONFIG, REGISTERS_PER_SM, SPLIT_DEEP_CONFIG_16BIT, SPLIT_DEEP_MIN_TILES,
    TARGET_PROGRAMS_PER_SM, TWO_BUFFER_STAGES, WARP_CONFIG_16BIT, DecodeConfig, choose_launch,
    default_decode_config, kv_buffers, widen_v_in_registers,
)
from kernels.prefill import default_prefill_config

ROOT = Path(__file__).resolve().parents[1]


# (K/V dtype, tile, stages, warps): the decode defaults, 4-warp and one-warp (FP8_WARP_CONFIG)
FP8_WARP_CONFIG_SHAPE = (FP8_WARP_CONFIG.block_n, FP8_WARP_CONFIG.num_stages, FP8_WARP_CONFIG.num_warps)
VARIANTS = [("bf16", 64, 3, 4), ("bf16", 64, 5, 4), ("fp8e4nv", 128, 3, 4), ("fp8e4nv", 128, 5, 4),
            ("fp8e4nv", *FP8_WARP_CONFIG_SHAPE)]

_COMPILE = r"""
import json, pathlib, re, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource
import torch
from kernels.decode import _decode_kernel
from kernels.decode_config import DecodeConfig
from kernels.decode_launch import plan


def compile_decode(kv_dtype, block_n, num_stages, num_warps, maxnreg=None, split=False):
    # the constexprs and options the product's plan gives a launch of this configuration (group 4, head dim 128,
    # 16-token blocks; 8 splits where split, as an explicit split count would)
    fp8 = kv_dtype == "fp8e4nv"
    meta = plan(8, 32, 8, 128, 16, 4096, torch.bfloat16, fp8, 1 if fp8 else 2, torch.device("cuda"),
                8 if split else 1, DecodeConfig(block_n, num_warps, num_stages, maxnreg)).meta
    pointers = dict(q_ptr="*bf16", k_ptr=f"*{kv_dtype}", v_ptr=f"*{kv_dtype}", bt_ptr="*i32", lens_ptr="*i32",
                    out_ptr="*bf16", ws_ptr="*fp32", sem_ptr="*i32", ks_ptr="*fp32", vs_ptr="*fp32")
    constants = {name: meta[name] for name in _decode_kernel.arg_names if name in meta}
    signature, attrs = {}, {}
    for i, name in enumerate(_decode_kernel.arg_names):
        if name in constants:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = pointers[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "fp32" if name == "qk_scale" else "i32"
            if name.startswith("stride") and name != "stride_scale":
                attrs[(i,)] = [["tt.divisibility", 16]]
    options = {key: value for key, value in meta.items() if key in ("num_warps", "num_stages", "maxnreg")}
    return triton.compile(ASTSource(_decode_kernel, signature, constants, attrs), target=GPUTarget("cuda", 90, 32),
                          options=options)


def kv_tile_buffers_and_byte_loads(kv_dtype, block_n, num_stages, num_warps):
    # one build: the K/V tiles' shared-memory buffers from its TTGIR, byte-wide shared loads from its SASS
    compiled = compile_decode(kv_dtype, block_n, num_stages, num_warps)
    buffers = sorted({int(n) for n in re.findall(rf"memdesc<(\d+)x{block_n}x128x", compiled.asm["ttgir"])})
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "k.cubin"
        path.write_bytes(compiled.asm["cubin"])
        cuobjdump = pathlib.Path(get_ptxas(90).path).with_name("cuobjdump")
        sass = subprocess.run([str(cuobjdump), "-sass", str(path)], capture_output=True, text=True, check=True).stdout
    return buffers, sass.count("LDS.U8")


def registers_and_spills(kv_dtype, block_n, num_stages, num_warps, maxnreg, split):
    # ptxas -v on the PTX, with the ptxas Triton ships (the compiled kernel reports registers only once loaded)
    ptx = compile_decode(kv_dtype, block_n, num_stages, num_warps, maxnreg, split).asm["ptx"]
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "k.ptx"
        path.write_text(ptx)
        ptxas = get_ptxas(90).path  # the one Triton builds sm_90 kernels with
        info = subprocess.run([ptxas, "-arch=sm_90a", "-v", str(path), "-o", str(path) + ".o"],
                              capture_output=True, text=True, check=True).stderr
    registers = int(re.search(r"Used (\d+) registers", info).group(1))
    return registers, int(re.search(r"(\d+) bytes spill stores", info).group(1))


try:
    variants, capped = json.loads(sys.argv[1])
    builds = [kv_tile_buffers_and_byte_loads(*v) for v in variants]
    answer = {"buffers": [b for b, _ in builds], "byte_loads": [n for _, n in builds],
              "registers": [registers_and_spills(*v) for v in capped]}
except Exception as exc:  # no NVIDIA backend or ptxas here
    answer = {"skip": f"{type(exc).__name__}: {str(exc)[:120]}"}
print(json.dumps(answer))
"""


# (K/V dtype, tile, stages, warps, register cap, split): the capped decode default, unsplit and with the split
# merge (explicit split counts, as the execute backend passes, keep the 64-token tile)
CAPPED = [("bf16", 64, 3, 4, default_decode_config(128, True, 2).max_registers, split) for split in (False, True)]
# the 16-bit split launch's double-buffered tile, uncapped (the compiler's count): it must not spill either
CAPPED.append(("bf16", SPLIT_DEEP_CONFIG_16BIT.block_n, SPLIT_DEEP_CONFIG_16BIT.num_stages,
               SPLIT_DEEP_CONFIG_16BIT.num_warps, SPLIT_DEEP_CONFIG_16BIT.max_registers, True))


@pytest.fixture(scope="module")
def sm90_builds() -> dict:
    """Compiled for sm_90 in one fresh process (the tests run Triton's interpreter): per variant of VARIANTS,
    the leading dimensions of the shared-memory allocations of the decode kernel's [block_n, 128] K/V tiles and
    the byte-wide shared loads (`LDS.U8`) in its SASS; per variant of CAPPED, (registers a thread, bytes
    spilled) as ptxas reports them."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE, json.dumps([VARIANTS, CAPPED])], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in answer:
        pytest.skip(f"cannot compile for sm_90 here: {answer['skip']}")
    return {"buffers": {v: set(b) for v, b in zip(VARIANTS, answer["buffers"])},
            "registers": {v: tuple(r) for v, r in zip(CAPPED, answer["registers"])},
            "byte_loads": dict(zip(VARIANTS, answer["byte_loads"]))}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v[0]}-{v[1]}x{v[3]}x{v[2]}")
def test_paged_kv_loads_get_one_buffer_per_two_stages_past_the_first(sm90_builds, variant):
    assert sm90_builds["buffers"][variant] == {kv_buffers(variant[2])}


@pytest.mark.parametrize("variant", CAPPED, ids=lambda v: f"{v[0]}-{v[1]}x{v[3]}x{v[2]}-max{v[4]}-split{int(v[5])}")
def test_register_capped_decode_fits_its_programs_an_sm_without_spills(sm90_builds, variant):
    registers, spilled = sm90_builds["registers"][variant]
    assert (variant[4] is None or registers <= variant[4]) and spilled == 0


def test_multi_warp_fp8_decode_reads_v_without_byte_gathers(sm90_builds):
    # widened where loaded (`widen_e4m3`), V is staged as fp16 and read with ldmatrix; the one-warp fp8 build,
    # which converts after the shared-memory read, gathers V's B operand one byte a load
    assert sm90_builds["byte_loads"][("fp8e4nv", 128, 3, 4)] == 0
    assert sm90_builds["byte_loads"][("fp8e4nv", 128, 5, 4)] == 0
    assert sm90_builds["byte_loads"][("fp8e4nv", *FP8_WARP_CONFIG_SHAPE)] > 0
    assert sm90_builds["byte_loads"][("bf16", 64, 3, 4)] == 0


def test_fp8_decode_widens_v_in_registers_only_in_multi_warp_programs_of_16_bit_queries():
    assert widen_v_in_registers(True, torch.bfloat16, 4, 128) and widen_v_in_registers(True, torch.float16, 4, 64)
    assert not widen_v_in_registers(True, torch.bfloat16, FP8_WARP_CONFIG.num_warps, 128)
    assert not widen_v_in_registers(True, torch.float32, 4, 128)
    assert not widen_v_in_registers(False, torch.bfloat16, 4, 128)  # the interpreter cannot run inline asm
    assert not widen_v_in_registers(True, torch.bfloat16, 4, 256)


def test_sixteen_bit_decode_caps_registers_for_its_programs_an_sm():
    cfg = default_decode_config(128, True, 2)
    assert (cfg.block_n, cfg.num_warps) == (64, 4)
    assert REGISTERS_PER_SM // (cfg.max_registers * 32 * cfg.num_warps) == TARGET_PROGRAMS_PER_SM
    # fp32 queries, an fp8 cache, split tiles and the interpreter's tiles take the compiler's register count
    assert default_decode_config(128, True, 2, q_elem_size=4).max_registers is None
    assert default_decode_config(128, True, 1).max_registers is None
    assert default_decode_config(128, True, 2, split=True).max_registers is None
    assert default_decode_config(128, False, 2).max_registers is None


def test_kv_buffers_count():
    assert [kv_buffers(s) for s in range(1, 8)] == [1, 1, 1, 1, 2, 2, 3]


def test_fp8_decode_gets_a_second_buffer_only_with_enough_tiles():
    deep = default_decode_config(128, True, 1, False, FP8_DEEP_MIN_TILES)
    shallow = default_decode_config(128, True, 1, False, FP8_DEEP_MIN_TILES - 1)
    assert (deep.num_stages, shallow.num_stages) == (TWO_BUFFER_STAGES, 3)
    assert kv_buffers(deep.num_stages) == 2
    assert default_decode_config(128, True, 2, False, 64).num_stages == 3  # bf16: 4 programs an SM hide it
    assert default_decode_config(256, True, 1, False, 64).num_stages <= 2  # large heads keep their small tiles
    # 256 x 2048 (16 tiles a program) deep; 1 x 1024 (8 splits of one tile) not
    assert choose_launch(256, 8, 2048, 128, 1, 132)[1].num_stages == TWO_BUFFER_STAGES
    assert choose_launch(1, 8, 1024, 128, 1, 132)[1].num_stages == 3


def test_fp8_decode_with_many_sequence_head_pairs_runs_one_warp_programs():
    # (seqs, context, kv heads) -> splits: the H200 rows where one-warp programs won (docs/kernels.md, item 24)
    for seqs, context, kv_heads, splits in [(256, 2048, 8, 1), (128, 512, 8, 1), (32, 2048, 32, 1), (64, 1024, 8, 2),
                                            (32, 2048, 8, 4), (16, 16384, 8, 8), (8, 4096, 8, 8)]:
        assert choose_launch(seqs, kv_heads, context, 128, 1, 132, 32 // kv_heads) == (splits, FP8_WARP_CONFIG)
    assert (FP8_WARP_CONFIG.num_warps, kv_buffers(FP8_WARP_CONFIG.num_stages)) == (1, 2)
    # few pairs, MQA's 32-row group, large heads and fp32 queries keep 4-warp programs
    assert choose_launch(1, 8, 32768, 128, 1, 132, 4)[1].num_warps == 4
    assert choose_launch(32, 1, 2048, 128, 1, 132, 32)[1].num_warps == 4
    assert choose_launch(256, 8, 2048, 256, 1, 132, 4)[1].num_warps == 4
    assert choose_launch(256, 8, 2048, 128, 1, 132, 4, q_elem_size=4)[1].num_warps == 4  # fp32 q would spill


def test_sixteen_bit_decode_runs_one_warp_programs_only_with_very_many_pairs():
    # the H200 rows where one-warp bf16 programs won: 1024 and more (sequence, KV head) pairs, unsplit
    for seqs, context, kv_heads in [(256, 2048, 8), (128, 512, 8), (32, 2048, 32)]:
        assert choose_launch(seqs, kv_heads, context, 128, 2, 132, 32 // kv_heads) == (1, WARP_CONFIG_16BIT)
    assert WARP_CONFIG_16BIT.num_warps == 1
    # 512 pairs and fewer, where the 4-warp launch was as fast or faster, MQA, large heads and fp32 queries
    for seqs, context, kv_heads, head_dim, q_elem_size in [(64, 1024, 8, 128, 2), (16, 16384, 8, 128, 2),
                                                           (1024, 2048, 1, 128, 2), (256, 2048, 8, 256, 2),
                                                           (256, 2048, 8, 128, 4)]:
        config = choose_launch(seqs, kv_heads, context, head_dim, 2, 132, 32 // kv_heads, q_elem_size)[1]
        assert config.num_warps == 4


def test_sixteen_bit_split_launches_double_buffer_64_token_tiles_where_programs_walk_enough_of_them():
    # the H200 rows where 64 x 4 x 5 beat 128 x 4 x 2 at the automatic split count (docs/kernels.md, item 46)
    for seqs, context, kv_heads in [(32, 2048, 1), (8, 4096, 8), (16, 16384, 8), (1, 32768, 8), (32, 2048, 8)]:
        splits, config = choose_launch(seqs, kv_heads, context, 128, 2, 132, 32 // kv_heads)
        assert config == SPLIT_DEEP_CONFIG_16BIT
        assert context // (splits * config.block_n) >= SPLIT_DEEP_MIN_TILES
    assert (SPLIT_DEEP_CONFIG_16BIT.block_n, kv_buffers(SPLIT_DEEP_CONFIG_16BIT.num_stages)) == (64, 2)
    # the count is the launched one: 33 splits of 1 x 32768 would leave the last without a token
    assert choose_launch(1, 8, 32768, 128, 2, 132, 4)[0] == 32
    # 1 x 1024 (8 splits of 128 tokens), fp32 queries and an fp8 cache keep 128-token tiles with one buffer
    assert choose_launch(1, 8, 1024, 128, 2, 132, 4) == (8, DecodeConfig(128, 4, 2))
    assert choose_launch(8, 8, 4096, 128, 2, 132, 4, q_elem_size=4)[1] == DecodeConfig(128, 4, 2)
    assert choose_launch(1, 8, 32768, 128, 1, 132, 4)[1].block_n == 128


def test_prefill_default_has_two_kv_buffers_within_shared_memory():
    cfg = default_prefill_config(128, True, 2)
    assert kv_buffers(cfg.num_stages) == 2
    q_bytes, kv_bytes = cfg.block_m * 128 * 2, 2 * cfg.block_n * 128 * 2
    assert q_bytes + kv_buffers(cfg.num_stages) * kv_bytes <= 227 * 1024
