"""What the probes' compile scripts share: registers and SASS opcodes of a kernel compiled for sm_90a, read with the
`cuobjdump` that ships beside Triton's ptxas (a Triton wheel has both)."""
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget

SM90 = GPUTarget("cuda", 90, 32)
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def registers_and_opcodes(compiled) -> tuple[str, list[str]]:
    """("REG:n STACK:m" a thread, the SASS opcodes in order) of `triton.compile(..., target=SM90)`'s result."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        usage = subprocess.run([CUOBJDUMP, "-res-usage", cubin.name], capture_output=True, text=True).stdout
        sass = subprocess.run([CUOBJDUMP, "-sass", cubin.name], capture_output=True, text=True).stdout
    ops = [line.split()[0] for line in re.findall(r"^\s+/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?(.*?);", sass, re.M)]
    return re.search(r"REG:\d+ STACK:\d+", usage).group(0), ops
