"""Outlook's winmail.dat (application/ms-tnef): the body and every attachment, through tnefparse.

A TNEF blob carries the message body Outlook would have put in MIME (plain text, HTML or compressed
RTF) and the attachments themselves; each attachment is read by its own bytes, like a zip member.
The plain body's code page is the blob's attOemCodepage (CP932 from Japanese Outlook).
"""

from __future__ import annotations

from .budget import Budget, corrupt

TNEF_MAGIC = b"\x78\x9f\x3e\x22"


def tnef_contents(data: bytes, budget: Budget) -> tuple[str, list[tuple[str, bytes]]]:
    """(body text, [(attachment name, bytes)])."""
    try:
        import tnefparse
    except ImportError:  # pragma: no cover - tnefparse is a dependency
        raise corrupt("no TNEF reader installed") from None
    try:
        t = tnefparse.TNEF(data, do_checksum=False)
    except Exception as exc:  # tnefparse's errors on damaged input
        raise corrupt(f"unreadable TNEF ({type(exc).__name__})") from None
    from .textdecode import decode_text

    texts: list[str] = []
    codepage = getattr(t, "codepage", None)
    body = getattr(t, "body", None)
    if isinstance(body, bytes) and body.strip(b"\0"):
        charset = f"cp{codepage}" if isinstance(codepage, int) and codepage not in (1252, 0) else None
        texts.append(decode_text(body.rstrip(b"\0"), charset))
    html = getattr(t, "htmlbody", None)
    if isinstance(html, bytes) and html.strip():
        from .htmltext import html_to_text

        texts.append(html_to_text(decode_text(html), budget, "winmail.dat")[0])
    for attr in getattr(t, "mapiprops", []) or []:  # PR_BODY / PR_BODY_HTML as MAPI properties
        if getattr(attr, "name", None) in (0x1000, 0x1013):
            value = getattr(attr, "data", None)
            if isinstance(value, bytes):
                texts.append(decode_text(value.rstrip(b"\0")))
            elif isinstance(value, str):
                texts.append(value)
    attachments: list[tuple[str, bytes]] = []
    for i, a in enumerate(getattr(t, "attachments", []) or [], 1):
        data_ = getattr(a, "data", b"") or b""
        name: object = None
        try:
            long_name = getattr(a, "long_filename", None)
            name = long_name() if callable(long_name) else long_name
        except Exception:  # a long name in another code page than tnefparse assumes
            name = None
        if not name:
            raw = getattr(a, "_name", b"")  # tnefparse decodes the short name as UTF-8; CP932 is common
            name = decode_text(raw.rstrip(b"\0")) if isinstance(raw, bytes) and raw.strip(b"\0") else ""
        if isinstance(name, bytes):
            name = decode_text(name.rstrip(b"\0"))
        budget.step(len(data_))
        attachments.append((str(name).replace("\\", "/").rsplit("/", 1)[-1].strip("\0") or f"attachment{i}", bytes(data_)))
    text = "\n".join(t_ for t_ in texts if t_)
    budget.charge(len(text))
    return text, attachments
