"""Measured cost profiles: time the executor's real steps over a grid, fit the analytic model's constants.

Every grid point is a synthetic step (prefill chunks and/or decodes with given contexts, distinct
blocks per sequence) run through the same `StepRunner` as `--backend execute`. The analytic model is
linear in the inverse efficiencies once the GEMM roofline's side (compute or memory bound) is fixed, so
the fit alternates: pick each point's side, solve non-negative least squares on relative error, repeat.
Copy-on-write and swap efficiencies come from timing block copies alone. Unfitted constants (tensor
parallelism, the minor side of each attention roofline) keep the default profile's values.
"""
from __future__ import annotations

import math
from dataclasses import asdict, replace

import numpy as np

from sim.cost import AnalyticCostModel, CostProfile, StepBatch
from sim.execute.batch import ExecBatch, SeqSlice, slots_of
from sim.presets import GpuSpec, ModelSpec

MAX_GRID_TOKENS = 131_072   # KV tokens held by the largest grid point (distinct blocks: no L2 reuse)

# (prefill chunks as (cached, new) tokens, decode contexts)
Point = tuple[tuple[tuple[int, int], ...], tuple[int, ...]]


def full_grid() -> list[Point]:
    points: list[Point] = []
    for ctx in (256, 1024, 4096, 8192):
        for b in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            if b * ctx <= MAX_GRID_TOKENS:
                points.append(((), (ctx,) * b))
    # Serving batches mix short and long contexts: log-uniform lengths from 64 to 8192 tokens.
    rng = np.random.default_rng(0)
    for b in (8, 16, 32, 64, 128):
        ctx = np.exp(rng.uniform(np.log(64), np.log(8192), size=b))
        ctx = np.maximum(ctx * min(1.0, MAX_GRID_TOKENS / ctx.sum()), 16).astype(int)
        points.append(((), tuple(int(c) for c in ctx)))
    for q in (32, 128, 512, 1024, 2048, 4096, 8192):
        points.append((((0, q),), ()))
    for n, q in ((2, 2048), (4, 1024), (8, 512), (3, 2700)):
        points.append((((0, q),) * n, ()))
    points += [(((2048, 512),), ()), (((6144, 2048),), ()), (((0, 512),), (1024,) * 16)]
    return points


def quick_grid() -> list[Point]:
    """A handful of small points (CPU tests through the interpreter)."""
    return [((), (16,)), ((), (64,) * 4), ((), (200,) * 2), (((0, 16),), ()), (((0, 64),), ()),
            (((32, 32),), (48,) * 2)]


def warm_grid(num_blocks: int, block_size: int) -> list[Point]:
    """Kernel variants a replay meets (split/no-split decode, table widths, prefill with context)."""
    cap = num_blocks * block_size // 2
    points = [((), (ctx,) * b) for ctx in (16, 1000, 4096) for b in (1, 8, 64)]
    points += [(((0, 16),), ()), (((0, 1000),), ()), (((100, 1000),), (500,) * 4)]
    return [p for p in points if point_tokens(p) <= cap]


def point_tokens(point: Point) -> int:
    prefills, decodes = point
    return sum(c + q for c, q in prefills) + sum(decodes)


def synthetic_batch(point: Point, block_size: int, num_blocks: int) -> ExecBatch:
    """A step over sequences with consecutive, distinct blocks (wrapping if the pool is small)."""
    prefills, decodes = point
    batch, next_block = ExecBatch(), 0

    def table(tokens: int) -> list[int]:
        nonlocal next_block
        n = -(-tokens // block_size)
        blocks = [(next_block + i) % num_blocks for i in range(n)]
        next_block += n
        return blocks

    t = 0
    for i, (c, q) in enumerate(prefills):
        tab = table(c + q)
        batch.prefills.append(SeqSlice(i, 0, tab, c + q, q))
        batch.owners.append(np.full(q, i, dtype=np.int64))
        batch.positions.append(np.arange(c, c + q, dtype=np.int64))
        batch.slots.append(slots_of(tab, block_size, c, c + q))
        t += q
        batch.sample_tokens.append(t - 1)
    for j, ctx in enumerate(decodes):
        tab = table(ctx)
        batch.decodes.append(SeqSlice(1000 + j, 0, tab, ctx, 1))
        batch.owners.append(np.array([1000 + j], dtype=np.int64))
        batch.positions.append(np.array([ctx - 1], dtype=np.int64))
        batch.slots.append(slots_of(tab, block_size, ctx - 1, ctx))
        batch.sample_tokens.append(t + j)
    return batch


def step_batch(point: Point) -> StepBatch:
    """The analytic model's view of a grid point."""
    prefills, decodes = point
    return StepBatch(
        prefill_tokens=sum(q for _, q in prefills), prefill_seqs=len(prefills),
        prefill_attn_pairs=sum(q * (c + (q + 1) / 2) for c, q in prefills),
        prefill_kv_tokens=sum(c + q for c, q in prefills), decode_seqs=len(decodes),
        decode_context=sum(decodes), sampled_seqs=len(decodes) + len(prefills))


def time_point(runner, point: Point, num_blocks: int, repeats: int) -> float:
    """Median measured seconds of the step (after one untimed run)."""
    inputs = runner.inputs(synthetic_batch(point, runner.block_size, num_blocks))
    runner.run(inputs, [], [])
    return float(np.median([runner.run(inputs, [], []) for _ in range(repeats)]))


def warm_up(runner, num_blocks: int) -> None:
    """Compile the kernels' variants on the GPU before anything is timed (the interpreter needs none)."""
    if runner.device.type != "cuda":
        return
    for point in warm_grid(num_blocks, runner.block_size):
        runner.run(runner.inputs(synthetic_batch(point, runner.block_size, num_blocks)), [], [])
    runner.run(runner.inputs(synthetic_batch(((), (16,)), runner.block_size, num_blocks)), [(0, 1)], [])


def time_copies(runner, num_pairs: int, repeats: int) -> float:
    """Seconds of `num_pairs` copy-on-write block copies (all layers), alone."""
    import torch

    pairs = torch.tensor([(2 * i, 2 * i + 1) for i in range(num_pairs)], dtype=torch.int64, device=runner.device)
    times = []
    for _ in range(repeats + 1):
        runner.timer.begin()
        runner.cache.copy_blocks(pairs)
        times.append(runner.timer.end()[0])
    return float(np.median(times[1:]))


def time_swaps(runner, num_blocks: int, repeats: int) -> float:
    """Seconds to move `num_blocks` blocks (all layers) from the host pool to the GPU, one way."""
    times = [runner.swap_in_only([(i, i) for i in range(num_blocks)]) for _ in range(repeats + 1)]
    return float(np.median(times[1:]))


# ---- fit -------------------------------------------------------------------------------------------
def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with x >= 0: drop the most negative coefficient until none is left (few columns)."""
    active = list(range(a.shape[1]))
    x = np.zeros(a.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        if (sol >= 0).all():
            x[active] = sol
            return x
        active.pop(int(np.argmin(sol)))
    return x


def fit_profile(points: list[Point], measured: list[float], model: ModelSpec, gpu: GpuSpec, block_size: int,
                base: CostProfile, copy_s: tuple[int, float] | None = None,
                swap_s: tuple[int, float] | None = None, kv_cache_dtype: str = "auto") -> CostProfile:
    """Fit step overheads and the GEMM/attention efficiencies to measured step times (relative error);
    attention and copy bytes count K/V as stored (`kv_cache_dtype`)."""
    unit = AnalyticCostModel(model, gpu, base, block_size, kv_cache_dtype)
    terms = [unit.unit_terms(step_batch(p)) for p in points]
    t = np.asarray(measured, dtype=np.float64)
    col = lambda key: np.array([x[key] for x in terms])  # noqa: E731
    seqs, gc, gm, pc, dm = col("seqs"), col("gemm_compute"), col("gemm_memory"), col("prefill_compute"), col("decode_memory")
    # theta: step overhead, per-sequence overhead, 1/eff of GEMM compute, GEMM memory, prefill attention, decode attention
    theta = np.array([base.step_overhead_s, base.per_seq_overhead_s, 1 / base.gemm_compute_efficiency,
                      1 / base.gemm_memory_efficiency, 1 / base.attn_prefill_compute_efficiency,
                      1 / base.attn_decode_memory_efficiency])
    side = None
    for _ in range(30):
        compute = theta[2] * gc > theta[3] * gm
        if side is not None and (compute == side).all():
            break
        side = compute
        a = np.stack([np.ones_like(t), seqs, np.where(compute, gc, 0.0), np.where(compute, 0.0, gm), pc, dm], axis=1)
        theta = _nnls(a / t[:, None], np.ones_like(t))

    def eff(u: float, default: float) -> float:
        return float(min(1.0, 1.0 / u)) if u > 0 else default

    fitted = replace(
        base, step_overhead_s=float(theta[0]), per_seq_overhead_s=float(theta[1]),
        gemm_compute_efficiency=eff(theta[2], base.gemm_compute_efficiency),
        gemm_memory_efficiency=eff(theta[3], base.gemm_memory_efficiency),
        attn_prefill_compute_efficiency=eff(theta[4], base.attn_prefill_compute_efficiency),
        attn_decode_memory_efficiency=eff(theta[5], base.attn_decode_memory_efficiency))
    if copy_s is not None:
        n, seconds = copy_s
        copy_unit = unit.unit_terms(StepBatch(cow_copies=n))["copy"]
        fitted = replace(fitted, copy_memory_efficiency=min(1.0, copy_unit / seconds))
    if swap_s is not None:
        n, seconds = swap_s
        swap_unit = unit.unit_terms(StepBatch(swap_blocks=n))["swap"]
        fitted = replace(fitted, swap_host_efficiency=min(1.0, swap_unit / seconds))
    return fitted


def predict(points: list[Point], profile: CostProfile, model: ModelSpec, gpu: GpuSpec, block_size: int,
            kv_cache_dtype: str = "auto") -> np.ndarray:
    cost = AnalyticCostModel(model, gpu, profile, block_size, kv_cache_dtype)
    return np.array([cost.step_time(step_batch(p)) for p in points])


def rel_errors(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return np.abs(predicted - measured) / measured


def profile_dict(profile: CostProfile) -> dict:
    out = asdict(profile)
    for key, value in out.items():
        if isinstance(value, float) and math.isfinite(value):
            out[key] = float(f"{value:.6g}")
    return out
