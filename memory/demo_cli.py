"""`pagedlab demo-memory`: a short walk through the block manager.

A prompt is forked into parallel samples (blocks shared), each sample writes its first token (when the
prompt ends in a partial block, every sample but the last copies it on write; the last one then owns it
and writes in place), the family is swapped out and back in as a unit, and everything is freed. Block
tables and counters are printed at each step; the invariants are checked after every step.
"""
from __future__ import annotations

import argparse

from memory.block_manager import BlockManager


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo-memory",
        help="walk through fork, copy-on-write and swap in the KV block manager",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--block-size", type=int, default=4, help="tokens per KV block (default 4)")
    p.add_argument("--prompt-tokens", type=int, default=10, help="prompt length (default 10)")
    p.add_argument("--samples", type=int, default=3, help="parallel samples forked (default 3)")
    p.add_argument("--gpu-blocks", type=int, default=16, help="GPU pool size in blocks (default 16)")
    p.add_argument("--cpu-blocks", type=int, default=16, help="CPU pool size in blocks (default 16)")
    p.set_defaults(func=run)


def _show(bm: BlockManager, seqs: list[str], title: str) -> None:
    bm.check_invariants()
    print(f"\n== {title}")
    for seq in seqs:
        where = "cpu" if bm.is_swapped(seq) else "gpu"
        print(f"  {seq:<10} {bm.num_tokens(seq):>4} tokens  {where} blocks {bm.block_table(seq)}")
    print(
        f"  gpu free {bm.num_free_gpu_blocks}/{bm.num_gpu_blocks}  used {bm.num_used_gpu_blocks}  "
        f"shared {bm.num_shared_gpu_blocks}  unused slots {bm.num_allocated_unused_slots}  "
        f"cow copies {bm.num_cow_copies}  cpu free {bm.num_free_cpu_blocks}/{bm.num_cpu_blocks}  "
        f"swapped out/in {bm.num_swapped_out_blocks}/{bm.num_swapped_in_blocks} blocks"
    )


def run(args: argparse.Namespace) -> int:
    if args.samples < 1:
        raise ValueError(f"--samples: must be >= 1, got {args.samples}")
    if args.prompt_tokens < 1:
        raise ValueError(f"--prompt-tokens: must be >= 1, got {args.prompt_tokens}")
    bm = BlockManager(args.gpu_blocks, args.block_size, num_cpu_blocks=args.cpu_blocks)
    # The peak: the prompt, then each sample's first token needs a new block, except the one sample that
    # writes in place into the prompt's shared partial last block. Refuse early with a clear message.
    partial_last_block = args.prompt_tokens % args.block_size != 0
    need = bm.num_required_blocks(args.prompt_tokens) + args.samples - int(partial_last_block)
    if need > args.gpu_blocks or need > args.cpu_blocks:
        raise ValueError(
            f"--gpu-blocks/--cpu-blocks: the demo needs {need} blocks in each pool "
            f"({args.prompt_tokens} prompt tokens, block size {args.block_size}, {args.samples} samples)"
        )
    print(f"{bm!r}")

    seqs = ["prompt"]
    bm.allocate("prompt", args.prompt_tokens)
    _show(bm, seqs, f"allocate a {args.prompt_tokens}-token prompt")

    for i in range(1, args.samples):
        seqs.append(f"sample{i}")
        bm.fork("prompt", seqs[-1])
    _show(bm, seqs, f"fork into {args.samples} parallel samples: every block shared, none allocated")

    print("\n== each sample appends one token")
    for seq in reversed(seqs):
        copies = bm.append_slots(seq)
        what = f"copy-on-write {list(copies)} (src, dst)" if copies else "in place, no copy"
        slot = bm.slot_mapping(seq, bm.num_tokens(seq) - 1, bm.num_tokens(seq))
        print(f"  {seq:<10} slot {slot}  {what}")
    _show(bm, seqs, "after the first decode step")

    out = bm.swap_out(seqs)
    print(f"\n== swap out the whole family: gpu -> cpu {out}")
    _show(bm, seqs, "swapped out (shared blocks moved once, refcounts kept)")
    back = bm.swap_in(seqs)
    print(f"\n== swap in: cpu -> gpu {back}")
    _show(bm, seqs, "back on the GPU")

    for seq in seqs:
        bm.free(seq)
    bm.check_invariants()
    print(f"\n== free everything: gpu free {bm.num_free_gpu_blocks}/{bm.num_gpu_blocks}, "
          f"cpu free {bm.num_free_cpu_blocks}/{bm.num_cpu_blocks}")
    return 0
