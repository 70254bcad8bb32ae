"""Resource accounting for one extraction: time, extracted bytes, nesting and part counts.

Every extractor checks the budget between steps (XML chunks, zip members, PDF pages, MIME parts),
so a hostile file stops at the next step after its limit instead of hanging the worker. When a
limit or a defect stops a file, the extractor raises `Unreadable`; the dispatcher turns it into a
Part with `unscannable` set. Nothing here ever sees content: details name only limits and formats.
"""

from __future__ import annotations

import time

from .model import CORRUPT, LIMIT, ExtractLimits


class Unreadable(Exception):
    """A file (or a piece of it) cannot be read; `reason` is one of the model's unscannable reasons."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def corrupt(detail: str) -> Unreadable:
    return Unreadable(CORRUPT, detail)


class Budget:
    """Mutable counters shared by every extractor working on one message (or one file)."""

    def __init__(self, limits: ExtractLimits) -> None:
        self.limits = limits
        self.bytes_used = 0
        self.deadline = time.monotonic() + limits.part_seconds
        self.exhausted = False  # total-bytes limit reached: later parts are not read at all
        self.members = 0  # zip members seen, across every archive of the message
        self.parts = 0  # MIME parts seen, across every attached message

    def start_part(self) -> None:
        """Give the next top-level part (body or attachment) its own wall-clock budget."""
        self.deadline = time.monotonic() + self.limits.part_seconds

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise Unreadable(LIMIT, f"over the per-part time budget of {self.limits.part_seconds:g} s")

    def charge(self, n: int) -> None:
        """Count `n` more extracted bytes (decompressed data or produced text) against the message total."""
        self.bytes_used += n
        if self.bytes_used > self.limits.max_total_bytes:
            self.exhausted = True
            raise Unreadable(LIMIT, f"over the extracted-bytes limit of {self.limits.max_total_bytes} bytes")

    def step(self, n: int = 0) -> None:
        """One step of work: charge `n` bytes and check the clock."""
        if n:
            self.charge(n)
        if time.monotonic() > self.deadline:
            self.check_time()
