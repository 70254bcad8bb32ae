"""The `rewrite` action for exposed recipient lists: hide external To/Cc addresses.

Every recipient still gets the message (the envelope is untouched: they are all RCPT TO already);
only the visible To/Cc lines change. External addresses leave the headers and an
`undisclosed-recipients:;` group stands in their place; internal addresses stay visible. All other
bytes of the message are kept exactly, so signatures over the body and other headers survive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.headerregistry import Address
from email.policy import SMTP as SMTP_POLICY

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_VISIBLE = ("to", "cc")


def _split_header_block(raw: bytes) -> tuple[bytes, bytes]:
    m = _HEADER_END.search(raw)
    if m is None:
        return raw, b""
    return raw[: m.start()], raw[m.start():]


def _fields(block: bytes) -> list[list[bytes]]:
    """Header fields as lists of physical lines (first line + continuation lines)."""
    out: list[list[bytes]] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and out:
            out[-1].append(line)
        else:
            out.append([line])
    return out


def hide_recipients(raw: bytes, recipient_class: Callable[[str], str]) -> tuple[bytes | None, str]:
    """Return (new message bytes, audit note), or (None, "") when nothing needed hiding."""
    block, rest = _split_header_block(raw)
    eol = b"\r\n" if b"\r\n" in block[:2000] else b"\n"
    fields = _fields(block)
    hidden = 0
    changed = False
    new_fields: list[bytes] = []
    for f in fields:
        name, sep, _ = f[0].partition(b":")
        if not sep or name.strip().lower().decode("latin-1") not in _VISIBLE:
            new_fields.append(b"".join(f))
            continue
        hname = name.strip().decode("latin-1")
        value = b"".join(f)[len(name) + 1:].decode("utf-8", "replace")
        value = re.sub(r"\r?\n(?=[ \t])", "", value).strip()  # unfold
        try:
            header = SMTP_POLICY.header_factory(hname, value)
            addrs = list(header.addresses)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - unparsable: hide the whole field rather than expose it
            addrs = []
            hidden += 1
            new_fields.append(f"{hname}: undisclosed-recipients:;".encode() + eol)
            changed = True
            continue
        keep = [a for a in addrs if a.addr_spec and recipient_class(a.addr_spec) == "internal"]
        gone = len(addrs) - len(keep)
        if gone == 0:
            new_fields.append(b"".join(f))
            continue
        hidden += gone
        changed = True
        parts = [str(Address(a.display_name, addr_spec=a.addr_spec)) for a in keep]
        parts.append("undisclosed-recipients:;")
        folded = SMTP_POLICY.fold(hname, ", ".join(parts))
        new_fields.append(folded.encode("utf-8").replace(b"\r\n", eol))
    if not changed:
        return None, ""
    body = b"".join(new_fields)
    return body.rstrip(b"\r\n") + rest, f"hid {hidden} external address(es) from To/Cc"
