"""SGLang's admission arithmetic: the `new_token_ratio` estimate and the chunk-size default by GPU memory.

Sources are sglang 0.5.23 (PyPI wheel), paths under `python/sglang/srt/`; docs/sim.md ("sglang") lists each
rule with its line and test.
"""
from __future__ import annotations

from typing import Callable

# managers/scheduler_components/new_token_ratio_tracker.py:21-38, environ.py:646-649
INIT_NEW_TOKEN_RATIO = 0.7          # times schedule_conservativeness 1.0
MIN_NEW_TOKEN_RATIO_FACTOR = 0.14   # min = init * 0.14 = 0.098
NEW_TOKEN_RATIO_DECAY_STEPS = 600   # decay = (init - min) / 600 per decode step
RETRACT_DECODE_STEPS = 20           # environ.py:649: tokens a kept request is assumed to still need
CLIP_MAX_NEW_TOKENS = 4096          # mem_cache/prefill_budget.py:89-91
WAITING_QUEUE_PREFIX_MATCH_MAX = 128  # managers/schedule_policy.py:137: LPM falls back to FCFS above this
WAITING_PREFIX_REFRESH_INTERVAL = 32  # managers/schedule_policy.py:139: FCFS passes between prefix refreshes
MAX_PREFILL_TOKENS = 16384          # arg_groups/fields/schedule.py:71-81
BEAM_LEADER_MARGIN = 4              # beam_search/fork.py:48: the leader's max_new_tokens is the user's + 4
IGNORE_EOS_RESERVE_TOKENS = 1       # managers/schedule_policy.py:122


def default_chunked_prefill_size(gpu_memory_gib: float) -> int:
    """`chunked_prefill_size` SGLang picks from the GPU's memory (arg_groups/memory_hook.py:47-179):
    8192 on H100 80 GB and H200 141 GB."""
    for below_gib, size in ((20, 2048), (60, 4096), (160, 8192)):
        if gpu_memory_gib < below_gib:
            return size
    return 16384


class PrefillBudget:
    """SGLang's `PrefillBudget` of one prefill pass (mem_cache/prefill_budget.py:62-169): the free pool as it
    is now - evictable cached tokens included, so a prefix an admitted request locks stops counting at once
    (91-105) - less what the pass has charged: `remaining_total` the running requests' output reserves and
    each admitted extend with its output, `remaining_current` the extends alone. Nothing is allocated during
    the pass: the batch's KV is allocated after it (`alloc_for_extend`)."""

    def __init__(self, free_tokens: Callable[[], int], running_reserve: float) -> None:
        self.free_tokens = free_tokens
        self.total_offset = running_reserve    # schedule_policy.py:670-680
        self.current_offset = 0

    @property
    def remaining_total(self) -> float:
        return self.free_tokens() - self.total_offset

    @property
    def remaining_current(self) -> float:
        return self.free_tokens() - self.current_offset

    def available_chunk_tokens(self, chunk_limit: int) -> int:
        """The chunked request's next chunk at most (142-145): the chunk budget, cut to what remains in the
        total; the whole chunk budget where nothing remains ("continuation must make progress to release
        its KV")."""
        available = min(chunk_limit, int(self.remaining_total))
        return available if available > 0 else chunk_limit

    def reserve(self, paged_input: int, max_new_tokens: int) -> None:
        """Charge an admitted extend (156-168, `_update_prefill_budget`, schedule_policy.py:895-947): its
        page-ceiled tokens plus a page, and in the total its `max_new_tokens` (none for a chunk that is not
        its request's last)."""
        self.total_offset += paged_input + max_new_tokens
        self.current_offset += paged_input


class NewTokenRatio:
    """The share of a running request's remaining `max_new_tokens` that admission still reserves.

    SGLang lowers it by `decay` after every decode step that retracted nothing, raises it after a
    retraction, and resets it when the server goes idle. The value is kept lazily against the decode step
    counter (`value(g)`), so a fast-forwarded run of k decode steps decays it exactly as k single steps.
    """

    def __init__(self) -> None:
        self.init = min(INIT_NEW_TOKEN_RATIO, 1.0)
        self.min = self.init * MIN_NEW_TOKEN_RATIO_FACTOR
        self.decay = (self.init - self.min) / NEW_TOKEN_RATIO_DECAY_STEPS
        self._base, self._base_g = self.init, 0

    def value(self, g: int) -> float:
        """The ratio once decode steps up to `g` have run."""
        return max(self._base - self.decay * (g - self._base_g), self.min)

    def reset(self, g: int) -> None:
        """The engine is idle (managers/scheduler.py:5241, 5318)."""
        self._base, self._base_g = self.init, g

    def after_retraction(self, g_step: int, generated: int, max_new: int, kept: int) -> float:
        """Decode step `g_step` retracted requests; `generated`/`max_new` sum over the `kept` requests.
        That step does not decay (new_token_ratio_tracker.py:40-49, managers/scheduler.py:4513)."""
        self._base = min(1.0, (generated + RETRACT_DECODE_STEPS * kept) / (max_new + 1))
        self._base_g = g_step
        return self._base


class IgnoreEosStates:
    """`add_one_req_ignore_eos`'s check (managers/schedule_policy.py:1241-1306), the admission rule of an
    `ignore_eos` request while the radix cache is disabled: every admitted request's (tokens left,
    tokens occupied), ascending by tokens left, must fit the free pool as they finish one by one.

    Built from the first such candidate of a prefill pass, the running requests and those admitted so far
    in the pass; later candidates of the pass are inserted alone (1280-1290).
    """

    def __init__(self, rows: list[tuple[float, int]]) -> None:
        self.rows = sorted((r for r in rows if r[0] > 0), key=lambda r: r[0])  # 1268-1269, 1288

    def insert(self, row: tuple[float, int]) -> None:
        """SGLang's insertion (1273-1278), kept as written: a row larger than every other one lands before
        the last row, not after it."""
        if row[0] <= 0:
            return
        i = 0
        for i in range(len(self.rows)):
            if row[0] <= self.rows[i][0]:
                break
        self.rows.insert(i, row)

    def fits(self, cur_rem_tokens: float) -> bool:
        """Free tokens (less the candidate's paged input) cover every row's remaining tokens, each row's
        occupied tokens freed as it finishes, with one token of slack per row (1295-1304)."""
        freed = 0
        for i, (left, occupied) in enumerate(self.rows):
            rows_left = len(self.rows) - i
            if cur_rem_tokens + freed - left * rows_left <= IGNORE_EOS_RESERVE_TOKENS * rows_left:
                return False
            freed += occupied
        return True
