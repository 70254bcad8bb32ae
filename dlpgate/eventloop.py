"""The event loop `serve` and the delivery process run on: uvloop where it is installed.

Measured with benchmarks/e2e_throughput.py (same run, A/B alternated): uvloop took the SMTP
process from 0.82-0.95 to 0.67-0.74 ms of CPU per message and the gateway from 805-924 to
966-1129 msg/s; p99 accept latency 38-47 -> 31-39 ms. Everything else (aiosmtpd's STARTTLS
over asyncio's SSLProtocol, the worker pipes watched with add_reader, aiosmtplib) is tested on
both loops. DLPGATE_EVENT_LOOP=asyncio selects the standard loop (to rule uvloop out when
debugging).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    """"uvloop" or "asyncio": the loop `run` will use."""
    if os.environ.get("DLPGATE_EVENT_LOOP", "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    if loop_name() == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
