"""Issue 15 item 2: hostile SMTP input cannot add headers or content that was never judged.

Against a real in-process gateway on loopback with a real upstream sink: what the sink receives
is exactly the judged (stored) bytes plus one Received: header that holds no line break.
"""

from __future__ import annotations

import asyncio
import email
import hashlib
from email.policy import default as default_policy
from pathlib import Path

import pytest

from dlpgate.server import Gateway
from dlpgate.store import Store
from tests.conftest import Sink
from tests.test_hardening_support import read_reply

SENDER = "a@example.jp"
RCPT = "b@example.com"
CLEAN = b"From: a@example.jp\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nhello\r\n"


async def dialogue(port: int, lines: list[bytes], data: bytes | None = None) -> list[int]:
    """Send each command line (as given, CRLF appended), then DATA if `data`: the reply codes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    codes = [(await read_reply(reader))[0]]
    try:
        for line in lines:
            writer.write(line + b"\r\n")
            codes.append((await read_reply(reader))[0])
        if data is not None:
            writer.write(b"DATA\r\n")
            code = (await read_reply(reader))[0]
            codes.append(code)
            if code == 354:
                writer.write(data + b".\r\n")
                codes.append((await read_reply(reader, timeout=30))[0])
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()
    return codes


def delivered(sink: Sink, n: int = 1) -> list[bytes]:
    return [m.data for m in sink.handler.wait_for(n, 15)]


def stored_bytes(tmp_path: Path) -> list[bytes]:
    st = Store(tmp_path / "store")
    try:
        return [st.read_spool(d["id"]) for d in st.list(kind="mail")]
    finally:
        st.close()


def header_names(raw: bytes) -> list[str]:
    return [k.lower() for k in email.message_from_bytes(raw, policy=default_policy).keys()]


INJECTIONS = [
    b"EHLO x\rX-Injected: yes\rSubject: \xe5\x80\x8b\xe4\xba\xba\xe7\x95\xaa\xe5\x8f\xb7 123456789018\r\r",
    b"HELO x\rX-Injected: yes",
    b"EHLO x\x00y",
    b"EHLO x\x1b[2Ky",
    b"EHLO bad host name",
    b"EHLO \xe3\x81\x82.example",
]


@pytest.mark.parametrize("greeting", INJECTIONS)
async def test_hostile_helo_is_refused_and_never_reaches_a_header(gateway: Gateway, sink: Sink, tmp_path: Path,
                                                                  greeting: bytes) -> None:
    codes = await dialogue(gateway.smtp_port, [greeting, f"MAIL FROM:<{SENDER}>".encode(),
                                               f"RCPT TO:<{RCPT}>".encode()], CLEAN)
    assert codes[1] == 501, codes
    assert codes[2] == 503, codes  # no valid greeting, no transaction
    await asyncio.sleep(0.5)
    for raw in sink.handler.messages:
        assert b"X-Injected" not in raw and header_names(raw).count("received") == 1


@pytest.mark.parametrize("greeting", [b"EHLO client.example.jp", b"HELO mail", b"EHLO [127.0.0.1]",
                                      b"EHLO [IPv6:::1]", b"EHLO DESKTOP-AB12_3", b"EHLO xn--wgv71a.example"])
async def test_ordinary_greetings_are_accepted(gateway: Gateway, sink: Sink, greeting: bytes) -> None:
    codes = await dialogue(gateway.smtp_port, [greeting, f"MAIL FROM:<{SENDER}>".encode(),
                                               f"RCPT TO:<{RCPT}>".encode()], CLEAN)
    assert codes == [220, 250, 250, 250, 354, 250], codes
    got = delivered(sink)[0]
    received = got[: len(got) - len(CLEAN)]
    assert got.endswith(CLEAN) and received.startswith(b"Received: from ") and received.endswith(b"\r\n")
    # one header field: every line after the first is a continuation
    assert all(line.startswith(b"\t") for line in received[:-2].split(b"\r\n")[1:])


@pytest.mark.parametrize("command", [
    f"MAIL FROM:<{SENDER}> X-ID=\x01".encode(),
    f"MAIL FROM:<{SENDER}> BODY=8BITMIME\rX-Injected: yes".encode(),
    b'MAIL FROM:<"a\rX-Injected: yes"@example.jp>',
])
async def test_hostile_mail_from_is_refused(gateway: Gateway, command: bytes) -> None:
    codes = await dialogue(gateway.smtp_port, [b"EHLO client.example.jp", command])
    assert codes[2] in (501, 553, 555), codes


@pytest.mark.parametrize("command", [
    f"RCPT TO:<{RCPT}> NOTIFY=NEVER\rX-Injected: yes".encode(),
    b'RCPT TO:<"b\rX-Injected: yes"@example.com>',
    b'RCPT TO:<"b\x00"@example.com>',
])
async def test_hostile_rcpt_to_is_refused(gateway: Gateway, sink: Sink, command: bytes) -> None:
    codes = await dialogue(gateway.smtp_port, [b"EHLO client.example.jp", f"MAIL FROM:<{SENDER}>".encode(),
                                               command], CLEAN)
    assert codes[3] in (501, 553, 555), codes


@pytest.mark.parametrize("body", [
    # bare CR and bare LF: an upstream (or aiosmtplib) turns them into line breaks
    b"From: a@example.jp\r\nTo: b@example.com\r\nSubject: hi\rX-Smuggled: yes\r\n\r\nline one\rline two\nline three\r\n",
    # an SMTP-smuggling attempt: a lone-LF end of data, then a second transaction
    b"From: a@example.jp\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nbody\n.\nMAIL FROM:<x@example.jp>\nRCPT TO:<c@example.com>\n"
    b"DATA\nSubject: smuggled\n\nsecret\n.\nmore\r\n",
])
async def test_delivered_bytes_are_the_judged_bytes_plus_one_header(gateway: Gateway, sink: Sink,
                                                                    tmp_path: Path, body: bytes) -> None:
    codes = await dialogue(gateway.smtp_port, [b"EHLO client.example.jp", f"MAIL FROM:<{SENDER}>".encode(),
                                               f"RCPT TO:<{RCPT}>".encode()], body)
    assert codes[-1] == 250, codes
    got = delivered(sink)
    await asyncio.sleep(0.5)
    assert len(sink.handler.messages) == 1  # nothing smuggled as a second message
    (judged,) = stored_bytes(tmp_path)
    raw = got[0]
    assert raw.endswith(judged)
    received = raw[: len(raw) - len(judged)]
    assert header_names(received + b"\r\n") == ["received"]
    assert b"\r" not in judged.replace(b"\r\n", b"") and b"\n" not in judged.replace(b"\r\n", b"")
    st = Store(tmp_path / "store")
    try:
        (row,) = st.list(kind="mail")
        assert hashlib.sha256(judged).hexdigest() == st.get(row["id"])["sha256"]
    finally:
        st.close()
