"""CSV / TSV (CP932 or UTF-8, with or without BOM) -> text and one table."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from itertools import chain

from .budget import Budget
from .model import RowsBuilder, Table
from .textdecode import decode_text

# io.StringIO holds its text at four bytes a character: the decoded file is handed to csv one piece
# of about this many characters at a time (cut after a newline), not as one second copy.
PIECE = 1 << 20


def _lines(text: str) -> Iterator[str]:
    """The lines csv's newline="" reading sees (ended by \r\n, \r or \n, ends kept), piece by piece."""
    def pieces() -> Iterator[io.StringIO]:
        pos, n = 0, len(text)
        while pos < n:
            cut = text.find("\n", pos + PIECE)
            end = n if cut < 0 else cut + 1
            yield io.StringIO(text[pos:end], newline="")
            pos = end

    return chain.from_iterable(pieces())


def extract_delimited(data: bytes, path: str, budget: Budget) -> tuple[str, tuple[Table, ...]]:
    text = decode_text(data)
    first = text[:4096].split("\n", 1)[0]
    delimiter = "\t" if first.count("\t") > first.count(",") else ","
    rows = RowsBuilder()
    try:
        add, strip = rows.add, str.strip
        for i, row in enumerate(csv.reader(_lines(text), delimiter=delimiter)):
            if i % 5000 == 0:
                budget.step(0)
            while row and not row[-1].strip():
                row.pop()
            if row:
                add(list(map(strip, row)))
    except csv.Error:  # a field over csv's size limit or a stray NUL: fall back to plain lines
        rows = RowsBuilder()
        for line in text.splitlines():
            if line.strip():
                rows.add(line.split(delimiter))
    del text  # the decoded file, before the table's text is joined
    flat, table = rows.build()
    return flat, (Table(path, table),)
