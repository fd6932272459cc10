"""Launch a compiled Triton kernel without `JITFunction.run`'s per-call binding, specialization and lookup.

`kernel[grid](*args)` binds the arguments, derives a specialization key from every argument (dtype,
16-byte alignment of pointers, ints equal to 1 or divisible by 16), builds a cache key and only then calls
the compiled kernel's launcher: half or more of a short decode call's host time (docs/kernels.md). A
`FastLauncher` keeps, per key that the caller derives from everything the specialization depends on, the
`CompiledKernel` the first normal launch returned, and later calls its launcher directly with the same
arguments `JITFunction.run` passes (Triton 3.6 and 3.9 alike:
`run(grid_0, grid_1, grid_2, stream, function, packed_metadata, launch_metadata, enter_hook, exit_hook,
*bound_args)`, constexprs included). Pointers not aligned to 16 bytes, launch hooks (profilers), the CPU
interpreter or a Triton without this launcher take the normal path.
"""
from __future__ import annotations

import torch
from triton.runtime.jit import JITFunction

try:
    from triton import knobs as _knobs
except ImportError:  # older Triton: no hook registry, so never assume there are no hooks
    _knobs = None


def _hooks_set() -> bool:
    runtime = getattr(_knobs, "runtime", None)
    if runtime is None:
        return True
    # Triton 3.6+ keeps hooks in a HookChain (never None; empty when nobody registered one); older ones a function
    enter, exit_ = runtime.launch_enter_hook, runtime.launch_exit_hook
    return bool((enter is not None and getattr(enter, "calls", True))
                or (exit_ is not None and getattr(exit_, "calls", True)))


# torch.cuda.current_device() without its lazy-init check (the tensors are on a GPU, so CUDA is initialized)
_current_device = getattr(torch._C, "_cuda_getDevice", torch.cuda.current_device)

MAX_ENTRIES = 4096  # keys kept per kernel; past this the cache starts over (Triton keeps the binaries)


class FastLauncher:
    """Per-kernel cache of compiled kernels keyed by the caller's specialization key.

    The key must determine every constexpr and every value Triton specializes on except pointer
    alignment, which `__call__` checks itself (all pointers 16-byte aligned, or the normal path).
    """

    def __init__(self, fn) -> None:
        self.fn = fn
        self.enabled = isinstance(fn, JITFunction)
        self._cache: dict = {}
        params = list(getattr(fn, "params", ()))
        flags = [p.is_constexpr for p in params]
        self._constexpr_names = [p.name for p in params if p.is_constexpr]
        self._num_runtime = len(params) - len(self._constexpr_names)
        # the launcher takes the bound arguments in signature order: mirrored here only for trailing constexprs
        self.enabled &= bool(params) and flags == sorted(flags)

    def __call__(self, key, grid: tuple[int, int, int], args: tuple, tensors: tuple, meta: dict) -> None:
        """Launch fn[grid](*args, **meta); `tensors` are args' tensors (checked for 16-byte alignment)."""
        if not self.enabled or not tensors[0].is_cuda:
            self.fn[grid](*args, **meta)
            return
        addresses = 0
        for t in tensors:
            addresses |= t.data_ptr()
        aligned = not addresses & 15
        device = _current_device()
        entry = self._cache.get((device, key)) if aligned else None
        if entry is None or _hooks_set():
            compiled = self.fn[grid](*args, **meta)
            if aligned and compiled is not None and not _hooks_set():
                self._store(device, key, compiled, args, meta)
            return
        run, function, packed, constexprs = entry
        run(grid[0], grid[1], grid[2], torch._C._cuda_getCurrentRawStream(device), function, packed, None,
            None, None, *args, *constexprs)

    def _store(self, device: int, key, compiled, args: tuple, meta: dict) -> None:
        if hasattr(compiled, "result"):  # an asynchronous compile's future
            compiled = compiled.result()
        if len(args) != self._num_runtime or any(n not in meta for n in self._constexpr_names):
            return  # defaults or keyword arguments we do not mirror: stay on the normal path
        try:
            entry = (compiled.run, compiled.function, compiled.packed_metadata,
                     tuple(meta[n] for n in self._constexpr_names))
        except AttributeError:  # a Triton whose CompiledKernel differs: keep the normal path for good
            self.enabled = False
            return
        if len(self._cache) >= MAX_ENTRIES:
            self._cache.clear()
        self._cache[(device, key)] = entry
