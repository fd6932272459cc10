"""`orca-max`: Orca reserving prompt + the maximum output (up to `max_model_len`, or prompt +
`max_output_tokens` when set) for every request: the paper's Orca (Max)."""
from __future__ import annotations

from sim.policies.orca import OrcaPolicy


class OrcaMaxPolicy(OrcaPolicy):
    name = "orca-max"
    reserve_true_output = False
    output_reservation = "max"
