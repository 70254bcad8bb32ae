"""The scanner: text (and tables) in, findings out. Compiled once, then called per part.

One pass per part: a gate (hyperscan, or `re` without it) finds trigger positions; around each
trigger a window is normalised (one `str.translate`) and the exact detectors run there — digit
runs with check digits, keyword positions from one Aho-Corasick automaton for proximity and
suppression, confidentiality labels. Keyword lines that look like a tab/comma-separated header
become tables. Text that holds no trigger costs one gate pass and nothing else.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import ahocorasick

from dlpgate.extract.model import Extraction, Table
from dlpgate.scan.checks import is_card_number, is_valid_my_number, mask
from dlpgate.scan.gate import Gate, make_gate
from dlpgate.scan.model import SEVERITY_RANK, Finding, ScanResult
from dlpgate.scan.normalize import DIGITISH, normalise
from dlpgate.scan.rules import DetectorRules, default_rules_dir, load_detector_rules
from dlpgate.scan.tables import TableAnalyser, TableFacts, body_table_at

# Digit runs on normalised text: a digit, then digits each optionally after one separator.
_RUN = re.compile(r"[0-9](?:[-. ]?[0-9]){10,}")
_SPLIT = re.compile(r"[-. ]")
_MAX_RUN = 19 + 18  # longest accepted identifier with a separator between every digit
_CARD_GROUPS = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 4), (4, 6, 5), (4, 4, 4, 2), (4, 4, 4, 3)})

# Keyword categories used for proximity.
MY_NUMBER, LICENCE, RESIDENT, CARD, NEGATIVE = "my_number", "licence", "resident", "card", "negative"
_POSITIVE = (MY_NUMBER, LICENCE, RESIDENT, CARD)
_DETECTOR_ORDER = ("my_number", "resident_code", "credit_card", "drivers_licence")


_EMPTY = ScanResult(findings=(), records=0)


def _shape(run: str) -> tuple[str, str, bool]:
    """(kind, digits, separated) of a digit run; kind "" when no detector accepts its shape."""
    if run.isdigit():  # contiguous: the common case, no split needed
        n = len(run)
        return ("twelve" if n == 12 else "eleven" if n == 11 else "card" if 13 <= n <= 19 else ""), run, False
    groups = _SPLIT.split(run)
    digits = "".join(groups)
    n = len(digits)
    separated = len(groups) > 1
    lengths = tuple(len(g) for g in groups)
    if n == 12 and (not separated or lengths == (4, 4, 4)):
        return "twelve", digits, separated
    if n == 11 and not separated:
        return "eleven", digits, separated
    if 13 <= n <= 19 and "." not in run and (not separated or lengths in _CARD_GROUPS):
        return "card", digits, separated
    return "", digits, separated


@dataclass
class _Occurrence:
    detector: str
    position: int
    digits: str
    severity: str


class Scanner:
    """Compiled detectors for one rule set. Safe to share between threads; picklable (recompiles)."""

    def __init__(self, rules: DetectorRules, engine: str = "auto") -> None:
        self.rules = rules
        self.engine = engine
        categories: dict[str, set[str]] = {}

        def add(words: Sequence[str], category: str) -> None:
            for w in words:
                categories.setdefault(w, set()).add(category)

        add(rules.my_number_keywords, MY_NUMBER)
        add(rules.licence_keywords, LICENCE)
        add(rules.resident_keywords, RESIDENT)
        add(rules.card_keywords, CARD)
        add(rules.negative_labels, NEGATIVE)
        self._label_severity: dict[str, str] = {}
        for group in rules.labels:
            for w in group.keywords:
                old = self._label_severity.get(w)
                if old is None or SEVERITY_RANK[group.severity] > SEVERITY_RANK[old]:
                    self._label_severity[w] = group.severity
                categories.setdefault(w, set()).add("label")
        self._automaton = ahocorasick.Automaton()
        for word, cats in categories.items():
            self._automaton.add_word(word, (len(word), frozenset(cats), word))
        self._automaton.make_automaton()
        max_keyword = max(len(w) for w in categories)
        self._radius = rules.proximity + max_keyword + _MAX_RUN + 1
        field_keywords = {k for g in rules.record_fields for k in g.keywords}
        self.gate: Gate = make_gate(sorted(field_keywords | set(self._label_severity)), engine)
        self._label_keywords = frozenset(self._label_severity)
        self._tables = TableAnalyser(rules)

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
        digit_triggers, keyword_hits = self.gate.triggers(text) if text else ([], [])
        if not digit_triggers and not keyword_hits and not tables:
            return _EMPTY  # the common case: nothing the gate could see

        facts = [f for f in (self._tables.analyse(t) for t in tables) if f is not None]
        if not tables and keyword_hits:
            facts.extend(self._body_tables(part, text, keyword_hits))
        column_context: dict[str, set[str]] = {}
        for f in facts:
            for digits, cats in f.column_context:
                column_context.setdefault(digits, set()).update(cats)

        triggers = digit_triggers
        label_triggers = [pos for pos, kw in keyword_hits if kw in self._label_keywords]
        if label_triggers:
            triggers = sorted(digit_triggers + label_triggers)
        occurrences: list[_Occurrence] = []
        labels: list[str] = []
        for start, end in self._windows(text, triggers):
            has_label = bool(label_triggers) and bisect_left(label_triggers, start) < bisect_left(label_triggers, end)
            self._scan_window(text, start, end, has_label, column_context, occurrences, labels)
        return ScanResult(
            findings=self._findings(part, occurrences, labels, facts),
            records=max((f.records for f in facts), default=0),
        )

    def scan_extraction(self, extraction: Extraction) -> ScanResult:
        findings: list[Finding] = []
        records = 0
        for part in extraction.parts:
            if part.unscannable:
                # A picture (a logo in an HTML signature, a photo) has no text to read: note it at
                # low severity so it holds only mail to personal addresses, not every HTML mail.
                # Everything else unreadable (encrypted, corrupt, over a limit, a scan without a
                # text layer) fails closed at medium.
                image = part.kind == "image"
                findings.append(Finding("unscannable", "unscannable", 1, "low" if image else "medium", part.path,
                                        "image" if image else part.unscannable))
            if part.text or part.tables:
                result = self.scan(part.path, part.text, part.tables)
                findings.extend(result.findings)
                records = max(records, result.records)
        return ScanResult(findings=tuple(findings), records=records)

    # ------------------------------------------------------------------ internals

    def _body_tables(self, part: str, text: str, keyword_hits: list[tuple[int, str]]) -> list[TableFacts]:
        """Tab/comma-separated blocks in text whose first line is a personal-records header."""
        out: list[TableFacts] = []
        done_until = -1
        checked_line = -1
        for pos, _kw in keyword_hits:
            if pos < done_until:
                continue
            line_start = text.rfind("\n", 0, pos) + 1
            if line_start == checked_line:
                continue
            checked_line = line_start
            found = body_table_at(text, pos, part)
            if found is None:
                continue
            table, end = found
            if len(self._tables.row_fields(table.rows[0])) < self.rules.min_fields:
                continue
            facts = self._tables.analyse(table)
            if facts is not None:
                out.append(facts)
                done_until = end
        return out

    def _windows(self, text: str, triggers: list[int]) -> list[tuple[int, int]]:
        """Merged windows of +-radius around triggers, widened so no digit run crosses an edge.

        Every identifier holds a trigger and is at most _MAX_RUN long, so its whole proximity
        context lies in the window holding its trigger; runs are never cut. Hence the findings do
        not depend on where in an occurrence a gate puts its trigger.
        """
        if not triggers:
            return []
        n = len(text)
        radius = self._radius
        merged: list[list[int]] = []
        for p in triggers:
            s, e = max(0, p - radius), min(n, p + radius + 1)
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        out: list[tuple[int, int]] = []
        for s, e in merged:
            while s > 0 and text[s - 1] in DIGITISH:
                s -= 1
            while e < n and text[e] in DIGITISH:
                e += 1
            if out and s <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], e))
            else:
                out.append((s, e))
        return out

    def _scan_window(
        self,
        text: str,
        start: int,
        end: int,
        has_label: bool,
        column_context: dict[str, set[str]],
        occurrences: list[_Occurrence],
        labels: list[str],
    ) -> None:
        norm = normalise(text[start:end])
        runs = [(m.start(), m.end(), _shape(m.group())) for m in _RUN.finditer(norm)]
        if not has_label and not self._needs_context(norm, runs, column_context):
            return  # e.g. 注文番号 with a failing check digit: no keyword can make it a finding
        # (start, end, categories) per keyword hit; the automaton reports in order of end.
        hits: list[tuple[int, int, frozenset[str]]] = []
        for last, (length, cats, word) in self._automaton.iter(norm):
            if "label" in cats:
                labels.append(word)
                if len(cats) == 1:
                    continue
            hits.append((start + last - length + 1, start + last + 1, cats))
        if not hits:
            ends: list[int] = []
            by_start: list[tuple[int, int, frozenset[str]]] = []
            starts: list[int] = []
        else:
            ends = [h[1] for h in hits]
            by_start = sorted(hits)
            starts = [h[0] for h in by_start]
        prox = self.rules.proximity
        for rs, re_, shape in runs:
            cs = start + rs
            ce = start + re_
            occ = self._classify(
                shape,
                cs,
                ce,
                hits[bisect_left(ends, cs - prox) : bisect_right(ends, cs)],
                by_start[bisect_left(starts, ce) : bisect_right(starts, ce + prox)],
                column_context,
            )
            if occ is not None:
                occurrences.append(occ)

    def _needs_context(
        self, norm: str, runs: list[tuple[int, int, tuple[str, str, bool]]], column_context: dict[str, set[str]]
    ) -> bool:
        """Whether any run in the window can become a finding; only then are keywords located."""
        for _s, _e, (kind, digits, _sep) in runs:
            if kind == "twelve":
                if is_valid_my_number(digits) or digits in column_context:
                    return True
                if any(k in norm for k in self.rules.licence_keywords):
                    return True
            elif kind == "eleven":
                if digits in column_context or any(k in norm for k in self.rules.resident_keywords):
                    return True
            elif kind == "card" and is_card_number(digits):
                return True
        return False

    def _classify(
        self,
        shape: tuple[str, str, bool],
        cs: int,
        ce: int,
        before: list[tuple[int, int, frozenset[str]]],
        after: list[tuple[int, int, frozenset[str]]],
        column_context: dict[str, set[str]],
    ) -> _Occurrence | None:
        kind, digits, separated = shape
        if not kind:
            return None

        # Nearest distance per positive category; the last negative label before the number.
        distance: dict[str, int] = {}
        negative_end = -1
        positive_end = -1
        for _hs, he, cats in before:
            d = cs - he
            if NEGATIVE in cats and d <= self.rules.negative_window:
                negative_end = max(negative_end, he)
            for c in cats:
                if c in _POSITIVE:
                    positive_end = max(positive_end, he)
                    if d < distance.get(c, d + 1):
                        distance[c] = d
        for hs, _he, cats in after:
            d = hs - ce
            for c in cats:
                if c in _POSITIVE and d < distance.get(c, d + 1):
                    distance[c] = d
        for c in column_context.get(digits, ()):
            distance[c] = -1
        if negative_end >= 0 and positive_end <= negative_end:
            return None  # 注文番号 / TEL ... right before it, no identifier keyword closer

        if kind == "twelve":
            licence = distance.get(LICENCE)
            if licence is not None and licence < distance.get(MY_NUMBER, licence + 1):
                return _Occurrence("drivers_licence", cs, digits, "high")
            if not is_valid_my_number(digits):
                return None
            severity = "high" if MY_NUMBER in distance else "medium" if separated else "low"
            return _Occurrence("my_number", cs, digits, severity)
        if kind == "eleven":
            return _Occurrence("resident_code", cs, digits, "high") if RESIDENT in distance else None
        if is_card_number(digits):
            return _Occurrence("credit_card", cs, digits, "high" if CARD in distance else "medium")
        return None

    def _findings(
        self, part: str, occurrences: list[_Occurrence], labels: list[str], facts: list[TableFacts]
    ) -> tuple[Finding, ...]:
        findings: list[Finding] = []
        by_detector: dict[str, list[_Occurrence]] = {}
        for occ in occurrences:
            by_detector.setdefault(occ.detector, []).append(occ)
        my_numbers = by_detector.get("my_number", [])
        if len({o.digits for o in my_numbers}) >= self.rules.distinct_high:
            for o in my_numbers:
                o.severity = "high"
        for detector in _DETECTOR_ORDER:
            occs = by_detector.get(detector)
            if occs:
                occs.sort(key=lambda o: o.position)
                severity = max((o.severity for o in occs), key=SEVERITY_RANK.__getitem__)
                findings.append(Finding(detector, detector, len(occs), severity, part, mask(occs[0].digits)))
        if labels:
            top = max(labels, key=lambda w: SEVERITY_RANK[self._label_severity[w]])
            findings.append(Finding("label", "label", len(labels), self._label_severity[top], part, top))
        r = self.rules
        for f in facts:
            if f.records >= r.records_low:
                severity = "high" if f.records >= r.records_high else "medium" if f.records >= r.records_medium else "low"
                findings.append(
                    Finding("personal_records", "personal_records", f.records, severity, f.name or part, ",".join(f.fields))
                )
        return tuple(findings)
