"""Block-manager throughput: `python -m memory.bench [--quick] [--repeats N] [--cpu K]`.

Prints a Markdown table of operations per second for allocate, single-token append (the decode hot
path), multi-token append, copy-on-write append, fork, free and swap out/in, each at several sequence
lengths in blocks, so that the cost per block is visible: operations scale with the blocks they touch,
and append does not depend on the pool size. Runs on one core (pinned when the OS allows), with the
garbage collector off while timing (as `timeit` does); each figure is the best of `--repeats` runs.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from typing import Callable

from memory.block_manager import BlockManager

BLOCK_SIZE = 16
Body = Callable[[], int]  # runs the timed operations, returns how many it did


def _best(make: Callable[[], Body], repeats: int) -> float:
    """Best operations per second over `repeats` fresh setups (setup is not timed)."""
    best = 0.0
    for _ in range(repeats):
        body = make()
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            ops = body()
            elapsed = time.perf_counter() - start
        finally:
            gc.enable()
        best = max(best, ops / elapsed)
    return best


def _pool(num_blocks: int) -> BlockManager:
    return BlockManager(num_blocks, BLOCK_SIZE, num_cpu_blocks=num_blocks)


def bench_allocate(n: int, blocks: int) -> Callable[[], Body]:
    def make() -> Body:
        bm = _pool(n * blocks)

        def body() -> int:
            for i in range(n):
                bm.allocate(i, blocks * BLOCK_SIZE)
            return n
        return body
    return make


def bench_free(n: int, blocks: int, shared: bool) -> Callable[[], Body]:
    def make() -> Body:
        bm = _pool(n * blocks if not shared else blocks)
        if shared:  # free forks of one parent: only references drop, no block is released
            bm.allocate("parent", blocks * BLOCK_SIZE)
            for i in range(n):
                bm.fork("parent", i)
        else:
            for i in range(n):
                bm.allocate(i, blocks * BLOCK_SIZE)

        def body() -> int:
            for i in range(n):
                bm.free(i)
            return n
        return body
    return make


def bench_fork(n: int, blocks: int) -> Callable[[], Body]:
    def make() -> Body:
        bm = _pool(blocks)
        bm.allocate("parent", blocks * BLOCK_SIZE - 1)

        def body() -> int:
            for i in range(n):
                bm.fork("parent", i)
            return n
        return body
    return make


def decode_steps(bm: BlockManager, num_seqs: int, steps: int) -> Body:
    """The timed decode loop: `steps` single-token appends to each of sequences 0..num_seqs-1."""
    append, ids = bm.append_slots, list(range(num_seqs))

    def body() -> int:
        for _ in range(steps):
            for i in ids:
                append(i)
        return steps * num_seqs
    return body


def bench_append(num_seqs: int, steps: int, pool_blocks: int, in_place_only: bool) -> Callable[[], Body]:
    """Decode steps over a batch: every sequence gets one token per step, round robin."""
    def make() -> Body:
        bm = _pool(pool_blocks)
        # In-place only: start each sequence at 1 token and stay inside its first block.
        prompt = 1 if in_place_only else 100
        for i in range(num_seqs):
            bm.allocate(i, prompt)
        return decode_steps(bm, num_seqs, steps)
    return make


def bench_append_many(n: int, num_tokens: int) -> Callable[[], Body]:
    def make() -> Body:
        blocks = -(-num_tokens // BLOCK_SIZE)
        bm = _pool(n * (blocks + 1))
        for i in range(n):
            bm.allocate(i, BLOCK_SIZE)  # full last block: the append starts a fresh block

        def body() -> int:
            for i in range(n):
                bm.append_slots(i, num_tokens)
            return n
        return body
    return make


def bench_cow_append(n: int) -> Callable[[], Body]:
    def make() -> Body:
        bm = _pool(n + 1)
        bm.allocate("parent", BLOCK_SIZE // 2)  # a partial last block, shared by every fork
        for i in range(n):
            bm.fork("parent", i)

        def body() -> int:
            for i in range(n):
                bm.append_slots(i)
            return n
        return body
    return make


def bench_swap(n: int, blocks: int, family: int) -> Callable[[], Body]:
    """Round trips (swap out + swap in) of `n` families of `family` forked sequences each."""
    def make() -> Body:
        bm = _pool(n * (blocks + family))
        groups = []
        for g in range(n):
            bm.allocate((g, 0), blocks * BLOCK_SIZE - 1)
            for k in range(1, family):
                bm.fork((g, 0), (g, k))
                bm.append_slots((g, k))  # copy-on-write: each sample owns its last block
            groups.append([(g, k) for k in range(family)])

        def body() -> int:
            for seqs in groups:
                bm.swap_out(seqs)
                bm.swap_in(seqs)
            return 2 * n
        return body
    return make


def _cases(quick: bool) -> list[tuple[str, str, float, Callable[[], Body]]]:
    """(operation, parameters, block-table entries touched per op, setup) rows."""
    k = 10 if quick else 1
    rows: list[tuple[str, str, float, Callable[[], Body]]] = [
        ("append 1 token (in place)", "16k seqs, pool 20k blocks", 0,
         bench_append(16_384 // k, 15, 20_000, True)),
        ("append 1 token (in place)", "16k seqs, pool 2M blocks", 0,
         bench_append(16_384 // k, 15, 2_000_000, True)),
        ("append 1 token (decode mix)", "256 seqs x 2000 steps, a new block every 16 tokens", 0,
         bench_append(256, 2000 // k, 100_000, False)),
        ("append 1 token (copy-on-write)", "shared partial block", 1, bench_cow_append(20_000 // k)),
    ]
    for tokens in (16, 256, 1024):
        rows.append((f"append {tokens} tokens", f"{tokens // BLOCK_SIZE} new blocks",
                     tokens // BLOCK_SIZE, bench_append_many(10_000 // k // (tokens // 16), tokens)))
    for blocks in (1, 16, 256):
        n = max(50, 50_000 // k // blocks)
        rows += [
            ("allocate", f"{blocks} blocks", blocks, bench_allocate(n, blocks)),
            ("fork", f"{blocks} blocks", blocks, bench_fork(n, blocks)),
            ("free (unshared)", f"{blocks} blocks", blocks, bench_free(n, blocks, shared=False)),
            ("free (a fork)", f"{blocks} blocks", blocks, bench_free(n, blocks, shared=True)),
            ("swap out or in", f"1 seq, {blocks} blocks", blocks, bench_swap(max(10, n // 4), blocks, 1)),
            ("swap out or in", f"4 forks x {blocks} blocks ({blocks + 3} distinct)", 4 * blocks,
             bench_swap(max(10, n // 8), blocks, 4)),
        ]
    return rows


def _pin_one_core(cpu: int) -> str:
    if cpu < 0:
        return "not pinned"
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
            return f"pinned to CPU {cpu}"
        except OSError as exc:
            return f"not pinned ({exc.strerror})"
    return "not pinned (no sched_setaffinity)"


def run_cli(
    name: str,
    doc: str | None,
    cases: Callable[[bool], list[tuple[str, str, float, Callable[[], Body]]]],
    argv: list[str] | None = None,
) -> int:
    """The command line shared by `memory.bench` and `memory.bench_prefix`: parse the options, pin a
    core and print the Markdown table of `cases(quick)` rows."""
    parser = argparse.ArgumentParser(prog=f"python -m {name}", description=doc)
    parser.add_argument("--quick", action="store_true", help="10x fewer operations (smoke run)")
    parser.add_argument("--repeats", type=int, default=5, help="best of N runs (default 5)")
    parser.add_argument("--cpu", type=int, default=0, help="core to pin to (default 0; -1: don't pin)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    pinned = _pin_one_core(args.cpu)
    print(f"# {name}: Python {platform.python_version()} on {platform.machine()}, {pinned}, "
          f"block_size {BLOCK_SIZE}, best of {args.repeats}\n")
    print("| operation | case | ops/s | µs/op | µs/block |")
    print("|---|---|---:|---:|---:|")
    for op, case, blocks, make in cases(args.quick):
        rate = _best(make, args.repeats)
        us = 1e6 / rate
        per_block = f"{us / blocks:.3f}" if blocks else "–"
        print(f"| {op} | {case} | {rate:,.0f} | {us:.3f} | {per_block} |", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli("memory.bench", __doc__, _cases, argv)


if __name__ == "__main__":
    sys.exit(main())
