"""Loading and validating the detector rule file (`rules/detectors.toml`).

Everything is validated at load: an unknown key, a wrong type or an empty keyword list is a
`RuleError` naming the file and the dotted key, so `dlpgate rules check` can point at it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlpgate.errors import RuleError
from dlpgate.scan.keyed import KeyedIdentifier
from dlpgate.scan.model import SEVERITIES
from dlpgate.scan.normalize import normalise

DETECTORS_FILE = "detectors.toml"
# Detector names the scanner and the policy give findings: a `[[keyed]]` identifier takes another.
RESERVED_DETECTORS = frozenset({"my_number", "resident_code", "credit_card", "drivers_licence", "personal_records",
                                "label", "unscannable", "exposed_recipients", "first_contact"})


def default_rules_dir() -> Path:
    """The `rules/` directory shipped with the package (editable install: the repo's)."""
    return Path(__file__).parent.parent.parent / "rules"


class TomlReader:
    """Typed access to one TOML table that remembers which keys were read, to reject the rest."""

    def __init__(self, data: Mapping[str, Any], file: str, path: str = "") -> None:
        self.data = data
        self.file = file
        self.path = path
        self._seen: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, why: str) -> RuleError:
        return RuleError(f"{self.file}: {self._key(key)}: {why}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self._seen.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind in (int, float):
            raise self.error(key, f"expected {getattr(kind, '__name__', kind)}, got a boolean")
        if not isinstance(value, kind):
            raise self.error(key, f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
        return value

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        value = self.get(key, int, default)
        if value < minimum:
            raise self.error(key, f"must be >= {minimum}")
        return int(value)

    def text(self, key: str, default: str, choices: tuple[str, ...] | None = None) -> str:
        value = self.get(key, str, default)
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}")
        return str(value)

    def str_list(self, key: str, default: tuple[str, ...] = (), non_empty: bool = False) -> tuple[str, ...]:
        value = self.get(key, list, list(default))
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(f"{key}[{i}]", "expected a non-empty string")
        if non_empty and not value:
            raise self.error(key, "must not be empty")
        return tuple(value)

    def table(self, key: str, required: bool = False) -> TomlReader:
        value = self.get(key, dict, None)
        if value is None:
            if required:
                raise self.error(key, "missing table")
            value = {}
        return TomlReader(value, self.file, self._key(key))

    def tables(self, key: str) -> list[TomlReader]:
        value = self.get(key, list, [])
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error(f"{key}[{i}]", "expected a table")
            out.append(TomlReader(item, self.file, f"{self._key(key)}[{i}]"))
        return out

    def only(self, keys: tuple[str, ...]) -> None:
        """Reject unknown keys up front, so a misspelt table is named rather than reported missing."""
        for key in self.data:
            if key not in keys:
                raise self.error(key, "unknown key")

    def finish(self) -> None:
        """Raise on the first key that no reader asked for (a typo or an unsupported option)."""
        for key in self.data:
            if key not in self._seen:
                raise self.error(key, "unknown key")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise RuleError(f"{path}: file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise RuleError(f"{path}: cannot read: {exc.strerror}") from exc


def _keywords(reader: TomlReader, key: str, non_empty: bool = True) -> tuple[str, ...]:
    """Keyword list, normalised once here so matching never normalises a keyword again."""
    return tuple(dict.fromkeys(normalise(k.strip()) for k in reader.str_list(key, non_empty=non_empty)))


@dataclass(frozen=True)
class FieldGroup:
    name: str
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class LabelGroup:
    severity: str
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class DetectorRules:
    """Compiled-free description of every detector; `Scanner` compiles it."""

    proximity: int
    negative_window: int
    my_number_keywords: tuple[str, ...]
    negative_labels: tuple[str, ...]
    distinct_high: int
    resident_keywords: tuple[str, ...]
    card_keywords: tuple[str, ...]
    licence_keywords: tuple[str, ...]
    record_fields: tuple[FieldGroup, ...]
    min_fields: int
    records_high: int
    records_medium: int
    records_low: int
    header_rows: int
    max_header_cell: int
    labels: tuple[LabelGroup, ...]
    # A set of bare 12-digit numbers (no keyword, no My Number column) is My Numbers only when at
    # least this percentage of them passes the check digit (real ones: all; random ones: about 10%).
    min_pass_percent: int = 80
    # Words that make a part a product list: a number that is also a valid UPC-A needs a keyword there.
    product_context: tuple[str, ...] = ()
    # Resident-register fields: a table that names a person (name or address) beside one of these is
    # at least medium from `sensitive_medium` records on, however short (a contact list stays low).
    sensitive_fields: tuple[str, ...] = ()
    sensitive_medium: int = 0  # 0 = off
    # Fields that locate or reach someone without saying who: a table naming only these (会社名,
    # 住所, 電話番号: a list of suppliers or offices) is no personal records table.
    contact_fields: tuple[str, ...] = ()
    # Phrases that end a birth date in a sentence (`3月2日生`, `1970年生まれ`): a line or sentence with
    # one and an address is one person's record even without a table (scan/prose.py). Empty: off.
    birth_phrases: tuple[str, ...] = ()
    # Honorifics after a name (様, 殿): lines of a name, one of these and an address are a mailing
    # list's records when there are a few (scan/prose.py: addressed_people). Empty: off.
    honorifics: tuple[str, ...] = ()
    # Identifiers told by their shape right after a keyword (passport, residence card ...: scan/keyed.py).
    keyed: tuple[KeyedIdentifier, ...] = ()


def load_detector_rules(rules_dir: str | os.PathLike[str]) -> DetectorRules:
    path = Path(rules_dir) / DETECTORS_FILE
    root = TomlReader(read_toml(path), str(path))
    root.only(("proximity", "negative_window", "my_number", "resident_code", "credit_card", "drivers_licence",
               "personal_records", "label", "keyed"))
    proximity = root.integer("proximity", 100, minimum=1)
    negative_window = root.integer("negative_window", 20, minimum=0)

    mn = root.table("my_number", required=True)
    my_number_keywords = _keywords(mn, "keywords")
    negative = _keywords(mn, "negative", non_empty=False)
    distinct_high = mn.integer("distinct_high", 3, minimum=1)
    min_pass_percent = mn.integer("min_pass_percent", 80, minimum=1)
    if min_pass_percent > 100:
        raise mn.error("min_pass_percent", "must be <= 100")
    product_context = _keywords(mn, "product_context", non_empty=False)
    mn.finish()

    rc = root.table("resident_code", required=True)
    resident = _keywords(rc, "keywords")
    rc.finish()
    cc = root.table("credit_card", required=True)
    card = _keywords(cc, "keywords")
    cc.finish()
    dl = root.table("drivers_licence", required=True)
    licence = _keywords(dl, "keywords")
    dl.finish()

    pr = root.table("personal_records", required=True)
    min_fields = pr.integer("min_fields", 2, minimum=1)
    high = pr.integer("high", 100, minimum=1)
    medium = pr.integer("medium", 10, minimum=1)
    low = pr.integer("low", 1, minimum=1)
    if not low <= medium <= high:
        raise pr.error("medium", "thresholds must satisfy low <= medium <= high")
    sensitive_medium = pr.integer("sensitive_medium", 0, minimum=0)
    header_rows = pr.integer("header_rows", 200, minimum=1)
    max_header_cell = pr.integer("max_header_cell", 30, minimum=1)
    birth_phrases = _keywords(pr, "birth_phrases", non_empty=False)
    honorifics = _keywords(pr, "honorifics", non_empty=False)
    fields = []
    for fr in pr.tables("field"):
        name = fr.text("name", "")
        if not name:
            raise fr.error("name", "missing")
        fields.append(FieldGroup(name, _keywords(fr, "keywords")))
        fr.finish()
    sensitive = pr.str_list("sensitive_fields")
    unknown = [n for n in sensitive if n not in {f.name for f in fields}]
    if unknown:
        raise pr.error("sensitive_fields", f"not a field group: {', '.join(unknown)}")
    contact = pr.str_list("contact_fields")
    unknown = [n for n in contact if n not in {f.name for f in fields}]
    if unknown:
        raise pr.error("contact_fields", f"not a field group: {', '.join(unknown)}")
    if len(fields) < min_fields:
        raise pr.error("field", f"needs at least min_fields ({min_fields}) field groups")
    pr.finish()

    keyed: list[KeyedIdentifier] = []
    for kr in root.tables("keyed"):
        name = kr.text("name", "")
        if not name or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise kr.error("name", "missing, or not a lower-case identifier")
        if name in RESERVED_DETECTORS or name in {k.name for k in keyed}:
            raise kr.error("name", f"{name!r} is already a detector")
        pattern = kr.text("pattern", "")
        try:
            shape = re.compile(pattern)
        except re.error as e:
            raise kr.error("pattern", f"not a regular expression: {e}") from None
        if not pattern or shape.match(""):
            raise kr.error("pattern", "must not match an empty string")
        if re.search(r"(?<!\\)[A-Z]", pattern.replace("\\\\", "")):
            raise kr.error("pattern", "is matched on normalised text: write letters in lower case")
        keyed.append(KeyedIdentifier(name, _keywords(kr, "keywords"), pattern,
                                     kr.text("severity", "medium", choices=SEVERITIES)))
        kr.finish()

    labels = []
    for lr in root.tables("label"):
        severity = lr.text("severity", "", choices=SEVERITIES)
        labels.append(LabelGroup(severity, _keywords(lr, "keywords")))
        lr.finish()
    root.finish()

    return DetectorRules(
        proximity=proximity,
        negative_window=negative_window,
        my_number_keywords=my_number_keywords,
        negative_labels=negative,
        distinct_high=distinct_high,
        resident_keywords=resident,
        card_keywords=card,
        licence_keywords=licence,
        record_fields=tuple(fields),
        min_fields=min_fields,
        records_high=high,
        records_medium=medium,
        records_low=low,
        sensitive_fields=sensitive,
        sensitive_medium=sensitive_medium,
        contact_fields=contact,
        birth_phrases=birth_phrases,
        honorifics=honorifics,
        keyed=tuple(keyed),
        header_rows=header_rows,
        max_header_cell=max_header_cell,
        labels=tuple(labels),
        min_pass_percent=min_pass_percent,
        product_context=product_context,
    )
