"""Identifiers told by their shape right after their keyword: a passport (旅券番号 TK1234567), a
residence card (在留カード番号 AB12345678CD), a basic pension number (基礎年金番号 1234-567890).

They carry no check digit, and their shapes alone are as common as product codes (AB1234567 is a
part number as often as a passport), so each counts only within `proximity` characters after one
of its keywords, on the same line or the next few. The shapes come from the rules (`[[keyed]]` in
detectors.toml: name, keywords, pattern, severity), matched on normalised text (half-width, lower
case), whole (no letter or digit on either side). Masking hides every such shape wherever it
stands, keyword or not (`dlpgate.scan.spans`), so a passport typed into a subject never reaches a log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dlpgate.scan.normalize import normalise


@dataclass(frozen=True)
class KeyedIdentifier:
    name: str  # the detector's name, e.g. "passport"
    keywords: tuple[str, ...]  # normalised
    pattern: str  # a regular expression over normalised text
    severity: str  # of a finding


def whole(pattern: str) -> re.Pattern[str]:
    """`pattern` matched whole: no ASCII letter or digit right before or after it."""
    return re.compile(f"(?<![0-9a-z])(?:{pattern})(?![0-9a-z])")


def find_after(text: str, keyword_ends: Iterable[int], shape: re.Pattern[str], window: int,
               next_line: bool = True) -> dict[str, str]:
    """The distinct values of `shape` that start within `window` characters after one of
    `keyword_ends` in `text`, on the keyword's line or (`next_line`) the next: a label above its
    value. Each normalised value is mapped to its first spelling in the text. A table's rows are
    lines of cells, where the next line is another record's: there only the keyword's own row counts."""
    found: dict[str, str] = {}
    n = len(text)
    for end in sorted(set(keyword_ends)):
        stop = min(n, end + window)
        first_newline = text.find("\n", end, stop)
        if first_newline >= 0:
            second = text.find("\n", first_newline + 1, stop) if next_line else first_newline
            stop = second if second >= 0 else stop
        for m in shape.finditer(normalise(text[end:stop])):
            found.setdefault(m.group(), text[end + m.start():end + m.end()])
    return found


def in_columns(rows: Sequence[Sequence[str]], keywords: Sequence[str], shape: re.Pattern[str],
               header_rows: int) -> dict[str, str]:
    """The distinct values of `shape` filling whole cells in a column whose header cell (within the
    first `header_rows` rows) names one of `keywords`: a sheet lists its passports far below the label."""
    found: dict[str, str] = {}
    for r, row in enumerate(rows[:header_rows]):
        columns = [c for c, cell in enumerate(row) if cell and any(k in normalise(cell) for k in keywords)]
        if not columns:
            continue
        for below in rows[r + 1:]:
            for c in columns:
                if c < len(below):
                    value = below[c].strip()
                    if value and shape.fullmatch(normalise(value)):
                        found.setdefault(normalise(value), value)
        break
    return found


def masked(value: str) -> str:
    """The first two characters and stars: `tk*******`."""
    return value[:2] + "*" * max(0, len(value) - 2)
