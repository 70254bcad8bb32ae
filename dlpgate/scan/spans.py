"""Where identifier-like digit runs sit in raw text: the spans masking hides.

Masking must hide everything the scanner could call an identifier, so it looks for candidates
the way the scanner does: the same raw digit and separator classes (`normalize.RAW_DIGITS`,
`normalize.RAW_SEPARATORS`, every width and separator the normaliser folds: U+3000, the dash
look-alikes, full-width stops and the katakana long mark), the same "maximal run of digits each
optionally after one separator" shape (`scanner._RAW_RUN`; a test holds the two patterns equal,
and masking widens it to up to three separators between digits), counted in normalised digits. It is deliberately looser than the detectors: any run of
`MIN_DIGITS` or more digits is reported whatever its check digit or context, so that a number the
scanner judged harmless in one place is still hidden in a subject line (fail safe).

Digits outside the normaliser's table (Arabic-Indic, mathematical bold ...) are not read by the
scanner; runs of them are reported too (any Unicode decimal digit), again to fail safe.

Identifiers the scanner tells by shape after a keyword (passports, residence cards: `[[keyed]]` in
the rules, scan/keyed.py) are hidden by their shape alone, keyword or not (`keyed_spans`): the
shipped rules' shapes always, and those of any rules a Scanner of this process loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from dlpgate.scan.normalize import RAW_DIGITS, RAW_SEPARATORS, char_class, normalise

# The scanner's candidate run on raw text (identical pattern to scanner._RAW_RUN).
RAW_RUN_PATTERN = char_class(RAW_DIGITS) + "(?:" + char_class(RAW_SEPARATORS) + "?" + char_class(RAW_DIGITS) + ")*"
# What masking looks for: the same run with a margin, up to three separators (or tabs) between
# digits (`1234  5678  9018`, `1234 - 5678 - 9018`). The scanner reads such text as shorter runs
# today; masking them too keeps a future, looser scanner from outrunning the mask.
_GAP = char_class(RAW_SEPARATORS + "\t") + "{0,3}"
MASK_RUN_PATTERN = char_class(RAW_DIGITS) + "(?:" + _GAP + char_class(RAW_DIGITS) + ")*"
_RUN = re.compile(MASK_RUN_PATTERN)
# Any decimal digit the normaliser does not know, in runs broken the same way.
_OTHER_RUN = re.compile(r"\d(?:" + _GAP + r"\d)*")

# The shortest run masked. Detectors accept 11 digits and more; 8 keeps dates (20240101) and
# phone-number fragments hidden too, as the gateway always did.
MIN_DIGITS = 8


def _digit_count(run: str) -> int:
    return sum(1 for c in run if c.isdigit())


def identifier_spans(text: str, min_digits: int = MIN_DIGITS) -> list[tuple[int, int]]:
    """Sorted, non-overlapping [start, end) spans of digit runs with at least `min_digits` digits."""
    spans = [m.span() for m in _RUN.finditer(text) if _digit_count(m.group()) >= min_digits]
    if not text.isascii():
        known = spans
        for m in _OTHER_RUN.finditer(text):
            s, e = m.span()
            if _digit_count(m.group()) >= min_digits and not any(a <= s and e <= b for a, b in known):
                spans.append((s, e))
        spans = _merge(spans)
    return spans


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def run_digits(run: str) -> str:
    """The ASCII digits of a raw run, as the scanner reads them (`１２３４　５６` -> `123456`)."""
    folded = normalise(run)
    return "".join(str(int(c)) if c.isdigit() else "" for c in folded)


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
