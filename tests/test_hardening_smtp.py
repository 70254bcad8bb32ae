"""The listener under hostile or careless clients, over real loopback SMTP: not an open relay
(IPv6, IPv4-mapped, sender domains), connection and recipient limits, line length, header count,
idle and DATA timeouts, and an accept that neither times out nor half-stores when slow."""

from __future__ import annotations

import asyncio
import hashlib
import re
import smtplib
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlpgate.config import Config
from dlpgate.server import Gateway
from dlpgate.smtp import GatewaySMTP, Handler, header_field_count
from dlpgate.store import Store
from tests.conftest import Sink, make_config, wait_until
from tests.test_hardening_support import message, read_reply


def smtp_config(tmp_path: Path, sink: Sink, **smtp: Any) -> Config:
    cfg = make_config(tmp_path, sink.port)
    return replace(cfg, smtp=replace(cfg.smtp, **smtp))


async def started(cfg: Config) -> Gateway:
    gw = Gateway(cfg, workers=1)
    await gw.start()
    return gw


def rows(tmp_path: Path) -> list[dict]:
    st = Store(tmp_path / "store")
    try:
        return st.list()
    finally:
        st.close()


async def banner(host: str, port: int, source: str | None = None) -> tuple[int, str, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0) if source else None)
    code, text = await read_reply(reader)
    return code, text, writer


# ------------------------------------------------------------------------------ not an open relay
async def test_ipv6_loopback_allowed_and_refused_by_the_list(tmp_path: Path, sink: Sink) -> None:
    gw = await started(smtp_config(tmp_path, sink, listen="[::1]:0"))
    try:
        def go() -> dict:
            with smtplib.SMTP("::1", gw.smtp_port, timeout=10) as c:
                return c.sendmail("a@example.jp", ["b@example.com"], message(1))

        assert await asyncio.to_thread(go) == {}
        assert len(await asyncio.to_thread(sink.handler.wait_for, 1, 10)) == 1
        # the same listener with an IPv4-only list refuses ::1 before the banner
        gw.handler.reconfigure(replace(gw.config, smtp=replace(gw.config.smtp, allowed_clients=("127.0.0.0/8",))))
        code, text, w = await banner("::1", gw.smtp_port)
        w.close()
        assert code == 554 and "5.7.1" in text
    finally:
        await gw.stop(grace=2)


async def test_ipv4_mapped_peers_are_matched_as_ipv4(tmp_path: Path, sink: Sink) -> None:
    """A dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d; the list must see 127.0.0.1."""
    gw = await started(smtp_config(tmp_path, sink, allowed_clients=("127.0.0.0/8",)))
    dual = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    dual.bind(("::", 0))
    dual.listen()
    port = dual.getsockname()[1]
    assert gw.handler is not None
    handler = gw.handler
    server = await asyncio.get_running_loop().create_server(
        lambda: GatewaySMTP(handler, hostname="gw.test", decode_data=False), sock=dual)
    try:
        def go() -> dict:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
                return c.sendmail("a@example.jp", ["b@example.com"], message(1))

        assert await asyncio.to_thread(go) == {}
        assert rows(tmp_path)[0]["client"] == "::ffff:127.0.0.1"
        code, _, w = await banner("::1", port)  # real IPv6 is not in an IPv4 list
        w.close()
        assert code == 554
        handler.reconfigure(replace(gw.config, smtp=replace(gw.config.smtp, allowed_clients=("::1/128",))))
        code, _, w = await banner("127.0.0.1", port)  # ::1 does not cover ::ffff:127.0.0.1
        w.close()
        assert code == 554
        handler.reconfigure(replace(gw.config, smtp=replace(gw.config.smtp,
                                                            allowed_clients=("::ffff:127.0.0.0/104",))))
        code, _, w = await banner("127.0.0.1", port)  # a list written in mapped form works too
        w.close()
        assert code == 220
    finally:
        server.close()
        await gw.stop(grace=2)


def test_allow_list_edge_addresses(tmp_path: Path) -> None:
    h = Handler(make_config(tmp_path, 1, smtp=replace(make_config(tmp_path, 1).smtp,
                                                      allowed_clients=("10.0.0.0/8", "fe80::/10"))), None)  # type: ignore[arg-type]
    assert h.client_allowed("10.1.2.3") and h.client_allowed("::ffff:10.1.2.3")
    assert h.client_allowed("fe80::1%eth0")
    assert not h.client_allowed("11.0.0.1") and not h.client_allowed("::ffff:11.0.0.1")
    assert not h.client_allowed("::a01:203")  # IPv4-compatible (deprecated) form is not mapped
    assert not h.client_allowed("") and not h.client_allowed("unix-socket") and not h.client_allowed("::1")


async def test_allowed_sender_domains(tmp_path: Path, sink: Sink) -> None:
    gw = await started(smtp_config(tmp_path, sink, allowed_sender_domains=("example.jp",)))
    try:
        def go() -> list[int]:
            with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=10) as c:
                c.ehlo()
                codes = [c.mail("x@evil.example")[0]]
                c.rset()
                codes.append(c.mail("x@sub.example.jp")[0])  # a subdomain is another domain
                c.rset()
                codes.append(c.mail("Alice@EXAMPLE.JP")[0])
                codes.append(c.rcpt("b@example.com")[0])
                codes.append(c.data(message(1))[0])
                codes.append(c.mail("<>")[0])  # bounces from the internal servers still pass
                return codes

        assert await asyncio.to_thread(go) == [553, 553, 250, 250, 250, 250]
        assert len(rows(tmp_path)) == 1
    finally:
        await gw.stop(grace=2)


# ------------------------------------------------------------------------------ connection limits
async def test_connections_per_client_limit(tmp_path: Path, sink: Sink) -> None:
    gw = await started(smtp_config(tmp_path, sink, max_connections_per_client=2))
    try:
        held = [await banner("127.0.0.1", gw.smtp_port) for _ in range(2)]
        assert [c for c, _, _ in held] == [220, 220]
        code, text, w = await banner("127.0.0.1", gw.smtp_port)
        w.close()
        assert code == 421 and "your address" in text
        code, _, w = await banner("127.0.0.1", gw.smtp_port, source="127.0.0.2")  # another client is served
        assert code == 220
        w.close()
        held[0][2].close()
        await wait_until(lambda: gw.handler is not None and gw.handler.sessions["127.0.0.1"] == 1, timeout=5)
        code, _, w = await banner("127.0.0.1", gw.smtp_port)  # a slot freed
        assert code == 220
        w.close()
        held[1][2].close()
    finally:
        await gw.stop(grace=2)


async def test_total_connections_limit(tmp_path: Path, sink: Sink) -> None:
    gw = await started(smtp_config(tmp_path, sink, max_connections=3))
    try:
        held = [await banner("127.0.0.1", gw.smtp_port, source=f"127.0.0.{i}") for i in (2, 3, 4)]
        assert [c for c, _, _ in held] == [220, 220, 220]
        code, text, w = await banner("127.0.0.1", gw.smtp_port, source="127.0.0.5")
        w.close()
        assert code == 421 and "Too many connections" in text
        for _, _, hw in held:
            hw.close()
    finally:
        await gw.stop(grace=2)


# ------------------------------------------------------------------------------ per-message limits
async def test_recipient_limit_452(tmp_path: Path, sink: Sink) -> None:
    gw = await started(smtp_config(tmp_path, sink, max_recipients=3))
    try:
        def go() -> tuple[list[int], int]:
            with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=10) as c:
                c.ehlo()
                c.mail("a@example.jp")
                codes = [c.rcpt(f"u{i}@example.com")[0] for i in range(5)]
                return codes, c.data(message(1))[0]

        codes, data = await asyncio.to_thread(go)
        assert codes == [250, 250, 250, 452, 452] and data == 250
        got = await asyncio.to_thread(sink.handler.wait_for, 1, 10)
        assert sorted(got[0].rcpt_tos) == ["u0@example.com", "u1@example.com", "u2@example.com"]
    finally:
        await gw.stop(grace=2)


async def test_command_and_data_line_length(tmp_path: Path, sink: Sink) -> None:
    gw = await started(smtp_config(tmp_path, sink))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.smtp_port)
        await read_reply(reader)
        writer.write(b"EHLO " + b"h" * 600 + b"\r\n")
        assert (await read_reply(reader))[0] == 500
        for cmd in (b"EHLO client.example.jp", b"MAIL FROM:<a@example.jp>", b"RCPT TO:<b@example.com>", b"DATA"):
            writer.write(cmd + b"\r\n")
            await read_reply(reader)
        writer.write(b"Subject: long\r\n\r\n" + b"x" * 2000 + b"\r\n.\r\n")
        code, text = await read_reply(reader)
        assert code == 500 and "Line too long" in text
        writer.write(b"NOOP\r\n")  # the session survives and stays usable
        assert (await read_reply(reader))[0] == 250
        writer.close()
        assert rows(tmp_path) == []
    finally:
        await gw.stop(grace=2)


def many_headers(n: int) -> bytes:
    head = "".join(f"X-Trace-{i}: hop {i}\r\n\tcontinued\r\n" for i in range(n))
    return (f"From: a@example.jp\r\nTo: b@example.com\r\n{head}Subject: h\r\n\r\nbody\r\n").encode()


def test_header_field_count_ignores_continuations_and_body() -> None:
    assert header_field_count(many_headers(10), 1000) == 13
    assert header_field_count(b"A: 1\nB: 2\n\nC: not a header\n", 1000) == 2
    assert header_field_count(b"A: 1\r\n" * 5000, 100) == 101  # stops counting past the limit


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b"A: 1", b" cont", b"\tcont", b"x", "本".encode(),
                                 b"\r\n\r\n", b"\n\n"]), max_size=40), st.integers(0, 30))
def test_header_field_count_ends_the_header_where_it_always_did(chunks: list[bytes], stop: int) -> None:
    """The header ends at the first blank line, CRLF or bare LF, whichever comes first; the bare-LF
    search is only bounded by the CRLF one (it cannot end the header later)."""
    data = b"".join(chunks)
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    head = data[:min(ends)] if ends else data
    expected = min(len(re.findall(rb"^[^ \t\r\n]", head, re.M)), stop + 1)
    assert header_field_count(data, stop) == expected


async def test_header_count_limit_552(tmp_path: Path, sink: Sink) -> None:
    gw = await started(smtp_config(tmp_path, sink, max_header_count=50))
    try:
        def go(data: bytes) -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=10) as c:
                c.ehlo()
                c.mail("a@example.jp")
                c.rcpt("b@example.com")
                return c.data(data)

        code, text = await asyncio.to_thread(go, many_headers(48))  # 51 fields
        assert code == 552 and b"header" in text
        code, _ = await asyncio.to_thread(go, many_headers(47))  # 50 fields, 97 lines
        assert code == 250
        assert len(rows(tmp_path)) == 1
    finally:
        await gw.stop(grace=2)


# ------------------------------------------------------------------------------ timeouts
async def closed_after(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, drip: bytes,
                       every: float, limit: float) -> float:
    """Send `drip` one byte at a time every `every` s; seconds until the server closes (or fail)."""
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < limit:
        try:
            writer.write(drip[i % len(drip):i % len(drip) + 1])
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1000), every)
            if data == b"":
                return time.monotonic() - t0
        except TimeoutError:
            pass
        except ConnectionError:
            return time.monotonic() - t0
        i += 1
    raise AssertionError("the server kept a trickling client")


async def test_idle_client_trickling_bytes_is_dropped(tmp_path: Path, sink: Sink) -> None:
    gw = await started(smtp_config(tmp_path, sink, timeout=0.6))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.smtp_port)
        await read_reply(reader)
        # "one byte a minute", scaled: a byte every 0.15 s never completes a command in time
        took = await closed_after(reader, writer, b"EHLO slow.example.jp", 0.15, 5.0)
        assert took < 2.0
        await wait_until(lambda: gw.handler is not None and gw.handler.total == 0, timeout=5)
    finally:
        await gw.stop(grace=2)


async def test_data_phase_has_its_own_budget(tmp_path: Path, sink: Sink) -> None:
    gw = await started(smtp_config(tmp_path, sink, timeout=5.0, data_timeout=0.8))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.smtp_port)
        await read_reply(reader)
        for cmd in (b"EHLO c.example.jp", b"MAIL FROM:<a@example.jp>", b"RCPT TO:<b@example.com>", b"DATA"):
            writer.write(cmd + b"\r\n")
            await read_reply(reader)
        # whole lines, each well inside the idle timeout: only a DATA budget stops this client
        took = await closed_after(reader, writer, b"Subject: s\r\n\r\nline\r\n", 0.1, 6.0)
        assert took < 3.0
        assert rows(tmp_path) == []
    finally:
        await gw.stop(grace=2)


async def test_slow_accept_is_not_cut_by_the_idle_timer(tmp_path: Path, sink: Sink,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    gw = await started(smtp_config(tmp_path, sink, timeout=0.5))
    try:
        assert gw.pipeline is not None
        real = gw.pipeline.receive

        async def slow(env: Any, data: bytes) -> Any:
            await asyncio.sleep(1.5)  # a long scan: three idle timeouts
            return await real(env, data)

        monkeypatch.setattr(gw.pipeline, "receive", slow)

        def go() -> dict:
            with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=10) as c:
                return c.sendmail("a@example.jp", ["b@example.com"], message(1))

        assert await asyncio.to_thread(go) == {}
        assert len(await asyncio.to_thread(sink.handler.wait_for, 1, 10)) == 1
    finally:
        await gw.stop(grace=2)


async def test_client_vanishing_mid_accept_leaves_no_half_stored_message(
        tmp_path: Path, sink: Sink, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = await started(smtp_config(tmp_path, sink))
    try:
        assert gw.pipeline is not None
        real = gw.pipeline.receive
        done: list[str] = []

        async def slow(env: Any, data: bytes) -> Any:
            await asyncio.sleep(0.5)
            reply = await real(env, data)
            done.append(str(reply))
            return reply

        monkeypatch.setattr(gw.pipeline, "receive", slow)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.smtp_port)
        await read_reply(reader)
        for cmd in (b"EHLO c.example.jp", b"MAIL FROM:<a@example.jp>", b"RCPT TO:<b@example.com>", b"DATA"):
            writer.write(cmd + b"\r\n")
            await read_reply(reader)
        writer.write(message(1) + b".\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.transport.abort()  # gone before the 250
        await wait_until(lambda: done, timeout=5)
        assert done[0].startswith("250")
        r = rows(tmp_path)
        assert len(r) == 1
        # exactly the committed message's bytes, in the one spool segment; no file of its own
        assert sorted((tmp_path / "store" / "spool").glob("*/*.eml")) == []
        assert len(sorted((tmp_path / "store" / "spool").glob("*/*.seg"))) == 1
        st = Store(tmp_path / "store")
        try:
            assert hashlib.sha256(st.read_spool(r[0]["id"])).hexdigest() == st.get(r[0]["id"])["sha256"]
        finally:
            st.close()
        assert len(await asyncio.to_thread(sink.handler.wait_for, 1, 10)) == 1
    finally:
        await gw.stop(grace=2)


async def test_idle_deadline_counts_from_the_last_command(tmp_path: Path, sink: Sink) -> None:
    """One idle timer per connection, moved by every command: a client busy for three timeouts
    stays connected, and is dropped one timeout after it stops."""
    gw = await started(smtp_config(tmp_path, sink, timeout=0.6))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.smtp_port)
        await read_reply(reader)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.8:
            writer.write(b"NOOP\r\n")
            code, _ = await read_reply(reader)
            assert code == 250
            last = time.monotonic()
            await asyncio.sleep(0.25)
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # closed for idleness
        assert 0.45 < time.monotonic() - last < 1.3
        writer.close()
    finally:
        await gw.stop(grace=2)
