"""Where identifier-like digit runs sit in raw text: the spans masking hides.

Masking must hide everything the scanner could call an identifier, so it looks for candidates
the way the scanner does: the same raw digit and separator classes (`normalize.RAW_DIGITS`,
`normalize.RAW_SEPARATORS`, every width and separator the normaliser folds: U+3000, the dash
look-alikes, full-width stops and the katakana long mark), the same "maximal run of digits each
optionally after one separator" shape (`scanner._RAW_RUN`; a test holds the two patterns equal,
and masking widens it to up to three separators between digits), counted in normalised digits. It is deliberately looser than the detectors: any run of
`MIN_DIGITS` or more digits is reported whatever its check digit or context, so that a number the
scanner judged harmless in one place is still hidden in a subject line (fail safe).

A reader sees more than the scanner reads, so masking reads more too (fail safe again):
- invisible characters between digits (zero-width space and joiners, word joiner, soft hyphen,
  byte order mark, bidi controls: Unicode format characters) and marks drawn on a digit (keycap
  1️⃣, underline, variation selectors) are ignored, any number of them:
  `1234<ZWSP>5678<ZWSP>9018` looks like one number and is one;
- Unicode spaces (no-break, thin, figure, narrow no-break ...) and dashes (small em dash, two-em
  dash ...) the normaliser does not fold separate digit groups like a space or a hyphen;
- a folded header line (CRLF or LF, then a space or tab) is a separator: a subject split over two
  lines is one subject (a bare line break is not: a column of codes one per line stays);
- any character a reader takes for a digit: Unicode decimal digits of every script (Arabic-Indic,
  mathematical bold ...), superscripts, circled and parenthesised digits, and the kanji numerals
  〇一二三四五六七八九.
Wave dashes (〜, ～) stay out: they write ranges (`1000〜2000`), not groups.

Identifiers the scanner tells by shape after a keyword (passports, residence cards: `[[keyed]]` in
the rules, scan/keyed.py) are hidden by their shape alone, keyword or not (`keyed_spans`): the
shipped rules' shapes always, and those of any rules a Scanner of this process loaded.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from dlpgate.scan.normalize import RAW_DIGITS, RAW_SEPARATORS, char_class, normalise

# The scanner's candidate run on raw text (identical pattern to scanner._RAW_RUN).
RAW_RUN_PATTERN = char_class(RAW_DIGITS) + "(?:" + char_class(RAW_SEPARATORS) + "?" + char_class(RAW_DIGITS) + ")*"

# Blocks holding every format character (Cf), space (Zs), dash (Pd) and non-decimal digit the
# patterns below take; a test holds them equal to a walk over all of Unicode (a walk costs ~0.2 s,
# too much for every `dlpgate` command's start).
_BLOCKS = ((0x00A0, 0x00BF), (0x0580, 0x05BF), (0x0600, 0x070F), (0x0890, 0x08E2), (0x1360, 0x1371),
           (0x1400, 0x1400), (0x1680, 0x1680), (0x1800, 0x180F), (0x19DA, 0x19DA), (0x2000, 0x209F),
           (0x2460, 0x24FF), (0x2776, 0x2793), (0x2E00, 0x2E5F), (0x3000, 0x30A0), (0xFE30, 0xFE63),
           (0xFEFF, 0xFEFF), (0xFF0D, 0xFF0D), (0xFFF9, 0xFFFB), (0x10A40, 0x10A48), (0x10E60, 0x10EAD),
           (0x11052, 0x1105A), (0x110BD, 0x110CD), (0x13430, 0x1345F), (0x1BCA0, 0x1BCA3),
           (0x1D173, 0x1D17A), (0x1F100, 0x1F10C), (0xE0001, 0xE007F))
_RANGE_MARKS = "\u301c\u3030"  # 〜 〰: ranges, not digit groups


def _chars(keep: object) -> str:
    return "".join(chr(cp) for lo, hi in _BLOCKS for cp in range(lo, hi + 1) if keep(chr(cp)))  # type: ignore[operator]


# Invisible between two digits: any number of them is no gap at all.
INVISIBLE = _chars(lambda c: unicodedata.category(c) == "Cf")
# Marks drawn on the character before them: a digit with a keycap (1️⃣: U+FE0F U+20E3), underlined
# (U+0332) or accented is still that digit. The combining blocks whose marks fit any script.
_MARK_BLOCKS = ((0x0300, 0x036F), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF), (0xFE00, 0xFE0F),
                (0xFE20, 0xFE2F), (0xE0100, 0xE01EF))
MARKS = "".join(chr(cp) for lo, hi in _MARK_BLOCKS for cp in range(lo, hi + 1)
                if unicodedata.category(chr(cp)) in ("Mn", "Me"))
# Spaces and dashes the normaliser does not fold: one more separator each.
EXTRA_SEPARATORS = _chars(lambda c: unicodedata.category(c) in ("Zs", "Pd") and c not in RAW_SEPARATORS
                          and c not in _RANGE_MARKS and c != " ")
# Digits of no script the normaliser knows and not decimal (², ①, ⑴, ⒈ ...), and kanji numerals.
KANJI_DIGITS = "〇一二三四五六七八九"
OTHER_DIGITS = _chars(lambda c: c.isdigit() and unicodedata.category(c) != "Nd") + KANJI_DIGITS



def _range_class(chars: str) -> str:
    """A character class of consecutive code points written as ranges: `re` tests a class of
    hundreds of single characters one by one (~46 us a subject line), ranges in a fraction."""
    cps = sorted(set(map(ord, chars)))
    out: list[str] = []
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        out.append(re.escape(chr(cps[i])) + ("-" + re.escape(chr(cps[j])) if j > i else ""))
        i = j + 1
    return "[" + "".join(out) + "]"


_INVIS = _range_class(INVISIBLE + MARKS) + "*"
_FOLD = r"\r?\n[ \t]"
# What masking looks for: the scanner's run with a margin, up to three separators (or tabs, or a
# header fold) between digits (`1234  5678  9018`, `1234 - 5678 - 9018`). The scanner reads such
# text as shorter runs today; masking them too keeps a future, looser scanner from outrunning it.
_GAP = "(?:" + char_class(RAW_SEPARATORS + "\t") + "|" + _FOLD + "){0,3}"
MASK_RUN_PATTERN = char_class(RAW_DIGITS) + "(?:" + _GAP + char_class(RAW_DIGITS) + ")*"
_RUN = re.compile(MASK_RUN_PATTERN)
# Any decimal digit the normaliser does not know, in runs broken the same way.
_OTHER_RUN = re.compile(r"\d(?:" + _GAP + r"\d)*")
# The same two without the fold, for text with no line break (nearly all): the alternation costs.
_LINE_GAP = char_class(RAW_SEPARATORS + "\t") + "{0,3}"
_LINE_RUN = re.compile(char_class(RAW_DIGITS) + "(?:" + _LINE_GAP + char_class(RAW_DIGITS) + ")*")
_LINE_OTHER_RUN = re.compile(r"\d(?:" + _LINE_GAP + r"\d)*")
# Text holding an invisible character, an unfolded space or dash, or a digit of no script (rare):
# the same runs with invisible characters anywhere between digits and those spaces and dashes as
# separators, digits of every kind. Kept apart: the wide classes cost 4x on every Japanese line.
_WIDE = INVISIBLE + MARKS + EXTRA_SEPARATORS + OTHER_DIGITS
_WIDE_BMP = re.compile(_range_class("".join(c for c in _WIDE if c <= "\uffff")))
_WIDE_ASTRAL = re.compile(_range_class("".join(c for c in _WIDE if c > "\uffff")))
_WIDE_GAP = (_INVIS + "(?:(?:" + _range_class(RAW_SEPARATORS + "\t" + EXTRA_SEPARATORS) + "|" + _FOLD + ")"
             + _INVIS + "){0,3}")
_WIDE_RUN = re.compile(char_class(RAW_DIGITS) + "(?:" + _WIDE_GAP + char_class(RAW_DIGITS) + ")*")
_ANY_DIGIT = r"[\d" + _range_class(OTHER_DIGITS)[1:]
_WIDE_OTHER_RUN = re.compile(_ANY_DIGIT + "(?:" + _WIDE_GAP + _ANY_DIGIT + ")*")

# The shortest run masked. Detectors accept 11 digits and more; 8 keeps dates (20240101) and
# phone-number fragments hidden too, as the gateway always did.
MIN_DIGITS = 8


def _digit_value(c: str) -> int | None:
    if c in KANJI_DIGITS:
        return KANJI_DIGITS.index(c)
    return unicodedata.digit(c, None)


def _digit_count(run: str) -> int:
    n = sum(1 for c in run if c.isdigit())
    return n + sum(run.count(k) for k in KANJI_DIGITS) if not run.isascii() else n


def identifier_spans(text: str, min_digits: int = MIN_DIGITS) -> list[tuple[int, int]]:
    """Sorted, non-overlapping [start, end) spans of digit runs with at least `min_digits` digits."""
    folded = "\n" in text
    if text.isascii():
        return [m.span() for m in (_RUN if folded else _LINE_RUN).finditer(text)
                if _digit_count(m.group()) >= min_digits]
    wide = _WIDE_BMP.search(text) is not None or (max(text) > "\uffff" and _WIDE_ASTRAL.search(text) is not None)
    if wide:
        run, other = _WIDE_RUN, _WIDE_OTHER_RUN
    else:
        run, other = (_RUN, _OTHER_RUN) if folded else (_LINE_RUN, _LINE_OTHER_RUN)
    spans = [m.span() for m in run.finditer(text) if _digit_count(m.group()) >= min_digits]
    known = spans
    for m in other.finditer(text):
        s, e = m.span()
        if _digit_count(m.group()) >= min_digits and not any(a <= s and e <= b for a, b in known):
            spans.append((s, e))
    return _merge(spans)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def run_digits(run: str) -> str:
    """The ASCII digits of a raw run, as the scanner reads them (`１２３４　５６` -> `123456`; also
    `²`, `①` and `一` as 2, 1, 1)."""
    out = []
    for c in normalise(run):
        v = _digit_value(c)
        if v is not None:
            out.append(str(v))
    return "".join(out)


_keyed_patterns: list[str] = []
_keyed_rx: re.Pattern[str] | None = None
_shipped_loaded = False


def register_keyed(patterns: Iterable[str]) -> None:
    """Add identifier shapes to mask (a Scanner registers its rules' `[[keyed]]` patterns)."""
    global _keyed_rx
    new = [p for p in patterns if p not in _keyed_patterns]
    if new:
        _keyed_patterns.extend(new)
        _keyed_rx = None


def _keyed() -> re.Pattern[str] | None:
    global _keyed_rx, _shipped_loaded
    if not _shipped_loaded:
        _shipped_loaded = True
        from dlpgate.scan.rules import default_rules_dir, load_detector_rules

        try:
            register_keyed(k.pattern for k in load_detector_rules(default_rules_dir()).keyed)
        except Exception:  # noqa: BLE001 - a broken shipped file: `rules check` reports it; digits still masked
            pass
    if _keyed_rx is None and _keyed_patterns:
        # not required whole, unlike the scanner: TK1234567x is masked too (fail safe)
        _keyed_rx = re.compile("|".join(f"(?:{p})" for p in _keyed_patterns))
    return _keyed_rx


def keyed_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) spans of every keyed identifier shape in `text` (normalised: ＴＫ１２３４５６７ too)."""
    rx = _keyed()
    if rx is None or not text:
        return []
    return [m.span() for m in rx.finditer(normalise(text))]
