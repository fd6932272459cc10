"""Where replays run: local processes (the default, no extra package) or Ray tasks, behind one interface.

An executor runs `fn(shared, payload)` for every submitted payload and hands results back as they finish,
in any order. `shared` (the trace) reaches each worker once: a `multiprocessing` pool gets it in its
initializer (inherited by fork), Ray gets it through the object store (`ray.put` once; every task takes
the same object reference). `fn` is a module-level function, so it pickles by name.

`local` never imports ray; `ray` imports it only when chosen.
"""
from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from typing import Any, Callable, Hashable

EXECUTORS: tuple[str, ...] = ("local", "ray")
TaskFn = Callable[[Any, Any], Any]

_WORKER: tuple[TaskFn, Any] | None = None  # (fn, shared) inside a local worker process


def _init_worker(fn: TaskFn, shared: Any) -> None:
    global _WORKER
    _WORKER = (fn, shared)
    # Ctrl-C reaches the whole process group; only the parent handles it (and terminates the pool).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_in_worker(payload: Any) -> Any:
    assert _WORKER is not None, "worker not initialised"
    fn, shared = _WORKER
    return fn(shared, payload)


class Executor:
    """Submit tagged payloads, take (tag, result) pairs back as they finish; a task's exception is raised
    by `next_result`. Use as a context manager: leaving on an exception stops the tasks still running."""

    parallelism: int = 1  # tasks that can run at once
    timings: dict[str, float]  # seconds of the executor's own start-up and shut-down steps, by step

    def __init__(self) -> None:
        self.timings = {}

    def submit(self, tag: Hashable, payload: Any) -> None:
        raise NotImplementedError

    def next_result(self) -> tuple[Hashable, Any]:
        raise NotImplementedError

    @property
    def pending(self) -> int:
        raise NotImplementedError

    def close(self, failed: bool = False) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(failed=exc_type is not None)


class InlineExecutor(Executor):
    """One task at a time in this process, in submission order (`--jobs 1`: easy to debug and profile)."""

    def __init__(self, fn: TaskFn, shared: Any) -> None:
        super().__init__()
        self._fn, self._shared = fn, shared
        self._queue: deque[tuple[Hashable, Any]] = deque()

    def submit(self, tag: Hashable, payload: Any) -> None:
        self._queue.append((tag, payload))

    def next_result(self) -> tuple[Hashable, Any]:
        tag, payload = self._queue.popleft()
        return tag, self._fn(self._shared, payload)

    @property
    def pending(self) -> int:
        return len(self._queue)


class ProcessExecutor(Executor):
    """A `multiprocessing.Pool` of `jobs` processes; `terminate()` stops running replays at once on Ctrl-C."""

    def __init__(self, fn: TaskFn, shared: Any, jobs: int) -> None:
        super().__init__()
        self.parallelism = jobs
        started = time.perf_counter()
        self._pool = multiprocessing.Pool(jobs, initializer=_init_worker, initargs=(fn, shared))
        self.timings["pool_start_s"] = time.perf_counter() - started
        self._done: queue.Queue[tuple[Hashable, Any, BaseException | None]] = queue.Queue()
        self._pending = 0

    def submit(self, tag: Hashable, payload: Any) -> None:
        self._pool.apply_async(_run_in_worker, (payload,), callback=lambda r: self._done.put((tag, r, None)),
                               error_callback=lambda e: self._done.put((tag, None, e)))
        self._pending += 1

    def next_result(self) -> tuple[Hashable, Any]:
        assert self._pending, "no task pending"
        tag, result, error = self._done.get()
        self._pending -= 1
        if error is not None:
            raise error
        return tag, result

    @property
    def pending(self) -> int:
        return self._pending

    def close(self, failed: bool = False) -> None:
        started = time.perf_counter()
        if failed:
            self._pool.terminate()
        else:
            self._pool.close()
        self._pool.join()
        self.timings["pool_stop_s"] = time.perf_counter() - started


def _ray_task(fn: TaskFn, shared: Any, payload: Any) -> Any:
    return fn(shared, payload)  # Ray resolved `shared` (an object reference) to the object


class RayExecutor(Executor):
    """Ray tasks of one CPU each. Without `address` a local Ray instance of `jobs` CPUs is started (and shut
    down on close): no dashboard, workers' output not forwarded, usage statistics off. With one (`ray://...`,
    `HOST:PORT` or `auto`) the sweep joins that cluster. Fresh Ray workers import the task's module once,
    before their first task, and keep it for the next ones."""

    def __init__(self, fn: TaskFn, shared: Any, jobs: int, address: str | None) -> None:
        super().__init__()
        started = time.perf_counter()
        import ray

        self.timings["import_ray_s"] = time.perf_counter() - started
        self._ray = ray
        self._owns = not ray.is_initialized()
        started = time.perf_counter()
        if self._owns:
            sigterm = signal.getsignal(signal.SIGTERM)
            if address is None:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local instance reports to no one
                ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
            if sigterm is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, sigterm)  # ray.init replaces it (sys.exit) and never puts it back
        self.timings["ray_init_s"] = time.perf_counter() - started
        self.parallelism = max(int(ray.cluster_resources().get("CPU", jobs)), 1)
        self._fn = fn
        started = time.perf_counter()
        self._shared = ray.put(shared)  # once; tasks get this reference, not a copy of the trace
        self.timings["ray_put_s"] = time.perf_counter() - started
        self._remote = ray.remote(num_cpus=1)(_ray_task)
        self._tags: dict[Any, Hashable] = {}

    def submit(self, tag: Hashable, payload: Any) -> None:
        self._tags[self._remote.remote(self._fn, self._shared, payload)] = tag

    def next_result(self) -> tuple[Hashable, Any]:
        assert self._tags, "no task pending"
        (ref,), _ = self._ray.wait(list(self._tags), num_returns=1)
        tag = self._tags.pop(ref)
        try:
            return tag, self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, Exception):  # the task's own error (ValueError: one line for the CLI)
                raise exc.cause from None
            raise

    @property
    def pending(self) -> int:
        return len(self._tags)

    def close(self, failed: bool = False) -> None:
        for ref in self._tags if failed else ():
            self._ray.cancel(ref, force=True)
        self._tags.clear()
        if self._owns:
            started = time.perf_counter()
            self._ray.shutdown()
            self.timings["ray_shutdown_s"] = time.perf_counter() - started


def check_executor(kind: str, jobs: int, address: str | None) -> None:
    """One-line errors for a bad choice, before any work starts."""
    if kind not in EXECUTORS:
        raise ValueError(f"executor: unknown executor {kind!r}; valid names: {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise ValueError(f"jobs: must be >= 1, got {jobs}")
    if address is not None and kind != "ray":
        raise ValueError("ray-address: needs --executor ray")
    if kind == "ray":
        if importlib.util.find_spec("ray") is None:  # not imported here: the executor times its import
            raise ValueError("executor: ray is not installed; pip install 'pagedlab[ray]'")


def make_executor(kind: str, fn: TaskFn, shared: Any, *, jobs: int = 1, address: str | None = None) -> Executor:
    """`local`: in this process for one job, else a process pool; `ray`: Ray tasks (see RayExecutor)."""
    check_executor(kind, jobs, address)
    if kind == "ray":
        return RayExecutor(fn, shared, jobs, address)
    if jobs == 1:
        return InlineExecutor(fn, shared)
    return ProcessExecutor(fn, shared, jobs)


def default_jobs() -> int:
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def add_executor_arguments(p: argparse.ArgumentParser) -> None:
    """`--executor local|ray` and `--ray-address`, for `pagedlab compare` and `pagedlab sweep`."""
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where replays run: local processes (default) or Ray tasks (pip install 'pagedlab[ray]')")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="with --executor ray: join this Ray cluster (HEAD_IP:6379, ray://HEAD_IP:10001 or auto) "
                        "instead of starting a local Ray instance")
