"""gzip, bzip2, xz, tar and 7z: each member inflated within the budget, then read by its own bytes like
a zip member.

gzip (`.gz`, `.csv.gz`) holds one file: its name is the FNAME header or the outer name without `.gz`.
bzip2 and xz (`.csv.bz2`, `.tar.xz`, what Linux tools and 7-Zip write) hold one file named by the
outer name without its suffix (the formats store no name); a `.tar.xz` is then read as a tar.
7z goes through py7zr; an encrypted 7z (a password on the data or on the header) is `encrypted`, as
an encrypted zip is. Every inflated byte is charged to the message's budget as it is produced, so a
bomb stops at the limit instead of filling memory.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from typing import Any

from .budget import Budget, Unreadable, corrupt
from .model import ENCRYPTED, LIMIT

CHUNK = 1 << 20


def gunzip(path: str, data: bytes, budget: Budget) -> tuple[str, bytes]:
    """(inner file name, its bytes) of a gzip file; concatenated members are joined, as gzip does."""
    inner = path.rsplit("/", 1)[-1]
    inner = inner[:-3] if inner.lower().endswith(".gz") else inner[:-4] if inner.lower().endswith(".tgz") else inner
    name = _fname(data) or inner or "data"
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = rest
        try:
            while pending:
                chunk = d.decompress(pending, CHUNK)
                budget.step(len(chunk))
                out += chunk
                pending = d.unconsumed_tail
            while not d.eof:
                chunk = d.decompress(b"", CHUNK)
                if not chunk:
                    break
                budget.step(len(chunk))
                out += chunk
        except zlib.error:
            raise corrupt("damaged gzip data") from None
        if not d.eof:
            raise corrupt("truncated gzip data")
        rest = d.unused_data.lstrip(b"\0")
    return name, bytes(out)


_STREAM_SUFFIXES = {"bzip2": ((".bz2", ""), (".tbz2", ".tar"), (".tbz", ".tar")),
                    "xz": ((".xz", ""), (".txz", ".tar"))}


def unstream(kind: str, path: str, data: bytes, budget: Budget) -> tuple[str, bytes]:
    """(inner file name, its bytes) of a bzip2 or xz file; concatenated streams are joined, as
    bunzip2 and xz do. Output is produced a chunk at a time and charged as it comes, so a bomb
    stops at the budget's limit."""
    inner = path.rsplit("/", 1)[-1]
    for suffix, replacement in _STREAM_SUFFIXES[kind]:
        if inner.lower().endswith(suffix):
            inner = inner[: -len(suffix)] + replacement
            break
    make = bz2.BZ2Decompressor if kind == "bzip2" else lzma.LZMADecompressor
    out = bytearray()
    rest = data
    while rest:
        d = make()
        try:
            chunk = d.decompress(rest, CHUNK)
            while True:
                budget.step(len(chunk))
                out += chunk
                if d.eof or d.needs_input:
                    break
                chunk = d.decompress(b"", CHUNK)
        except (OSError, EOFError, ValueError, lzma.LZMAError):
            raise corrupt(f"damaged {kind} data") from None
        if not d.eof:
            raise corrupt(f"truncated {kind} data")
        rest = d.unused_data.lstrip(b"\0")  # xz stream padding is NUL bytes
    return inner or "data", bytes(out)


def _fname(data: bytes) -> str:
    """The FNAME field of a gzip header (ISO-8859-1 by the RFC; CP932 on Japanese Windows tools)."""
    if len(data) < 10 or not data[3] & 0x08:
        return ""
    pos = 10
    if data[3] & 0x04:  # FEXTRA
        if len(data) < 12:
            return ""
        pos += 2 + int.from_bytes(data[10:12], "little")
    end = data.find(b"\0", pos, pos + 1024)
    if end < 0:
        return ""
    raw = data[pos:end]
    for enc in ("utf-8", "cp932", "latin-1"):
        try:
            return raw.decode(enc).replace("\\", "/").rsplit("/", 1)[-1]
        except UnicodeDecodeError:
            continue
    return ""


class _Sink(io.RawIOBase):
    """One 7z member's bytes, charged to the budget as py7zr writes them."""

    def __init__(self, budget: Budget) -> None:
        self.buf = bytearray()
        self.budget = budget

    def write(self, s: Any) -> int:
        self.budget.step(len(s))
        self.buf += s
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return len(self.buf)

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return len(self.buf)


def sevenzip_members(data: bytes, budget: Budget) -> list[tuple[str, bytes]]:
    """(name, bytes) of every file in a 7z archive."""
    try:
        import py7zr
        from py7zr.io import WriterFactory
    except ImportError:  # pragma: no cover - py7zr is a dependency
        raise corrupt("no 7z reader installed") from None

    sinks: dict[str, _Sink] = {}

    class Factory(WriterFactory):
        def create(self, filename: str) -> Any:
            sink = sinks[filename] = _Sink(budget)
            return sink

    try:
        with py7zr.SevenZipFile(io.BytesIO(data)) as z:
            if z.needs_password():
                raise Unreadable(ENCRYPTED, "password-protected 7z archive")
            infos = [i for i in z.list() if not i.is_directory]
            declared = sum(int(i.uncompressed or 0) for i in infos)
            if declared > budget.limits.max_total_bytes - budget.bytes_used:
                raise Unreadable(LIMIT, f"7z inflates to {declared} bytes, over the extracted-bytes limit")
            if len(infos) > budget.limits.max_zip_members:
                raise Unreadable(LIMIT, f"more than {budget.limits.max_zip_members} 7z members")
            z.extract(factory=Factory())
    except Unreadable:
        raise
    except py7zr.exceptions.PasswordRequired:
        raise Unreadable(ENCRYPTED, "password-protected 7z archive") from None
    except Exception as exc:  # py7zr's errors on damaged input: corrupt, never a crash
        raise corrupt(f"unreadable 7z archive ({type(exc).__name__})") from None
    return [(name, bytes(s.buf)) for name, s in sinks.items()]


def tar_members(data: bytes, budget: Budget) -> list[tuple[str, bytes]]:
    """(name, bytes) of every regular file in a tar (the inside of a .tar.gz); links and devices skipped."""
    import tarfile

    out: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for info in tf:
                if not info.isfile():
                    continue
                if len(out) >= budget.limits.max_zip_members:
                    raise Unreadable(LIMIT, f"more than {budget.limits.max_zip_members} tar members")
                budget.step(info.size)  # the tar's own bytes: what is charged is what is read
                fh = tf.extractfile(info)
                if fh is None:
                    continue
                out.append((info.name.lstrip("/") or "member", fh.read(info.size)))
    except Unreadable:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise corrupt(f"unreadable tar archive ({type(exc).__name__})") from None
    return out
