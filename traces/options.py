"""Command-line options shared by every command that reads a trace (`trace stats|convert|gen`,
`replay`, `compare`): which part of it to keep, how fast to play it, how long a context may be, and
arrival times for a trace that has only lengths. No pandas here: `pagedlab` imports it at start-up."""
from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from traces.arrivals import ArrivalSpec
    from traces.trace import Trace

OVER_CONTEXT = ("clip", "drop")


def _window(text: str) -> tuple[float, float]:
    start, sep, end = text.partition(":")
    try:
        if not sep:
            raise ValueError
        window = float(start or 0.0), float(end) if end else math.inf
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END in seconds (either may be empty), got {text!r}")
    if not (0 <= window[0] < window[1]) or math.isnan(window[1]):
        raise argparse.ArgumentTypeError(f"need 0 <= START < END, got {text!r}")
    return window


def _positive_int(minimum: int) -> "Callable[[str], int]":
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def seed_arg(text: str) -> int:
    """`--seed`: an integer >= 0 (numpy's generators take no negative seeds)."""
    return _positive_int(0)(text)


def _rate_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _arrivals(text: str) -> "ArrivalSpec":
    from traces.arrivals import ArrivalSpec, ArrivalSpecError

    try:
        return ArrivalSpec.parse(text)
    except ArrivalSpecError as exc:  # argparse names the option itself
        raise argparse.ArgumentTypeError(exc.reason) from None


def add_transform_options(p: argparse.ArgumentParser, *, head: bool = True) -> None:
    g = p.add_argument_group("trace transformations (applied in this order)")
    g.add_argument("--window", type=_window, metavar="A:B", help="keep arrivals in [A, B) seconds, re-based to 0")
    if head:
        g.add_argument("--head", type=_positive_int(1), metavar="N", help="keep the first N requests")
    g.add_argument("--rate-scale", type=_rate_scale, metavar="X", help="multiply the arrival rate by X (2 doubles it)")
    g.add_argument("--max-context", type=_positive_int(2), metavar="L",
                   help="fit every request into an L-token context (prompt + output); see --over-context")
    g.add_argument("--over-context", choices=OVER_CONTEXT, default="clip",
                   help="with --max-context: clip a longer request (its output stops at L tokens, a longer prompt "
                        "keeps its first L-1) or drop it (counted in the trace's notices); default clip")


def add_arrival_options(p: argparse.ArgumentParser, *, seed: bool) -> None:
    p.add_argument("--arrivals", type=_arrivals, metavar="KIND:RATE[:CV]",
                   help="arrival times for a length-only trace (e.g. Vidur's arxiv-summarization lengths): "
                        "poisson:RATE, gamma:RATE:CV or constant:RATE (req/s; CV of the gaps), seeded by --seed; "
                        "they replace a trace's own arrival times")
    if seed:
        p.add_argument("--seed", type=seed_arg, default=0, metavar="S", help="seed of the drawn arrivals (default 0)")


def apply_transforms(trace: "Trace", args: argparse.Namespace) -> "Trace":
    """The options of `add_transform_options`, in their order: window, head, rate scale, max context."""
    if args.window is not None:
        start, end = args.window
        arrivals = trace.column("arrival_s")
        trace = trace.window(start, end)
        if not len(trace) and len(arrivals):
            # replaying or describing nothing is never what was meant
            raise ValueError(f"{trace.source}: window: no request arrives in [{start:g}, {end:g}) s; the trace's "
                             f"arrivals span 0 to {float(arrivals[-1]):.6g} s")
    if getattr(args, "head", None) is not None:
        trace = trace.head(args.head)
    if args.rate_scale is not None:
        trace = trace.scale_rate(args.rate_scale)
    if args.max_context is not None:
        trace = trace.drop_longer(args.max_context) if args.over_context == "drop" else trace.clip(args.max_context)
    elif args.over_context != "clip":
        raise ValueError("over-context: needs --max-context")
    return trace


def transform_words(args: argparse.Namespace) -> list[str]:
    """The options of `add_transform_options` and `add_arrival_options` as given, to rerun a command."""
    words: list[str] = []
    if getattr(args, "arrivals", None) is not None:
        a = args.arrivals
        words += ["--arrivals", f"{a.kind}:{a.rate:g}" + (f":{a.cv:g}" if a.kind == "gamma" else "")]
    if args.window is not None:
        start, end = args.window
        words += ["--window", f"{start:g}:" + ("" if math.isinf(end) else f"{end:g}")]
    if getattr(args, "head", None) is not None:
        words += ["--head", str(args.head)]
    if args.rate_scale is not None:
        words += ["--rate-scale", f"{args.rate_scale:g}"]
    if args.max_context is not None:
        words += ["--max-context", str(args.max_context), "--over-context", args.over_context]
    return words


def load_trace(path: str, args: argparse.Namespace, **load_options: str | bool | None) -> "Trace":
    """`traces.load` with the command's format, arrivals and seed (and `load_options`: BurstGPT filters,
    `untimed_at_zero`), then its transformations."""
    from traces.loader import load

    trace = load(path, args.format, arrivals=getattr(args, "arrivals", None), seed=getattr(args, "seed", 0),
                 **load_options)
    return apply_transforms(trace, args)
