"""Real legacy and password-protected Office files, made by the tools that write them (no stubs):

* .xls (BIFF8) written by xlwt: read by python-calamine, every sheet, a My Number stored as a
  number and as text, Japanese text and dates; the scanner finds them, also through `dlpgate scan`.
* xlsx / docx / pptx encrypted by msoffcrypto-tool (ECMA-376 agile, as Office does it) and a PDF
  encrypted by reportlab: `unscannable` with reason `encrypted`, alone, inside a zip and attached to
  a message; decrypting them back proves they are the real thing.
* .doc: read through olefile and the FIB's piece table (extract/worddoc.py, issue 16); a Word
  container whose FIB points at no piece table stays `unscannable` (corrupt), never a silent pass.

No full identifier is ever printed: assertions compare masked samples or booleans.
"""

from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_fixtures as fx  # noqa: E402

from dlpgate.extract import CORRUPT, ENCRYPTED, Extraction, extract_file, extract_message  # noqa: E402
from dlpgate.offline_scan import run  # noqa: E402
from dlpgate.scan.checks import mask  # noqa: E402
from dlpgate.scan.scanner import Scanner  # noqa: E402


def _numbers() -> tuple[str, str]:
    """Two synthetic My Numbers: one stored as a number (no leading zero), one as text (leading zero)."""
    rng = random.Random(4)
    as_number = as_text = ""
    while not (as_number and as_text):
        n = fx.my_number(rng)
        if n[0] == "0":
            as_text = as_text or n
        else:
            as_number = as_number or n
    return as_number, as_text


AS_NUMBER, AS_TEXT = _numbers()
REGISTER = [
    ("氏名", "フリガナ", "生年月日", "住所", "個人番号"),
    ("佐藤 太郎", "サトウ タロウ", fx.datetime.date(1980, 1, 2), "例市例町1-2-3", int(AS_NUMBER)),
    ("鈴木 花子", "スズキ ハナコ", fx.datetime.date(1975, 12, 31), "例市見本町4-5", AS_TEXT),
    *[(f"試験 {i}号", "シケン", fx.datetime.date(1990, 1, 1 + i), f"例市仮野{i}", "") for i in range(1, 11)],
]


def register_xls() -> bytes:
    return fx.xls_bytes({"名簿": REGISTER, "メモ": [("備考",), (), ("", "", 1.5, True)], "空": []})


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner.load()


def cli_scan(tmp_path: Path, name: str, data: bytes) -> tuple[int, dict[str, object], str]:
    path = tmp_path / name
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    code = run([str(path)], as_json=True, rules_dir=None, out=out, err=err)
    return code, json.loads(out.getvalue()), out.getvalue() + err.getvalue()


# ---------------------------------------------------------------------------------------- .xls


def test_real_xls_every_sheet_numbers_text_and_dates() -> None:
    data = register_xls()
    assert data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # an OLE2 compound file, BIFF inside
    ex = extract_file("名簿.xls", data)
    parts = {p.path: p for p in ex.parts}
    assert all(p.unscannable is None for p in ex.parts)
    assert ex.attachments[0].content_type == "cfb"
    assert list(parts) == ["名簿.xls/名簿", "名簿.xls/メモ", "名簿.xls/空"]  # every sheet, in order
    rows = list(parts["名簿.xls/名簿"].tables[0].rows)
    assert rows[0] == REGISTER[0] and len(rows) == len(REGISTER)
    assert rows[1][:4] == ("佐藤 太郎", "サトウ タロウ", "1980-01-02", "例市例町1-2-3")
    number_cell_ok = rows[1][4] == AS_NUMBER  # 12 digits, not 1.23E+11
    text_cell_ok = rows[2][4] == AS_TEXT  # the leading zero kept
    assert number_cell_ok and text_cell_ok
    assert rows[2][2] == "1975-12-31"
    assert list(parts["名簿.xls/メモ"].tables[0].rows) == [("備考",), ("", "", "1.5", "TRUE")]
    text = parts["名簿.xls/名簿"].text
    in_text = AS_NUMBER in text and AS_TEXT in text
    assert in_text


def test_real_xls_is_found_by_the_scanner_alone_in_a_zip_and_attached(scanner: Scanner) -> None:
    data = register_xls()
    for ex in (extract_file("名簿.xls", data),
               extract_file("送付.zip", fx.zip_bytes({"古い/名簿.xls": data}, cp932_names=True)),
               extract_message(fx.email_bytes("名簿を送ります。", attachments=[("名簿.xls", data)]))):
        result = scanner.scan_extraction(ex)
        got = {(f.detector, f.count, f.severity, f.sample) for f in result.findings}
        assert ("my_number", 2, "high", mask(AS_NUMBER)) in got
        assert any(f.detector == "personal_records" and f.count == len(REGISTER) - 1 for f in result.findings)
        assert result.records == len(REGISTER) - 1
        assert not any(f.detector == "unscannable" for f in result.findings)


def test_real_xls_through_dlpgate_scan(tmp_path: Path) -> None:
    code, record, printed = cli_scan(tmp_path, "名簿.xls", register_xls())
    assert code == 1 and record["verdict"] != "clean" and record["records"] == len(REGISTER) - 1
    findings = {f["detector"]: f for f in record["findings"]}  # type: ignore[attr-defined]
    assert findings["my_number"]["count"] == 2 and findings["my_number"]["sample"] == mask(AS_NUMBER)
    leaked = AS_NUMBER in printed or AS_TEXT in printed
    assert not leaked  # the CLI masks every identifier


# ---------------------------------------------------------------------------------------- encrypted


PLAIN = {
    "名簿.xlsx": lambda: fx.xlsx_bytes({"名簿": [fx.HEADER, *fx.resident_rows(20)]}),
    "案内.docx": lambda: fx.docx_bytes(["個人番号の一覧です。"], [("氏名", "個人番号"), ("佐藤 太郎", AS_NUMBER)]),
    "説明.pptx": lambda: fx.pptx_bytes(["個人番号 " + AS_NUMBER]),
}


@pytest.fixture(scope="module")
def encrypted() -> dict[str, bytes]:
    return {name: fx.encrypt_ooxml(make(), "pw") for name, make in PLAIN.items()}


def test_encrypted_ooxml_is_real(encrypted: dict[str, bytes]) -> None:
    import msoffcrypto

    for name, data in encrypted.items():
        office = msoffcrypto.OfficeFile(io.BytesIO(data))
        assert office.is_encrypted()
        office.load_key(password="pw")
        out = io.BytesIO()
        office.decrypt(out)
        assert out.getvalue()[:2] == b"PK", name
        assert extract_file(name, out.getvalue()).parts[0].unscannable is None  # decrypted, it reads


@pytest.mark.parametrize("name", list(PLAIN))
def test_encrypted_ooxml_alone_in_a_zip_and_attached_is_unscannable(encrypted: dict[str, bytes], name: str,
                                                                     scanner: Scanner) -> None:
    data = encrypted[name]
    (alone,) = extract_file(name, data).parts
    assert (alone.path, alone.unscannable) == (name, ENCRYPTED)
    zipped = extract_file("送付.zip", fx.zip_bytes({f"資料/{name}": data, "readme.txt": "説明".encode()})).parts
    by_path = {p.path: p for p in zipped}
    assert by_path[f"送付.zip/資料/{name}"].unscannable == ENCRYPTED
    assert by_path["送付.zip/readme.txt"].unscannable is None  # the other member is still read
    attached = extract_message(fx.email_bytes("資料です。", attachments=[(name, data)])).parts
    assert [p.unscannable for p in attached if p.path == name] == [ENCRYPTED]
    for parts in ((alone,), zipped, attached):
        findings = scanner.scan_extraction(Extraction(parts=tuple(parts))).findings
        assert [(f.detector, f.severity, f.sample) for f in findings] == [("unscannable", "medium", "encrypted")]


def test_encrypted_xlsx_through_dlpgate_scan(tmp_path: Path, encrypted: dict[str, bytes]) -> None:
    code, record, _ = cli_scan(tmp_path, "名簿.xlsx", encrypted["名簿.xlsx"])
    assert code == 1 and record["verdict"] != "clean"
    assert [(f["detector"], f["sample"]) for f in record["findings"]] == [("unscannable", "encrypted")]  # type: ignore[attr-defined]


def test_encrypted_pdf_alone_and_in_a_zip(scanner: Scanner) -> None:
    data = fx.pdf_bytes([["個人番号 " + AS_NUMBER]], encrypt="pw")
    import pypdfium2 as pdfium

    with pytest.raises(pdfium.PdfiumError):  # real: it does not open without the password
        pdfium.PdfDocument(data)
    assert len(pdfium.PdfDocument(data, password="pw")) == 1
    (alone,) = extract_file("一覧.pdf", data).parts
    (member,) = extract_file("送付.zip", fx.zip_bytes({"一覧.pdf": data})).parts
    assert (alone.unscannable, member.unscannable, member.path) == (ENCRYPTED, ENCRYPTED, "送付.zip/一覧.pdf")
    ex = extract_file("送付.zip", fx.zip_bytes({"一覧.pdf": data}))
    assert [(f.detector, f.sample) for f in scanner.scan_extraction(ex).findings] == [("unscannable", "encrypted")]


# ---------------------------------------------------------------------------------------- .doc


def test_real_ole2_word_container_is_read_or_fails_closed(scanner: Scanner) -> None:
    import olefile

    sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
    import legacy_formats

    # a Word 97 container whose FIB (magic 0xA5EC) points at no piece table: damaged, never a pass
    doc = fx.cfb_bytes({"WordDocument": b"\xec\xa5\xc1\x00" + "個人番号".encode("utf-16-le"), "1Table": b"\0" * 64,
                        "\x05SummaryInformation": b"\xfe\xff"})
    ole = olefile.OleFileIO(io.BytesIO(doc))  # a well-formed compound file, not a stub
    assert ole.exists("WordDocument") and ole.openstream("WordDocument").read(2) == b"\xec\xa5"
    for ex in (extract_file("古い.doc", doc), extract_file("a.zip", fx.zip_bytes({"古い.doc": doc}))):
        (part,) = ex.parts
        assert part.unscannable == CORRUPT and ".doc" in part.detail
        assert [(f.detector, f.sample) for f in scanner.scan_extraction(ex).findings] == [("unscannable", "corrupt")]
    # a .doc with its piece table: the text is read, in a zip too
    n = fx.my_number(random.Random(3))
    real = legacy_formats.doc_bytes([f"個人番号 {n}"])
    for ex in (extract_file("古い.doc", real), extract_file("a.zip", fx.zip_bytes({"古い.doc": real}))):
        (part,) = ex.parts
        assert part.unscannable is None and n in part.text
        assert [(f.detector, f.severity) for f in scanner.scan_extraction(ex).findings] == [("my_number", "high")]
