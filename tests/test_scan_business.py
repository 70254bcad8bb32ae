"""Issue 16: business data read as a person would.

* every case of the business corpus (tests/corpus/business.py: dense-number negatives, header
  variants, tables in every layout, TNEF / .doc / gzip / 7z) gets its label: held or not, the exact
  record count, the detectors that must fire;
* property tests: every spelling of a field name or keyword folds to one key; a column of random
  12-digit numbers under a negative label never gives a My Number; valid ones under 個人番号 always do;
* the formats: encrypted 7z stays encrypted, damaged ones are corrupt, never a crash;
* technical headers are not read for identifiers; the Subject is;
* `dlpgate scan` recognises a message by its content.
"""

from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent / "corpus"))
sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import business  # noqa: E402
import legacy_formats as lf  # noqa: E402
import make_fixtures as fx  # noqa: E402

from dlpgate.extract import ENCRYPTED, extract_file, extract_message  # noqa: E402
from dlpgate.extract.model import Table  # noqa: E402
from dlpgate.offline_scan import run  # noqa: E402
from dlpgate.scan.checks import is_valid_my_number  # noqa: E402
from dlpgate.scan.normalize import fold, keyword_spellings  # noqa: E402
from dlpgate.scan.scanner import Scanner  # noqa: E402

CASES = {c.name: c for c in business.build()}
SCANNER = Scanner.load()


def test_corpus_has_what_the_issue_asks_for() -> None:
    negatives = [c for c in CASES.values() if not c.leak]
    assert len(negatives) >= 30
    kinds = {c.kind for c in CASES.values()}
    assert kinds >= {"orders", "catalogue", "log", "zengin", "tracking", "fixed", "header variant", "vertical", "form",
                     "multi-row", "html", "lost zero", "tnef", "doc", "gzip", "7z", "bzip2", "xz", "headers", "space", "suppliers", "bars",
                     "placeholder"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_business_case(name: str) -> None:
    case = CASES[name]
    got = business.judge(case)
    assert got.content == case.leak, f"{name}: held by content {got.content}, findings {sorted(got.detectors)}"
    assert got.held == case.leak
    if case.records is not None:
        assert got.records == case.records
    assert case.must <= got.detectors


# ---------------------------------------------------------------- folding

FIELD_NAMES = ["氏名", "住所", "生年月日", "フリガナ", "電話番号", "個人番号", "マイナンバー", "性別", "続柄"]


def _spellings(r: random.Random, word: str) -> str:
    """A spelling of `word` as people type headers: widths, spaces, qualifiers, numbering."""
    out = word
    if r.random() < 0.5:
        out = "".join(lf_halfwidth(c) for c in out)
    if r.random() < 0.4 and len(word) >= 2:
        k = r.randrange(1, len(word))
        out = out[:k] + r.choice(["　", " ", "  "]) + out[k:] if out == word else out
    if r.random() < 0.4:
        out += r.choice(["（和暦）", "(漢字)", "【必須】", "［任意］"])
    if r.random() < 0.4:
        out += r.choice(["１", "2", "-3", "①"])
    if r.random() < 0.2:
        opening = r.choice(["【", "［", "〈"])
        out = opening + out + {"【": "】", "［": "］", "〈": "〉"}[opening]
    return out


def lf_halfwidth(c: str) -> str:
    from dlpgate.scan.normalize import _HALFWIDTH

    return _HALFWIDTH.get(c, c)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELD_NAMES), st.integers(0, 2**32))
def test_every_spelling_of_a_field_name_folds_to_one_key(word: str, seed: int) -> None:
    spelt = _spellings(random.Random(seed), word)
    assert fold(spelt) == fold(word), spelt


@pytest.mark.parametrize("variant,word", [("氏　名", "氏名"), ("ﾌﾘｶﾞﾅ", "フリガナ"), ("ﾏｲﾅﾝﾊﾞｰ", "マイナンバー"),
                                          ("生年月日（和暦）", "生年月日"), ("住所１", "住所"), ("【氏名】", "氏名"),
                                          ("個人　番号", "個人番号"), ("ＴＥＬ", "tel"), ("電話番号-2", "電話番号")])
def test_header_variants_fold(variant: str, word: str) -> None:
    assert fold(variant) == fold(word)


def test_every_keyword_spelling_folds_to_the_keyword() -> None:
    rules = SCANNER.rules
    words = [*rules.my_number_keywords, *rules.negative_labels, *(w for g in rules.record_fields for w in g.keywords)]
    for w in words:
        for s in keyword_spellings(w, long_words=True):
            assert fold(s) == fold(w), (w, s)


@pytest.mark.parametrize("keyword", ["ﾏｲﾅﾝﾊﾞｰ", "個人　番号", "個人 番号", "マイナンバー"])
def test_keyword_spellings_are_found_in_text(keyword: str) -> None:
    rng = random.Random(1)
    n = fx.my_number(rng)
    for engine in ("hyperscan", "re"):
        found = Scanner.load(engine=engine).scan("body", f"{keyword}：{n}").findings
        assert [(f.detector, f.severity) for f in found] == [("my_number", "high")]


# ---------------------------------------------------------------- the column rule

NEGATIVE_HEADERS = ["注文番号", "伝票番号", "受付番号", "管理番号", "追跡番号", "JANコード", "UPC", "商品コード", "日時", "口座番号",
                    "請求番号", "会員番号"]


def _numbers(seed: int, n: int, valid: bool | None) -> list[str]:
    r = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        v = "".join(str(r.randrange(10)) for _ in range(12))
        if valid is None or is_valid_my_number(v) == valid:
            out.append(v)
    return out


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(NEGATIVE_HEADERS), st.integers(1, 60), st.integers(0, 2**32), st.booleans(),
       st.sampled_from([None, True]))
def test_a_negative_column_never_holds_my_numbers(header: str, n: int, seed: int, as_table: bool,
                                                  valid: bool | None) -> None:
    numbers = _numbers(seed, n, valid)
    rows = [(header, "金額"), *((v, "1200") for v in numbers)]
    text = "\n".join("\t".join(row) for row in rows)
    tables = (Table("a.xlsx/Sheet1", tuple(rows)),) if as_table else ()
    found = SCANNER.scan("a.xlsx/Sheet1", text, tables).findings
    assert not [f for f in found if f.detector == "my_number"]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["個人番号", "マイナンバー", "個人番号（マイナンバー）", "ﾏｲﾅﾝﾊﾞｰ", "個人　番号"]), st.integers(1, 60),
       st.integers(0, 2**32), st.booleans())
def test_valid_numbers_under_a_my_number_column_always_hold(header: str, n: int, seed: int, as_table: bool) -> None:
    numbers = [v for v in _numbers(seed, n, True) if v.count(v[0]) < 12]
    rows = [("氏名", header), *((f"試験 {i}", v) for i, v in enumerate(numbers))]
    text = "\n".join("\t".join(row) for row in rows)
    tables = (Table("a.xlsx/Sheet1", tuple(rows)),) if as_table else ()
    found = [f for f in SCANNER.scan("a.xlsx/Sheet1", text, tables).findings if f.detector == "my_number"]
    assert len(found) == 1 and found[0].severity == "high" and found[0].count == len(numbers)


@settings(max_examples=40, deadline=None)
@given(st.integers(20, 200), st.integers(0, 2**32))
def test_random_unlabelled_numbers_are_not_my_numbers(n: int, seed: int) -> None:
    """About 1 in 10 passes the check digit: as a set they are not My Numbers (pass rate far below 80%)."""
    numbers = _numbers(seed, n, None)
    text = "\n".join(f"{v}\t{i}" for i, v in enumerate(numbers))
    if sum(map(is_valid_my_number, numbers)) * 100 >= 80 * n:
        return  # (never happens at these sizes)
    assert not [f for f in SCANNER.scan("p", text).findings if f.detector == "my_number"]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(20, 80), st.integers(0, 2**32), st.booleans())
def test_order_numbers_in_prose_do_not_lower_the_pass_rate_of_bare_numbers(k: int, n: int, seed: int,
                                                                           labelled: bool) -> None:
    """Prose with a few bare passing numbers among many failing ones: a failing number a label
    explains (注文番号 right before it) is not a candidate of the part's population, so the bare ones
    keep their pass rate and are My Numbers; the same failing numbers unlabelled sink it."""
    bare = [v for v in _numbers(seed, k, True) if v.count(v[0]) < 12]
    failing = _numbers(seed + 1, n, False)
    lines = [f"参照 {v} の件についてご確認ください" for v in bare]
    lines += [f"{'注文番号' if labelled else '記録'} {v} の件についてご確認ください" for v in failing]
    random.Random(seed).shuffle(lines)
    found = [f for f in SCANNER.scan("body", "\n".join(lines)).findings if f.detector == "my_number"]
    if labelled:
        assert [f.count for f in found] == [len(bare)]
    else:
        assert found == []


def test_placeholders_are_not_my_numbers() -> None:
    for text in ("個人番号 000000000000", "マイナンバー：0000-0000-0000", "個人番号\n999999999999"):
        assert SCANNER.scan("p", text).findings == ()


def test_datetimes_need_a_keyword() -> None:
    stamps = [v for v in (f"2024{m:02d}{d:02d}{h:02d}{mi:02d}" for m in range(1, 13) for d in (3, 17) for h in (1, 9)
                          for mi in (5, 47)) if is_valid_my_number(v)][:4]
    assert len(stamps) == 4
    assert SCANNER.scan("p", "\n".join(f"{s} batch ok" for s in stamps)).findings == ()
    found = SCANNER.scan("p", f"個人番号 {stamps[0]}").findings
    assert [(f.detector, f.severity) for f in found] == [("my_number", "high")]


# ---------------------------------------------------------------- formats


def test_encrypted_7z_is_encrypted_and_damaged_formats_are_corrupt() -> None:
    ex = extract_file("a.7z", lf.sevenzip_bytes({"名簿.csv": b"a,b"}, password="pw"))
    assert [p.unscannable for p in ex.parts] == [ENCRYPTED]
    ex = extract_file("a.doc", lf.doc_bytes(["個人番号"], encrypted=True))
    assert [p.unscannable for p in ex.parts] == [ENCRYPTED]
    good = {"a.7z": lf.sevenzip_bytes({"a.csv": b"x"}), "a.gz": business.gzip.compress(b"x" * 100),
            "winmail.dat": lf.tnef_bytes("x", [("a.csv", b"1,2")]), "a.doc": lf.doc_bytes(["本文"])}
    for name, data in good.items():
        for cut in (len(data) // 2, len(data) - 3):
            parts = extract_file(name, data[:cut]).parts
            assert all(p.unscannable in (None, "corrupt", "unsupported") for p in parts), (name, cut, parts)


def test_doc_text_keeps_table_cells_apart() -> None:
    ex = extract_file("a.doc", lf.doc_bytes(["前文"], [("氏名", "個人番号"), ("試験 太郎", "1234")]))
    assert ex.parts[0].text.split("\n")[:3] == ["前文", "氏名\t個人番号", "試験 太郎\t1234"]


def test_tnef_attachment_paths_and_body() -> None:
    ex = extract_file("winmail.dat", lf.tnef_bytes("本文です", [("名簿.csv", b"a,b\n")]))
    assert [p.path for p in ex.parts] == ["winmail.dat/body", "winmail.dat/名簿.csv"]
    assert ex.parts[0].text == "本文です"


def test_gzip_inner_name_and_bomb_limit() -> None:
    from dlpgate.extract import ExtractLimits

    ex = extract_file("roster.csv.gz", business.gzip.compress("氏名,住所\n".encode()))
    assert ex.parts[0].path == "roster.csv.gz/roster.csv" and ex.parts[0].kind == "csv"
    bomb = business.gzip.compress(b"\0" * 5_000_000)
    ex = extract_file("bomb.gz", bomb, ExtractLimits(max_total_bytes=1_000_000))
    assert [p.unscannable for p in ex.parts] == ["limit"]


# ---------------------------------------------------------------- headers and `dlpgate scan`


def test_technical_headers_are_not_read_but_the_subject_is() -> None:
    n = fx.my_number(random.Random(5))
    raw = business.eml("本文", subject=f"個人番号 {n}", headers={
        "Message-ID": f"<{n}@example.jp>", "References": "<000000000000@example.jp>", "In-Reply-To": f"<{n}@x.jp>"})
    found = SCANNER.scan_extraction(extract_message(raw)).findings
    assert [(f.part, f.detector) for f in found] == [("subject", "my_number")]
    clean = business.eml("本文", headers={"Message-ID": f"<{n}@example.jp>", "References": "<000000000000@e.jp>"})
    assert SCANNER.scan_extraction(extract_message(clean)).findings == ()


def test_scan_recognises_a_message_by_content(tmp_path: Path) -> None:
    n = fx.my_number(random.Random(9))
    p = tmp_path / "saved.txt"
    p.write_bytes(business.eml(f"個人番号 {n}", headers={"Cc": "inside@example.jp"}))
    out, err = io.StringIO(), io.StringIO()
    assert run([str(p)], as_json=True, rules_dir=None, out=out, err=err) == 1
    record = json.loads(out.getvalue())
    assert record["verdict"] == "hold" and record["findings"][0]["part"] == "body"
    assert n not in out.getvalue() + err.getvalue()


def test_trace_headers_pasted_into_a_body_are_not_read() -> None:
    n = fx.my_number(random.Random(11))
    pasted = (f"元のメッセージのヘッダーです。\nReceived: from mx.example.jp\n\tby relay with ESMTP id {n};\n"
              f"Message-ID: <{n}@example.jp>\nReferences: <a@b>\n <{n}.{n}@example.jp>\n"
              f"DKIM-Signature: v=1; d=example.jp;\n\tbh={n}\nX-MS-Exchange-Id: {n}\n")
    assert SCANNER.scan("body", pasted).findings == ()
    assert [f.detector for f in SCANNER.scan("body", pasted + f"Subject: 個人番号 {n}\n").findings] == ["my_number"]


def test_space_aligned_listing_counts_every_number_of_its_my_number_column() -> None:
    """Rows cut into the header's cells at their wide gaps: every number under 個人番号 counts, not
    only those within `proximity` of the header; a row that cannot be cut stays one whole cell."""
    from dlpgate.scan.scanner import Scanner

    r = random.Random(3)
    numbers = [business.my_number(r) for _ in range(25)]
    rows = [f"試験 太郎{i:<4}  1980/01/{i + 1:02d}  見本市中央{i}-1-1      {n}" for i, n in enumerate(numbers)]
    text = "氏名    生年月日    住所    個人番号\n" + "\n".join(rows)
    result = Scanner.load().scan("body", text)
    by = {f.detector: f for f in result.findings}
    assert by["my_number"].count == 25 and by["my_number"].severity == "high"
    assert result.records == 25
