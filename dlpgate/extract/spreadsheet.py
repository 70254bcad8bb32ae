"""Spreadsheets through python-calamine (xlsx/xlsm/xlsb/ods and legacy .xls), rendered the way the
expat reader in xlsx.py renders them, so either path gives the scanner the same rows. Workbooks with
more than STREAM_ABOVE_SHEET_XML_BYTES of sheet XML go to the expat stream for its smaller footprint.

calamine cannot be interrupted inside a sheet: the zip members are checked (encryption, ratio,
total size) before it runs, and the clock between sheets and every few thousand rows.
"""

from __future__ import annotations

import datetime
import io
import zipfile

from .budget import Budget, Unreadable, corrupt
from .model import ENCRYPTED, LIMIT, Part, RowsBuilder, Table
from .xlsx import extract_xlsx, sheet_comments
from .zipread import check_member

# calamine holds a whole sheet as Rust cells: extract + scan peak at ~11-12x the file (up to ~65 MB
# just under this threshold). The expat stream holds only the shared strings and the rows' text
# (model.Rows): ~6-7x (benchmarks/extract_throughput.py --memory-rows). Above this much sheet XML, stream.
STREAM_ABOVE_SHEET_XML_BYTES = 32 * 1024 * 1024


def extract_spreadsheet(path: str, data: bytes, zf: zipfile.ZipFile, budget: Budget, kind: str) -> list[Part]:
    """An OOXML / ODS workbook: calamine first, the expat stream when calamine refuses the file."""
    inflated = 0
    sheet_xml = 0
    for info in zf.infolist():
        check_member(info, budget, charge=False)
        inflated += info.file_size
        if info.filename.startswith("xl/worksheets/"):
            sheet_xml += info.file_size
    if inflated > budget.limits.max_total_bytes:
        raise Unreadable(LIMIT, f"workbook inflates to {inflated} bytes, over {budget.limits.max_total_bytes}")
    if kind == "xlsx" and sheet_xml > STREAM_ABOVE_SHEET_XML_BYTES:
        return extract_xlsx(path, zf, budget)  # big workbook: bounded memory beats speed
    try:
        parts = extract_with_calamine(path, data, budget, kind)
    except Unreadable as exc:
        if kind != "xlsx" or exc.reason == ENCRYPTED or budget.exhausted:
            raise
        return extract_xlsx(path, zf, budget)
    if kind == "xlsx":
        comments = sheet_comments(zf, budget)
        if comments:
            parts.append(Part(path=f"{path}/comments", text=comments, kind=kind))
    return parts


def extract_with_calamine(path: str, data: bytes, budget: Budget, kind: str) -> list[Part]:
    try:
        import python_calamine as pc
    except ImportError:  # pragma: no cover - python-calamine is a dependency
        raise corrupt("no spreadsheet reader installed") from None
    parts: list[Part] = []
    try:
        wb = pc.CalamineWorkbook.from_filelike(io.BytesIO(data))
        for meta in wb.sheets_metadata:
            if "Chart" in str(meta.typ):
                continue
            budget.step(0)
            sheet = wb.get_sheet_by_name(meta.name)
            start = sheet.start
            pad = [""] * (start[1] if start else 0)
            builder = RowsBuilder()
            for i, values in enumerate(sheet.iter_rows()):
                if i % 4096 == 0:
                    budget.step(0)
                row = pad + [_render(v) for v in values]
                while row and not row[-1]:
                    row.pop()
                if row:
                    builder.add(row)
            del sheet  # calamine's copy of the cells, before the text is joined
            sheet_path = f"{path}/{meta.name}"
            text, rows = builder.build()
            budget.charge(len(text))
            parts.append(Part(path=sheet_path, text=text, tables=(Table(sheet_path, rows),), kind=kind))
    except Unreadable:
        raise
    except pc.PasswordError:
        raise Unreadable(ENCRYPTED, "password-protected spreadsheet") from None
    except Exception as exc:  # calamine's errors (zip, XML, BIFF) all mean: this reader cannot read it
        raise corrupt(f"unreadable {kind} ({type(exc).__name__})") from None
    return parts


def _render(v: object) -> str:
    cls = v.__class__
    if cls is str:
        return v  # type: ignore[return-value]
    if cls is float:
        f: float = v  # type: ignore[assignment]
        if f.is_integer() and abs(f) < 1e21:
            return str(int(f))
        return f"{f:.15g}"
    if cls is int:
        return str(v)
    if cls is bool:
        return "TRUE" if v else "FALSE"
    if cls is datetime.datetime:
        d: datetime.datetime = v  # type: ignore[assignment]
        if d.hour == d.minute == d.second == 0:
            return d.strftime("%Y-%m-%d")
        return d.strftime("%Y-%m-%d %H:%M:%S")
    if cls is datetime.date:
        return v.isoformat()  # type: ignore[attr-defined]
    if cls is datetime.time:
        return v.strftime("%H:%M:%S")  # type: ignore[attr-defined]
    if cls is datetime.timedelta:
        return str(v)
    return "" if v is None else str(v)
