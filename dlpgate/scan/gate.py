"""Gates: the pass over raw text that finds everything the detectors look at.

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
BMP as UTF-32-LE. Each width has its own databases (the trigger's and the keywords', scanned one
after the other: faster than one database of both); a match that ends off a character boundary
(bytes straddling two characters) is dropped.

Those three forms are how CPython stores a str already (1, 2 or 4 bytes per character), so a long
text is scanned in place when it can be: `_StrStorage` hands hyperscan a read-only view of the
str's own characters instead of an encoded copy (issue 19: on a 50 MB dense message the UTF-16
copy was ~35-50 ms and 12,900 fresh pages of `dlpgate scan`). It relies on CPython internals, so
it is used only where a self-check at import found the layout it expects, and the copy is made
whenever a text is not as expected (see `_StrStorage`).
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import re
import sys
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


@functools.lru_cache(maxsize=16)
def _database(keywords: tuple[str, ...], width: int, anchored: bool | None,
              presence: frozenset[int] = frozenset()) -> Any:
    """A compiled database, shared by every gate in the process: the trigger's for `width` and
    `anchored` (True/False), or with `anchored` None the keywords' (None when no keyword has a
    spelling in this width's encoding).

    Compiling takes a good fraction of a second; a rule reload, a test or a CLI run that builds
    another scanner for the same keywords reuses it (a database is read-only while scanning).
    The trigger and the keywords are two databases scanned one after the other (issue 19): on
    dense business text the two passes with their callbacks took ~20.5 ms per 10 MB where one
    pass over both took ~23 (hyperscan does the two alone in about the sum of their times, and
    each callback then has one kind of match: no test of the pattern id per trigger); the same on
    sparse text. A flood (see _FLOOD) then rescans the trigger only.
    """
    import hyperscan  # noqa: PLC0415 - optional dependency, imported where used

    expressions, ids = hyperscan_patterns(keywords, _ENCODINGS[width], width, bool(anchored))
    if anchored is None:
        expressions, ids = expressions[1:], ids[1:]
        if not expressions:
            return None
    else:
        expressions, ids = expressions[:1], ids[:1]
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    single = hyperscan.HS_FLAG_SINGLEMATCH
    db.compile(expressions=expressions, ids=ids, flags=[single if i in presence else 0 for i in ids])
    return db


class HyperscanGate:
    """Two hyperscan block-mode passes over the text in a fixed-width encoding (see module doc),
    one for the trigger and one for the keywords (_database: faster than one pass over both).

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
        # (width, False/True): the trigger's databases (True: anchored); (width, None): the keywords'
        self._databases: dict[tuple[int, bool | None], Any] = {
            (width, anchored): _database(self._keywords, width, anchored, self._presence)
            for width in (1, 2) for anchored in (False, None)
        }
        self._lock = threading.Lock()
        self._local = threading.local()

    def _engine(self, key: tuple[int, bool | None]) -> tuple[Any, Any]:
        """(database, this thread's scratch for it) for (width, anchored), made on first use; the
        keywords' database is (width, None), and (None, None) when no keyword is spelt in that width."""
        engines: dict[tuple[int, bool | None], tuple[Any, Any]] | None = getattr(self._local, "engines", None)
        if engines is None:
            engines = self._local.engines = {}
        with self._lock:
            if key in self._databases:
                db = self._databases[key]
            else:
                db = self._databases[key] = _database(self._keywords, *key, self._presence)
        engine = engines[key] = (db, self._hs.Scratch(db)) if db is not None else (None, None)
        return engine

    def matches(self, text: str) -> Matches:
        # `text` stays referenced (this frame) for the whole scan: a view below reads its storage.
        storage = _STORAGE
        in_place = storage.view(text) if storage is not None and len(text) >= _IN_PLACE_MIN else None
        data: Any
        if in_place is not None:
            data, width = in_place
        elif text.isascii():
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
        triggers: list[int] = []
        try:
            db.scan(data, _WATCHFUL[width], 0, triggers, scratch)
        except self._hs.ScanTerminated:  # digit-dense: start again with one trigger per run
            db, scratch = self._engine((width, True))
            triggers = []
            db.scan(data, _COLLECTORS[width], 0, triggers, scratch)
        try:
            db, scratch = self._local.engines[width, None]
        except (AttributeError, KeyError):
            db, scratch = self._engine((width, None))
        found: defaultdict[int, list[int]] = defaultdict(list)
        if db is not None:
            db.scan(data, _KEYWORDS[width], 0, found, scratch)
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


class _StrStorage:
    """Read-only views of a str's own characters in the gate's fixed-width forms (module doc).

    A CPython compact str keeps its characters right after a fixed header: 1 byte each for ASCII
    text, else 1 (latin-1), 2 (UCS-2) or 4 (UCS-4) bytes (its kind), and one terminating
    character. On a little-endian machine ASCII storage is the ASCII encoding, UCS-2 storage the
    UTF-16-LE one (no pair: a str that needs one is UCS-4; a lone surrogate is stored as
    `surrogatepass` encodes it) and UCS-4 storage the UTF-32-LE one, so a view of it is exactly
    what the gate would have encoded, with no copy and no fresh pages. A latin-1 str is not
    ASCII (é is one byte that the ASCII database does not know) and is encoded as before.

    The kind is read from the str's state field (its kind, compact and ascii bits), not guessed
    from its size: `sys.getsizeof` also counts a cached UTF-8 form, and a UCS-2 str of n
    characters whose UTF-8 is 2n + 1 bytes long has the size of a UCS-4 one (a view that size
    would read past the characters). The size must then be exactly the compact layout's for that
    kind and length: a str with a cached UTF-8 or wchar_t form, a subclass, or one left
    non-compact by a C extension, is encoded instead.

    `probe` builds one only on CPython, learns the header sizes and where the state field lies
    from sample strings, and checks for each kind, at several lengths, that the state reads as
    that kind and that the view equals the encoding; any difference or error leaves the gate on
    the copying path. The view does not keep the str alive: the caller holds it for as long as
    the view is used. A view is read-only (PyBUF_READ), so nothing can write through it.
    """

    _READ = 0x100  # PyBUF_READ
    # state bits (CPython 3.3+ default build): interned:2, kind:3, compact:1, ascii:1
    _KIND_SHIFT, _COMPACT, _ASCII = 2, 1 << 5, 1 << 6

    def __init__(self, ascii_header: int, header: int, state_at: int,
                 from_memory: Callable[[int, int, int], Any]) -> None:
        self._ascii_header = ascii_header
        self._header = header
        self._state_at = state_at
        self._from_memory = from_memory

    @classmethod
    def probe(cls) -> _StrStorage | None:
        """The storage reader for this interpreter, or None when its strings are not laid out as
        checked (not CPython, big-endian, another layout, no PyMemoryView_FromMemory)."""
        if sys.implementation.name != "cpython" or sys.byteorder != "little":
            return None
        try:
            prototype = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int)
            from_memory = prototype(("PyMemoryView_FromMemory", ctypes.pythonapi))
            # the object header (refcount, type), then length and hash, then the state field
            length_at = sys.getsizeof(object())
            state_at = length_at + 2 * ctypes.sizeof(ctypes.c_ssize_t)
            storage = cls(sys.getsizeof("a" * 64) - 65, sys.getsizeof("\u3042" * 64) - 2 * 65, state_at, from_memory)
            samples = [
                ("ascii", 1, "\x00\x7f" + "".join(map(chr, range(128)))),
                ("latin-1", 1, "\xe9\xff\x00" + "".join(map(chr, range(256)))),
                ("utf-16-le", 2, "\u3042\x00\xe9\ufffe\uffff\ud800\udfff" + "".join(map(chr, range(0x3000, 0x3100)))),
                ("utf-32-le", 4, "\U0001f600\x00\u3042\U0010ffff\ud800" + "".join(map(chr, range(0x1f300, 0x1f400)))),
            ]
            for encoding, width, sample in samples:
                for length in (_IN_PLACE_MIN, _IN_PLACE_MIN + 1, 3 * _IN_PLACE_MIN + 5, 40_000):
                    text = "".join([sample] * (length // len(sample) + 1))[:length]
                    if ctypes.c_ssize_t.from_address(id(text) + length_at).value != length:
                        return None
                    if storage._state(text) != (width, True, encoding == "ascii"):
                        return None
                    got = storage.view(text)
                    if encoding == "latin-1":  # not ASCII: never viewed
                        if got is not None:
                            return None
                    elif got is None or got[1] != width or got[0].tobytes() != text.encode(encoding, "surrogatepass"):
                        return None
        except Exception:  # noqa: BLE001 - any surprise at all means: copy, as without this
            return None
        return storage

    def _state(self, text: str) -> tuple[int, bool, bool]:
        """(kind, compact, ascii) as the str's state field holds them."""
        state = ctypes.c_uint32.from_address(id(text) + self._state_at).value
        return state >> self._KIND_SHIFT & 7, bool(state & self._COMPACT), bool(state & self._ASCII)

    def view(self, text: str) -> tuple[memoryview, int] | None:
        """(read-only view of `text`'s characters, width) or None: encode it instead."""
        if type(text) is not str:
            return None
        kind, compact, ascii = self._state(text)
        if not compact or ascii != text.isascii():
            return None
        n = len(text)
        header = self._ascii_header if ascii else self._header
        if (kind != 1 if ascii else kind != 2 and kind != 4) or sys.getsizeof(text) != header + (n + 1) * kind:
            return None
        return self._from_memory(id(text) + header, n * kind, self._READ), kind


# Shorter texts are encoded: a view costs ~2.3 us (two ctypes calls), an encode of 4,096 UCS-2
# characters about as much.
_IN_PLACE_MIN = 4096
_STORAGE = _StrStorage.probe()


_NO_TRIGGERS: list[int] = []  # shared: callers never mutate what a gate returns
_NOTHING: Matches = (_NO_TRIGGERS, {})


_Callback = Callable[[int, int, int, int, Any], bool | None]


def _collector(width: int, watchful: bool) -> _Callback:
    """A trigger match callback for `width`: byte ends become character ends, a match that ends
    inside a character is dropped, so the list needs no second pass. A watchful one stops the scan
    (returns True) once triggers come densely (see _FLOOD; looked at every 256th trigger, which
    costs one test per trigger instead of three). Constants are bound as defaults: hyperscan calls
    with five arguments, and locals are the cheapest names to read."""
    if not watchful:

        def collect(ident: int, start: int, end: int, flags: int, found: list[int],
                    off: int = width - 1, shift: int = width.bit_length() - 1) -> bool | None:
            if not end & off:
                found.append(end >> shift)
            return None

        return collect

    def watch(ident: int, start: int, end: int, flags: int, found: list[int],
              off: int = width - 1, shift: int = width.bit_length() - 1,
              flood: int = _FLOOD, dense: int = _DENSE * width) -> bool | None:
        if not end & off:
            found.append(end >> shift)
            if not len(found) & 255 and len(found) > flood and len(found) * dense > end:
                return True
        return None

    return watch


def _keyword_collector(width: int) -> _Callback:
    """A keyword match callback for `width`: its character end onto the keyword's list; a match
    that ends inside a character is noted under its id's complement (a presence keyword's only
    report may be one: HyperscanGate._first_aligned)."""

    def keyword(ident: int, start: int, end: int, flags: int, found: defaultdict[int, list[int]],
                off: int = width - 1, shift: int = width.bit_length() - 1) -> bool | None:
        if not end & off:
            found[ident].append(end >> shift)
        else:
            found[~ident]  # noted (defaultdict)
        return None

    return keyword


_COLLECTORS = {width: _collector(width, False) for width in (1, 2, 4)}
_WATCHFUL = {width: _collector(width, True) for width in (1, 2, 4)}
_KEYWORDS = {width: _keyword_collector(width) for width in (1, 2, 4)}


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
