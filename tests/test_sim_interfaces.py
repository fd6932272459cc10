"""Every KV layout implements the whole `KVLayout` interface, every step timer the whole `StepTimer`
interface, and every policy needs only the `SchedulerView`: the scheduler and engine never ask which
one they hold."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from memory import BlockManager
from sim import EngineConfig
from sim.kv_layout import KVLayout
from sim.kv_layouts import LAYOUTS, make_kv_layout
from sim.policies import POLICIES, make_policy
from sim.policies.base import SchedulerView
from sim.timer import AnalyticTimer, StepTimer

SIM = Path(__file__).resolve().parents[1] / "sim"


def members(protocol: type) -> set[str]:
    names = {n for n, v in vars(protocol).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    return names | set(getattr(protocol, "__annotations__", {}))


@pytest.mark.parametrize("policy", list(POLICIES))
def test_every_layout_implements_the_whole_interface(policy: str) -> None:
    kv = make_kv_layout(EngineConfig(num_gpu_blocks=64), make_policy(policy), BlockManager)
    missing = sorted(name for name in members(KVLayout) if not hasattr(kv, name))
    assert not missing, f"{type(kv).__name__} lacks {missing}"


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_registered_layout_class_defines_the_whole_interface(name: str) -> None:
    """Also a layout no policy asks for yet: its class defines every `KVLayout` method and `for_policy`,
    none of them inherited as a protocol stub."""
    layout = LAYOUTS[name]
    methods = {n for n, v in vars(KVLayout).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    missing = sorted(n for n in methods | {"for_policy"} if not hasattr(layout, n))
    assert not missing, f"layout {name!r} ({layout.__name__}) lacks {missing}"
    assert KVLayout not in layout.__mro__, f"layout {name!r} inherits the protocol's empty methods"


def test_layouts_are_registered_by_the_policies_memory() -> None:
    assert {make_policy(p).memory for p in POLICIES} <= set(LAYOUTS)


def test_prefix_caching_needs_a_paged_layout() -> None:
    with pytest.raises(ValueError, match="enable_prefix_caching: needs a paged policy"):
        make_kv_layout(EngineConfig(num_gpu_blocks=64, enable_prefix_caching=True), make_policy("orca-max"),
                       BlockManager)


def test_timers_implement_the_whole_interface() -> None:
    from sim.execute.timer import ExecuteTimer  # the class only: no kernels run

    for timer in (AnalyticTimer, ExecuteTimer):
        missing = sorted(name for name in members(StepTimer) if not hasattr(timer, name) and name != "fast_forward")
        assert not missing, f"{timer.__name__} lacks {missing}"
    assert AnalyticTimer(EngineConfig()).fast_forward and not AnalyticTimer(EngineConfig(fast_forward=False)).fast_forward
    assert ExecuteTimer.fast_forward is False


def test_policies_use_only_the_scheduler_view() -> None:
    """Attributes a policy module reads from the scheduler it is given are `SchedulerView` members."""
    allowed = members(SchedulerView)
    for path in sorted((SIM / "policies").glob("*.py")):
        tree = ast.parse(path.read_text())
        used = {node.attr for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sched"}
        assert used <= allowed, f"{path.name} uses {sorted(used - allowed)} beyond SchedulerView"
        assert "sim.engine" not in path.read_text() and "sim.scheduler" not in path.read_text(), path.name


def test_engine_and_scheduler_never_ask_which_layout_or_backend() -> None:
    for name in ("engine.py", "scheduler.py", "policy_verbs.py", "lifecycle.py", "preemption.py", "simulate.py"):
        source = (SIM / name).read_text()
        for needle in ('.memory ==', '.memory !=', '"paged"', '"reserved"', 'backend ==', 'backend !=',
                       'executor', 'isinstance(kv', 'isinstance(self.kv', 'kv, "', 'kv.prefix'):
            assert needle not in source, f"sim/{name} branches on the kind: {needle!r}"
    assert inspect.getsource(make_kv_layout).count("if ") == 0  # a registry look-up, not a branch
