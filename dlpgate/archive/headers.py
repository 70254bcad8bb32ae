"""The few header fields the archive report needs, read from the header block alone.

`email`'s feed parser costs about half a millisecond for a header block, and extraction parses
the message again anyway; the report needs only From, To, Cc, Bcc, Date, Message-ID and Subject.
They are cut out here (unfolded, raw), and the addresses go through `email.utils.getaddresses`
via the extraction's own memoised helper, so senders and recipients that repeat all day cost a
dictionary look-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dlpgate.extract.mime import _addr_specs, decode_words, fix_header, header_end

_WANTED = frozenset(("from", "to", "cc", "bcc", "date", "message-id", "subject"))
_FOLD = re.compile(r"\r?\n(?=[ \t])")
MAX_HEADER_BYTES = 1 << 20  # a message without an empty line: its first MiB is taken as the header block


@dataclass(frozen=True)
class Headers:
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    sender: str
    date: str
    message_id: str
    subject: str
    fields: int  # how many header fields the block holds (0: not a message)


def read_headers(raw: bytes) -> Headers:
    end = header_end(raw)
    block = raw[:end] if end >= 0 else raw[:MAX_HEADER_BYTES]
    text = _FOLD.sub("", block.decode("utf-8", "surrogateescape"))
    found: dict[str, list[str]] = {}
    fields = 0
    for line in text.splitlines():
        if not line.strip():
            break
        name, sep, value = line.partition(":")
        if not sep or not name or name[0] in " \t" or not _is_field_name(name):
            if fields == 0:
                return Headers((), (), (), "", "", "", "", 0)
            break
        fields += 1
        key = name.lower()
        if key in _WANTED:
            found.setdefault(key, []).append(value.strip())

    def addrs(key: str) -> tuple[str, ...]:
        out: list[str] = []
        for value in found.get(key, ()):
            try:
                out.extend(_addr_specs(value))
            except Exception:
                continue
        return tuple(out)

    sender = addrs("from")
    subject = ""
    if "subject" in found:
        try:
            subject = fix_header(decode_words(found["subject"][0]))
        except Exception:
            subject = ""
    return Headers(addrs("to"), addrs("cc"), addrs("bcc"), sender[0] if sender else "",
                   found.get("date", [""])[0], found.get("message-id", [""])[0], subject, fields)


def _is_field_name(name: str) -> bool:
    """RFC 5322 field name: printable ASCII but colon and space (the caller cut it at its first
    colon). Three C-level tests: printable ASCII is 32-126, and the space is the one left out."""
    return name.isascii() and name.isprintable() and " " not in name
