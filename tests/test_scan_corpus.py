"""Every case of the labelled corpus (tests/corpus, built by generate.py) under both gates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlpgate.scan.scanner import Scanner

CORPUS = Path(__file__).parent / "corpus"
LABELS: dict[str, list[str]] = json.loads((CORPUS / "labels.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=["hyperscan", "re"])
def scanner(request: pytest.FixtureRequest) -> Scanner:
    return Scanner.load(engine=request.param)


def test_corpus_is_big_enough() -> None:
    positives = [k for k, v in LABELS.items() if v]
    negatives = [k for k, v in LABELS.items() if not v]
    assert len(positives) >= 40 and len(negatives) >= 40
    detectors = {label.split(":")[0] for v in LABELS.values() for label in v}
    assert detectors >= {"my_number", "resident_code", "credit_card", "drivers_licence", "label", "personal_records"}


@pytest.mark.parametrize("name", sorted(LABELS))
def test_label(scanner: Scanner, name: str) -> None:
    text = (CORPUS / "cases" / f"{name}.txt").read_text(encoding="utf-8")
    got = sorted(f"{f.detector}:{f.severity}" for f in scanner.scan(name, text).findings)
    assert got == LABELS[name]
