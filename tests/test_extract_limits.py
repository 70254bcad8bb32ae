"""Every limit fires with its reason, hostile files end as `unscannable`, and nothing hangs or escapes."""

from __future__ import annotations

import io
import sys
import time
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_fixtures as fx  # noqa: E402

from dlpgate.extract import (  # noqa: E402
    CORRUPT,
    ENCRYPTED,
    LIMIT,
    UNSUPPORTED,
    ExtractLimits,
    extract_file,
    extract_message,
)

ROWS = [fx.HEADER, *fx.resident_rows(20)]


def reasons(parts: tuple) -> set[tuple[str | None, str]]:  # type: ignore[type-arg]
    return {(p.unscannable, p.detail) for p in parts if p.unscannable}


def nested_zip(levels: int, payload: bytes = b"12345") -> bytes:
    data = fx.zip_bytes({"a.txt": payload})
    for i in range(levels - 1):
        data = fx.zip_bytes({f"level{i}.zip": data})
    return data


def test_zip_depth_limit() -> None:
    ok = extract_file("n.zip", nested_zip(5)).parts
    assert [p.text for p in ok] == ["12345"]
    deep = extract_file("n.zip", nested_zip(6)).parts
    assert any(p.unscannable == LIMIT and "nested deeper than 5" in p.detail for p in deep)


def test_member_count_limit() -> None:
    data = fx.zip_bytes({f"m{i}.txt": b"x" for i in range(30)})
    parts = extract_file("m.zip", data, ExtractLimits(max_zip_members=10)).parts
    assert sum(1 for p in parts if p.unscannable is None) == 10
    assert (LIMIT, "more than 10 zip members") in reasons(parts)


def test_single_member_ratio_bomb() -> None:
    bomb = fx.zip_bytes({"zeros.csv": bytes(20 * 1024 * 1024)})
    start = time.monotonic()
    (part,) = extract_file("bomb.zip", bomb).parts
    assert part.unscannable == LIMIT and "compression ratio" in part.detail
    assert time.monotonic() - start < 1.0


def test_nested_42_style_bomb() -> None:
    layer = fx.zip_bytes({"0.bin": bytes(2 * 1024 * 1024)})  # innermost: ~500:1
    for _ in range(4):
        layer = fx.zip_bytes({f"{i}.zip": layer for i in range(16)})
    start = time.monotonic()
    parts = extract_file("42.zip", layer).parts
    assert parts and all(p.unscannable == LIMIT for p in parts)
    assert time.monotonic() - start < 10.0


def test_total_extracted_bytes_limit() -> None:
    data = fx.zip_bytes({f"{i}.csv": fx.csv_bytes(ROWS) for i in range(5)})
    parts = extract_file("big.zip", data, ExtractLimits(max_total_bytes=3000)).parts
    assert any(p.unscannable == LIMIT and "extracted-bytes" in p.detail for p in parts)


def test_total_bytes_stop_later_attachments_in_a_message() -> None:
    csv = fx.csv_bytes(ROWS)
    raw = fx.email_bytes("本文", attachments=[(f"{i}.zip", fx.zip_bytes({"a.csv": csv})) for i in range(4)])
    parts = extract_message(raw, ExtractLimits(max_total_bytes=2 * len(csv) + 2000)).parts
    assert any(p.unscannable == LIMIT for p in parts)


def test_time_budget() -> None:
    data = fx.resident_xlsx(2000)
    parts = extract_file("a.xlsx", data, ExtractLimits(part_seconds=0.0)).parts
    assert any(p.unscannable == LIMIT and "time budget" in p.detail for p in parts)


def test_time_budget_stops_the_expat_stream() -> None:
    from dlpgate.extract.budget import Budget, Unreadable
    from dlpgate.extract.xlsx import extract_xlsx

    zf = zipfile.ZipFile(io.BytesIO(fx.resident_xlsx(2000)))
    with pytest.raises(Unreadable) as caught:
        extract_xlsx("a.xlsx", zf, Budget(ExtractLimits(part_seconds=0.0)))
    assert caught.value.reason == LIMIT


def test_pdf_page_limit_keeps_the_pages_read() -> None:
    parts = extract_file("p.pdf", fx.resident_pdf(5, 3), ExtractLimits(max_pdf_pages=2)).parts
    text = [p for p in parts if p.unscannable is None]
    assert len(text) == 1 and text[0].text.count("\f") == 1
    assert (LIMIT, "PDF has 5 pages; only the first 2 read") in reasons(parts)


def test_image_only_pdf_is_unsupported() -> None:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.rect(10, 10, 100, 100, fill=1)
    c.showPage()
    c.save()
    (part,) = extract_file("scan.pdf", buf.getvalue()).parts
    assert part.unscannable == UNSUPPORTED and "without a text layer" in part.detail
    assert part.kind == "image"  # pages that are only pictures: judged as a picture (issue 16)
    from dlpgate.scan.scanner import Scanner

    (finding,) = Scanner.load().scan_extraction(extract_file("scan.pdf", buf.getvalue())).findings
    (jpeg,) = Scanner.load().scan_extraction(extract_file("scan.jpg", b"\xff\xd8\xff\xe0" + bytes(64))).findings
    assert (finding.detector, finding.severity, finding.sample) == (jpeg.detector, jpeg.severity, jpeg.sample)


def cfb(*streams: str) -> bytes:
    """Enough of an OLE2 compound file for the sniffer: magic, then directory names in UTF-16LE."""
    return fx_cfb_magic() + bytes(504) + b"".join(s.encode("utf-16-le").ljust(64, b"\0") for s in streams)


def fx_cfb_magic() -> bytes:
    return b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def test_password_protected_office_and_legacy_formats() -> None:
    (enc,) = extract_file("名簿.xlsx", cfb("Root Entry", "EncryptionInfo", "EncryptedPackage")).parts
    assert enc.unscannable == ENCRYPTED
    (doc,) = extract_file("old.doc", cfb("Root Entry", "WordDocument")).parts
    assert doc.unscannable == CORRUPT and ".doc" in doc.detail  # read since issue 16: a stream of zeros is damaged
    (xls,) = extract_file("old.xls", cfb("Root Entry", "Workbook")).parts  # damaged BIFF
    assert xls.unscannable == CORRUPT


@pytest.mark.parametrize("name", ["a.xlsx", "a.docx", "a.pptx", "a.pdf", "a.zip"])
def test_truncated_files_are_corrupt_or_partial(name: str) -> None:
    data = {"a.xlsx": fx.resident_xlsx(50), "a.docx": fx.docx_bytes(["本文"] * 50),
            "a.pptx": fx.pptx_bytes(["本文"] * 5), "a.pdf": fx.resident_pdf(3, 10),
            "a.zip": fx.zip_bytes({"a.csv": fx.csv_bytes(ROWS)})}[name]
    parts = extract_file(name, data[: len(data) // 2]).parts
    assert parts and all(p.unscannable in (None, CORRUPT, UNSUPPORTED) for p in parts)
    if not name.endswith(".pdf"):  # pdfium repairs truncated PDFs and reads the pages it finds
        assert any(p.unscannable for p in parts)


LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
                    for i in range(1, 10)) + "]>")


def _replace_member(data: bytes, member: str, new: bytes) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            z.writestr(info.filename, new if info.filename == member else src.read(info.filename))
    return out.getvalue()


@pytest.mark.parametrize(("name", "member", "root"), [
    ("a.xlsx", "xl/worksheets/sheet1.xml",
     '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1">'
     '<c r="A1" t="inlineStr"><is><t>&lol9;</t></is></c></row></sheetData></worksheet>'),
    ("a.xlsx", "xl/sharedStrings.xml",
     '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t>&lol9;</t></si></sst>'),
    ("a.docx", "word/document.xml",
     '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r>'
     '<w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>'),
])
def test_billion_laughs_refused(name: str, member: str, root: str) -> None:
    base = fx.resident_xlsx(3) if name.endswith("xlsx") else fx.docx_bytes(["x"])
    data = _replace_member(base, member, (LAUGHS + root).encode())
    start = time.monotonic()
    parts = extract_file(name, data).parts
    assert time.monotonic() - start < 2.0
    assert any(p.unscannable == CORRUPT for p in parts)
    assert all("lollol" not in p.text for p in parts)


RECURSIVE_PDF = b"""%PDF-1.4
1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
2 0 obj << /Type /Pages /Kids [2 0 R 3 0 R 2 0 R] /Count 3 >> endobj
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] /Contents 4 0 R /Resources 5 0 R >> endobj
4 0 obj << /Length 4 0 R >> stream
BT /F1 12 Tf 10 10 Td (x) Tj ET
endstream endobj
5 0 obj << /Font << /F1 5 0 R >> /XObject << /X 5 0 R >> >> endobj
trailer << /Root 1 0 R /Size 6 >>
%%EOF
"""


def test_recursive_pdf_object_graph_finishes() -> None:
    start = time.monotonic()
    parts = extract_file("loop.pdf", RECURSIVE_PDF, ExtractLimits(part_seconds=5)).parts
    assert parts and time.monotonic() - start < 6.0


def test_pdfminer_child_is_killed_at_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from dlpgate.extract import pdf

    monkeypatch.setattr(pdf, "child_command", lambda _pages: [sys.executable, "-c", "import time; time.sleep(60)"])
    from dlpgate.extract.budget import Budget, Unreadable

    start = time.monotonic()
    with pytest.raises(Unreadable) as caught:
        pdf.pdfminer_in_child(b"%PDF-1.4", Budget(ExtractLimits(part_seconds=0.5)))
    assert caught.value.reason == LIMIT and time.monotonic() - start < 3.0


@pytest.mark.slow
def test_100_mb_single_line_body() -> None:
    raw = b"Subject: x\r\nContent-Type: text/plain\r\n\r\n" + b"7" * 100_000_000
    start = time.monotonic()
    parts = extract_message(raw).parts
    assert time.monotonic() - start < 30
    body = next(p for p in parts if p.path == "body")
    assert body.unscannable is None and len(body.text) == 100_000_000


def test_100_mb_single_line_over_a_smaller_limit() -> None:
    raw = b"Subject: x\r\nContent-Type: text/plain\r\n\r\n" + b"7" * 5_000_000
    parts = extract_message(raw, ExtractLimits(max_total_bytes=1_000_000)).parts
    assert any(p.unscannable == LIMIT for p in parts)


def test_10000_mime_parts() -> None:
    body = b"".join(b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(10_000))
    raw = b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n' + body + b"--B--\r\n"
    start = time.monotonic()
    parts = extract_message(raw).parts
    assert time.monotonic() - start < 15
    assert (LIMIT, "more than 1000 MIME parts") in reasons(parts)


def test_deeply_nested_mime() -> None:
    raw = b"".join(b'Content-Type: multipart/mixed; boundary="B%d"\r\n\r\n--B%d\r\n' % (i, i) for i in range(3000))
    parts = extract_message(raw + b"Content-Type: text/plain\r\n\r\nx\r\n").parts
    assert parts and all(p.unscannable in (None, LIMIT, CORRUPT) for p in parts)
    assert any(p.unscannable for p in parts)


def test_forwarded_messages_share_the_depth_limit() -> None:
    raw = fx.email_bytes("最内")
    for _ in range(7):
        raw = (b'Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename="f.eml"\r\n\r\n' + raw)
    parts = extract_message(raw).parts
    assert any(p.unscannable == LIMIT and "nested deeper" in p.detail for p in parts)
