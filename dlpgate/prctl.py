"""Linux prctl(2) for our child processes: their name, and dying with the gateway.

All of them are forkserver children of one `python` binary; without a name an operator sees a row of
identical `python3` lines and cannot tell which one is burning CPU or memory. Each call is a no-op
where prctl is missing (not Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import signal

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def _prctl(option: int, arg: int | ctypes.c_char_p) -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, arg, 0, 0, 0)


def set_process_name(name: str) -> None:
    """Set the kernel's short name (comm, 15 bytes) of this process."""
    _prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Have the kernel send `sig` to this process when its parent dies, even by SIGKILL."""
    _prctl(_PR_SET_PDEATHSIG, int(sig))
