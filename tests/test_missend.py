"""Mis-send prevention over real SMTP: exposed recipient lists, per-class delay, first contact."""

from __future__ import annotations

import asyncio
import email
import re
import shutil
import smtplib
import time
from dataclasses import replace
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

import pytest

from dlpgate.cli import main as cli_main
from dlpgate.config import DelayConfig, PolicyConfig
from dlpgate.server import Gateway
from dlpgate.store import Store
from tests.conftest import Sink, make_config, wait_until

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = [f"resident{i:02d}@town{i % 12}.example.com" for i in range(30)]


def notice(to: list[str], cc: list[str] = (), subject: str = "説明会のお知らせ") -> bytes:  # type: ignore[assignment]
    m = EmailMessage(policy=SMTP_POLICY)
    m["From"] = "koho@example.jp"
    if to:
        m["To"] = ", ".join(to)
    if cc:
        m["Cc"] = ", ".join(cc)
    m["Subject"] = subject
    m.set_content("市民説明会を開催します。\n日時: 12月1日 14時\n")
    return m.as_bytes()


def rules_with(tmp: Path, action: str) -> Path:
    d = tmp / "rules"
    shutil.copytree(ROOT / "rules", d)
    p = d / "policy.toml"
    text = p.read_text(encoding="utf-8")
    new = re.sub(r'(id = "exposed_recipients"\naction = )"hold"', f'\\1"{action}"', text)
    assert new != text
    p.write_text(new, encoding="utf-8")
    return d


async def gateway_with(tmp: Path, sink: Sink, rules: Path | None = None, delay: DelayConfig | None = None) -> Gateway:
    cfg = make_config(tmp, sink.port)
    if rules is not None:
        cfg = replace(cfg, policy=PolicyConfig(internal_domains=("example.jp",), rules=str(rules)))
    if delay is not None:
        cfg = replace(cfg, delay=delay)
    gw = Gateway(cfg, workers=1)
    await gw.start()
    return gw


def send(port: int, rcpts: list[str], data: bytes, sender: str = "koho@example.jp") -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
        c.ehlo()
        c.mail(sender)
        for r in rcpts:
            c.rcpt(r)
        code, text = c.data(data)
        return f"{code} {text.decode()}"


async def test_thirty_external_addresses_in_to_are_held(tmp_path: Path, sink: Sink) -> None:
    gw = await gateway_with(tmp_path, sink)
    try:
        reply = await asyncio.to_thread(send, gw.smtp_port, EXTERNAL, notice(EXTERNAL))
        assert reply.startswith("250") and "held" in reply
        st = Store(tmp_path / "store")
        row = st.list()[0]
        assert row["state"] == "held" and "exposed_recipients" in row["rules"]
        f = [x for x in row["findings"] if x["detector"] == "exposed_recipients"]
        assert f and f[0]["count"] == 30 and f[0]["severity"] == "high"  # 12 domains > high_domains (10)
        assert "resident" not in row["reason"] and "@" not in row["reason"]  # never echoes addresses
        await asyncio.sleep(0.5)
        assert not [m for m in sink.handler.messages if m.rcpt_tos == EXTERNAL]
    finally:
        await gw.stop(grace=2)


async def test_reject_action_tells_the_sender_to_use_bcc(tmp_path: Path, sink: Sink) -> None:
    gw = await gateway_with(tmp_path, sink, rules=rules_with(tmp_path, "reject"))
    try:
        reply = await asyncio.to_thread(send, gw.smtp_port, EXTERNAL, notice(EXTERNAL))
        assert reply.startswith("550 5.7.1")
        assert "Bcc" in reply and "resident" not in reply
        assert [r["state"] for r in Store(tmp_path / "store").list()] == ["rejected"]
    finally:
        await gw.stop(grace=2)


async def test_rewrite_hides_every_recipient_from_the_others(tmp_path: Path, sink: Sink) -> None:
    gw = await gateway_with(tmp_path, sink, rules=rules_with(tmp_path, "rewrite"))
    try:
        internal = "kacho@example.jp"
        original = notice([*EXTERNAL[:20], internal], cc=EXTERNAL[20:])
        reply = await asyncio.to_thread(send, gw.smtp_port, [*EXTERNAL, internal], original)
        assert reply.startswith("250") and "held" not in reply
        got = await asyncio.to_thread(sink.handler.wait_for, 1, 10)
        assert sorted(got[0].rcpt_tos) == sorted([*EXTERNAL, internal])  # nobody dropped
        msg = email.message_from_bytes(got[0].data)
        visible = " ".join(str(msg.get_all(h, [])) for h in ("To", "Cc"))
        assert not any(a in visible for a in EXTERNAL)
        assert "undisclosed-recipients:;" in visible and internal in visible
        # everything but To/Cc kept byte for byte (the body and the other headers)
        body = original.split(b"\r\n\r\n", 1)[1]
        assert got[0].data.endswith(body)
        assert b"Subject: =?utf-8?" in got[0].data
        st = Store(tmp_path / "store")
        mid = st.list()[0]["id"]
        rewrite = [e for e in st.audit_entries(msg_id=mid) if e.event == "accepted"][0].detail
        assert "hid 30 external" in rewrite["rewrite"] and len(rewrite["original_sha256"]) == 64
    finally:
        await gw.stop(grace=2)


async def test_thirty_addresses_in_bcc_only_are_delivered(tmp_path: Path, sink: Sink) -> None:
    gw = await gateway_with(tmp_path, sink)
    try:
        reply = await asyncio.to_thread(send, gw.smtp_port, EXTERNAL, notice(["koho@example.jp"]))
        assert reply.startswith("250") and "held" not in reply
        got = await asyncio.to_thread(sink.handler.wait_for, 1, 10)
        assert sorted(got[0].rcpt_tos) == sorted(EXTERNAL)
    finally:
        await gw.stop(grace=2)


async def test_delay_by_recipient_class(tmp_path: Path, sink: Sink) -> None:
    gw = await gateway_with(tmp_path, sink, delay=DelayConfig(seconds=5, internal=0, external=2))
    try:
        t0 = time.monotonic()
        await asyncio.to_thread(send, gw.smtp_port, ["kacho@example.jp"], notice(["kacho@example.jp"]))
        await asyncio.to_thread(send, gw.smtp_port, ["kacho@example.jp", "p@partner.example.com"],
                                notice(["kacho@example.jp", "p@partner.example.com"]))
        first = await asyncio.to_thread(sink.handler.wait_for, 1, 5)
        assert time.monotonic() - t0 < 1.5 and first[0].rcpt_tos == ["kacho@example.jp"]
        both = await asyncio.to_thread(sink.handler.wait_for, 2, 10)
        assert time.monotonic() - t0 >= 1.9  # the longest class (external, 2 s) applies
        assert len(both[1].rcpt_tos) == 2
    finally:
        await gw.stop(grace=2)


async def test_first_contact_is_learned_across_messages(tmp_path: Path, sink: Sink) -> None:
    gw = await gateway_with(tmp_path, sink)
    try:
        for _ in range(2):
            await asyncio.to_thread(send, gw.smtp_port, ["p@newpartner.example.org"], notice(["p@newpartner.example.org"]))
        await asyncio.to_thread(send, gw.smtp_port, ["p@newpartner.example.org"], notice(["p@newpartner.example.org"]),
                                "other@example.jp")
        st = Store(tmp_path / "store")
        rows = st.list()
        fc = [[f for f in r["findings"] if f["detector"] == "first_contact"] for r in rows]
        assert fc[0] and fc[0][0]["severity"] == "low"  # never mailed before
        assert not fc[1]  # learned from the first message
        assert fc[2]  # another sender's first contact (scope: sender)
        assert all(r["state"] != "held" for r in rows)  # low: logged, not held, by default
        # history is domain counts, never residents' addresses
        doms = {r[0] for r in st.conn.execute("SELECT domain FROM contacts")}
        assert doms == {"newpartner.example.org"}
        await wait_until(lambda: len(sink.handler.messages) == 3)
    finally:
        await gw.stop(grace=2)


def test_rules_check_names_a_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", d)
    p = d / "policy.toml"
    p.write_text(p.read_text(encoding="utf-8").replace('min_severity = "medium" }', 'min_severty = "medium" }', 1),
                 encoding="utf-8")
    assert cli_main(["rules", "check", str(d)]) == 2
    err = capsys.readouterr().err
    assert "policy.toml" in err and "min_severty" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["rules", "check", str(ROOT / "rules")]) == 0


def test_scan_explain_shows_which_rule_fired(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eml = tmp_path / "notice.eml"
    eml.write_bytes(notice(EXTERNAL))
    rc = cli_main(["scan", "--explain", str(eml)])
    out = capsys.readouterr().out
    assert rc == 1
    assert re.search(r"FIRED\s+exposed_recipients \[hold\]", out), out
    assert "resident" not in out
