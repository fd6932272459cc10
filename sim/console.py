"""What the command-line tools print besides their results: one warning line on stderr, in one format."""
from __future__ import annotations

import os
import platform
import sys
import time


def warn(message: str) -> None:
    """`pagedlab: warning: <message>` on stderr (the errors' format, `pagedlab: error: ...`, with another word)."""
    print(f"pagedlab: warning: {message}", file=sys.stderr)


def machine_line(tool: str) -> str:
    """The header a benchmark prints above its table: machine, CPUs, Python, date and time, load average."""
    load = os.getloadavg()
    return (f"# {tool} on {platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}, "
            f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
