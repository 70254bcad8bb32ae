"""Gates: the one pass over raw text that finds everything the detectors look at.

A gate returns, in character offsets of the raw text:

* digit triggers — the end of each match of one of
    - 11 or 12 digits between non-digits (or the text's ends; hyperscan's pattern has no left
      boundary, so it also ends a longer run such as a 13-digit corporate number: the scanner
      drops those at once),
    - 14 digits (the shortest card number: checks.CARD_MIN_LENGTH),
    - 4-4-3 or 4-6-4 digits with a separator between each group;
  every shape a detector accepts holds one: 11 or 12 contiguous, 14-19 contiguous (13 digits is
  no card length: a JAN or corporate number), 4-4-4 and the card groupings 4-4-4-4 / 4-4-4-2 /
  4-4-4-3 / 4-4-4-4-3 / 4-6-4 / 4-6-5 (every group separated), and the space-cut pieces of a
  longer run, each one of those; each starts at a digit group's start. A phone number
  03-1234-5678, a 10-digit bank account (1234-567890, or contiguous), an order number
  2024-123456, a 13-digit corporate number hold none. (Issue 19: on dense business text the old
  4-4-2 trigger fired on 28,000 runs of which two thirds were 10- or 13-digit runs no detector takes,
  each a Python callback and a run recovery.) The end of an 11/12-digit match may be one past
  the run (hyperscan has no look-ahead: the non-digit after it is part of the match). The scanner
  recovers the whole run around a trigger, so the findings do not depend on where inside (or
  just after) the run a gate puts it;
* keyword hits — every occurrence (overlapping ones too) of every keyword the gate was built with
  (the scanner's catalogue: all but the negative-only labels, which it checks locally), in any
  raw spelling that normalises to it (`ＭＹ　ＮＵＭＢＥＲ` for `my number`), as the sorted end
  offsets of each keyword found. Grouped by keyword, a text full of one keyword (`TEL` on every
  line) costs the scanner one list, not a Python step per hit. A keyword the gate was told is
  wanted only for its presence (`presence`: the scanner's product-list words 数量, 単価 ..., which
  only say "this text names products", and the phone words TEL, 電話, phone, which the scanner
  finds itself where it reads them) has one end in its list, its first occurrence's: hyperscan
  stops reporting it after one match (HS_FLAG_SINGLEMATCH). On dense business text such words
  were a third of all matches, then TEL alone 10,555 of 25,310 (issue 19), each a Python
  callback. When that one match ends inside a character (UTF-16 bytes of two characters that
  spell the keyword one byte off), it is no hit and hyperscan reports no other: the keyword's
  first real occurrence is then looked for with a regex.

Two interchangeable implementations: `HyperscanGate` and `ReGate` (CPython `re` plus
pyahocorasick, used when the hyperscan wheel is missing). Their keyword hits are identical; their
triggers may differ in number (hyperscan reports overlapping trigger matches, `re` does not) but
both put one in every candidate run. Property tests hold them to both.

Hyperscan works on bytes, so the text is encoded in a fixed-width form whose byte offsets are
character offsets times the width: ASCII text as is (a copy), other text as UTF-16-LE (about
twice as fast to produce as UTF-8 and no offset map needed), text with characters beyond the
BMP as UTF-32-LE. Each width has its own database; a match that ends off a character boundary
(bytes straddling two characters) is dropped.
"""

from __future__ import annotations

import functools
import itertools
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import ahocorasick

from dlpgate.scan.checks import CARD_MIN_LENGTH
from dlpgate.scan.normalize import (
    NORMALISE_TABLE,
    RAW_DIGITS,
    RAW_SEPARATORS,
    char_class,
    raw_variants,
)

# (digit trigger end offsets ascending, {keyword index: end offsets ascending}); keywords absent
# from the text have no entry.
Matches = tuple[list[int], dict[int, list[int]]]

# The trigger's separated alternatives: digit groups, each two joined by one separator (module doc).
_TRIGGER_GROUPS = ((4, 4, 3), (4, 6, 4))
# Lengths of a contiguous digit group the trigger takes between non-digits (the bounded alternative).
_BOUNDED = (11, 12)


class Gate(Protocol):
    name: str

    def matches(self, text: str) -> Matches:
        """Digit triggers (end offset of each trigger match) and every keyword hit (the first
        one only of a presence keyword)."""
        ...


def digit_trigger_regex() -> str:
    """The trigger as a `re` pattern on raw text."""
    d = char_class(RAW_DIGITS)
    s = char_class(RAW_SEPARATORS)
    lo, hi = _BOUNDED
    return "|".join([f"(?<!{d}){d}{{{lo},{hi}}}(?!{d})", d * CARD_MIN_LENGTH,
                     *(s.join(d * n for n in groups) for groups in _TRIGGER_GROUPS)])


def _has_case(keyword: str) -> bool:
    return any(c.lower() != c or c.upper() != c for c in keyword)


class ReGate:
    """Pure-Python gate: one `re` pass for digit triggers, one Aho-Corasick pass for keywords.

    Keywords are matched on `text.lower()` (a fast C loop that keeps positions: U+0130 is the only
    character whose lower case is longer, and it is blanked first) against every lower-cased raw
    spelling of each keyword. Lower-casing is coarser than normalisation (`K` KELVIN SIGN lowers
    to `k`), so a hit on a keyword with cased letters is confirmed on the raw text.

    A long ASCII keyword has too many spellings (`individual number`: 2 ** 17, each letter half-
    or full-width): the automaton then holds the spellings of its longest prefix that has at most
    MAX_SPELLINGS, and each prefix hit is confirmed by the keyword's exact character-class regex
    anchored there. A keyword with a character no spelling covers at all is searched by that regex.
    """

    name = "re"
    MAX_SPELLINGS = 4096

    def __init__(self, keywords: Sequence[str], presence: frozenset[int] = frozenset()) -> None:
        self._digits = re.compile(digit_trigger_regex())
        self._keywords = tuple(keywords)
        self._presence = presence
        self._automaton = ahocorasick.Automaton()
        self._confirm = [_has_case(k) for k in keywords]
        self._exact = [re.compile("".join(char_class(raw_variants(c)) for c in k)) for k in keywords]
        # spelling -> [(keyword index, whole keyword?)]
        spellings: dict[str, list[tuple[int, bool]]] = {}
        searched: list[int] = []
        for index, keyword in enumerate(keywords):
            choices = [sorted({v.lower() for v in raw_variants(c) if len(v.lower()) == 1}) for c in keyword]
            count = 1
            prefix = 0
            for c in choices:
                if not c or count * len(c) > self.MAX_SPELLINGS:
                    break
                count *= len(c)
                prefix += 1
            if prefix == 0:
                searched.append(index)
                continue
            whole = prefix == len(keyword)
            for letters in itertools.product(*choices[:prefix]):
                spellings.setdefault("".join(letters), []).append((index, whole))
        for spelling, entries in spellings.items():
            self._automaton.add_word(spelling, (len(spelling), tuple(entries)))
        self._has_words = len(self._automaton) > 0
        if self._has_words:
            self._automaton.make_automaton()
        self._searched = searched

    def matches(self, text: str) -> Matches:
        triggers = [m.end() for m in self._digits.finditer(text)]
        hits: dict[int, list[int]] = {}
        if self._has_words:
            lowered = text.lower() if "\u0130" not in text else text.replace("\u0130", "\ufffe").lower()
            keywords = self._keywords
            confirm = self._confirm
            exact = self._exact
            for last, (length, entries) in self._automaton.iter(lowered):
                end = last + 1
                for k, whole in entries:
                    if whole:
                        if not confirm[k] or text[end - length : end].translate(NORMALISE_TABLE) == keywords[k]:
                            hits.setdefault(k, []).append(end)
                    else:
                        m = exact[k].match(text, end - length)
                        if m is not None:
                            hits.setdefault(k, []).append(m.end())
        for k in self._presence:  # their first end only, as hyperscan reports them
            ends = hits.get(k)
            if ends is not None and len(ends) > 1:
                hits[k] = [min(ends)]
        for k in self._searched:
            rx = self._exact[k]
            ends = []
            m = rx.search(text)
            while m is not None:  # overlapping occurrences too (ーー in ーーー)
                ends.append(m.end())
                if k in self._presence:
                    break
                m = rx.search(text, m.start() + 1)
            if ends:
                hits[k] = ends
        return triggers, hits


def _escape(data: bytes) -> bytes:
    return b"".join(b"\\x%02x" % b for b in data)


def _units(chars: str, encoding: str) -> list[bytes]:
    """The encoded forms of `chars` that exist in `encoding` (ASCII drops the others)."""
    out = set()
    for c in chars:
        try:
            out.add(c.encode(encoding, "surrogatepass"))
        except UnicodeEncodeError:
            continue
    return sorted(out)


def _alternation(units: Sequence[bytes]) -> bytes:
    """Any one of `units`, those that differ only in their first byte merged into a class."""
    by_rest: dict[bytes, list[int]] = {}
    for u in units:
        by_rest.setdefault(u[1:], []).append(u[0])
    alternatives = [
        (_byte_class(firsts) if len(firsts) > 1 else b"\\x%02x" % firsts[0]) + _escape(rest)
        for rest, firsts in sorted(by_rest.items())
    ]
    return alternatives[0] if len(alternatives) == 1 else b"(?:" + b"|".join(alternatives) + b")"


def _byte_class(values: Sequence[int]) -> bytes:
    """A class of byte values, consecutive ones as ranges: a non-digit unit of UTF-32 in full is
    a few kilobytes, and hyperscan limits an expression's length."""
    out = []
    ordered = sorted(set(values))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(b"\\x%02x" % ordered[i] if i == j else b"\\x%02x-\\x%02x" % (ordered[i], ordered[j]))
        i = j + 1
    return b"[" + b"".join(out) + b"]"


# The trigger's pattern id; keyword k has id k.
TRIGGER_ID = (1 << 20) - 1
# A scan that has met more than _FLOOD triggers at more than one per _DENSE characters is digit-
# dense (a sheet of card numbers, a blob of digits): it is stopped and rescanned with the trigger
# anchored at digit group starts, which reports one trigger per run instead of one per digit past
# the fourteenth. With the old 4-4-2 trigger that also paid on business text (one trigger per
# ~400 bytes: 40% fewer), and the line was at one per 1 KiB; the bounded trigger reports one per
# run on it either way (dense corpus: one per ~570 characters), so a rescan there only cost a
# second pass and, in a fresh process such as `dlpgate scan`, the anchored database's compilation
# (~0.3 s): the line is now at one trigger per 64 characters (issue 19).
_FLOOD = 512
_DENSE = 64


def hyperscan_patterns(
    keywords: Sequence[str], encoding: str, width: int, anchored: bool = False
) -> tuple[list[bytes], list[int]]:
    """(expressions, ids) over text encoded as `encoding`: id k keyword k, TRIGGER_ID the trigger
    (expressions[0]).

    `anchored` puts a digit group's start (text start or a non-digit character) before the
    trigger (the bounded alternative has one already). A keyword with a character that has no
    spelling in `encoding` cannot occur in such text and is left out.
    """
    if len(keywords) >= TRIGGER_ID:
        raise ValueError(f"too many keywords ({len(keywords)})")
    digits = _units(RAW_DIGITS, encoding)
    d = _alternation(digits)
    s = _alternation(_units(RAW_SEPARATORS, encoding))
    other = _not_units(digits, width)
    loose = [d * CARD_MIN_LENGTH, *(s.join(d * n for n in groups) for groups in _TRIGGER_GROUPS)]
    start = b"(?:^|" + other + b")"
    lo, hi = _BOUNDED
    # No left boundary: a pattern that starts with a non-digit class can start anywhere, and hyperscan
    # ran the sparse corpus ~40% slower with one. A longer run (a 13-digit corporate number) then
    # gives one trigger at its end, which the scanner drops in a few character tests.
    bounded = d * lo + (d + b"?") * (hi - lo) + b"(?:" + other + b"|$)"
    loose_pattern = b"(?:" + b"|".join(loose) + b")"
    trigger = b"|".join([bounded, start + loose_pattern if anchored else loose_pattern])
    expressions = [trigger]
    ids = [TRIGGER_ID]
    for index, keyword in enumerate(keywords):
        parts = [_units("".join(raw_variants(c)), encoding) for c in keyword]
        if all(parts):
            expressions.append(b"".join(_alternation(p) for p in parts))
            ids.append(index)
    return expressions, ids


def _not_units(units: Sequence[bytes], width: int) -> bytes:
    """A pattern for any `width`-byte unit that is not one of `units` (all `width` bytes long)."""
    if width == 1:
        return _byte_class([b for b in range(256) if bytes([b]) not in set(units)])
    by_first: dict[int, set[bytes]] = {}
    for u in units:
        by_first.setdefault(u[0], set()).add(u[1:])
    free = [b for b in range(256) if b not in by_first]
    alternatives = [_byte_class(free) + b"[\\x00-\\xff]" * (width - 1)] if free else []
    by_rests: dict[frozenset[bytes], list[int]] = {}
    for first, rests in by_first.items():
        by_rests.setdefault(frozenset(rests), []).append(first)
    for group, firsts in sorted(by_rests.items(), key=lambda kv: kv[1]):
        alternatives.append(_byte_class(firsts) + _not_units(sorted(group), width - 1))
    return b"(?:" + b"|".join(alternatives) + b")"


_ENCODINGS = {1: "ascii", 2: "utf-16-le", 4: "utf-32-le"}


@functools.lru_cache(maxsize=8)
def _database(keywords: tuple[str, ...], width: int, anchored: bool, presence: frozenset[int] = frozenset()) -> Any:
    """The compiled database for one keyword set, width and trigger, shared by every gate in the
    process.

    Compiling takes a good fraction of a second; a rule reload, a test or a CLI run that builds
    another scanner for the same keywords reuses it (a database is read-only while scanning).
    """
    import hyperscan  # noqa: PLC0415 - optional dependency, imported where used

    expressions, ids = hyperscan_patterns(keywords, _ENCODINGS[width], width, anchored)
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    single = hyperscan.HS_FLAG_SINGLEMATCH
    db.compile(expressions=expressions, ids=ids, flags=[single if i in presence else 0 for i in ids])
    return db


class HyperscanGate:
    """One hyperscan block-mode pass over the text in a fixed-width encoding (see module doc).

    The ASCII and UTF-16 databases are compiled up front; the UTF-32 ones (text with characters
    beyond the BMP, such as emoji) and the anchored-trigger ones (digit-dense text) on first use.
    Scratch space is per thread.
    """

    name = "hyperscan"

    def __init__(self, keywords: Sequence[str], presence: frozenset[int] = frozenset()) -> None:
        import hyperscan  # noqa: PLC0415 - optional dependency, imported where used

        self._hs = hyperscan
        self._keywords = tuple(keywords)
        self._presence = frozenset(presence)
        self._databases: dict[tuple[int, bool], Any] = {
            (width, False): _database(self._keywords, width, False, self._presence) for width in (1, 2)
        }
        self._lock = threading.Lock()
        self._local = threading.local()

    def _engine(self, key: tuple[int, bool]) -> tuple[Any, Any]:
        """(database, this thread's scratch for it) for (width, anchored), made on first use."""
        engines: dict[tuple[int, bool], tuple[Any, Any]] | None = getattr(self._local, "engines", None)
        if engines is None:
            engines = self._local.engines = {}
        with self._lock:
            db = self._databases.get(key)
            if db is None:
                db = self._databases[key] = _database(self._keywords, *key, self._presence)
        engine = engines[key] = (db, self._hs.Scratch(db))
        return engine

    def matches(self, text: str) -> Matches:
        if text.isascii():
            data = text.encode("ascii")
            width = 1
        else:
            try:  # the strict codec under its canonical name is the fastest path to bytes
                data = text.encode("utf_16_le")
            except UnicodeEncodeError:  # a lone surrogate (text decoded with surrogateescape)
                data = text.encode("utf_16_le", "surrogatepass")
            width = 2
            if len(data) != 2 * len(text):  # characters beyond the BMP: surrogate pairs
                data = text.encode("utf_32_le", "surrogatepass")
                width = 4
        try:
            db, scratch = self._local.engines[width, False]
        except (AttributeError, KeyError):
            db, scratch = self._engine((width, False))
        triggers = _Found()
        found = triggers.keywords = defaultdict(list)
        try:
            db.scan(data, _WATCHFUL[width], 0, triggers, scratch)
        except self._hs.ScanTerminated:  # digit-dense: start again with one trigger per run
            db, scratch = self._engine((width, True))
            triggers = _Found()
            found = triggers.keywords = defaultdict(list)
            db.scan(data, _COLLECTORS[width], 0, triggers, scratch)
        if found:
            misaligned = [i for i in found if i < 0]
            for i in misaligned:
                del found[i]
                k = ~i
                if k in self._presence and k not in found:
                    self._first_aligned(text, k, found)
            for ends in found.values():  # hyperscan does not promise end order across its engines
                ends.sort()
        if not triggers:
            return (_NO_TRIGGERS, found) if found else _NOTHING
        triggers.sort()
        return triggers, found

    def _first_aligned(self, text: str, k: int, found: defaultdict[int, list[int]]) -> None:
        """A presence keyword whose one reported match ended inside a character (bytes of two
        characters that spell it one byte off): hyperscan reports no other, so its first real
        occurrence, if any, is looked for in the text."""
        rx = re.compile("".join(char_class(raw_variants(c)) for c in self._keywords[k]))
        best = -1
        m = rx.search(text)
        while m is not None and (best < 0 or m.start() < best):
            best = m.end() if best < 0 else min(best, m.end())
            m = rx.search(text, m.start() + 1)
        if best >= 0:
            found[k] = [best]


_NO_TRIGGERS: list[int] = []  # shared: callers never mutate what a gate returns
_NOTHING: Matches = (_NO_TRIGGERS, {})


class _Found(list[int]):
    """A scan's trigger ends, with its keyword hits beside them (`keywords`): triggers are most of
    the matches on business text, and appending to the context itself is the cheapest step a
    callback can take (no dictionary lookup per match)."""

    __slots__ = ("keywords",)
    keywords: defaultdict[int, list[int]]


_Callback = Callable[[int, int, int, int, _Found], bool | None]


def _collector(width: int, watchful: bool) -> _Callback:
    """A match callback for `width`: byte ends become character ends, a match that ends inside a
    character is dropped, so the lists need no second pass. A watchful one stops the scan
    (returns True) once triggers come densely (see _FLOOD; looked at every 256th trigger, which
    costs one test per trigger instead of three). Constants are bound as defaults: hyperscan calls
    with five arguments, and locals are the cheapest names to read. A keyword match that ends inside
    a character is noted under its id's complement (a presence keyword's only report may be one)."""
    if not watchful:

        def collect(ident: int, start: int, end: int, flags: int, found: _Found,
                    off: int = width - 1, shift: int = width.bit_length() - 1, trigger: int = TRIGGER_ID) -> bool | None:
            if not end & off:
                if ident == trigger:
                    found.append(end >> shift)
                else:
                    found.keywords[ident].append(end >> shift)
            elif ident != trigger:
                found.keywords[~ident]  # noted (defaultdict)
            return None

        return collect

    def watch(ident: int, start: int, end: int, flags: int, found: _Found,
              off: int = width - 1, shift: int = width.bit_length() - 1, trigger: int = TRIGGER_ID,
              flood: int = _FLOOD, dense: int = _DENSE * width) -> bool | None:
        if ident == trigger:
            if not end & off:
                found.append(end >> shift)
                if not len(found) & 255 and len(found) > flood and len(found) * dense > end:
                    return True
        elif not end & off:
            found.keywords[ident].append(end >> shift)
        else:
            found.keywords[~ident]  # noted (defaultdict)
        return None

    return watch


_COLLECTORS = {width: _collector(width, False) for width in (1, 2, 4)}
_WATCHFUL = {width: _collector(width, True) for width in (1, 2, 4)}


def make_gate(keywords: Sequence[str], engine: str = "auto", presence: frozenset[int] = frozenset()) -> Gate:
    """`engine`: "hyperscan", "re" or "auto" (hyperscan when its wheel imports, else re);
    `presence`: indexes of keywords only their presence matters for (one end reported)."""
    if engine not in ("auto", "hyperscan", "re"):
        raise ValueError(f"unknown scan engine {engine!r}")
    if engine in ("auto", "hyperscan"):
        try:
            return HyperscanGate(keywords, presence)
        except ImportError:
            if engine == "hyperscan":
                raise
    return ReGate(keywords, presence)
