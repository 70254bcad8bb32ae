"""Masking for anything the gateway says about content: keep the first 4 digits, star the rest.

Used where free text we did not produce (subjects, error texts) is stored or shown, so that an
identifier typed into a subject line does not reach the terminal, a log or the audit export.
"""

from __future__ import annotations

import re

# runs of 8+ digits (half/full width), optionally broken by common separators
_DIGIT_RUN = re.compile(r"[0-9０-９](?:[ \-‐−－ー.]?[0-9０-９]){7,}")


def mask_number(digits: str) -> str:
    """'6214 9832 0257' -> '6214********' (separators dropped, digits counted)."""
    d = [c for c in digits if c.isdigit()]
    return "".join(d[:4]) + "*" * max(0, len(d) - 4)


def mask_text(text: str) -> str:
    """Mask every long digit run inside free text."""
    return _DIGIT_RUN.sub(lambda m: mask_number(m.group(0)), text)
