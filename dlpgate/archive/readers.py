"""Archive readers: a PATH -> the messages in it, in a fixed order, as light `Item`s.

An Item names where its bytes are (`Source`), not the bytes: the worker process that judges it
reads them (os.pread on the mbox, the file of a Maildir or .eml tree, a .msg converted), so the
parent only walks the archive and the pool's pipe carries a few dozen bytes per message.

Every reader starts at a `position` (its checkpoint: the byte offset of the next message in an
mbox, the number of entries done in a sorted listing) and each Item carries the position after
it, so `--resume` continues exactly where the last run's in-order results stopped.

Formats:
  mbox     streamed in 1 MiB reads (never loaded whole). A message starts at a `From ` line at
           the start of the file or after an empty line, or one shaped as a From_ line
           (`From sender Mon Jan  1 00:00:00 2024`); `>From ` lines (mboxrd and mboxo quoting)
           lose one `>` when the worker reads the message; a last message without a final
           newline is read as is. Anything before the first From_ line is a damaged block.
  Maildir  a folder with cur/ and new/ (tmp/ is mail being delivered: not read); sub-folders
           (`.Sent`) are read too.
  MH       a folder of numbered files (`.mh_sequences` optional), in numeric order.
  tree     any other folder: every .eml, .msg, mbox (`*.mbox`, `mbox`), Maildir, .pst inside, in
           sorted order; other files are not mail and are not read.
  .msg     an Outlook message (extract/msgfile.py).
  .pst/.ost  Outlook archives, via pffexport (Debian pff-tools) as a child process (pst.py).
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlpgate.errors import InputError

MBOX_READ = 1 << 20
_FROM_LINE = re.compile(
    rb"From \S+ +(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) +(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d")
_MH_NAME = re.compile(r"^[1-9][0-9]*$")
CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
PST_MAGIC = b"!BDN"


@dataclass(frozen=True)
class Source:
    """Where one message's bytes are: `kind` "mbox" (path, offset, length: From_ line already
    left out), "file" (an .eml or a Maildir / MH file), "msg" (an Outlook .msg file) or "bytes"
    (already in memory: a message exported from a PST)."""

    kind: str
    path: str
    offset: int = 0
    length: int = -1
    data: bytes = b""


@dataclass(frozen=True)
class Item:
    location: str  # where to find it again: "mail.mbox@1234", "Maildir/cur/1700000000.x:2,S"
    source: Source | None  # None: a damaged block, not a message (see `error`)
    size: int  # bytes of the archive this item covers (progress)
    position: int  # the reader's checkpoint after this item
    error: str = ""


@dataclass(frozen=True)
class Archive:
    path: str
    kind: str  # mbox | maildir | mh | tree | eml | msg | pst
    size: int  # total bytes, for progress

    def items(self, position: int = 0) -> Iterator[Item]:
        if self.kind == "mbox":
            return read_mbox(self.path, position)
        if self.kind == "pst":
            from .pst import read_pst

            return read_pst(self.path, position)
        return _read_listing(self.path, _listing(self.path, self.kind), position)

    def progress_at(self, position: int) -> int:
        """Bytes already covered at a checkpoint (mbox: the offset; listings: the files done)."""
        if self.kind == "mbox":
            return min(position, self.size)
        if self.kind == "pst":
            from .pst import items_in, pst_share

            return int(pst_share(self.size, items_in(self.path))(position)) if position else 0
        index, inner = divmod(position, PACK)
        entries = _listing(self.path, self.kind)
        return sum(size for _, size, _ in entries[:index]) + (inner if index < len(entries) and
                                                              entries[index][2] == "mbox" else 0)


def open_archive(path: str) -> Archive:
    """What kind of archive PATH is; InputError when it is none (or cannot be read)."""
    p = Path(path)
    try:
        if p.is_dir():
            kind = _dir_kind(p)
            return Archive(path, kind, sum(size for _, size, _ in _listing(path, kind)))
        with p.open("rb") as f:
            head = f.read(4096)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or directory") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    return Archive(path, _file_kind(head, p.name), size)


def looks_like_mbox(head: bytes, name: str) -> bool:
    """An mbox by its first line (`From sender Mon Jan  1 ...`), or by its name (`.mbox`, `.mbx`,
    `mbox`) with a From_ line anywhere in `head` (a damaged block may come first) or nothing at
    all: a text that merely begins with the word "From " is not an mbox."""
    if _FROM_LINE.match(head) is not None:
        return True
    lower = name.lower()
    if not (lower.endswith((".mbox", ".mbx")) or lower == "mbox"):
        return False
    return not head.strip() or head.startswith(b"From ") or _FROM_LINE.search(head) is not None


def _file_kind(head: bytes, name: str) -> str:
    if head.startswith(PST_MAGIC):
        return "pst"
    if head.startswith(CFB_MAGIC):
        return "msg"
    if head.startswith(b"From "):
        return "mbox"
    lower = name.lower()
    if lower.endswith((".mbox", ".mbx")) or lower == "mbox":
        return "mbox"
    if lower.endswith((".eml", ".msg")) or _looks_like_message(head):
        return "eml"
    raise InputError(f"{name}: not a mail archive (mbox, Maildir, MH, .eml, .msg or .pst)")


def _looks_like_message(head: bytes) -> bool:
    from dlpgate.extract.sniff import sniff

    return sniff(head, "") == "eml"


def _dir_kind(p: Path) -> str:
    if (p / "cur").is_dir() and (p / "new").is_dir():
        return "maildir"
    if (p / ".mh_sequences").exists():
        return "mh"
    names = [e.name for e in os.scandir(p)]
    if names and all(_MH_NAME.match(n) or n.startswith(".") for n in names) and any(_MH_NAME.match(n) for n in names):
        return "mh"
    return "tree"


# ------------------------------------------------------------------------------ listings
Entry = tuple[str, int, str]  # (path, size, kind of item: file | msg | mbox | pst)


def _listing(path: str, kind: str) -> list[Entry]:
    """Sorted, so that a resumed run sees the same order."""
    if kind == "msg":
        return [(path, os.path.getsize(path), "msg")]
    if kind == "eml":
        return [(path, os.path.getsize(path), "file")]
    if kind == "maildir":
        return _maildir(Path(path))
    if kind == "mh":
        files = [e for e in os.scandir(path) if _MH_NAME.match(e.name) and e.is_file()]
        return [(e.path, e.stat().st_size, "file") for e in sorted(files, key=lambda e: int(e.name))]
    return _tree(Path(path))


def _maildir(p: Path) -> list[Entry]:
    out: list[Entry] = []
    for sub in ("cur", "new"):
        d = p / sub
        files = sorted((e for e in os.scandir(d) if e.is_file() and not e.name.startswith(".")), key=lambda e: e.name)
        out.extend((e.path, e.stat().st_size, "file") for e in files)
    for e in sorted(os.scandir(p), key=lambda e: e.name):  # Maildir++ folders: .Sent, .Archive.2019
        if e.name.startswith(".") and e.is_dir() and (Path(e.path) / "cur").is_dir():
            out.extend(_maildir(Path(e.path)))
    return out


def _tree(p: Path) -> list[Entry]:
    out: list[Entry] = []
    for root, dirs, files in os.walk(p):
        dirs.sort()
        here = Path(root)
        if (here / "cur").is_dir() and (here / "new").is_dir():
            out.extend(_maildir(here))
            dirs[:] = []
            continue
        for name in sorted(files):
            full = here / name
            lower = name.lower()
            try:
                size = full.stat().st_size
            except OSError:
                continue
            if lower.endswith(".eml"):
                out.append((str(full), size, "file"))
            elif lower.endswith(".msg"):
                out.append((str(full), size, "msg"))
            elif lower.endswith((".pst", ".ost")):
                out.append((str(full), size, "pst"))
            elif lower.endswith((".mbox", ".mbx")) or lower == "mbox":
                out.append((str(full), size, "mbox"))
    return out


# A listing's checkpoint: entry index * PACK + the position inside that entry when it is itself an
# archive (an mbox's byte offset, a PST's item count) -- so a resumed tree continues mid-mbox too.
PACK = 1 << 44


def _read_listing(base: str, entries: list[Entry], position: int) -> Iterator[Item]:
    first, inner_start = divmod(position, PACK)
    for index in range(first, len(entries)):
        path, size, kind = entries[index]
        location = path if path == base else os.path.relpath(path, os.path.dirname(base.rstrip("/")) or ".")
        if kind in ("mbox", "pst"):
            # an archive inside a tree: its messages, each checkpointed inside this entry
            start = inner_start if index == first else 0
            inner = read_mbox(path, start) if kind == "mbox" else _pst_items(path, start)
            for item in inner:
                yield Item(location + item.location[len(path):], item.source, item.size,
                           index * PACK + item.position, item.error)
            yield Item("", None, 0, (index + 1) * PACK)  # marks the entry done (no message)
            continue
        yield Item(location, Source("msg" if kind == "msg" else "file", path), size, (index + 1) * PACK)


def _pst_items(path: str, position: int) -> Iterator[Item]:
    from .pst import read_pst

    return read_pst(path, position)


# ------------------------------------------------------------------------------ mbox
def read_mbox(path: str, position: int = 0) -> Iterator[Item]:
    """Messages of an mbox from byte `position` (a message start, or 0), one Item each."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed in finally; a generator
    except OSError as exc:
        yield Item(path, None, 0, position, f"cannot open: {exc.strerror or exc}")
        return
    try:
        yield from _mbox_items(f, path, position)
    finally:
        f.close()


def _mbox_items(f, path: str, position: int) -> Iterator[Item]:  # type: ignore[no-untyped-def]
    f.seek(position)
    buf = b""
    base = position  # file offset of buf[0]
    start = 0  # offset in buf of the current message's first byte (its From_ line)
    eof = False
    scan_from = 0
    index = _FromIndex.new()
    while True:
        # find the next From_ line after the current message's first line
        nl = buf.find(b"\n", start)
        cut = -1
        if nl >= 0:
            cut = _next_from(buf, max(nl, scan_from), index, base)
        if cut < 0 and not eof:
            scan_from = max(len(buf) - 8, start)  # the separator may straddle two reads
            chunk = f.read(max(MBOX_READ, len(buf) - start))  # doubling: a huge message is read in O(n)
            if not chunk:
                eof = True
            else:
                if start > 0:  # drop what is done
                    buf = buf[start:]
                    base += start
                    scan_from -= start
                    start = 0
                old = len(buf)
                buf += chunk
                if index is not None:
                    index.add(buf, max(old - len(_FROM_SEP) + 1, 0), base)
            continue
        end = cut if cut >= 0 else len(buf)
        if end > start:
            yield _mbox_item(path, buf, start, end, base)
        if cut < 0:
            return
        start = cut
        scan_from = cut


def _next_from(buf: bytes, pos: int, index: _FromIndex | None = None, base: int = 0) -> int:
    """Offset of the next From_ line starting after `pos`, or -1. `index`: where `\nFrom ` is in
    what was read (buf[0] at file offset `base`); without it buf is searched."""
    while True:
        i = buf.find(_FROM_SEP, pos) if index is None else index.find(base + pos) - base
        if i < 0:
            return -1
        line = i + 1
        if buf[i - 1:i] == b"\n" or (i >= 2 and buf[i - 2:i] == b"\n\r") or _FROM_LINE.match(buf, line):
            return line
        pos = line


_NOT_BLANK = re.compile(rb"[^ \t\n\r\x0b\x0c]")  # what bytes.strip() leaves


_FROM_SEP = b"\nFrom "


class _FromIndex:
    """The file offsets of every `\nFrom ` in an mbox read so far, found by hyperscan as each read
    is added: ~20 ms per 200 MB where bytes.find took ~100 (base64 has letters of the needle
    everywhere, so the search moves a few bytes at a time; issue 19: 4% of `dlpgate archive`'s
    CPU). Without hyperscan (not x86-64) the reader searches its buffer as before."""

    __slots__ = ("_db", "_hits", "_base", "_found")

    def __init__(self, db: Any) -> None:
        self._db = db
        self._hits: list[int] = []  # ascending file offsets of the "\n"
        self._base = 0
        self._found = self._hits.append

    @classmethod
    def new(cls) -> _FromIndex | None:
        global _FROM_DB
        if _FROM_DB is None:
            try:
                import hyperscan  # noqa: PLC0415 - optional dependency, imported where used

                db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
                db.compile(expressions=[re.escape(_FROM_SEP)], ids=[0], elements=1, flags=[0])
                _FROM_DB = db
            except Exception:  # no hyperscan here, or it cannot compile: search the buffer
                _FROM_DB = False
        return cls(_FROM_DB) if _FROM_DB else None

    def add(self, buf: bytes, frm: int, base: int) -> None:
        """Index buf[frm:] (buf[0] at file offset `base`); what lies before `frm` is indexed (an
        occurrence that straddles `frm` starts after it: frm is len(needle) - 1 before the new bytes)."""
        hits = self._hits
        if hits and hits[0] < base:  # the messages read already
            del hits[:bisect_left(hits, base)]
        self._base = base + frm - len(_FROM_SEP)
        with memoryview(buf) as view:
            self._db.scan(view[frm:], match_event_handler=self._match)

    def _match(self, _id: int, _frm: int, to: int, _flags: int, _ctx: object) -> int:
        self._found(self._base + to)
        return 0

    def find(self, offset: int) -> int:
        """The file offset of the first `\nFrom ` at or after `offset`, or -1."""
        hits = self._hits
        k = bisect_left(hits, offset)
        return hits[k] if k < len(hits) else -1


_FROM_DB: Any = None  # the compiled `\nFrom ` database; False: none to be had


def _mbox_item(path: str, buf: bytes, start: int, end: int, base: int) -> Item:
    """The Item for the block buf[start:end], read where it lies: copying a block out of the buffer
    (and a second time to strip it) cost the reader process more than finding the blocks."""
    offset = base + start
    position = base + end
    if _NOT_BLANK.search(buf, start, end) is None:
        return Item("", None, end - start, position)  # blank lines before the first From_ line: nothing
    if not buf.startswith(b"From ", start, end):
        return Item(f"{path}@{offset}", None, end - start, position,
                    "damaged block: bytes that are not a message (no From_ line)")
    first = buf.find(b"\n", start, end)
    body_start = first + 1 if first >= 0 else end  # in buf
    length = end - body_start
    # the empty line that separates a message from the next From_ line belongs to the format
    if buf.endswith(b"\n\n", start, end):
        length -= 1
    elif buf.endswith(b"\r\n\r\n", start, end):
        length -= 2
    if length <= 0 or not buf[body_start:body_start + 1].strip():
        return Item(f"{path}@{offset}", None, end - start, position, "damaged block: empty message")
    return Item(f"{path}@{offset}", Source("mbox", path, base + body_start, length), end - start, position)


_QUOTED_FROM = re.compile(rb"^>(>*From )", re.M)


def unquote_mbox(data: bytes) -> bytes:
    """`>From ` -> `From `, `>>From ` -> `>From ` (mboxrd; for mboxo the same is the best guess)."""
    if not has_quoted_from(data):
        return data
    return _QUOTED_FROM.sub(rb"\1", data)


_GT_HOPS = 32


def has_quoted_from(data: bytes) -> bool:
    """Whether `>From ` is in `data`, found from one `>` to the next: a message holds a few (its
    Message-ID's) and its base64 none, and memchr passes a megabyte in ~20 us where the six-byte
    search took ~0.5 ms (issue 19: ~4% of `dlpgate archive` of business mail). After 32 `>` (a
    quoted reply, HTML) the rest is searched for the six bytes as before."""
    pos = data.find(b">")
    for _ in range(_GT_HOPS):
        if pos < 0:
            return False
        if data.startswith(b"From ", pos + 1):
            return True
        pos = data.find(b">", pos + 1)
    return pos >= 0 and data.find(b">From ", pos) >= 0


def load_item(item: Item, reason: Callable[[Exception], str],
              catch: tuple[type[Exception], ...] = (Exception,)) -> tuple[bytes | None, str]:
    """(the message bytes of `item`, "") or (None, why not): the reader's note of a damaged block,
    or what `load` raised (one of `catch`) in `reason`'s words; (None, "") when the item is nothing
    at all (blank lines before an mbox's first From_ line are not damage). `dlpgate archive` and
    `dlpgate scan` of an archive both judge Items through this, each wording a failure its own way."""
    if item.source is None:
        return None, item.error
    try:
        return load(item.source), ""
    except catch as exc:
        return None, reason(exc) or type(exc).__name__


def load(source: Source) -> bytes:
    """The message bytes of `source` (in the worker process). OSError / MsgError when unreadable."""
    if source.kind == "bytes":
        return source.data
    if source.kind == "mbox":
        fd = os.open(source.path, os.O_RDONLY)
        try:
            data = os.pread(fd, source.length, source.offset)
        finally:
            os.close(fd)
        return unquote_mbox(data)
    with open(source.path, "rb") as f:
        data = f.read()
    if source.kind == "msg":
        from dlpgate.extract.msgfile import msg_to_email

        return msg_to_email(data)
    return data
