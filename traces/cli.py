"""`pagedlab trace stats|gen|convert`. Bad input raises ValueError `path:line: field: reason`; the
dispatcher in sim/cli.py prints it on one line and exits 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from traces.catalog import ARRIVALS, FORMATS, LENGTH_DISTRIBUTIONS, PRESET_NAMES
from traces.options import add_arrival_options, add_transform_options, apply_transforms, load_trace, seed_arg

if TYPE_CHECKING:  # pandas stays out of `pagedlab` start-up
    from traces.trace import Trace


def _add_load_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="trace file (.gz is decompressed)")
    # Names are checked by load(), so a wrong one is a one-line error like any other bad input.
    p.add_argument("--format", default="auto", metavar="F",
                   help=f"auto (default: recognised from the header) or one of: {', '.join(FORMATS)}")
    p.add_argument("--model", help="BurstGPT: keep only this Model, e.g. ChatGPT or GPT-4")
    p.add_argument("--log-type", help="BurstGPT: keep only this Log Type, e.g. 'Conversation log'")
    add_arrival_options(p, seed=True)


def _check_out(out: Path, source: str | None = None, *, force: bool = False) -> None:
    """Refuse, before any work, an --out file that cannot be written, that is the trace being read, or that
    exists (another trace, or any file, would be lost) unless `force`."""
    import os

    if out.is_dir():
        raise OSError(f"{out}: out: is a directory; give a file name (.jsonl: native JSONL, else CSV)")
    parent = out.parent
    if not parent.is_dir():
        raise OSError(f"{parent}: out: no such directory, so {out} cannot be written")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OSError(f"{parent}: out: permission denied (not writable)")
    if source is not None and out.exists() and out.resolve() == Path(source).resolve():
        raise OSError(f"{out}: out: is the trace being read; give another path")
    if out.exists() and not force:
        raise OSError(f"{out}: out: exists; give a new path, or --force to replace it")
    # Permission bits do not say it (root may write anywhere, yet not make a file in /proc): make the
    # temporary file `_write` will make, and remove it.
    tmp = _tmp_path(out)
    try:
        tmp.open("wb").close()
    except OSError as exc:
        raise _out_error(out, exc) from None
    tmp.unlink()


def _tmp_path(out: Path) -> Path:
    """Where `_write` writes before renaming into place: beside `out`, hidden, unique to this process."""
    import os

    return out.with_name(f".{out.name}.{os.getpid()}.tmp")


def _out_error(out: Path, exc: OSError) -> OSError:
    """`out: cannot be written (reason)`, naming the user's path, not the temporary file's."""
    reason = exc.strerror or type(exc).__name__
    return OSError(f"{out}: out: cannot be written ({reason[0].lower()}{reason[1:]})")


def _written_as(out: Path) -> str:
    """What `_write` makes of a name: `x.parquet` is native CSV too, so the console says so."""
    compressed = out.suffix == ".gz"
    kind = Path(out.stem).suffix if compressed else out.suffix
    return ("native JSONL" if kind == ".jsonl" else "native CSV") + (", gzip" if compressed else "")


def _write(trace: "Trace", out: Path) -> None:
    """Native JSONL for a .jsonl path, native CSV otherwise, gzip-compressed when the name ends in .gz (as
    `load` reads it); written beside it and renamed into place, so an interrupted write leaves no
    half-written file (and an existing one as it was)."""
    import gzip
    import os
    import shutil

    compressed = out.suffix == ".gz"
    kind = Path(out.stem).suffix if compressed else out.suffix
    tmp = _tmp_path(out)
    plain = tmp.with_name(tmp.name + ".plain") if compressed else tmp
    try:
        if kind == ".jsonl":
            trace.to_jsonl(plain)
        else:
            trace.to_csv(plain)
        if compressed:  # no name or time in the gzip header: same trace, same bytes
            with open(plain, "rb") as src, open(tmp, "wb") as raw, \
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as dst:
                shutil.copyfileobj(src, dst)
        os.replace(tmp, out)
    except OSError as exc:  # e.g. the disk filled up: the user's path, not the temporary file, is named
        raise _out_error(out, exc) from None
    finally:
        tmp.unlink(missing_ok=True)
        plain.unlink(missing_ok=True)


def _report(trace: "Trace") -> str:
    from traces.stats import format_stats, summarize

    return format_stats(summarize(trace), source=trace.source, notices=trace.notices)


def run_stats(args: argparse.Namespace) -> int:
    from traces.loader import is_timed

    # lengths are worth summarising without arrival times: a length-only file's requests count at 0 s
    untimed = args.arrivals is None and not is_timed(args.path, args.format)
    for flag, value in (("window", args.window), ("rate-scale", args.rate_scale)):
        if untimed and value is not None:
            raise ValueError(f"{args.path}: {flag}: the trace has lengths only (no arrival times); give --arrivals")
    trace = load_trace(args.path, args, model=args.model, log_type=args.log_type, untimed_at_zero=untimed)
    print(_report(trace))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    _check_out(Path(args.out), args.path, force=args.force)
    trace = load_trace(args.path, args, model=args.model, log_type=args.log_type)
    _write(trace, Path(args.out))
    print(f"wrote {len(trace)} requests to {args.out} ({_written_as(Path(args.out))})")
    for notice in trace.notices:
        print(f"notice: {notice}")
    return 0


# `trace gen`'s flags whose names are not `generate`'s keyword with dashes.
GEN_FLAGS = {"num_prefix_groups": "--prefix-groups", "num_priorities": "--priorities"}


def gen_flag(name: str, value: object = None) -> str:
    """A `generate` option as `trace gen` spells it: `--arrival`, or `--arrival gamma` with a value."""
    flag = GEN_FLAGS.get(name, "--" + name.replace("_", "-"))
    return flag if value is None else f"{flag} {value}"


def _check_gen_options(args: argparse.Namespace) -> None:
    """Refuse an option that the others make `generate` ignore: it would change nothing, silently."""
    from traces.gen_rules import ignored_option

    options = {"arrival": args.arrival, "burstiness": args.burstiness, "lengths": args.lengths, "n": args.n,
               "parallel_fraction": args.parallel_fraction, "beam_fraction": args.beam_fraction,
               "num_prefix_groups": args.prefix_groups, "prefix_tokens": args.prefix_tokens,
               "prefix_fraction": args.prefix_fraction, "sigma": args.sigma, "range_ratio": args.range_ratio,
               "input_len": args.input_len, "output_len": args.output_len}
    ignored = ignored_option(options, gen_flag)
    if ignored is not None:
        name, why = ignored
        raise ValueError(f"trace gen: {gen_flag(name)}: would be ignored: {why}")


def run_gen(args: argparse.Namespace) -> int:
    from traces.generator import generate

    _check_gen_options(args)
    _check_out(Path(args.out), force=args.force)
    trace = generate(
        args.num_requests, rate=args.rate, arrival=args.arrival, burstiness=args.burstiness,
        lengths=args.lengths, seed=args.seed, parallel_fraction=args.parallel_fraction,
        beam_fraction=args.beam_fraction, n=args.n, num_prefix_groups=args.prefix_groups,
        prefix_tokens=args.prefix_tokens, prefix_fraction=args.prefix_fraction, input_len=args.input_len,
        output_len=args.output_len, range_ratio=args.range_ratio, sigma=args.sigma,
        max_prompt_tokens=args.max_prompt_tokens, max_output_tokens=args.max_output_tokens,
        num_priorities=args.priorities,
    )
    trace = apply_transforms(trace, args)
    _write(trace, Path(args.out))
    print(f"wrote {args.out} ({_written_as(Path(args.out))})")
    print(_report(trace))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    trace = subparsers.add_parser("trace", help="request traces: stats, generate, convert",
                                  description="Read, summarise, generate and convert request traces.")
    sub = trace.add_subparsers(dest="trace_command", metavar="{stats,gen,convert}", required=True)

    stats = sub.add_parser("stats", help="count, duration, rate and length percentiles of a trace")
    _add_load_options(stats)
    add_transform_options(stats)
    stats.set_defaults(func=run_stats)

    convert = sub.add_parser("convert", help="rewrite any supported trace as a native trace")
    _add_load_options(convert)
    add_transform_options(convert)
    convert.add_argument("--out", required=True, metavar="PATH", help="output (.jsonl: native JSONL, else CSV; .gz: "
                         "compressed); an existing file is refused unless --force")
    convert.add_argument("--force", action="store_true", help="replace an existing --out file")
    convert.set_defaults(func=run_convert)

    gen = sub.add_parser("gen", help="write a seeded synthetic native trace")
    gen.add_argument("--out", required=True, metavar="PATH", help="output (.jsonl: native JSONL, else CSV; .gz: "
                     "compressed); an existing file is refused unless --force")
    gen.add_argument("--force", action="store_true", help="replace an existing --out file")
    gen.add_argument("-n", "--num-requests", type=int, default=1000, help="requests (default 1000)")
    gen.add_argument("--rate", type=float, default=1.0, help="requests/s; inf sends all at 0 (default 1)")
    gen.add_argument("--arrival", default="poisson", help=f"one of: {', '.join(ARRIVALS)} (default poisson)")
    gen.add_argument("--burstiness", type=float, default=1.0, help="gamma shape; 1 is Poisson (default 1)")
    gen.add_argument("--lengths", default="sharegpt",
                     help=f"one of: {', '.join((*LENGTH_DISTRIBUTIONS, *PRESET_NAMES))} (default sharegpt)")
    gen.add_argument("--input-len", type=int, default=512, help="fixed/uniform/lognormal prompt length (mean)")
    gen.add_argument("--output-len", type=int, default=128, help="fixed/uniform/lognormal output length (mean)")
    gen.add_argument("--range-ratio", type=float, default=0.5, help="uniform: +- this fraction of the length")
    gen.add_argument("--sigma", type=float, default=1.0, help="lognormal: log-space standard deviation")
    gen.add_argument("--max-prompt-tokens", type=int, help="cap on sampled prompt lengths")
    gen.add_argument("--max-output-tokens", type=int, help="cap on sampled output lengths")
    gen.add_argument("--seed", type=seed_arg, default=0)
    gen.add_argument("--parallel-fraction", type=float, default=0.0, help="share of parallel-sampling requests")
    gen.add_argument("--beam-fraction", type=float, default=0.0, help="share of beam-search requests")
    gen.add_argument("--n", type=int, default=4, help="samples / beam width of those requests (default 4)")
    gen.add_argument("--prefix-groups", type=int, default=0, help="number of shared-prefix groups")
    gen.add_argument("--prefix-tokens", type=int, default=0, help="shared prefix length of each group")
    gen.add_argument("--prefix-fraction", type=float, default=1.0, help="share of requests in a group")
    gen.add_argument("--priorities", type=int, default=1, help="priorities drawn uniformly from [0, N)")
    add_transform_options(gen)
    gen.set_defaults(func=run_gen)


if __name__ == "__main__":  # pragma: no cover - `python -m traces.cli` mirrors `pagedlab trace`
    from sim.cli import main

    sys.exit(main(["trace", *sys.argv[1:]]))
