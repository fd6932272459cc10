"""Replays keep byte-identical outputs: SHA-256 of requests.csv, steps.csv and itl.npy for every policy.

The digests were taken before the scheduler, KV layout and step timer were separated into their own
modules; a change that alters any table of these runs (a policy rule, the cost model, the writer) must
say so by updating them. The Orca runs changed once since: orca-max and orca-oracle moved to contiguous
buddy-allocated buffers (`sim.kv_contiguous`), which changes who is admitted when and the blocks held.
The sharing runs with prefix caching changed once: every computed full block, output included, is
cached when released (vLLM's block managers hashed a block when it became full, decode blocks too), so
a recomputed request finds its own output and finished requests' blocks join the evictor's queue. Runs: the whole Azure LLM inference code trace (data/) under every policy; a
small KV pool on it (preemption, swap); its first 1,500 requests with prefix caching; and a generated
trace with parallel sampling, beam search and shared prefixes (tests/data/sim_sharing_trace.csv: forks,
copy-on-write, beam re-selection, preemption, swap and prefix hits) under every policy.
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
}

# name -> SHA-256 of (requests.csv, steps.csv, itl.npy)
DIGESTS: dict[str, tuple[str, str, str]] = {
    "azure-vllm-v0": (
        "5707f41d6c10ea7b89c1024b34af9b03fcdaeccd2dbc26335ab35ceb6da21bb9",
        "c1198ecd42b8008f119c18da2a8f800ea128005e0c6475bb2b9be74e79fc5b47",
        "4a7d7f5b87a7c21cdef484745618d6ee5990bf136ee8ef0eb25fc0a7b1b19e0c",
    ),
    "azure-vllm-swap": (
        "5707f41d6c10ea7b89c1024b34af9b03fcdaeccd2dbc26335ab35ceb6da21bb9",
        "c1198ecd42b8008f119c18da2a8f800ea128005e0c6475bb2b9be74e79fc5b47",
        "4a7d7f5b87a7c21cdef484745618d6ee5990bf136ee8ef0eb25fc0a7b1b19e0c",
    ),
    "azure-sarathi": (
        "d7a1ae2bf0ae3735963b30b4df767b55e53c0baef7df705f1fbc8856120e03b7",
        "72ef606954532c93926bc66fde0dd3df30d3f557983ea127cf4d9b802e85da4f",
        "780ae1eb58f6833c99bcf546345c8d3b6c7e20870177fc027b200b0fbe3c753c",
    ),
    "azure-orca-max": (
        "59450a98333706eeca5bc471c5831e39511145f4ff91c0e41359d83a0bf72cc0",
        "f571f4bfe98ff2092ceaf8fb2d08dfea4b86680b1ea831134d64f3bd79d9e3ff",
        "bcf1ceaf72ce4aa824923524ecc4ca102e0b165ffc8e36d429fa1dbcd47d06ed",
    ),
    "azure-orca-oracle": (
        "bc28db782aa654e4a6a5ec9cc0696313253054a13b1a87c3158e8fee2558a3e3",
        "c04569576bee9cfd0828afb2df32749603fffaf0d4f627d21c39b6fe43ca2a67",
        "dafc0f0a1b134b9582e20c1582efc3d4a8cd1a61aee963b3e6e08c4b3d63d82a",
    ),
    "azure-static": (
        "b51ba2a6ce8b7a71e4c014bb929b24b9d6522ed76438814a4f95e344d94b2f46",
        "c4313b0db67abe47e0eb00ebe6087f6953a9786483ea13d6fa2a86ec27d7c0cf",
        "d1bfa1fe3f645e54ce08a286e53f639c860be6123500988bd22d459875c6070c",
    ),
    "azure1500-vllm-v0-prefix": (
        "acbff28cefeaea53edf0ec1d3f108fa1b0079eae1ed9f5fd0d28e236dba2ddc5",
        "d7aecc7f999e6882c909bca4cf7294b1974c7651ebb916a10a440a8219cf7dac",
        "91cd731c76ca92967b28a7b80eed73aad194243abdf5f3c85fe6149f2944b914",
    ),
    "azure-small-vllm-swap": (
        "0616156d6559d7f91d8721a892749ae25449c908f4ebe24e1d3489b641117cfe",
        "d3087ffa75efe3f997b036b6d603e812c52e996bf0453431261f98748eb023ee",
        "330cad71730e9cd1aa6d8109dfa9a77d4743b1cf273c27eacf1734223874825f",
    ),
    "sharing-vllm-v0": (
        "65f5d22c371f04b595a8f6907401e400a8f9c6cc389281d5d7f9feb1347abfe4",
        "f441130c11b8a5811b138a2a53115d7aa7da84a7c6eb4e7d233aa5d13e039dec",
        "c1f8ebf4132f36a2916752b2d9695afb714d2087d5ecf9e3c9ca303f604f810d",
    ),
    "sharing-vllm-swap": (
        "b53f23c090f53d0eeedfc200003e8f0bb2f1c90ce314dfa99795db920aa31a1c",
        "f04e4dc9bf8d79a8e54b09dc5d4fdd3bff1a791c2f3b64208726d867f848fab5",
        "241a0b15d4bee3146ce68f512ce5f75d465a2e30ee6e8fc032218770a08dae5c",
    ),
    "sharing-sarathi": (
        "2231aca29dd980aec0cfe1459896a9c0b62e2437ef8987e08eb546fdbdbee9ed",
        "3e48bd218c672ad595be297dbbf336699c4133e0b8123acc4fc32f054ce85608",
        "c7c66237a41ef8e6cce1628188ab27cc71e0d515a6680211b3e186eb897faa9b",
    ),
    "sharing-orca-max": (
        "69103957ff09e7df9a8dc1b09210485e46c8326f933af32befa241b764a95147",
        "c9e95f099d263915e725ce537430ba533417f15b9bce985cb48d0076027f5854",
        "c8a96a4ee793a1aea6cb0e7c0de177727bf60b311465775fc34025147dbc0a07",
    ),
    "sharing-orca-oracle": (
        "64e2d684c0f9a3bf364b81fe77334cbfa3b49f98ef36c3b194a6ce4be0ee7315",
        "58c3a373bab474d373e4f4b31067308be24a72e81003df87487b4d92d2f13e6b",
        "b2c28b8981f065fd84bd490c8925b1987725e16640e08497afb207b54170a4a9",
    ),
    "sharing-static": (
        "8db274432545736b83c55e9a5c3505f1d3013e891897b72d922378a736ca5eef",
        "a93adbfb1fd8b424b66637fde1e908b45e7570d8c7f2435346e8326ec7690b82",
        "fbb54e8fac8b6e2c479eda3e66c0b27bdfc11df83820e5e122e1ec512996233b",
    ),
    "sharing-vllm-v0-prefix": (
        "395e8a52d18eaf580ec83593e74a5b5ee9f1d1f073a373a12f279188e200e94f",
        "330a6495aadbe5d2e8149f5bec843b737f89b7ffb82d1a440a68be10f75aac46",
        "c2b4ae69b0c4e3824ac882485a6c49da643b6d083d24623647f2812e0b207c62",
    ),
    "sharing-vllm-swap-prefix": (
        "78413696a4519b9a6a836e72d37dc3c0de3603504ae92770435b2a2227a19e32",
        "a6ab60678bef4ee89468759cd6f91dce18f99750c1e287266905506553e80366",
        "b87c92ad09eb7777e191bf656d5a9ad5aca07b18fa3b069f0af25ffa872ca354",
    ),
    "sharing-sarathi-prefix": (
        "bb8bae4f415be7d3cc1a04601c216bcc28940d2f894d747d34a508300a1f57b1",
        "6906281d36a1085a72440b9340ba85ddf4ec8f4aaceb8ed202785f727f9b126f",
        "67db16e879c26d23a3b962b0d24187a5928f20837779c02ced075164b8733938",
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
