"""SGLang's PrefillAdder pass (managers/schedule_policy.py, `PrefillAdder`; managers/scheduler.py:4079-4357): which
prefill chunks a step runs - the chunked request's next chunk, then waiting requests while the chunk, input and
memory budgets allow. It chooses only; `sim.policies.sglang` allocates the chosen chunks after it, as SGLang's
`prepare_for_extend` does."""
from __future__ import annotations

from typing import Callable

from memory import AllocStatus

from sim.policies.base import SchedulerView
from sim.policies.sglang_budget import IgnoreEosStates, PrefillBudget, default_chunked_prefill_size
from sim.policies.sglang_charges import ignore_eos_row, ignore_eos_rows, new_tokens, paged_input, running_reserve
from sim.state import Group


def select_prefills(sched: SchedulerView, ratio: float,
                order_waiting: Callable[[SchedulerView], None]) -> tuple[list[tuple[Group, int]], bool]:
    """SGLang's PrefillAdder pass (managers/scheduler.py:4079-4357): the chunked request's next chunk, then
    waiting requests while the chunk, input and memory budgets allow, at the estimate's `ratio`
    (`new_token_ratio`); `order_waiting` orders the queue first (FCFS or LPM, with its prefix matches).
    Allocates nothing. Returns the chosen chunks and whether the estimate stopped the pass."""
    cfg, bs = sched.config, sched.config.block_size
    rem_chunk = cfg.chunked_prefill_size or default_chunked_prefill_size(cfg.gpu_spec.memory_gib)
    rem_input = cfg.max_prefill_tokens
    budget = PrefillBudget(lambda: sched.num_free_blocks() * bs, running_reserve(sched.running, sched.G, ratio))
    prefills: list[tuple[Group, int]] = []
    assert len(sched.prefilling) <= 1, "SGLang chunks one request at a time"
    for group in sched.prefilling:  # the chunked request goes first (scheduler.py:4176-4184)
        chunk = next_chunk(group, budget, rem_chunk, bs)
        prefills.append((group, chunk))
        rem_chunk -= chunk
        rem_input -= chunk
    if not sched.waiting:
        return prefills, False
    if not sched.prefilling and sched.num_running_seqs >= cfg.max_num_seqs:
        return prefills, False  # no request slot: SGLang returns before ordering the queue (scheduler.py:4117-4126)
    order_waiting(sched)
    ignore_eos_states: IgnoreEosStates | None = None
    seqs, waiting = sched.num_running_seqs, sched.waiting
    while waiting and rem_chunk > 0 and rem_input > 0:
        group = waiting[0]
        if seqs + group.n > cfg.max_num_seqs:
            break
        need = sched.prefill_need(group)
        # `max_prefill_tokens` stops the pass only through rem_input above: its per-request cap applies
        # without chunked prefill alone (schedule_policy.py:1627-1633), and SGLang's pool always chunks here.
        charged = paged_input(need, bs)
        # A beam leader runs with ignore_eos; without the radix cache it takes the other rule
        # (schedule_policy.py:1401-1402; the cache's `disable` flag, mem_cache/kv_cache_builder.py:365-390).
        if group.is_beam and not cfg.enable_prefix_caching:
            if charged > min(budget.remaining_current, budget.remaining_total):  # prefill_budget.py:132-140
                return prefills, True
            row = ignore_eos_row(group, group.generated)
            if ignore_eos_states is None:
                rows = ignore_eos_rows(sched.running, prefills, sched.G, ratio)
                ignore_eos_states = IgnoreEosStates([row] + rows)
            else:
                ignore_eos_states.insert(row)
            if not ignore_eos_states.fits(budget.remaining_current - charged):
                return prefills, True
        else:
            # Page-ceiled extend + one page + max_new must stay below the estimate (prefill_budget.py:114-131),
            # its cached prefix pinned meanwhile: a lock takes the path's evictable tokens out of the free ones
            # (`_lock_node`, schedule_policy.py:1225-1238, 1429-1431; mem_cache/unified_cache/components/
            # full.py:315-327; prefill_budget.py:91-105).
            if charged + new_tokens(group) >= budget.remaining_total - sched.evictable_prefix_tokens(group):
                # Tried, it was matched against the tree first (`init_next_round_input`,
                # managers/scheduler.py:4260; schedule_batch.py:1730-1738): its prefix is refreshed.
                sched.touch_prefix(group)
                return prefills, True
        status = sched.admission_status(group)
        if status is AllocStatus.NEVER:
            sched.reject_head("its KV blocks can never fit the pool")
            continue
        if status is AllocStatus.LATER:
            sched.touch_prefix(group)
            break
        sched.admit(group)  # locks its cached prefix (the budget sees it at once), allocates nothing else
        chunk = min(group.prefill_len - group.prefill_done, rem_chunk)
        prefills.append((group, chunk))
        rem_chunk -= chunk
        rem_input -= chunk
        chunked = chunk < group.prefill_len - group.prefill_done
        if chunked:
            # A first chunk reserves no output (schedule_policy.py:1369-1381 under ignore_eos, 1674-1675).
            budget.reserve(paged_input(chunk, bs), 0)
        else:
            budget.reserve(charged, new_tokens(group))
        seqs += group.n
        if chunked:
            break  # it is now the chunked request
    return prefills, False

def next_chunk(group: Group, budget: PrefillBudget, rem_chunk: int, bs: int) -> int:
    """The chunked request's next chunk and its charge (`add_chunked_req`, schedule_policy.py:1140-1222): the
    chunk budget, cut to what the estimate has left; the page-ceiled chunk plus a page, and its output
    reserve only with its last chunk. It is outside the running batch (scheduler.py:3911-3914), so nothing
    else is charged for it; its later chunks are not allocated yet."""
    rest = group.prefill_len - group.prefill_done
    chunk = min(rest, budget.available_chunk_tokens(rem_chunk))
    budget.reserve(paged_input(chunk, bs), new_tokens(group) if chunk == rest else 0)
    return chunk
