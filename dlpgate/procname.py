"""Name our child processes so `ps`, `top` and the benchmarks can tell a deliverer from a scan worker.

All of them are forkserver children of one `python` binary; without a name an operator sees a row of
identical `python3` lines and cannot tell which one is burning CPU or memory.
"""

from __future__ import annotations

import contextlib
import ctypes

_PR_SET_NAME = 15


def set_process_name(name: str) -> None:
    """Set the kernel's short name (comm, 15 bytes) of this process; a no-op where prctl is missing."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
