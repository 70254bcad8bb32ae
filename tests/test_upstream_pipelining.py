"""Delivery to an upstream that offers PIPELINING (RFC 2920), as Postfix does: MAIL, every RCPT and
DATA go out in one write, the replies are read in order, and every outcome (a refused sender, some
or all recipients refused, DATA refused, a silent or vanishing upstream) is answered as on the
one-command-at-a-time path, with the connection left usable or closed as that path leaves it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from hypothesis import given, settings
from hypothesis import strategies as st

from dlpgate.upstream import _Replies, send_message, wire_data
from tests.conftest import free_port, make_config, running, wait_until

MSG = b"From: a@example.jp\r\nTo: b@example.com\r\nSubject: p\r\n\r\n.dot line\r\nbody\r\n"
EHLO = b"250-up.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n"

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_commands(reader: asyncio.StreamReader, until: bytes) -> list[bytes]:
    """Lines up to and including `until`, asserting they came without waiting for any reply."""
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        lines.append(line)
        if line.startswith(until):
            return lines


async def ehlo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 up.example ESMTP\r\n")
    assert (await reader.readline()).startswith(b"EHLO")
    writer.write(EHLO)


async def read_data(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n.\r\n"), 5)


class Upstream:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.errors: list[BaseException] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> Upstream:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await self.script(reader, writer)
            except BaseException as e:  # noqa: BLE001 - reported by the test
                self.errors.append(e)
            finally:
                writer.close()
        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        assert not self.errors, self.errors


async def client(port: int, timeout: float = 5) -> aiosmtplib.SMTP:
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=timeout)
    await c.connect()
    await c.ehlo()
    assert c.supports_extension("pipelining")
    return c


async def test_commands_go_in_one_write_and_a_refused_recipient_is_reported() -> None:
    got: dict[str, object] = {}

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await ehlo(reader, writer)
        # MAIL, both RCPTs and DATA must all arrive before we answer anything
        got["commands"] = await read_commands(reader, b"DATA")
        writer.write(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n354 go\r\n")
        got["data"] = await read_data(reader)
        writer.write(b"250 2.0.0 queued\r\n")
        assert (await reader.readline()).startswith(b"QUIT")
        writer.write(b"221 bye\r\n")

    async with Upstream(script) as up:
        c = await client(up.port)
        refused = await send_message(c, "a@example.jp", ["b@example.com", "x@example.com"], MSG)
        await c.quit()
    assert [ln.split(b":")[0] for ln in got["commands"]] == [b"MAIL FROM", b"RCPT TO", b"RCPT TO", b"DATA\r\n"]
    assert got["commands"][0].startswith(b"MAIL FROM:<a@example.jp> SIZE=")
    assert list(refused) == ["x@example.com"] and refused["x@example.com"].code == 550
    assert refused["x@example.com"].message == "5.1.1 no such\n5.1.1 user"
    assert got["data"] == wire_data(MSG)[0]  # the same dot-stuffed bytes as without pipelining


async def test_refused_sender_raises_and_the_connection_stays_usable() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await ehlo(reader, writer)
        await read_commands(reader, b"DATA")
        writer.write(b"553 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n")
        assert (await reader.readline()).startswith(b"RSET")
        writer.write(b"250 reset\r\n")
        await read_commands(reader, b"DATA")
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await read_data(reader)
        writer.write(b"250 queued\r\n")
        await reader.readline()
        writer.write(b"221 bye\r\n")

    async with Upstream(script) as up:
        c = await client(up.port)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as ei:
            await send_message(c, "a@example.jp", ["b@example.com"], MSG)
        assert ei.value.code == 553
        await c.rset()  # aiosmtplib has its connection back
        assert await send_message(c, "a@example.jp", ["b@example.com"], MSG) == {}
        await c.quit()


async def test_all_recipients_refused_but_354_ends_the_empty_message() -> None:
    got: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await ehlo(reader, writer)
        await read_commands(reader, b"DATA")
        writer.write(b"250 ok\r\n550 no\r\n354 go ahead anyway\r\n")  # a server RFC 2920 warns about
        got.append(await asyncio.wait_for(reader.readline(), 5))
        writer.write(b"554 5.5.1 no valid recipients\r\n")
        assert (await reader.readline()).startswith(b"RSET")
        writer.write(b"250 reset\r\n")
        await reader.readline()
        writer.write(b"221 bye\r\n")

    async with Upstream(script) as up:
        c = await client(up.port)
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as ei:
            await send_message(c, "a@example.jp", ["b@example.com"], MSG)
        assert [r.code for r in ei.value.recipients] == [550]
        assert got == [b".\r\n"]  # the message itself was never sent
        await c.rset()
        await c.quit()


async def test_data_refused_raises_data_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await ehlo(reader, writer)
        await read_commands(reader, b"DATA")
        writer.write(b"250 ok\r\n250 ok\r\n451 4.3.0 try later\r\n")
        await reader.readline()
        writer.write(b"221 bye\r\n")

    async with Upstream(script) as up:
        c = await client(up.port)
        with pytest.raises(aiosmtplib.SMTPDataError) as ei:
            await send_message(c, "a@example.jp", ["b@example.com"], MSG)
        assert ei.value.code == 451
        await c.quit()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"250 ok\r\n")  # then nothing more
    await asyncio.sleep(2)


async def _hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
    await read_data(reader)
    writer.close()  # gone before the final reply


@pytest.mark.parametrize("after_commands, error", [(_silent, aiosmtplib.SMTPTimeoutError),
                                                   (_hangs_up, aiosmtplib.SMTPServerDisconnected)])
async def test_a_silent_or_vanishing_upstream_fails_the_attempt_and_closes_the_connection(
        after_commands: Script, error: type[Exception]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await ehlo(reader, writer)
        await read_commands(reader, b"DATA")
        await after_commands(reader, writer)

    async with Upstream(script) as up:
        c = await client(up.port, timeout=0.5)
        with pytest.raises(error):
            await send_message(c, "a@example.jp", ["b@example.com"], MSG)
        assert not c.is_connected


async def test_extra_replies_close_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await ehlo(reader, writer)
        await read_commands(reader, b"DATA")
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await read_data(reader)
        writer.write(b"250 queued\r\n250 and a reply nobody asked for\r\n")
        await asyncio.sleep(0.5)

    async with Upstream(script) as up:
        c = await client(up.port)
        await asyncio.sleep(0)
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            for _ in range(3):  # the stray reply may land with the final one or just after it
                await send_message(c, "a@example.jp", ["b@example.com"], MSG)
                await asyncio.sleep(0.1)
        assert not c.is_connected


REPLIES = st.lists(st.tuples(st.sampled_from([250, 354, 421, 550, 553]),
                             st.lists(st.text(alphabet="abc 5.1.0-あ", max_size=12), min_size=1, max_size=3)),
                   min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(replies=REPLIES, cuts=st.lists(st.integers(0, 400), max_size=10))
def test_replies_are_parsed_as_aiosmtplib_parses_them_however_they_are_cut(
        replies: list[tuple[int, list[str]]], cuts: list[int]) -> None:
    wire = b"".join(b"".join(f"{code}{'-' if i < len(lines) - 1 else ' '}{t}\r\n".encode()
                             for i, t in enumerate(lines)) for code, lines in replies)
    points = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})

    async def go() -> list[aiosmtplib.SMTPResponse]:
        r = _Replies(asyncio.get_running_loop())
        for a, b in zip(points, points[1:], strict=False):
            r.data_received(wire[a:b])
        return [await r.next(1) for _ in replies]

    got = asyncio.run(go())
    want = [aiosmtplib.SMTPResponse(code, "\n".join(t.strip(" \t") for t in lines)) for code, lines in replies]
    assert got == want


async def test_gateway_delivers_the_same_bytes_through_a_pipelining_upstream(tmp_path: Path) -> None:
    """aiosmtpd answers pipelined commands in order: the gateway's delivery through it carries the
    message and envelope exactly as through an upstream without PIPELINING."""
    received: list[tuple[str, list[str], bytes]] = []

    class Handler:
        async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001
            session.host_name = hostname
            return [*responses[:-1], "250-PIPELINING", responses[-1]]  # as Postfix offers it

        async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
            received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            return "250 OK"

    port = free_port()
    ctl = Controller(Handler(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=5)
        await c.connect()
        await c.ehlo()
        assert c.supports_extension("pipelining")
        await c.quit()
        async with running(make_config(tmp_path, port)) as gw:
            await aiosmtplib.send(MSG, sender="a@example.jp", recipients=["b@example.com", "c@example.org"],
                                  hostname="127.0.0.1", port=gw.smtp_port, start_tls=False)
            await wait_until(lambda: received, timeout=10)
    finally:
        ctl.stop()
    sender, rcpts, data = received[0]
    assert sender == "a@example.jp" and rcpts == ["b@example.com", "c@example.org"]
    head, _, rest = data.partition(b"\r\n\tby ")
    assert head.startswith(b"Received: from ") and data.endswith(MSG)
