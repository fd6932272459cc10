"""Choosing the execute backend's device, and sizing what it must hold. Imports torch, never triton: on
the CPU the Triton interpreter must be switched on before triton is first imported."""
from __future__ import annotations

import os
import sys

import torch

from sim.presets import GIB, KV_CACHE_DTYPES, MODELS

WORKSPACE_GIB = 2.0  # activations of an 8k-token step, the spin, allocator slack


def resolve_device(name: str | None) -> torch.device:
    """`cuda` / `cpu` / None (cuda when present). The CPU runs the kernels in Triton's interpreter."""
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device cuda: no CUDA GPU is visible; use --device cpu (Triton interpreter, "
                             "the tiny model)")
        if interpret:
            raise ValueError("device cuda: TRITON_INTERPRET=1 is set; unset it to run the kernels on the GPU")
        return torch.device("cuda", torch.cuda.current_device())
    if name != "cpu":
        raise ValueError(f"device: unknown name {name!r}; valid names: cuda, cpu")
    if not interpret:
        if "triton" in sys.modules:
            raise ValueError("device cpu: the kernels need TRITON_INTERPRET=1, set before triton is imported")
        os.environ["TRITON_INTERPRET"] = "1"
    return torch.device("cpu")


def dtype_for(device: torch.device) -> torch.dtype:
    """bf16 on the GPU (the presets' 2-byte weights and KV); fp32 on the CPU (numpy has no bf16)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def kv_dtype_for(device: torch.device, kv_cache_dtype: str) -> torch.dtype:
    """The KV cache's element type: the model's (`auto`) or e4m3 (`fp8`, as vLLM's kv_cache_dtype="fp8")."""
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype: unknown name {kv_cache_dtype!r}; valid names: {', '.join(KV_CACHE_DTYPES)}")
    return torch.float8_e4m3fn if kv_cache_dtype == "fp8" else dtype_for(device)


def available_bytes(device: torch.device) -> int:
    """Memory a run may still take: free GPU memory, or on the CPU the host's available memory (MemAvailable)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(model: str, weight_bytes: int, kv_bytes: int, extra_bytes: int, device: torch.device) -> None:
    """Raise a one-line ValueError, with a smaller model to try, if the run cannot fit the device's memory
    (on the CPU the host's: random weights and the KV cache there are allocated in full, and a run that
    does not fit is killed by the system rather than refused)."""
    free = available_bytes(device)
    where = "on the GPU" if device.type == "cuda" else "of host memory (--device cpu)"
    need = weight_bytes + kv_bytes + extra_bytes + WORKSPACE_GIB * GIB
    if need <= free:
        return
    room = free - weight_bytes - extra_bytes - WORKSPACE_GIB * GIB
    # On the CPU weights are fp32 (dtype_for), not the presets' 2 bytes.
    scale = 1.0 if device.type == "cuda" or model not in MODELS else 4 / MODELS[model].dtype_bytes
    smaller = [m.name for m in sorted(MODELS.values(), key=lambda m: -m.weight_bytes_per_gpu)
               if m.name != model and scale * m.weight_bytes_per_gpu + (WORKSPACE_GIB + 4) * GIB < free]
    hint = (f"fewer KV blocks (--num-gpu-blocks; {max(int(room), 0) / GIB:.1f} GiB are left for them)"
            if room > 0 else f"a smaller model ({', '.join(smaller) or 'tiny'})")
    raise ValueError(f"execute backend: {model} needs {need / GIB:.1f} GiB {where} (weights "
                     f"{weight_bytes / GIB:.1f}, KV cache {kv_bytes / GIB:.1f}, other {extra_bytes / GIB:.1f}, "
                     f"workspace {WORKSPACE_GIB:.1f}) but {free / GIB:.1f} GiB are free; try {hint}")
