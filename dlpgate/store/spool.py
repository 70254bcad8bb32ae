"""Spool files and segments: the message bytes beside the database of the embedded engine.

Each accepted message is either its own file (`write_spool_file`) or a span of an append-only
segment file (`spool_span`, "seg/<name>@<offset>+<length>"); erasure punches holes in segments
(`erase_spans`). Kept apart from the SQL so the PostgreSQL engine, which stores bytes in the
database, can still read and write the same spool files when it stages a message.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_MADE_DIRS: set[str] = set()  # spool subdirectories known to exist (saves a mkdir per message)
_UNSYNCED: dict[str, int] = {}  # spool files written with sync=False (absolute path) -> still-open fd
_UNSYNCED_LOCK = threading.Lock()


def spool_shard(msg_id: str) -> str:
    """The spool subdirectory of a message: two hex digits of its arrival time in units of 256 ms
    (256 directories, reused every 65 s). Messages committed together arrived together, so a
    group commit usually fsyncs one directory, not one per message as a random shard did."""
    return msg_id[7:9] if len(msg_id) >= 11 else msg_id[-2:]


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages now, without waiting (Linux)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, ctypes.c_int64(0), ctypes.c_int64(0), 2)  # SYNC_FILE_RANGE_WRITE


def _libc_function(name: str, *argtypes: Any) -> Any:
    """A Linux system call wrapper from libc (returns int), or None where there is none."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _libc_function("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
_fallocate = _libc_function("fallocate", ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


def erase_spans(path: str, spans: Sequence[tuple[int, int]]) -> None:
    """Destroy the bytes of messages inside a segment that other messages still need: the blocks
    are given back (a punched hole reads as zeros) or, where the file system cannot punch, zeros
    are written over them; then fsync. As final as deleting a file of their own."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for off, n in spans:
            if n <= 0:
                continue
            if _fallocate is None or _fallocate(fd, _PUNCH_HOLE, off, n) != 0:
                zeros = bytes(min(n, 1 << 20))
                done = 0
                while done < n:
                    done += os.pwrite(fd, zeros[:n - done], off + done)
        os.fsync(fd)
    finally:
        os.close(fd)

# Small messages share append-only spool segments: one file create and one fsync (one disk cache
# flush) per group commit instead of one per message. A segment takes appends for at most this
# long or this many bytes. `segments` counts the rows that name each one: retention deletes it
# when the count is back to 0 and erases a purged message's span in one still needed; at start-up
# a segment no committed row names (an append whose commit never happened) is removed.
SEGMENT_MAX_BYTES = 8 * 1024 * 1024
SEGMENT_MAX_AGE = 30.0


def spool_span(rel: str) -> tuple[str, int, int] | None:
    """(segment file, offset, length) of a message kept in a spool segment, written
    `spool/ab/<segment>.seg#<offset>+<length>`; None for a message with a file of its own."""
    path, sep, span = rel.partition("#")
    if not sep:
        return None
    off, _, n = span.partition("+")
    return path, int(off), int(n)


def spans_by_segment(refs: Iterable[str]) -> dict[str, list[tuple[int, int]]]:
    """The (offset, length) spans among `spool` references, by segment file; files of their own
    are left out."""
    out: dict[str, list[tuple[int, int]]] = {}
    for ref in refs:
        span = spool_span(ref)
        if span is not None:
            out.setdefault(span[0], []).append(span[1:])
    return out


def _pread_exact(path: str, off: int, n: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        got = 0
        while got < n:
            b = os.pread(fd, n - got, off + got)
            if not b:
                raise OSError(f"spool segment {os.path.basename(path)} ends before the message does")
            parts.append(b)
            got += len(b)
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_spool_bytes(root: str | os.PathLike[str], rel: str) -> bytes:
    """The bytes of a message given its `spool` column (a file, or a span of a segment)."""
    span = spool_span(rel)
    if span is None:
        with open(os.path.join(root, rel), "rb") as f:
            return f.read()
    path, off, n = span
    return _pread_exact(os.path.join(root, path), off, n)


def _create_spool_file(root: str, name: str, suffix: str) -> tuple[str, str, int]:
    """Create `spool/<shard>/<name><suffix>` (mode 0600, must not exist): (relative path, path, fd)."""
    # strings, not pathlib: on the accept path pathlib's joins and hashes cost more than the write
    rel_dir = "spool/" + spool_shard(name)
    sub = os.path.join(root, rel_dir)
    if sub not in _MADE_DIRS:
        os.makedirs(sub, mode=0o700, exist_ok=True)
        _MADE_DIRS.add(sub)
    path = os.path.join(sub, name + suffix)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:  # the directory went away under us (cleanup, restore): make it again
        _MADE_DIRS.discard(sub)
        os.makedirs(sub, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return f"{rel_dir}/{name}{suffix}", path, fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_spool_file(root: Path, msg_id: str, data: bytes, *, sync: bool = True) -> str:
    """Write a spool file under `root` durably (fsync file and directory, mode 0600).

    A free function so that code holding only the store's root (the notices built on the accept
    path, before the message's row is committed) writes the same layout as `Store.write_spool`.
    Returns the path relative to `root`.
    """
    rel, path, fd = _create_spool_file(str(root), msg_id, ".eml")
    sub = os.path.dirname(path)
    try:
        _write_all(fd, data)
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    if sync:
        os.close(fd)
        _fsync_path(Path(sub))
    else:  # kept open for the commit's fsync: one open() per message instead of two
        with _UNSYNCED_LOCK:
            _UNSYNCED[path] = fd
    return rel


def forget_unsynced(path: Path) -> None:
    """Close the fd kept for a spool file that will not be committed (judging failed)."""
    with _UNSYNCED_LOCK:
        fd = _UNSYNCED.pop(str(path), None)
    if fd is not None:
        os.close(fd)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
