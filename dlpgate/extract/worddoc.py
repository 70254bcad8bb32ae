"""Legacy Word 97-2003 `.doc`: the text of the WordDocument stream, through olefile and the piece table.

[MS-DOC]: the FIB at the start of the WordDocument stream says which table stream (0Table/1Table)
holds the CLX, and where (fcClx/lcbClx at FIB offset 0x1A2); the CLX's piece table maps the text to
runs of the WordDocument stream, each either UTF-16LE or "compressed" 8-bit (CP1252). Every piece is
read (main text, footnotes, headers, comments all live in the same character stream). Table cells
end with 0x07 and rows with a second 0x07: they become tabs and lines, as every other table.
An encrypted document (fEncrypted) is `encrypted`. Chosen over running antiword/catdoc as a child:
no extra Debian package, no process per attachment, and the same budget checks as the rest.
"""

from __future__ import annotations

import io
import re
import struct

from .budget import Budget, Unreadable, corrupt
from .model import ENCRYPTED

_FIELD = re.compile("\x13[^\x13\x14\x15]*\x14|[\x13\x15]")  # field codes: keep the result, drop the code
_CONTROLS = str.maketrans({"\r": "\n", "\x0b": "\n", "\x0c": "\n", "\x0e": "\n", "\x1e": "-", "\x1f": "",
                           "\xa0": " ", "\x01": "", "\x08": "", "\x02": "", "\x05": ""})


def doc_text(data: bytes, budget: Budget) -> str:
    try:
        import olefile
    except ImportError:  # pragma: no cover - olefile is a dependency
        raise corrupt("no OLE2 reader installed") from None
    try:
        ole = olefile.OleFileIO(io.BytesIO(data))
        word = ole.openstream("WordDocument").read()
        if len(word) < 0x1AA or struct.unpack_from("<H", word, 0)[0] != 0xA5EC:
            raise corrupt("damaged Word .doc (no FIB)")
        flags = struct.unpack_from("<H", word, 0x0A)[0]
        table_name = "1Table" if flags & 0x0200 else "0Table"
        if not ole.exists(table_name):
            raise corrupt("Word .doc without its table stream")
        table = ole.openstream(table_name).read()
        if flags & 0x0100:  # fEncrypted: XOR obfuscation, or RC4 / CryptoAPI with its header in the table stream
            version = struct.unpack_from("<HH", table, 0) if len(table) >= 4 else (0, 0)
            if flags & 0x8000 or version in ((1, 1), (2, 2), (3, 2), (4, 2)):
                raise Unreadable(ENCRYPTED, "password-protected Word .doc")
            raise corrupt("damaged Word .doc (encryption flag without an encryption header)")
    except Unreadable:
        raise
    except Exception as exc:  # olefile's errors on damaged input
        raise corrupt(f"unreadable Word .doc ({type(exc).__name__})") from None
    fc_clx, lcb_clx = struct.unpack_from("<II", word, 0x1A2)
    clx = table[fc_clx:fc_clx + lcb_clx]
    pos = 0
    while pos < len(clx) and clx[pos] == 0x01:  # Prc: formatting, skipped
        if pos + 3 > len(clx):
            raise corrupt("damaged Word piece table")
        pos += 3 + struct.unpack_from("<H", clx, pos + 1)[0]
    if pos + 5 > len(clx) or clx[pos] != 0x02:
        raise corrupt("Word .doc without a piece table")
    lcb = struct.unpack_from("<I", clx, pos + 1)[0]
    plc = clx[pos + 5:pos + 5 + lcb]
    n = (len(plc) - 4) // 12
    if n <= 0:
        return ""
    cps = struct.unpack_from(f"<{n + 1}I", plc, 0)
    out: list[str] = []
    for i in range(n):
        fc = struct.unpack_from("<I", plc, 4 * (n + 1) + 8 * i + 2)[0]
        count = cps[i + 1] - cps[i]
        if count <= 0:
            continue
        if fc & 0x40000000:  # compressed: 8-bit CP1252 at fc/2
            start = (fc & ~0x40000000) // 2
            chunk = word[start:start + count].decode("cp1252", "replace")
        else:
            chunk = word[fc:fc + 2 * count].decode("utf-16-le", "replace")
        budget.step(len(chunk))
        out.append(chunk)
    text = "".join(out)
    text = _FIELD.sub("", text)
    text = text.replace("\x07\x07", "\n").replace("\x07", "\t").translate(_CONTROLS)
    return text
