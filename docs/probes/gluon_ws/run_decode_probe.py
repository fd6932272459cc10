"""On the H200: item 55's decode (`gluon_decode`): checks against the float64 reference, then graph us beside the
product. `PYTHONPATH=$PWD python3 docs/probes/gluon_ws/run_decode_probe.py [rounds]`; edit VARIANTS:
(step, buffers, EARLY, maxnreg)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import gluon_decode as g  # noqa: E402
import gluon_read as gr  # noqa: E402
from probe_common import bench_decodes, check_ragged, split_decode  # noqa: E402

VARIANTS = [(16, 4, 2, 128), (32, 3, 2, 128), (32, 3, 0, 128)]


def decode_fn(step, nb, early, mx):
    return split_decode(g.ws_decode, step=step, num_buf=nb, early=early, maxnreg=mx)


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(torch.cuda.get_device_properties(0).name, time.strftime("%H:%M:%S", time.gmtime()))
    decodes = {"gl_" + "_".join(map(str, v)): decode_fn(*v) for v in VARIANTS}
    check_ragged(decodes)
    bench_decodes(decodes, rounds, extra=lambda k8, v8, bt, lens, splits: {
        "ws_read_4": lambda: gr.ws_read(k8, v8, bt, lens, splits, 4)})
