"""`--sweep`: time the one-pass decode kernel over tile size, warps, pipeline stages and split counts.

This is how `decode._launch_config` and `choose_num_splits` were picked; it patches the launch config for
the duration of each measurement only. Results go to decode_sweep.csv.
"""
from __future__ import annotations

import csv
import itertools
from pathlib import Path

TILE_CONFIGS = [(bn, w, s) for bn, w, s in itertools.product((64, 128), (4, 8), (2, 3, 4))] + [(32, 4, 3)]
SPLIT_TILES = (None, (128, 4, 3))  # split counts are swept with the default tiles and with 128-token tiles
SPLITS = (1, 2, 4, 8, 16, 32, 64)


def sweep_decode(out: Path, copy_gbs: float, gen) -> None:
    import torch

    from kernels import decode
    from kernels.bench import DECODE_GRID, HEAD_DIM, _time_us, make_decode_case

    default_config = decode._launch_config
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for num_seqs, context, kv_heads in DECODE_GRID:
        case = make_decode_case(num_seqs, context, kv_heads, gen)
        args = (case.q, case.k_cache, case.v_cache, case.block_tables, case.seq_lens)
        nbytes = 2 * num_seqs * context * kv_heads * HEAD_DIM * 2 + 2 * case.q.numel() * 2
        auto = decode.choose_num_splits(num_seqs, kv_heads, context, sms)
        # tile configs on the GQA shapes only (each group size is its own compile); splits everywhere
        tiles = TILE_CONFIGS if kv_heads == 8 else []
        variants = [(cfg, auto) for cfg in tiles] + [(cfg, s) for cfg in SPLIT_TILES for s in SPLITS
                                                     if s * 64 <= context]
        best = None
        for cfg, splits in variants:
            decode._launch_config = (lambda hd, gpu, es=2, cfg=cfg: cfg) if cfg else default_config
            try:
                us = _time_us(lambda: decode.paged_decode(*args, num_splits=splits))
            except Exception as exc:  # noqa: BLE001 - e.g. out of shared memory: record and go on
                print(f"sweep {num_seqs}x{context} kv{kv_heads} {cfg} s{splits}: {type(exc).__name__}", flush=True)
                continue
            finally:
                decode._launch_config = default_config
            pct = 100 * nbytes / us / 1e3 / copy_gbs
            rows.append(dict(num_seqs=num_seqs, context=context, kv_heads=kv_heads,
                             config="default" if cfg is None else "x".join(map(str, cfg)), splits=splits,
                             auto_splits=auto, us=round(us, 2), pct_copy=round(pct, 1)))
            if best is None or us < best[0]:
                best = (us, cfg, splits, pct)
        print(f"sweep {num_seqs}x{context} kv{kv_heads}: best {best[1]} splits {best[2]} {best[0]:.1f} us "
              f"{best[3]:.1f}% copy (auto splits {auto})", flush=True)
        del case
        torch.cuda.empty_cache()
    with open(out / "decode_sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


PREFILL_CONFIGS = [(128, 64, 8, 3), (128, 64, 4, 3), (128, 64, 8, 2), (128, 64, 8, 4), (128, 128, 8, 3),
                   (128, 32, 8, 3), (64, 64, 4, 3), (64, 128, 4, 3), (64, 32, 4, 2)]


def sweep_prefill(out: Path, gen) -> None:
    import torch

    from kernels import prefill
    from kernels.bench import HEAD_DIM, NUM_Q_HEADS, PREFILL_GRID, _time_us, make_decode_case

    default_config = prefill._launch_config
    rows = []
    for num_seqs, chunk, context in PREFILL_GRID:
        case = make_decode_case(num_seqs, context, 8, gen)
        q = torch.randn((num_seqs * chunk, NUM_Q_HEADS, HEAD_DIM), generator=gen, device="cuda", dtype=torch.bfloat16)
        qsl = torch.arange(0, num_seqs + 1, device="cuda", dtype=torch.int32) * chunk
        flops = 4 * HEAD_DIM * NUM_Q_HEADS * num_seqs * sum(context - chunk + i + 1 for i in range(chunk))
        for cfg in PREFILL_CONFIGS:
            prefill._launch_config = lambda hd, gpu, es=2, cfg=cfg: cfg
            try:
                us = _time_us(lambda: prefill.paged_prefill(q, case.k_cache, case.v_cache, case.block_tables,
                                                            case.seq_lens, qsl, max_query_len=chunk))
            except Exception as exc:  # noqa: BLE001
                print(f"prefill sweep {cfg}: {type(exc).__name__}", flush=True)
                continue
            finally:
                prefill._launch_config = default_config
            rows.append(dict(num_seqs=num_seqs, chunk=chunk, context=context, config="x".join(map(str, cfg)),
                             us=round(us, 2), tflops=round(flops / us / 1e6, 1)))
            print(f"prefill sweep {num_seqs}x{chunk}/{context} {cfg}: {us:.1f} us {flops / us / 1e6:.1f} TFLOP/s",
                  flush=True)
        del case
    with open(out / "prefill_sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
