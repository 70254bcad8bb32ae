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

A mailing list pasted into a body names its people with an honorific instead of a header —

    1. 見本 太郎 様　架空市本町1丁目2番3号
    2. 例示 花子 様　架空市緑町4-5-6

The gate finds the honorifics (rules: `honorifics`: 様, 殿), and a line holding a person's name right
before one (not 皆様, お客様, ご担当者様, 見本商事 様, 様式) and an address is one person's record
(fields name and address: a contact list, low below `medium` records). A letter's one address line is
not a list: fewer than MIN_LIST such lines, or lines too far apart to be one list, count nothing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

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
LIST_FIELDS = ("name", "address")  # the field groups a line of a mailing list names
MIN_LIST = 5  # lines of name, honorific and address that make a list (a letter has a 様 or three)
LINE_SPAN = 200  # characters a list's line may take: MIN_LIST honorifics within MIN_LIST of them

# The name before an honorific: a surname (and a given name, a blank between or not), kanji or kana.
_NAME_BEFORE = re.compile(r"(?:[一-龥々〆ヶ]{1,5}[ \u3000]?[一-龥々〆ヶぁ-んァ-ヴー]{1,5}|[ァ-ヴー]{2,8}[ \u3000]?[ァ-ヴー]{1,8})[ \u3000]*$")
# ... that is no person's: a role, a group, an organisation (ご担当者様, 見本商事 様, 総務課 御中 様).
# Words that make a name an organisation's wherever they stand (株式会社 見本商事, 見本電機 御中): also
# what headerless.py refuses as a person's name in a column.
ORGANISATION = (r"会社|法人|組合|協会|連合|御中|株式|有限|商事|商店|工業|産業|物産|建設|運輸|電機|電気|物流|製作|事務"
                r"|銀行|金庫|工務|不動産|印刷|食品|製薬|化学|機械|技研|精工|通信|企画|設計|開発|病院|医院|学校"
                r"|役場|役所|県庁|センター|システム|サービス|グループ")
_NOT_A_PERSON = re.compile(r"者$|員$|各位|皆|客|" + ORGANISATION + r"|[課部室係局所園校館署店社会庁]$")
# What every address's block number holds (ADDRESS): a digit or a kanji block word.
_BLOCK_NUMBER = re.compile(f"[{_DIGIT}]|丁目|番地")
# 様 that goes on into a word (様式, 様子, 様々, 様相) is no honorific: the characters after it that say so.
_WORD_GOES_ON = frozenset("式子々相態変")


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


@functools.lru_cache(maxsize=16)
def _honorific(word: str) -> re.Pattern[str]:
    return re.compile(re.escape(word) + "(?![" + "".join(sorted(_WORD_GOES_ON)) + "])")


def addressed_people(text: str, honorifics: Sequence[str]) -> int:
    """How many distinct lines of `text` hold a person's name right before an honorific and an
    address, when MIN_LIST or more do, close together (0 otherwise). A letter with a 様 or two
    costs one C-level search per honorific and nothing more."""
    if sum(map(text.count, honorifics)) < MIN_LIST:
        return 0  # most mail: a count per honorific in C, no pattern set up
    # each honorific not going on into a word (様式: a form's name, common in municipal mail) found
    # by a pattern that starts with the honorific itself, which CPython's regex engine searches for
    # in C: ~2 ms per 10 MB, where a Python loop over a text of 様式 took ~10
    hits = sorted(m.span() for w in honorifics for m in _honorific(w).finditer(text))
    if len(hits) < MIN_LIST:
        return 0
    # A list's honorifics stand close together (MIN_LIST within MIN_LIST lines of at most LINE_SPAN
    # characters); a long text of letters holds thousands, a few per letter, none of them a list:
    # only hits inside such a cluster are read.
    span = MIN_LIST * LINE_SPAN
    starts = [h[0] for h in hits]
    near = [False] * len(hits)
    for i, (a, b) in enumerate(zip(starts, starts[MIN_LIST - 1:], strict=False)):
        if b - a <= span:
            near[i:i + MIN_LIST] = [True] * MIN_LIST
    found, last = 0, -1
    find, rfind = text.find, text.rfind
    for (start, end), close in zip(hits, near, strict=True):
        if not close:
            continue
        first = rfind("\n", 0, start) + 1
        if first == last:
            continue
        stop = find("\n", end)
        stop = stop if stop >= 0 else len(text)
        if _BLOCK_NUMBER.search(text, first, stop) is None:
            continue  # a letter's greeting line (見本 太郎 様): no address on it, one cheap search
        name = _NAME_BEFORE.search(text, max(first, start - 14), start)
        if name is None or _NOT_A_PERSON.search(name.group().strip()) is not None:
            continue
        if ADDRESS.search(text, first, stop) is None:
            continue
        last = first
        found += 1
    return found if found >= MIN_LIST else 0
