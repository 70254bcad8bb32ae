"""People described in sentences (case notes, hand-over memos): a birth date and an address on one
line or in one sentence is one person's record, without any table header."""

from __future__ import annotations

import pytest

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
