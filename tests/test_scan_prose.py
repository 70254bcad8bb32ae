"""People described in sentences (case notes, hand-over memos): a birth date and an address on one
line or in one sentence is one person's record, without any table header."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlpgate.scan.scanner import Scanner

SCANNERS = [Scanner.load(engine="hyperscan"), Scanner.load(engine="re")]


def records(scanner: Scanner, text: str) -> tuple[int, list[tuple[str, str, int]]]:
    res = scanner.scan("body", text)
    return res.records, [(f.detector, f.severity, f.count) for f in res.findings]


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("text, want", [
    # one person per line, in the ways a case note writes a birth date and an address
    ("見本 太郎（昭和45年3月2日生、架空市本町1丁目2番3号）は受給者。\n見本 花子（平成2年10月20日生、架空市緑町3-4-5）も同じ。", 2),
    ("見本 一郎　１９７０年３月２日生まれ　架空県見本市中央二丁目5番\n", 1),
    ("対象：見本 次郎 S45年生まれ 住まいは架空市東町12番地", 1),
    ("見本 三郎 昭和50年1月1日生 架空市西町4-1-7\n見本 四郎 昭和51年2月2日生 架空市西町4-1-8\n見本 五郎 昭和52年3月3日生 架空市西町4-1-9", 3),
    # two people in one line, each in a sentence of its own
    ("見本 太郎は昭和45年3月2日生、架空市本町1-2-3在住。妻の花子は昭和47年5月6日生、同市本町1-2-3。", 2),
])
def test_people_in_sentences_are_records(scanner: Scanner, text: str, want: int) -> None:
    got, findings = records(scanner, text)
    assert got == want
    assert ("personal_records", "medium", want) in findings  # a birth date is a sensitive field


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("text", [
    "2024年4月1日生産開始。工場：架空市本町1-2-3",  # 生産: no birth
    "3月2日生じた不具合の報告。本社 架空県見本市中央1-2-3",  # 生じた: no birth
    "毎日生活相談を受け付けています。窓口 架空市本町1丁目2番",  # no date before 日生
    "日生劇場の公演（架空区有楽町1-1-1）",
    "見本 太郎（昭和45年3月2日生）から電話があった。",  # a birth date without an address
    "架空市本町1丁目2番3号の工事は3月2日に終わります。",  # an address without a birth phrase
])
def test_dates_and_addresses_that_are_no_person(scanner: Scanner, text: str) -> None:
    assert records(scanner, text) == (0, [])


# ---- forms typed into text: several label：value pairs on a line, or label and value cut by blanks
FORM_PEOPLE = [("試験 太郎", "昭和45年3月2日", "架空市本町1丁目2番3号"), ("見本 愛", "平成2年10月20日", "架空市緑町3-4-5"),
               ("例示 花子", "昭和50年1月1日", "架空市西町4-1-7")]


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("layout", ["inline", "inline_comma", "spaced_blocks", "tab_blocks", "colon_blocks"])
def test_forms_typed_into_text_count_one_record_per_person(scanner: Scanner, layout: str) -> None:
    people = FORM_PEOPLE * 3  # a short name (見本 愛) right under an address row is no header row
    if layout == "inline":
        text = "\n".join(f"氏名：{n}　生年月日：{b}　住所：{a}" for n, b, a in people)
    elif layout == "inline_comma":
        text = "\n".join(f"氏名: {n}、生年月日: {b}、住所: {a}" for n, b, a in people)
    else:
        sep = {"spaced_blocks": "　", "tab_blocks": "\t", "colon_blocks": "："}[layout]
        text = "\n\n".join(f"【対象者{i}】\n氏名{sep}{n}\n生年月日{sep}{b}\n住所{sep}{a}\n続柄{sep}世帯主"
                           for i, (n, b, a) in enumerate(people, 1))
    got, findings = records(scanner, "対象者の一覧です。\n\n" + text)
    assert got == len(people)
    assert ("personal_records", "medium", len(people)) in findings


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("text", [
    "日時：12月3日 10:00　場所：架空市本町1-2-3　連絡先：03-0000-0000\n持ち物：筆記用具　会場：第2会議室",
    "申込書の書き方\n氏名 （必須）\n住所 （必須）\n電話番号 （任意）\n生年月日 （任意）",
    "氏名 フリガナ 住所 生年月日\n（上記の列で作成してください）",
])
def test_notices_templates_and_bare_headers_are_no_records(scanner: Scanner, text: str) -> None:
    assert records(scanner, text)[0] == 0


def test_form_pairs() -> None:
    from dlpgate.scan.tables import form_pairs

    is_field = SCANNERS[0]._is_field
    assert form_pairs("氏名：試験 太郎　生年月日：昭和45年3月2日　住所：架空市1-2", is_field) == [
        ("氏名", "試験 太郎"), ("生年月日", "昭和45年3月2日"), ("住所", "架空市1-2")]
    assert form_pairs("氏名：試験、個人番号：0000、住所：架空市", is_field) == [
        ("氏名", "試験"), ("個人番号", "0000"), ("住所", "架空市")]
    assert form_pairs("  住所 ： 架空市 1-2", is_field) == [("住所", "架空市 1-2")]
    assert form_pairs("氏名　試験 太郎", is_field) == [("氏名", "試験 太郎")]
    assert form_pairs("TEL 03-0000-0000", is_field) == [("TEL", "03-0000-0000")]
    assert form_pairs("備考：注意：要確認", is_field) == [("備考", "注意：要確認")]
    for blank in ("住所：", "氏名 フリガナ 住所", "氏名 （必須）", "ご案内 本日は晴天", ""):
        assert form_pairs(blank, is_field) == []


# ---- a table's closing rows: a total, 以上, a note are no one's record
ROSTER = [("氏名", "住所", "生年月日")] + [(f"試験 {i}", "架空市本町1-2", "1970/01/01") for i in range(12)]


@pytest.mark.parametrize("tail", [
    [], [("合計", "12名", "")], [("合 計", "", ""), ("※取扱注意", "", "")], [("以上",)], [("Total", "12")],
    [("小計", "12"), ("", "", ""), ("備考：住所は番地まで",)],
])
def test_totals_and_notes_under_a_table_are_not_records(tail: list[tuple[str, ...]]) -> None:
    from dlpgate.extract.model import Table

    scanner = SCANNERS[0]
    assert scanner._tables.analyse(Table("t", tuple(ROSTER + tail))).records == 12
    text = "\n".join(",".join(row) for row in ROSTER + tail)  # the same table typed into a body
    assert records(scanner, text)[0] == 12


def test_a_person_in_the_last_row_still_counts() -> None:
    from dlpgate.extract.model import Table

    rows = ROSTER + [("計 花子", "架空市本町1-2", "1970/01/01"), ("試験 x", "合計", "")]
    assert SCANNERS[0]._tables.analyse(Table("t", tuple(rows))).records == 14


# ---- a register exported without its header row

def _sheet(rows: list[str]) -> tuple[int, list[tuple[str, str, int]]]:
    from dlpgate.extract.model import Table

    res = SCANNERS[0].scan("list.csv", "", (Table("list.csv", tuple(tuple(x.split(",")) for x in rows)),))
    return res.records, [(f.detector, f.severity, f.count) for f in res.findings]


SURNAMES = ["試験", "見本", "例示", "架空", "仮名", "模擬", "検証", "標本"]
GIVEN = ["太郎", "花子", "一郎", "美咲", "健太", "陽子", "翔太", "由美"]


@pytest.mark.parametrize("make", [
    lambda i: f"{SURNAMES[i % 8]} {GIVEN[(i + i // 8) % 8]},架空市本町{i}丁目{i % 5 + 1}番,{1940 + i * 2}/0{i % 9 + 1}/1{i % 9}",
    lambda i: f"{1000 + i},{SURNAMES[i % 8]}　{GIVEN[(i + i // 8) % 8]},昭和{10 + i}年{i % 12 + 1}月{i % 28 + 1}日,男",
    lambda i: f"{SURNAMES[i % 8]} {GIVEN[(i + i // 8) % 8]},架空県見本市中央{i}-{i % 7 + 1}-3,090-0000-{i:04d}",
    lambda i: f"ミホン {['タロウ', 'ハナコ', 'イチロウ', 'ユミ'][i % 4]}{'ア' * (i // 4 + 1)},{1950 + i}-01-{i % 28 + 1:02d}",
])
def test_a_register_without_its_header_is_records(make) -> None:  # type: ignore[no-untyped-def]
    got, findings = _sheet([make(i) for i in range(24)])
    assert got == 24 and findings and findings[0][0] == "personal_records"


@pytest.mark.parametrize("make", [
    lambda i: f"2026/{i % 12 + 1}/{i % 28 + 1},会議 室,架空市本町{i}-1",  # one venue: no one's name
    lambda i: f"{['札幌', '仙台', '金沢', '静岡', '京都', '広島', '福岡', '熊本'][i % 8]}{i} 支店,架空区本町{i}-1-2,03-0000-{i:04d}",
    lambda i: f"{['ノート パソコン', 'ボール ペン', 'マウス パッド'][i % 3]}{i},架空市本町{i}-2,{i % 9 + 1}",  # kana + address
    lambda i: f"{10_000_000 + i},2026/{i % 12 + 1}/{i % 28 + 1},架空市本町{i}-{i % 9 + 1},A4用紙,3",  # dates within a year
    lambda i: f"株式会社見本{i},架空都千代田区{i}-1-2,03-0000-{i:04d}",
    # a company's or an addressee's name written like a person's (two words, a blank between)
    lambda i: f"{['株式会社', '有限会社', '合同会社'][i % 3]} 見本{['商事', '電機', '物流'][i % 3]}{i},架空県見本市本町{i}-1-2,03-0000-{i:04d}",
    lambda i: f"見本{['電機', '物流', '企画'][i % 3]}{i} 御中,架空県見本市本町{i}-1-2,03-0000-{i:04d}",
    lambda i: f"例示{i} {['商事', '工業', '産業', '建設'][i % 4]},架空県見本市本町{i}-1-2,{1950 + i * 3}/04/01",  # founding dates
])
def test_headerless_business_lists_are_no_records(make) -> None:  # type: ignore[no-untyped-def]
    assert _sheet([make(i) for i in range(24)]) == (0, [])


def test_a_headerless_table_of_four_rows_says_too_little() -> None:
    rows = [f"{SURNAMES[i]} {GIVEN[i]},架空市本町{i}丁目1番,{1950 + 9 * i}/01/01" for i in range(4)]
    assert _sheet(rows) == (0, [])


# ---- the same registers pasted from a spreadsheet into a body (tab-separated, no header)

REGISTERS = [
    lambda i: f"{SURNAMES[i % 8]} {GIVEN[(i + i // 8) % 8]}\t架空市本町{i}丁目{i % 5 + 1}番\t{1940 + i * 2}/0{i % 9 + 1}/1{i % 9}",
    lambda i: f"{1000 + i}\t{SURNAMES[i % 8]}　{GIVEN[(i + i // 8) % 8]}\t昭和{10 + i}年{i % 12 + 1}月{i % 28 + 1}日\t男",
    lambda i: f"{SURNAMES[i % 8]} {GIVEN[(i + i // 8) % 8]}\t架空県見本市中央{i}-{i % 7 + 1}-3\t090-0000-{i:04d}",
]


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("make", REGISTERS)
def test_people_pasted_without_their_header_are_records(scanner: Scanner, make) -> None:  # type: ignore[no-untyped-def]
    body = "お疲れ様です。昨日の分です。\n\n" + "\n".join(make(i) for i in range(20)) + "\n\nよろしくお願いします。"
    got, findings = records(scanner, body)
    assert got == 20 and findings and findings[0][0] == "personal_records"
    # a blank line parts two blocks: each is judged alone (birth years still decades apart)
    rows = [make(i * 3) for i in range(12)]
    assert records(scanner, "\n".join(rows[:6]) + "\n\n" + "\n".join(rows[6:]) + "\n")[0] == 6


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("make", [
    lambda i: f"2026/{i % 12 + 1}/{i % 28 + 1}\t会議 室\t架空市本町{i}-1",
    lambda i: f"{['札幌', '仙台', '金沢', '静岡', '京都', '広島', '福岡', '熊本'][i % 8]}{i} 支店\t架空区本町{i}-1-2\t03-0000-{i:04d}",
    lambda i: f"{['ノート パソコン', 'ボール ペン', 'マウス パッド'][i % 3]}{i}\t架空市本町{i}-2\t{i % 9 + 1}",
    lambda i: f"{10_000_000 + i}\t2026/{i % 12 + 1}/{i % 28 + 1}\t架空市本町{i}-{i % 9 + 1}\tA4用紙\t3",
    lambda i: f"2026-11-{i % 28 + 1:02d} 10:{i % 60:02d}\tINFO\tjob {i} finished\t{i * 37} ms",  # a pasted log
])
def test_business_rows_pasted_without_a_header_are_no_records(scanner: Scanner, make) -> None:  # type: ignore[no-untyped-def]
    assert records(scanner, "一覧です。\n" + "\n".join(make(i) for i in range(24)) + "\n") == (0, [])


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
def test_four_pasted_people_say_too_little(scanner: Scanner) -> None:
    rows = [f"{SURNAMES[i]} {GIVEN[i]}\t架空市本町{i}丁目1番\t{1950 + 9 * i}/01/01" for i in range(4)]
    assert records(scanner, "\n".join(rows)) == (0, [])


# ---- lines between a header and its rows; labels in brackets

@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("between", [["（※住所は住民票記載のとおり。敬称略）"], [""], ["", "単位：人"]])
@pytest.mark.parametrize("sep", ["\t", ","])
def test_a_note_under_the_header_does_not_end_the_table(scanner: Scanner, between: list[str], sep: str) -> None:
    rows = [sep.join(r) for r in ROSTER]
    body = "対象者一覧です。\n\n" + "\n".join([rows[0], *between, *rows[1:]]) + "\n\n以上"
    assert records(scanner, body)[0] == 12
    # three lines of text after a header line: that header stands alone
    body = "\n".join([rows[0], "一", "二", "三", *rows[1:]])
    assert records(scanner, body)[0] == 0


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("layout", ["lines", "inline", "colon"])
def test_labels_in_brackets_are_a_form(scanner: Scanner, layout: str) -> None:
    people = [(f"{SURNAMES[i % 8]} {GIVEN[i % 8]}", f"架空市本町{i}丁目{i % 5 + 1}番{i}号", f"昭和{30 + i}年{i % 12 + 1}月{i + 1}日")
              for i in range(8)]
    if layout == "lines":
        body = "\n\n".join(f"【氏名】{n}\n【住所】{a}\n【生年月日】{b}" for n, a, b in people)
    elif layout == "inline":
        body = "\n".join(f"【氏名】{n}【住所】{a}【生年月日】{b}" for n, a, b in people)
    else:
        body = "\n".join(f"［氏名］：{n}　［住所］：{a}　［生年月日］：{b}" for n, a, b in people)
    got, findings = records(scanner, "申請者情報\n\n" + body)
    assert got == 8 and findings[0][0] == "personal_records"
    # a bracketed tag that names no field leaves the line to the colon reading
    assert records(scanner, "【重要】氏名：試験 太郎\n【重要】住所：架空市本町1-2\n【至急】生年月日：昭和45年3月2日")[0] == 1
    # a blank template (labels only) is no record
    assert records(scanner, "【氏名】\n【住所】\n【生年月日】\n")[0] == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a\tb", "x", "", "c\td\te", "\t", "f\tg\r"]), st.booleans()), max_size=30),
       st.booleans())
def test_tab_blocks_are_the_runs_of_five_tab_lines(lines, final_newline: bool) -> None:  # type: ignore[no-untyped-def]
    from dlpgate.scan.headerless import tab_blocks

    texts = [t for t, _ in lines]
    text = "\n".join(texts) + ("\n" if final_newline and texts else "")
    want, run, pos = [], [], 0
    for t in [*texts, None]:  # the naive reading: line by line
        if t is not None and "\t" in t:
            run.append((pos, pos + len(t) + 1))
        else:
            if len(run) >= 5:
                want.append((run[0][0], min(run[-1][1], len(text))))
            run = []
        if t is not None:
            pos += len(t) + 1
    assert tab_blocks(text) == want


# ---- a mailing list pasted into a body: a name, an honorific and an address on each line

@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("line", [
    lambda i, n: f"{i}. {n} 様　架空市本町{i}丁目{i % 5 + 1}番{i}号",
    lambda i, n: f"〒100-00{i:02d} 架空県見本市緑町{i}-{i % 7 + 1}-3 {n}様",
    lambda i, n: f"{n} 殿 ／ 架空市西町{i}-1 ／ 090-0000-{i:04d}",
])
def test_a_mailing_list_is_records(scanner: Scanner, line) -> None:  # type: ignore[no-untyped-def]
    names = [f"{SURNAMES[i % 8]} {GIVEN[(i + i // 8) % 8]}" for i in range(12)]
    got, findings = records(scanner, "発送先リストです。\n\n" + "\n".join(line(i, n) for i, n in enumerate(names, 1)))
    assert got == 12 and findings[0][0] == "personal_records" and findings[0][1] == "medium"
    # four lines are a letter's addresses, not a list
    assert records(scanner, "\n".join(line(i, n) for i, n in enumerate(names[:4], 1)))[0] == 0
    # in a long text (the scanner asks first whether it holds an honorific at all: _LONG_TEXT)
    prose = "いつもお世話になっております。ご確認ください。\n" * 3000
    assert len(prose) > 65536
    assert records(scanner, prose + "\n".join(line(i, n) for i, n in enumerate(names, 1)) + "\n" + prose)[0] == 12
    assert records(scanner, prose + "\n".join(line(i, n).replace("様", "").replace("殿", "")
                                               for i, n in enumerate(names, 1)))[0] == 0


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("line", [
    lambda i: f"見本商事{'' if i % 2 else ' '}株式会社 ご担当者様　架空市本町{i}-1-2",  # a role, not a person
    lambda i: f"{['見本商事', '例示電機', '架空物流'][i % 3]} 様　架空県見本市本町{i}-1-2",  # an organisation
    lambda i: f"様式第{i}号 架空市本町{i}-2 の提出について",  # 様式: no honorific
    lambda i: f"お客様各位　{i}月{i}日 架空市本町{i}-1 にて説明会",
    lambda i: f"見本 太郎様　ご注文番号 {10_000 + i}",  # no address
])
def test_lines_with_honorifics_that_are_no_list(scanner: Scanner, line) -> None:  # type: ignore[no-untyped-def]
    assert records(scanner, "\n".join(line(i) for i in range(1, 13))) == (0, [])
