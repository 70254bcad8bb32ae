"""Relay core over real SMTP on loopback with the real SQLite store."""

from __future__ import annotations

import asyncio
import email
import hashlib
import os
import smtplib
import time
from dataclasses import replace
from pathlib import Path

import aiosmtplib
import pytest

from dlpgate.config import DelayConfig, SmtpConfig
from dlpgate.server import Gateway
from dlpgate.store import Store, spool_span
from tests.conftest import Sink, free_port, make_config, states, wait_until

MSG = b"From: a@example.jp\r\nTo: b@example.com\r\nSubject: plain\r\nMessage-ID: <x1@example.jp>\r\n\r\nhello\r\n"


def send(port: int, sender: str, rcpts: list[str], data: bytes = MSG) -> dict:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        return c.sendmail(sender, rcpts, data)


async def start(cfg) -> Gateway:  # noqa: ANN001
    gw = Gateway(cfg, workers=1)
    await gw.start()
    return gw


async def test_ehlo_advertises_extensions(gateway: Gateway) -> None:
    c = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False)
    await c.connect()
    code, _ = await c.ehlo()
    assert code == 250
    for ext in ("size", "8bitmime", "smtputf8", "pipelining"):
        assert c.supports_extension(ext), ext
    await c.quit()


async def test_send_delay_holds_then_delivers(tmp_path: Path, sink: Sink) -> None:
    gw = await start(make_config(tmp_path, sink.port, delay=DelayConfig(seconds=2)))
    try:
        t0 = time.monotonic()
        await asyncio.to_thread(send, gw.smtp_port, "a@example.jp", ["b@example.com"])
        await asyncio.sleep(1.0)
        assert sink.handler.messages == []
        got = await asyncio.to_thread(sink.handler.wait_for, 1, 10)
        assert len(got) == 1
        assert time.monotonic() - t0 >= 1.9
        await wait_until(lambda: states(tmp_path / "store") == ["delivered"])
    finally:
        await gw.stop(grace=2)


async def test_many_recipients_one_message(gateway: Gateway, sink: Sink) -> None:
    rcpts = [f"u{i}@example.com" for i in range(60)]
    await asyncio.to_thread(send, gateway.smtp_port, "a@example.jp", rcpts)
    got = await asyncio.to_thread(sink.handler.wait_for, 1, 10)
    assert sorted(r for m in got for r in m.rcpt_tos) == sorted(rcpts)


async def test_upstream_down_then_up_delivered_once(tmp_path: Path) -> None:
    port = free_port()
    gw = await start(make_config(tmp_path, port))
    try:
        await asyncio.to_thread(send, gw.smtp_port, "a@example.jp", ["b@example.com"])
        await asyncio.sleep(1.0)  # at least one failed attempt
        st = Store(tmp_path / "store")
        row = st.list()[0]
        assert row["state"] in ("deferred", "delivering")
        sink = Sink(port)
        sink.start()
        try:
            got = await asyncio.to_thread(sink.handler.wait_for, 1, 15)
            assert len(got) == 1
            await wait_until(lambda: st.get(row["id"])["state"] == "delivered")
            await asyncio.sleep(1.0)
            assert len(sink.handler.messages) == 1  # counted once
            row = st.get(row["id"])
            assert row["state"] == "delivered" and row["attempts"] >= 2
            events = [e.event for e in st.audit_entries(msg_id=row["id"])]
            assert "deferred" in events and events[-1] == "delivered"
        finally:
            sink.stop()
    finally:
        await gw.stop(grace=2)


async def test_one_recipient_refused_other_delivered_and_dsn(gateway: Gateway, sink: Sink) -> None:
    sink.handler.rcpt_codes["bad@example.com"] = "550 5.1.1 No such user"
    await asyncio.to_thread(send, gateway.smtp_port, "alice@example.jp", ["good@example.com", "bad@example.com"])
    got = await asyncio.to_thread(sink.handler.wait_for, 2, 15)
    assert len(got) == 2
    original = [m for m in got if m.rcpt_tos == ["good@example.com"]]
    dsn = [m for m in got if m.rcpt_tos == ["alice@example.jp"]]
    assert len(original) == 1 and len(dsn) == 1
    assert dsn[0].mail_from in ("", "<>")  # null sender: a DSN never bounces back
    parsed = email.message_from_bytes(dsn[0].data)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    types = [p.get_content_type() for p in parsed.walk()]
    assert "message/delivery-status" in types and "text/rfc822-headers" in types
    assert b"bad@example.com" in dsn[0].data and b"Status: 5.1.1" in dsn[0].data
    assert b"hello" not in dsn[0].data.split(b"text/rfc822-headers")[1]  # headers only, no body
    st = Store(Path(gateway.config.store.path))
    await wait_until(lambda: st.list()[0]["state"] == "delivered")
    r = st.get(st.list()[0]["id"])
    assert {x["rcpt"]: x["state"] for x in r["recipients"]} == {"good@example.com": "delivered",
                                                               "bad@example.com": "bounced"}


async def test_no_dsn_for_null_sender(gateway: Gateway, sink: Sink) -> None:
    sink.handler.rcpt_codes["bad@example.com"] = "550 5.1.1 No such user"
    await asyncio.to_thread(send, gateway.smtp_port, "", ["bad@example.com"])
    await wait_until(lambda: states(Path(gateway.config.store.path), None) == ["bounced"])
    await asyncio.sleep(0.5)
    assert sink.handler.messages == []


async def test_disallowed_client_refused(tmp_path: Path, sink: Sink) -> None:
    cfg = make_config(tmp_path, sink.port)
    cfg = replace(cfg, smtp=replace(cfg.smtp, allowed_clients=("10.0.0.0/8",)))
    gw = await start(cfg)
    try:
        with pytest.raises(smtplib.SMTPConnectError) as ei:
            await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", gw.smtp_port, timeout=5)
        assert ei.value.smtp_code == 554
        assert b"5.7.1" in ei.value.smtp_error
    finally:
        await gw.stop(grace=2)


async def test_oversize_refused(tmp_path: Path, sink: Sink) -> None:
    cfg = make_config(tmp_path, sink.port)
    cfg = replace(cfg, smtp=replace(cfg.smtp, max_message_bytes=10_000))
    gw = await start(cfg)
    try:
        big = MSG + b"x" * 78 + b"\r\n"
        big = big * 200
        def undeclared() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=5) as c:
                c.ehlo()
                c.mail("a@example.jp")  # no SIZE: the limit bites at the end of DATA
                c.rcpt("b@example.com")
                return c.data(big)

        code, text = await asyncio.to_thread(undeclared)
        assert code == 552
        def declared() -> int:  # declared SIZE over the limit: refused at MAIL
            with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=5) as c:
                c.ehlo()
                return c.mail("a@example.jp", ["SIZE=20000"])[0]

        assert await asyncio.to_thread(declared) == 552
        assert Store(tmp_path / "store").list() == []
    finally:
        await gw.stop(grace=2)


async def test_storage_failure_answers_451_and_keeps_nothing(tmp_path: Path, sink: Sink, monkeypatch) -> None:  # noqa: ANN001
    gw = await start(make_config(tmp_path, sink.port))
    try:
        spool = tmp_path / "store" / "spool"

        import dlpgate.store.sqlite as store_mod  # the engine module that calls write_spool_file

        def broken(root: Path, msg_id: str, data: bytes, sync: bool = True) -> str:
            raise OSError(28, "No space left on device")

        def broken_sync(self: Store, rels: list[str]) -> None:
            raise OSError(28, "No space left on device")

        def broken_append(self: Store, data: bytes) -> str:
            raise OSError(28, "No space left on device")

        real_fsync = os.fsync

        def broken_fsync(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
                raise OSError(5, "Input/output error")
            real_fsync(fd)

        big = b"Subject: big\r\n\r\n" + b"x" * 300 + b"\r\n" + (b"y" * 998 + b"\r\n") * 300  # > inline size
        # a big message has a spool file of its own: its write fails
        monkeypatch.setattr(store_mod, "write_spool_file", broken)
        with pytest.raises(smtplib.SMTPDataError) as ei:
            await asyncio.to_thread(send, gw.smtp_port, "a@example.jp", ["b@example.com"], big)
        assert ei.value.smtp_code == 451
        monkeypatch.undo()
        # its file was written but the fsync before the commit fails: 451, file and row gone
        monkeypatch.setattr(store_mod.Store, "sync_spool", broken_sync)
        with pytest.raises(smtplib.SMTPDataError) as ei:
            await asyncio.to_thread(send, gw.smtp_port, "a@example.jp", ["b@example.com"], big)
        assert ei.value.smtp_code == 451
        monkeypatch.undo()
        # a small one goes to the spool segment: its append fails, then the segment's fsync fails
        monkeypatch.setattr(store_mod.Store, "append_segment", broken_append)
        with pytest.raises(smtplib.SMTPDataError) as ei:
            await asyncio.to_thread(send, gw.smtp_port, "a@example.jp", ["b@example.com"])
        assert ei.value.smtp_code == 451
        monkeypatch.undo()
        monkeypatch.setattr(store_mod.os, "fsync", broken_fsync)
        with pytest.raises(smtplib.SMTPDataError) as ei:
            await asyncio.to_thread(send, gw.smtp_port, "a@example.jp", ["b@example.com"])
        assert ei.value.smtp_code == 451
        monkeypatch.undo()
        assert Store(tmp_path / "store").list() == []
        assert list(spool.glob("*/*.eml")) == []
        # space comes back: the same client succeeds
        await asyncio.to_thread(send, gw.smtp_port, "a@example.jp", ["b@example.com"])
        assert len(await asyncio.to_thread(sink.handler.wait_for, 1, 10)) == 1
    finally:
        await gw.stop(grace=2)


async def test_envelope_and_client_stored(gateway: Gateway, sink: Sink) -> None:
    def go() -> None:
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as c:
            c.ehlo("mx1.example.jp")
            c.sendmail("a@example.jp", ["b@example.com", "c@example.org"], MSG)

    await asyncio.to_thread(go)
    await asyncio.to_thread(sink.handler.wait_for, 1, 10)
    st = Store(Path(gateway.config.store.path))
    r = st.get(st.list()[0]["id"])
    assert r["sender"] == "a@example.jp"
    assert [x["rcpt"] for x in r["recipients"]] == ["b@example.com", "c@example.org"]
    assert r["client"] == "127.0.0.1" and r["helo"] == "mx1.example.jp" and r["arrived"] > 0
    span = spool_span(r["spool"])  # a small message: a span of a spool segment
    assert span is not None and span[2] == r["size"]
    spool = Path(gateway.config.store.path) / span[0]
    assert spool.stat().st_mode & 0o777 == 0o600
    raw = Store(Path(gateway.config.store.path)).read_spool(r["id"])
    assert hashlib.sha256(raw).hexdigest() == r["sha256"] and raw.startswith(b"From:")


async def test_sigterm_style_stop_finishes_and_restart_recovers(tmp_path: Path, sink: Sink) -> None:
    cfg = make_config(tmp_path, sink.port, delay=DelayConfig(seconds=3600))
    gw = await start(cfg)
    await asyncio.to_thread(send, gw.smtp_port, "a@example.jp", ["b@example.com"])
    await gw.stop(grace=2)
    st = Store(tmp_path / "store")
    # simulate a crash mid-delivery, and an overdue delayed message
    with st.transaction() as c:
        c.execute("UPDATE messages SET state='delivering', prev_state='delayed', due_at=?", (time.time() - 5,))
    gw2 = await start(replace(cfg, smtp=SmtpConfig(listen="127.0.0.1:0", hostname="gw.test")))
    try:
        got = await asyncio.to_thread(sink.handler.wait_for, 1, 10)
        assert len(got) == 1
        events = [e.event for e in st.audit_entries()]
        assert "recovered" in events
    finally:
        await gw2.stop(grace=2)
