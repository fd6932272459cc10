"""The shadow check: every checked sequence's attention output must equal attention over its logical
history, recomputed in float64 from the token names alone (no block table, no cache).

Reference K/V: each layer's K and V of every row of the model's input table, in float64 (RMSNorm and the
projection of the bf16/fp32 weights). A sequence's history is its lineage (prompt, ancestors' tokens, own
tokens), so after any forks, copy-on-write copies, preemptions and swaps the reference is what the cache
should hold. Decodes check their one query; prefill slices up to `PREFILL_ROWS` rows (first, last, evenly
spaced), all layers and heads. The queries are the ones the step really used.
"""
from __future__ import annotations

import torch

from sim.execute.batch import ExecBatch, SeqSlice
from sim.execute.lineage import LAYER_STRIDE, TABLE_ROWS, Lineage
from sim.execute.model import RMS_EPS, ModelShapes, RandomTransformer

PREFILL_ROWS = 8
# |out - ref| <= ATOL + RTOL * |ref| element-wise; values are O(1) (unit-variance K, V and scores).
TOLERANCE = {torch.float32: (2e-3, 2e-3), torch.float16: (2e-2, 2e-2), torch.bfloat16: (4e-2, 4e-2)}
MAX_CHUNK_ELEMS = 1 << 24  # float64 elements of the scores, K or V per chunk of layers (128 MiB each)
WORKSPACE_BYTES = 12 * MAX_CHUNK_ELEMS * 8  # temporaries of one chunk (gathers, scores, softmax, einsum copies)


class ShadowCheck:
    def __init__(self, model: RandomTransformer, lineage: Lineage, dtype: torch.dtype) -> None:
        self.model, self.lineage = model, lineage
        self.atol, self.rtol = TOLERANCE[dtype]
        self._k: torch.Tensor | None = None  # [layers, TABLE_ROWS, kv_heads, head_dim] float64
        self._v: torch.Tensor | None = None
        s = model.shapes
        self._layer_offsets = torch.arange(s.num_layers, device=model.device, dtype=torch.int64)[:, None] * LAYER_STRIDE

    @staticmethod
    def table_bytes(shapes: ModelShapes) -> int:
        """Device memory the check needs: the reference K/V tables and one chunk's temporaries."""
        return 2 * shapes.num_layers * TABLE_ROWS * shapes.num_kv_heads * shapes.head_dim * 8 + WORKSPACE_BYTES

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._k is None:
            m, s = self.model, self.model.shapes
            x = m.table.double()
            x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + RMS_EPS)
            q_w, kv_w, _ = s.qkv_widths
            ks, vs = [], []
            for w in m.w_qkv:
                w = w.double()
                ks.append((x @ w[q_w:q_w + kv_w].t()).view(TABLE_ROWS, s.num_kv_heads, s.head_dim))
                vs.append((x @ w[q_w + kv_w:].t()).view(TABLE_ROWS, s.num_kv_heads, s.head_dim))
            self._k, self._v = torch.stack(ks), torch.stack(vs)
        return self._k, self._v

    def check(self, batch: ExecBatch, capture: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[int, list[str]]:
        """(sequence slices checked, one line per mismatching slice)."""
        k_tab, v_tab = self._tables()
        bad: list[str] = []
        token = 0
        entries: list[tuple[SeqSlice, int, str]] = []
        for piece in batch.prefills + batch.decodes:
            entries.append((piece, token, "decode" if len(entries) >= len(batch.prefills) else "prefill"))
            token += piece.q_len
        for piece, first, kind in entries:
            line = self._check_slice(piece, first, kind, capture, k_tab, v_tab)
            if line:
                bad.append(line)
        return len(entries), bad

    def _check_slice(self, piece: SeqSlice, first: int, kind: str, capture: list[tuple[torch.Tensor, torch.Tensor]],
                     k_tab: torch.Tensor, v_tab: torch.Tensor) -> str | None:
        dev, s = self.model.device, self.model.shapes
        n, q_len = piece.seq_len, piece.q_len
        sel = sorted({round(i * (q_len - 1) / max(PREFILL_ROWS - 1, 1)) for i in range(PREFILL_ROWS)}) \
            if q_len > PREFILL_ROWS else list(range(q_len))
        sel_t = torch.tensor(sel, dtype=torch.int64, device=dev)
        tokens = first + sel_t
        q = torch.stack([c[0].index_select(0, tokens) for c in capture]).double()     # [L, m, Hq, d]
        out = torch.stack([c[1].index_select(0, tokens) for c in capture]).double()
        rows = torch.from_numpy(self.lineage.rows(piece.sid, n)).to(dev)
        rows = (rows[None, :] + self._layer_offsets) % TABLE_ROWS                      # [L, n]
        group = s.num_q_heads // s.num_kv_heads
        m = len(sel)
        visible = torch.arange(n, device=dev)[None, :] <= (n - q_len + sel_t)[:, None]  # [m, n]
        per_layer = max(1, MAX_CHUNK_ELEMS // max(s.num_q_heads * m * n, s.num_kv_heads * s.head_dim * n, 1))
        worst, worst_layer = 0.0, -1
        for lo in range(0, s.num_layers, per_layer):
            hi = min(lo + per_layer, s.num_layers)
            layer_idx = torch.arange(lo, hi, device=dev)[:, None]
            k = k_tab[layer_idx, rows[lo:hi]]                                              # [l, n, Hkv, d]
            v = v_tab[layer_idx, rows[lo:hi]]
            qg = q[lo:hi].view(hi - lo, m, s.num_kv_heads, group, s.head_dim)
            scores = torch.einsum("lmkgd,lnkd->lkgmn", qg, k) * self.model.scale
            scores = scores.masked_fill(~visible, float("-inf"))
            ref = torch.einsum("lkgmn,lnkd->lmkgd", torch.softmax(scores, dim=-1), v)
            ref = ref.reshape(hi - lo, m, s.num_q_heads, s.head_dim)
            got = out[lo:hi]
            excess = (got - ref).abs() - (self.atol + self.rtol * ref.abs())
            excess = torch.nan_to_num(excess, nan=float("inf"))
            layer_worst = excess.amax(dim=(1, 2, 3))
            top = float(layer_worst.max())
            if top > worst:
                worst, worst_layer = top, lo + int(layer_worst.argmax())
        if worst > 0:
            what = "decode" if kind == "decode" else f"prefill of {q_len}"
            return (f"request {piece.request} sequence {piece.sid} ({what}, {n} tokens): layer {worst_layer} "
                    f"exceeds the tolerance by {worst:.3g}")
        return None
