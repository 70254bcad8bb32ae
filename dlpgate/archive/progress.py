"""Progress of a long archive scan: a bar on a terminal, plain periodic lines elsewhere.

On a terminal (stderr is a TTY): tqdm's bar with bytes, rate and ETA, messages and flagged
counts in its postfix. Anywhere else (a log file, cron, a pipe): one plain line every `every`
seconds and one at the end, so a log shows the work moving without carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Progress:
    def __init__(self, total: int, done: int = 0, stream: TextIO | None = None, every: float = 10.0,
                 tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = max(total, 0)
        self.done = done
        self.start_done = done
        self.messages = 0
        self.flagged = 0
        self.unreadable = 0
        self.every = every
        self.started = time.monotonic()
        self._last = self.started
        is_tty = self.stream.isatty() if tty is None else tty
        self._bar = None
        if is_tty:
            import os

            import tqdm as tqdm_module
            from tqdm import tqdm

            tqdm_module.tqdm.monitor_interval = 0  # no monitor thread in a process that forks workers
            try:
                size = os.get_terminal_size(self.stream.fileno())
                known = size.columns > 0 and size.lines > 0
            except (OSError, ValueError, AttributeError):
                known = False
            # a terminal that reports no size (a fresh pty, a serial console) still gets a bar: tqdm
            # would hide it behind 0 rows
            self._bar = tqdm(total=self.total, initial=done, unit="B", unit_scale=True, unit_divisor=1000,
                             file=self.stream, dynamic_ncols=known, ncols=None if known else 100,
                             nrows=None if known else 24, mininterval=0.2, desc="archive")

    def update(self, nbytes: int, result: dict[str, object] | None) -> None:
        self.done += nbytes
        if result is not None and "skipped" not in result:
            self.messages += 1
            if result.get("verdict") == "unreadable":
                self.unreadable += 1
            elif result.get("findings"):
                self.flagged += 1
        if self._bar is not None:
            self._bar.update(nbytes)
            if self.messages % 50 == 0 or nbytes > 1_000_000:
                self._bar.set_postfix_str(self._counts(), refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def _counts(self) -> str:
        return f"{self.messages} msgs, {self.flagged} flagged, {self.unreadable} unreadable"

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = f", ETA {_duration((self.total - self.done) / rate)}" if rate > 0 and self.total > self.done else ""
        return (f"archive: {_size(self.done)} of {_size(self.total)}{pct}, {self._counts()}, "
                f"{_size(rate)}/s{eta}")

    def close(self, finished: bool) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._counts(), refresh=False)
            self._bar.close()
        elapsed = time.monotonic() - self.started
        word = "done" if finished else "stopped"
        print(f"archive: {word}: {self.line().split(': ', 1)[1]} in {_duration(elapsed)}",
              file=self.stream, flush=True)
