"""Case 4: share of KV memory holding tokens, PagedAttention (Kwon et al., SOSP'23) Fig. 2.

Published: token states fill 96.3% of the KV memory vLLM holds, against 20.4% (Orca Max), 26.8% (Orca Pow2)
and 38.2% (Orca Oracle). Ours: `sim.paper.utilization_table` (time-weighted slots holding tokens over slots
held), OPT-13B on A100-40GB, ShareGPT-like lengths. Bands: vLLM within 3 points of 96.3% (the paper: "under 4%
waste"); each Orca variant inside the published Orca range 20.4-38.2%. Orca Pow2 has no policy here.
"""
from __future__ import annotations

from pathlib import Path

from analysis.validation.case import VLLM_V0, CheckResult

SOURCE = "Kwon et al., PagedAttention (SOSP'23), Fig. 2 (average KV memory usage, Sec. 6.2's runs)"
ORCA_BAND = (0.204, 0.382)
BANDS = {  # policy -> (published text, lo, hi, known miss reason)
    VLLM_V0: ("96.3%", 0.933, 0.993, ""),
    "orca-max": ("20.4% (Orca variants 20.4-38.2%)", *ORCA_BAND, ""),
    "orca-oracle": ("38.2% (Orca variants 20.4-38.2%)", *ORCA_BAND,
                    "our orca-oracle reserves prompt + true output in blocks of the shared paged pool, so it has "
                    "internal reservation waste only; the paper's Orca keeps one contiguous buffer per request in a "
                    "fragmented address space (external fragmentation, Fig. 2's 'external fragmentation and "
                    "others'). Fix: a contiguous-buffer KV layout for the Orca policies (sim/ change, not done)."),
}


def run(quick: bool, out_dir: Path) -> list[CheckResult]:
    from sim.paper import utilization_table

    requests = 1000  # the same in --quick: a check's value must not depend on the mode
    table = utilization_table(requests)
    table.to_csv(out_dir / "kv_utilization.csv", index=False, float_format="%.6g")
    checks = []
    for policy, (published, lo, hi, miss) in BANDS.items():
        row = table[table["policy"] == policy].iloc[0]
        checks.append(CheckResult(
            case="4", check=f"{policy} token share", source=SOURCE,
            setting=f"OPT-13B / A100-40GB, ShareGPT-like, {requests} requests at 5 req/s, {policy}",
            metric="KV slots holding tokens / slots held (time-weighted)", published=published,
            band_lo=lo, band_hi=hi, ours=float(row["slot_utilization"]), unit="fraction",
            expect_pass=not miss, reason=miss))
    return checks
