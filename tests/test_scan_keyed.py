"""Identifiers with no check digit, told by their shape after a keyword (scan/keyed.py): passports,
residence cards, basic pension numbers — and any an operator adds in the rules. All synthetic."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlpgate.errors import RuleError
from dlpgate.masking import mask_text
from dlpgate.scan.normalize import normalise
from dlpgate.scan.rules import default_rules_dir, load_detector_rules
from dlpgate.scan.scanner import Scanner

SCANNERS = [Scanner.load(engine="hyperscan"), Scanner.load(engine="re")]
FULL = str.maketrans("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", "０１２３４５６７８９ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ")


def found(scanner: Scanner, text: str) -> dict[str, tuple[int, str, str]]:
    return {f.detector: (f.count, f.severity, f.sample) for f in scanner.scan("body", text).findings}


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("text, detector, sample", [
    ("申請者のパスポート番号は TK1234567 です。", "passport", "TK*******"),
    ("旅券番号：ＴＫ１２３４５６７", "passport", "ＴＫ*******"),
    ("Passport No. XZ7654321, expires 2030", "passport", "XZ*******"),
    ("在留カード番号\nAB12345678CD\n", "residence_card", "AB**********"),  # a label above its value
    ("特別永住者証明書番号 CD87654321EF", "residence_card", "CD**********"),
    ("基礎年金番号 1234-567890 の照会", "pension_number", "12*********"),
    ("年金手帳の番号：4321 098765", "pension_number", "43*********"),
])
def test_an_identifier_after_its_keyword_is_found_and_masked(scanner: Scanner, text: str, detector: str,
                                                             sample: str) -> None:
    got = found(scanner, text)
    assert got[detector] == (1, "medium", sample)


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("text", [
    "品番 TK1234567 は在庫あり。",  # the shape without its keyword is a part number
    "パスポートの申請について\n窓口は2階です。\n品番 TK7654321",  # two lines below the keyword
    "パスポート番号 TK12345678",  # eight digits: not the shape, whole
    "パスポート番号 ATK1234567",  # a letter before it: not whole
    "在留カードの更新 AB1234567CD",  # seven digits
    "年金番号のお知らせ 12345-67890",
])
def test_a_shape_without_its_keyword_or_out_of_shape_is_nothing(scanner: Scanner, text: str) -> None:
    got = found(scanner, text)
    assert not {"passport", "residence_card", "pension_number"} & set(got), got


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
def test_distinct_values_are_counted(scanner: Scanner) -> None:
    text = "\n".join(f"パスポート番号 TK{1234560 + i}" for i in range(5)) + "\nパスポート番号 TK1234560"
    assert found(scanner, text)["passport"] == (5, "medium", "TK*******")


def _rules_with(tmp_path: Path, extra: str) -> Path:
    d = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), d)
    p = d / "detectors.toml"
    text = p.read_text(encoding="utf-8")
    p.write_text(text.replace("[personal_records]", extra + "\n[personal_records]", 1), encoding="utf-8")
    return d


@pytest.mark.parametrize("extra, key", [
    ('[[keyed]]\nname = "x"\nkeywords = ["社員番号"]\npattern = "[A-Z]{2}[0-9]{6}"\n', "pattern"),  # upper case
    ('[[keyed]]\nname = "x"\nkeywords = ["社員番号"]\npattern = "[0-9]*"\n', "pattern"),  # matches nothing
    ('[[keyed]]\nname = "x"\nkeywords = ["社員番号"]\npattern = "([0-9]"\n', "pattern"),
    ('[[keyed]]\nname = "my_number"\nkeywords = ["社員番号"]\npattern = "e[0-9]{6}"\n', "name"),
    ('[[keyed]]\nname = "x"\nkeywords = []\npattern = "e[0-9]{6}"\n', "keywords"),
    ('[[keyed]]\nname = "x"\nkeywords = ["社員番号"]\npattern = "e[0-9]{6}"\nseverity = "urgent"\n', "severity"),
])
def test_a_bad_keyed_rule_is_named(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(RuleError, match=rf"keyed\[?\d*\]?\.{key}|keyed.*{key}"):
        load_detector_rules(_rules_with(tmp_path, extra))


def test_an_operators_own_identifier_is_found_and_masked_everywhere(tmp_path: Path) -> None:
    rules = _rules_with(tmp_path, '[[keyed]]\nname = "staff_id"\nkeywords = ["職員番号"]\n'
                                  'pattern = "s-[0-9]{6}"\nseverity = "high"\n')
    scanner = Scanner.load(rules)
    assert found(scanner, "職員番号：S-123456 の件")["staff_id"] == (1, "high", "S-******")
    # once a scanner has loaded it, masking hides the shape in any text, keyword or not
    assert mask_text("件名 S-123456") == "件名 S-******"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["TK1234567", "AB12345678CD", "1234-567890", "1234 567890", "1234567890"]),
       st.booleans(), st.text(alphabet="あ 、x\n", max_size=10), st.text(alphabet="あ 、x\n", max_size=10))
def test_masking_hides_every_keyed_shape_with_or_without_its_keyword(value: str, wide: bool, before: str,
                                                                     after: str) -> None:
    raw = value.translate(FULL) if wide else value
    for text in (f"{before}{raw}{after}", f"{before}パスポート番号 {raw}{after}"):
        out = mask_text(text)
        assert normalise(value).lower() not in normalise(out).replace(" ", "").replace("-", ""), (text, out)
        assert mask_text(out) == out


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
def test_a_column_headed_by_a_keyword_counts_every_cell(scanner: Scanner) -> None:
    from dlpgate.extract.model import Table

    rows = (("No", "氏名", "旅券番号", "備考"),) + tuple(
        (str(i), f"見本 {i}", f"TK{1234500 + i}", "品番 TK9999999") for i in range(40))
    got = {f.detector: f.count for f in scanner.scan("t.csv", "", (Table("t.csv", rows),)).findings}
    assert got["passport"] == 40  # the 備考 column's part number is no passport


@pytest.mark.parametrize("scanner", SCANNERS, ids=["hyperscan", "re"])
@pytest.mark.parametrize("sep", ["\u00a0", "\u2009", "\u202f", "\u2007", "\u200b", "\u2060", "\ufeff", "\u00ad"])
def test_a_my_number_parted_by_other_spaces_or_invisible_characters_is_found(scanner: Scanner, sep: str) -> None:
    """No-break and thin spaces come in from Word and web pages; zero-width characters are a cheap
    way to dodge a scanner: each reads as one separator (red team, 2 December 2026)."""
    from dlpgate.scan.checks import my_number_check_digit

    n = "62149832025" + str(my_number_check_digit("62149832025"))
    for text in (f"個人番号 {n[:4]}{sep}{n[4:8]}{sep}{n[8:]}", f"マイナンバー{sep}{n}"):
        got = {f.detector: (f.severity, f.sample) for f in scanner.scan("body", text).findings}
        assert got.get("my_number") == ("high", "6214********"), (repr(sep), got)
