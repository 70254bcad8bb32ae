"""Tables of personal records: header detection, record counts and column context.

A table is personal records when one of its first rows (title rows and blank rows above it are
skipped) names at least `min_fields` distinct field groups (氏名, 住所, 生年月日 ...). A header may
span two rows (merged cells: `氏名` merged down, `電話番号` under a merged `連絡先`). Records are
the non-empty rows below the header.

A header cell that names an identifier (個人番号, 住民票コード, カード番号, 免許証番号) gives every
value in its column that keyword as context, however far down the sheet it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dlpgate.extract.model import Rows, Table
from dlpgate.scan.normalize import normalise
from dlpgate.scan.rules import DetectorRules

# An identifier-looking cell after normalisation: digits with single separators.
_CELL_NUMBER = re.compile(r"[0-9](?:[-. ]?[0-9]){10,}")
_STRIP_SEPARATORS = str.maketrans("", "", "-. ")


@dataclass(frozen=True)
class TableFacts:
    name: str
    records: int
    fields: tuple[str, ...]  # field groups named by the header, in rule order
    header_row: int  # index of the (last) header row
    # digits -> categories, for every identifier-looking value in a column headed by a keyword.
    # Read-only once built (a dict for lookups; the dataclass is frozen, not hashable).
    column_context: Mapping[str, frozenset[str]]


class TableAnalyser:
    """Header detection for one rule set; instances are immutable after construction."""

    def __init__(self, rules: DetectorRules) -> None:
        self._rules = rules
        self._column_keywords: tuple[tuple[str, tuple[str, ...]], ...] = (
            ("my_number", rules.my_number_keywords),
            ("resident", rules.resident_keywords),
            ("card", rules.card_keywords),
            ("licence", rules.licence_keywords),
        )

    def cell_fields(self, cell: str) -> set[str]:
        text = normalise(cell).strip()
        if not text or len(text) > self._rules.max_header_cell:
            return set()
        return {g.name for g in self._rules.record_fields if any(k in text for k in g.keywords)}

    def row_fields(self, row: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for cell in row:
            found |= self.cell_fields(cell)
        return found

    def find_header(self, rows: Sequence[Sequence[str]]) -> tuple[int, int] | None:
        """(first, last) header row indexes, or None when no header names enough fields."""
        need = self._rules.min_fields
        limit = min(len(rows), self._rules.header_rows)
        for i in range(limit):
            here = self.row_fields(rows[i])
            if len(here) >= need:
                return i, i
            if here and i + 1 < len(rows) and len(here | self.row_fields(rows[i + 1])) >= need:
                return i, i + 1
        return None

    def analyse(self, table: Table) -> TableFacts | None:
        rows = table.rows
        header = self.find_header(rows)
        if header is None:
            return None
        first, last = header
        fields = self.row_fields(rows[first]) | self.row_fields(rows[last])
        # A record is a row with a non-blank cell: its cells joined hold a non-blank character.
        if isinstance(rows, Rows):
            records = rows.records_after(last)
        else:
            records = sum(map(bool, map(str.strip, map("".join, rows[last + 1 :]))))
        return TableFacts(
            name=table.name,
            records=records,
            fields=tuple(g.name for g in self._rules.record_fields if g.name in fields),
            header_row=last,
            column_context=self._column_context(rows, first, last),
        )

    def _column_context(self, rows: Sequence[Sequence[str]], first: int, last: int) -> Mapping[str, frozenset[str]]:
        columns: dict[int, set[str]] = {}
        for r in range(first, last + 1):
            for i, cell in enumerate(rows[r]):
                text = normalise(cell)
                for category, keywords in self._column_keywords:
                    if any(k in text for k in keywords):
                        columns.setdefault(i, set()).add(category)
        context: dict[str, frozenset[str]] = {}
        for i, categories in columns.items():
            cats = frozenset(categories)
            if isinstance(rows, Rows):
                cells = rows.column(i, last + 1)
            else:
                cells = [row[i] for row in rows[last + 1 :] if len(row) > i]
            # Plain ASCII digits (what spreadsheets hold) in C-level passes; the rest one by one.
            found = [c for c in cells if len(c) >= 11 and c.isascii() and c.isdigit()]
            for cell in cells:
                if cell and not (cell.isascii() and cell.isdigit()):
                    value = normalise(cell).strip()
                    if _CELL_NUMBER.fullmatch(value):
                        found.append(value.translate(_STRIP_SEPARATORS))
            if not context:
                context = dict.fromkeys(found, cats)
            else:
                for digits in found:
                    context[digits] = context.get(digits, frozenset()) | cats
        return context


def _space_table_at(text: str, line: str, end: int, name: str,
                    is_field: Callable[[str], bool]) -> tuple[Table, int] | None:
    words = line.strip("\f").split()
    if len(words) < 2 or 2 * sum(map(is_field, words)) < len(words):
        return None
    rows: list[tuple[str, ...]] = [tuple(words)]
    pos, n = end + 1, len(text)
    while pos < n:
        nxt = text.find("\n", pos)
        if nxt < 0:
            nxt = n
        line_rows = [r for r in text[pos:nxt].rstrip("\r").split("\f") if r.strip()]  # \f: a page break
        if not line_rows or any(len(r.split()) < len(words) for r in line_rows):
            break
        # a header repeated on the next page is not a record
        rows.extend((r,) for r in line_rows if r.split() != list(words))
        pos = nxt + 1
    return Table(name=name, rows=tuple(rows)), min(pos, n)


def body_table_at(text: str, position: int, name: str,
                  is_field: Callable[[str], bool] | None = None) -> tuple[Table, int] | None:
    """The tab- or comma-separated block whose first line holds `position`, and its end offset.

    The line at `position` must contain a delimiter; the block runs over the following lines that
    are non-empty and contain the same delimiter. Header judgement is the caller's.

    With `is_field`, a line without tab or comma whose space-separated words are mostly field
    names ("氏名 フリガナ 住所 生年月日": a roster printed to PDF, a space-aligned listing) heads a
    space table: its rows are the following non-empty lines with at least as many words. Cells of
    such rows cannot be told from the spaces inside them, so each row is kept whole (one cell):
    it counts as a record, and gives no column context.
    """
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    if end < 0:
        end = len(text)
    line = text[start:end].rstrip("\r")
    delimiter = "\t" if "\t" in line else "," if "," in line else None
    if delimiter is None:
        return _space_table_at(text, line, end, name, is_field) if is_field is not None else None
    rows = [tuple(line.split(delimiter))]
    pos = end + 1
    n = len(text)
    while pos < n:
        nxt = text.find("\n", pos)
        if nxt < 0:
            nxt = n
        row = text[pos:nxt].rstrip("\r")
        if not row.strip() or delimiter not in row:
            break
        rows.append(tuple(row.split(delimiter)))
        pos = nxt + 1
    return Table(name=name, rows=tuple(rows)), min(pos, n)
