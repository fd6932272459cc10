"""The decode/prefill implementations the benchmark compares against, built over the same K/V.

Each `make_*` takes a `DecodeCase` (or prefill inputs) and returns (callable, note); the callable runs one
forward and returns [num_seqs, num_q_heads, head_dim] so every peer can be checked against our output.
Setup (contiguous copies, FlexAttention's page table, FlashInfer's plan, compilation) happens here,
outside the timed call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.bench_common import DecodeCase, Runner


def _sdpa(backend: "torch.nn.attention.SDPBackend", q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[Runner, str]:
    """SDPA pinned to one backend; GQA natively if the backend takes it, else K/V expanded once."""
    from torch.nn.attention import sdpa_kernel

    def call(kk: torch.Tensor, vv: torch.Tensor, gqa: bool) -> torch.Tensor:
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, kk, vv, enable_gqa=gqa)

    gqa = q.shape[1] != k.shape[1]
    try:
        call(k, v, gqa)
        torch.cuda.synchronize()
        return (lambda: call(k, v, gqa)), ("native GQA" if gqa else "")
    except RuntimeError:
        if not gqa:
            raise
    group = q.shape[1] // k.shape[1]
    ke, ve = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    call(ke, ve, False)
    return (lambda: call(ke, ve, False)), "K/V expanded to q heads (no native GQA)"


def make_sdpa_decode(case: DecodeCase, backend_name: str) -> tuple[Runner, str]:
    from torch.nn.attention import SDPBackend

    k, v = case.contiguous_kv()
    q4 = case.q.unsqueeze(2)
    run, note = _sdpa(getattr(SDPBackend, backend_name), q4, k, v)
    return (lambda: run().squeeze(2)), note


def make_gather_sdpa(case: DecodeCase) -> tuple[Runner, str]:
    """Gather the pages into a contiguous tensor, then SDPA (best backend): the timed call does both."""
    b, (_, _, h, d) = case.q.shape[0], case.k_cache.shape
    idx = case.block_tables.long()
    gqa = case.q.shape[1] != h
    q4 = case.q.unsqueeze(2)

    def run() -> torch.Tensor:
        k = case.k_cache[idx].view(b, -1, h, d).transpose(1, 2)
        v = case.v_cache[idx].view(b, -1, h, d).transpose(1, 2)
        return F.scaled_dot_product_attention(q4, k, v, enable_gqa=gqa).squeeze(2)

    return run, "gather + SDPA default backend"


def make_flex_paged(case: DecodeCase) -> tuple[Runner, str]:
    """torch.nn.attention.experimental PagedAttention + compiled flex_attention, same page size if it runs."""
    from torch.nn.attention.experimental._paged_attention import PagedAttention as FlexPaged
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention, noop_mask

    torch._dynamo.reset()  # a fresh compile per shape; avoids the recompile limit
    compiled = torch.compile(flex_attention, dynamic=False)
    b, hq, d = case.q.shape
    h = case.k_cache.shape[2]
    k, v = case.contiguous_kv()
    errors = []
    for page in (case.k_cache.shape[1], 64, 128):
        try:
            n_pages = b * -(-case.context // page)
            pa = FlexPaged(n_pages, page, b, device=case.q.device)
            for i in range(b):
                pa.reserve(torch.tensor(i, device=case.q.device), torch.tensor(case.context, device=case.q.device))
            k_flex = torch.empty((1, h, n_pages * page, d), dtype=k.dtype, device=k.device)
            v_flex = torch.empty_like(k_flex)
            pos = torch.arange(case.context, device=k.device, dtype=torch.int32).unsqueeze(0).expand(b, -1)
            pa.assign(torch.arange(b, device=k.device, dtype=torch.int32), pos, k, v, k_flex, v_flex)
            mask = create_block_mask(noop_mask, b, 1, 1, case.context, BLOCK_SIZE=page, device=k.device)
            paged_mask = pa.convert_logical_block_mask(mask)
            q4 = case.q.unsqueeze(2)

            def run(q4=q4, k_flex=k_flex, v_flex=v_flex, paged_mask=paged_mask) -> torch.Tensor:
                return compiled(q4, k_flex, v_flex, block_mask=paged_mask, enable_gqa=hq != h).squeeze(2)

            run()
            torch.cuda.synchronize()
            del k, v
            return run, f"page size {page}"
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
            errors.append(f"page {page}: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")
    raise RuntimeError("; ".join(errors))


def make_sdpa_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[Runner, str]:
    """SDPA flash over contiguous [b, h, len, d] tensors, no mask (flash cannot align causal bottom-right)."""
    from torch.nn.attention import SDPBackend

    return _sdpa(SDPBackend.FLASH_ATTENTION, q, k, v)


_FI_WORKSPACE: list = []


def _flashinfer_pages(case: DecodeCase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FlashInfer's CSR page table (indptr, indices, last_page_len) for the case's block tables."""
    b, pages = case.block_tables.shape
    indptr = torch.arange(0, b + 1, device=case.q.device, dtype=torch.int32) * pages
    last = torch.full((b,), case.context - (pages - 1) * case.k_cache.shape[1], dtype=torch.int32,
                      device=case.q.device)
    return indptr, case.block_tables.reshape(-1).contiguous(), last


def _flashinfer_workspace() -> torch.Tensor:
    if not _FI_WORKSPACE:
        _FI_WORKSPACE.append(torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda"))
    return _FI_WORKSPACE[0]


def make_flashinfer_decode(case: DecodeCase, k_scale: float | None = None, v_scale: float | None = None
                           ) -> tuple[Runner, str]:
    """FlashInfer's BatchDecodeWithPagedKVCacheWrapper over our very cache tensors (NHD layout is ours);
    tensor cores for grouped heads, as vLLM and SGLang configure it. An fp8 cache passes its scales."""
    import flashinfer

    b, hq, d = case.q.shape
    _, page, h, _ = case.k_cache.shape
    tensor_cores = hq // h > 1
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(_flashinfer_workspace(), "NHD",
                                                            use_tensor_cores=tensor_cores)
    indptr, indices, last = _flashinfer_pages(case)
    wrapper.plan(indptr, indices, last, hq, h, d, page, q_data_type=case.q.dtype, kv_data_type=case.k_cache.dtype)
    kv = (case.k_cache, case.v_cache)
    scales = dict(k_scale=k_scale, v_scale=v_scale) if k_scale is not None else {}
    run = lambda: wrapper.run(case.q, kv, **scales)  # noqa: E731
    run()
    torch.cuda.synchronize()
    return run, f"flashinfer {flashinfer.__version__}" + (", tensor cores" if tensor_cores else "")


def make_flashinfer_prefill(case: DecodeCase, q: torch.Tensor, chunk: int) -> tuple[Runner, str]:
    """FlashInfer's BatchPrefillWithPagedKVCacheWrapper, causal (bottom-right aligned, as ours)."""
    import flashinfer

    b = case.block_tables.shape[0]
    _, page, h, d = case.k_cache.shape
    wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(_flashinfer_workspace(), "NHD")
    qo_indptr = torch.arange(0, b + 1, device=q.device, dtype=torch.int32) * chunk
    indptr, indices, last = _flashinfer_pages(case)
    wrapper.plan(qo_indptr, indptr, indices, last, q.shape[1], h, d, page, causal=True, q_data_type=q.dtype,
                 kv_data_type=case.k_cache.dtype)
    kv = (case.k_cache, case.v_cache)
    run = lambda: wrapper.run(q, kv)  # noqa: E731
    run()
    torch.cuda.synchronize()
    return run, f"flashinfer {flashinfer.__version__}, causal"
