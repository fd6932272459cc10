"""The `execute` backend: each simulated step runs for real (Triton paged kernels, a random-weight
transformer of the model's shapes, a real paged KV cache whose block tables come from the simulator's
`BlockManager`), and its measured time advances the simulated clock. See docs/execute.md.

Modules: `recording` (block manager that logs copies, swaps, forks), `batch` (the step's exact picture),
`lineage` (token names -> deterministic K/V), `model`, `runner` (cache + timed step), `timing`,
`executor` (runs a step), `timer` (the backend's `StepTimer`), `verify` (shadow check), `calibrate`
(measured cost profiles), `fidelity`.
Nothing here is imported by the analytic path.
"""
