"""Reading members of a zip container (plain zip or OOXML) within the limits.

Every member read goes through here, so encryption, compression ratio (zip bombs), and the
extracted-bytes total are checked in one place. zipfile never returns more than a member's declared
size, and the ratio is checked on the declared sizes before a byte is inflated, so a member that
lies about its size cannot inflate past the limits either.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

from .budget import Budget, Unreadable, corrupt
from .model import ENCRYPTED, LIMIT, UNSUPPORTED

READ_CHUNK = 1024 * 1024


def open_zip(data: bytes, what: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise corrupt(f"unreadable zip container ({type(exc).__name__})") from None


def member_name(info: zipfile.ZipInfo) -> str:
    """The member's name as the sender saw it: names without the UTF-8 flag are CP932 on Japanese
    Windows (zipfile decoded them as CP437; undo that and try CP932)."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            return name.encode("cp437").decode("cp932")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return name
    return name


def check_member(info: zipfile.ZipInfo, budget: Budget, charge: bool = True) -> None:
    """Refuse a member before inflating it: encrypted, unknown method, over the ratio limit, or larger
    than what is left of the extracted-bytes total (`charge`) or than the whole total (container
    internals such as a sheet's XML, which count by the text they yield rather than their raw size)."""
    limits = budget.limits
    if info.flag_bits & 0x1:
        raise Unreadable(ENCRYPTED, "encrypted zip member")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        raise Unreadable(UNSUPPORTED, f"zip compression method {info.compress_type}")
    if info.file_size > limits.ratio_min_bytes:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_compression_ratio:
            raise Unreadable(LIMIT, f"compression ratio {ratio:.0f}:1 over {limits.max_compression_ratio:g}:1")
    if (budget.bytes_used if charge else 0) + info.file_size > limits.max_total_bytes:
        if charge:
            budget.exhausted = True
        raise Unreadable(LIMIT, f"over the extracted-bytes limit of {limits.max_total_bytes} bytes")


def iter_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget, charge: bool = True) -> Iterator[bytes]:
    """The member's bytes in chunks, each (if `charge`) charged to the budget, then a clock check."""
    check_member(info, budget, charge)
    try:
        with zf.open(info) as f:
            while chunk := f.read(READ_CHUNK):
                budget.step(len(chunk) if charge else 0)
                yield chunk
    except Unreadable:
        raise
    except Exception as exc:  # inflate, CRC, bz2/lzma errors vary by codec: all mean a damaged member
        raise corrupt(f"damaged zip member ({type(exc).__name__})") from None


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget, charge: bool = True) -> bytes:
    return b"".join(iter_member(zf, info, budget, charge))


class MemberStream(io.RawIOBase):
    """A read()-able view over iter_member, for parsers that pull (expat feeding, csv)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        return next(self._chunks, b"")

    def readable(self) -> bool:
        return True
