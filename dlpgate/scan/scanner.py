"""The scanner: text (and tables) in, findings out. Compiled once, then called per part.

One gate pass per part (hyperscan, or `re` plus Aho-Corasick without it) returns digit triggers
and every keyword hit, with character positions in the raw text (of the phone words TEL, 電話,
phone only the first: they are the commonest words of business mail, and are looked for where a
reader needs them: before a run, in a body table's header line, in a form). Nothing else reads
the whole text again (forms and column labels may search it for those words, up to FORM_LINES):

* around each trigger the digit run is recovered (one short regex match on the raw text: a
  maximal run of digits with single separators), normalised (a few characters) and shaped;
* a run some detector accepts is classified against the keyword hits within `proximity` of it
  (bisect on the sorted hit positions; positions are raw offsets because normalisation keeps
  lengths), its table column context, and the negative labels just before it;
* lines holding keyword hits of at least `min_fields` field groups are tried as tab/comma
  separated body tables; confidentiality labels are counted from the hits.

Text that holds no trigger and no keyword costs the gate pass and nothing else. The findings are
those of the plain definition — every maximal digit run in the normalised text, every keyword
occurrence in it — so they do not depend on the gate.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from itertools import compress, islice, repeat
from operator import mul, not_, sub
from types import MappingProxyType

from dlpgate.errors import RuleError
from dlpgate.extract.model import Extraction, Table
from dlpgate.scan.checks import is_card_number, is_valid_my_number, mask, my_number_failures
from dlpgate.scan.columns import ANY_DELIMITER as _ANY_DELIMITER
from dlpgate.scan.columns import FIXED_MIN, TextColumns
from dlpgate.scan.gate import Gate, make_gate
from dlpgate.scan.headerless import SAMPLE, people_columns, tab_blocks, tab_rows
from dlpgate.scan.keyed import find_after, in_columns, whole
from dlpgate.scan.keyed import masked as keyed_mask
from dlpgate.scan.model import SEVERITY_RANK, Finding, ScanResult
from dlpgate.scan.normalize import (
    NORMALISE_TABLE,
    RAW_DIGITS,
    RAW_SEPARATORS,
    char_class,
    fold,
    keyword_spellings,
    raw_keyword_regex,
    raw_variants,
)
from dlpgate.scan.prose import FIELDS as SENTENCE_FIELDS
from dlpgate.scan.prose import LIST_FIELDS, addressed_people, person_sentences
from dlpgate.scan.rules import DetectorRules, default_rules_dir, load_detector_rules
from dlpgate.scan.shapes import in_trace_header, is_datetime, is_placeholder, is_upc_a
from dlpgate.scan.spans import register_keyed
from dlpgate.scan.tables import TableAnalyser, TableFacts, body_table_at, column_blocks, form_pairs

# A maximal digit run on raw text: a digit, then digits each optionally after one separator.
_RAW_RUN = re.compile(char_class(RAW_DIGITS) + "(?:" + char_class(RAW_SEPARATORS) + "?" + char_class(RAW_DIGITS) + ")*")
_SPLIT = re.compile(r"[-. ]")
_CARD_GROUPS = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 4), (4, 6, 5), (4, 4, 4, 2), (4, 4, 4, 3)})
# The longest run any detector accepts (19 digits in card groups with their separators).
_LONGEST_RUN = max(19, 14, *(sum(g) + len(g) - 1 for g in _CARD_GROUPS))
# Runs are looked for within this many characters either side of a trigger: a run cut by that
# window is longer than _LONGEST_RUN, hence rejected either way.
_LOOK = _LONGEST_RUN + 1
# A trigger match (gate.py) of 4-4-3 separated digits, or of 11-12 digits and the non-digit after
# them, starts at most this far before its last character: reading from there finds such a run in
# one search. The rarer longer triggers (14 contiguous, 4-6-4 separated) may start earlier: the
# walk back below finds their start.
_TRIGGER_LONGEST = 12

# Keyword categories used for proximity.
MY_NUMBER, LICENCE, RESIDENT, CARD, NEGATIVE = "my_number", "licence", "resident", "card", "negative"
_POSITIVE = (MY_NUMBER, LICENCE, RESIDENT, CARD)
_POSITIVE_SET = frozenset(_POSITIVE)
_DETECTOR_ORDER = ("my_number", "resident_code", "credit_card", "drivers_licence")

_EMPTY = ScanResult(findings=(), records=0)
_CATEGORISED_CACHE = 4096
_FAILING_SAMPLE = 1000  # failing 12-digit numbers of one part examined one by one, at most
# A label/value line of a form pasted into a text: a short label, a colon, a value to the line's end.
FORM_LINES = 200  # at most this many field-word hits in a text for its label/value lines to be read
FORM_NAME_GROUP = "name"  # the field group a form must name (the rules' group for 氏名, 名前 ...)
_NOTHING: tuple[list[int], dict[int, list[int]]] = ([], {})  # what a gate finds in ""; never mutated
_NO_CONTEXT: Mapping[str, frozenset[str]] = MappingProxyType({})

# Keyword hits packed in one int for sorting and bisecting: end offset << _KEY_BITS | keyword index.
_KEY_BITS = 20
_KEY_MASK = (1 << _KEY_BITS) - 1
# (detector, position, digits, severity) of one identifier.
_Occurrence = tuple[str, int, str, str]
# (start, end, its 12 ASCII digits, 4-4-4?) of a 12-digit run that passes the check digit (_sift).
_Twelve = tuple[int, int, str, bool]


class _Tally:
    """One detector's identifiers in one part, summed as they are found: a sheet may hold hundreds
    of thousands, and a finding needs only their count, the highest severity, the first one (for
    the masked sample) and whether `distinct_high` different numbers were among them."""

    __slots__ = ("count", "rank", "severity", "first_pos", "first_digits", "distinct")

    def __init__(self) -> None:
        self.count = 0
        self.rank = 0
        self.severity = ""
        self.first_pos = -1
        self.first_digits = ""
        self.distinct: set[str] = set()

    def add(self, pos: int, digits: str, severity: str, distinct_enough: int) -> None:
        self.count += 1
        rank = SEVERITY_RANK[severity]
        if rank > self.rank:
            self.rank, self.severity = rank, severity
        if self.first_pos < 0 or pos < self.first_pos:
            self.first_pos, self.first_digits = pos, digits
        if len(self.distinct) < distinct_enough:
            self.distinct.add(digits)


def _tally_of(out: dict[str, _Tally], detector: str) -> _Tally:
    """The detector's tally in `out`, made at its first identifier."""
    tally = out.get(detector)
    if tally is None:
        tally = out[detector] = _Tally()
    return tally


def _short_prose_line(text: str, cs: int, ce: int) -> bool:
    """Whether the run [cs, ce) sits on a short line of prose (no column, no header): where a
    negative label right before a passing run explains it (追跡番号：1234-5678-9012)."""
    ls = text.rfind("\n", 0, cs) + 1
    le = text.find("\n", ce)
    if le < 0:
        le = len(text)
    return le - ls < FIXED_MIN and _ANY_DELIMITER.search(text, ls, le) is None


_DIGITS = frozenset(RAW_DIGITS)
# My Number check digit in one weighted sum of the ASCII bytes (checks.is_valid_my_number, inline):
# the residue is 0 for a valid number, or 1 when the check digit is 0.
_WEIGHTS = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2, 1)
_WEIGHTED_ZERO = 48 * sum(_WEIGHTS)
# The same sum in integer arithmetic on the 12 ASCII bytes read as one little-endian integer (byte
# i = digit i once the b"0" bytes are subtracted): each half of six digits times its weights
# written backwards as base-256 digits puts that half's weighted sum in byte 5 of the product, and
# no byte of either product carries (at most 9 * 27 = 243), so ten integer operations replace a
# map over twelve multiplications (issue 19: about 40% faster; 9,300 runs per 10 MB of dense mail).
_ASCII_ZEROS = int.from_bytes(b"0" * 12, "little")
_LOW_WEIGHTS = sum(_WEIGHTS[5 - j] << (8 * j) for j in range(6))
_HIGH_WEIGHTS = sum(_WEIGHTS[11 - j] << (8 * j) for j in range(6))
_SIX_BYTES = (1 << 48) - 1


_SEPARATORS = frozenset(RAW_SEPARATORS)
_DIGITS_OR_SEPARATORS = _DIGITS | _SEPARATORS


def _counted(facts: Sequence[TableFacts]) -> bool:
    """Whether a reading of a text found any record."""
    return any(f.records for f in facts)


def _merged_context(facts: list[TableFacts]) -> Mapping[str, frozenset[str]]:
    """digits -> categories over every table's keyword columns."""
    if not facts:
        return _NO_CONTEXT
    if len(facts) == 1:
        return facts[0].column_context
    merged: dict[str, frozenset[str]] = {}
    for f in facts:
        for digits, cats in f.column_context.items():
            merged[digits] = merged.get(digits, frozenset()) | cats
    return merged


class _Lazy:
    """Per-text facts computed the first time a run needs them."""

    __slots__ = ("has_licence", "has_resident", "context", "columns", "product", "populations", "failing")

    def __init__(self) -> None:
        self.has_licence: bool | None = None  # whether such keywords are in the text
        self.has_resident: bool | None = None
        self.context: list[int] | None = None
        self.columns: TextColumns | None = None
        self.product: bool | None = None  # whether the text names products (商品, 単価 ...)
        # population key -> [12-digit candidates, passing ones, the passing bare occurrences]
        self.populations: dict[object, list] | None = None  # type: ignore[type-arg]
        self.failing: list[int] | None = None  # starts of 12-digit runs that fail the check digit


def _population(lazy: _Lazy, key: object) -> list:  # type: ignore[type-arg]
    populations = lazy.populations
    if populations is None:
        populations = lazy.populations = {}
    pop = populations.get(key)
    if pop is None:
        pop = populations[key] = [0, 0, []]
    return pop


_SPACE_PIECE = re.compile("[^ \u3000]+")
_SPACE_TO_EOL = re.compile(r"[^\S\n]*(?:\n|\Z)")  # white space up to a line's end


def _has_shape(raw: str) -> bool:
    return bool(_shape(raw if raw.isascii() else raw.translate(NORMALISE_TABLE))[0])


# A text with at least this many triggers, and nothing to speak for a failing 12-digit number, has
# its commonest runs sifted out before the trigger loop (_sift).
_SIFT_MIN = 8
# Triggers sifted per chunk: the chunk's run strings are freed and their memory reused by the next
# (all of a 50 MB message's ~47,000 at once were ~2,000 more fresh pages than the loop's).
_SIFT_CHUNK = 4096
# A text this long is asked whether it holds an honorific before they are counted (_mailing_list).
_LONG_TEXT = 1 << 16
# 12 ASCII digits, contiguous or 4-4-4 with ASCII separators: the runs _sift reads the check digit of.
_SIFTED_RUN = re.compile(r"[0-9]{4}(?:[0-9]{8}|[-. ][0-9]{4}[-. ][0-9]{4})")


_NONZERO_ONE = bytes([0] + [1] * 255)  # bytes.translate: 0 stays 0, anything else becomes 1
_ELEVEN_ONES = int.from_bytes(b"\x01" * 11, "little")


def _failing_non_placeholders(data: bytes, fails: bytes) -> bytes:
    """`fails` (my_number_failures of `data`) with the blocks of 12 same digits (placeholders) set
    to 0, in whole-blob steps: each byte against the next (exclusive or, 0 where equal), those made
    0/1 and summed over a block's first eleven by one multiplication (at most 11 per byte: no carry)."""
    n = len(fails)
    x = int.from_bytes(data, "little")
    changes = ((x ^ x >> 8).to_bytes(12 * n, "little")).translate(_NONZERO_ONE)
    counts = (int.from_bytes(changes, "little") * _ELEVEN_ONES).to_bytes(12 * n + 12, "little")[10::12][:n]
    keep = int.from_bytes(counts.translate(_NONZERO_ONE), "little") & int.from_bytes(fails.translate(_NONZERO_ONE), "little")
    return keep.to_bytes(n, "little")


def _sift(text: str, triggers: list[int]) -> tuple[list[int], list[int], list[_Twelve]]:
    """(the triggers left for the trigger loop, in order; the starts of the 12-digit runs that fail
    the check digit, ascending; the runs that pass it) for a text where nothing can speak for a
    failing number (no column context, no licence keyword: `_occurrences`' `plain`).

    The commonest runs of business text are told here, by the loop's own first tests on the same
    characters, and the check digits of the 12-digit ones computed all at once
    (checks.my_number_failures) instead of one by one in Python (issue 19: on dense mail these are
    ~14,000 of the ~14,700 triggers per 10 MB). A trigger is taken when it ends
    * a 13-digit run (a corporate or JAN number: `other` after 13 digits, which follow a non-digit):
      nothing to find;
    * a maximal 4-4-4 ASCII run at its eleventh digit (the 4-4-3 alternative), or
    * a maximal run of 12 ASCII digits, one past it (the bounded alternative's `other`):
      a run failing the check digit that is no placeholder (000000000000) is a failing number,
      counted later for its population; a passing run is returned as (start, end, digits,
      separated) for `Scanner._passing`, a placeholder left to the loop (which drops it).
    Such a run holds no other trigger, and a run the loop recovers around another trigger is
    another maximal run (or a 13-digit run's continuation after a separator, past its trigger), so
    taking these out changes neither what the loop covers nor what it finds.
    """
    digits, separators, either = _DIGITS, _SEPARATORS, _DIGITS_OR_SEPARATORS
    # Only triggers with two characters either side of the longest run read here (the loop's range).
    lo, hi = bisect_left(triggers, 16), bisect_left(triggers, len(text) - 2)
    rest = triggers[:lo]
    failing: list[int] = []
    passing: list[_Twelve] = []
    for chunk in range(lo, hi, _SIFT_CHUNK):
        ends: list[int] = []
        runs: list[str] = []
        # `c not in either or (c in separators and <the character before it> not in digits)`: the
        # run does not go on past c (no digit, nor a separator after a digit), in one test when c
        # is neither.
        for end in islice(triggers, chunk, min(chunk + _SIFT_CHUNK, hi)):
            c = text[end - 14]
            if text[end - 1] in digits:  # a 4-4-4 run from end - 13, its last digit at end?
                if c not in either or (c in separators and text[end - 15] not in digits):
                    c = text[end + 1]
                    if c not in either or (c in separators and text[end + 2] not in digits):
                        run = text[end - 13 : end + 1]
                        if run[4] in "-. " and run[9] in "-. ":
                            ends.append(end)
                            runs.append(run)
                            continue
            elif c in digits:  # 13 digits before `other`, a non-digit before them?
                if text[end - 13] in digits:
                    c = text[end - 15]
                    if c not in either or (c in separators and text[end - 16] not in digits):
                        continue
            elif c not in separators or text[end - 15] not in digits:  # 12 digits from end - 13?
                c = text[end - 1]
                if c not in separators or text[end] not in digits:
                    ends.append(end)
                    runs.append(text[end - 13 : end - 1])
                    continue
            rest.append(end)
        if runs:
            _check_sifted(ends, runs, rest, failing, passing)
    rest.extend(islice(triggers, hi, None))
    rest.sort()  # (placeholders and refused runs went back at their chunk's end; a sorted list is one pass)
    return rest, failing, passing


def _check_sifted(ends: list[int], runs: list[str], rest: list[int], failing: list[int],
                  passing: list[_Twelve]) -> None:
    """The check digits of one chunk of sifted runs (`_sift`), all at once: the starts of the
    failing ones onto `failing`, the passing ones onto `passing`, placeholders and runs that are
    not 12 ASCII digits after all back onto `rest` (the trigger loop's)."""
    joined = "".join(runs)
    data = joined.encode().translate(None, b"-. ") if joined.isascii() else b""
    if len(data) != 12 * len(runs) or not data.isdigit():
        # some run is not 12 ASCII digits (a full-width digit, a separator inside): the loop reads it
        simple = [_SIFTED_RUN.fullmatch(run) is not None for run in runs]
        rest.extend(compress(ends, map(not_, simple)))
        ends = list(compress(ends, simple))
        runs = list(compress(runs, simple))
        data = "".join(runs).encode().translate(None, b"-. ")
    fails = _failing_non_placeholders(data, my_number_failures(data))
    for i in compress(range(len(ends)), map(not_, fails)):
        end = ends[i]
        g = data[12 * i : 12 * i + 12].decode()
        if g.count(g[0]) == 12:
            rest.append(end)  # a placeholder: the loop drops it
        elif len(runs[i]) == 14:
            passing.append((end - 13, end + 1, g, True))
        else:
            passing.append((end - 13, end - 1, g, False))
    failing.extend(map(sub, compress(ends, fails), repeat(13)))


def _may_have_shape(run: str) -> bool:
    """False when an ASCII run's digit count alone rules out every shape _shape accepts (11, 12
    or 13-19 contiguous; 12 or 13-19 separated): three C-level counts instead of a split."""
    if run.isdigit():
        return 11 <= len(run) <= 19
    n = len(run) - run.count("-") - run.count(".") - run.count(" ")
    return n == 12 or 13 <= n <= 19


def _shape(run: str) -> tuple[str, str, bool]:
    """(kind, digits, separated) of a normalised digit run; kind "" when no detector accepts it."""
    if run.isdigit():  # contiguous: the common case, no split needed
        n = len(run)
        return ("twelve" if n == 12 else "eleven" if n == 11 else "card" if 13 <= n <= 19 else ""), run, False
    if run.endswith((".0", ".00")):
        # <12 digits>.0: a whole number a tool wrote as a decimal (a pandas CSV of a column with
        # gaps, a spreadsheet's number format): its shape is its integer part's
        head = run[: run.rindex(".")]
        if head[-1:].isdigit():
            return _shape(head)
    groups = _SPLIT.split(run)
    digits = "".join(groups)
    n = len(digits)
    lengths = tuple(len(g) for g in groups)
    if n == 12 and lengths == (4, 4, 4):
        return "twelve", digits, True
    if 13 <= n <= 19 and "." not in run and lengths in _CARD_GROUPS:
        return "card", digits, True
    return "", digits, True


_Trie = dict[str, "_Trie"]  # character -> the rest; "" -> {} where a word ends


def _trie_pattern(words: Sequence[str]) -> str:
    """A `re` pattern matching every raw spelling of the normalised `words` (as raw_keyword_regex),
    written as a trie: words sharing a character share its test. A flat alternation of the 62
    reversed local negative labels had `re` try each of them at every position of the characters
    before a run (1.2 us a search); the trie tries a position's character once, and its first
    character is one class (each branch then says which with a one-character lookbehind), which
    `re` uses to skip positions no word starts at (0.2-0.7 us). It matches the same strings at the
    same positions, so a search finds the same start (the only thing read from it)."""
    trie: _Trie = {}
    for w in words:
        node = trie
        for c in w:
            node = node.setdefault(c, {})
        node[""] = {}

    def emit(node: _Trie) -> str:
        alts = [char_class(raw_variants(c)) + emit(node[c]) for c in sorted(node) if c]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return "(?:" + body + ")?" if "" in node else body  # (a word ends here, longer ones go on)

    if "" in trie or not trie:
        return emit(trie)  # an empty word matches everywhere: nothing to skip
    firsts = sorted(trie)
    branches = ["(?<=" + char_class(raw_variants(c)) + ")" + emit(trie[c]) for c in firsts]
    return char_class(v for c in firsts for v in raw_variants(c)) + "(?:" + "|".join(branches) + ")"


def _names_people(fields: Sequence[str], r: DetectorRules) -> bool:
    """Whether a table's fields say who (a name, a birth date, an identifier ...), not only where
    or how to reach (address, phone, mail: a list of suppliers or offices)."""
    return not r.contact_fields or any(x not in r.contact_fields for x in fields)


def _register_table(fields: Sequence[str], records: int, r: DetectorRules) -> bool:
    """A table that names a person beside a resident-register field (birth date, 続柄, 世帯番号...):
    sensitive however few its rows, unlike a contact list of names, phones and mail addresses."""
    if not r.sensitive_medium or records < r.sensitive_medium or not r.sensitive_fields:
        return False
    return bool({"name", "address"} & set(fields)) and any(x in r.sensitive_fields for x in fields)


class Scanner:
    """Compiled detectors for one rule set. Safe to share between threads; picklable (recompiles)."""

    def __init__(self, rules: DetectorRules, engine: str = "auto") -> None:
        self.rules = rules
        self.engine = engine
        categories: dict[str, set[str]] = {}

        def spelt(words: Sequence[str], long_words: bool = False) -> list[str]:
            # every keyword with the raw spellings the gates cannot derive (half-width kana, 氏　名)
            return [v for w in words for v in (w, *keyword_spellings(w, long_words=long_words))]

        def add(words: Sequence[str], category: str) -> None:
            for w in spelt(words, long_words=category == MY_NUMBER):
                categories.setdefault(w, set()).add(category)

        add(rules.my_number_keywords, MY_NUMBER)
        add(rules.licence_keywords, LICENCE)
        add(rules.resident_keywords, RESIDENT)
        add(rules.card_keywords, CARD)
        add(rules.negative_labels, NEGATIVE)
        self._label_severity: dict[str, str] = {}
        for group in rules.labels:
            for w in spelt(group.keywords):
                old = self._label_severity.get(w)
                if old is None or SEVERITY_RANK[group.severity] > SEVERITY_RANK[old]:
                    self._label_severity[w] = group.severity
                categories.setdefault(w, set())
        field_groups: dict[str, set[str]] = {}
        for g in rules.record_fields:
            for w in spelt(g.keywords):
                field_groups.setdefault(w, set()).add(g.name)
                categories.setdefault(w, set())
        product = set(rules.product_context)  # words, not header names: no spellings
        birth = set(rules.birth_phrases)  # sentence records (prose.py): rare words, reported by the gate
        birth.update(w for k in rules.keyed for w in k.keywords)  # keyed identifiers (keyed.py): likewise
        for w in birth:
            categories.setdefault(w, set())
        for w in product:  # reported by the gate, judged only as "a product list"
            categories.setdefault(w, set())
        # Negative labels that are nothing else (注文番号, FAX ...) only matter in the few
        # characters before a run that could be a finding: they are looked for there, on demand,
        # rather than reported by the gate from all over the text.
        local = sorted(w for w, c in categories.items() if c == {NEGATIVE} and w not in field_groups
                       and w not in self._label_severity and w not in product and w not in birth)
        # Negative labels that also name a field (TEL, 電話, phone: the phone group) are the commonest
        # keywords of business text (issue 19: TEL was 10,600 of 20,000 gate callbacks per 10 MB of
        # dense mail). As negative labels they too are looked for before a run, on demand; the gate
        # reports only their presence (the field groups a text names), and the few readers that need
        # every occurrence (body tables, forms, column labels) find them in the lines they read.
        # Only words each of whose characters has one-character spellings: an occurrence then ends
        # a fixed length after its start, so a regex finds every end the gate would.
        lazy = sorted(w for w, c in categories.items() if c == {NEGATIVE} and w in field_groups
                      and w not in self._label_severity and w not in product and w not in birth
                      and all(len(v) == 1 for ch in w for v in raw_variants(ch)))
        nearby = [*local, *lazy]
        self._local_negatives = re.compile(_trie_pattern([w[::-1] for w in nearby])) if nearby else None
        self._local_reach = rules.negative_window + max((len(w) for w in nearby), default=0)
        # One catalogue of every other keyword; the gate reports hits as indexes into it.
        self._words: tuple[str, ...] = tuple(sorted(w for w in categories if w not in local))
        self._categories = tuple(frozenset(categories[w]) for w in self._words)
        self._lengths = tuple(len(w) for w in self._words)
        self._fields = tuple(frozenset(field_groups.get(w, ())) for w in self._words)
        self._label_ids = frozenset(k for k, w in enumerate(self._words) if w in self._label_severity)
        self._licence_ids = frozenset(k for k, c in enumerate(self._categories) if LICENCE in c)
        self._name_ids = frozenset(k for k, f in enumerate(self._fields) if FORM_NAME_GROUP in f)
        self._resident_ids = frozenset(k for k, c in enumerate(self._categories) if RESIDENT in c)
        self._birth_ids = frozenset(k for k, w in enumerate(self._words) if w in rules.birth_phrases)
        self._keyed = tuple((k, whole(k.pattern), frozenset(i for i, w in enumerate(self._words) if w in k.keywords))
                            for k in rules.keyed)
        self._keyed_ids = frozenset().union(*(ids for _k, _s, ids in self._keyed))
        register_keyed(k.pattern for k in rules.keyed)  # masking hides what this scanner may report
        self._longest_keyword = max(self._lengths)
        self._lazy_ids = frozenset(k for k, w in enumerate(self._words) if w in lazy)
        self._lazy_regex = {k: re.compile(raw_keyword_regex(self._words[k])) for k in self._lazy_ids}
        # Keywords whose reported ends take part in proximity: identifier keywords and negative
        # labels, but not the lazy ones (the local search before a run finds those).
        self._proximity_ids = frozenset(k for k, c in enumerate(self._categories) if c and k not in self._lazy_ids)
        if len(self._words) > _KEY_MASK:
            raise RuleError(f"too many keywords ({len(self._words)})")
        # Product-list words that are nothing else (数量, 単価 ...) matter only by their presence
        # (_names_products): the gate reports one hit of each, not thousands.
        presence = frozenset(k for k, w in enumerate(self._words) if w in product and not self._categories[k]
                             and not self._fields[k] and k not in self._label_ids) | self._lazy_ids
        self.gate: Gate = make_gate(self._words, engine, presence)
        self._tables = TableAnalyser(rules)
        # Header cells of text columns: folded keyword -> categories, longest first.
        folded: dict[str, set[str]] = {}
        for words, category in ((rules.my_number_keywords, MY_NUMBER), (rules.licence_keywords, LICENCE),
                                (rules.resident_keywords, RESIDENT), (rules.card_keywords, CARD),
                                (rules.negative_labels, NEGATIVE)):
            for w in words:
                folded.setdefault(fold(w), set()).add(category)
        self._header_keywords = tuple(sorted(((k, frozenset(v)) for k, v in folded.items() if k),
                                             key=lambda kv: -len(kv[0])))
        self._categorised: dict[str, frozenset[str]] = {}
        self._product_ids = frozenset(k for k, w in enumerate(self._words) if w in product)

    @classmethod
    def load(cls, rules_dir: str | os.PathLike[str] | None = None, engine: str = "auto") -> Scanner:
        """Compile `rules_dir/detectors.toml` (default: the shipped rules). RuleError on a bad file."""
        return cls(load_detector_rules(rules_dir if rules_dir is not None else default_rules_dir()), engine)

    def __getstate__(self) -> dict[str, object]:
        return {"rules": self.rules, "engine": self.engine}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["rules"], state["engine"])  # type: ignore[misc, arg-type]

    # ------------------------------------------------------------------ public API

    def scan(self, part: str, text: str, tables: Sequence[Table] = ()) -> ScanResult:
        if not text and tables:
            text = "\n".join("\t".join(row) for table in tables for row in table.rows)
        triggers, hits = self.gate.matches(text) if text else _NOTHING
        if tables:
            facts = [f for f in (self._tables.analyse(t) for t in tables) if f is not None]
        elif not triggers and (not hits or self._inert(hits)):
            # the common case: nothing, or only keywords that find nothing alone — unless people
            # were pasted from a spreadsheet without its header (no keyword, no long number)
            facts = self._pasted_rows(part, text) if "\t" in text else []
            if not facts:
                facts = self._mailing_list(part, text)
                if not facts:
                    return _EMPTY
        else:
            # each reading in turn while none found a record (a header-like line with nothing under
            # it — 続柄　世帯主 in a form typed with spaces — does not stop the next reading)
            facts = self._body_tables(part, text, hits) if hits else []
            if hits and not _counted(facts) and not self._name_ids.isdisjoint(hits):
                facts = self._body_forms(part, text, hits) or facts
            if hits and not _counted(facts):
                facts = self._body_columns(part, text, hits) or facts
            if not _counted(facts) and "\t" in text:
                facts = self._pasted_rows(part, text) or facts
        if not _counted(facts) and not self._birth_ids.isdisjoint(hits):  # people described in sentences
            facts = self._sentences(part, text, hits) or facts
        if not _counted(facts):  # a mailing list
            facts = self._mailing_list(part, text) or facts
        occurrences = self._occurrences(text, triggers, hits, _merged_context(facts)) if triggers else {}
        for f in facts:
            if f.joined:
                self._add_joined(occurrences, f.joined)
        keyed = self._keyed_findings(part, text, hits, tables) if not self._keyed_ids.isdisjoint(hits) else []
        if not occurrences and not facts and self._label_ids.isdisjoint(hits) and not keyed:
            return _EMPTY
        return ScanResult(
            findings=self._findings(part, occurrences, self._labels(hits), facts) + tuple(keyed),
            records=max((f.records for f in facts if _names_people(f.fields, self.rules)), default=0),
        )

    def scan_extraction(self, extraction: Extraction) -> ScanResult:
        findings: list[Finding] = []
        records = 0
        for part in extraction.parts:
            if part.unscannable:
                # One rule for pictures: an image file (a logo in an HTML signature, a photo, a JPEG
                # of a scanned page) and a PDF whose pages are only pictures (a scan without a text
                # layer, kind "image" from extract/pdf.py) have no text to read and no OCR here:
                # both are noted at low severity, so they hold mail to personal addresses (policy
                # personal_mail_any_finding) but not every external mail with a picture; a site that
                # wants scans held everywhere raises them with a policy rule on unscannable findings.
                # Everything else unreadable (encrypted, corrupt, over a limit) fails closed at medium.
                image = part.kind == "image"
                findings.append(Finding("unscannable", "unscannable", 1, "low" if image else "medium", part.path,
                                        "image" if image else part.unscannable))
            if part.text or part.tables:
                result = self.scan(part.path, part.text, part.tables)
                findings.extend(result.findings)
                records = max(records, result.records)
        return ScanResult(findings=tuple(findings), records=records)

    # ------------------------------------------------------------------ internals

    def _inert(self, hits: dict[int, list[int]]) -> bool:
        """Whether these keyword hits, with no digit run and no table, can give no finding:
        no confidentiality label, and too few field groups for a body-table header."""
        if (not self._label_ids.isdisjoint(hits) or not self._birth_ids.isdisjoint(hits)
                or not self._keyed_ids.isdisjoint(hits)):
            return False
        fields = self._fields
        present = [fields[k] for k in hits if fields[k]]
        if len(present) < 2:
            return not present or len(present[0]) < self.rules.min_fields
        return len(frozenset().union(*present)) < self.rules.min_fields

    def _labels(self, hits: dict[int, list[int]]) -> tuple[int, str]:
        """(count, the first of the most severe labels) of the confidentiality labels in the text."""
        if self._label_ids.isdisjoint(hits):
            return 0, ""
        present = [k for k in hits if k in self._label_ids]
        rank = SEVERITY_RANK
        severity = self._label_severity
        words = self._words
        top = max(rank[severity[words[k]]] for k in present)
        first = min((hits[k][0], k) for k in present if rank[severity[words[k]]] == top)[1]
        return sum(len(hits[k]) for k in present), words[first]

    def _pasted_rows(self, part: str, text: str) -> list[TableFacts]:
        """Rows pasted from a spreadsheet without their header (tab-separated lines in a body):
        records when their cells are people's names, homes and birth dates (headerless.py)."""
        out = []
        for start, end in tab_blocks(text):
            if not people_columns(tab_rows(text, start, end, SAMPLE)):
                continue  # judged on its first rows, as a sheet is; split whole only when it is people
            facts = self._tables.headerless(Table(part, tab_rows(text, start, end)))
            if facts is not None and facts.records:
                out.append(facts)
        return out

    def _sentences(self, part: str, text: str, hits: dict[int, list[int]]) -> list[TableFacts]:
        """People described one per line or sentence (a birth phrase and an address), as records."""
        lengths = self._lengths
        found = [(end - lengths[k], end) for k in self._birth_ids.intersection(hits) for end in hits[k]]
        n = person_sentences(text, found)
        return [TableFacts(part, n, SENTENCE_FIELDS, -1, {})] if n else []

    def _keyed_findings(self, part: str, text: str, hits: dict[int, list[int]],
                        tables: Sequence[Table]) -> list[Finding]:
        """Passports, residence cards, pension numbers ... right after their keywords, or down a
        column headed by one (keyed.py)."""
        out = []
        for ident, shape, ids in self._keyed:
            ends = [end for k in ids.intersection(hits) for end in hits[k]]
            if not ends:
                continue
            values = find_after(text, ends, shape, self.rules.proximity, next_line=not tables)
            for table in tables:
                for value, raw in in_columns(table.rows, ident.keywords, shape, self.rules.header_rows).items():
                    values.setdefault(value, raw)
            if values:
                out.append(Finding(ident.name, ident.name, len(values), ident.severity, part,
                                   keyed_mask(values[min(values)])))
        return out

    def _mailing_list(self, part: str, text: str) -> list[TableFacts]:
        """A mailing list (name, honorific, address on each line), as records (prose.py).

        Honorifics are not gate keywords: a one-character literal (様 is two bytes in a str's
        storage) slowed the whole hyperscan pass by a third on letters; they are counted and
        found with str methods instead. Whether the text holds any is asked first with `in`
        (issue 19: a one-character `in` skips ahead like memchr, ~0.14 ms per 10 MB of dense text,
        where addressed_people's str.count reads every character, ~2 ms: a tenth of the scan of
        dense business text, which holds no honorific). In the keywords' hyperscan database the
        honorifics cost nothing on long texts but made 2.7 kB messages 11% slower."""
        honorifics = self.rules.honorifics
        if len(text) >= _LONG_TEXT:  # (a letter holds one or two: its count costs less than a test first)
            for w in honorifics:
                if w in text:
                    break
            else:
                return []
        n = addressed_people(text, honorifics) if honorifics else 0
        return [TableFacts(part, n, LIST_FIELDS, -1, {})] if n else []

    def _body_tables(self, part: str, text: str, hits: dict[int, list[int]]) -> list[TableFacts]:
        """Tab/comma-separated blocks in text whose first line is a personal-records header.

        Only a line holding keywords of at least `min_fields` field groups can be such a header
        (the header check reads cells of that line), so only those lines are cut out and read.
        Such a line holds a hit of a keyword naming some group other than the commonest keyword's
        (when that one names a single group): only lines of those "anchor" hits are looked at, so
        `TEL` on every line of a long text costs nothing.
        """
        fields = self._fields
        need = self.rules.min_fields
        present = [k for k in hits if fields[k]]
        if not present:
            return []
        if len(present) == 1:
            if len(fields[present[0]]) < need:
                return []
        elif len(frozenset().union(*[fields[k] for k in present])) < need:
            return []
        lazy_ids = self._lazy_ids
        lazy = [k for k in present if k in lazy_ids]  # their hits are one end each: presence
        if not lazy:
            commonest = fields[max(present, key=lambda k: len(hits[k]))]
        else:
            # A lazy keyword (TEL) stands in for the commonest: any field keyword naming one group
            # serves, since a header line names `need` groups, so it holds a hit of a keyword naming
            # another, and body_table_at reads a line whatever position in it it is given.
            commonest = fields[lazy[0]]
            if not (need > 1 and len(commonest) == 1 and all(fields[k] == commonest for k in lazy)):
                hits = self._with_lazy_ends(text, hits, present, len(text))[0]
                lazy = []
        if need > 1 and len(commonest) == 1:
            anchors = sorted(end - 1 for k in present if not fields[k] <= commonest for end in hits[k])
        else:
            anchors = sorted(end - 1 for k in present for end in hits[k])
        eager = [k for k in present if k not in lazy]
        lazy_regexes = [self._lazy_regex[k] for k in lazy]
        out: list[TableFacts] = []
        done_until = -1
        line_start = -1
        n = len(text)
        for pos in anchors:
            if pos < done_until:
                continue  # inside a table already read
            start = text.rfind("\n", 0, pos) + 1
            if start == line_start:
                continue  # this line was judged already
            line_start = start
            line_end = text.find("\n", pos)
            if line_end < 0:
                line_end = n
            groups: frozenset[str] = frozenset()
            for k in eager:  # every field keyword with a hit on this line
                ends = hits[k]
                i = bisect_left(ends, start + 1)
                if i < len(ends) and ends[i] <= line_end:
                    groups = groups | fields[k]
            if lazy_regexes and not commonest <= groups and any(
                    rx.search(text, start, line_end) is not None for rx in lazy_regexes):
                groups = groups | commonest  # (the lazy keywords name that one group)
            if len(groups) < need:
                continue
            if sum(self._is_field(label) for label, _v in form_pairs(text[start:line_end], self._is_field)) >= need:
                continue  # 氏名：… 住所：… is a record typed as a form, not a header (_body_forms)
            found = body_table_at(text, pos, part, self._is_field)
            if found is None:
                continue
            table, end = found
            if len(self._tables.row_fields(table.rows[0])) < need:
                continue
            facts = self._tables.analyse(table)
            if facts is not None:
                out.append(facts)
                done_until = end
        return out

    def _with_lazy_ends(self, text: str, hits: dict[int, list[int]], present: Sequence[int],
                        limit: int) -> tuple[dict[int, list[int]], bool]:
        """(`hits` with every end of the lazy keywords among `present`, whether complete): the
        gate reported one end of each (their presence). The search stops once the field keywords'
        ends number more than `limit` (then complete is False: the caller gives up at that count)."""
        lazy = [k for k in present if k in self._lazy_ids]
        if not lazy:
            return hits, True
        full = dict(hits)
        room = limit - sum(len(hits[k]) for k in present if k not in self._lazy_ids)
        for k in lazy:
            ends: list[int] = []
            m = self._lazy_regex[k].search(text)
            while m is not None:  # overlapping occurrences too, as the gate reports them
                ends.append(m.end())
                room -= 1
                if room < 0:
                    return full, False
                m = self._lazy_regex[k].search(text, m.start() + 1)
            full[k] = ends
        return full, True

    def _field_hits(self, hits: dict[int, list[int]]) -> tuple[list[int], frozenset[str]]:
        """The keywords among `hits` that name field groups, and the groups they name together."""
        fields = self._fields
        present = [k for k in hits if fields[k]]
        return present, frozenset().union(*[fields[k] for k in present]) if present else frozenset()

    def _label_ends_upto(self, text: str, hits: dict[int, list[int]], present: Sequence[int]) -> list[int] | None:
        """The sorted ends of every hit of the field keywords `present` (the lazy ones looked for in
        the text), or None past FORM_LINES of them: forms and pasted columns read a few label lines."""
        hits, complete = self._with_lazy_ends(text, hits, present, FORM_LINES)
        ends = sorted(end for k in present for end in hits[k])
        return ends if complete and len(ends) <= FORM_LINES else None

    def _body_forms(self, part: str, text: str, hits: dict[int, list[int]]) -> list[TableFacts]:
        """Label/value lines in a text (`氏名：試験 太郎`, `住所：...`, `氏名　試験 太郎`, or a whole
        record on one line: `氏名：… 生年月日：… 住所：…`; tables.form_pairs): a form pasted into a body
        is read as the rows (label, value) of a table whose field names run down a column, one record
        per block (a label seen again starts the next one). Only lines holding a field keyword are
        read, and only when the text names `min_fields` groups at all."""
        present, groups = self._field_hits(hits)
        if len(groups) < self.rules.min_fields or FORM_NAME_GROUP not in groups:
            return []  # a person's form names the person
        ends = self._label_ends_upto(text, hits, present)
        if ends is None:
            return []  # field words on hundreds of lines are a listing or a log, not a form
        rows: list[tuple[str, ...]] = []
        last = -1
        for end in ends:
            ls = text.rfind("\n", 0, end - 1) + 1
            if ls == last:
                continue
            last = ls
            le = text.find("\n", end)
            rows.extend(form_pairs(text[ls:le if le >= 0 else len(text)], self._is_field))
        if len(rows) < self.rules.min_fields:
            return []
        facts = self._tables.analyse_form(Table(part, tuple(rows)))
        return [facts] if facts is not None and facts.records and FORM_NAME_GROUP in facts.fields else []

    def _body_columns(self, part: str, text: str, hits: dict[int, list[int]]) -> list[TableFacts]:
        """A table pasted column by column (tables.column_blocks): its label lines are among the
        lines of the field-word hits, read only when the text names `min_fields` groups at all."""
        present, groups = self._field_hits(hits)
        if len(groups) < self.rules.min_fields:
            return []
        ends = self._label_ends_upto(text, hits, present)
        if ends is None:
            return []  # field words on hundreds of lines: a listing or a log
        # A label line is short: most texts name fields inside sentences (TEL 03-..., 個人番号：...)
        # and stop here, after a bounded look for the line's end.
        longest, find, rfind, n = self.rules.max_header_cell, text.find, text.rfind, len(text)
        short = set()
        for end in ends:
            le = find("\n", end, end + longest + 1)
            if le < 0:
                if end + longest + 1 >= n:
                    le = n
                else:
                    # only spaces from there to the line's end, or the line is longer than a label
                    m = _SPACE_TO_EOL.match(text, end + longest + 1)
                    if m is None:
                        continue
                    le = m.end()
            ls = rfind("\n", 0, end - 1) + 1
            if len(text[ls:le].strip()) <= longest:
                short.add(ls)
        if len(short) < 2:
            return []
        starts = sorted(short)
        table = column_blocks(text, starts, part, self._is_field, longest)
        if table is None or len(self._tables.row_fields(table.rows[0])) < self.rules.min_fields:
            return []
        facts = self._tables.analyse(table)
        return [facts] if facts is not None and facts.records else []

    def _occurrences(
        self, text: str, triggers: list[int], hits: dict[int, list[int]], column_context: Mapping[str, frozenset[str]]
    ) -> dict[str, _Tally]:
        """Every identifier, tallied per detector: the accepted run around each trigger, classified by its context."""
        out: dict[str, _Tally] = {}
        distinct_enough = self.rules.distinct_high
        search, match = _RAW_RUN.search, _RAW_RUN.match
        digits_set, separators = _DIGITS, _SEPARATORS
        covered = -1
        lazy = _Lazy()
        failing: list[int] = []
        lazy.failing = failing
        has_licence = lazy.has_licence = not self._licence_ids.isdisjoint(hits)
        plain = not has_licence and not column_context  # nothing can speak for a failing number
        look, back, longest = _LOOK, _TRIGGER_LONGEST, _LONGEST_RUN  # locals: read once per trigger
        explain: Callable[[int], bool] | None = None  # made on first need
        run_found = False
        zeros, low_w, high_w, six = _ASCII_ZEROS, _LOW_WEIGHTS, _HIGH_WEIGHTS, _SIX_BYTES
        from_bytes = int.from_bytes
        last = len(text) - 2  # a run ending before this can be told maximal by the two characters after it
        sifted: list[int] = []
        passing: list[_Twelve] = []
        if plain and len(triggers) >= _SIFT_MIN:
            triggers, sifted, passing = _sift(text, triggers)
        for end in triggers:
            if end <= covered:
                # another trigger in a run already read, or one that took the character after it
                # (covered is one past the run: a gate may report both, hyperscan `$` before a
                # final newline and the newline itself)
                continue
            # The two commonest runs of business text start 13 characters before their trigger's
            # end: a 4-4-4 tracking number (a 4-4-3 trigger, the run ends one digit later) and 12
            # contiguous digits (the trigger took the character after them). Such a run in ASCII
            # is taken without a regex call when it is maximal (no digit, nor a separator after
            # a digit, either side of it); a 4-4-4 run failing the check digit with nothing to
            # speak for it is counted as failing right here (issue 19: on dense text these are
            # 99% of the runs, and the regex search was a third of the time per run).
            cs = end - 13
            four = text[end - 1] in digits_set  # the trigger ends on a digit: a 4-4-4 run's eleventh?
            if (not four and cs > 2 and text[cs] in digits_set
                    and text[cs - 1] in digits_set):
                # The gate's bounded match took the character after a run of 11 or more digits (its
                # match has no left boundary: hyperscan runs much faster without one), and two
                # more digits come before those 11: 13 contiguous digits (a corporate or JAN
                # number, the commonest long number of business text) when the run starts there.
                # No detector takes 13 digits; longer runs go on to be read.
                c = text[cs - 2]
                if c not in digits_set and (c not in separators or text[cs - 3] not in digits_set):
                    covered = end
                    continue
            if 1 < cs and end < last:
                c = text[cs - 1]
                if c not in digits_set and (c not in separators or text[cs - 2] not in digits_set):
                    if four:  # a 4-4-4 run?
                        ce = end + 1
                        c = text[ce]
                        raw = text[cs:ce]
                        if (c not in digits_set and (c not in separators or text[ce + 1] not in digits_set)
                                and raw[4] in "-. " and raw[9] in "-. "):
                            # its 12 digits as bytes, separators dropped in one C call (twice as
                            # fast as three slices joined): 12 bytes, all digits, only when the
                            # other 12 characters are ASCII digits (a non-ASCII one encodes longer)
                            b = raw.encode().translate(None, b"-. ")
                            if len(b) == 12 and b.isdigit():
                                covered = ce + 1
                                x = from_bytes(b, "little") - zeros  # the check digit sum (_LOW_WEIGHTS)
                                valid = (((x & six) * low_w >> 40 & 255) + ((x >> 48) * high_w >> 40 & 255)) % 11 <= (b[11] == 48)
                                if not valid and (plain or (not has_licence and b.decode() not in column_context)) and (
                                        b.count(b[0]) != 12):
                                    failing.append(cs)  # fails the check digit; not a placeholder
                                    continue
                                g = b.decode()
                                run_found = True
                                separated = True
                    else:  # 12 contiguous digits, then the non-digit at end - 1?
                        ce = end - 1
                        c = text[ce]
                        g = text[cs:ce]
                        if (c not in separators or text[end] not in digits_set) and g.isascii() and g.isdigit():
                            covered = ce + 1
                            if g.count(g[0]) == 12:
                                continue  # a placeholder (000000000000)
                            x = from_bytes(g.encode(), "little") - zeros
                            valid = (((x & six) * low_w >> 40 & 255) + ((x >> 48) * high_w >> 40 & 255)) % 11 <= (g[11] == "0")
                            if not valid and (plain or (not has_licence and g not in column_context)):
                                failing.append(cs)
                                continue
                            run_found = True
                            separated = False
            if run_found:
                # A 12-digit ASCII run (contiguous or 4-4-4) that passes the check digit, or that a
                # licence keyword or a column may speak for: its shape is known, straight to _run.
                run_found = False
                if valid and (not column_context or g not in column_context):
                    # Most passing ones of business text are tracking or order numbers under their
                    # label (追跡番号：1234-5678-9012): on a short line of prose (no column, no
                    # header) with a negative label right before it and no identifier keyword since,
                    # _run finds nothing and notes nothing (_classify drops it before its
                    # population is counted). Told here in a line look-up and one short search.
                    if _short_prose_line(text, cs, ce):
                        if explain is None:
                            explain = self._explainer(text, *self._label_ends(hits))
                        if explain(cs):
                            continue
                occ = self._run(text, text[cs:ce], cs, ce, hits, column_context, lazy, g, separated, valid)
                if occ is not None:
                    _tally_of(out, occ[0]).add(occ[1], occ[2], occ[3], distinct_enough)
                continue
            else:
                p = end - 1  # the trigger's last digit, or the non-digit just after its run
                # Read from where the commonest triggers start, and walk back when the character
                # before the run found may continue it. The run of the trigger ends at end - 1 or
                # later (at end - 1 exactly only when the gate's match took the character after it).
                hi = end + look
                m = search(text, p - back if p > back else 0, hi)
                while m is not None and m.end() < p:
                    m = search(text, m.end(), hi)
                s0 = m.start() if m is not None else 0
                # The run may begin earlier: a digit, or a separator after a digit, just before it.
                if s0 and (text[s0 - 1] in digits_set or (text[s0 - 1] in separators and s0 > 1 and text[s0 - 2] in digits_set)):
                    # Walk back to the run's first digit (no earlier than p - _LOOK, where a search
                    # from there would start) and match from it: a few character tests instead of a
                    # second search that also meets the short runs before this one.
                    lo = p - look if p > look else 0
                    while s0 > lo:
                        c = text[s0 - 1]
                        if c in digits_set:
                            s0 -= 1
                        elif c in separators and s0 - 2 >= lo and text[s0 - 2] in digits_set:
                            s0 -= 2
                        else:
                            break
                    m = match(text, s0, hi)
                if m is None:  # pragma: no cover - a trigger always sits on a digit
                    continue
                cs, ce = m.span()
                covered = ce + 1
                n = ce - cs
                if n > longest:
                    continue
                raw = m.group()
            if raw.isascii():
                # The commonest runs of business text, refused here with the tests `_run` would
                # apply first (issue 19: a Python call per run was half the scanner's time):
                # lengths no detector takes, 13-19 contiguous digits that are no card number,
                # 12 digits (contiguous or 4-4-4) that fail the check digit with no keyword
                # column or licence keyword to speak for them (kept for their population).
                if raw.isdigit():
                    if n != 12:
                        if n < 11 or n > 19 or (n > 11 and not is_card_number(raw)):
                            continue
                    elif raw.count(raw[0]) == 12:
                        continue  # a placeholder (000000000000)
                    elif (not has_licence and raw not in column_context
                          and (sum(map(mul, raw.encode(), _WEIGHTS)) - _WEIGHTED_ZERO) % 11 > (raw[11] == "0")):
                        failing.append(cs)
                        continue
                elif n < 13:
                    continue  # separated, at most 11 digits: no shape, nor a space-cut piece of 11
                elif (n == 14 and raw[4] in "-. " and raw[9] in "-. " and not has_licence):
                    digits = raw[:4] + raw[5:9] + raw[10:]
                    if digits.isdigit() and digits not in column_context and digits.count(digits[0]) != 12 and (
                            sum(map(mul, digits.encode(), _WEIGHTS)) - _WEIGHTED_ZERO) % 11 > (digits[11] == "0"):
                        failing.append(cs)
                        continue
            checked = raw.isdigit()  # (a contiguous ASCII run of 11-19 digits has every shape's length)
            if checked:
                if raw.isascii() and not 11 <= n <= 19:
                    continue  # contiguous, of a length no detector takes: most runs of business text
                pieces: Sequence[tuple[str, int, int]] = ((raw, cs, ce),)
            elif (" " in raw or "\u3000" in raw) and not _has_shape(raw):
                # Columns of a PDF or a space-aligned listing: "1980/01/01 <12 digits>" reads as
                # one run that fits no shape; the numbers between the spaces are judged alone.
                pieces = [(g.group(), cs + g.start(), cs + g.end()) for g in _SPACE_PIECE.finditer(raw)]
            else:
                pieces = ((raw, cs, ce),)
            for raw, cs, ce in pieces:
                if not checked and raw.isascii() and not _may_have_shape(raw):
                    continue  # no detector takes a run of that many digits
                occ = self._run(text, raw, cs, ce, hits, column_context, lazy)
                if occ is not None:
                    _tally_of(out, occ[0]).add(occ[1], occ[2], occ[3], distinct_enough)
        if passing:
            self._passing(text, passing, hits, lazy, out)
        if sifted:  # (both ascending, runs apart: one merge in the sort)
            failing.extend(sifted)
            failing.sort()
        # Bare 12-digit numbers (no keyword, no labelled column) are My Numbers only as a set that
        # passes the check digit as real ones do: per column, or per part outside tables.
        populations = lazy.populations
        if populations is None:
            return out
        rate = self.rules.min_pass_percent
        if lazy.failing and any(pop[2] for pop in populations.values()):
            columns = lazy.columns  # made on first need: a short message's lines are mostly prose
            rfind, find, n = text.rfind, text.find, len(text)
            any_delimiter = _ANY_DELIMITER.search
            negative, positive = self._label_ends(hits)
            part = populations.get("part")
            # Failing numbers only lower a pass rate: once every population holding a passing bare
            # number is below the threshold, counting more changes nothing.
            undecided = {k for k, pop in populations.items() if pop[2] and pop[1] * 100 >= rate * pop[0]}
            failing = lazy.failing
            weight = 1.0
            if len(failing) > _FAILING_SAMPLE:
                # Thousands of failing numbers in one part (a long listing): their unlabelled share is
                # read from an evenly spaced sample, each standing for its stretch; cost stays bounded.
                weight = len(failing) / _FAILING_SAMPLE
                failing = [failing[int(i * weight)] for i in range(_FAILING_SAMPLE)]
            window, reach = self.rules.negative_window, self._local_reach
            local = self._local_negatives.search if self._local_negatives is not None else None
            explained = self._explainer(text, negative, positive)

            # When the part's own population is the only one (prose with a few bare passing numbers
            # and a column of 注文番号 nowhere), a number a label explains is never counted whatever
            # its line is: that cheaper test comes first and the line is read only for the rest
            # (issue 16: half the cost of this loop on a long text of order numbers).
            only_part = part is not None and len(populations) == 1
            for cs in failing:
                if not undecided:
                    break
                if only_part:
                    # explained(cs), inline and cheapest test first: the label search, then the
                    # identifier keyword bisect only when a label was found (issue 16: this loop
                    # walks every order number of a long text that holds a few bare passing ones)
                    if local is not None:
                        m = local(text[cs - 1 : cs - reach - 1 : -1] if cs > reach else text[cs - 1 :: -1] if cs else "")
                        if m is not None and m.start() <= window:
                            i = bisect_right(positive, cs)
                            if cs - m.start() >= (positive[i - 1] if i else -1):
                                continue
                    i = bisect_right(negative, cs) - 1
                    if i >= 0 and negative[i] >= cs - window:
                        j = bisect_right(positive, cs)
                        if negative[i] >= (positive[j - 1] if j else -1):
                            continue
                ls = rfind("\n", 0, cs) + 1
                le = find("\n", cs)
                if le < 0:
                    le = n
                if le - ls < FIXED_MIN and any_delimiter(text, ls, le) is None:
                    key: object = "part"  # as in _run: a short line of prose, no header
                    pop = part
                    if pop is None:
                        continue
                    positive_header = False
                else:
                    if columns is None:
                        columns = lazy.columns = TextColumns(text, self._categorise)
                    key, header = columns.at(cs)
                    pop = populations.get(key)
                    # a population with no passing number needs no count; a labelled column never counts
                    if pop is None:
                        continue
                    positive_header = not _POSITIVE_SET.isdisjoint(header)
                    if not positive_header and NEGATIVE in header:
                        continue
                if key not in undecided:
                    continue  # its rate is below the line already: counting more only lowers it
                if not positive_header and not only_part and explained(cs):
                    continue  # nor a number a negative label right before it explains
                pop[0] += weight
                if pop[1] * 100 < rate * pop[0]:
                    undecided.discard(key)
        for candidates, passing, found in populations.values():
            if found and passing * 100 >= rate * candidates:
                tally = _tally_of(out, "my_number")
                for occ in found:
                    tally.add(occ[1], occ[2], occ[3], distinct_enough)
        return out

    def _passing(self, text: str, runs: list[_Twelve], hits: dict[int, list[int]], lazy: _Lazy,
                 out: dict[str, _Tally]) -> None:
        """The trigger loop's steps for a passing 12-digit ASCII run, for those `_sift` found (no
        column context, no licence keyword): one on a short line of prose that a negative label
        right before it explains is dropped (追跡番号：1234-5678-9012), any other goes to `_run`."""
        explain: Callable[[int], bool] | None = None
        distinct_enough = self.rules.distinct_high
        for cs, ce, g, separated in runs:
            if _short_prose_line(text, cs, ce):
                if explain is None:
                    explain = self._explainer(text, *self._label_ends(hits))
                if explain(cs):
                    continue
            occ = self._run(text, text[cs:ce], cs, ce, hits, _NO_CONTEXT, lazy, g, separated, True)
            if occ is not None:
                _tally_of(out, occ[0]).add(occ[1], occ[2], occ[3], distinct_enough)

    def _add_joined(self, out: dict[str, _Tally], joined: tuple[tuple[str, str], ...]) -> None:
        """Identifiers a table split over cells under one keyword header: high when they check."""
        for category, digits in joined:
            detector = {"my_number": "my_number", "card": "credit_card", "licence": "drivers_licence",
                        "resident": "resident_code"}.get(category)
            if detector == "my_number" and not (len(digits) == 12 and is_valid_my_number(digits)
                                                and not is_placeholder(digits)):
                continue
            if detector == "credit_card" and not is_card_number(digits):
                continue
            if detector == "resident_code" and len(digits) != 11:
                continue
            if detector == "drivers_licence" and len(digits) != 12:
                continue
            if detector is None:
                continue
            _tally_of(out, detector).add(0, digits, "high", self.rules.distinct_high)

    def _categorise(self, cell: str) -> frozenset[str]:
        """The categories a header cell names (My Number, licence ... or a negative label)."""
        if not cell or len(cell) > self.rules.max_header_cell:
            return frozenset()
        cache = self._categorised
        got = cache.get(cell)
        if got is not None:
            return got
        key = fold(cell)
        found: set[str] = set()
        for word, cats in self._header_keywords:
            if word in key:
                found |= cats
        got = frozenset(found)
        if got:  # only cells that name something (headers, labels) are kept: never a person's data
            if len(cache) >= _CATEGORISED_CACHE:
                cache.clear()
            cache[cell] = got
        return got

    def _run(self, text: str, raw: str, cs: int, ce: int, hits: dict[int, list[int]],
             column_context: Mapping[str, frozenset[str]], lazy: _Lazy, twelve: str | None = None,
             twelve_separated: bool = False, twelve_valid: bool = False) -> _Occurrence | None:
        """The finding one digit run makes, if any (bare 12-digit ones are deferred to their population).

        `twelve`: the run's 12 ASCII digits when the caller has read its shape already (contiguous,
        or 4-4-4 when `twelve_separated`; `twelve_valid` their check digit), so it is not read twice."""
        if twelve is not None:
            kind, digits, separated = "twelve", twelve, twelve_separated
        elif raw.isascii() and raw.isdigit():  # contiguous half-width: the common case
            n = ce - cs
            kind = "twelve" if n == 12 else "eleven" if n == 11 else "card" if 13 <= n <= 19 else ""
            digits = raw
            separated = False
        else:
            kind, digits, separated = _shape(raw if raw.isascii() else raw.translate(NORMALISE_TABLE))
        # Cheap refusals first: only these runs can become a finding whatever surrounds them.
        valid = False
        header: frozenset[str] = frozenset()
        key: object = None
        if kind == "twelve":
            if digits.count(digits[0]) == 12:  # shapes.is_placeholder, inline: once per 12-digit run
                return None
            valid = twelve_valid if twelve is not None else is_valid_my_number(digits)
            known = column_context.get(digits)
            if known is not None and MY_NUMBER in known:
                # A cell of a My Number column (a sheet's 個人番号, every row): what _classify would
                # say, without it: the column puts My Number at distance -1, so no nearby licence
                # keyword is closer and no negative label suppresses it (a column speaks for its
                # cells), and trace headers are not looked at for column values. One dict lookup
                # instead of four bisects and a reversed-text search per row.
                return ("my_number", cs, digits, "high") if valid else None
            if not valid and known is None:
                if lazy.has_licence is None:  # (a licence header cell is in the text: the gate saw it)
                    lazy.has_licence = not self._licence_ids.isdisjoint(hits)
                if not lazy.has_licence:
                    # Counted in its population only if that population turns out to matter: most
                    # texts hold no bare passing number, and most 12-digit numbers do not pass.
                    if lazy.failing is None:
                        lazy.failing = [cs]
                    else:
                        lazy.failing.append(cs)
                    return None
            # The text column (or row label) of the run: a licence or card column's cell too, so a row
            # labelled 個人番号 in a 免許証番号 column is judged with both (as the reference scanner does).
            ls = text.rfind("\n", 0, cs) + 1
            le = text.find("\n", ce)
            if le < 0:
                le = len(text)
            if le - ls < FIXED_MIN and _ANY_DELIMITER.search(text, ls, le) is None:
                key = "part"  # a short line of prose: what TextColumns.at says, without the call
            else:
                if lazy.columns is None:
                    lazy.columns = TextColumns(text, self._categorise)
                key, header = lazy.columns.at(cs)
                if NEGATIVE in header and _POSITIVE_SET.isdisjoint(header) and known is None:
                    return None  # a column (or row) of order numbers, phone numbers, timestamps ...
        elif kind == "eleven":
            context = column_context.get(digits)
            if context is not None and MY_NUMBER in context and is_valid_my_number("0" + digits):
                return ("my_number", cs, "0" + digits, "high")  # a number cell that lost its leading zero
            if context is None:
                if lazy.has_resident is None:
                    lazy.has_resident = not self._resident_ids.isdisjoint(hits)
                if not lazy.has_resident:
                    return None
        elif kind != "card" or not is_card_number(digits):
            return None
        if lazy.context is None:
            lazy.context = self._packed(hits)
        occ = self._classify(text, kind, digits, separated, valid, cs, ce, lazy.context, column_context, header)
        if occ is not None and digits not in column_context and in_trace_header(text, cs):
            return None  # a Message-ID, a Received queue id, a DKIM value pasted into a text: not a person's
        if kind != "twelve":
            return occ
        if occ is None or occ[0] != "my_number" or occ[3] == "high":
            return occ  # (a passing number a label explains is no candidate of the set)
        # A bare valid number: judged with its population; plainly-other shapes need a keyword.
        pop = _population(lazy, key)
        pop[0] += 1
        if is_datetime(digits) or (key.__class__ is tuple and key[0] == "fixed") or (  # type: ignore[index]
                self._names_products(hits, lazy) and is_upc_a(digits)):
            return None
        pop[1] += 1
        pop[2].append(occ)
        return None

    def _explainer(self, text: str, negative: list[int], positive: list[int]) -> Callable[[int], bool]:
        """explained(cs) for one part, from its sorted label ends (_label_ends)."""
        window, reach = self.rules.negative_window, self._local_reach
        local = self._local_negatives.search if self._local_negatives is not None else None

        def explained(cs: int) -> bool:
            """Whether a negative label right before the run explains it: the suppression _classify
            applies (the last negative label ending within the window before the run, no identifier
            keyword ending after it), from the part's sorted label ends and one search of the
            reversed characters before the run (local labels: 注文番号 ...). A run it explains is
            one _classify drops whatever its kind, unless a column speaks for it (its digits in the
            column context, or a header naming an identifier): an identifier keyword closer than
            the label, within `proximity` or not, makes it False."""
            i = bisect_right(positive, cs)
            last_positive = positive[i - 1] if i else -1  # the last identifier keyword up to cs
            if local is not None:
                # the `reach` characters before the run, reversed in one slice (nearest first)
                m = local(text[cs - 1 : cs - reach - 1 : -1] if cs > reach else text[cs - 1 :: -1] if cs else "")
                if m is not None and m.start() <= window and cs - m.start() >= last_positive:
                    return True  # 注文番号 right before it, no keyword since
            i = bisect_right(negative, cs) - 1
            return i >= 0 and negative[i] >= cs - window and negative[i] >= last_positive  # TEL ...

        return explained

    def _label_ends(self, hits: dict[int, list[int]]) -> tuple[list[int], list[int]]:
        """(negative label ends, identifier keyword ends) of a part, each sorted: read once for all
        the failing numbers the population count looks at, each then costs two bisects and one short search."""
        cats = self._categories
        negative: list[int] = []
        positive: list[int] = []
        lazy = self._lazy_ids  # (found by the local search, as the other local labels)
        for k, ends in hits.items():
            if k in lazy:
                continue
            c = cats[k]
            if NEGATIVE in c:
                negative.extend(ends)
            if not _POSITIVE_SET.isdisjoint(c):
                positive.extend(ends)
        negative.sort()
        positive.sort()
        return negative, positive

    def _names_products(self, hits: dict[int, list[int]], lazy: _Lazy) -> bool:
        if lazy.product is None:
            lazy.product = not self._product_ids.isdisjoint(hits)
        return lazy.product

    def _is_field(self, word: str) -> bool:
        return bool(self._tables.cell_fields(word))

    def _packed(self, hits: dict[int, list[int]]) -> list[int]:
        """The proximity keyword hits (identifier keywords, negative labels) packed and sorted."""
        ids = self._proximity_ids
        lists = [(k, ends) for k, ends in hits.items() if k in ids]
        packed = [end << _KEY_BITS | k for k, ends in lists for end in ends]
        if len(lists) > 1:
            packed.sort()
        return packed

    def _classify(
        self,
        text: str,
        kind: str,
        digits: str,
        separated: bool,
        valid: bool,
        cs: int,
        ce: int,
        context: list[int],
        column_context: Mapping[str, frozenset[str]],
        header: frozenset[str] = frozenset(),
    ) -> _Occurrence | None:
        """The detector and severity of one accepted run at [cs, ce), or None.

        `context` holds every proximity keyword hit packed as `end << _KEY_BITS | index`, sorted;
        `valid` says whether a twelve-digit run has a right My Number check digit.
        """
        prox = self.rules.proximity
        # Keywords ending at most `prox` before the run, and starting at most `prox` after it.
        b0 = bisect_left(context, (cs - prox) << _KEY_BITS)
        b1 = bisect_left(context, (cs + 1) << _KEY_BITS, b0)
        a0 = bisect_left(context, (ce + 1) << _KEY_BITS, b1)
        a1 = bisect_left(context, (ce + prox + self._longest_keyword + 1) << _KEY_BITS, a0)
        # Nearest distance per positive category; the last negative label before the number.
        distance: dict[str, int] = {}
        negative_end = -1
        positive_end = -1
        if b0 < b1:
            cats = self._categories
            negative_window = self.rules.negative_window
            for packed in context[b0:b1]:
                he = packed >> _KEY_BITS
                d = cs - he
                hit_cats = cats[packed & _KEY_MASK]
                if NEGATIVE in hit_cats and d <= negative_window:
                    negative_end = max(negative_end, he)
                for c in hit_cats:
                    if c in _POSITIVE:
                        positive_end = max(positive_end, he)
                        if d < distance.get(c, d + 1):
                            distance[c] = d
        if self._local_negatives is not None and (negative_end < 0 or positive_end > negative_end):
            # The negative labels left to this check: the one ending last before the run is the
            # first match in the reversed text before it (the patterns are reversed too).
            before = text[max(0, cs - self._local_reach) : cs][::-1]
            m = self._local_negatives.search(before)
            if m is not None and m.start() <= self.rules.negative_window:
                negative_end = max(negative_end, cs - m.start())
        if negative_end >= 0 and positive_end <= negative_end and not (
                digits in column_context or not _POSITIVE_SET.isdisjoint(header)):
            return None  # 注文番号 / TEL ... right before it, no identifier keyword closer nor column
        if a0 < a1:
            cats = self._categories
            lengths = self._lengths
            for packed in context[a0:a1]:
                k = packed & _KEY_MASK
                d = (packed >> _KEY_BITS) - lengths[k] - ce
                if d < 0 or d > prox:
                    continue
                for c in cats[k]:
                    if c in _POSITIVE and d < distance.get(c, d + 1):
                        distance[c] = d
        for c in column_context.get(digits, ()):
            distance[c] = -1
        for c in header:
            if c in _POSITIVE:
                distance[c] = -1

        if kind == "twelve":
            licence = distance.get(LICENCE)
            if licence is not None and licence < distance.get(MY_NUMBER, licence + 1):
                return ("drivers_licence", cs, digits, "high")
            if not valid:
                return None
            severity = "high" if MY_NUMBER in distance else "medium" if separated else "low"
            return ("my_number", cs, digits, severity)
        if kind == "eleven":
            return ("resident_code", cs, digits, "high") if RESIDENT in distance else None
        return ("credit_card", cs, digits, "high" if CARD in distance else "medium")

    def _findings(
        self, part: str, occurrences: dict[str, _Tally], labels: tuple[int, str], facts: list[TableFacts]
    ) -> tuple[Finding, ...]:
        findings: list[Finding] = []
        for detector in _DETECTOR_ORDER:
            tally = occurrences.get(detector)
            if tally is None:
                continue
            if detector == "my_number" and len(tally.distinct) >= self.rules.distinct_high:
                severity = "high"
            else:
                severity = tally.severity
            findings.append(Finding(detector, detector, tally.count, severity, part, mask(tally.first_digits)))
        label_count, top = labels
        if label_count:
            findings.append(Finding("label", "label", label_count, self._label_severity[top], part, top))
        r = self.rules
        for f in facts:
            if f.records >= r.records_low and _names_people(f.fields, r):
                severity = "high" if f.records >= r.records_high else "medium" if f.records >= r.records_medium else "low"
                if severity == "low" and _register_table(f.fields, f.records, r):
                    severity = "medium"
                findings.append(
                    Finding("personal_records", "personal_records", f.records, severity, f.name or part, ",".join(f.fields))
                )
        return tuple(findings)
