"""On the H200: `gluon_decode2` (one-warp consumers that never wait on each other, items 56-58) beside item 55's
best form and the product: checks against the float64 reference, then graph us.
`PYTHONPATH=$PWD python3 docs/probes/gluon_ws/run_decode2_probe.py [rounds]`; edit VARIANTS:
(step, buffers, EARLY, maxnreg, consumer registers, swapped)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import gluon_decode2 as g  # noqa: E402
import gluon_read as gr  # noqa: E402
from probe_common import bench_decodes, check_ragged, split_decode  # noqa: E402
from run_decode_probe import decode_fn as item55_decode  # noqa: E402

VARIANTS = [(16, 4, 2, 128, 216, False), (16, 6, 2, 128, 216, False), (16, 4, 2, 128, 216, True)]


def decode_fn(step, nb, early, mx, consumer_regs, swap):
    return split_decode(g.ws_decode, step=step, num_buf=nb, early=early, maxnreg=mx, consumer_regs=consumer_regs,
                        swap=swap)


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(torch.cuda.get_device_properties(0).name, time.strftime("%H:%M:%S", time.gmtime()))
    decodes = {"gl_" + "_".join(map(str, v)): decode_fn(*v) for v in VARIANTS}
    decodes["item55_16_4_2"] = item55_decode(16, 4, 2, 128)
    check_ragged(decodes)
    bench_decodes(decodes, rounds, extra=lambda k8, v8, bt, lens, splits: {
        "ws_read_4": lambda: gr.ws_read(k8, v8, bt, lens, splits, 4)})
