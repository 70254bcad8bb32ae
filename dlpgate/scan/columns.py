"""Where a digit run sits in a text: which column of which delimited block, or which field of a
fixed-width record, and what that column's header says.

Spreadsheets, CSV files, Word tables and HTML tables all reach the scanner as text whose rows are
lines and whose cells are separated by tabs (or commas, in a CSV pasted into a mail; or bars and
semicolons, in a table typed by hand or pasted from a chat: DELIMITERS). A number is
judged with its column: a column headed 注文番号 is order numbers however many of them pass the
My Number check digit, and the column is also the population whose pass rate tells real My Numbers
(all pass) from other 12-digit numbers (about one in ten passes).

Cost: per digit run, one `rfind` and one `count` in its own line, and one regex search over the
lines since the previous run (to see whether the block went on); each block's header cells are
folded once. Text without runs costs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable

_NO_CATS: frozenset[str] = frozenset()
# Cell delimiters, in the order a line is looked at (tables.py's body tables read the same ones):
# tab and comma, the bars of a Markdown or box-drawn table, a European CSV's semicolon.
DELIMITERS = ("\t", ",", "|", "｜", "│", "┃", ";")
# Whether a line holds any of them (one search: the scanner's shortcut for short prose lines).
ANY_DELIMITER = re.compile("[" + re.escape("".join(DELIMITERS)) + "]")
# A line without the delimiter between two positions: the block ended there.
_BREAK = {d: re.compile(r"\n[^" + re.escape(d) + r"\n]*\n") for d in DELIMITERS}
_BACK_LINES = 4096  # at most this many lines are walked back to find a block's first line
_HEADER_LINES = 3  # a column's header: its cells in the block's first lines above any number
_NUMBERISH = re.compile(r"[0-9０-９]{4}")
FIXED_MIN = 40  # a fixed-width record line is at least this long


class TextColumns:
    """Column facts of one text, computed on demand and cached; positions must come in ascending order
    for the block cache to help (any order gives the same answers)."""

    __slots__ = ("text", "_categorise", "_block", "_headers")

    def __init__(self, text: str, categorise: Callable[[str], frozenset[str]]) -> None:
        self.text = text
        self._categorise = categorise
        self._block: tuple[int, int, str] | None = None  # (block start, last line start seen, delimiter)
        self._headers: dict[tuple[int, int], frozenset[str]] = {}

    def at(self, pos: int) -> tuple[Hashable, frozenset[str]]:
        """(population key, header categories) of the run starting at `pos`."""
        text = self.text
        ls = text.rfind("\n", 0, pos) + 1
        le = text.find("\n", pos)
        if le < 0:
            le = len(text)
        m = ANY_DELIMITER.search(text, ls, le)
        delim = ""
        if m is not None:
            # the line's delimiter is the first of DELIMITERS it holds: the one found, unless one
            # ranked before it is in the line too (a comma first, then a tab)
            delim = m.group()
            for d in DELIMITERS:
                if d == delim:
                    break
                if text.find(d, ls, le) >= 0:
                    delim = d
                    break
        if not delim:
            return self._fixed(ls, le, pos), _NO_CATS
        col = text.count(delim, ls, pos)
        start = self._block_start(ls, delim)
        cats = self._header(start, col, delim, ls)
        if col:  # a label in the row's first cell speaks for the row (fields down a column)
            first = text[ls:text.find(delim, ls, le)]
            if first and not _NUMBERISH.search(first):
                cats = cats | self._categorise(first)
        return (start, col), cats

    def _fixed(self, ls: int, le: int, pos: int) -> Hashable:
        """("fixed", offset) for a field of a fixed-width record: a long line whose neighbour has the
        same length and a digit at the same offset; otherwise the whole part is the population."""
        n = le - ls
        if n < FIXED_MIN:
            return "part"
        text = self.text
        off = pos - ls
        if ls > 0:
            ps = text.rfind("\n", 0, ls - 1) + 1
            if (ls - 1 - ps) == n and text[ps + off].isdigit():
                return ("fixed", off)
        if le < len(text):
            ne = text.find("\n", le + 1)
            if ne < 0:
                ne = len(text)
            if ne - le - 1 == n and text[le + 1 + off].isdigit():
                return ("fixed", off)
        return "part"

    def _block_start(self, ls: int, delim: str) -> int:
        text = self.text
        block = self._block
        if block is not None and block[2] == delim and block[1] <= ls:
            if block[1] == ls or _BREAK[delim].search(text, max(block[1] - 1, 0), ls) is None:
                self._block = (block[0], ls, delim)
                return block[0]
        start = ls
        for _ in range(_BACK_LINES):
            if start == 0:
                break
            prev = text.rfind("\n", 0, start - 1) + 1
            if text.find(delim, prev, start - 1) < 0:
                break
            start = prev
        self._block = (start, ls, delim)
        return start

    def _header(self, start: int, col: int, delim: str, upto: int) -> frozenset[str]:
        key = (start, col)
        cats = self._headers.get(key)
        if cats is not None:
            return cats
        text = self.text
        found: frozenset[str] = _NO_CATS
        pos = start
        limited = False
        for _ in range(_HEADER_LINES):
            if pos >= upto:
                limited = True  # the run's own line: later runs of the block may see more header
                break
            end = text.find("\n", pos)
            if end < 0:
                end = len(text)
            cells = text[pos:end].split(delim)
            if col < len(cells):
                cell = cells[col]
                if _NUMBERISH.search(cell):
                    break
                found = found | self._categorise(cell)
            pos = end + 1
        if not limited:
            self._headers[key] = found
        return found
