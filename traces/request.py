"""One request of a trace: when it arrives, how long its prompt and output are, and how it samples."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

# `n` is the number of samples (parallel) or the beam width (beam); greedy decodes one sequence.
SAMPLING_MODES: tuple[str, ...] = ("greedy", "parallel", "beam")

# Limits of every value a trace may hold, however a file spells it. Larger token counts and later
# arrivals are unit or overflow mistakes (no model has a billion-token context); 2**53 is the largest
# integer a float holds exactly.
MAX_TOKENS = 10**9
MAX_INT = 2**53
MAX_ARRIVAL_S = 1e8  # about 3 years after the first request

# Mooncake traces hash the prompt in blocks of this many tokens: one hash id per (partial) block.
HASH_BLOCK_TOKENS = 512


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the simulator sees it. `arrival_s` counts seconds from the trace's first request.

    Requests of one `prefix_group` share their first `prefix_tokens` prompt tokens (e.g. a system
    prompt). `hash_ids` (Mooncake traces) name the prompt's 512-token blocks; equal ids mean equal
    content, which is what prefix caching can reuse.
    """

    request_id: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    n: int = 1
    sampling: str = "greedy"
    priority: int = 0
    prefix_group: str | None = None
    prefix_tokens: int = 0
    hash_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        problem = request_problem(self)
        if problem is not None:
            field, reason = problem
            raise ValueError(f"request {self.request_id!r}: {field}: {reason}")

    @property
    def total_tokens(self) -> int:
        """Prompt plus output: the context one sequence of this request reaches at its end."""
        return self.prompt_tokens + self.output_tokens


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Request))
# The columns a trace file must have: a missing request_id is the row number, the rest have defaults.
REQUIRED_COLUMNS: tuple[str, ...] = ("arrival_s", "prompt_tokens", "output_tokens")
DEFAULTS: dict[str, object] = {f.name: f.default for f in fields(Request)[4:]}


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True tokens is a bug, not a count.
    return isinstance(value, int) and not isinstance(value, bool)


def request_problem(r: Request) -> tuple[str, str] | None:
    """The first rule `r` breaks as (field, reason), or None. Kept scalar and explicit: the vectorized
    loaders in `traces.validate` enforce the same rules column-wise."""
    if not isinstance(r.request_id, str) or not r.request_id:
        return "request_id", f"must be a non-empty string, got {r.request_id!r}"
    if isinstance(r.arrival_s, bool) or not isinstance(r.arrival_s, (int, float)):
        return "arrival_s", f"must be a number, got {r.arrival_s!r}"
    if not math.isfinite(r.arrival_s) or not 0 <= r.arrival_s <= MAX_ARRIVAL_S:
        return "arrival_s", f"must be finite and in [0, {MAX_ARRIVAL_S:.0e}] s, got {r.arrival_s!r}"
    for name, limit in (("prompt_tokens", MAX_TOKENS), ("output_tokens", MAX_TOKENS), ("n", MAX_INT)):
        value = getattr(r, name)
        if not _is_int(value) or not 1 <= value <= limit:
            return name, f"must be an integer in [1, {limit}], got {value!r}"
    if r.sampling not in SAMPLING_MODES:
        return "sampling", f"unknown mode {r.sampling!r} (expected one of {', '.join(SAMPLING_MODES)})"
    if r.sampling == "greedy" and r.n != 1:
        return "n", f"greedy sampling decodes one sequence, got n={r.n}"
    if not _is_int(r.priority) or abs(r.priority) > MAX_INT:
        return "priority", f"must be an integer in [-2**53, 2**53], got {r.priority!r}"
    if r.prefix_group is not None and (not isinstance(r.prefix_group, str) or not r.prefix_group):
        return "prefix_group", f"must be a non-empty string or None, got {r.prefix_group!r}"
    if not _is_int(r.prefix_tokens) or not 0 <= r.prefix_tokens <= r.prompt_tokens:
        return "prefix_tokens", f"must be in [0, prompt_tokens={r.prompt_tokens}], got {r.prefix_tokens!r}"
    if r.prefix_tokens > 0 and r.prefix_group is None:
        return "prefix_tokens", "a shared prefix needs a prefix_group"
    if r.hash_ids is not None:
        if not isinstance(r.hash_ids, tuple) or not r.hash_ids or not all(_is_int(h) and h >= 0 for h in r.hash_ids):
            return "hash_ids", "must be a non-empty tuple of non-negative integers, or None"
    return None


_SETTERS = tuple(getattr(Request, name).__set__ for name in FIELDS)


def requests_from_columns(columns: list[list]) -> list[Request]:
    """Requests from per-field value lists (in `FIELDS` order) that were already validated
    column-wise (`traces.validate`): skips the per-object checks, which would double the time to
    build a million requests. Still a frozen `Request`; the slot setters are what its own
    `__init__` uses."""
    new = object.__new__
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9 = _SETTERS

    def build(a, b, c, d, e, f, g, h, i, j):  # type: ignore[no-untyped-def]
        r = new(Request)
        s0(r, a), s1(r, b), s2(r, c), s3(r, d), s4(r, e), s5(r, f), s6(r, g), s7(r, h), s8(r, i), s9(r, j)
        return r

    built = list(map(build, *columns))
    for r in built[:1] + built[-1:]:  # spot check that the columns really were validated
        assert request_problem(r) is None, request_problem(r)
    return built
