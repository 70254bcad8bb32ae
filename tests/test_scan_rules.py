"""Rule files are validated at load, with the bad key named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dlpgate.errors import RuleError
from dlpgate.scan.rules import default_rules_dir, load_detector_rules
from dlpgate.scan.scanner import Scanner


@pytest.fixture()
def rules(tmp_path: Path) -> Path:
    for f in default_rules_dir().glob("*.toml"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_default_rules_load() -> None:
    rules = load_detector_rules(default_rules_dir())
    assert "マイナンバ-" in rules.my_number_keywords  # stored normalised
    assert rules.proximity == 100 and rules.negative_window == 20


@pytest.mark.parametrize(
    "old,new,key",
    [
        ("proximity = 100", "proximty = 100", "proximty"),
        ("proximity = 100", 'proximity = "far"', "proximity"),
        ("distinct_high = 3", "distinct_high = 0", "my_number.distinct_high"),
        ('contact_fields = ["address", "phone", "email"]', 'contact_fields = ["adress"]',
         "personal_records.contact_fields"),
        ('"disaster_address", "health",', '"disaster_address", "helth",', "personal_records.sensitive_fields"),
        ('keywords = ["住民票コード", "住民票番号"]', "keywords = []", "resident_code.keywords"),
        ('severity = "high"', 'severity = "urgent"', "label[0].severity"),
        ("min_fields = 2", "min_fields = 2\ncolour = 1", "personal_records.colour"),
        ("[credit_card]", "[credit_cards]", "credit_cards"),
    ],
)
def test_bad_key_is_named(rules: Path, old: str, new: str, key: str) -> None:
    edit(rules / "detectors.toml", old, new)
    with pytest.raises(RuleError) as err:
        Scanner.load(rules)
    assert f": {key}:" in str(err.value) and "detectors.toml" in str(err.value)


def test_invalid_toml_and_missing_file(rules: Path) -> None:
    (rules / "detectors.toml").write_text("proximity = = 1", encoding="utf-8")
    with pytest.raises(RuleError, match="invalid TOML"):
        Scanner.load(rules)
    (rules / "detectors.toml").unlink()
    with pytest.raises(RuleError, match="not found"):
        Scanner.load(rules)


def test_edited_keyword_takes_effect(rules: Path) -> None:
    edit(rules / "detectors.toml", '"番号法"]', '"番号法", "ばんごう"]')
    result = Scanner.load(rules).scan("b", "ばんごう 621498320257")
    assert [(f.detector, f.severity) for f in result.findings] == [("my_number", "high")]
