"""Masking for anything the gateway says about content: keep the first 4 digits, star the rest.

Used on every string that leaves the store for a person or another system (subjects, file and
part names, reasons, error texts, notices, DSNs, CLI output, the audit export, logs) so that an
identifier typed into a subject line does not reach a terminal, a log or the upstream.

The spans come from the scanner's own candidate finding (`dlpgate.scan.spans`): whatever
separator or width the scanner accepts between digit groups, masking accepts too, so no number
the scanner can see escapes the mask.
"""

from __future__ import annotations

import re

from dlpgate.scan.keyed import masked
from dlpgate.scan.spans import identifier_spans, keyed_spans, run_digits


def mask_number(digits: str) -> str:
    """'6214 9832 0257' -> '6214********' (separators dropped, digits counted)."""
    d = run_digits(digits)
    return d[:4] + "*" * max(0, len(d) - 4)


def mask_text(text: str) -> str:
    """Mask every identifier-like digit run, and every keyed identifier's shape, inside free text."""
    if not text:
        return text
    digits = identifier_spans(text)
    # a keyed shape inside a digit run (a pension number's 10 digits in a 12-digit run) is that run:
    # masked as digits are, first four kept; one with letters beyond the run masks the whole span
    spans = [(s, e, False) for s, e in digits] + [
        (s, e, True) for s, e in keyed_spans(text) if not any(a <= s and e <= b for a, b in digits)]
    if not spans:
        return text
    merged: list[tuple[int, int, bool]] = []
    for s, e, keyed in sorted(spans):
        if merged and s < merged[-1][1]:  # overlapping (AB12345678CD holds an 8-digit run): one span
            ls, le, lk = merged[-1]
            merged[-1] = (ls, max(le, e), lk or keyed)
        else:
            merged.append((s, e, keyed))
    out: list[str] = []
    pos = 0
    for s, e, keyed in merged:
        out.append(text[pos:s])
        out.append(masked(text[s:e]) if keyed else mask_number(text[s:e]))
        pos = e
    out.append(text[pos:])
    return "".join(out)


# what a reader puts at the end of a location to find a message again: an mbox offset, a PST item
_LOCATION_SUFFIX = re.compile(r"(@\d+|/\d+)$")


def mask_location(location: str) -> str:
    """A file path or archive location masked like any text (a file may be named after its
    content: `名簿_<number>.eml`), except the offset or item number a reader put at its end, which
    is what finds the message again (`archive.mbox@123456789`)."""
    m = _LOCATION_SUFFIX.search(location)
    if m is None:
        return mask_text(location)
    return mask_text(location[:m.start()]) + m.group(0)
