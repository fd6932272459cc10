"""A decoder-only transformer with random weights and a preset's shapes, attention through our kernels.

Per layer: RMSNorm, fused QKV projection, `write_kv` of the new tokens' K/V into the paged cache,
`paged_prefill` over the prefill slices and `paged_decode` over the decoding sequences, output
projection, RMSNorm, (gated) MLP, residual adds; then a final norm and the LM head over the sampled
rows. One GPU's share of a tensor-parallel preset (heads, MLP and vocabulary split `tp` ways; the
all-reduces are not run: one GPU).

Each layer's input is a row of a fixed random table chosen by the token's name (see `lineage`), not the
previous layer's output: K/V are then a function of (token, layer) that the shadow check can recompute
from a sequence's logical history. The work per layer is the same as with a real residual stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels import FP8_DTYPE, KVCache, paged_decode, paged_prefill, write_kv, write_kv_ref
from kernels.decode_config import (
    MAX_SPLITS, MIN_TOKENS_PER_SPLIT, TARGET_PROGRAMS_PER_SM, DecodeConfig, nonempty_splits,
)
from sim.execute.lineage import TABLE_ROWS
from sim.presets import ModelSpec

RMS_EPS = 1e-5


@dataclass(frozen=True)
class ModelShapes:
    """One GPU's shapes of a model preset."""

    name: str
    num_layers: int
    hidden: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    gated_mlp: bool

    @classmethod
    def of(cls, spec: ModelSpec) -> "ModelShapes":
        tp = spec.tp
        return cls(spec.name, spec.num_layers, spec.hidden_size, spec.num_q_heads // tp,
                   max(spec.num_kv_heads // tp, 1), spec.head_dim, -(-spec.intermediate_size // tp),
                   -(-spec.vocab_size // tp), spec.gated_mlp)

    @property
    def qkv_widths(self) -> tuple[int, int, int]:
        d = self.head_dim
        return self.num_q_heads * d, self.num_kv_heads * d, self.num_kv_heads * d

    def num_params(self) -> int:
        q, kv, _ = self.qkv_widths
        mlp = (3 if self.gated_mlp else 2) * self.hidden * self.intermediate
        layer = self.hidden * (q + 2 * kv) + q * self.hidden + mlp
        return self.num_layers * layer + self.vocab * self.hidden + TABLE_ROWS * self.hidden


def balanced_num_splits(lens: list[int], num_kv_heads: int, num_sms: int, block_n: int) -> int:
    """Split-K factor for a decode batch whose lengths the host knows, launched with `block_n`-token tiles.

    `kernels.decode_config.choose_num_splits` sees only the widest block table, so it fills the GPU with programs
    but ignores imbalance: with 40 sequences of 100 to 8000 tokens it picks 1 split, and the longest
    sequence's programs run alone long after the rest (measured up to 35% slower than a uniform batch
    of more tokens). Here the longest program's share, max_len / splits, is also held to the average
    work per resident program slot, kv_heads * sum(lens) / (2 * num_sms). The count is cut to the splits of
    the longest sequence that hold tokens (`nonempty_splits`): `paged_decode` keeps an explicit count as given.
    """
    programs = len(lens) * num_kv_heads
    fill = TARGET_PROGRAMS_PER_SM * num_sms // max(programs, 1)
    longest, total = max(lens), sum(lens)
    balance = -(-longest * 2 * num_sms // max(num_kv_heads * total, 1))
    splits = max(1, min(max(fill, balance), longest // MIN_TOKENS_PER_SPLIT, MAX_SPLITS))
    return nonempty_splits(longest, splits, block_n)


@dataclass
class StepInputs:
    """Device tensors of one step (built before the timed region: no host sync inside it)."""

    rows: torch.Tensor            # int64 [num_layers, T]: input table row of every token in every layer
    slots: torch.Tensor           # int64 [T]
    extra_tokens: torch.Tensor | None   # int64 [E]: prompt tokens also written to ...
    extra_slots: torch.Tensor | None    # int64 [E]: ... these slots
    num_prefill_tokens: int
    prefill_tables: torch.Tensor  # int32 [P, W]
    prefill_lens: torch.Tensor    # int32 [P]
    query_start: torch.Tensor     # int32 [P + 1]
    max_query_len: int
    decode_tables: torch.Tensor   # int32 [D, W]
    decode_lens: torch.Tensor     # int32 [D]
    decode_splits: int            # split-K factor of the decode kernel (balanced_num_splits) ...
    decode_config: DecodeConfig   # ... and its launch, whose tile the count was cut with
    sample_tokens: torch.Tensor   # int64 [S]


class RandomTransformer:
    """Random bf16 (GPU) or fp32 (CPU) weights, N(0, 1/fan_in), one seed."""

    def __init__(self, shapes: ModelShapes, dtype: torch.dtype, device: torch.device, seed: int) -> None:
        self.shapes, self.dtype, self.device = shapes, dtype, device
        gen = torch.Generator(device=device).manual_seed(seed)

        def weight(rows: int, cols: int) -> torch.Tensor:
            w = torch.randn((rows, cols), generator=gen, device=device, dtype=dtype)
            return w.mul_(cols ** -0.5)

        s = shapes
        q, kv, _ = s.qkv_widths
        self.table = torch.randn((TABLE_ROWS, s.hidden), generator=gen, device=device, dtype=dtype)
        self.w_qkv = [weight(q + 2 * kv, s.hidden) for _ in range(s.num_layers)]
        self.w_o = [weight(s.hidden, q) for _ in range(s.num_layers)]
        up = 2 * s.intermediate if s.gated_mlp else s.intermediate
        self.w_up = [weight(up, s.hidden) for _ in range(s.num_layers)]
        self.w_down = [weight(s.hidden, s.intermediate) for _ in range(s.num_layers)]
        self.lm_head = weight(s.vocab, s.hidden)
        self.scale = s.head_dim ** -0.5

    def _qkv(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        return F.rms_norm(x, (self.shapes.hidden,), eps=RMS_EPS) @ self.w_qkv[layer].t()

    def project_kv(self, layer: int, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V ([rows, kv_heads, head_dim], model dtype) of table rows (all: None) as `forward` computes
        them before `write_kv` (the shadow check quantizes these for an fp8 cache)."""
        s = self.shapes
        q_w, kv_w, _ = s.qkv_widths
        x = self.table if rows is None else self.table.index_select(0, rows)
        qkv = self._qkv(x, layer)
        n = x.shape[0]
        return (qkv[:, q_w:q_w + kv_w].reshape(n, s.num_kv_heads, s.head_dim),
                qkv[:, q_w + kv_w:].reshape(n, s.num_kv_heads, s.head_dim))

    def forward(self, inp: StepInputs, cache: KVCache,
                capture: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """Run one step over `cache`; returns the sampled tokens' argmax ids. With `capture`, each layer's
        queries and attention outputs ([T, heads, head_dim]) are appended to it for the shadow check."""
        s = self.shapes
        q_w, kv_w, _ = s.qkv_widths
        p, n_pre = inp.num_prefill_tokens, inp.prefill_lens.shape[0]
        # Triton's interpreter rounds float32 -> e4m3 without carrying into the exponent (docs/kernels.md):
        # on the CPU an fp8 cache is written by torch's quantization, which write_kv matches bit for bit on
        # a GPU. Attention reads it with the kernels either way.
        write = write_kv_ref if cache.dtype == FP8_DTYPE and self.device.type == "cpu" else write_kv
        hidden = None
        for layer in range(s.num_layers):
            x = self.table.index_select(0, inp.rows[layer])
            t = x.shape[0]
            qkv = self._qkv(x, layer)
            q = qkv[:, :q_w].view(t, s.num_q_heads, s.head_dim)
            k = qkv[:, q_w:q_w + kv_w].view(t, s.num_kv_heads, s.head_dim)
            v = qkv[:, q_w + kv_w:].view(t, s.num_kv_heads, s.head_dim)
            kc, vc = cache.k[layer], cache.v[layer]
            scales = dict(k_scale=cache.k_scale[layer], v_scale=cache.v_scale[layer])
            write(k, v, kc, vc, inp.slots, **scales)
            if inp.extra_tokens is not None:
                write(k.index_select(0, inp.extra_tokens), v.index_select(0, inp.extra_tokens), kc, vc,
                      inp.extra_slots, **scales)
            out = torch.empty((t, s.num_q_heads, s.head_dim), dtype=self.dtype, device=self.device)
            if p:
                paged_prefill(q[:p], kc, vc, inp.prefill_tables, inp.prefill_lens, inp.query_start,
                              scale=self.scale, max_query_len=inp.max_query_len, out=out[:p], **scales)
            if t > p:
                paged_decode(q[p:], kc, vc, inp.decode_tables, inp.decode_lens, scale=self.scale,
                             num_splits=inp.decode_splits, config=inp.decode_config, out=out[p:], **scales)
            if capture is not None:
                capture.append((q, out))
            h = torch.addmm(x, out.view(t, q_w), self.w_o[layer].t())
            up = F.rms_norm(h, (s.hidden,), eps=RMS_EPS) @ self.w_up[layer].t()
            if s.gated_mlp:
                gate, lin = up.chunk(2, dim=1)
                act = F.silu(gate).mul_(lin)
            else:
                act = F.relu_(up)
            hidden = torch.addmm(h, act, self.w_down[layer].t())
        assert hidden is not None and n_pre == inp.prefill_tables.shape[0]
        last = F.rms_norm(hidden.index_select(0, inp.sample_tokens), (s.hidden,), eps=RMS_EPS)
        return (last @ self.lm_head.t()).argmax(dim=-1)
