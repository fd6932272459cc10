"""`StepRunner`: the model, its paged KV cache (and CPU swap pool), and timed execution of one step.

Order inside a step: swap-outs (GPU -> host, timed on their own and finished first: a later swap-in or
copy may reuse their blocks), then swap-ins (host -> GPU), copy-on-write copies, and the forward pass.
Everything a step needs on the device is uploaded before the timed region, so nothing inside it waits
for the host. Re-running a step gives the same cache contents (its copies and writes are idempotent), so
a step whose launches outran the GPU spin is simply run again.
"""
from __future__ import annotations

import numpy as np
import torch

from kernels import KVCache
from kernels.decode_config import DecodeConfig, default_decode_config
from sim.execute.batch import ExecBatch
from sim.execute.hostpool import HostPool
from sim.execute.lineage import LAYER_STRIDE, TABLE_ROWS, token_rows
from sim.execute.model import ModelShapes, RandomTransformer, StepInputs, balanced_num_splits
from sim.execute.timing import make_timer

MAX_RERUNS = 3


def decode_launch_config(shapes: ModelShapes, device: torch.device, dtype: torch.dtype,
                         kv_dtype: torch.dtype) -> DecodeConfig:
    """The decode launch the backend passes with its own split count (the kernel's unsplit default): passed
    explicitly, so that the tile its balanced counts are cut with is the tile that runs."""
    return default_decode_config(shapes.head_dim, device.type == "cuda", kv_dtype.itemsize,
                                 q_elem_size=dtype.itemsize)


class StepRunner:
    def __init__(self, shapes: ModelShapes, num_gpu_blocks: int, num_cpu_blocks: int, block_size: int,
                 dtype: torch.dtype, device: torch.device, seed: int, poison: bool,
                 kv_dtype: torch.dtype | None = None) -> None:
        """`dtype` is the model's; `kv_dtype` the cache's (None: the model's; float8_e4m3fn: an fp8 cache
        with per-tensor scales of 1.0, vLLM's default without calibrated scales)."""
        self.shapes, self.device, self.dtype, self.block_size = shapes, device, dtype, block_size
        self.model = RandomTransformer(shapes, dtype, device, seed)
        self.cache = KVCache(shapes.num_layers, num_gpu_blocks, block_size, shapes.num_kv_heads, shapes.head_dim,
                             dtype=kv_dtype or dtype, device=device)
        self.kv_dtype = self.cache.dtype
        # Block moves copy raw bytes: index_copy_ has no fp8 kernel (on the CPU at least), and bytes are exact.
        self._raw = self.cache.storage.view(torch.uint8) if self.kv_dtype.itemsize == 1 else self.cache.storage
        self.poison = poison
        self.host = HostPool((2, shapes.num_layers, block_size, shapes.num_kv_heads, shapes.head_dim), self.kv_dtype,
                             pinned=device.type == "cuda", poison=poison) if num_cpu_blocks else None
        self.repoison()
        self.timer = make_timer(device)
        # The decode kernel's own default assumes 4 "SMs" in the interpreter; keep that there.
        self.num_sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
        self.decode_config = decode_launch_config(shapes, device, dtype, self.kv_dtype)
        self.layer_offsets = np.arange(shapes.num_layers, dtype=np.int64)[:, None] * LAYER_STRIDE
        self.reruns = 0

    def repoison(self) -> None:
        """With the shadow check, unwritten slots read as NaN: a wrong block table or a skipped copy
        cannot pass. (Called again after the warm-up steps wrote into the cache.)"""
        if self.poison:
            nan = torch.full((), float("nan"), dtype=self.kv_dtype)  # e4m3's NaN is the byte 0x7f
            self._raw.fill_(nan.view(self._raw.dtype).item())

    # ---- inputs ------------------------------------------------------------------------------------
    def inputs(self, batch: ExecBatch) -> StepInputs:
        dev, bs = self.device, self.block_size
        owners = np.concatenate(batch.owners)
        positions = np.concatenate(batch.positions)
        rows = (token_rows(owners, positions)[None, :] + self.layer_offsets) % TABLE_ROWS

        def tables(slices) -> torch.Tensor:
            width = max((len(s.table) for s in slices), default=1) or 1
            arr = np.zeros((len(slices), width), dtype=np.int32)
            for i, s in enumerate(slices):
                arr[i, :len(s.table)] = s.table
            return torch.from_numpy(arr).to(dev)

        def ints(values, dtype=torch.int32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=dev)

        starts = np.concatenate([[0], np.cumsum([s.q_len for s in batch.prefills], dtype=np.int64)])
        extra = bool(batch.extra_tokens)
        assert all(s.seq_len <= len(s.table) * bs for s in batch.prefills + batch.decodes)
        return StepInputs(
            rows=torch.from_numpy(np.ascontiguousarray(rows)).to(dev),
            slots=torch.from_numpy(np.concatenate(batch.slots)).to(dev),
            extra_tokens=torch.from_numpy(np.concatenate(batch.extra_tokens)).to(dev) if extra else None,
            extra_slots=torch.from_numpy(np.concatenate(batch.extra_slots)).to(dev) if extra else None,
            num_prefill_tokens=int(starts[-1]),
            prefill_tables=tables(batch.prefills),
            prefill_lens=ints([s.seq_len for s in batch.prefills]),
            query_start=ints(starts.tolist()),
            max_query_len=max((s.q_len for s in batch.prefills), default=0),
            decode_tables=tables(batch.decodes),
            decode_lens=ints([s.seq_len for s in batch.decodes]),
            decode_splits=balanced_num_splits([s.seq_len for s in batch.decodes], self.shapes.num_kv_heads,
                                              self.num_sms, self.decode_config.block_n) if batch.decodes else 1,
            decode_config=self.decode_config,
            sample_tokens=ints(batch.sample_tokens, torch.int64),
        )

    # ---- execution ---------------------------------------------------------------------------------
    def swap_out(self, pairs: list[tuple[int, int]]) -> float:
        """GPU blocks -> host blocks, timed, finished before anything else of the step."""
        if not pairs:
            return 0.0
        src = torch.tensor([g for g, _ in pairs], dtype=torch.int64, device=self.device)
        staging = self.host.gather([c for _, c in pairs])  # right shape and pinning; overwritten below
        self.timer.begin()
        self._as_raw(staging).copy_(self._raw.index_select(2, src), non_blocking=True)
        seconds, _ = self.timer.end()
        self.host.scatter([c for _, c in pairs], staging)
        return seconds

    def run(self, inp: StepInputs, cow: list[tuple[int, int]], swap_in: list[tuple[int, int]],
            capture: list | None = None) -> float:
        """One step (swap-ins, copy-on-write copies, forward), timed; re-run if the timing was spoiled."""
        dev = self.device
        cow_pairs = torch.tensor(cow, dtype=torch.int64, device=dev).reshape(-1, 2) if cow else None
        swap = self._stage_swap_in(swap_in) if swap_in else None
        for attempt in range(MAX_RERUNS + 1):
            if capture is not None:
                capture.clear()
            self.timer.begin()
            if swap is not None:
                self._raw.index_copy_(2, swap[1], self._as_raw(swap[0]).to(dev, non_blocking=True))
            if cow_pairs is not None:
                self.cache.copy_blocks(cow_pairs)
            self.model.forward(inp, self.cache, capture)
            seconds, starved = self.timer.end()
            if not starved or attempt == MAX_RERUNS:
                return seconds
            self.reruns += 1
            self.timer.lengthen()
        raise AssertionError("unreachable")

    def _stage_swap_in(self, pairs: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Host blocks gathered (pinned) before the timed region, and their GPU destinations."""
        staged = self.host.gather([c for c, _ in pairs])
        return staged, torch.tensor([g for _, g in pairs], dtype=torch.int64, device=self.device)

    def swap_in_only(self, pairs: list[tuple[int, int]]) -> float:
        """Time host -> GPU block copies alone (calibration)."""
        staged, dst = self._stage_swap_in(pairs)
        self.timer.begin()
        self._raw.index_copy_(2, dst, self._as_raw(staged).to(self.device, non_blocking=True))
        return self.timer.end()[0]

    def _as_raw(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(self._raw.dtype)
