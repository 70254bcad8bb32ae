"""The hyperscan gate and the pure `re` gate give identical findings; the pure path works alone."""

from __future__ import annotations

import builtins
import pickle
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlpgate.scan import gate as gate_module
from dlpgate.scan.checks import my_number_check_digit
from dlpgate.scan.scanner import Scanner

HS = Scanner.load(engine="hyperscan")
RE = Scanner.load(engine="re")

PIECES = [
    "マイナンバー", "個人番号", "注文番号", "TEL", "ＴＥＬ", "運転免許", "住民票コード", "カード番号", "機密性３", "機密性2",
    "部外秘", "氏名", "住所", "生年月日", "\t", ",", "\n", " ", "　", "-", "ー", "−", ".", "あいう", "漢字", "abc",
    "621498320257", "６２１４", "9832", "0257", "4111", "1111", "12345678901", "0", "7", "\r\n",
    # other encoding widths for hyperscan (astral, lone surrogate), case and width look-alikes
    "😀", "\ud800", "FAX", "ｆａｘ", "Individual ＮＵＭＢＥＲ", "\u212aey", "İ",
]


def number(r: random.Random) -> str:
    body = "".join(str(r.randint(0, 9)) for _ in range(11))
    return body + str(my_number_check_digit(body))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=80), st.integers(0, 2**32))
def test_same_findings_with_and_without_hyperscan(pieces: list[str], seed: int) -> None:
    r = random.Random(seed)
    pieces = [number(r) if p == "621498320257" and r.random() < 0.5 else p for p in pieces]
    text = "".join(pieces)
    assert HS.scan("p", text) == RE.scan("p", text)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32))
def test_same_findings_on_long_texts_with_far_apart_triggers(seed: int) -> None:
    r = random.Random(seed)
    chunks = []
    for _ in range(60):
        chunks.append(r.choice(["お世話になっております。", "x" * r.randint(0, 300), "あ" * r.randint(0, 150), "\n"]))
        if r.random() < 0.3:
            chunks.append(r.choice(PIECES[:12]) + r.choice(["", " ", "：", "あ" * r.randint(0, 110)]) + number(r))
    text = "".join(chunks)
    assert HS.scan("p", text) == RE.scan("p", text)


def test_gate_names() -> None:
    assert HS.gate.name == "hyperscan" and RE.gate.name == "re"


def test_pure_path_when_hyperscan_cannot_import(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_hyperscan(name: str, *args: object, **kwargs: object) -> object:
        if name == "hyperscan":
            raise ImportError("no wheel")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_hyperscan)
    scanner = Scanner.load()  # engine "auto"
    assert scanner.gate.name == "re"
    result = scanner.scan("body", "個人番号 6214-9832-0257")
    assert [(f.detector, f.severity) for f in result.findings] == [("my_number", "high")]
    with pytest.raises(ImportError):
        gate_module.make_gate(["x"], "hyperscan")


def test_pickle_round_trip_recompiles() -> None:
    clone = pickle.loads(pickle.dumps(HS))
    assert clone.gate.name == "hyperscan"
    assert clone.scan("b", "個人番号 621498320257") == HS.scan("b", "個人番号 621498320257")


def test_presence_keywords_are_reported_once_by_both_gates() -> None:
    """Product-list words (数量, 単価 ...) matter only by their presence: each gate reports their
    first end only, and every other keyword in full (issue 19: they were a third of all matches).
    So are the negative labels that name a field (TEL, 電話, phone): the scanner finds their other
    occurrences where it needs them (issue 19: TEL was half the gate's callbacks on dense mail)."""
    presence = HS.gate._presence  # type: ignore[attr-defined]
    words = {HS._words[k] for k in presence}
    assert {"数量", "単価", "tel", "電話", "phone"} <= words and "個人番号" not in words
    text = "あ 単価 100円 数量 3個 TEL 03-1234-5678 個人番号\n" * 500
    for scanner in (HS, RE):
        hits = scanner.gate.matches(text)[1]
        assert hits[HS._words.index("数量")] == [text.index("数量") + 2]
        assert hits[HS._words.index("単価")] == [text.index("単価") + 2]
        assert hits[HS._words.index("tel")] == [text.index("TEL") + 3]
        assert len(hits[HS._words.index("個人番号")]) == 500


def test_presence_keyword_spelt_one_byte_off_first() -> None:
    """`tel` one byte off in UTF-16 (U+7400 U+6500 U+6C00) before a real TEL: hyperscan reports a
    presence keyword once, and that one report is no match; the gate then finds the real one, as
    the `re` gate does."""
    text = "\u7400\u6500\u6c00\u0100 注記\nTEL 03-1234-5678 あ"
    k = HS._words.index("tel")
    assert HS.gate.matches(text)[1][k] == RE.gate.matches(text)[1][k] == [text.index("TEL") + 3]
    assert k not in HS.gate.matches(text[: text.index("TEL")])[1]
    upc = "036000291452"  # a valid 12-digit UPC-A that passes the My Number check digit too
    listing = "\n".join(f"商品 {upc[:-1]}{i % 10} 数量 {i}" for i in range(40)) + "\n商品 " + upc
    assert HS.scan("p", listing) == RE.scan("p", listing)
