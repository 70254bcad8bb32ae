"""Cheap, length-preserving normalisation for matching.

One `str.translate` table maps full-width ASCII to ASCII, upper case to lower case, the ideographic
space, the other spaces and the zero-width characters to a space and every dash look-alike (including the katakana long mark `ー`, which IMEs put
between digit groups) to `-`. Each character maps to exactly one character, so a position in the
normalised text is the same position in the raw text: findings and proximity need no offset map.

Keywords go through the same table, so `マイナンバー` is stored as `マイナンバ-`; that is harmless
because text is normalised identically. `raw_variants()` inverts the table so that the gates, which
run on raw text, can match every spelling a normalised keyword stands for.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Separators allowed between digit groups (after normalisation): space, hyphen, full stop.
SEPARATORS = "- ."
OTHER_SPACES = "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f"
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc\uff70\ufe63\uff0d"  # ‐ ‑ ‒ – — ― − ー ｰ ﹣ －


def _build_table() -> dict[int, int]:
    table: dict[int, int] = {}
    for cp in range(0xFF01, 0xFF5F):  # full-width ASCII block
        table[cp] = cp - 0xFEE0
    for cp in range(ord("A"), ord("Z") + 1):
        table[cp] = cp + 32
    for cp in range(0xFF21, 0xFF3B):  # full-width A-Z -> a-z directly
        table[cp] = cp - 0xFEE0 + 32
    table[0x3000] = ord(" ")
    for ch in DASHES:
        table[ord(ch)] = ord("-")
    # Other spaces (no-break from Word and web pages, the typographic widths) and the invisible
    # characters (zero-width space, joiners, word joiner, BOM) read as a space, the soft hyphen as a
    # hyphen: `1234<U+00A0>5678<U+00A0>9018` and digits parted by zero-width spaces are the grouped
    # number a reader sees, not three short ones that slip past the scanner.
    for ch in OTHER_SPACES + INVISIBLE:
        table[ord(ch)] = ord(" ")
    table[0x00AD] = ord("-")
    return table


NORMALISE_TABLE: dict[int, int] = _build_table()
_MAPPED = re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(NORMALISE_TABLE)) + "]")
_REPLACEMENT = {chr(src): chr(dst) for src, dst in NORMALISE_TABLE.items()}


def _replace(m: re.Match[str]) -> str:
    return _REPLACEMENT[m.group()]


def normalise(text: str) -> str:
    """Normalise `text` for matching; len(result) == len(text).

    Same result as `text.translate(NORMALISE_TABLE)`, but `str.translate` looks every character
    up in the table (about 13 M chars/s on Japanese text) while a compiled character class only
    stops on the few characters that change (about 60 M chars/s).
    """
    return _MAPPED.sub(_replace, text)


def _inverse() -> dict[str, tuple[str, ...]]:
    inverse: dict[str, list[str]] = {}
    for src, dst in NORMALISE_TABLE.items():
        inverse.setdefault(chr(dst), [chr(dst)]).append(chr(src))
    return {k: tuple(sorted(set(v))) for k, v in inverse.items()}


_INVERSE = _inverse()


def raw_variants(normalised_char: str) -> tuple[str, ...]:
    """Every raw character that normalises to `normalised_char` (itself included)."""
    return _INVERSE.get(normalised_char, (normalised_char,))


# Raw characters that normalise to a digit / to a digit-group separator.
RAW_DIGITS = "".join(sorted({c for d in "0123456789" for c in raw_variants(d)}))
RAW_SEPARATORS = "".join(sorted({c for s in SEPARATORS for c in raw_variants(s)}))


def char_class(chars: Iterable[str]) -> str:
    """A `re` character class (or single escaped char) matching any of `chars`."""
    chars = sorted(set(chars))
    if len(chars) == 1:
        return re.escape(chars[0])
    return "[" + "".join(re.escape(c) for c in chars) + "]"


def raw_keyword_regex(normalised_keyword: str) -> str:
    """A `re` pattern that matches every raw spelling of a normalised keyword."""
    return "".join(char_class(raw_variants(c)) for c in normalised_keyword)


# ---------------------------------------------------------------- folding (field names, keywords)
#
# `normalise` keeps lengths so positions in raw text stay valid; field names and keywords need more:
# `氏　名`, `ﾌﾘｶﾞﾅ`, `生年月日（和暦）`, `住所１`, `【氏名】` are the same field as `氏名`, `フリガナ`,
# `生年月日`, `住所`. `fold` is that one normalisation, used for header cells, keyword catalogues and
# (through `keyword_spellings`) the raw-text gates, which cannot change lengths.

_OPEN = "([{【〔〈《「『<"
_CLOSE = ")]}】〕〉》」』>"
_BRACKETED = re.compile("[" + re.escape(_OPEN) + "][^" + re.escape(_OPEN + _CLOSE) + "]*[" + re.escape(_CLOSE) + "]")
_WRAPPED = re.compile("^[" + re.escape(_OPEN) + "](.*)[" + re.escape(_CLOSE) + "]$")
# Trailing numbering: an optional separator, then digits each after at most one separator. Written
# so each digit is consumed one way only: `(?:[-_.#:]?[0-9]+)+$` (the same strings) backtracked
# exponentially on a cell of digits then a letter (29 digits: minutes per cell).
_NUMBERING = re.compile(r"[-_.#:]?[0-9](?:[-_.#:]?[0-9])*$")
_SPACES = re.compile(r"[\s\u3000]+")


def fold(text: str) -> str:
    """The key a field name or keyword is matched by: NFKC (half-width katakana and full-width forms
    to their common form, circled numbers to digits), `normalise`, no spaces, no bracketed
    qualifier (`生年月日（和暦）` -> `生年月日`; a name wholly in brackets is unwrapped), no trailing
    numbering (`住所１`, `電話番号-2`). Not length-preserving: for short strings (cells, keywords)."""
    # numbering is cut before `normalise` turns the long mark into "-" (`マイナンバー①` is not "-1")
    text = unicodedata.normalize("NFKC", text).strip()
    m = _WRAPPED.match(text)
    if m is not None:
        text = m.group(1)
    text = _SPACES.sub("", _BRACKETED.sub("", text))
    folded = _NUMBERING.sub("", text)
    return normalise(folded or text)


def _halfwidth_map() -> dict[str, str]:
    """Full-width katakana (and the voiced ones) -> their half-width spelling, from NFKC itself."""
    out: dict[str, str] = {}
    marks = ("", "\uff9e", "\uff9f")
    for cp in range(0xFF66, 0xFF9E):
        for mark in marks:
            hw = chr(cp) + mark
            full = unicodedata.normalize("NFKC", hw)
            if len(full) == 1 and full not in out:
                out[full] = hw
    out["\u30fc"] = "\uff70"  # the long mark: normalise() makes both "-"
    return out


_HALFWIDTH = _halfwidth_map()
_CJK = re.compile(r"^[\u3040-\u30ff\u3400-\u9fff]+$")


def keyword_spellings(keyword: str, *, long_words: bool = False) -> tuple[str, ...]:
    """Raw-text spellings of a normalised keyword beyond those `raw_variants` covers, each in
    normalised form (so the gates can match them on raw text without changing lengths): the
    half-width katakana spelling (`ﾏｲﾅﾝﾊﾞｰ`), and for a two-character kanji/kana word the spelling
    with a space in the middle (`氏　名`: how aligned headers are typed); with `long_words`, four-
    character words too (`個人　番号`). Every spelling folds to the keyword's own fold (property-tested)."""
    out: list[str] = []
    if any(c in _HALFWIDTH for c in keyword):
        out.append(normalise("".join(_HALFWIDTH.get(c, c) for c in keyword)))
    if _CJK.match(keyword) and (len(keyword) == 2 or (long_words and len(keyword) == 4)):
        half = len(keyword) // 2
        out.append(keyword[:half] + " " + keyword[half:])
    return tuple(s for s in dict.fromkeys(out) if s != keyword)
