"""Values that flow out of extraction into the scanner and the send log.

`extract/` knows nothing of rules: it only says what text and tables each part holds,
or why a part could not be read (`unscannable`).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

# Reasons a part could not be read. The scanner turns each into an `unscannable` finding.
ENCRYPTED = "encrypted"
CORRUPT = "corrupt"
LIMIT = "limit"  # over a size/depth/count/ratio/time/pages limit
UNSUPPORTED = "unsupported"  # a format we cannot read (e.g. legacy .doc without a library)


@dataclass(frozen=True)
class Table:
    """Rows of cells from one sheet / CSV / docx, pptx or HTML table, in reading order.

    `rows` is a tuple of tuples for small tables, and `Rows` (the same rows kept inside the part's
    text) for sheets and CSV files, which may be hundreds of thousands of rows long."""

    name: str  # part path, e.g. "名簿.xlsx/Sheet1" or "body.html/table1"
    rows: Sequence[tuple[str, ...]]


class Rows(Sequence[tuple[str, ...]]):
    """A long table's rows kept compact: the part's text itself (cells joined by tabs, rows by newlines)
    and where each row starts in it, about 8 bytes a row on top of the text the part holds anyway.
    A tuple of str per cell costs some 60 bytes a cell and a tuple per row: for a 200,000-row
    register several times the text. Reads as a sequence of tuples of str, made on access.

    A row whose cells hold a tab (or a row with no cell at all) cannot be cut back out of the text:
    those few are kept as tuples. Build with `RowsBuilder`.
    """

    __slots__ = ("text", "_starts", "_odd", "_blank")

    def __init__(self, text: str, starts: array[int], odd: dict[int, tuple[str, ...]], blank: array[int]) -> None:
        self.text = text
        self._starts = starts  # row r is text[starts[r] : starts[r + 1] - 1]; len(rows) + 1 entries
        self._odd = odd  # rows that splitting on tabs would get wrong, as their cells
        self._blank = blank  # ascending indexes of the rows whose cells hold only whitespace

    def __len__(self) -> int:
        return len(self._starts) - 1

    def _row(self, r: int) -> tuple[str, ...]:
        odd = self._odd.get(r)
        if odd is not None:
            return odd
        starts = self._starts
        return tuple(self.text[starts[r]:starts[r + 1] - 1].split("\t"))

    @overload
    def __getitem__(self, index: int) -> tuple[str, ...]: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[tuple[str, ...], ...]: ...
    def __getitem__(self, index: int | slice) -> tuple[str, ...] | tuple[tuple[str, ...], ...]:
        if isinstance(index, slice):
            return tuple(self._row(r) for r in range(*index.indices(len(self))))
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("row index out of range")
        return self._row(index)

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        return map(self._row, range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Rows | tuple | list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:  # never the cells: they are personal data
        return f"<Rows: {len(self)} rows, {len(self.text)} chars>"

    def records_after(self, header: int) -> int:
        """Rows below row `header` that hold a non-blank cell."""
        below = max(len(self) - header - 1, 0)
        blank = self._blank
        return below - (len(blank) - bisect_right(blank, header)) if blank else below

    def head_text(self, n: int) -> str | None:
        """The text of the first `n` rows (cells joined by tabs, rows by line ends) without splitting
        them, or None when one of them is kept as cells (a cell holds a tab, or the row has none)."""
        n = min(n, len(self))
        if self._odd and any(r < n for r in self._odd):
            return None
        return self.text[:self._starts[n] - 1] if n else ""

    def column(self, i: int, first: int) -> list[str]:
        """Cell `i` of every row from row `first` on that has one."""
        text, starts, odd = self.text, self._starts, self._odd
        out: list[str] = []
        append = out.append
        split = str.split
        cells: Sequence[str]
        for r in range(max(first, 0), len(self)):
            if r in odd:
                cells = odd[r]
            else:
                cells = split(text[starts[r]:starts[r + 1] - 1], "\t", i + 1)
            if len(cells) > i:
                append(cells[i])
        return out


class RowsBuilder:
    """Collects rows into the part's text and a `Rows` over it, without a tuple per row meanwhile:
    lines are joined into blocks as they come, the blocks into the text once at the end."""

    BLOCK = 512

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._blocks: list[str] = []
        self._starts = array("q", [0])
        self._pos = 0
        self._odd: dict[int, tuple[str, ...]] = {}
        self._blank = array("q")

    def __len__(self) -> int:
        return len(self._starts) - 1

    def add(self, row: Sequence[str]) -> None:
        line = "\t".join(row)
        r = len(self._starts) - 1
        if line.count("\t") != len(row) - 1:
            self._odd[r] = tuple(row)  # a cell holds a tab, or the row has no cell
        if not line or line.isspace():
            self._blank.append(r)
        lines = self._lines
        lines.append(line)
        if len(lines) >= self.BLOCK:
            self._blocks.append("\n".join(lines))
            lines.clear()
        self._pos += len(line) + 1
        self._starts.append(self._pos)

    def build(self) -> tuple[str, Rows]:
        """(the text, its rows); the builder is spent."""
        if self._lines:
            self._blocks.append("\n".join(self._lines))
            self._lines.clear()
        blocks = self._blocks
        text = blocks[0] if len(blocks) == 1 else "\n".join(blocks)
        self._blocks = []
        del blocks
        return text, Rows(text, self._starts, self._odd, self._blank)


@dataclass(frozen=True)
class Part:
    """One readable unit: a body part or one file (or sheet) inside an attachment."""

    path: str  # "body", "body.html", "名簿.xlsx/Sheet1", "report.zip/data/a.csv"
    text: str = ""  # all text of the part (table cells included, tab/newline separated)
    tables: tuple[Table, ...] = ()
    unscannable: str | None = None  # one of ENCRYPTED, CORRUPT, LIMIT, UNSUPPORTED
    detail: str = ""  # human reason for unscannable ("zip nesting depth > 5"); never content
    kind: str = ""  # sniffed format of the file the part came from ("xlsx", "pdf", "text", "image"...)


@dataclass(frozen=True)
class Attachment:
    """What the send log keeps about an attachment: never its content."""

    filename: str
    content_type: str  # sniffed type, e.g. "xlsx", "zip", "pdf", "text"
    size: int
    sha256: str


@dataclass(frozen=True)
class ExtractLimits:
    max_total_bytes: int = 200 * 1024 * 1024  # extracted bytes per message
    max_zip_depth: int = 5
    max_zip_members: int = 10_000
    max_compression_ratio: float = 100.0  # only checked on members larger than ratio_min_bytes
    ratio_min_bytes: int = 1024 * 1024
    part_seconds: float = 30.0  # wall-clock budget per attachment
    max_pdf_pages: int = 500
    max_parts: int = 1_000  # MIME parts per message
    # each attachment's SHA-256 for the send log (`dlpgate log search --attachment-hash`); `dlpgate
    # archive` keeps no send log and leaves it "" (~1.5 ms per MB: 3% of archiving business mail)
    hash_attachments: bool = True


@dataclass(frozen=True)
class Extraction:
    """Everything extracted from one message (or one file)."""

    parts: tuple[Part, ...]
    attachments: tuple[Attachment, ...] = ()
    subject: str = ""  # RFC 2047-decoded
    header_from: str = ""
    header_to: tuple[str, ...] = ()  # addresses in To (decoded, addr-spec only)
    header_cc: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
