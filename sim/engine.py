"""The engine: one model replica stepping through a trace, as two simpy processes.

`arrivals` hands each request to the scheduler at its arrival time; `loop` runs steps as nano-vllm's
`LLMEngine.step` does: the scheduler plans the step (and takes its memory), the step timer says how long
it takes, the engine holds the simulated clock for that long, and the scheduler applies what the step did.
Times are integer nanoseconds, so a run of k decode steps timed at once lands on exactly the clock that k
single steps reach. The engine owns only the clock; the scheduler owns the queues and the KV memory.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import simpy
from simpy.core import URGENT

from sim.config import EngineConfig
from sim.kv_layouts import make_kv_layout
from sim.policies.base import Policy
from sim.scheduler import Scheduler
from sim.timer import StepTimer, make_step_timer

if TYPE_CHECKING:
    from traces.trace import Trace

# From a front end's sending a request at the end of a step (a beam search's next round, sim.v1_beam_search)
# to the engine core's input queue: positive, so the request misses the step scheduled right away and joins
# the one after (vLLM V1's core loop takes its input queue between steps, v1/engine/core.py:1621-1676), or
# wakes an idle engine; its length (output processing, IPC) is not modelled.
FRONT_END_NS = 1


class _Arrival(simpy.events.Event):
    """A timeout that fires before same-time engine events: a step starting at t sees arrivals at t."""

    def __init__(self, env: simpy.Environment, delay: int) -> None:
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, URGENT, delay)


class Engine:
    def __init__(self, trace: Trace, config: EngineConfig, policy: Policy, seed: int = 0,
                 progress: bool = False) -> None:
        self.config = config
        self.timer: StepTimer = make_step_timer(config, seed)
        kv = make_kv_layout(config, policy, self.timer.block_manager_cls)
        self.scheduler = Scheduler(trace, config, policy, kv, seed, fast_forward=self.timer.fast_forward)
        self.timer.bind(self.scheduler)
        self.cursor = 0                 # requests delivered
        self._wake: simpy.Event | None = None
        self._progress = progress
        self._next_check = config.check_every or (1 << 62)

    def run(self) -> None:
        self.env = env = simpy.Environment()
        env.process(self._arrivals(env))
        env.process(self._loop(env))
        self._bar = None
        if self._progress:
            from tqdm import tqdm
            self._bar = tqdm(total=self.scheduler.num_requests, unit="req", desc="replay")
        env.run()
        if self._bar is not None:
            self._bar.update(self.scheduler.num_done - self._bar.n)
            self._bar.close()
        if self.config.check_every:
            self.scheduler.check_invariants(final=True)

    def _arrivals(self, env: simpy.Environment):
        arrival_ns, scheduler = self.scheduler.arrival_ns, self.scheduler
        for i in range(scheduler.num_requests):
            delay = arrival_ns[i] - env.now
            if delay > 0:
                yield _Arrival(env, delay)
            scheduler.add_request(i)
            self.cursor = i + 1
            self._wake_loop()

    def _deliver(self, env: simpy.Environment, requests: list):
        """Requests a front end sent at the end of a step reach the engine `FRONT_END_NS` later."""
        yield _Arrival(env, FRONT_END_NS)
        self.scheduler.deliver(requests)
        self._wake_loop()

    def _wake_loop(self) -> None:
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _loop(self, env: simpy.Environment):
        scheduler, timer, recorder, bar = self.scheduler, self.timer, self.scheduler.recorder, self._bar
        arrival_ns, n = scheduler.arrival_ns, scheduler.num_requests
        while True:
            if not scheduler.has_unfinished():
                scheduler.release_held()  # idle: the last step's output is processed
                if self.cursor >= n and not scheduler.num_in_transit:
                    return
                self._wake = env.event()
                yield self._wake
                self._wake = None
                continue
            out = scheduler.schedule()
            if out is None:
                scheduler.unstick()
                continue
            start = env.now
            cursor = self.cursor
            until = arrival_ns[cursor] - start if out.arrivals_matter and cursor < n else None
            durations = timer.time(out, until)
            yield env.timeout(sum(durations) if type(durations) is list else int(durations.sum()))
            scheduler.update(out, durations, start, env.now)
            if scheduler.sent:
                env.process(self._deliver(env, scheduler.take_sent()))
            if bar is not None:
                bar.update(scheduler.num_done - bar.n)
            if recorder.num_rows >= self._next_check:
                self._next_check = recorder.num_rows + self.config.check_every
                scheduler.check_invariants()
