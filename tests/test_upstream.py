"""The delivery path's own MAIL/RCPT/DATA (dlpgate.upstream) against aiosmtplib's sendmail."""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st

from dlpgate.store import Store
from dlpgate.upstream import address_arg, send_message, wire_data
from tests.conftest import free_port, make_config, running, states, wait_until


def aiosmtplib_wire(message: bytes) -> tuple[bytes, int]:
    normal = normalize_message_line_endings(message)
    return PERIOD_REGEX.sub(b"..", normal) + b".\r\n", len(normal)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"\xe3\x81\x82", b" ", b"\r\n."]),
                max_size=40).map(b"".join))
def test_wire_form_is_aiosmtplibs(message: bytes) -> None:
    assert wire_data(message) == aiosmtplib_wire(message)


@given(st.binary(max_size=300))
def test_wire_form_is_aiosmtplibs_for_any_bytes(message: bytes) -> None:
    assert wire_data(message) == aiosmtplib_wire(message)


_ADDR_CHARS = "abcXYZ09.!#$%&'*+/=?^_`{|}~-@<>()\"\\ ,;:[]é"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=_ADDR_CHARS, max_size=24))
def test_address_argument_is_aiosmtplibs(address: str) -> None:
    try:
        theirs: bytes | type[ValueError] = quote_address(address).encode("utf-8")
    except ValueError:
        theirs = ValueError
    try:
        ours: bytes | type[ValueError] = address_arg(address)
    except ValueError:
        ours = ValueError
    assert ours == theirs


@dataclass
class Recorder:
    seen: list[tuple[str, list[str], list[str], bytes]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
        self.seen.append((envelope.mail_from, list(envelope.mail_options), list(envelope.rcpt_tos),
                          envelope.original_content))
        return "250 OK"


@pytest.fixture
def recorder() -> tuple[Recorder, int]:
    rec, port = Recorder(), free_port()
    c = Controller(rec, hostname="127.0.0.1", port=port, enable_SMTPUTF8=True)
    c.start()
    yield rec, port
    c.stop()


MESSAGES = [
    b"Subject: plain\r\n\r\nhello\r\n",
    b".starts with a dot\r\n\r\n.line\r\n..two\r\nend",
    b"Subject: bare\n\nLF only\n.dot after LF\rlone CR\r\n",
    "Subject: 日本語\r\n\r\n本文です。\r\n.\r\n".encode(),
]


async def test_same_bytes_and_envelope_as_sendmail(recorder: tuple[Recorder, int]) -> None:
    rec, port = recorder
    for msg in MESSAGES:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await c.connect()
        await c.sendmail("a@example.jp", ["b@example.com", "c@example.com"], msg)
        refused = await send_message(c, "a@example.jp", ["b@example.com", "c@example.com"], msg)
        await c.quit()
        assert refused == {}
        theirs, ours = rec.seen[-2], rec.seen[-1]
        assert ours[3] == theirs[3]  # the bytes the upstream stored
        assert ours[0] == theirs[0] and ours[2] == theirs[2]
        assert [o for o in ours[1] if o != "BODY=8BITMIME"] == theirs[1]  # SIZE agrees
        assert ("BODY=8BITMIME" in ours[1]) == (not msg.isascii())


async def test_refusals_raise_like_sendmail(recorder: tuple[Recorder, int]) -> None:
    _, port = recorder

    class Refusing:
        async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: ANN001
            if address.startswith("no"):
                return "550 5.1.1 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
            return "554 5.6.0 content refused" if b"refuse" in envelope.original_content else "250 OK"

    p2 = free_port()
    ctl = Controller(Refusing(), hostname="127.0.0.1", port=p2)
    ctl.start()
    try:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=p2, start_tls=False)
        await c.connect()
        refused = await send_message(c, "a@example.jp", ["no1@example.com", "yes@example.com"], b"x\r\n")
        assert list(refused) == ["no1@example.com"] and refused["no1@example.com"].code == 550
        await c.rset()
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await send_message(c, "a@example.jp", ["no1@example.com", "no2@example.com"], b"x\r\n")
        await c.rset()
        with pytest.raises(aiosmtplib.SMTPDataError) as e:
            await send_message(c, "a@example.jp", ["yes@example.com"], b"refuse me\r\n")
        assert e.value.code == 554
        await c.rset()
        refused = await send_message(c, "a@example.jp", ["yes@example.com", "bad user@example.com"], b"x\r\n")
        assert refused["bad user@example.com"].code == 553  # never put on the command line
        with pytest.raises(aiosmtplib.SMTPSenderRefused):
            await send_message(c, "bad sender@x.jp", ["yes@example.com"], b"x\r\n")
        await c.quit()
    finally:
        ctl.stop()


async def test_international_address_needs_smtputf8(recorder: tuple[Recorder, int]) -> None:
    rec, port = recorder
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await c.connect()
    await send_message(c, "送信者@example.jp", ["受信者@example.com"], b"x\r\n")
    await c.quit()
    assert rec.seen[-1][:3] == ("送信者@example.jp", ["SIZE=3", "SMTPUTF8"], ["受信者@example.com"])

    p2 = free_port()
    plain = Controller(Recorder(), hostname="127.0.0.1", port=p2, enable_SMTPUTF8=False)
    plain.start()
    try:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=p2, start_tls=False)
        await c.connect()
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as e:
            await send_message(c, "a@example.jp", ["受信者@example.com"], b"x\r\n")
        assert e.value.code == 553 and "5.6.7" in e.value.message
        await c.quit()
    finally:
        plain.stop()


async def test_gateway_relays_an_smtputf8_envelope(tmp_path: Path, recorder: tuple[Recorder, int]) -> None:
    rec, port = recorder
    async with running(make_config(tmp_path, port)) as gw:
        def send() -> None:
            with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=10) as c:
                c.sendmail("山田@example.jp", ["佐藤@example.com"], "Subject: x\r\n\r\n本文\r\n".encode(),
                           mail_options=["SMTPUTF8"])

        await asyncio.to_thread(send)
        await wait_until(lambda: states(tmp_path / "store") == ["delivered"])
    sender, options, rcpts, data = rec.seen[-1]
    assert (sender, rcpts) == ("山田@example.jp", ["佐藤@example.com"])
    assert "SMTPUTF8" in options and "BODY=8BITMIME" in options
    assert data.endswith("本文\r\n".encode())


async def test_gateway_bounces_smtputf8_when_the_upstream_cannot(tmp_path: Path) -> None:
    port = free_port()
    plain = Controller(Recorder(), hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    plain.start()
    try:
        async with running(make_config(tmp_path, port)) as gw:
            def send() -> None:
                with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=10) as c:
                    c.sendmail("a@example.jp", ["佐藤@example.com"], b"Subject: x\r\n\r\nbody\r\n",
                               mail_options=["SMTPUTF8"])

            await asyncio.to_thread(send)
            await wait_until(lambda: states(tmp_path / "store") == ["bounced"])
            s = Store(tmp_path / "store")
            try:
                (m,) = s.list()
                rc = s.get(m["id"])["recipients"][0]
                assert rc["code"] == 553 and "SMTPUTF8" in rc["response"]
            finally:
                s.close()
    finally:
        plain.stop()


async def test_a_silent_upstream_times_out_per_command() -> None:
    """The reply timeout ([relay] timeout) is per command: an upstream that answers slowly but
    within it is fine; one that stops answering times out, and the connection is closed."""
    import time

    delays = {"MAIL": 0.3, "RCPT": 0.3, "DATA": 0.3, ".": 5.0}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 slow.test ESMTP\r\n")
        in_data = False
        while line := await reader.readline():
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    await asyncio.sleep(delays["."])
                    writer.write(b"250 ok\r\n")
                continue
            verb = line.split()[0].decode().upper()
            await asyncio.sleep(delays.get(verb, 0))
            writer.write({"EHLO": b"250-slow.test\r\n250 SIZE 1000000\r\n", "DATA": b"354 go\r\n"}.get(
                verb, b"250 ok\r\n"))
            in_data = verb == "DATA"

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=0.8)
        await c.connect()
        t0 = time.monotonic()
        with pytest.raises(aiosmtplib.SMTPTimeoutError):  # 3 x 0.3 s is fine; the 5 s final reply is not
            await send_message(c, "a@example.jp", ["b@example.com"], b"x\r\n")
        took = time.monotonic() - t0
        assert 0.9 + 0.8 <= took < 3.0, took
        assert not c.is_connected
    finally:
        server.close()
        await server.wait_closed()
