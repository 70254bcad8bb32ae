"""People described in sentences rather than tables: a case note, a hand-over memo, a reply that
lists the residents concerned one per line —

    山田 太郎（昭和45年3月2日生、北見市本町1丁目2番3号）は児童手当の受給者。

A table's header names its fields; a sentence names none, yet a birth date and a home address side
by side say as much as a register row. The scanner's gate finds the birth phrases (rules:
`birth_phrases`: `…日生`, `…年生まれ`, rare in business text, so cheap), and a line or sentence
holding one and an address (a municipality or town word followed by a block number) counts as one
person's record. The
result is reported as records with the fields birth date and address, so the same rules as for a
table decide the severity (a birth date is a sensitive field: medium from the first record).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_DIGIT = "0-9０-９"
_DASH = "\\-－ー‐−"
# An address: a prefecture/municipality/town word, a short place name, then a block number written
# as 1丁目2番3号, 三丁目, 12番地 or 1-2-3.
ADDRESS = re.compile(
    f"[都道府県市区郡町村][^\\s、。,()（）]{{0,20}}?"
    f"(?:[{_DIGIT}一二三四五六七八九十]+\\s*(?:丁目|番地|番|号)|[{_DIGIT}]+\\s*[{_DASH}]\\s*[{_DIGIT}]+)"
)
_SENTENCE_END = "。\n"
# a birth phrase (rules: `birth_phrases`, e.g. 日生) ends a date — the character before its 日/月/年 is
# a numeral (2日生, 十日生, 元年生まれ) — and no word goes on after it (not 生活, 生産, 生じた)
_NUMERAL = frozenset("0123456789０１２３４５６７８９一二三四五六七八九十〇元")
_ENDS_PHRASE = re.compile(r"[\s、。，,.)）」』/／・:：]|まれ|の|$")
FIELDS = ("address", "birth_date")  # the field groups a sentence-record names


def _unit(text: str, pos: int) -> tuple[int, int]:
    """The line or sentence around `pos` (bounded by a newline or 。)."""
    start = max(text.rfind(c, 0, pos) for c in _SENTENCE_END) + 1
    ends = [e for e in (text.find(c, pos) for c in _SENTENCE_END) if e != -1]
    return start, (min(ends) if ends else len(text))


def person_sentences(text: str, phrase_hits: Iterable[tuple[int, int]]) -> int:
    """How many distinct lines or sentences of `text` hold a birth phrase and an address: one
    person's record each. `phrase_hits`: (start, end) of each birth-phrase occurrence."""
    seen: set[int] = set()
    count = 0
    for start, end in sorted(phrase_hits):
        if start < 1 or text[start - 1] not in _NUMERAL or _ENDS_PHRASE.match(text, end) is None:
            continue
        first, stop = _unit(text, start)
        if first in seen:
            continue
        seen.add(first)
        if ADDRESS.search(text, first, stop) is not None:
            count += 1
    return count
