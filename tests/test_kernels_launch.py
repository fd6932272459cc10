"""The direct launch path: a compiled kernel's launcher called with the bound arguments, per caller key.

A fake JIT function stands in for Triton (no GPU here): the first call per key goes through `fn[grid]`,
later calls through the cached launcher with exactly the arguments `JITFunction.run` would pass; a
misaligned pointer, a launch hook or a new key takes the normal path again.
"""
from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
import torch
from triton.runtime.jit import JITFunction

from kernels import _launch
from kernels._launch import FastLauncher


class FakeTensor:
    is_cuda = True

    def __init__(self, ptr: int) -> None:
        self.ptr = ptr

    def data_ptr(self) -> int:
        return self.ptr


class FakeKernel:
    """Two runtime arguments, then two constexprs, as our kernels order them."""

    params = [SimpleNamespace(name=n, is_constexpr=c) for n, c in (("a", False), ("b", False), ("C", True),
                                                                   ("D", True))]

    def __init__(self) -> None:
        self.normal: list = []
        self.direct: list = []

    def __getitem__(self, grid):
        def launch(*args, **meta):
            self.normal.append((grid, args, meta))
            return SimpleNamespace(run=lambda *a: self.direct.append(a), function="fn", packed_metadata="pm")
        return launch


@pytest.fixture
def launcher(monkeypatch):
    monkeypatch.setattr(_launch, "_current_device", lambda: 0)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 77, raising=False)
    monkeypatch.setattr(_launch, "_hooks_set", lambda: False)
    kernel = FakeKernel()
    fast = FastLauncher(kernel)
    fast.enabled = True  # a FakeKernel is no JITFunction
    return kernel, fast


def test_second_call_uses_the_cached_launcher_with_jit_run_arguments(launcher):
    kernel, fast = launcher
    t = FakeTensor(4096)
    meta = dict(C=3, D="ieee", num_warps=4)
    fast("key", (2, 3, 4), (t, 5), (t,), meta)
    assert len(kernel.normal) == 1 and not kernel.direct
    fast("key", (2, 3, 4), (t, 6), (t,), meta)
    assert len(kernel.normal) == 1
    assert kernel.direct == [(2, 3, 4, 77, "fn", "pm", None, None, None, t, 6, 3, "ieee")]


def test_new_key_misalignment_and_hooks_take_the_normal_path(launcher, monkeypatch):
    kernel, fast = launcher
    meta = dict(C=1, D=2)
    fast("k1", (1, 1, 1), (FakeTensor(0), 1), (FakeTensor(0),), meta)
    fast("k2", (1, 1, 1), (FakeTensor(0), 1), (FakeTensor(0),), meta)  # another key compiles/launches normally
    assert len(kernel.normal) == 2 and not kernel.direct
    fast("k1", (1, 1, 1), (FakeTensor(8), 1), (FakeTensor(8),), meta)  # not 16-byte aligned
    assert len(kernel.normal) == 3 and not kernel.direct
    monkeypatch.setattr(_launch, "_hooks_set", lambda: True)
    fast("k1", (1, 1, 1), (FakeTensor(0), 1), (FakeTensor(0),), meta)  # a profiler's launch hook
    assert len(kernel.normal) == 4 and not kernel.direct
    monkeypatch.setattr(_launch, "_hooks_set", lambda: False)
    fast("k1", (1, 1, 1), (FakeTensor(0), 1), (FakeTensor(0),), meta)
    assert len(kernel.normal) == 4 and len(kernel.direct) == 1


def test_cache_starts_over_past_its_bound(launcher, monkeypatch):
    kernel, fast = launcher
    monkeypatch.setattr(_launch, "MAX_ENTRIES", 2)
    for key in ("a", "b", "c"):
        fast(key, (1, 1, 1), (FakeTensor(0), 1), (FakeTensor(0),), dict(C=1, D=2))
    assert len(fast._cache) == 1  # "a" and "b" dropped when "c" came
    fast("c", (1, 1, 1), (FakeTensor(0), 1), (FakeTensor(0),), dict(C=1, D=2))
    fast("a", (1, 1, 1), (FakeTensor(0), 1), (FakeTensor(0),), dict(C=1, D=2))
    assert len(kernel.direct) == 1 and len(kernel.normal) == 4


def test_leading_constexpr_or_missing_meta_keeps_the_normal_path(launcher):
    kernel, _ = launcher
    fast = FastLauncher(kernel)
    fast.enabled = True
    fast("k", (1, 1, 1), (FakeTensor(0), 1), (FakeTensor(0),), dict(C=1))  # D missing from meta
    fast("k", (1, 1, 1), (FakeTensor(0), 1), (FakeTensor(0),), dict(C=1))
    assert len(kernel.normal) == 2 and not kernel.direct
    odd = FakeKernel()
    odd.params = list(reversed(FakeKernel.params))
    assert not FastLauncher(odd).enabled


def test_installed_triton_launches_compiled_kernels_the_way_the_fast_path_does():
    # JITFunction.run passes (grid, stream, function, packed metadata, launch metadata, hooks, *bound args)
    # to CompiledKernel.run: the call the fast path repeats. A Triton that changes it must fail here.
    src = inspect.getsource(JITFunction.run)
    assert "kernel.run(grid_0, grid_1, grid_2, stream, kernel.function, kernel.packed_metadata" in src
    assert "*bound_args.values())" in src
    from kernels.decode import _decode_kernel

    jit = JITFunction(getattr(_decode_kernel, "fn", _decode_kernel))  # the interpreter wraps the function
    fast = FastLauncher(jit)
    assert fast.enabled  # the decode kernel's constexprs trail its runtime arguments
    assert fast._num_runtime == 22 and fast._constexpr_names[0] == "GROUP"


def test_registered_launch_hook_counts_as_set():
    from triton import knobs

    assert not _launch._hooks_set()
    hook = lambda *args: None  # noqa: E731
    chain = knobs.runtime.launch_enter_hook
    if hasattr(chain, "add"):
        chain.add(hook)
        try:
            assert _launch._hooks_set()
        finally:
            chain.remove(hook)
    else:  # an older Triton: a plain attribute
        knobs.runtime.launch_enter_hook = hook
        try:
            assert _launch._hooks_set()
        finally:
            knobs.runtime.launch_enter_hook = None
    assert not _launch._hooks_set()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the direct launch path needs a GPU")
@pytest.mark.parametrize("num_splits", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_decode_repeated_calls_skip_jit_run_and_stay_correct(dtype, num_splits, monkeypatch):
    from kernels import paged_decode, paged_decode_ref
    from kernels.decode import _decode_kernel, _launch_decode
    from kernels.testing import TOLERANCE, max_rel_err, poisoned_like, randn, random_paged_case

    gen = torch.Generator().manual_seed(num_splits)
    lens = [1, 37, 200]
    case = random_paged_case(lens, 2, 64, 16, dtype, "cuda", gen)
    args = (case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
    q = randn((3, 8, 64), dtype, "cuda", gen)
    paged_decode(q, *args, num_splits=num_splits)  # compiles (or finds) the kernel through JITFunction.run

    def jit_run(*a, **k):
        raise AssertionError("JITFunction.run called on a cached key")

    monkeypatch.setattr(_decode_kernel, "run", jit_run)
    for _ in range(2):  # fresh queries through the cached launcher
        q = randn((3, 8, 64), dtype, "cuda", gen)
        out = poisoned_like(q)
        paged_decode(q, *args, num_splits=num_splits, out=out)
        assert max_rel_err(out, paged_decode_ref(q, *args)) < TOLERANCE[dtype]
    # a q view 8 bytes off 16-byte alignment must go back to Triton's own path (and its specialization)
    wide = randn((3 * 8 * 64 + 16,), dtype, "cuda", gen)
    off = 8 // wide.element_size()
    q_odd = wide[off : off + 3 * 8 * 64].view(3, 8, 64)
    assert q_odd.data_ptr() % 16 == 8
    with pytest.raises(AssertionError, match="JITFunction.run called"):
        paged_decode(q_odd, *args, num_splits=num_splits)
    monkeypatch.undo()
    out = paged_decode(q_odd, *args, num_splits=num_splits)
    assert max_rel_err(out, paged_decode_ref(q_odd, *args)) < TOLERANCE[dtype]
    assert _launch_decode._cache


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the direct launch path needs a GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_prefill_and_write_kv_repeated_calls_stay_correct(dtype):
    from kernels import paged_prefill, paged_prefill_ref, write_kv, write_kv_ref
    from kernels.testing import TOLERANCE, max_rel_err, poisoned_like, randn, random_paged_case

    gen = torch.Generator().manual_seed(5)
    case = random_paged_case([40, 9], 2, 64, 16, dtype, "cuda", gen)
    qsl = torch.tensor([0, 8, 11], dtype=torch.int32, device="cuda")
    for step in range(3):  # the second and third calls take the cached launcher
        q = randn((11, 4, 64), dtype, "cuda", gen)
        out = poisoned_like(q)
        paged_prefill(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, qsl, max_query_len=8,
                      out=out)
        ref = paged_prefill_ref(q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens, qsl)
        assert max_rel_err(out, ref) < TOLERANCE[dtype]
        k, v = randn((3, 2, 64), dtype, "cuda", gen), randn((3, 2, 64), dtype, "cuda", gen)
        slots = torch.tensor([step, 40 + step, -1], device="cuda")
        kc, vc = case.k_cache.clone(), case.v_cache.clone()
        write_kv(k, v, case.k_cache, case.v_cache, slots)
        write_kv_ref(k, v, kc, vc, slots)
        assert torch.equal(case.k_cache.nan_to_num(7.0), kc.nan_to_num(7.0))
        assert torch.equal(case.v_cache.nan_to_num(7.0), vc.nan_to_num(7.0))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the direct launch path needs a GPU")
def test_copy_blocks_repeated_calls_take_the_cached_launcher_and_stay_correct(monkeypatch):
    from kernels import copy_blocks, copy_blocks_ref
    from kernels.cache_ops import _copy_blocks_kernel, _launch_copy_blocks
    from kernels.testing import random_paged_case

    gen = torch.Generator().manual_seed(7)
    case = random_paged_case([40, 9], 2, 64, 16, torch.float16, "cuda", gen)
    copy_blocks(case.k_cache.clone(), case.v_cache.clone(), [(0, 5)])  # compiles (or finds) through JITFunction.run

    def jit_run(*a, **k):
        raise AssertionError("JITFunction.run called on a cached key")

    monkeypatch.setattr(_copy_blocks_kernel, "run", jit_run)
    num_blocks = case.k_cache.shape[0]
    for pairs in ([(0, num_blocks - 1)], [(1, 2), (3, 4), (0, 5)]):  # grids of 1 and 3 pairs
        kc, vc = case.k_cache.clone(), case.v_cache.clone()
        copy_blocks(case.k_cache, case.v_cache, pairs)
        copy_blocks_ref(kc, vc, pairs)
        assert torch.equal(case.k_cache.nan_to_num(7.0), kc.nan_to_num(7.0))
        assert torch.equal(case.v_cache.nan_to_num(7.0), vc.nan_to_num(7.0))
    assert _launch_copy_blocks._cache
