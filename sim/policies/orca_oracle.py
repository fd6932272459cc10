"""`orca-oracle`: Orca reserving exactly prompt + true output, as if output lengths were known in advance:
the paper's Orca (Oracle), an upper bound for any reservation scheme."""
from __future__ import annotations

from sim.policies.orca import OrcaPolicy


class OrcaOraclePolicy(OrcaPolicy):
    name = "orca-oracle"
    reserve_true_output = True
    output_reservation = "oracle"
    settings = frozenset({"max_num_batched_tokens"})  # the true output, not max_output_tokens
