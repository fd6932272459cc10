"""`orca-pow2`: Orca reserving prompt + the true output length rounded up to a power of two (at most 2x
the output: a 25-token output reserves 32 slots): the paper's Orca (Pow2), Kwon et al., SOSP'23, Sec. 6.1."""
from __future__ import annotations

from sim.policies.orca import OrcaPolicy


class OrcaPow2Policy(OrcaPolicy):
    name = "orca-pow2"
    reserve_true_output = False
    output_reservation = "pow2"
    settings = frozenset({"max_num_batched_tokens", "max_output_tokens"})  # caps the rounded reservation
