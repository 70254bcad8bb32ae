"""HTML -> text and tables. Cells keep their breaks (`<td>1234</td><td>5678</td>` -> "1234\t5678",
never "12345678", which would forge or hide an identifier); entities are decoded; scripts and styles
are dropped; every <table> is also handed to the scanner as rows of cells.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from .budget import Budget
from .model import Table

_BLOCK = frozenset("address article aside blockquote br dd details dialog div dl dt fieldset figcaption figure "
                   "footer form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary ul title "
                   "caption option".split())
_SKIP = frozenset(("script", "style", "template", "noscript"))
# Preformatted text keeps its line breaks and tabs: a register pasted into <pre> is tab-separated lines.
_PRE = frozenset(("pre", "textarea", "xmp", "listing", "plaintext"))
_SPACE = re.compile(r"[ \t\r\n\f\u00a0]+")
CHUNK = 256 * 1024


_MAX_SPAN = 100  # colspan/rowspan beyond this is hostile or broken markup: clamped


def _span(attrs: list[tuple[str, str | None]], name: str) -> int:
    for k, v in attrs:
        if k == name and v:
            try:
                return max(1, min(int(v.strip()), _MAX_SPAN))
            except ValueError:
                return 1
    return 1


class _Cell:
    """One <table> being read: its rows as text lines (cells as written) and as a grid, with
    colspan/rowspan expanded so every cell sits under its header (`個人番号` over three cells
    is the header of each of them; a `rowspan` name is in every row it spans)."""

    __slots__ = ("rows", "row", "cell", "grid", "grid_row", "pending", "spans")

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.grid: list[tuple[str, ...]] = []
        self.grid_row: list[str] = []
        self.pending: dict[int, tuple[str, int]] = {}  # column -> (text, rows still to fill) from rowspan
        self.spans: tuple[int, int] = (1, 1)  # the open cell's (colspan, rowspan)

    def place(self, text: str) -> None:
        row = self.grid_row
        self._fill_pending()
        colspan, rowspan = self.spans
        for _ in range(colspan):
            if rowspan > 1:
                self.pending[len(row)] = (text, rowspan - 1)
            row.append(text)
            self._fill_pending()

    def _fill_pending(self) -> None:
        row = self.grid_row
        while len(row) in self.pending:
            col = len(row)
            text, left = self.pending[col]
            row.append(text)
            if left <= 1:
                del self.pending[col]
            else:
                self.pending[col] = (text, left - 1)

    def end_grid_row(self) -> None:
        self._fill_pending()
        if any(self.grid_row):
            self.grid.append(tuple(self.grid_row))
        self.grid_row = []


class _ToText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.tables: list[list[tuple[str, ...]]] = []
        self._stack: list[_Cell] = []
        self._skip = 0
        self._pre = 0

    def _sink(self) -> list[str]:
        for t in reversed(self._stack):
            if t.cell is not None:
                return t.cell
        return self.out

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _PRE:
            self._pre += 1
        if tag in _SKIP:
            self._skip += 1
        elif tag == "table":
            self._stack.append(_Cell())
        elif tag == "tr" and self._stack:
            self._end_row(self._stack[-1])
            self._stack[-1].row = []
        elif tag in ("td", "th") and self._stack:
            t = self._stack[-1]
            self._end_cell(t)
            if t.row is None:
                t.row = []
            t.cell = []
            t.spans = (_span(attrs, "colspan"), _span(attrs, "rowspan"))
        elif tag in _BLOCK:
            self._sink().append("\n" if self._sink() is self.out else " ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self._sink().append("\n" if self._sink() is self.out else " ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _PRE:
            self._pre = max(0, self._pre - 1)
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "table" and self._stack:
            self._end_row(self._stack[-1])
            t = self._stack.pop()
            self.tables.append(t.grid)
            sink = self._sink()
            if sink is not self.out and t.rows:
                sink.append(" ".join("\t".join(r) for r in t.rows))
        elif tag == "tr" and self._stack:
            self._end_row(self._stack[-1])
        elif tag in ("td", "th") and self._stack:
            self._end_cell(self._stack[-1])
        elif tag in _BLOCK:
            self._sink().append("\n" if self._sink() is self.out else " ")

    def _end_cell(self, t: _Cell) -> None:
        if t.cell is not None:
            if t.row is None:
                t.row = []
            text = _SPACE.sub(" ", "".join(t.cell)).strip()
            t.row.append(text)
            t.place(text)
            t.cell = None

    def _end_row(self, t: _Cell) -> None:
        self._end_cell(t)
        if t.row is not None:
            row = tuple(t.row)
            t.row = None
            t.end_grid_row()
            if any(row):
                t.rows.append(row)
                if t is self._stack[0]:
                    self.out.append("\n" + "\t".join(row) + "\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            sink = self._sink()
            if self._pre and sink is self.out:  # lines and tabs as written
                sink.append(data.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " "))
            else:
                sink.append(_SPACE.sub(" ", data))

    def close(self) -> None:
        super().close()
        while self._stack:
            self.handle_endtag("table")


def html_to_text(html: str, budget: Budget, path: str) -> tuple[str, tuple[Table, ...]]:
    """Text of an HTML document (lines trimmed, blank runs collapsed) and its tables."""
    parser = _ToText()
    for i in range(0, len(html), CHUNK):
        budget.step(0)
        parser.feed(html[i:i + CHUNK])
    parser.close()
    lines = (ln.strip(" ") for ln in "".join(parser.out).split("\n"))
    text = re.sub(r"\n{2,}", "\n", "\n".join(ln for ln in lines)).strip()
    tables = tuple(Table(f"{path}/table{i}", tuple(rows)) for i, rows in enumerate(parser.tables, 1) if rows)
    return text, tables
