"""Values that flow out of extraction into the scanner and the send log.

`extract/` knows nothing of rules: it only says what text and tables each part holds,
or why a part could not be read (`unscannable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Reasons a part could not be read. The scanner turns each into an `unscannable` finding.
ENCRYPTED = "encrypted"
CORRUPT = "corrupt"
LIMIT = "limit"  # over a size/depth/count/ratio/time/pages limit
UNSUPPORTED = "unsupported"  # a format we cannot read (e.g. legacy .doc without a library)


@dataclass(frozen=True)
class Table:
    """Rows of cells from one sheet / CSV / docx, pptx or HTML table, in reading order."""

    name: str  # part path, e.g. "名簿.xlsx/Sheet1" or "body.html/table1"
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Part:
    """One readable unit: a body part or one file (or sheet) inside an attachment."""

    path: str  # "body", "body.html", "名簿.xlsx/Sheet1", "report.zip/data/a.csv"
    text: str = ""  # all text of the part (table cells included, tab/newline separated)
    tables: tuple[Table, ...] = ()
    unscannable: str | None = None  # one of ENCRYPTED, CORRUPT, LIMIT, UNSUPPORTED
    detail: str = ""  # human reason for unscannable ("zip nesting depth > 5"); never content
    kind: str = ""  # sniffed format of the file the part came from ("xlsx", "pdf", "text", "image"...)


@dataclass(frozen=True)
class Attachment:
    """What the send log keeps about an attachment: never its content."""

    filename: str
    content_type: str  # sniffed type, e.g. "xlsx", "zip", "pdf", "text"
    size: int
    sha256: str


@dataclass(frozen=True)
class ExtractLimits:
    max_total_bytes: int = 200 * 1024 * 1024  # extracted bytes per message
    max_zip_depth: int = 5
    max_zip_members: int = 10_000
    max_compression_ratio: float = 100.0  # only checked on members larger than ratio_min_bytes
    ratio_min_bytes: int = 1024 * 1024
    part_seconds: float = 30.0  # wall-clock budget per attachment
    max_pdf_pages: int = 500
    max_parts: int = 1_000  # MIME parts per message


@dataclass(frozen=True)
class Extraction:
    """Everything extracted from one message (or one file)."""

    parts: tuple[Part, ...]
    attachments: tuple[Attachment, ...] = ()
    subject: str = ""  # RFC 2047-decoded
    header_from: str = ""
    header_to: tuple[str, ...] = ()  # addresses in To (decoded, addr-spec only)
    header_cc: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
