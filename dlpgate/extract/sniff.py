"""What a file is, from its bytes: never from its name or its Content-Type (a `.dat` that is a zip
is a zip; an `application/octet-stream` xlsx is an xlsx). The name only breaks ties between text
formats (csv vs plain text), where the bytes cannot.
"""

from __future__ import annotations

import io
import re
import zipfile

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
TNEF_MAGIC = b"\x78\x9f\x3e\x22"  # winmail.dat (application/ms-tnef), signature 0x223E9F78 little-endian
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_OTHER_ARCHIVES = {b"\x1f\x8b": "gzip", b"7z\xbc\xaf\x27\x1c": "7z", b"Rar!\x1a\x07": "rar",
                   b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"MSCF": "cab", b"LZH": "lzh"}
_HEADER_LINE = re.compile(
    rb"(?im)^(received|return-path|from|to|subject|date|message-id|mime-version|content-type|x-[\w-]+|"
    rb"delivered-to|reply-to|cc|dkim-signature|authentication-results):[ \t]")
# The C0 controls text does not have (tab, line ends, form feed and the ISO-2022-JP shifts are text's)
_CONTROLS = bytes(b for b in range(0x20) if b not in (0x09, 0x0A, 0x0D, 0x0C, 0x1B, 0x0E, 0x0F))
_HTML_START = re.compile(rb"^\s*(<!doctype\s+html|<html|<head|<body|<meta|<table|<div|<p>)", re.I)


def sniff(data: bytes, name: str = "") -> str:
    """One of: xlsx docx pptx ods zip pdf cfb tnef image archive eml html csv text binary empty."""
    if not data:
        return "empty"
    head = data[:8]
    if head.startswith(ZIP_MAGIC):
        return _zip_kind(data)
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if head == CFB_MAGIC:
        return "cfb"
    if head.startswith(TNEF_MAGIC):
        return "tnef"
    if head.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return "image"
    for magic, kind in _OTHER_ARCHIVES.items():
        if head.startswith(magic) and (kind != "bzip2" or _is_bzip2(data)):
            return "archive"
    if data[257:262] == b"ustar":  # a tar file (often the inside of a .tar.gz)
        return "archive"
    if not _looks_textual(data[:8192]):
        return "binary"
    sample = data[:4096]
    if sample.startswith(b"\xef\xbb\xbf"):
        sample = sample[3:]
    if _looks_like_message(sample):
        return "eml"
    if _HTML_START.match(sample):
        return "html"
    lower = name.lower()
    if lower.endswith((".csv", ".tsv")) or _looks_delimited(sample):
        return "csv"
    return "text"


def _is_bzip2(data: bytes) -> bool:
    """`BZh`, a block size digit, then a block's or the end-of-stream's 48-bit magic: a text that
    happens to start with "BZh" stays text."""
    return len(data) >= 10 and data[3:4] in b"123456789" and data[4:10] in (b"1AY&SY", b"\x17rE8P\x90")


def archive_kind(data: bytes) -> str:
    for magic, kind in _OTHER_ARCHIVES.items():
        if data.startswith(magic) and (kind != "bzip2" or _is_bzip2(data)):
            return kind
    if data[257:262] == b"ustar":
        return "tar"
    return "archive"


def _zip_kind(data: bytes) -> str:
    try:
        names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    except Exception:  # a damaged zip is still a zip: the zip reader reports it as corrupt
        return "zip"
    if "xl/workbook.xml" in names or "xl/workbook.bin" in names:
        return "xlsx"
    if "word/document.xml" in names:
        return "docx"
    if "ppt/presentation.xml" in names:
        return "pptx"
    if "mimetype" in names and "content.xml" in names:
        return "ods"
    return "zip"


def _looks_textual(sample: bytes) -> bool:
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True  # UTF-16 with BOM
    if b"\x00" in sample:
        from .textdecode import utf16_without_bom

        return utf16_without_bom(sample) is not None
    controls = len(sample) - len(sample.translate(None, _CONTROLS))  # counted in C: 175 -> 2 us per 8 KiB
    return controls <= len(sample) // 100


def _looks_like_message(sample: bytes) -> bool:
    head = sample.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    return len(_HEADER_LINE.findall(head[:4096])) >= 2 and head[:1] not in (b" ", b"\t")


def _looks_delimited(sample: bytes) -> bool:
    """At least three lines, most with the same (non-zero) count of tabs or commas."""
    lines = [ln for ln in sample.splitlines()[:20] if ln.strip()]
    if len(lines) > 1 and len(sample) == 4096:
        lines = lines[:-1]  # the last line may be cut
    if len(lines) < 3:
        return False
    for sep in (b"\t", b","):
        counts = [ln.count(sep) for ln in lines]
        common = max(set(counts), key=counts.count)
        if common > 0 and counts.count(common) >= 0.8 * len(counts):
            return True
    return False
