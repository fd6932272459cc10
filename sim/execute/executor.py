"""`Executor`: runs each simulated step for real and says how long it took.

The execute timer hands it the step's `ExecBatch` (block tables, context lengths, slots, prefill slices) with
the analytic model's prediction for the same step; the executor applies the block manager's logged
moves (swap-outs, swap-ins, copy-on-write copies), runs the forward pass over the paged cache, and
returns the measured time, which advances the simulated clock. With `verify`, sampled steps are checked
against the shadow reference (`verify.ShadowCheck`).
"""
from __future__ import annotations

import platform
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from sim.config import EngineConfig
from sim.cost import StepBatch
from sim.execute.batch import ExecBatch
from sim.execute.device import check_fits, dtype_for, kv_dtype_for, resolve_device
from sim.execute.lineage import Lineage
from sim.execute.recording import RecordingBlockManager
from sim.schema import EXEC_STEP_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

MAX_REPORTED_MISMATCHES = 10


class Executor:
    def __init__(self, config: EngineConfig, bm: RecordingBlockManager, seed: int) -> None:
        device = resolve_device(config.device)  # before the first triton import (interpreter on the CPU)
        import torch

        from sim.execute.model import ModelShapes
        from sim.execute.runner import StepRunner
        from sim.execute.verify import ShadowCheck

        self.config, self.bm, self.device = config, bm, device
        self.dtype = dtype_for(device)
        kv_dtype = kv_dtype_for(device, config.kv_cache_dtype)
        shapes = ModelShapes.of(config.model_spec)
        elem = torch.empty((), dtype=self.dtype).element_size()
        kv_bytes = (2 * shapes.num_layers * config.kv_blocks * config.block_size * shapes.num_kv_heads
                    * shapes.head_dim * kv_dtype.itemsize)
        verify_bytes = ShadowCheck.table_bytes(shapes, config.kv_cache_dtype == "fp8") if config.verify else 0
        check_fits(config.model, shapes.num_params() * elem, kv_bytes, verify_bytes, device)
        self.runner = StepRunner(shapes, config.kv_blocks, bm.num_cpu_blocks, config.block_size, self.dtype,
                                 device, seed, poison=config.verify, kv_dtype=kv_dtype)
        self.lineage = Lineage()
        self.check = (ShadowCheck(self.runner.model, self.lineage, self.dtype, self.runner.cache)
                      if config.verify else None)
        self.every = config.verify_every
        self._rows: list[tuple] = []
        self.mismatches: list[str] = []
        self.verify_checked = self.verify_mismatches = 0
        self._warm_up()

    def _warm_up(self) -> None:
        """Compile the kernels' common variants before any step is timed."""
        from sim.execute.calibrate import warm_up

        warm_up(self.runner, self.config.kv_blocks)
        self.runner.repoison()

    # ---- one step ----------------------------------------------------------------------------------
    def run(self, batch: ExecBatch, step: int, cost: StepBatch, predicted_s: float) -> int:
        """Execute the step; returns its measured duration in ns."""
        moves = self.bm.drain()
        self._follow_lineage(moves.lineage, batch)
        inputs = self.runner.inputs(batch)
        checked = self.check is not None and (step % self.every == 0 or moves.moves_blocks)
        capture: list | None = [] if checked else None
        seconds = self.runner.swap_out(moves.swap_out)
        seconds += self.runner.run(inputs, moves.cow, moves.swap_in, capture)
        n_checked = n_bad = 0
        if checked:
            n_checked, bad = self.check.check(batch, capture)
            n_bad = len(bad)
            for line in bad[: max(MAX_REPORTED_MISMATCHES - len(self.mismatches), 0)]:
                self.mismatches.append(f"step {step}: {line}")
            self.verify_checked += n_checked
            self.verify_mismatches += n_bad
        self._rows.append((step, seconds, predicted_s, cost.prefill_tokens, cost.prefill_seqs, cost.prefill_attn_pairs,
                           cost.prefill_kv_tokens, cost.decode_seqs, cost.decode_context, cost.sampled_seqs,
                           cost.cow_copies, cost.swap_blocks, n_checked, n_bad))
        return max(int(seconds * 1e9 + 0.5), 1)

    def _follow_lineage(self, events: list, batch: ExecBatch) -> None:
        """Apply the logged forks and frees, then register the step's new root sequences."""
        lineage = self.lineage
        for kind, a, b, at in events:
            if kind == "free":
                lineage.free(a)
                continue
            if a not in lineage:  # forked in the same round it was allocated (a recompute's samples)
                group = batch.groups[a]
                lineage.root(a, group.idx, group.prompt)
            lineage.fork(a, b, at)
        for sid, group in batch.groups.items():
            if sid not in lineage:
                lineage.root(sid, group.idx, group.prompt)

    # ---- results -----------------------------------------------------------------------------------
    def steps_table(self) -> "pd.DataFrame":
        import pandas as pd

        # The StepBatch fields (the analytic model's inputs) travel along: predictions can be redone offline.
        return pd.DataFrame(self._rows, columns=list(EXEC_STEP_COLUMNS))

    def summary(self) -> dict:
        measured = np.array([r[1] for r in self._rows], dtype=np.float64)
        predicted = np.array([r[2] for r in self._rows], dtype=np.float64)
        rel = np.abs(predicted - measured) / measured if measured.size else np.array([np.nan])
        out = {
            "execute_device": self.describe()["device_name"],
            "execute_steps": int(measured.size),
            "execute_busy_s": float(measured.sum()),
            "execute_reruns": self.runner.reruns,
            "predicted_step_median_abs_rel_err": float(np.median(rel)),
        }
        if self.check is not None:
            out.update(verify_checked=self.verify_checked, verify_mismatches=self.verify_mismatches,
                       verify_every=self.every, verify_first_mismatches=list(self.mismatches))
        return out

    def describe(self) -> dict:
        import torch
        import triton

        dev = self.device
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}), Triton interpreter"
        return {"backend": "execute", "device": str(dev), "device_name": name, "dtype": str(self.dtype).replace("torch.", ""),
                "kv_cache_dtype": str(self.runner.kv_dtype).replace("torch.", ""),
                "torch": torch.__version__, "triton": triton.__version__, "timer": self.runner.timer.name,
                "model_shapes": asdict(self.runner.shapes) | {"params": self.runner.shapes.num_params()}}
