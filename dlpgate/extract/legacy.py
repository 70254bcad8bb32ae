"""Compound File (CFB/OLE2) containers: password-protected OOXML, legacy .xls/.doc/.ppt, Outlook .msg.

A password-protected xlsx/docx/pptx is a CFB holding an `EncryptedPackage` stream: `encrypted`.
Legacy .xls (BIFF) is read by python-calamine; an encrypted one is `encrypted`. Legacy .doc is read
through olefile and its piece table (worddoc.py). An Outlook .msg is rebuilt as MIME (msgfile.py)
and read as an attached message. Legacy .ppt has no reader here yet: `unsupported`, never a silent
pass. Stream names sit in the CFB directory as UTF-16LE, which is what is looked for here.
"""

from __future__ import annotations

from .budget import Budget, Unreadable
from .model import CORRUPT, ENCRYPTED, UNSUPPORTED, Part
from .spreadsheet import extract_with_calamine


def _u16(name: str) -> bytes:
    return name.encode("utf-16-le")


_ENCRYPTED_PACKAGE = _u16("EncryptedPackage")
_WORKBOOK = (_u16("Workbook"), _u16("Book\x00"))
_WORD = _u16("WordDocument")
_PPT = _u16("PowerPoint Document")
_MSG = _u16("__substg1.0_")


def extract_cfb(path: str, data: bytes, budget: Budget, depth: int = 0) -> list[Part]:
    if _MSG in data:  # first: a .msg holds its attachments' bytes, and with them their markers
        return _extract_msg(path, data, budget, depth)
    if _ENCRYPTED_PACKAGE in data:
        raise Unreadable(ENCRYPTED, "password-protected Office document")
    if any(marker in data for marker in _WORKBOOK):
        return extract_with_calamine(path, data, budget, kind="xls")
    if _WORD in data:
        from .files import text_parts
        from .worddoc import doc_text

        text = doc_text(data, budget)
        budget.charge(len(text))
        return text_parts(path, text, "doc")
    if _PPT in data:
        raise Unreadable(UNSUPPORTED, "legacy PowerPoint .ppt (no text reader)")
    raise Unreadable(UNSUPPORTED, "unknown OLE2 compound file")


def _extract_msg(path: str, data: bytes, budget: Budget, depth: int) -> list[Part]:
    """An attached Outlook .msg: its parts under `path/`, as for an attached .eml."""
    from .files import enter_container
    from .mime import walk_message
    from .msgfile import MsgError, msg_to_email

    enter_container("msg", depth, budget)
    try:
        raw = msg_to_email(data)
    except MsgError as exc:
        raise Unreadable(CORRUPT, f"Outlook .msg: {exc}") from exc
    return walk_message(raw, f"{path}/", budget, depth + 1, attachments=None)
