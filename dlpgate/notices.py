"""Messages the gateway writes itself: delivery status notifications and the human notices.

They are queued like any other mail (kind "notice", null envelope sender so they can never
bounce back into a loop) and go through the upstream relay without being scanned. They never
carry the flagged content: a DSN returns only the original's identifying headers (Date, From, To,
Cc, Subject, Message-ID), masked; a notice only the message id, subject (masked), rule names and
counts. Upstream replies quoted in a DSN are masked too (a server may echo what it was sent).
"""

from __future__ import annotations

import email.utils
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import default as default_policy
from typing import Any

from .masking import mask_text
from .store import DELAYED, NewMessage, RcptOutcome, Store, new_id

SpoolWriter = Callable[[str, bytes], str]


# The original's fields a DSN returns (RFC 3464 2.1: the third part is optional, and
# text/rfc822-headers needs only enough for the sender to recognise the message).
DSN_HEADERS = ("Date", "From", "To", "Cc", "Subject", "Message-ID")


def _returned_headers(raw: bytes) -> bytes:
    """The original's identifying headers, decoded, masked, one line each, re-encoded (RFC 2047).

    Nothing else of the original goes back: not its other headers (they can carry anything a
    client chose to put there), not its body."""
    from email.parser import BytesHeaderParser

    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    head = raw[: end if end >= 0 else min(len(raw), 65536)][:65536]
    parsed = BytesHeaderParser(policy=default_policy).parsebytes(head + b"\r\n\r\n")
    out = EmailMessage(policy=SMTP_POLICY)
    for name in DSN_HEADERS:
        value = parsed.get(name)
        if value is None:
            continue
        text = " ".join(mask_text(str(value)).split())[:900]
        try:
            out[name] = text
            bytes(out)
        except Exception:  # noqa: BLE001 - a value the header classes refuse: kept as plain text
            del out[name]
            out[f"X-Original-{name}"] = text.encode("ascii", "replace").decode("ascii")
    return bytes(out).split(b"\r\n\r\n", 1)[0] + b"\r\n"


def build_dsn(*, hostname: str, msg_id: str, sender: str, arrived: float, original: bytes,
              bounced: Sequence[RcptOutcome]) -> bytes:
    """RFC 3464 multipart/report: a human part, message/delivery-status, the original headers."""
    boundary = f"dsn-{new_id()}"
    human = [f"This is the mail system at {hostname} (dlpgate).", "",
             "Your message could not be delivered to one or more recipients.",
             "あなたのメールは一部の宛先に配送できませんでした。", ""]
    for o in bounced:
        human.append(f"<{o.rcpt}>: {o.code} {_one_line(mask_text(o.response))}")
    status_fields = [f"Reporting-MTA: dns; {hostname}", f"X-Dlpgate-Queue-ID: {msg_id}",
                     f"Arrival-Date: {email.utils.formatdate(arrived)}", ""]
    for o in bounced:
        code = o.code if o.code else 554
        status = f"{code // 100}.0.0"
        resp = _one_line(mask_text(o.response))
        for token in resp.split():
            parts = token.split(".")
            if len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] in "245":
                status = token
                break
        status_fields += [f"Final-Recipient: rfc822; {o.rcpt}", "Action: failed", f"Status: {status}",
                          f"Diagnostic-Code: smtp; {code} {resp}"[:990], ""]
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {email.utils.formatdate(localtime=True)}",
        f"Message-ID: <{new_id()}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    body = [
        "", f"--{boundary}", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "",
        *human, "", f"--{boundary}", "Content-Type: message/delivery-status", "", *status_fields,
        f"--{boundary}", "Content-Type: text/rfc822-headers", "",
    ]
    out = "\r\n".join(headers + body).encode("utf-8") + b"\r\n"
    out += _returned_headers(original)
    out += f"\r\n--{boundary}--\r\n".encode()
    return out


def _one_line(text: str) -> str:
    """One line of printable text: an upstream's reply may hold line breaks or control bytes."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:900]


def build_notice(*, hostname: str, sender: str, to: Sequence[str], subject: str, text: str) -> bytes:
    m = EmailMessage(policy=SMTP_POLICY)
    m["From"] = sender
    m["To"] = ", ".join(to)
    m["Subject"] = subject
    m["Date"] = email.utils.formatdate(localtime=True)
    m["Message-ID"] = f"<{new_id()}@{hostname}>"
    m["Auto-Submitted"] = "auto-generated"
    m.set_content(text, charset="utf-8")
    return m.as_bytes()


@dataclass(frozen=True)
class Notice:
    to: tuple[str, ...]
    subject: str
    text: str


def queue_notice(write_spool: SpoolWriter, *, hostname: str, notice_from: str, notice: Notice,
                 audit: dict[str, Any] | None = None, now: float | None = None) -> NewMessage:
    """Write a notice's spool file and return its row, due at once, from the null sender."""
    raw = build_notice(hostname=hostname, sender=notice_from, to=notice.to, subject=notice.subject,
                       text=notice.text)
    return _queued(write_spool, raw, notice.to, notice.subject, audit or {}, now)


def queue_dsn(store: Store, *, hostname: str, msg_id: str, sender: str, arrived: float, original: bytes,
              bounced: Sequence[RcptOutcome]) -> NewMessage:
    raw = build_dsn(hostname=hostname, msg_id=msg_id, sender=sender, arrived=arrived, original=original,
                    bounced=bounced)
    return _queued(store.write_spool, raw, (sender,), "Undelivered Mail Returned to Sender",
                   {"dsn_for": msg_id}, None)


def _queued(write_spool: SpoolWriter, raw: bytes, recipients: tuple[str, ...], subject: str,
            audit: dict[str, Any], now: float | None) -> NewMessage:
    """Spool a gateway-written message and return its row: null sender, due at once, never scanned."""
    now = time.time() if now is None else now
    mid = new_id()
    rel = write_spool(mid, raw)
    return NewMessage(id=mid, sender="", recipients=recipients, spool=rel, size=len(raw),
                      sha256=hashlib.sha256(raw).hexdigest(), arrived=now, state=DELAYED, due_at=now,
                      kind="notice", subject=subject, audit_detail=audit)
