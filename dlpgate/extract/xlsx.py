"""xlsx / xlsm: every sheet's cells, via python-calamine with a direct expat stream as the fallback.

Measured in benchmarks/extract_throughput.py (20,000 x 8 resident register): python-calamine plus
rendering ~0.14 s, the expat stream ~0.4 s, openpyxl read-only ~1.9 s. calamine (Rust, quick-xml:
no DTD, no entity expansion) is the primary path; it cannot be interrupted inside a sheet, so the
member sizes and ratios are checked before it runs (zipread.check_member) and the clock between
sheets. When calamine refuses a file the expat stream (DTD refused, clock checked between chunks)
reads it, so an odd file is never lost to one parser's taste. Cells: shared strings (phonetic runs left out), inline strings,
numbers rendered as Excel shows integers (a 12-digit My Number stored as a number stays 12 digits,
never `1.23E+11`), dates by their cell style, booleans, errors and formulas' cached values. Hidden
sheets are read like any other (they leak just as well).
"""

from __future__ import annotations

import datetime
import re
import zipfile
from decimal import Decimal, InvalidOperation

from .budget import Budget
from .model import Part, RowsBuilder, Table
from .xmlsafe import LocalNames, feed, new_parser, parse_events, parse_small, relationships
from .zipread import MemberStream, iter_member, read_member

# Built-in number formats that are dates or times (ECMA-376 18.8.30, plus the CJK ids 27-36, 50-58).
_BUILTIN_DATE_FORMATS = frozenset([*range(14, 23), *range(27, 37), *range(45, 48), *range(50, 59)])
_FORMAT_NOISE = re.compile(r'"[^"]*"|\[[^\]]*\]|\\.|_.|\*.')
_DATE_TOKENS = re.compile(r"[ymdhsge]", re.I)
_DIGITS = "0123456789"


def extract_xlsx(path: str, zf: zipfile.ZipFile, budget: Budget) -> list[Part]:
    names = {i.filename: i for i in zf.infolist()}

    def member(p: str) -> bytes | None:
        info = names.get(p)
        return read_member(zf, info, budget, charge=False) if info is not None else None

    workbook = member("xl/workbook.xml")
    if workbook is None:
        return [Part(path=path, text="", kind="xlsx")]
    rels = relationships(member("xl/_rels/workbook.xml.rels"), "xl", budget)
    sheets: list[tuple[str, str]] = []
    date1904 = False
    for tag, attrs in parse_small(workbook, budget, "workbook.xml"):
        if tag == "sheet":
            target = rels.get(attrs.get("id", ""), "")
            if target:
                sheets.append((attrs.get("name", target), target))
        elif tag == "workbookPr":
            date1904 = attrs.get("date1904", "0") in ("1", "true")
    shared_path = next((t for t in rels.values() if t.endswith("sharedStrings.xml")), "xl/sharedStrings.xml")
    shared = _shared_strings(zf, names.get(shared_path), budget)
    date_styles = _date_styles(member(next((t for t in rels.values() if t.endswith("styles.xml")),
                                           "xl/styles.xml")), budget)
    read: list[tuple[str, RowsBuilder]] = []
    for sheet_name, target in sheets:
        info = names.get(target)
        if info is None or not target.startswith("xl/worksheets/"):
            continue  # chart sheets and dialog sheets hold no cells
        read.append((f"{path}/{sheet_name}", _sheet_rows(zf, info, shared, date_styles, date1904, budget, sheet_name)))
    shared.clear()  # before the sheets' texts are joined: the two never need to be in memory together
    parts: list[Part] = []
    for sheet_path, builder in read:
        text, rows = builder.build()
        budget.charge(len(text))
        parts.append(Part(path=sheet_path, text=text, tables=(Table(sheet_path, rows),), kind="xlsx"))
    comments = sheet_comments(zf, budget)
    if comments:
        parts.append(Part(path=f"{path}/comments", text=comments, kind="xlsx"))
    return parts


def _shared_strings(zf: zipfile.ZipFile, info: zipfile.ZipInfo | None, budget: Budget) -> list[str]:
    if info is None:
        return []
    out: list[str] = []
    buf: list[str] = []
    names = LocalNames()
    capture = False
    in_phonetic = False

    def start(name: str, _attrs: dict[str, str]) -> None:
        nonlocal capture, in_phonetic
        n = names[name]
        if n == "t":
            capture = not in_phonetic
        elif n == "si":
            buf.clear()
        elif n == "rPh":
            in_phonetic = True

    def end(name: str) -> None:
        nonlocal capture, in_phonetic
        n = names[name]
        if n == "t":
            capture = False
        elif n == "si":
            out.append("".join(buf))
        elif n == "rPh":
            in_phonetic = False

    def chars(data: str) -> None:
        if capture:
            buf.append(data)

    parse_events(MemberStream(iter_member(zf, info, budget, charge=False)), budget, "sharedStrings.xml", start, end, chars)
    return out


def _date_styles(data: bytes | None, budget: Budget) -> frozenset[int]:
    """Indices of cellXfs entries whose number format is a date or time."""
    if data is None:
        return frozenset()
    custom_dates: set[int] = set()
    styles: list[int] = []
    in_cell_xfs = False
    for tag, attrs in _styles_tags(data, budget):
        if tag == "numFmt":
            code = _FORMAT_NOISE.sub("", attrs.get("formatCode", ""))
            if _DATE_TOKENS.search(code) and code.lower() != "general":
                custom_dates.add(_int(attrs.get("numFmtId")))
        elif tag == "cellXfs":
            in_cell_xfs = True
        elif tag == "/cellXfs":
            in_cell_xfs = False
        elif tag == "xf" and in_cell_xfs:
            styles.append(_int(attrs.get("numFmtId")))
    return frozenset(i for i, fmt in enumerate(styles) if fmt in _BUILTIN_DATE_FORMATS or fmt in custom_dates)


def _styles_tags(data: bytes, budget: Budget) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    names = LocalNames()
    p = new_parser()
    p.StartElementHandler = lambda name, attrs: out.append((names[name], attrs))
    p.EndElementHandler = lambda name: out.append(("/" + names[name], {})) if names[name] == "cellXfs" else None
    feed(p, data, budget, "styles.xml")
    return out


def _int(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        return -1


def _sheet_rows(zf: zipfile.ZipFile, info: zipfile.ZipInfo, shared: list[str], date_styles: frozenset[int],
                date1904: bool, budget: Budget, sheet: str) -> RowsBuilder:
    """Rows of rendered cells; cells placed by their reference so columns stay under their headers."""
    rows = RowsBuilder()
    row: list[str] = []
    texts: list[str] = []
    names = LocalNames()
    columns: dict[str, int] = {}
    ctype: str | None = None
    cstyle: str | None = None
    col = 0
    capture = False
    in_inline = False
    in_phonetic = False
    n_shared = len(shared)

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal ctype, cstyle, col, capture, in_inline, in_phonetic
        n = names[name]
        if n == "c":
            ctype = attrs.get("t")
            cstyle = attrs.get("s")
            ref = attrs.get("r")
            if ref:
                letters = ref.rstrip(_DIGITS)
                c = columns.get(letters)
                col = c if c is not None else columns.setdefault(letters, _column(letters))
            else:
                col = len(row)
            texts.clear()
        elif n == "v":
            if not in_inline:
                capture = True
        elif n == "row":
            row.clear()
        elif n == "t":
            capture = in_inline and not in_phonetic
        elif n == "is":
            in_inline = True
        elif n == "rPh":
            in_phonetic = True

    def end(name: str) -> None:
        nonlocal capture, in_inline, in_phonetic
        n = names[name]
        if n == "c":
            raw = "".join(texts) if texts else ""
            if ctype is None or ctype == "n":
                if not raw:
                    value = ""
                elif cstyle is not None and cstyle.isdigit() and int(cstyle) in date_styles:
                    value = _date(raw, date1904)
                else:
                    value = raw if raw.isdigit() else _number(raw)
            elif ctype == "s":
                i = int(raw) if raw.isdigit() else -1
                value = shared[i] if 0 <= i < n_shared else ""
            elif ctype == "b":
                value = "TRUE" if raw == "1" else "FALSE"
            else:  # inlineStr, str (formula result), e (error), d (ISO date)
                value = raw
            if col == len(row):
                row.append(value)
            elif col > len(row):
                row.extend([""] * (col - len(row)))
                row.append(value)
            elif col >= 0:
                row[col] = value
        elif n == "v" or n == "t":
            capture = False
        elif n == "row":
            while row and not row[-1]:
                row.pop()
            if row:
                rows.add(row)
        elif n == "is":
            in_inline = False
        elif n == "rPh":
            in_phonetic = False

    def chars(data: str) -> None:
        if capture:
            texts.append(data)

    parse_events(MemberStream(iter_member(zf, info, budget, charge=False)), budget, f"sheet {sheet!r}", start, end, chars)
    return rows


def _column(letters: str) -> int:
    n = 0
    for ch in letters.upper():
        if not "A" <= ch <= "Z":
            return -1
        n = n * 26 + ord(ch) - 64
    return n - 1 if 0 < n <= 16384 else -1


def _number(raw: str) -> str:
    """Excel's integers without `.0` or exponent; other numbers to 15 significant digits, as Excel shows."""
    try:
        d = Decimal(raw)
    except InvalidOperation:
        return raw
    if not d.is_finite():
        return raw
    if d == d.to_integral_value() and abs(d) < Decimal("1e21"):
        return str(int(d))
    return f"{float(d):.15g}"


_EPOCH_1900 = datetime.datetime(1899, 12, 30)
_EPOCH_1904 = datetime.datetime(1904, 1, 1)


def _date(raw: str, date1904: bool) -> str:
    try:
        serial = float(raw)
        moment = (_EPOCH_1904 if date1904 else _EPOCH_1900) + datetime.timedelta(days=serial)
    except (ValueError, OverflowError):
        return _number(raw)
    if 0 <= serial < 1:
        return moment.strftime("%H:%M:%S")
    if moment.hour == moment.minute == moment.second == 0 and moment.microsecond < 500_000:
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def sheet_comments(zf: zipfile.ZipFile, budget: Budget) -> str:
    """Cell comments (legacy notes and threaded comments): text only, in member order."""
    out: list[str] = []
    for info in zf.infolist():
        member = info.filename
        if member.startswith(("xl/comments", "xl/threadedComments/")) and member.endswith(".xml"):
            out.append(_all_text(read_member(zf, info, budget, charge=False), budget, member))
    return "\n".join(t for t in out if t)


def _all_text(data: bytes, budget: Budget, what: str) -> str:
    buf: list[str] = []
    names = LocalNames()
    capture = False

    def start(name: str, _attrs: dict[str, str]) -> None:
        nonlocal capture
        n = names[name]
        if n == "t" or n == "text":
            capture = True

    def end(name: str) -> None:
        nonlocal capture
        n = names[name]
        if n == "t" or n == "text":
            capture = False
        elif n in ("comment", "threadedComment", "p"):
            buf.append("\n")

    def chars(data: str) -> None:
        if capture:
            buf.append(data)

    parse_events(data, budget, what, start, end, chars)
    return "".join(buf).strip()
