"""Extraction throughput: each format's reader against its alternatives, measured in the same run.

    .venv/bin/python benchmarks/extract_throughput.py [--rows 20000] [--repeat 3] [--memory-rows 100000]

Prints best-of-N seconds per reader and its ratio to the reference alternative, plus the issue's
targets (20,000 x 8 resident xlsx < 0.3 s, 2,000-paragraph docx < 0.05 s, 50-page Japanese PDF < 0.5 s),
and the peak memory of extracting + scanning a large register in a fresh process (<= ~10x the file;
`--memory-rows 280000` is a 25 MB file).
All inputs are synthetic (tests/fixtures/make_fixtures.py).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

import make_fixtures as fx  # noqa: E402

from dlpgate.extract import ExtractLimits, extract_file, extract_message  # noqa: E402
from dlpgate.extract.budget import Budget  # noqa: E402
from dlpgate.extract.xlsx import extract_xlsx  # noqa: E402


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def report(title: str, rows: list[tuple[str, float]], target: float | None = None) -> None:
    ref = rows[0][1]
    print(f"\n{title}")
    for name, secs in rows:
        print(f"  {name:<38} {secs * 1000:9.1f} ms   {secs / ref:6.2f}x of {rows[0][0]}")
    if target is not None:
        ours = rows[1][1]
        print(f"  target < {target * 1000:.0f} ms: {'met' if ours < target else 'MISSED'} ({ours * 1000:.1f} ms)")


def bench_xlsx(rows: int, repeat: int) -> None:
    data = fx.resident_xlsx(rows)

    def openpyxl_ro() -> None:
        import openpyxl

        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        for ws in wb.worksheets:
            for _ in ws.iter_rows(values_only=True):
                pass

    def calamine_raw() -> None:
        import python_calamine as pc

        wb = pc.CalamineWorkbook.from_filelike(io.BytesIO(data))
        for name in wb.sheet_names:
            wb.get_sheet_by_name(name).to_python()

    def expat_stream() -> None:
        extract_xlsx("a.xlsx", zipfile.ZipFile(io.BytesIO(data)), Budget(ExtractLimits()))

    report(f"xlsx: {rows:,} rows x 8 cols, {len(data) / 1e6:.2f} MB", [
        ("openpyxl read-only (reference)", best(openpyxl_ro, 1)),
        ("dlpgate extract_file (calamine)", best(lambda: extract_file("a.xlsx", data), repeat)),
        ("dlpgate expat stream (fallback)", best(expat_stream, repeat)),
        ("python-calamine raw, no rendering", best(calamine_raw, repeat)),
    ], target=0.3 if rows == 20_000 else None)


def bench_docx(repeat: int) -> None:
    data = fx.docx_bytes([f"第{i}段落 個人番号の取扱いについてのお知らせです。" for i in range(2000)])

    def python_docx() -> None:
        import docx

        d = docx.Document(io.BytesIO(data))
        "\n".join(p.text for p in d.paragraphs)

    report(f"docx: 2,000 paragraphs, {len(data) / 1e3:.0f} kB", [
        ("python-docx (reference)", best(python_docx, repeat)),
        ("dlpgate extract_file (expat stream)", best(lambda: extract_file("a.docx", data), repeat)),
    ], target=0.05)


def bench_pptx(repeat: int) -> None:
    data = fx.pptx_bytes([f"スライド{i} 個人番号の取扱い" for i in range(100)], notes="メモ")

    def python_pptx() -> None:
        from pptx import Presentation

        prs = Presentation(io.BytesIO(data))
        for slide in prs.slides:
            for shape in slide.shapes:
                if shape.has_text_frame:
                    shape.text_frame.text  # noqa: B018

    report(f"pptx: 100 slides, {len(data) / 1e3:.0f} kB", [
        ("python-pptx (reference)", best(python_pptx, repeat)),
        ("dlpgate extract_file (expat stream)", best(lambda: extract_file("a.pptx", data), repeat)),
    ])


def bench_pdf(repeat: int) -> None:
    data = fx.resident_pdf(50)

    def pdfminer() -> None:
        from pdfminer.high_level import extract_text

        extract_text(io.BytesIO(data))

    def pdfminer_child() -> None:
        from dlpgate.extract.pdf import pdfminer_in_child

        pdfminer_in_child(data, Budget(ExtractLimits()))

    report(f"pdf: 50 pages Japanese CID font, {len(data) / 1e3:.0f} kB", [
        ("pdfminer.six in-process (reference)", best(pdfminer, 1)),
        ("dlpgate extract_file (pypdfium2)", best(lambda: extract_file("a.pdf", data), repeat)),
        ("dlpgate pdfminer fallback (child proc)", best(pdfminer_child, 1)),
    ], target=0.5)


def bench_csv_and_message(rows: int, repeat: int) -> None:
    table = [fx.HEADER, *fx.resident_rows(rows)]
    data = fx.csv_bytes(table)

    def stdlib_csv() -> None:
        import csv

        list(csv.reader(io.StringIO(data.decode("cp932"))))

    report(f"csv: {rows:,} rows CP932, {len(data) / 1e6:.2f} MB", [
        ("csv.reader on a known charset (reference)", best(stdlib_csv, repeat)),
        ("dlpgate extract_file (detect + table)", best(lambda: extract_file("a.csv", data), repeat)),
    ])
    xlsx = fx.resident_xlsx(2000)
    raw = fx.email_bytes("本文 " * 200, attachments=[("名簿.xlsx", xlsx), ("名簿.csv", fx.csv_bytes(table[:2001]))],
                         html="<table>" + "<tr><td>1</td><td>2</td></tr>" * 200 + "</table>")
    n = 20
    secs = best(lambda: [extract_message(raw) for _ in range(n)], 1)
    print(f"\nmessage: text+html body, 2,000-row xlsx and csv attachments ({len(raw) / 1e3:.0f} kB)")
    print(f"  extract_message: {secs / n * 1000:.1f} ms/message, {n / secs:.1f} messages/s on one core")


def bench_memory(rows: int, fixture: str) -> None:
    """Peak RSS growth of a fresh process extracting and scanning one large xlsx, against the file's
    size (issue 4: a 25 MB spreadsheet must not take more than ~10x its size)."""
    import json
    import subprocess
    import tempfile

    fixtures = {"register": ("resident register, distinct names/kana/addresses (worst realistic case)",
                             fx.register_xlsx),
                "resident": ("openpyxl-written resident register (the earlier benchmark's file)", fx.resident_xlsx)}
    for name in (fixtures if fixture == "both" else [fixture]):
        what, make = fixtures[name]
        data = make(rows)
        with tempfile.NamedTemporaryFile(suffix=".xlsx") as f:
            f.write(data)
            f.flush()
            out = subprocess.run([sys.executable, str(ROOT / "tests" / "fixtures" / "memory_probe.py"), f.name,
                                  str(ROOT)], capture_output=True, text=True, check=True).stdout
        m = json.loads(out)
        size = m["file_bytes"]
        print(f"\nmemory: {rows:,}-row xlsx, {what}: {size / 1e6:.1f} MB -> {m['rows']:,} rows")
        print(f"  extract       peak RSS growth {m['extract_growth'] / 1e6:6.0f} MB = {m['extract_growth'] / size:4.1f}x "
              f"the file ({m['extract_seconds']:.2f} s)")
        print(f"  extract+scan  peak RSS growth {m['peak_growth'] / 1e6:6.0f} MB = {m['peak_growth'] / size:4.1f}x "
              f"the file (+{m['scan_seconds']:.2f} s); target <= ~10x: "
              f"{'met' if m['peak_growth'] <= 10 * size else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--memory-rows", type=int, default=100_000,
                    help="measure peak RSS of extract+scan on an xlsx this long (0: skip)")
    ap.add_argument("--memory-fixture", choices=("register", "resident", "both"), default="register",
                    help="register: distinct strings, written directly (fast); resident: openpyxl (slow above 100k rows)")
    args = ap.parse_args()
    if args.memory_rows:
        bench_memory(args.memory_rows, args.memory_fixture)
    bench_xlsx(args.rows, args.repeat)
    bench_docx(args.repeat)
    bench_pptx(args.repeat)
    bench_pdf(args.repeat)
    bench_csv_and_message(args.rows, args.repeat)


if __name__ == "__main__":
    main()
