"""The shadow check: every checked sequence's attention output must equal attention over its logical
history, recomputed in float64 from the token names alone (no block table, no cache).

Reference K/V: each layer's K and V of every row of the model's input table, in float64 (RMSNorm and the
projection of the bf16/fp32 weights). With an fp8 cache the reference is the dequantized history: the
model's own K/V of every row (its dtype, as `write_kv` receives them), quantized by torch exactly as
`write_kv` stores them (x / scale, clamped, rounded to e4m3) and multiplied back by the scale in float64.
The step's GEMM may round a value one ulp away from the table's (another batch size, another summation
order); where that ulp straddles an e4m3 rounding midpoint the cache holds the neighbouring e4m3 value
(seen on the CPU: 2.3749995 stored as 2.25, the table's 2.375 as 2.5). Such elements are "ambiguous": the
tolerance of each output grows by what a whole e4m3 step of them can move it (exactly for V, to first
order, doubled, for K), and by nothing where no element is ambiguous.
"""
from __future__ import annotations

import torch

from kernels import FP8_DTYPE, KVCache
from kernels._common import quantize_fp8
from sim.execute.batch import ExecBatch, SeqSlice
from sim.execute.lineage import LAYER_STRIDE, TABLE_ROWS, Lineage
from sim.execute.model import RMS_EPS, ModelShapes, RandomTransformer

PREFILL_ROWS = 8
# |out - ref| <= ATOL + RTOL * |ref| element-wise; values are O(1) (unit-variance K, V and scores).
TOLERANCE = {torch.float32: (2e-3, 2e-3), torch.float16: (2e-2, 2e-2), torch.bfloat16: (4e-2, 4e-2)}
MAX_CHUNK_ELEMS = 1 << 24  # float64 elements of the scores, K or V per chunk of layers (128 MiB each)
WORKSPACE_BYTES = 12 * MAX_CHUNK_ELEMS * 8  # temporaries of one chunk (gathers, scores, softmax, einsum copies)


class ShadowCheck:
    def __init__(self, model: RandomTransformer, lineage: Lineage, dtype: torch.dtype,
                 cache: KVCache | None = None) -> None:
        """`dtype` is the model's (it sets the tolerance); an fp8 `cache` makes the reference its
        dequantized history (with the cache's scales)."""
        self.model, self.lineage = model, lineage
        self.cache = cache if cache is not None and cache.dtype == FP8_DTYPE else None
        self.atol, self.rtol = TOLERANCE[dtype]
        self._k: torch.Tensor | None = None  # [layers, TABLE_ROWS, kv_heads, head_dim] float64
        self._v: torch.Tensor | None = None
        self._k_amb: torch.Tensor | None = None  # fp8: e4m3 step of ambiguous elements, else 0 (same shape)
        self._v_amb: torch.Tensor | None = None
        self._rel_ulp = max(torch.finfo(dtype).eps, 2.0 ** -19)  # how far the step's GEMM may round apart
        s = model.shapes
        self._layer_offsets = torch.arange(s.num_layers, device=model.device, dtype=torch.int64)[:, None] * LAYER_STRIDE

    @staticmethod
    def table_bytes(shapes: ModelShapes, fp8: bool = False) -> int:
        """Device memory the check needs: the reference K/V tables (fp8: and their ambiguity tables) and
        one chunk's temporaries."""
        tables = 2 * shapes.num_layers * TABLE_ROWS * shapes.num_kv_heads * shapes.head_dim * 8
        return 2 * (tables + WORKSPACE_BYTES) if fp8 else tables + WORKSPACE_BYTES

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._k is None and self.cache is not None:
            ks, vs, k_amb, v_amb = [], [], [], []
            for layer in range(self.model.shapes.num_layers):
                k, v = self.model.project_kv(layer)
                for x, scale, out, amb in ((k, self.cache.k_scale[layer], ks, k_amb),
                                           (v, self.cache.v_scale[layer], vs, v_amb)):
                    out.append(_dequantized(x, scale))
                    low = _dequantized(x.double() * (1 - self._rel_ulp), scale)
                    high = _dequantized(x.double() * (1 + self._rel_ulp), scale)
                    amb.append((high - low).abs())
            self._k, self._v = torch.stack(ks), torch.stack(vs)
            self._k_amb, self._v_amb = torch.stack(k_amb), torch.stack(v_amb)
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
            probs = torch.softmax(scores, dim=-1)
            ref = torch.einsum("lkgmn,lnkd->lmkgd", probs, v)
            slack = self._ambiguity_slack(probs, qg, v, ref, layer_idx, rows[lo:hi])
            ref = ref.reshape(hi - lo, m, s.num_q_heads, s.head_dim)
            got = out[lo:hi]
            excess = (got - ref).abs() - (self.atol + self.rtol * ref.abs() + slack)
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

    def _ambiguity_slack(self, probs: torch.Tensor, qg: torch.Tensor, v: torch.Tensor, ref: torch.Tensor,
                         layer_idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | float:
        """How far e4m3 steps of the ambiguous K/V elements can move each output ([l, m, Hq, d]; 0.0
        without an fp8 cache). V: sum_n p_n |dV_n|. K: a score moves by at most ds_n = scale * |q| . |dK_n|
        and the output by sum_n p_n ds_n |v_n - out| to first order (bounded by |v_n| + |out|), doubled."""
        if self._k_amb is None:
            return 0.0
        k_amb, v_amb = self._k_amb[layer_idx, rows], self._v_amb[layer_idx, rows]     # [l, n, Hkv, d]
        ds = torch.einsum("lmkgd,lnkd->lkgmn", qg.abs(), k_amb) * self.model.scale
        pds = probs * ds
        slack_k = (torch.einsum("lkgmn,lnkd->lmkgd", pds, v.abs())
                   + pds.sum(dim=-1).permute(0, 3, 1, 2)[..., None] * ref.abs())
        slack = torch.einsum("lkgmn,lnkd->lmkgd", probs, v_amb) + 2 * slack_k
        return slack.reshape(ref.shape[0], ref.shape[1], -1, ref.shape[-1])


def _dequantized(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float64 values an fp8 cache holds for x [rows, kv_heads, head_dim] (`write_kv`'s rounding)."""
    return quantize_fp8(x, scale).double() * scale.double().reshape(1, -1, 1)
