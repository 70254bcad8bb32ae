"""The labelled corpus rendered into every format the gateway reads (synthetic, deterministic).

    .venv/bin/python tests/corpus/formats.py DIR     # writes every sample and DIR/labels.json

A representative subset of the text corpus (generate.py: one positive per detector and severity,
the hard negatives) is rendered into each format a real mail carries: .eml bodies in UTF-8,
ISO-2022-JP, Shift_JIS and HTML, .eml with the content attached as xlsx or csv, xlsx (text cells;
and, where the case holds a 12/13-digit number, that number as a numeric cell), csv in CP932 and
UTF-8 with BOM, docx (paragraphs; a table), pptx (slide text; a table), PDF with a Japanese CID
font, a zip holding the csv (CP932 names) and a zip nested in a zip. Two unscannable samples close
the set: an AES-encrypted zip and a truncated xlsx.

A case's label (verdict against one external recipient, the set of (detector, severity), the
largest personal-records count) is the same in every format. Where a format legitimately changes
a result the exception is written in EXCEPTIONS with its reason — never silently.
Every identifier comes from generate.py's seeded generator: no real person.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "fixtures"))

import generate  # noqa: E402
import make_fixtures  # noqa: E402

Findings = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Label:
    """What `dlpgate scan --json` must report for a file sent to one external recipient."""

    verdict: str  # "clean" | "hold"
    findings: Findings  # {(detector, severity)}
    records: int  # largest personal-records table (0 if none)

    def to_json(self) -> dict[str, object]:
        return {"verdict": self.verdict, "findings": sorted(f"{d}:{s}" for d, s in self.findings),
                "records": self.records}


@dataclass(frozen=True)
class Case:
    name: str
    text: str  # as generate.py writes it
    delimiter: str  # "\t" or "," for a roster (each line a row of cells); "" for prose (a line = one cell)
    label: Label

    @property
    def rows(self) -> list[list[str]]:
        """The text as rows of cells, for the tabular formats."""
        return [line.split(self.delimiter) if self.delimiter else [line] for line in self.text.split("\n")]


@dataclass(frozen=True)
class Sample:
    case: str
    fmt: str
    path: Path
    label: Label
    why: str = ""  # reason when the label differs from the case's (an EXCEPTIONS entry)
    xfail: str = ""  # a known extraction/scan gap, reported; the test is xfail(strict=True)


# (case, records, delimiter). The findings come from labels.json (the text corpus' labels).
SUBSET: tuple[tuple[str, int, str], ...] = (
    ("pos_mn_kw_0", 0, ""),  # my_number high (keyword)
    ("pos_mn_sep_1", 0, ""),  # my_number medium (4-4-4 with hyphens)
    ("pos_mn_contiguous", 0, ""),  # my_number low
    ("pos_records_title_150", 150, "\t"),  # personal_records high (>= 100)
    ("pos_records_csv_12", 12, ","),  # personal_records medium (>= 10)
    ("pos_records_mn_column", 2, "\t"),  # my_number from a 個人番号 column + a small table
    ("pos_resident", 0, ""),
    ("pos_card_kw", 0, ""),  # credit_card high
    ("pos_card_visa", 0, ""),  # credit_card medium (4 groups of 4)
    ("pos_licence", 0, ""),
    ("pos_label_high", 0, ""),
    ("pos_label_low", 0, ""),
    ("neg_phone", 0, ""),
    ("neg_label_0", 0, ""),  # 注文番号
    ("neg_label_7", 0, ""),  # 電話
    ("neg_postal_dates", 0, ""),
    ("neg_invalid_check_0", 0, ""),
    ("neg_corporate_0", 0, ""),  # 13-digit 法人番号
    ("neg_jan_0", 0, ""),  # 13-digit JAN
    ("neg_card_luhn_fail", 0, ""),
    ("neg_amounts", 0, ""),
    ("neg_4_4_4_4", 0, ""),
    ("neg_header_one_field", 0, "\t"),
)


def _verdict(findings: Findings, records: int) -> str:
    """The shipped policy for an external recipient: hold at medium and above, or >= 100 records."""
    return "hold" if records >= 100 or any(s in ("medium", "high") for _, s in findings) else "clean"


def cases() -> list[Case]:
    built = generate.build()
    out = []
    for name, records, delimiter in SUBSET:
        text, labels = built[name]
        findings = frozenset(tuple(lab.split(":")) for lab in labels)
        out.append(Case(name, text, delimiter, Label(_verdict(findings, records), findings, records)))  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------------------------------- renderers

NEUTRAL_BODY = "お世話になっております。資料を添付にてお送りします。"
SUBJECT = "資料送付の件"


def _eml(body: str, charset: str = "utf-8", subtype: str = "plain",
         attachment: tuple[str, bytes] | None = None) -> bytes:
    msg = EmailMessage(policy=default_policy)
    msg["From"] = "職員 <staff@example.jp>"
    msg["To"] = "相手 <someone@example.com>"
    msg["Subject"] = SUBJECT
    msg["Date"] = "Thu, 12 Sep 2024 10:00:00 +0900"
    msg["Message-ID"] = "<corpus@example.jp>"
    msg.set_content(body, subtype=subtype, charset=charset)
    if attachment:
        name, data = attachment
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def _html(case: Case) -> str:
    """Prose as paragraphs; a roster as a <table> (how a mail client pastes one)."""
    if case.delimiter:
        body = "<table>" + "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in case.rows) + "</table>"
    else:
        body = "".join(f"<p>{html.escape(line)}</p>" for line in case.text.split("\n"))
    return f"<html><head><meta charset=\"utf-8\"></head><body>{body}</body></html>"


def _csv(case: Case, encoding: str, bom: bool = False) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(case.rows)
    data = buf.getvalue().encode(encoding)
    return b"\xef\xbb\xbf" + data if bom else data


_NUMERIC = re.compile(r"(?<![0-9])([1-9][0-9]{11,12})(?![0-9])")


def _numeric_rows(case: Case) -> list[list[object]]:
    """Cells where a 12/13-digit number (no leading zero, as Excel keeps it) becomes a numeric cell
    between the text around it."""
    out: list[list[object]] = []
    for row in case.rows:
        cells: list[object] = []
        for cell in row:
            pieces = _NUMERIC.split(cell)
            cells.extend(int(p) if i % 2 else p.strip() for i, p in enumerate(pieces) if i % 2 or p.strip())
        out.append(cells)
    return out


def has_numeric(case: Case) -> bool:
    return any(_NUMERIC.search(line) for line in case.text.split("\n"))


def _xlsx(rows: list[list[object]]) -> bytes:
    return make_fixtures.xlsx_bytes({"Sheet1": [tuple(r) for r in rows]})


def _pdf(case: Case) -> bytes:
    """Lines drawn with the CID font, 50 to a page; a roster's cells drawn in columns as a table."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    if "HeiseiKakuGo-W5" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont("HeiseiKakuGo-W5"))
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4, invariant=1)
    rows = case.rows
    for start in range(0, len(rows), 50):
        c.setFont("HeiseiKakuGo-W5", 9)
        y = 800
        for row in rows[start:start + 50]:
            for i, cell in enumerate(row):
                c.drawString(30 + 110 * i if len(row) > 1 else 30, y, cell)
            y -= 14
        c.showPage()
    c.save()
    return buf.getvalue()


def _zip(members: dict[str, bytes], cp932_names: bool = True) -> bytes:
    return make_fixtures.zip_bytes(members, cp932_names=cp932_names)


Renderer = Callable[[Case], tuple[str, bytes]]

FORMATS: dict[str, Renderer] = {
    "txt": lambda c: ("本文.txt", (c.text + "\n").encode("utf-8")),
    "eml_utf8": lambda c: ("mail.eml", _eml(c.text)),
    "eml_iso2022jp": lambda c: ("mail.eml", _eml(c.text, "iso-2022-jp")),
    "eml_sjis": lambda c: ("mail.eml", _eml(c.text, "shift_jis")),
    "eml_html": lambda c: ("mail.eml", _eml(_html(c), subtype="html")),
    "eml_attach_xlsx": lambda c: ("mail.eml", _eml(NEUTRAL_BODY, attachment=("資料.xlsx", _xlsx(c.rows)))),  # type: ignore[arg-type]
    "eml_attach_csv": lambda c: ("mail.eml", _eml(NEUTRAL_BODY, attachment=("資料.csv", _csv(c, "cp932")))),
    "xlsx": lambda c: ("資料.xlsx", _xlsx(c.rows)),  # type: ignore[arg-type]
    "xlsx_numeric": lambda c: ("資料.xlsx", _xlsx(_numeric_rows(c))),
    "csv_cp932": lambda c: ("資料.csv", _csv(c, "cp932")),
    "csv_utf8_bom": lambda c: ("資料.csv", _csv(c, "utf-8", bom=True)),
    "docx_paragraphs": lambda c: ("資料.docx", make_fixtures.docx_bytes(c.text.split("\n"))),
    "docx_table": lambda c: ("資料.docx", _docx_table(_square(c.rows))),
    "pptx_text": lambda c: ("資料.pptx", make_fixtures.pptx_bytes([c.text])),
    "pptx_table": lambda c: ("資料.pptx", make_fixtures.pptx_bytes([""], _square(c.rows))),
    "pdf": lambda c: ("資料.pdf", _pdf(c)),
    "zip_csv": lambda c: ("送付.zip", _zip({"名簿/資料.csv": _csv(c, "cp932")})),
    "zip_nested": lambda c: ("送付.zip", _zip({"内側.zip": _zip({"資料.csv": _csv(c, "cp932")})})),
}


def _docx_table(rows: list[tuple[str, ...]]) -> bytes:
    """A docx holding one table (row by row: make_fixtures' cell(r, c) is quadratic on 150 rows)."""
    import docx

    d = docx.Document()
    t = d.add_table(rows=0, cols=len(rows[0]))
    for row in rows:
        for cell, value in zip(t.add_row().cells, row, strict=True):
            cell.text = value
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def _square(rows: list[list[str]]) -> list[tuple[str, ...]]:
    width = max(len(r) for r in rows)
    return [tuple(r) + ("",) * (width - len(r)) for r in rows]


def formats_for(case: Case) -> list[str]:
    """Every format; xlsx_numeric only where the case holds a number to store as one."""
    return [f for f in FORMATS if f != "xlsx_numeric" or has_numeric(case)]


# (case, format) -> (label in that format, why). A legitimate change of result, documented.
EXCEPTIONS: dict[tuple[str, str], tuple[Label, str]] = {}

# (case, format) -> reason: a result the format loses that it should not (a gap in extract/ or
# scan/), reported rather than hidden; the test runs it as xfail(strict=True).
KNOWN_GAPS: dict[tuple[str, str], str] = {}

# Unscannable samples: (name, file name, bytes builder, label).
_UNSCANNABLE_LABEL = Label("hold", frozenset({("unscannable", "medium")}), 0)


def _encrypted_zip() -> bytes:
    rows = [["氏名", "住所"], ["試験 花子", "架空県架空市1-1"]]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    return make_fixtures.encrypted_zip({"資料.csv": buf.getvalue().encode("cp932")})


def _corrupt_xlsx() -> bytes:
    whole = _xlsx([["氏名", "住所"], ["試験 花子", "架空県架空市1-1"]])
    return whole[: len(whole) // 2]  # truncated: no central directory


UNSCANNABLE: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "encrypted_zip": ("暗号化.zip", _encrypted_zip, "encrypted"),
    "corrupt_xlsx": ("壊れた.xlsx", _corrupt_xlsx, "corrupt"),
}


def write_all(out: Path) -> list[Sample]:
    """Render every case in every format (and the unscannable samples) under `out`."""
    samples: list[Sample] = []
    for case in cases():
        for fmt in formats_for(case):
            filename, data = FORMATS[fmt](case)
            d = out / case.name / fmt
            d.mkdir(parents=True, exist_ok=True)
            path = d / filename
            path.write_bytes(data)
            label, why = EXCEPTIONS.get((case.name, fmt), (case.label, ""))
            samples.append(Sample(case.name, fmt, path, label, why, KNOWN_GAPS.get((case.name, fmt), "")))
    for name, (filename, build, _reason) in UNSCANNABLE.items():
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        (d / filename).write_bytes(build())
        samples.append(Sample(name, "unscannable", d / filename, _UNSCANNABLE_LABEL))
    return samples


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus-formats")
    samples = write_all(out)
    labels = {f"{s.case}/{s.fmt}": {**s.label.to_json(), "path": str(s.path.relative_to(out)), "why": s.why,
                                    "known_gap": s.xfail} for s in samples}
    (out / "labels.json").write_text(json.dumps(labels, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(samples)} samples in {out}")


if __name__ == "__main__":
    main()
