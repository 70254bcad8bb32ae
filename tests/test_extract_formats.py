"""Each attachment format round-trips its planted (synthetic) text and tables."""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_fixtures as fx  # noqa: E402

from dlpgate.extract import ENCRYPTED, UNSUPPORTED, Part, extract_file  # noqa: E402
from dlpgate.extract.budget import Budget  # noqa: E402
from dlpgate.extract.model import ExtractLimits  # noqa: E402
from dlpgate.extract.sniff import sniff  # noqa: E402
from dlpgate.extract.xlsx import extract_xlsx  # noqa: E402

MY_NUMBER = "123456789018"  # synthetic, valid check digit
ROWS = [fx.HEADER, *fx.resident_rows(30)]


def by_path(parts: tuple[Part, ...]) -> dict[str, Part]:
    return {p.path: p for p in parts if p.unscannable is None}


def test_xlsx_every_sheet_numbers_dates_and_shared_strings() -> None:
    data = fx.xlsx_bytes({"名簿": ROWS, "Sheet2": [("メモ", 1.5, True)]})
    parts = by_path(extract_file("名簿.xlsx", data).parts)
    sheet = parts["名簿.xlsx/名簿"]
    table = sheet.tables[0]
    assert table.name == "名簿.xlsx/名簿"
    assert table.rows[0] == fx.HEADER
    assert len(table.rows) == 31
    first = ROWS[1]
    assert table.rows[1][6] == str(first[6]) and len(table.rows[1][6]) == 12  # numeric My Number: 12 digits
    assert table.rows[1][3] == first[3].isoformat()  # type: ignore[union-attr]
    assert f"{first[1]}\t" in sheet.text and str(first[6]) in sheet.text
    assert parts["名簿.xlsx/Sheet2"].tables[0].rows == (("メモ", "1.5", "TRUE"),)


HANDMADE_SHEET = (
    '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="C1" t="inlineStr"><is><r><t>個人</t></r><r><t>番号</t></r></is></c></row>'
    '<row r="2"><c r="A2"><v>1.23456789012E+11</v></c><c r="B2" s="1"><v>33179</v></c><c r="C2" s="2"><v>33179</v></c>'
    '<c r="D2" t="b"><v>1</v></c><c r="E2" t="str"><f>CONCAT("a","b")</f><v>ab</v></c><c r="F2"><f>1+1</f><v>2</v></c>'
    '<c r="H2"><v>0.1</v></c></row>'
)


def handmade() -> bytes:
    return fx.handmade_xlsx(
        {"名簿": HANDMADE_SHEET, "隠し": f'<row r="3"><c r="B3"><v>{MY_NUMBER}</v></c></row>'},
        shared_xml='<si><t>氏名</t><rPh sb="0" eb="2"><t>シメイ</t></rPh></si>', hidden=("隠し",))


def test_xlsx_inline_strings_formulas_exponents_hidden_sheet_and_phonetics() -> None:
    parts = by_path(extract_file("a.xlsx", handmade()).parts)
    rows = parts["a.xlsx/名簿"].tables[0].rows
    assert rows[0] == ("氏名", "", "個人番号")  # phonetic reading left out; inline rich text joined
    assert rows[1] == ("123456789012", "1990-11-02", "1990-11-02", "TRUE", "ab", "2", "", "0.1")
    assert parts["a.xlsx/隠し"].tables[0].rows == (("", MY_NUMBER),)


def test_xlsx_expat_path_matches_calamine_path() -> None:
    for data in (handmade(), fx.xlsx_bytes({"名簿": ROWS}), fx.xlsx_bytes({"名簿": ROWS}, inline_strings=True)):
        fast = [(p.path, p.tables) for p in extract_file("a.xlsx", data).parts]
        streamed = [(p.path, p.tables) for p in extract_xlsx("a.xlsx", zipfile.ZipFile(io.BytesIO(data)),
                                                           Budget(ExtractLimits()))]
        assert fast == streamed


def test_xlsx_date1904() -> None:
    data = fx.handmade_xlsx({"S": '<row r="1"><c r="A1" s="1"><v>2</v></c><c r="B1" s="1"><v>1.5</v></c></row>'},
                            date1904=True)
    assert by_path(extract_file("d.xlsx", data).parts)["d.xlsx/S"].tables[0].rows == (
        ("1904-01-03", "1904-01-02 12:00:00"),)


def test_docx_paragraphs_tables_headers_footers_comments() -> None:
    data = fx.docx_bytes(["個人番号の取扱いについて"], [("氏名", "個人番号"), ("佐藤 太郎", MY_NUMBER)],
                         header="ヘッダ文言", footer="フッタ文言", comment="コメント本文")
    part = by_path(extract_file("案内.docx", data).parts)["案内.docx"]
    for planted in ("個人番号の取扱いについて", f"佐藤 太郎\t{MY_NUMBER}", "ヘッダ文言", "フッタ文言", "コメント本文"):
        assert planted in part.text
    assert part.tables[0].rows == (("氏名", "個人番号"), ("佐藤 太郎", MY_NUMBER))


def _docx_with_body(body_xml: str) -> bytes:
    base = fx.docx_bytes(["x"])
    src = zipfile.ZipFile(io.BytesIO(base))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "word/document.xml":
                head, _, rest = data.partition(b"<w:body>")
                data = head + b"<w:body>" + body_xml.encode() + b"</w:body>" + rest.partition(b"</w:body>")[2]
            z.writestr(info.filename, data)
    return out.getvalue()


def test_docx_text_boxes_once_deleted_text_and_tabs() -> None:
    body = (
        '<w:p><w:r><mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
        '<mc:Choice Requires="wps"><w:drawing><w:txbxContent><w:p><w:r><w:t>箱の中</w:t></w:r></w:p></w:txbxContent>'
        '</w:drawing></mc:Choice><mc:Fallback><w:pict><w:txbxContent><w:p><w:r><w:t>箱の中</w:t></w:r></w:p>'
        '</w:txbxContent></w:pict></mc:Fallback></mc:AlternateContent></w:r></w:p>'
        '<w:p><w:pPr><w:tabs><w:tab w:val="left" w:pos="100"/></w:tabs></w:pPr><w:r><w:t>1234</w:t></w:r>'
        '<w:r><w:tab/><w:t>5678</w:t></w:r><w:del><w:r><w:delText>削除済み</w:delText></w:r></w:del></w:p>'
    )
    part = by_path(extract_file("t.docx", _docx_with_body(body)).parts)["t.docx"]
    assert part.text.count("箱の中") == 1
    assert "1234\t5678削除済み" in part.text


def test_pptx_slides_tables_notes() -> None:
    data = fx.pptx_bytes(["説明会のご案内", "二枚目"], [("氏名", "番号"), ("鈴木", MY_NUMBER)], notes="発表者メモ")
    parts = by_path(extract_file("説明.pptx", data).parts)
    first = parts["説明.pptx/slide1"]
    assert "説明会のご案内" in first.text and f"鈴木\t{MY_NUMBER}" in first.text and "発表者メモ" in first.text
    assert first.tables[0].rows[1] == ("鈴木", MY_NUMBER)
    assert parts["説明.pptx/slide2"].text == "二枚目"


def test_pdf_japanese_cid_font() -> None:
    data = fx.resident_pdf(3, 10)
    part = by_path(extract_file("一覧.pdf", data).parts)["一覧.pdf"]
    for row in fx.resident_rows(30)[::7]:
        assert str(row[1]) in part.text and str(row[6]) in part.text
    assert part.text.count("\f") == 2


def test_pdf_pdfminer_fallback_reads_what_pdfium_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    import pypdfium2

    def refuse(*_a: object, **_k: object) -> None:
        raise pypdfium2.PdfiumError("refused", err_code=3)

    monkeypatch.setattr(pypdfium2, "PdfDocument", refuse)
    part = by_path(extract_file("x.pdf", fx.pdf_bytes([["個人番号 " + MY_NUMBER]])).parts)["x.pdf"]
    assert MY_NUMBER in part.text and "個人番号" in part.text


@pytest.mark.parametrize(("encoding", "bom", "delimiter"), [("cp932", False, ","), ("utf-8", True, ","),
                                                            ("utf-8", False, "\t")])
def test_csv_charsets_and_delimiters(encoding: str, bom: bool, delimiter: str) -> None:
    rows = [*ROWS[:5], ("1", "髙橋 ①", "㈱例", "", "", "", MY_NUMBER, "")] if encoding == "cp932" else ROWS[:5]
    data = fx.csv_bytes(rows, encoding=encoding, bom=bom, delimiter=delimiter)
    part = by_path(extract_file("名簿.txt" if delimiter == "\t" else "名簿.csv", data).parts)
    (only,) = part.values()
    assert only.tables[0].rows[0] == fx.HEADER
    assert only.tables[0].rows[1][1] == ROWS[1][1]
    if encoding == "cp932":
        assert "髙橋 ①\t㈱例" in only.text


def test_zip_nested_cp932_names_and_sniffed_by_content() -> None:
    inner = fx.zip_bytes({"データ/名簿.csv": fx.csv_bytes(ROWS[:3])})
    outer = fx.zip_bytes({"報告/内訳.xlsx": fx.xlsx_bytes({"S": ROWS[:3]}), "中.zip": inner}, cp932_names=True)
    parts = by_path(extract_file("report.dat", outer).parts)
    assert set(parts) == {"report.dat/報告/内訳.xlsx/S", "report.dat/中.zip/データ/名簿.csv"}
    assert parts["report.dat/中.zip/データ/名簿.csv"].tables[0].rows[0] == fx.HEADER


def test_html_cells_keep_breaks_and_tables() -> None:
    html = ("<html><body><p>氏名&amp;番号</p><table><tr><th>氏名</th><th>番号</th></tr>"
            "<tr><td>佐藤</td><td>1234</td><td>5678</td></tr></table><script>var x='秘密'</script></body></html>")
    part = by_path(extract_file("a.html", html.encode()).parts)["a.html"]
    assert "氏名&番号" in part.text and "1234\t5678" in part.text and "秘密" not in part.text
    assert part.tables[0].rows == (("氏名", "番号"), ("佐藤", "1234", "5678"))


def test_html_preformatted_text_keeps_its_lines_and_tabs() -> None:
    rows = "氏名\t住所\r\n佐藤 一郎\t架空市本町1-2\n鈴木&nbsp;花子\t架空市緑町3-4"
    html = f"<html><body><p>一覧  です</p><pre>{rows}</pre><p>以上\tです</p></body></html>"
    text = by_path(extract_file("a.html", html.encode()).parts)["a.html"].text
    assert "氏名\t住所\n佐藤 一郎\t架空市本町1-2\n鈴木 花子\t架空市緑町3-4" in text
    assert "一覧 です" in text and "以上 です" in text  # outside <pre>, whitespace still collapses


def test_eml_attachment_inside_zip() -> None:
    eml = fx.email_bytes("転送本文 " + MY_NUMBER, attachments=[("a.csv", fx.csv_bytes(ROWS[:3]))])
    parts = by_path(extract_file("old.zip", fx.zip_bytes({"fwd.eml": eml})).parts)
    assert MY_NUMBER in parts["old.zip/fwd.eml/body"].text
    assert parts["old.zip/fwd.eml/a.csv"].tables[0].rows[0] == fx.HEADER


def test_sniff_ignores_names() -> None:
    assert sniff(fx.xlsx_bytes({"S": ROWS[:2]}), "x.dat") == "xlsx"
    assert sniff(fx.docx_bytes(["a"]), "x.pdf") == "docx"
    assert sniff(fx.zip_bytes({"a": b"b"}), "x.txt") == "zip"
    assert sniff(fx.pdf_bytes([["a"]]), "x.xlsx") == "pdf"
    assert sniff(b"\x89PNG\r\n\x1a\n" + bytes(100), "x.csv") == "image"


def test_images_and_unknown_binaries_are_unscannable_not_skipped() -> None:
    (png,) = extract_file("x.png", b"\x89PNG\r\n\x1a\n" + bytes(100)).parts
    assert png.unscannable == UNSUPPORTED and png.kind == "image"
    (blob,) = extract_file("x.bin", bytes(range(256)) * 4).parts
    assert blob.unscannable == UNSUPPORTED


def test_encrypted_zip_and_pdf() -> None:
    (member,) = extract_file("e.zip", fx.encrypted_zip({"名簿.csv": b"x"})).parts
    assert member.unscannable == ENCRYPTED and member.path == "e.zip/名簿.csv"
    (pdf,) = extract_file("e.pdf", fx.pdf_bytes([["x"]], encrypt="pw")).parts
    assert pdf.unscannable == ENCRYPTED


def test_extraction_lists_the_file_as_attachment() -> None:
    data = fx.csv_bytes(ROWS[:3])
    (att,) = extract_file("dir/名簿.csv", data).attachments
    assert (att.filename, att.content_type, att.size) == ("名簿.csv", "csv", len(data))


def test_big_workbooks_take_the_streaming_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from dlpgate.extract import spreadsheet

    data = handmade()
    fast = extract_file("a.xlsx", data).parts
    monkeypatch.setattr(spreadsheet, "STREAM_ABOVE_SHEET_XML_BYTES", 0)
    monkeypatch.setattr(spreadsheet, "extract_with_calamine", None)  # would raise if called
    assert [(p.path, p.tables) for p in extract_file("a.xlsx", data).parts] == [(p.path, p.tables) for p in fast]


# ------------------------------------------------------------- UTF-16 written without a byte order mark
def test_utf16_without_bom_is_read_and_binary_of_16_bit_numbers_is_not() -> None:
    import random
    import struct

    from dlpgate.extract import extract_file
    from dlpgate.scan.checks import my_number_check_digit
    from dlpgate.scan.scanner import Scanner

    rows = ["氏名\t生年月日\t住所\t個人番号"] + [
        f"試験 太郎{i}\t1980/01/{i + 1:02d}\t見本市{i}\t{b}{my_number_check_digit(b)}"
        for i, b in enumerate(f"2345678{i:04d}" for i in range(12))]
    text = "\r\n".join(rows) + "\r\n"
    for codec in ("utf-16-le", "utf-16-be"):
        ex = extract_file("export.txt", text.encode(codec))
        assert not any(p.unscannable for p in ex.parts), [(p.path, p.unscannable) for p in ex.parts]
        result = Scanner.load().scan_extraction(ex)
        assert {f.detector: f.count for f in result.findings}["my_number"] == 12 and result.records == 12
    r = random.Random(1)
    small = b"".join(struct.pack("<H", r.randint(0, 255)) for _ in range(6000))  # looks like UTF-16 LE
    assert [p.unscannable for p in extract_file("data.bin", small).parts] == ["unsupported"]


@given(st.text(alphabet="氏名住所生年月日あいうアイウ漢字０１２abcXYZ0123456789 \t,-", min_size=16, max_size=400),
       st.sampled_from(["utf-16-le", "utf-16-be"]))
def test_bomless_utf16_text_decodes_to_itself(body: str, codec: str) -> None:
    from dlpgate.extract.textdecode import decode_text, utf16_without_bom

    text = "\t".join(["ID", "name"]) + "\r\n" + body + "\r\n1\t2\t3\r\n"
    data = text.encode(codec)
    found = utf16_without_bom(data)
    if found is not None:  # ASCII-poor text may not be recognised; recognised text is never misread
        assert found == codec.replace("-", "_") and decode_text(data) == text


@given(st.binary(max_size=300))
def test_textual_control_count_is_the_per_byte_count(sample: bytes) -> None:
    """sniff counts the controls text does not have with bytes.translate; the per-byte rule it replaced."""
    from dlpgate.extract.sniff import _looks_textual

    sample = sample.replace(b"\x00", b"").lstrip(b"\xfe\xff")  # a NUL or a BOM: decided by the UTF-16 rules
    controls = sum(1 for b in sample if b < 0x20 and b not in (0x09, 0x0A, 0x0D, 0x0C, 0x1B, 0x0E, 0x0F))
    assert _looks_textual(sample) == (controls <= len(sample) // 100)


def test_a_file_is_sniffed_once_and_its_utf16_sample_judged_once(monkeypatch) -> None:  # noqa: ANN001
    """extract_file hands extract_blob the kind it sniffed (sniffing a zip opens it), and the UTF-16
    judgement of the first 8 KiB that sniff made is the one decode_text uses."""
    from dlpgate.extract import extract_file, files, sniff, textdecode

    calls: list[str] = []
    real = sniff.sniff

    def counted(data: bytes, name: str = "") -> str:
        calls.append(name)
        return real(data, name)

    monkeypatch.setattr(sniff, "sniff", counted)
    monkeypatch.setattr(files, "sniff", counted)
    text = "氏名\t番号\r\n" + "".join(f"試験 太郎{i}\t{i:04d}\r\n" for i in range(400))
    textdecode._utf16_without_bom.cache_clear()
    ex = extract_file("export.txt", text.encode("utf-16-le"))
    assert [p.text for p in ex.parts] == [text]
    assert calls == ["export.txt"]
    info = textdecode._utf16_without_bom.cache_info()
    assert (info.misses, info.hits) == (1, 1)
