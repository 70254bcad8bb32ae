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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from dlpgate.extract.model import Rows, Table
from dlpgate.scan.columns import DELIMITERS
from dlpgate.scan.headerless import people_columns
from dlpgate.scan.normalize import fold, normalise
from dlpgate.scan.rules import DetectorRules

# An identifier-looking cell after normalisation: digits with single separators.
_CELL_NUMBER = re.compile(r"[0-9](?:[-. ]?[0-9]){10,}")
_STRIP_SEPARATORS = str.maketrans("", "", "-. ")
_NUMBER_CELL = re.compile(r"[0-9０-９\-/.:, ]+$")  # a value, not a field name
_DIGIT = re.compile(r"[0-9０-９]")
_QUALIFIER = re.compile(r"^[(（\[［【〈<].*[)）\]］】〉>]$")  # `(漢字)`, `（西暦）` under a field name
_LABEL_COLUMNS = 4  # field names down a column are looked for in the first columns
_JOIN_ROWS = 100_000  # split-number joining reads every row under the header: HTML/docx-sized tables


@dataclass(frozen=True)
class TableFacts:
    name: str
    records: int
    fields: tuple[str, ...]  # field groups named by the header, in rule order
    header_row: int  # index of the (last) header row
    # digits -> categories, for every identifier-looking value in a column headed by a keyword.
    # Read-only once built (a dict for lookups; the dataclass is frozen, not hashable).
    column_context: Mapping[str, frozenset[str]]
    # (category, digits) of identifiers split over adjacent cells under one header (an HTML
    # `colspan` 個人番号 over 1234 | 5678 | 9012), which the text never holds as one run.
    joined: tuple[tuple[str, str], ...] = ()


# The rows a table ends with that are no one's record: a total (合計 25, 小計, Total), a closing 以上,
# a note (※ 取扱注意, 注: …). Looked for only among the last rows, from the bottom up.
_TOTAL_WORDS = frozenset({"合計", "小計", "総計", "計", "累計", "件数", "合計件数", "total", "subtotal", "grandtotal",
                          "以上"})
_NOTE_START = ("※", "＊", "*", "注:", "注：", "(注)", "（注）", "備考:", "備考：")
_TRAILER_ROWS = 5
_TRAILER_SCAN = 50  # rows looked at from the bottom, blank ones included
_TOTAL_VALUE = re.compile(r"[¥￥$]?[0-9０-９\-/.:, ]+(?:件|名|人|円|世帯|人分)?$")


def _trailer(rows: Sequence[Sequence[str]], last: int) -> int:
    """How many of the non-blank rows at the bottom of a table (below its header row `last`) are a
    total, a closing 以上 or a note, not records: a register of 25 with its 合計 row is 25 records."""
    n = 0
    seen = 0
    for r in range(len(rows) - 1, max(last, len(rows) - 1 - _TRAILER_SCAN), -1):
        cells = [c.strip() for c in rows[r] if c and c.strip()]
        if not cells:
            continue
        seen += 1
        if seen > _TRAILER_ROWS:
            break
        head = fold(cells[0]).replace("-", "")
        if head in _TOTAL_WORDS and all(_TOTAL_VALUE.match(c) for c in cells[1:]):
            n += 1
        elif len(cells) == 1 and cells[0].startswith(_NOTE_START):
            n += 1
        else:
            break
    return n


def _records_below(rows: Sequence[Sequence[str]], last: int) -> int:
    """The records under header row `last` (-1: no header): rows with a non-blank cell (their cells
    joined hold a non-blank character), less a closing total or note (_trailer)."""
    if isinstance(rows, Rows):
        records = rows.records_after(last)
    else:
        records = sum(map(bool, map(str.strip, map("".join, rows[last + 1 :]))))
    return records - _trailer(rows, last)


def _any_of(keywords: Iterable[str]) -> re.Pattern[str] | None:
    """A pattern found in a text exactly when one of `keywords` is a substring of it."""
    words = sorted(set(keywords), key=len, reverse=True)
    if not words or "" in words:
        return None
    return re.compile("|".join(re.escape(w) for w in words))


class TableAnalyser:
    """Header detection for one rule set; instances are immutable after construction."""

    def __init__(self, rules: DetectorRules) -> None:
        self._rules = rules
        self._column_keywords: tuple[tuple[str, tuple[str, ...]], ...] = (
            ("my_number", tuple(fold(k) for k in rules.my_number_keywords)),
            ("resident", tuple(fold(k) for k in rules.resident_keywords)),
            ("card", tuple(fold(k) for k in rules.card_keywords)),
            ("licence", tuple(fold(k) for k in rules.licence_keywords)),
        )
        self._fields = tuple((g.name, tuple(k for k in (fold(w) for w in g.keywords) if k)) for g in rules.record_fields)
        # One C-level search says whether a folded cell holds any keyword at all: most cells of a
        # sheet (codes, names, amounts) hold none, and then the per-group loops are skipped (issue 19:
        # they were most of the table analysis of a 1,000-row sheet). None when a keyword folds to
        # "" (it is in every cell, so there is nothing to skip).
        self._any_field = _any_of(k for _n, keywords in self._fields for k in keywords)
        self._any_column = _any_of(k for _c, keywords in self._column_keywords for k in keywords)

    def cell_fields(self, cell: str) -> set[str]:
        """Field groups a header cell names, matched on folded text (`氏　名`, `ﾌﾘｶﾞﾅ`, `住所１`)."""
        if not cell or len(cell) > self._rules.max_header_cell or _NUMBER_CELL.match(cell):
            return set()
        text = fold(cell)
        if self._any_field is not None and self._any_field.search(text) is None:
            return set()
        return {name for name, keywords in self._fields if any(k in text for k in keywords)}

    def row_fields(self, row: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for cell in row:
            found |= self.cell_fields(cell)
        return found

    def find_header(self, rows: Sequence[Sequence[str]]) -> tuple[int, int] | None:
        """(first, last) header row indexes, or None when no header names enough fields.

        The header may sit anywhere in the first `header_rows` rows (title, notes, blank rows above)
        and span up to three rows (merged cells, a row of qualifiers such as `(漢字)`): the rows
        under it that name fields or qualify them and hold no digit belong to the header."""
        need = self._rules.min_fields
        limit = min(len(rows), self._rules.header_rows)
        for i in range(limit):
            here = self.row_fields(rows[i])
            if not here:
                continue
            last = i
            while last + 1 < len(rows) and last - i < 2 and self._continues_header(rows[last + 1]):
                here = here | self.row_fields(rows[last + 1])
                last += 1
            if len(here) >= need:
                return i, last
        return None

    def _continues_header(self, row: Sequence[str]) -> bool:
        cells = [c.strip() for c in row if c and c.strip()]
        if not cells or any(_DIGIT.search(c) for c in cells):
            return False
        named = 0
        for c in cells:
            if self.cell_fields(c):
                named += 1
            elif not _QUALIFIER.match(c) and len(c) > 4:  # short words ("No", "備考") may head columns
                return False
        return named > 0 or all(_QUALIFIER.match(c) for c in cells)

    def analyse(self, table: Table) -> TableFacts | None:
        rows = table.rows
        header = self.find_header(rows)
        if header is None:
            return self._down_a_column(table) or self._keyword_columns(table) or self.headerless(table)
        first, last = header
        fields = self.row_fields(rows[first]) | self.row_fields(rows[last])
        records = _records_below(rows, last)
        if not records:  # a header with nothing under it: perhaps a form read across (label, value)
            down = self._down_a_column(table)
            if down is not None:
                return down
        return TableFacts(
            name=table.name,
            records=records,
            fields=tuple(g.name for g in self._rules.record_fields if g.name in fields),
            header_row=last,
            column_context=self._column_context(rows, first, last),
            joined=self._joined(rows, first, last),
        )

    def analyse_form(self, table: Table) -> TableFacts | None:
        """A form's (label, value) rows: field names down the first column, never a header across
        (a short value under an address row — 住所 / 氏名 伊藤 愛 — would read as a two-row header)."""
        return self._down_a_column(table) or self._keyword_columns(table)

    def _cell_category(self, cell: str) -> set[str]:
        if not cell or len(cell) > self._rules.max_header_cell or _NUMBER_CELL.match(cell):
            return set()
        text = fold(cell)
        if self._any_column is not None and self._any_column.search(text) is None:
            return set()
        return {category for category, keywords in self._column_keywords if any(k in text for k in keywords)}

    def _is_keyword(self, cell: str) -> bool:
        key = fold(cell)
        return any(key == k for _c, keywords in self._column_keywords for k in keywords)

    def _joined(self, rows: Sequence[Sequence[str]], first: int, last: int) -> tuple[tuple[str, str], ...]:
        """Digits split over adjacent cells under one repeated (colspan-expanded) keyword header.

        Only a value in two or more of the span's cells is split: one whole in a single cell is read
        by the scan of the cells like any other, and joining it too would count it twice."""
        head = rows[last]
        spans: list[tuple[int, int, str]] = []
        i = 0
        while i < len(head):
            j = i
            while j + 1 < len(head) and head[j + 1] == head[i] and head[i]:
                j += 1
            if j > i:
                cats = self._cell_category(head[i])
                for category in sorted(cats):
                    spans.append((i, j, category))
            i = j + 1
        if not spans or len(rows) - last > _JOIN_ROWS:
            return ()
        out: list[tuple[str, str]] = []
        for row in rows[last + 1:]:
            for a, b, category in spans:
                cells = row[a:b + 1]
                if sum(1 for c in cells if c.strip()) < 2:
                    continue  # whole in one cell (or absent): the scan of the cells reads it as it is
                value = normalise("".join(cells)).replace(" ", "").replace("-", "")
                if value.isdigit() and 11 <= len(value) <= 19:
                    out.append((category, value))
        return tuple(out)

    def headerless(self, table: Table) -> TableFacts | None:
        """A register without its header row (headerless.py): people told by their cells."""
        fields = people_columns(table.rows)
        known = {g.name for g in self._rules.record_fields}
        if not fields or not set(fields) <= known:
            return None
        return TableFacts(name=table.name, records=_records_below(table.rows, -1), fields=fields, header_row=-1,
                          column_context={})

    def _keyword_columns(self, table: Table) -> TableFacts | None:
        """No personal-records header: still a column headed by an identifier keyword (`個人番号`
        over a column of numbers) gives its cells that context, and split numbers are joined."""
        rows = table.rows
        for r in range(min(len(rows), self._rules.header_rows)):
            row = rows[r]
            cells = [c for c in row if c.strip()]
            # a header row: several cells, or one cell that is a keyword itself (not a sentence naming one)
            if any(self._cell_category(c) for c in row) and (len(cells) > 1 or self._is_keyword(cells[0])):
                context = self._column_context(rows, r, r)
                joined = self._joined(rows, r, r)
                if not context and not joined:
                    return None
                return TableFacts(name=table.name, records=0, fields=(), header_row=r,
                                  column_context=context, joined=joined)
        return None

    def _down_a_column(self, table: Table) -> TableFacts | None:
        """Field names down a column: one person per column to their right, or forms (a label cell
        beside its value), one record per block; a label seen again starts the next block."""
        rows = table.rows
        need = self._rules.min_fields
        limit = min(len(rows), self._rules.header_rows)
        best_col, best_groups = -1, 0
        for c in range(_LABEL_COLUMNS):
            groups: set[str] = set()
            for r in range(limit):
                row = rows[r]
                if len(row) > c + 1 and any(x.strip() for x in row[c + 1:]):
                    groups |= self.cell_fields(row[c])
            if len(groups) > best_groups:
                best_col, best_groups = c, len(groups)
        if best_groups < need:
            return None
        c = best_col
        records = 0
        block_labels: set[str] = set()
        block_groups: set[str] = set()
        block_columns: set[int] = set()
        fields: set[str] = set()
        context: dict[str, frozenset[str]] = {}

        def close() -> int:
            return len(block_columns) if len(block_groups) >= need else 0

        for row in rows:
            if len(row) <= c + 1:
                continue
            label = row[c]
            groups = self.cell_fields(label)
            cats = self._cell_category(label)
            if not groups and not cats:
                continue
            values = [k for k in range(c + 1, len(row)) if row[k].strip()]
            if not values:
                continue
            key = fold(label)
            if key in block_labels:
                records += close()
                block_labels, block_groups, block_columns = set(), set(), set()
            block_labels.add(key)
            block_groups |= groups
            fields |= groups
            block_columns.update(values)
            if cats:
                for k in values:
                    value = normalise(row[k]).strip()
                    if _CELL_NUMBER.fullmatch(value):
                        digits = value.translate(_STRIP_SEPARATORS)
                        context[digits] = context.get(digits, frozenset()) | frozenset(cats)
        records += close()
        if not records:
            return None
        return TableFacts(
            name=table.name,
            records=records,
            fields=tuple(g.name for g in self._rules.record_fields if g.name in fields),
            header_row=0,
            column_context=context,
        )

    def _column_context(self, rows: Sequence[Sequence[str]], first: int, last: int) -> Mapping[str, frozenset[str]]:
        columns: dict[int, set[str]] = {}
        for r in range(first, last + 1):
            for i, cell in enumerate(rows[r]):
                named = self._cell_category(cell)
                if named:
                    columns.setdefault(i, set()).update(named)
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


# Between two cells of a space-aligned listing: two or more spaces (or a tab), where a name's
# single space stays inside its cell.
_WIDE_GAP = re.compile(r"[ \u3000]{2,}|\t")


def _space_cells(row: str, width: int) -> tuple[str, ...]:
    """A space-aligned row's cells when they can be told apart from the spaces inside them: split at
    gaps of two or more spaces, else at every space, and kept only when that gives exactly the
    header's `width` cells; otherwise the whole row is one cell (a record, no column context)."""
    stripped = row.strip()
    for cells in (_WIDE_GAP.split(stripped), stripped.split()):
        if len(cells) == width:
            return tuple(cells)
    return (row,)


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
        rows.extend(_space_cells(r, len(words)) for r in line_rows if r.split() != list(words))
        pos = nxt + 1
    return Table(name=name, rows=tuple(rows)), min(pos, n)


def column_blocks(text: str, starts: Sequence[int], name: str, is_field: Callable[[str], bool],
                  max_label: int) -> Table | None:
    """A table pasted column by column (text copied out of a PDF, a report that prints each column
    in turn): a line that is only a field name (氏名, 生年月日 ...) and then its values, one per line,
    up to a blank line or the next such line. Two or more such columns are read as one table, the
    labels as its header and the i-th value of each column as row i; the caller judges the header.
    `starts`: the sorted starts of the lines that hold a field word (the only candidate labels)."""

    def is_label(line: str) -> bool:
        return 0 < len(line) <= max_label and not any(c.isdigit() for c in line) and is_field(line)

    columns: list[tuple[str, list[str]]] = []
    n = len(text)
    read_until = -1
    for ls in starts:
        if ls < read_until:
            continue  # a value line of a column already read
        le = text.find("\n", ls)
        if le < 0:
            le = n
        label = text[ls:le].strip()
        if not is_label(label):
            continue
        values: list[str] = []
        pos = le + 1
        while pos < n:
            nxt = text.find("\n", pos)
            if nxt < 0:
                nxt = n
            line = text[pos:nxt].strip()
            if not line or is_label(line):
                break
            values.append(line)
            pos = nxt + 1
        read_until = pos
        if len(values) >= 2:
            columns.append((label, values))
    if len(columns) < 2:
        return None
    depth = max(len(values) for _, values in columns)
    rows = [tuple(label for label, _ in columns)]
    rows.extend(tuple(values[i] if i < len(values) else "" for _, values in columns) for i in range(depth))
    return Table(name=name, rows=tuple(rows))


# Lines between a header and its first row that are not rows: a blank, a note typed under the
# header (（※住所は住民票記載のとおり）), a unit line. Up to this many are stepped over when a row with
# as many cells as the header follows, and only under a header of three cells or more (a label
# and its value, 続柄<TAB>世帯主, in a form of blocks, is no header to read past blanks from).
_NOTE_LINES = 2


def _past_notes(text: str, pos: int, delimiter: str, width: int) -> int:
    """Where the rows under a header of `width` cells start: `pos`, or past up to _NOTE_LINES
    lines without the delimiter when the line after them is a row as wide as the header."""
    if width < 3:
        return pos
    n = len(text)
    at = pos
    for _ in range(_NOTE_LINES + 1):
        if at >= n:
            return pos
        nxt = text.find("\n", at)
        if nxt < 0:
            nxt = n
        line = text[at:nxt]
        if delimiter in line:
            cells = len(_bar_cells(line, delimiter)) if delimiter in _BARS else line.count(delimiter) + 1
            return at if at == pos or cells == width else pos
        at = nxt + 1
    return pos


def body_table_at(text: str, position: int, name: str,
                  is_field: Callable[[str], bool] | None = None) -> tuple[Table, int] | None:
    """The delimited block whose first line holds `position`, and its end offset.

    The line at `position` must contain a delimiter (tab, comma, a table bar |, ｜, │, or a
    semicolon: columns.DELIMITERS); the block runs over the following lines that are non-empty and contain
    the same delimiter (a Markdown rule row |---| is skipped). Header judgement is the caller's.

    With `is_field`, a line without tab or comma whose space-separated words are mostly field
    names ("氏名 フリガナ 住所 生年月日": a roster printed to PDF, a space-aligned listing) heads a
    space table: its rows are the following non-empty lines with at least as many words. A row
    whose gaps of two or more spaces (or, failing that, whose single spaces) cut it into exactly the
    header's cells is read as those cells, so a 個人番号 column gives its column context; any other
    row is kept whole (one cell): it counts as a record, and gives no column context.
    """
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    if end < 0:
        end = len(text)
    line = text[start:end].rstrip("\r")
    delimiter = next((d for d in DELIMITERS if d in line), None)
    if delimiter is None:
        return _space_table_at(text, line, end, name, is_field) if is_field is not None else None
    barred = delimiter in _BARS
    rows = [_bar_cells(line, delimiter) if barred else tuple(line.split(delimiter))]
    pos = end + 1
    n = len(text)
    pos = _past_notes(text, pos, delimiter, len(rows[0]))
    while pos < n:
        nxt = text.find("\n", pos)
        if nxt < 0:
            nxt = n
        row = text[pos:nxt].rstrip("\r")
        if not row.strip() or delimiter not in row:
            break
        if barred:
            cells = _bar_cells(row, delimiter)
            if not all(_RULE_CELL.match(c) for c in cells):  # |---|:--:| under a Markdown header
                rows.append(cells)
        else:
            rows.append(tuple(row.split(delimiter)))
        pos = nxt + 1
    return Table(name=name, rows=tuple(rows)), min(pos, n)


# The bars among columns.DELIMITERS (a Markdown or box-drawn table pasted from a chat, ｜ typed in
# Japanese input): a row's outer bars and each cell's padding are trimmed, its |---| rule skipped.
# Label/value pairs of a form typed into text. A label is a short run without spaces or colons; its
# value runs to the next label (after a space, tab, 、 or comma) or to the end of the line, so one
# line may hold a whole record: 氏名：試験 太郎　生年月日：昭和45年3月2日　住所：架空市本町1-2-3.
_PAIR = re.compile(r"([^\s:：、,，]{1,20})[ \t\u3000]*[:：][ \t\u3000]*"
                   r"(.*?)(?=[ \t\u3000、,，]+[^\s:：、,，]{1,20}[ \t\u3000]*[:：]|[ \t\u3000]*$)")
# A label and its value with no colon, cut at the first blank (氏名　試験 太郎, TEL 03-...): only for a
# label that is a field name and a value that is not one (a space-separated header is no form).
_SPACED_PAIR = re.compile(r"[ \t\u3000]*([^\s:：]{1,20})[ \t\u3000]+(\S.*?)[ \t\u3000\r]*$")


# A label in brackets, its value running to the next bracketed label or the line's end:
# 【氏名】試験 太郎, ［住所］架空市本町1-2-3, 〈生年月日〉昭和45年3月2日 (a colon after the bracket is allowed).
_BRACKET_PAIR = re.compile(r"[【［\[〔〈《]([^】］\]〕〉》\s]{1,20})[】］\]〕〉》][ \t\u3000]*[:：]?[ \t\u3000]*"
                           r"(.*?)(?=[ \t\u3000]*[【［\[〔〈《][^】］\]〕〉》\s]{1,20}[】］\]〕〉》]|[ \t\u3000]*$)")


def form_pairs(line: str, is_field: Callable[[str], bool]) -> list[tuple[str, str]]:
    """The (label, value) pairs of one line of a form typed into text: the `【label】value` pairs when
    a bracketed label is a field name, else every `label：value` pair on it, or else one `label value`
    pair whose label is a field name (`is_field`) and whose value is neither a field name nor wholly
    bracketed (`（必須）` in a blank template)."""
    if "【" in line or "［" in line or "[" in line or "〔" in line or "〈" in line or "《" in line:
        bracketed = [(m.group(1), m.group(2).rstrip()) for m in _BRACKET_PAIR.finditer(line)]
        if any(is_field(label) for label, _v in bracketed):
            return [(label, value) for label, value in bracketed if value.strip()]
    pairs = [(m.group(1), m.group(2)) for m in _PAIR.finditer(line) if m.group(2) or m.end() < len(line)]
    if pairs:
        return [(label, value.rstrip()) for label, value in pairs if value.strip()]
    m = _SPACED_PAIR.match(line)
    if m is None or not is_field(m.group(1)):
        return []
    value = m.group(2)
    first = value.split(None, 1)[0]
    if is_field(first) or _QUALIFIER.match(value):
        return []
    return [(m.group(1), value)]


_BARS = ("|", "｜", "│", "┃")
_RULE_CELL = re.compile(r"[ \t]*:?[-ー─━=]{2,}:?[ \t]*$|[ \t]*$")


def _bar_cells(line: str, bar: str) -> tuple[str, ...]:
    """The cells of `| a | b |`: the outer bars dropped, the padding around each cell trimmed."""
    inner = line.strip()
    if inner.startswith(bar):
        inner = inner[1:]
    if inner.endswith(bar):
        inner = inner[:-1]
    return tuple(cell.strip() for cell in inner.split(bar))
