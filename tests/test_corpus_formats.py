"""The labelled corpus in every format, judged end to end by `dlpgate scan --json`.

tests/corpus/formats.py renders a representative subset of the text corpus into every format a
mail carries (eml bodies in three charsets and HTML, attachments, xlsx, csv, docx, pptx, pdf, zip);
the whole set is generated once per session and scanned in one `offline_scan.run` call. Each
sample must give exactly its case's label: the verdict, the set of (detector, severity) and the
records count. Known gaps in extract/ or scan/ run as strict xfails (see formats.KNOWN_GAPS).
"""

from __future__ import annotations

import io
import json
import re
import sys
import zipfile
from pathlib import Path

import pytest

from dlpgate import offline_scan

sys.path.insert(0, str(Path(__file__).parent / "corpus"))
import formats  # noqa: E402

CASES = formats.cases()
BY_NAME = {c.name: c for c in CASES}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], formats.Sample]:
    samples = formats.write_all(tmp_path_factory.mktemp("corpus_formats"))
    return {(s.case, s.fmt): s for s in samples}


@pytest.fixture(scope="session")
def scanned(corpus: dict[tuple[str, str], formats.Sample]) -> tuple[dict[str, dict[str, object]], str, int, str]:
    """path -> JSON record, the raw stdout, the exit status and stderr of one `scan --json` run."""
    out, err = io.StringIO(), io.StringIO()
    paths = [str(s.path) for s in corpus.values()]
    status = offline_scan.run(paths, as_json=True, rules_dir=None, out=out, err=err)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return {str(r["path"]): r for r in records}, out.getvalue(), status, err.getvalue()


def _params() -> list[object]:
    params: list[object] = []
    for case in CASES:
        for fmt in formats.formats_for(case):
            gap = formats.KNOWN_GAPS.get((case.name, fmt), "")
            marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
            params.append(pytest.param(case.name, fmt, marks=marks, id=f"{case.name}-{fmt}"))
    return params


def _got(record: dict[str, object]) -> formats.Label:
    findings = record["findings"]
    assert isinstance(findings, list)
    return formats.Label(str(record["verdict"]), frozenset((f["detector"], f["severity"]) for f in findings),
                         int(record["records"]))  # type: ignore[call-overload]


@pytest.mark.parametrize(("case", "fmt"), _params())
def test_case_in_format(corpus: dict[tuple[str, str], formats.Sample], scanned: tuple[dict[str, dict[str, object]], str, int, str],
                        case: str, fmt: str) -> None:
    sample = corpus[(case, fmt)]
    record = scanned[0][str(sample.path)]
    assert _got(record) == sample.label, sample.why


@pytest.mark.parametrize("name", sorted(formats.UNSCANNABLE))
def test_unscannable(corpus: dict[tuple[str, str], formats.Sample], scanned: tuple[dict[str, dict[str, object]], str, int, str],
                     name: str) -> None:
    sample = corpus[(name, "unscannable")]
    record = scanned[0][str(sample.path)]
    assert _got(record) == sample.label
    reason = formats.UNSCANNABLE[name][2]
    assert [f["sample"] for f in record["findings"]] == [reason]  # type: ignore[attr-defined, index]


def test_one_run_judges_every_sample(corpus: dict[tuple[str, str], formats.Sample],
                                     scanned: tuple[dict[str, dict[str, object]], str, int, str]) -> None:
    by_path, _raw, status, err = scanned
    assert err == ""
    assert status == 1  # some sample has a finding
    assert sorted(by_path) == sorted(str(s.path) for s in corpus.values())


def _identifiers() -> set[str]:
    """Every digit run of 11 digits or more planted in the subset, separators removed."""
    found: set[str] = set()
    for case in CASES:
        text = case.text.translate(str.maketrans("０１２３４５６７８９", "0123456789"))
        for run in re.findall(r"[0-9](?:[-‐−－ー.　 ]?[0-9])*", text):
            digits = re.sub(r"[^0-9]", "", run)
            if len(digits) >= 11 and not set(run) & {","}:
                found.add(digits)
    return found


def test_no_full_identifier_in_output(scanned: tuple[dict[str, dict[str, object]], str, int, str]) -> None:
    raw = scanned[1]
    identifiers = _identifiers()
    assert len(identifiers) >= 15  # the planted ones really were collected
    digits_only = {json.dumps(r["findings"], ensure_ascii=False) for r in scanned[0].values()}
    for ident in identifiers:
        assert ident not in raw, ident[:4] + "*" * (len(ident) - 4)
        assert ident[4:] not in raw, ident[:4] + "*" * (len(ident) - 4)
        for findings in digits_only:
            assert ident not in re.sub(r"[^0-9]", "", findings)
    samples = [f["sample"] for r in scanned[0].values() for f in r["findings"]]  # type: ignore[attr-defined]
    assert any(re.fullmatch(r"[0-9]{4}\*+", s) for s in samples)  # masked samples are there to check


# ------------------------------------------------------------------ the subset and its formats


def test_subset_covers_every_detector_and_the_hard_negatives() -> None:
    wanted = {("my_number", "high"), ("my_number", "medium"), ("my_number", "low"), ("personal_records", "high"),
              ("personal_records", "medium"), ("resident_code", "high"), ("credit_card", "high"),
              ("credit_card", "medium"), ("drivers_licence", "high"), ("label", "high"), ("label", "low")}
    assert wanted <= {f for c in CASES for f in c.label.findings}
    assert any(c.label.records >= 100 for c in CASES) and any(10 <= c.label.records < 100 for c in CASES)
    negatives = [c for c in CASES if not c.label.findings]
    assert len(negatives) >= 8 and all(c.label.verdict == "clean" for c in negatives)
    texts = "\n".join(c.text for c in negatives)
    for needle in ("注文番号", "TEL", "電話", "法人番号", "〒", "年", "商品"):
        assert needle in texts, needle
    labels = json.loads((Path(__file__).parent / "corpus" / "labels.json").read_text(encoding="utf-8"))
    for c in CASES:  # the same label as the text corpus
        assert sorted(f"{d}:{s}" for d, s in c.label.findings) == labels[c.name]


def test_every_case_in_every_format() -> None:
    for case in CASES:
        fmts = set(formats.formats_for(case))
        assert fmts >= set(formats.FORMATS) - {"xlsx_numeric"}, case.name
    numeric = [c.name for c in CASES if "xlsx_numeric" in formats.formats_for(c)]
    assert {"pos_mn_kw_0", "pos_mn_contiguous", "pos_records_mn_column", "neg_corporate_0"} <= set(numeric)


def test_formats_are_what_they_claim(corpus: dict[tuple[str, str], formats.Sample]) -> None:
    """Guard the generator: each sample really has the encoding or structure its format names."""
    case = "pos_mn_kw_0"

    def data(fmt: str) -> bytes:
        return corpus[(case, fmt)].path.read_bytes()

    assert b'charset="iso-2022-jp"' in data("eml_iso2022jp") and b"\x1b$B" in data("eml_iso2022jp")
    assert b'charset="shift_jis"' in data("eml_sjis")
    assert b"text/html" in data("eml_html") and b"text/plain" not in data("eml_html")
    assert data("csv_utf8_bom").startswith(b"\xef\xbb\xbf")
    assert "マイナンバー".encode("cp932") in data("csv_cp932")
    number = BY_NAME[case].text.split("：")[1].split("\n")[0]
    sheet = zipfile.ZipFile(io.BytesIO(data("xlsx_numeric"))).read("xl/worksheets/sheet1.xml")
    assert re.search(rb'<c r="B2"( s="[0-9]+")?( t="n")?><v>' + number.encode() + b"</v>", sheet)
    with zipfile.ZipFile(io.BytesIO(data("zip_nested"))) as outer:
        assert [i.filename for i in outer.infolist()] == ["内側.zip".encode("cp932").decode("cp437")]
    assert data("pdf").startswith(b"%PDF") and b"HeiseiKakuGo-W5" in data("pdf")
    assert b"word/document.xml" in data("docx_table") and b"ppt/slides/slide1.xml" in data("pptx_table")
