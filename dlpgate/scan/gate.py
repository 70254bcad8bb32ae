"""Gates: one cheap pass over raw text that says where the exact detectors must look.

Most mail holds no identifier at all, so the scanner first asks a gate for *trigger positions*
(character offsets in the raw text):

* digit triggers — inside every run that could be an identifier: 4 digits, an optional
  separator, 4 digits, then an optional separator and 3 digits or 2 more digits (every accepted
  shape — 12 contiguous, 4-4-4, 11 contiguous, 13-19 in card groupings 4-4-4-4 / 4-6-5 — holds
  one; a phone number 03-1234-5678 does not);
* keyword triggers — on every occurrence of a trigger keyword (confidentiality labels and table
  header fields), in any raw spelling that normalises to the keyword.

Two interchangeable implementations: `HyperscanGate` (one hyperscan pass over UTF-8) and
`ReGate` (CPython `re`, used when the hyperscan wheel is missing). Positions may differ between
them (hyperscan reports match ends, `re` match starts) but both put a trigger inside every
occurrence; the scanner's windows are built so that the findings do not depend on where inside
an occurrence the trigger sits (see `Scanner._windows`).
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import ahocorasick

from dlpgate.scan.normalize import (
    RAW_DIGITS,
    RAW_SEPARATORS,
    char_class,
    normalise,
    raw_keyword_regex,
    raw_variants,
)


class Gate(Protocol):
    name: str

    def triggers(self, text: str) -> tuple[list[int], list[tuple[int, str]]]:
        """(digit trigger positions, [(position, normalised keyword)]) for `text`, positions ascending."""
        ...


def digit_gate_regex() -> str:
    d = char_class(RAW_DIGITS)
    s = char_class(RAW_SEPARATORS)
    return d * 4 + s + "?" + d * 4 + "(?:" + s + "?" + d * 3 + "|" + d * 2 + ")"


class ReGate:
    """Pure-Python gate: one `re` pass for digits, one Aho-Corasick pass for keywords.

    Keywords are matched on `text.lower()` (a fast C loop that keeps positions when the length
    does not change) against every lower-cased raw spelling of each keyword (a few hundred at
    most: `ー` has eleven look-alikes, an ASCII letter two). A keyword with too many spellings, or
    a text whose lower-casing changes its length (U+0130), uses a character-class regex instead.
    """

    name = "re"
    MAX_SPELLINGS = 5000

    def __init__(self, keywords: Sequence[str]) -> None:
        self._digits = re.compile(digit_gate_regex())
        self._automaton = ahocorasick.Automaton()
        rare: list[str] = []
        for keyword in sorted(set(keywords)):
            choices = [sorted({v.lower() for v in raw_variants(c) if len(v.lower()) == 1}) for c in keyword]
            count = 1
            for c in choices:
                count *= len(c)
            if count > self.MAX_SPELLINGS:
                rare.append(keyword)
                continue
            for spelling in itertools.product(*choices):
                self._automaton.add_word("".join(spelling), (len(keyword), keyword))
        self._has_words = len(self._automaton) > 0
        if self._has_words:
            self._automaton.make_automaton()
        alts = sorted(set(keywords), key=lambda k: (-len(k), k))
        self._all_regex = re.compile("|".join(raw_keyword_regex(k) for k in alts)) if alts else None
        self._rare_regex = re.compile("|".join(raw_keyword_regex(k) for k in rare)) if rare else None

    def triggers(self, text: str) -> tuple[list[int], list[tuple[int, str]]]:
        digits = [m.start() for m in self._digits.finditer(text)]
        lowered = text.lower()
        if len(lowered) != len(text):
            rx = self._all_regex
            hits = [(m.start(), normalise(m.group())) for m in rx.finditer(text)] if rx is not None else []
            return digits, hits
        hits = []
        if self._has_words:
            hits = [(end - length + 1, keyword) for end, (length, keyword) in self._automaton.iter(lowered)]
        if self._rare_regex is not None:
            hits.extend((m.start(), normalise(m.group())) for m in self._rare_regex.finditer(text))
            hits.sort()
        return digits, hits


def _escape_bytes(data: bytes) -> bytes:
    return b"".join(b"\\x%02x" % b for b in data)


def _utf8_class(chars: str) -> bytes:
    """A hyperscan byte-level alternation matching any one of `chars` encoded as UTF-8."""
    return b"(?:" + b"|".join(sorted(_escape_bytes(c.encode()) for c in set(chars))) + b")"


def _utf8_keyword(keyword: str) -> bytes:
    """Every raw spelling of a normalised keyword, as a hyperscan pattern over UTF-8 bytes."""
    return b"".join(_utf8_class("".join(raw_variants(c))) for c in keyword)


class HyperscanGate:
    """One hyperscan block-mode pass over the UTF-8 text; match ends are mapped back to str offsets."""

    name = "hyperscan"

    def __init__(self, keywords: Sequence[str]) -> None:
        import hyperscan  # noqa: PLC0415 - optional dependency, imported where used

        self._hs = hyperscan
        d = _utf8_class(RAW_DIGITS)
        s = _utf8_class(RAW_SEPARATORS)
        self._keywords = sorted(set(keywords))
        expressions = [d * 4 + s + b"?" + d * 4 + b"(?:" + s + b"?" + d * 3 + b"|" + d * 2 + b")"] + [_utf8_keyword(k) for k in self._keywords]
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._db.compile(expressions=expressions, ids=list(range(len(expressions))), flags=0)
        self._local = threading.local()

    def _scratch(self) -> Any:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._hs.Scratch(self._db)
            self._local.scratch = scratch
        return scratch

    def triggers(self, text: str) -> tuple[list[int], list[tuple[int, str]]]:
        data = text.encode("utf-8", "surrogatepass")
        found: list[tuple[int, int]] = []
        append = found.append

        def on_match(ident: int, start: int, end: int, flags: int, ctx: object) -> None:
            append((end, ident))

        self._db.scan(data, match_event_handler=on_match, scratch=self._scratch())
        if not found:
            return [], []
        found.sort()
        ascii_only = len(data) == len(text)
        digits: list[int] = []
        hits: list[tuple[int, str]] = []
        pos_b = 0
        pos_c = 0
        last_end = -1
        for end, ident in found:
            if ascii_only:
                pos_c = end
            elif end != pos_b:
                pos_c += len(data[pos_b:end].decode("utf-8", "surrogatepass"))
                pos_b = end
            char_pos = pos_c - 1  # the last character of the match
            if ident == 0:
                if end != last_end:
                    digits.append(char_pos)
                    last_end = end
            else:
                hits.append((char_pos, self._keywords[ident - 1]))
        return digits, hits


def make_gate(keywords: Sequence[str], engine: str = "auto") -> Gate:
    """`engine`: "hyperscan", "re" or "auto" (hyperscan when its wheel imports, else re)."""
    if engine not in ("auto", "hyperscan", "re"):
        raise ValueError(f"unknown scan engine {engine!r}")
    if engine in ("auto", "hyperscan"):
        try:
            return HyperscanGate(keywords)
        except ImportError:
            if engine == "hyperscan":
                raise
    return ReGate(keywords)
