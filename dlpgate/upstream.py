"""One message to the upstream over an aiosmtplib connection, without redoing work per call.

`aiosmtplib.SMTP.sendmail` parses every address with `email.utils` and runs two regular
expressions over the whole message three times (line endings for SIZE, line endings again and
leading dots for DATA). Profiled in the delivery process under load, that was a third of its
Python time. The messages we relay were received over SMTP: their lines already end in CRLF and
their addresses are bare addr-specs, so both can be checked with a few C-speed bytes scans and
the wire form built with one `bytes.replace`. Anything that does not pass the check takes
aiosmtplib's own path, so the bytes on the wire are the same either way.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import cast

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import (
    MAX_LINE_LENGTH,
    MAX_RESPONSE_LENGTH,
    PERIOD_REGEX,
    normalize_message_line_endings,
)

# a dot-atom local part at a dot-atom or address-literal-free domain: nothing to quote or parse
_PLAIN_ADDRESS = re.compile(rb"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


_BAD_ADDRESS = "5.1.3 Address not permitted on an SMTP command line"
_BARE_CR = re.compile(rb"\r(?!\n)")
_LINE_DOT = re.compile(rb"\n\.")


def wire_data(message: bytes) -> tuple[bytes, int]:
    """(DATA payload ending in CRLF.CRLF, SIZE) exactly as aiosmtplib would send the message:
    every line ending made CRLF, a line's leading dot doubled (RFC 5321 4.5.2), the size that
    of the message before dot-stuffing (RFC 1870)."""
    # already CRLF throughout: as many CRs as LFs, and every CR followed by an LF (so each LF has
    # its CR). Searched with compiled patterns: `bytes.count(b"\r\n")` and `b"\n." in` are two to
    # three times slower on Japanese text, whose bytes defeat their skip table (10 KB: 7 us each)
    if message.count(b"\n") == message.count(b"\r") and not _BARE_CR.search(message):
        normal = message if message.endswith(b"\r\n") else message + b"\r\n"
        wire = normal.replace(b"\n.", b"\n..") if _LINE_DOT.search(normal) else normal
        if wire.startswith(b"."):
            wire = b"." + wire
    else:
        normal = normalize_message_line_endings(message)
        wire = PERIOD_REGEX.sub(b"..", normal)
    return wire + b".\r\n", len(normal)


def address_arg(address: str) -> bytes:
    """`<addr>` for MAIL FROM / RCPT TO, as aiosmtplib's quote_address gives (UTF-8 for an
    internationalised address, which needs SMTPUTF8). ValueError, as there, for an address
    that would smuggle text onto the command line."""
    raw = address.encode("utf-8", "surrogateescape")
    if not raw:
        return b"<>"
    if _PLAIN_ADDRESS.fullmatch(raw):
        return b"<" + raw + b">"
    return quote_address(address).encode("utf-8", "surrogateescape")


async def send_message(client: aiosmtplib.SMTP, sender: str, recipients: list[str],
                       message: bytes) -> dict[str, aiosmtplib.SMTPResponse]:
    """MAIL, RCPT for each recipient, DATA: the refused recipients and their replies.

    Raises what `SMTP.sendmail` raises: SMTPSenderRefused (553 5.6.7 for an internationalised
    address the upstream cannot take), SMTPRecipientsRefused when every
    recipient was refused, SMTPDataError, SMTPServerDisconnected / SMTPTimeoutError (the
    connection is then closed). Unlike sendmail it does not send RSET on a refusal: the caller
    resets the connection it reuses.
    """
    try:
        sender_arg = address_arg(sender)
    except ValueError:  # could smuggle text onto the command line: never sent
        raise aiosmtplib.SMTPSenderRefused(553, _BAD_ADDRESS, sender) from None
    refused: dict[str, aiosmtplib.SMTPResponse] = {}
    rcpt_args: list[tuple[str, bytes]] = []
    for rcpt in recipients:
        try:
            rcpt_args.append((rcpt, address_arg(rcpt)))
        except ValueError:
            refused[rcpt] = aiosmtplib.SMTPResponse(553, _BAD_ADDRESS)
    wire, size = wire_data(message)
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    options = [b"SIZE=%d" % size] if client.supports_extension("size") else []
    if not message.isascii() and client.supports_extension("8bitmime"):
        options.append(b"BODY=8BITMIME")  # RFC 6152: say so when the body has 8-bit octets
    if not (sender_arg.isascii() and all(a.isascii() for _, a in rcpt_args)):
        if not client.supports_extension("smtputf8"):  # RFC 6531 3.2: cannot be relayed as is
            raise aiosmtplib.SMTPSenderRefused(
                553, "5.6.7 The upstream does not support SMTPUTF8, needed for this address", sender)
        options.append(b"SMTPUTF8")
    if client.supports_extension("pipelining"):
        return await _send_pipelined(client, sender, b" ".join((b"MAIL FROM:" + sender_arg, *options)),
                                     rcpt_args, refused, len(recipients), wire)
    resp = await client.execute_command(b"MAIL", b"FROM:" + sender_arg, *options)
    if resp.code != 250:
        raise aiosmtplib.SMTPSenderRefused(resp.code, resp.message, sender)
    for rcpt, arg in rcpt_args:
        resp = await client.execute_command(b"RCPT", b"TO:" + arg)
        if resp.code not in (250, 251):
            refused[rcpt] = resp
    if len(refused) == len(recipients):
        raise _all_refused(refused)
    resp = await client.execute_command(b"DATA")
    if resp.code != 354:
        raise aiosmtplib.SMTPDataError(resp.code, resp.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        # write, then read_response marks the reply as expected before its first await: the
        # reply cannot arrive in between (one thread, no await between the two)
        protocol.write(wire)
        resp = await protocol.read_response(timeout=client.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()
        raise
    if resp.code != 250:
        raise aiosmtplib.SMTPDataError(resp.code, resp.message)
    return refused


def _all_refused(refused: dict[str, aiosmtplib.SMTPResponse]) -> aiosmtplib.SMTPRecipientsRefused:
    return aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(r.code, r.message, a) for a, r in refused.items()])


async def _send_pipelined(client: aiosmtplib.SMTP, sender: str, mail_line: bytes,
                          rcpt_args: list[tuple[str, bytes]], refused: dict[str, aiosmtplib.SMTPResponse],
                          n_recipients: int, wire: bytes) -> dict[str, aiosmtplib.SMTPResponse]:
    """MAIL, every RCPT and DATA in one write, then the message (RFC 2920), for an upstream that
    offers PIPELINING (Postfix does): two round trips a message instead of three plus one per
    recipient. The replies are read in order and answered exactly as the one-by-one path does.

    aiosmtplib reads one reply per command written, so for the transaction the connection is
    handed to a reader of our own (`transport.set_protocol`, plain asyncio) and handed back after
    it; a connection that fails or times out meanwhile is closed, as aiosmtplib closes it.
    """
    protocol = client.protocol
    transport = cast(asyncio.Transport | None, protocol.transport if protocol is not None else None)
    if protocol is None or transport is None or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    replies = _Replies(asyncio.get_running_loop())
    transport.set_protocol(replies)
    timeout = client.timeout
    try:
        transport.write(b"".join([mail_line, b"\r\n", *(b"RCPT TO:" + a + b"\r\n" for _, a in rcpt_args),
                                  b"DATA\r\n"]))
        mail = await replies.next(timeout)
        for rcpt, _ in rcpt_args:
            resp = await replies.next(timeout)
            if resp.code not in (250, 251):
                refused[rcpt] = resp
        data = await replies.next(timeout)
        final = None
        if data.code == 354:
            if mail.code == 250 and len(refused) < n_recipients:
                transport.write(wire)
                final = await replies.next(timeout)
            else:  # a server that said 354 with nobody to deliver to: end the empty message (RFC 2920 3.1)
                transport.write(b".\r\n")
                await replies.next(timeout)
        if replies.pending:  # more replies than commands: we no longer know which answers what
            raise aiosmtplib.SMTPServerDisconnected("Unexpected reply from the upstream")
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPResponseException):
        transport.set_protocol(protocol)
        client.close()
        raise
    transport.set_protocol(protocol)
    if 421 in (mail.code, data.code) or (final is not None and final.code == 421):
        client.close()  # the upstream is closing the session (execute_command closes it too)
    if mail.code != 250:
        raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, sender)
    if len(refused) == n_recipients:
        raise _all_refused(refused)
    if data.code != 354:
        raise aiosmtplib.SMTPDataError(data.code, data.message)
    assert final is not None
    if final.code != 250:
        raise aiosmtplib.SMTPDataError(final.code, final.message)
    return refused


class _Replies(asyncio.Protocol):
    """The upstream's replies during a pipelined transaction, parsed as aiosmtplib parses them
    (code, and the text of every line joined by newlines)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buf = bytearray()
        self._replies: deque[aiosmtplib.SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None

    @property
    def pending(self) -> bool:
        return bool(self._replies or self._buf)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            self._parse()
        except aiosmtplib.SMTPResponseException as e:
            self._error = e
        self._wake()

    def _parse(self) -> None:
        while True:
            lines: list[bytes] = []
            offset = 0
            code = -1
            while True:
                end = self._buf.find(b"\n", offset)
                if end < 0:
                    if len(self._buf) > MAX_RESPONSE_LENGTH:
                        raise aiosmtplib.SMTPResponseException(500, "Response too long")
                    return  # the rest of this reply is still on its way
                line = bytes(self._buf[offset:end + 1])
                if len(line) > MAX_LINE_LENGTH:
                    raise aiosmtplib.SMTPResponseException(500, "Response too long")
                try:
                    code = int(line[:3])
                except ValueError:
                    raise aiosmtplib.SMTPResponseException(
                        500, f"Malformed SMTP response line: {line.decode('utf-8', 'ignore')}") from None
                offset = end + 1
                lines.append(line[4:].strip(b" \t\r\n"))
                if line[3:4] != b"-":
                    break
            del self._buf[:offset]
            self._replies.append(aiosmtplib.SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape")))

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("Connection lost"))

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self, timeout: float | None) -> aiosmtplib.SMTPResponse:
        """The next reply, in order; SMTPServerDisconnected or SMTPReadTimeoutError as aiosmtplib raises."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from None
        return self._replies.popleft()
