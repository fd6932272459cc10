"""The product's decode kernel with a timeline: each program stamps %globaltimer at its start, after its tile loop
and at its end, its SM (%smid) and the SM cycles it ran (%clock64), so that one launch shows when programs start,
how long their loops take, what the split merge adds, how many programs shared each SM and at what clock.

The kernel is built from `kernels/decode.py`'s own source (four insertions, each anchored on a line that must occur
exactly once), so it is the product's decode and stays so; the stamps cost nothing measurable (graph time equal to
the product's within 0.7% on the H200, docs/kernels.md "What was tried" 59). GPU only (inline PTX).
"""
from __future__ import annotations

import importlib.util
import inspect
import sys
import tempfile
from pathlib import Path

import torch

import kernels.decode
from kernels._common import FP8_DTYPE, default_scale
from kernels.decode_launch import plan, split_counters

STAMP_FIELDS = 5  # smid, start ns, loop end ns, end ns, cycles from start to end

_HELPERS = '''

@triton.jit
def _stamp(x, ASM: tl.constexpr):
    return tl.inline_asm_elementwise(ASM, "=l,r", [x], dtype=tl.int64, is_pure=False, pack=1)
'''
_INSERTIONS = (  # (anchor, text inserted after it); anchors must occur once in kernels/decode.py
    ("ws_ptr, sem_ptr, ks_ptr, vs_ptr,", " ts_ptr,"),
    ("    split = tl.program_id(2)\n",
     '    t_start = _stamp(seq, "mov.u64 $0, %globaltimer;")\n'
     '    c_start = _stamp(seq, "mov.u64 $0, %clock64;")\n'
     '    sm_id = _stamp(seq, "{ .reg .u32 t; mov.u32 t, %smid; cvt.u64.u32 $0, t; }")\n'),
    ("                                  FP8_WIDEN_V, DOT_PRECISION)\n\n",
     '    t_loop = _stamp((tl.sum(l_i) > -1.0).to(tl.int32), "mov.u64 $0, %globaltimer;")  # after the loop\'s math\n'),
    ("                        GROUP, HEAD_DIM, HEAD_DIM_PAD, MERGE_G, MERGE_S)\n\n",
     '    tl.debug_barrier()\n'
     '    t_end = _stamp(seq, "mov.u64 $0, %globaltimer;")\n'
     '    c_end = _stamp(seq, "mov.u64 $0, %clock64;")\n'
     '    pid = (seq * tl.num_programs(1) + kv_head) * tl.num_programs(2) + split\n'
     f'    row = ts_ptr + pid * {STAMP_FIELDS}\n'
     '    tl.store(row, sm_id)\n    tl.store(row + 1, t_start)\n    tl.store(row + 2, t_loop)\n'
     '    tl.store(row + 3, t_end)\n    tl.store(row + 4, c_end - c_start)\n\n'),
)


def anchored(source: str, anchor: str) -> int:
    """The index of `anchor` in the product's decode source, which must hold it exactly once."""
    if source.count(anchor) != 1:
        raise RuntimeError(f"kernels/decode.py changed: anchor {anchor!r} found {source.count(anchor)} times")
    return source.index(anchor)


def decode_kernel_from(source: str, helpers: str, module_name: str):
    """`_decode_kernel` of `source` (kernels/decode.py's, edited) with `helpers` (Triton functions) put before its
    first kernel function; written to a file and imported, since triton.jit reads a function's source from its file."""
    first_jit = "\n\n@triton.jit\ndef _attend_tile"
    at = anchored(source, first_jit)
    source = source[:at] + helpers + source[at:]
    path = Path(tempfile.mkdtemp()) / f"{module_name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module._decode_kernel


def _build_kernel():
    source = inspect.getsource(kernels.decode)
    for anchor, text in _INSERTIONS:
        at = anchored(source, anchor) + len(anchor)
        source = source[:at] + text + source[at:]
    return decode_kernel_from(source, _HELPERS, "stamped_decode_kernel")


_KERNEL = None


def stamped_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                   seq_lens: torch.Tensor, ts: torch.Tensor, *, k_scale: torch.Tensor | None = None,
                   v_scale: torch.Tensor | None = None, **meta_override) -> torch.Tensor:
    """`paged_decode` at its automatic launch (constexprs replaceable by `meta_override`), stamping int64
    [programs, STAMP_FIELDS] into `ts` (`programs(...)` rows)."""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build_kernel()
    p = decode_plan(q, k_cache, block_tables)
    head_dim = q.shape[-1]
    assert ts.shape == (programs(p), STAMP_FIELDS) and ts.dtype == torch.int64
    out = torch.empty_like(q)
    if k_scale is None:
        k_scale = v_scale = torch.ones(1, dtype=torch.float32, device=q.device)
    ws = torch.empty(max(p.workspace, 1), dtype=torch.float32, device=q.device)
    counters = split_counters(q.device, max(p.counters, 1))
    sq, sk, so = q.stride(), k_cache.stride(), out.stride()
    _KERNEL[p.grid](q, k_cache, v_cache, block_tables, seq_lens, out, ws, counters, k_scale, v_scale, ts,
                    sq[0], sq[1], sk[0], sk[1], sk[2], block_tables.stride(0), so[0], so[1],
                    1 if k_scale.numel() > 1 else 0, default_scale(head_dim, None) * kernels.decode.LOG2E,
                    p.num_splits, p.lse_offset, **(p.meta | meta_override))
    return out


def programs(p) -> int:
    """Programs of a `decode_plan`."""
    return p.grid[0] * p.grid[1] * p.grid[2]


def decode_plan(q: torch.Tensor, k_cache: torch.Tensor, block_tables: torch.Tensor):
    """The product's automatic launch plan of a decode call (`kernels.decode_launch.plan`)."""
    num_seqs, num_q_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    return plan(num_seqs, num_q_heads, num_kv_heads, head_dim, block_size, block_tables.shape[1] * block_size,
                q.dtype, k_cache.dtype == FP8_DTYPE, k_cache.element_size(), q.device, None, None)


def _quantiles(x: torch.Tensor, qs=(0.0, 0.1, 0.5, 0.9, 0.99, 1.0)) -> str:
    return " ".join(f"{torch.quantile(x.double(), q).item():7.1f}" for q in qs)


def timeline(ts: torch.Tensor, num_sms: int) -> str:
    """A launch's stamps as text: quantiles (us from the first start) of starts, loop times, ends and what follows
    the loop (partial store, arrival, merge); the SM clock; ends by programs an SM."""
    ts = ts.cpu()
    sm, t0, t1, t2, cycles = (ts[:, i] for i in range(STAMP_FIELDS))
    base = t0.min()
    start, end = (t0 - base) / 1e3, (t2 - base) / 1e3
    loop, after = (t1 - t0) / 1e3, (t2 - t1) / 1e3
    span = end.max().item()
    mhz = cycles.double() / (t2 - t0).double() * 1e3
    per_sm = torch.bincount(sm, minlength=num_sms)
    lines = [f"programs {len(ts)} on {(per_sm > 0).sum().item()} SMs ({per_sm[per_sm > 0].min().item()}-"
             f"{per_sm.max().item()} an SM), span {span:.1f} us, SM clock p50 {mhz.median().item():.0f} MHz, "
             f"program time over programs x span {(end - start).sum().item() / (len(ts) * span):.3f}",
             "            p0      p10     p50     p90     p99     max (us)",
             f"  start   {_quantiles(start)}", f"  loop    {_quantiles(loop)}", f"  after   {_quantiles(after)}",
             f"  end     {_quantiles(end)}"]
    for n in sorted(set(per_sm.tolist()) - {0}):
        on = torch.isin(sm, (per_sm == n).nonzero().flatten())
        lines.append(f"  SMs with {n} programs: {(per_sm == n).sum().item()}, loop p50 {loop[on].median().item():.1f},"
                     f" end p50 {end[on].median().item():.1f}, max {end[on].max().item():.1f}")
    return "\n".join(lines)
