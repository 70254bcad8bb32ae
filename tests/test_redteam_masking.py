"""Red team, "never leak": identifiers written the ways a copy from a web page, Word, a PDF or a
folded header writes them, and the ways someone hiding them would. Masking must hide every one
of them in what the gateway says (logs, CLI, JSON, notices, the web console).

`leaks` here is stricter than test_leakproof_masking's: whatever sits between two digits that is
not a letter or a digit does not break the sequence (zero-width characters, bidi controls, soft
hyphens, no-break spaces), and every character a reader takes for a digit counts as one
(superscripts, circled digits, kanji numerals, Arabic-Indic digits).

All identifiers are synthetic My Numbers with a valid check digit.
"""

from __future__ import annotations

import unicodedata

import pytest

from dlpgate.masking import mask_number, mask_text
from tests.test_approval_support import my_number

KANJI = "〇一二三四五六七八九"


def digits_of(text: str) -> str:
    """The digit sequence a reader sees in `text` (letters break it: they are kept as they are)."""
    out = []
    for c in text:
        if c in KANJI:
            out.append(str(KANJI.index(c)))
        elif unicodedata.digit(c, None) is not None:
            out.append(str(unicodedata.digit(c)))
        elif c.isalpha():
            out.append("|")
    return "".join(out)


def leaks(text: str, digits: str) -> bool:
    return digits in digits_of(text)


N = my_number("12345678901")  # 123456789018
ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
SUPER = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
CIRCLED = str.maketrans("0123456789", "⓪①②③④⑤⑥⑦⑧⑨")
KANJI_T = str.maketrans("0123456789", KANJI)


def grouped(n: str, sep: str) -> str:
    return f"{n[:4]}{sep}{n[4:8]}{sep}{n[8:]}"


HOSTILE = {
    "zero-width space": grouped(N, "\u200b"),
    "word joiner": grouped(N, "\u2060"),
    "soft hyphen": grouped(N, "\u00ad"),
    "byte order mark": grouped(N, "\ufeff"),
    "zero-width joiner": grouped(N, "\u200d"),
    "zero-width space between every digit": "\u200b".join(N),
    "two zero-width characters and a space": grouped(N, "\u200b \u2060"),
    "bidi override": f"{N[:4]}\u202e{N[4:8]}\u202c{N[8:]}",
    "no-break space": grouped(N, "\u00a0"),
    "narrow no-break space": grouped(N, "\u202f"),
    "thin space": grouped(N, "\u2009"),
    "figure space": grouped(N, "\u2007"),
    "small em dash": grouped(N, "\ufe58"),
    "two-em dash": grouped(N, "\u2e3a"),
    "header folded (CRLF SP)": f"{N[:4]}\r\n {N[4:8]} {N[8:]}",
    "header folded (LF TAB)": f"{N[:6]}\n\t{N[6:]}",
    "Arabic-Indic digits with zero-width spaces": "\u200b".join(N.translate(ARABIC)),
    "superscript digits": N.translate(SUPER),
    "circled digits": N.translate(CIRCLED),
    "kanji numerals": N.translate(KANJI_T),
    "kanji numerals grouped": grouped(N.translate(KANJI_T), "\u3000"),
}


@pytest.mark.parametrize("where", sorted(HOSTILE))
def test_hostile_spellings_are_masked(where: str) -> None:
    text = f"件名 個人番号 {HOSTILE[where]} 送付"
    out = mask_text(text)
    assert not leaks(out, N), (where, out)
    assert mask_number(N) in out, (where, out)  # the first four digits are kept, the rest starred
    assert mask_text(out) == out  # stable


def test_what_masking_leaves_alone() -> None:
    """The margin stays a margin: short numbers, a column of codes one per line, a range and times
    are no identifiers."""
    for text in ("1234\n5678\n9012", "1234\r\n5678", "第1234号 5678件", "10:00〜12:00", "内線 1234\u200b",
                 "2024年1月15日", "一二三四", "会議室 3\u00a0階"):
        assert mask_text(text) == text, text


def test_character_tables_are_whole() -> None:
    """spans.py builds its tables from a list of Unicode blocks (a walk over all of Unicode at every
    command's start would cost ~0.2 s): the blocks hold every character of each kind."""
    from dlpgate.scan import spans
    from dlpgate.scan.normalize import RAW_SEPARATORS

    every = [chr(cp) for cp in range(0x110000)]
    assert spans.INVISIBLE == "".join(c for c in every if unicodedata.category(c) == "Cf")
    assert spans.EXTRA_SEPARATORS == "".join(
        c for c in every if unicodedata.category(c) in ("Zs", "Pd") and c not in RAW_SEPARATORS + " \u301c\u3030")
    assert spans.OTHER_DIGITS == "".join(
        c for c in every if c.isdigit() and unicodedata.category(c) != "Nd") + spans.KANJI_DIGITS
