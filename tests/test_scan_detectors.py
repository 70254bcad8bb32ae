"""Detectors: separators, full-width forms, boundaries, proximity, suppression, tables."""

from __future__ import annotations

import pytest

from dlpgate.extract.model import Extraction, Part, Table
from dlpgate.scan.checks import my_number_check_digit
from dlpgate.scan.model import ScanResult
from dlpgate.scan.scanner import Scanner

VALID = "621498320257"
FW = str.maketrans("0123456789", "０１２３４５６７８９")


def numbers(n: int) -> list[str]:
    out = []
    for i in range(n):
        body = f"{31415926535 + i * 7919:011d}"
        out.append(body + str(my_number_check_digit(body)))
    return out


@pytest.fixture(scope="module", params=["hyperscan", "re"])
def scanner(request: pytest.FixtureRequest) -> Scanner:
    return Scanner.load(engine=request.param)


def summary(result: ScanResult) -> dict[str, tuple[int, str]]:
    return {f.detector: (f.count, f.severity) for f in result.findings}


@pytest.mark.parametrize("sep", [" ", "-", "‐", "−", "－", "ー", ".", "　"])
def test_separators_give_medium(scanner: Scanner, sep: str) -> None:
    text = f"照会 {VALID[:4]}{sep}{VALID[4:8]}{sep}{VALID[8:]} の件"
    assert summary(scanner.scan("body", text)) == {"my_number": (1, "medium")}


def test_full_width_and_contiguous_low(scanner: Scanner) -> None:
    assert summary(scanner.scan("body", f"番号{VALID.translate(FW)}です")) == {"my_number": (1, "low")}
    assert summary(scanner.scan("body", VALID)) == {"my_number": (1, "low")}


@pytest.mark.parametrize(
    "text",
    [
        f"1{VALID}",  # 13-digit 法人番号 shape
        f"{VALID}0",
        f"法人番号 8{VALID}",
        "4901234567894",  # JAN code
        f"12-{VALID[:4]}-{VALID[4:8]}-{VALID[8:]}",
        f"{VALID[:4]}-{VALID[4:8]}-{VALID[8:]}-1234",
        f"{VALID[:3]}-{VALID[3:8]}-{VALID[8:]}",  # not 4-4-4
        f"{VALID[:4]}  {VALID[4:8]}  {VALID[8:]}",  # double separators break the run
        "621498320258",  # check digit wrong
    ],
)
def test_boundaries(scanner: Scanner, text: str) -> None:
    assert "my_number" not in summary(scanner.scan("body", text))


def test_beside_kanji_is_a_boundary(scanner: Scanner) -> None:
    assert summary(scanner.scan("body", f"第{VALID}号")) == {"my_number": (1, "low")}


def test_keyword_proximity(scanner: Scanner) -> None:
    near = "マイナンバー" + "あ" * 100 + VALID
    far = "マイナンバー" + "あ" * 101 + VALID
    after = VALID + "い" * 100 + "個人番号"
    assert summary(scanner.scan("body", near)) == {"my_number": (1, "high")}
    assert summary(scanner.scan("body", far)) == {"my_number": (1, "low")}
    assert summary(scanner.scan("body", after)) == {"my_number": (1, "high")}
    assert summary(scanner.scan("body", "ｍｙ　ｎｕｍｂｅｒ: " + VALID)) == {"my_number": (1, "high")}


def test_suppression_within_20_before(scanner: Scanner) -> None:
    assert summary(scanner.scan("body", f"注文番号 {VALID}")) == {}
    assert summary(scanner.scan("body", "注文番号" + "x" * 20 + VALID)) == {}
    assert summary(scanner.scan("body", "注文番号" + "x" * 21 + VALID)) == {"my_number": (1, "low")}
    assert summary(scanner.scan("body", f"{VALID} 注文番号")) == {"my_number": (1, "low")}
    # an identifier keyword closer than the negative label wins
    assert summary(scanner.scan("body", f"TEL 個人番号 {VALID}")) == {"my_number": (1, "high")}


def test_three_distinct_numbers_are_high(scanner: Scanner) -> None:
    two = " ".join(numbers(2))
    three = " / ".join(numbers(3))
    assert summary(scanner.scan("body", two.replace(" ", " / "))) == {"my_number": (2, "low")}
    assert summary(scanner.scan("body", three)) == {"my_number": (3, "high")}
    assert summary(scanner.scan("body", f"{VALID} / {VALID} / {VALID}")) == {"my_number": (3, "low")}


def test_other_detectors(scanner: Scanner) -> None:
    assert summary(scanner.scan("b", "住民票コード 12345678901")) == {"resident_code": (1, "high")}
    assert summary(scanner.scan("b", "12345678901")) == {}
    assert summary(scanner.scan("b", "4111 1111 1111 1111")) == {"credit_card": (1, "medium")}
    assert summary(scanner.scan("b", "クレジットカード 4111-1111-1111-1111")) == {"credit_card": (1, "high")}
    assert summary(scanner.scan("b", "4111.1111.1111.1111")) == {}
    assert summary(scanner.scan("b", "免許証番号 123456789012")) == {"drivers_licence": (1, "high")}
    # the nearest keyword decides between licence and My Number
    assert summary(scanner.scan("b", f"マイナンバー 運転免許 {VALID}")) == {"drivers_licence": (1, "high")}
    assert summary(scanner.scan("b", f"運転免許 マイナンバー {VALID}")) == {"my_number": (1, "high")}
    assert summary(scanner.scan("b", "機密性３")) == {"label": (1, "high")}
    assert summary(scanner.scan("b", "部外秘 取扱注意")) == {"label": (2, "low")}


def test_samples_are_masked(scanner: Scanner) -> None:
    result = scanner.scan("body", f"個人番号 {VALID} カード番号 4111111111111111")
    samples = {f.detector: f.sample for f in result.findings}
    assert samples == {"my_number": "6214********", "credit_card": "4111************"}
    assert VALID not in repr(result) and "4111111111111111" not in repr(result)


def roster(rows: int, *, title: bool = False, blank: bool = False) -> Table:
    head: list[tuple[str, ...]] = []
    if title:
        head.append(("令和6年度 給付対象者一覧", "", "", ""))
    if blank:
        head.append(("", "", "", ""))
    head.append(("氏名", "住所", "生年月日", "個人番号"))
    data = [(f"試験 {i}", "架空市", "1990/1/1", n) for i, n in enumerate(numbers(rows))]
    return Table("名簿.xlsx/Sheet1", tuple(head + data))


@pytest.mark.parametrize("rows,severity", [(1, "medium"), (9, "medium"), (10, "medium"), (99, "medium"), (100, "high")])
def test_record_thresholds(scanner: Scanner, rows: int, severity: str) -> None:
    """A resident register (name, address, birth date, My Number) is medium however short."""
    result = scanner.scan("名簿.xlsx/Sheet1", "", (roster(rows, title=True, blank=True),))
    assert result.records == rows
    assert summary(result)["personal_records"] == (rows, severity)


@pytest.mark.parametrize("rows,severity", [(1, "low"), (9, "low"), (10, "medium"), (99, "medium"), (100, "high")])
def test_contact_list_thresholds(scanner: Scanner, rows: int, severity: str) -> None:
    """Names with phones and mail addresses, no resident-register field: the count alone decides."""
    data = tuple((f"試験 {i}", f"03-0000-{i:04d}", f"t{i}@example.jp") for i in range(rows))
    table = Table("連絡先.xlsx/Sheet1", (("氏名", "電話番号", "メールアドレス"), *data))
    result = scanner.scan("連絡先.xlsx/Sheet1", "", (table,))
    assert result.records == rows
    assert summary(result)["personal_records"] == (rows, severity)


def test_my_number_column_heading_makes_high(scanner: Scanner) -> None:
    table = Table("t", (("氏名", "住所", "個人番号"),) + tuple(("x", "y", "") for _ in range(200)) + (("x", "y", VALID),))
    text = "\n".join("\t".join(r) for r in table.rows)
    assert summary(scanner.scan("t", text, (table,)))["my_number"] == (1, "high")
    assert summary(scanner.scan("t", text))["my_number"] == (1, "high")  # body table found from the text


def test_merged_two_row_header(scanner: Scanner) -> None:
    table = Table("t", (("名簿",), ("氏名", "連絡先", ""), ("", "電話番号", "備考"), ("a", "03", ""), ("b", "04", "")))
    result = scanner.scan("t", "", (table,))
    assert result.records == 2 and summary(result)["personal_records"] == (2, "low")


def test_no_header_no_records(scanner: Scanner) -> None:
    table = Table("t", (("品名", "数量"), ("りんご", "3")))
    assert scanner.scan("t", "", (table,)) == ScanResult(findings=(), records=0)
    prose = Table("t", (("氏名と住所と生年月日を記入した申請書を提出してください。これは長い文です", "住所"), ("a", "b")))
    assert scanner.scan("t", "", (prose,)).records == 0


def test_body_tables(scanner: Scanner) -> None:
    body = "各位\n\n以下の通りです。\n氏名,住所,電話番号\n" + "\n".join(f"試験{i},架空市,03-0000-0000" for i in range(12)) + "\n\n以上"
    result = scanner.scan("body", body)
    assert result.records == 12 and summary(result) == {"personal_records": (12, "medium")}
    # a form pasted into a body (label：value lines) is one record per form (issue 16)
    assert scanner.scan("body", "氏名：試験 太郎\n住所：架空市").records == 1
    assert scanner.scan("body", "氏名：試験 太郎\n住所：架空市\n\n氏名：試験 花子\n住所：見本市").records == 2
    assert scanner.scan("body", "氏名、住所を記入してください。").records == 0


def test_scan_extraction(scanner: Scanner) -> None:
    ex = Extraction(
        parts=(
            Part("body", text=f"個人番号 {VALID}"),
            Part("secret.zip", unscannable="encrypted", detail="zip member is encrypted"),
            Part("名簿.xlsx/Sheet1", text="", tables=(roster(12),)),
        )
    )
    result = scanner.scan_extraction(ex)
    got = [(f.part, f.detector, f.severity, f.sample) for f in result.findings]
    assert ("body", "my_number", "high", "6214********") in got
    assert ("secret.zip", "unscannable", "medium", "encrypted") in got
    assert ("名簿.xlsx/Sheet1", "personal_records", "medium", "name,address,birth_date,my_number") in got
    assert result.records == 12


def test_image_parts_are_low_unscannable_other_failures_medium() -> None:
    from dlpgate.extract.model import Extraction, Part
    from dlpgate.scan.rules import default_rules_dir
    from dlpgate.scan.scanner import Scanner

    sc = Scanner.load(default_rules_dir())
    ex = Extraction(parts=(Part("logo.png", unscannable="unsupported", detail="image", kind="image"),
                           Part("scan.pdf", unscannable="unsupported", detail="no text layer", kind="image"),
                           Part("bad.pdf", unscannable="corrupt", detail="damaged", kind="pdf")))
    got = {(f.part, f.severity, f.sample) for f in sc.scan_extraction(ex).findings}
    # one rule for pictures (issue 16): a JPEG of a page and a PDF of scanned pages alike are low
    assert got == {("logo.png", "low", "image"), ("scan.pdf", "low", "image"), ("bad.pdf", "medium", "corrupt")}


def test_space_aligned_columns_are_judged_number_by_number() -> None:
    """PDF text and space-aligned listings put other numbers one space before or after a My Number."""
    from dlpgate.scan.checks import my_number_check_digit
    from dlpgate.scan.rules import default_rules_dir
    from dlpgate.scan.scanner import Scanner

    sc = Scanner.load(default_rules_dir())
    body = "44622136189"
    mn = body + str(my_number_check_digit(body))
    for text in (f"個人番号 1980/01/01 {mn}", f"個人番号 01 {mn}", f"個人番号 {mn} 01", f"個人番号\u300001\u3000{mn}",
                 f"1 渡辺 一郎 例市例町9-4-12 {mn} 個人番号"):
        got = [(f.detector, f.severity) for f in sc.scan("body", text).findings]
        assert got == [("my_number", "high")], text.replace(mn, "<mn>")
    # a grouped number is still read whole, and pieces that are not identifiers stay silent
    assert [(f.detector, f.severity) for f in sc.scan("body", "個人番号 6214 9832 0257").findings] == \
        [("my_number", "high")]
    assert sc.scan("body", "TEL 03 1234 5678 9012 FAX 03 9876 5432").findings == ()
    wrong = body + str((my_number_check_digit(body) + 1) % 10)
    assert sc.scan("body", f"個人番号 01 {wrong}").findings == ()


def test_space_aligned_roster_counts_records_but_prose_does_not() -> None:
    """A roster printed to PDF reaches us as space-separated lines: still a personal-records table."""
    from dlpgate.scan.rules import default_rules_dir
    from dlpgate.scan.scanner import Scanner

    sc = Scanner.load(default_rules_dir())
    rows = [f"試験 花子{i} シケン ハナコ 架空県架空市{i}-1 1980/01/{i % 28 + 1:02d}" for i in range(120)]
    page1, page2 = rows[:50], rows[50:]
    text = "令和6年度 対象者名簿\n氏名 フリガナ 住所 生年月日\n" + "\n".join(page1) + "\f" + \
        "氏名 フリガナ 住所 生年月日\n" + "\n".join(page2) + "\n\n以上"
    res = sc.scan("roster.pdf", text)
    assert res.records == 120  # the header repeated on page 2 is not a record
    assert [(f.detector, f.severity) for f in res.findings] == [("personal_records", "high")]
    # prose naming fields, in Japanese or English, is not a table header
    for prose in ("氏名 住所 電話番号をご記入のうえ、担当までお送りください。\n次の行も文章です。\n",
                  "Please send your name and phone number by email to the office.\nThanks a lot for it.\n"):
        assert sc.scan("body", prose).records == 0
