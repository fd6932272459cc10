"""`ExecuteTimer`: the execute backend's step timer. Each step runs for real (`Executor`) and its measured
time advances the simulated clock; the analytic model predicts the same batch alongside (exec_steps.csv).

Steps go one by one (no fast-forward: every step has its own batch on the GPU), and the KV layout
allocates with a `RecordingBlockManager`, whose log of copies, swaps and forks the executor replays on the
real cache.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from sim.config import EngineConfig
from sim.cost import make_cost_model
from sim.execute.batch import build_exec_batch
from sim.execute.recording import RecordingBlockManager
from sim.schema import EXEC_STEPS_CSV
from sim.scheduler_output import RunningView, SchedulerOutput

if TYPE_CHECKING:
    import pandas as pd

    from sim.execute.executor import Executor


class ExecuteTimer:
    name = "execute"
    fast_forward = False
    block_manager_cls = RecordingBlockManager

    def __init__(self, config: EngineConfig, seed: int) -> None:
        self.config, self.seed = config, seed
        self.cost = make_cost_model(config)
        self.executor: "Executor | None" = None
        self.view: RunningView | None = None

    def bind(self, view: RunningView) -> None:
        from sim.execute.executor import Executor

        self.view = view
        self.executor = Executor(self.config, view.block_manager, self.seed)

    def time(self, out: SchedulerOutput, until_arrival_ns: int | None) -> list[int]:
        batch = out.step_batch()
        exec_batch = build_exec_batch(self.view, out)  # before the chunks advance `prefill_done`
        return [self.executor.run(exec_batch, out.step_index, batch, self.cost.step_time(batch))]

    def describe(self) -> dict:
        return self.executor.describe() | {"predictions": self.cost.describe()}

    def summary(self) -> dict:
        return self.executor.summary()

    def tables(self) -> "dict[str, pd.DataFrame]":
        return {EXEC_STEPS_CSV: self.executor.steps_table()}
