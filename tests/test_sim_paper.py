"""The PagedAttention paper's memory result, reproduced in spirit at test scale (sim.paper has the full run)."""
from __future__ import annotations

from sim.paper import sharing_table, utilization_table


def test_paged_memory_holds_tokens_where_reservations_hold_air() -> None:
    table = utilization_table(num_requests=300, seed=0).set_index("policy")["slot_utilization"]
    assert table["vllm-v0"] > 0.9
    assert table["orca-max"] < 0.4 and table["static"] < 0.4
    assert table["orca-max"] < table["orca-oracle"] < table["vllm-v0"]


def test_beam_search_of_width_4_shares_at_least_30_percent() -> None:
    table = sharing_table(num_requests=40, seed=0).set_index(["lengths", "sampling"])["sharing_saved_fraction"]
    assert table["sharegpt", "beam"] >= 0.3 and table["alpaca", "beam"] >= 0.3
    assert 0 < table["sharegpt", "parallel"] < table["sharegpt", "beam"]
    assert 0 < table["alpaca", "parallel"] < table["alpaca", "beam"]
