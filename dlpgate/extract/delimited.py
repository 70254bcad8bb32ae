"""CSV / TSV (CP932 or UTF-8, with or without BOM) -> text and one table."""

from __future__ import annotations

import csv
import io

from .budget import Budget
from .model import Table
from .textdecode import decode_text


def extract_delimited(data: bytes, path: str, budget: Budget) -> tuple[str, tuple[Table, ...]]:
    text = decode_text(data)
    first = text[:4096].split("\n", 1)[0]
    delimiter = "\t" if first.count("\t") > first.count(",") else ","
    rows: list[tuple[str, ...]] = []
    try:
        for i, row in enumerate(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)):
            if i % 5000 == 0:
                budget.step(0)
            while row and not row[-1].strip():
                row.pop()
            if row:
                rows.append(tuple(cell.strip() for cell in row))
    except csv.Error:  # a field over csv's size limit or a stray NUL: fall back to plain lines
        rows = [tuple(line.split(delimiter)) for line in text.splitlines() if line.strip()]
    flat = "\n".join("\t".join(r) for r in rows)
    return flat, (Table(path, tuple(rows)),)
