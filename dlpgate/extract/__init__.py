"""Content extraction: one message (or one file) -> the text and tables the scanner reads.

    extract_message(raw, limits) -> Extraction    every MIME part and attachment, with part paths
    extract_file(name, data, limits) -> Extraction one attachment-like file (`dlpgate scan PATH`)

Neither ever raises on bad input: whatever cannot be read becomes a Part with `unscannable` set
(encrypted / corrupt / limit / unsupported) and a `detail`. Run them in worker processes: the C
parsers (pypdfium2, calamine) read untrusted files, and each part has a wall-clock budget checked
between steps (see budget.py; pdf.py for the pdfminer child process).
"""

from __future__ import annotations

import hashlib

from .budget import Budget
from .model import (
    CORRUPT,
    ENCRYPTED,
    LIMIT,
    UNSUPPORTED,
    Attachment,
    Extraction,
    ExtractLimits,
    Part,
    Table,
)

DEFAULT_LIMITS = ExtractLimits()  # frozen: safe to share as the default argument

__all__ = [
    "CORRUPT", "DEFAULT_LIMITS", "ENCRYPTED", "LIMIT", "UNSUPPORTED", "Attachment", "ExtractLimits", "Extraction", "Part", "Table",
    "extract_file", "extract_message",
]


def extract_message(raw: bytes, limits: ExtractLimits = DEFAULT_LIMITS) -> Extraction:
    """Every part of an RFC 5322 message. Never raises."""
    from .mime import extract_message as _extract

    try:
        return _extract(raw, Budget(limits))
    except Exception as exc:  # last line of defence: a reader bug must not lose the message's verdict
        return Extraction(parts=(Part(path="message", kind="eml", unscannable=CORRUPT,
                                      detail=f"extraction failed ({type(exc).__name__})"),))


def extract_file(name: str, data: bytes, limits: ExtractLimits = DEFAULT_LIMITS) -> Extraction:
    """One file (an attachment saved to disk, an .eml, a zip...), its parts under `name`. Never raises."""
    from .files import extract_blob
    from .sniff import sniff

    name = name.replace("\\", "/").rsplit("/", 1)[-1] or "file"
    try:
        kind = sniff(data, name)
        parts = extract_blob(name, data, Budget(limits), 0, kind)
    except Exception as exc:
        kind = "unknown"
        parts = [Part(path=name, kind=kind, unscannable=CORRUPT, detail=f"extraction failed ({type(exc).__name__})")]
    attachment = Attachment(filename=name, content_type=kind, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    return Extraction(parts=tuple(parts), attachments=(attachment,))
