"""Replays keep byte-identical outputs: SHA-256 of requests.csv, steps.csv and itl.npy for every policy.

The digests were taken before the scheduler, KV layout and step timer were separated into their own
modules; a change that alters any table of these runs (a policy rule, the cost model, the writer) must
say so by updating them. The Orca runs changed once since: orca-max and orca-oracle moved to contiguous
buddy-allocated buffers (`sim.kv_contiguous`), which changes who is admitted when and the blocks held. Every
run changed once more when host (CPU) time and CUDA-graph padding entered the cost model (`sim.host_time`), which
changes every step's duration. The sharing runs with prefix caching changed once more: every computed full
block, output included, is cached when released (vLLM's block managers hashed a block when it became full,
decode blocks too), so a recomputed request finds its own output and finished requests' blocks join the
evictor's queue (taken with host time; the other runs, prefix caching off or no request
recomputed, kept theirs). Runs: the whole Azure LLM inference code trace (data/) under every policy; a
small KV pool on it (preemption, swap); its first 1,500 requests with prefix caching; and a generated
trace with parallel sampling, beam search and shared prefixes (tests/data/sim_sharing_trace.csv: forks,
copy-on-write, beam re-selection, preemption, swap and prefix hits) under every policy. `sharing-vllm` (vLLM
V1: parallel samples as child requests, beam requests as the API server's rounds of 1-token requests, prefix
caching on by default, preemption) was added with the beam rounds, on 2026-12-02, and changed once the same
day, when a round sent at the end of a step started reaching the engine during the next step (sim/engine.py).
The sharing runs under vllm-v0 changed on 2026-12-04, when it took V0's default preemption mode: a forked
group (parallel samples, beams) is swapped, a single sequence recomputed; sharing-vllm the same day, when a
request finishing in a step kept its slot and blocks while the next step was scheduled (V1's async scheduling),
and could be that step's victim. The sharing runs with prefix caching under vllm-v0, vllm-swap and sarathi
changed again on 2026-12-04, when their admission stopped crediting prefix hits shared with a live request (V0's
`can_allocate` counts every prompt block as needed); the four sharing runs under vllm-v0 and vllm-swap the same
day, when a swapped group's return counted its distinct full blocks and a slot per sequence (V0's
`can_swap_in`), not every sequence's blocks.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import pytest

from sim import EngineConfig, replay
from sim.schema import ITL_NPY, REQUESTS_CSV, STEPS_CSV
from traces import load

REPO = Path(__file__).resolve().parents[1]
AZURE = REPO / "data" / "AzureLLMInferenceTrace_code.csv"
SHARING = REPO / "tests" / "data" / "sim_sharing_trace.csv"
POLICIES = ("vllm-v0", "vllm-swap", "sarathi", "orca-max", "orca-oracle", "static")

# name -> (trace, head, policy, EngineConfig fields)
RUNS: dict[str, tuple[Path, int | None, str, dict]] = {
    **{f"azure-{p}": (AZURE, None, p, {}) for p in POLICIES},
    "azure1500-vllm-v0-prefix": (AZURE, 1500, "vllm-v0", {"enable_prefix_caching": True}),
    "azure-small-vllm-swap": (AZURE, None, "vllm-swap", {"num_gpu_blocks": 700}),
    **{f"sharing-{p}": (SHARING, None, p, {"num_gpu_blocks": 1500}) for p in POLICIES},
    **{f"sharing-{p}-prefix": (SHARING, None, p, {"num_gpu_blocks": 1500, "enable_prefix_caching": True})
       for p in ("vllm-v0", "vllm-swap", "sarathi")},
    "sharing-vllm": (SHARING, None, "vllm", {"num_gpu_blocks": 1500}),
}

# name -> SHA-256 of (requests.csv, steps.csv, itl.npy)
DIGESTS: dict[str, tuple[str, str, str]] = {
    "azure-vllm-v0": (
        "e56506fd48ff73e1fc8bfe962137ab1783a9df572ff7f26c91ae4916d0c8c569",
        "6f51642055fb927a4d9c604952e2948efbc00a3d36862736b2b00eff6dbd36ef",
        "75dd4d41ad44e7edafaa7f02558845652571629687636241ae4dfe7cb0e1a808",
    ),
    "azure-vllm-swap": (
        "e56506fd48ff73e1fc8bfe962137ab1783a9df572ff7f26c91ae4916d0c8c569",
        "6f51642055fb927a4d9c604952e2948efbc00a3d36862736b2b00eff6dbd36ef",
        "75dd4d41ad44e7edafaa7f02558845652571629687636241ae4dfe7cb0e1a808",
    ),
    "azure-sarathi": (
        "635096a2917baf6f6e483b94fb66d6a3d9b361a24f09716f014d5c5cfe2bff02",
        "944efcf258199f64d1560152b5a133da28f768891147d290ebf54c48eff57974",
        "d710a3e4a1b92f9aec5c7cffc371be136d1fa9d1b783f610327adcc895756e5b",
    ),
    "azure-orca-max": (
        "e90ab04c393b6eb73e8048bc49dff3bcf8f492779574a4530061af1f57a08648",
        "39c54e3cf35161855d70acf9623e584ec314d101446c660550f3491bcb3fa9c2",
        "381f9a9e6d748c7bf4f909fbccc97b87e6eaece51a340cd3b524c3ee67ac8746",
    ),
    "azure-orca-oracle": (
        "53b04bb5b8c076a5104cceaa65b52ba42947d40ce34009e5a9ccafc1dd166aeb",
        "26e30248169f1c0688f407aa95ae3e092701397cb8ee64b022a9c8b2c7e2e46d",
        "c1c9ce57efec666c8398f0f7a77a5172f46f74ac3529ea114ef127fbdb9a528f",
    ),
    "azure-static": (
        "401736ef9d0227ed5ae8d28b37aa309ea2ee13b7bda19fa5a13d8f92bec36568",
        "a3bae3619e0c8c48f93cd7f1834494d4ec5a16a4ac5ae04d1c48d0fa2437d0c9",
        "9ed63df04bbe1f7fe7cad36a174f45fbbbb19e34169405c22fa8f27865c18357",
    ),
    "azure1500-vllm-v0-prefix": (
        "2c3df02f9a4b257b1282438aaccda2046c92b91ba8cb8138738ea23c1a6062d5",
        "9f146d244bf494c3b99d53603407ea346d27893d16368d5fae6e248297f2972b",
        "26e09ddf08b18f8ad51f77710fa6c163e03ee1e10ad04aae916e41cf3cb1c09d",
    ),
    "azure-small-vllm-swap": (
        "0ead7be113300437dcf071dd965c6dc379cbf3b1d1a60f2f688db5a749964f26",
        "3818112b08a139b888de916e1146d017dfbfde95bfea817dad46e45d8edaa5e2",
        "4503b0164ccb7989f67d01e15266cc09cff4de3cb247acbf81b8cbc40d8a9463",
    ),
    "sharing-vllm-v0": (
        "9718a340bb90d707e46ed5fefcf98e1bd5f69d22a6b75c60e63a981d90c0f6c7",
        "2088630518b30966bd5ffe0cee46ac5015437a344b78983f0c72839d46aa8574",
        "aac01746d00626adecb32c7aabf433f9c7a01c4ae7e4165ee4846db65d00f6bd",
    ),
    "sharing-vllm-swap": (
        "4ac57c34c110fca244d0d5eb156c765a49bc84fc375f3d709fdb38fa437232ea",
        "8d5b9f45a5b3106a59a5045ecc1ae27c4385e70394a5224882bdaa9236b6b631",
        "2d7d79f1ab996d7347324084720b840edffdef7120a4b833d3f5bb5dbe262895",
    ),
    "sharing-sarathi": (
        "8f81e5b01a8cf7455c0f139314fe7c2dcc02ba3aaf7e123c7582e08f0ca1769f",
        "65c798d96fd27d392ccc1d65b2a621aa659bb55f3659fb07f20b98d337ed6fa3",
        "501f43997b2b7fce1e5293d620f61aa4a33a57cdd34820e376da5d367b104c2d",
    ),
    "sharing-orca-max": (
        "5ddc08796779c39eaae8963582fa2384e87e55370779a939bf3b895409104aab",
        "66cc622ad803c407da05fabfe985ca40e8c2918f4fd6acc391a95519704638a9",
        "279c9965a5a77f82a7c8a540e2823583f3a9e8218efbdadfec6dea390ea5fedb",
    ),
    "sharing-orca-oracle": (
        "a92c31f1e5bd79a75b09cb43b8b72c20c427870e02ae9ac4528bfcb24d2f5157",
        "6c0c4c2daa40d23573cf0615c061fbeb904981a6bc3b054e2048ebe39982d5fe",
        "fc34390dabb220564a626394411c274e1c06dbcb2a5e32c99517d217844e3149",
    ),
    "sharing-static": (
        "eea535873662eb33150ba8bcbf99e69341123b61be773633a52dd268688a5d3b",
        "ea7aabce79f7d4a664d245043a4946c11a1551a69e13dc3478269d2e52aa69ab",
        "9890bc41defc32a9a97a3c9383e9d87df6bc973da80e242d7b393307db062054",
    ),
    "sharing-vllm-v0-prefix": (
        "0da4f373c4504de8c82d858c0fd818cfedc4c6b2c790ebc85233bd756c022954",
        "54e13c26329aa3b7b05cbd4e938aa367911c4a910795e8f55afde1851632e3fd",
        "0b34401112d5edeec497dde4ef207ca47cece4e3351d0acbe0f2aac0aa63c8fa",
    ),
    "sharing-vllm-swap-prefix": (
        "abf125c80b8499863091459ea899285a479cb9f65ed864604c2622d0d6bfd98a",
        "e028aa929ca0a6b1e9f70073ffce33eb49f0ddccdcf867320a2da9b27e4ea074",
        "f694e9569bf4a94cd87d5b9734a9a9aadd5351dfc200d748e69906d1c45fde54",
    ),
    "sharing-sarathi-prefix": (
        "f7b8d15ada3df85ce44d2afa32c28e9ce4a9e1a3a0d895ad40b6b4f6ab100230",
        "fc40bbcdefd577982eafe823609c59f4a1546721a601693f317d327a1a610557",
        "55d61aa60255fbdad5760b42e76f1fbd9ef893e1da15dd92a83cd4d66471a839",
    ),
    "sharing-vllm": (
        "e5bb00cd5a289eceb078e2353ea7131dae80dcb8e18bb98626f92573ef60fea3",
        "0634de90d12682245ab0ba1f7528741fc591472f907e7cbfbdef4e473211dfe7",
        "8c8740568326358c9137ea6b2daf7d533d44c89b01b436616082cdaad235fb7a",
    ),
}


@lru_cache(maxsize=None)
def _trace(path: Path, head: int | None):
    trace = load(str(path))
    return trace if head is None else trace.head(head)


def test_every_run_has_digests() -> None:
    assert set(RUNS) == set(DIGESTS)


@pytest.mark.parametrize("name", list(RUNS))
def test_replay_tables_are_byte_identical(name: str, tmp_path: Path) -> None:
    path, head, policy, fields = RUNS[name]
    result = replay(_trace(path, head), EngineConfig(**fields), policy=policy, seed=0)
    result.write(tmp_path)
    got = tuple(hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in (REQUESTS_CSV, STEPS_CSV, ITL_NPY))
    assert got == DIGESTS[name], f"{name}: tables changed (requests, steps, itl digests: {got})"
