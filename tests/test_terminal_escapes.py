"""Issue 15 item 3: sender-chosen text (subject, file names) cannot drive an approver's terminal.

A mail with escape sequences, a bare CR and a bidi override in its subject and attachment name
goes through a real gateway; every human CLI view of it shows those characters as `\\uXXXX`."""

from __future__ import annotations

import asyncio
import json
from email.header import Header
from email.message import EmailMessage
from pathlib import Path

from dlpgate.terminal import for_terminal
from tests.conftest import Sink, running
from tests.conftest import smtp_data as send
from tests.test_approval_loop import cli, gateway_config, held_id
from tests.test_approval_support import synthetic_numbers

SENDER = "tanaka@soumu.example.jp"
HOSTILE = "\x1b[2K\r承認済み: 問題なし \x1b[8m"
NAME = "invoice\u202etxt.exe"
BAD = ("\x1b", "\r", "\u202e", "\x9b", "\x07")


def test_for_terminal_escapes_controls_and_bidi_only() -> None:
    assert for_terminal("名簿\tok\n") == "名簿\tok\n"
    assert for_terminal("\x1b[8m\r\u202e\x9b\u2028") == "\\u001b[8m\\u000d\\u202e\\u009b\\u2028"
    # a JSON line stays valid and means the same
    line = json.dumps({"s": "\u202e\x85"}, ensure_ascii=False)
    assert json.loads(for_terminal(line)) == {"s": "\u202e\x85"}


async def test_cli_views_show_hostile_text_inert(tmp_path: Path, sink: Sink) -> None:
    cfg, c = gateway_config(tmp_path, sink)
    numbers = synthetic_numbers(3, seed=9)
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = "partner@example.com"
    msg["Subject"] = "placeholder"
    msg.set_content("マイナンバー\n" + "\n".join(numbers) + "\n")
    msg.add_attachment(b"hello", maintype="application", subtype="octet-stream", filename=NAME)
    # an encoded word carries the control characters (a header line itself cannot hold a CR)
    encoded = Header(HOSTILE, "utf-8").encode().encode()
    raw = msg.as_bytes().replace(b"Subject: placeholder", b"Subject: " + encoded)
    async with running(cfg) as gw:
        code, reply = await asyncio.to_thread(send, gw.smtp_port, SENDER, ["partner@example.com"], raw)
        assert code == 250, reply
        mid = held_id(reply)
        outputs = {}
        for argv in (("quarantine", "list"), ("quarantine", "show", mid), ("audit", "export"), ("log", "search"),
                     ("quarantine", "list", "--json"), ("quarantine", "show", mid, "--json")):
            code, out, err = await cli(*argv, "--config", c)
            assert code == 0, err
            outputs[" ".join(argv)] = out + err
    for where, out in outputs.items():
        for ch in BAD:
            assert ch not in out, f"{ch!r} reaches the terminal through {where}"
    assert "\\u001b[8m" in outputs[f"quarantine show {mid}"]  # shown, not obeyed
    shown = json.loads(outputs[f"quarantine show {mid} --json"])
    assert shown["subject"].endswith("問題なし \x1b[8m")  # JSON keeps the value (a JSON escape is no escape sequence)


def test_offline_scan_output_is_masked_and_inert(tmp_path: Path) -> None:
    import io

    from dlpgate.offline_scan import run
    from tests.test_leakproof_masking import leaks

    n = synthetic_numbers(1, seed=5)[0]
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = "partner@example.com"
    msg["Subject"] = "名簿"
    msg.set_content("マイナンバー " + n + "\n")
    name = f"名簿_{n[:4]}\u3000{n[4:8]}\u3000{n[8:]}\x1b[8m.csv"
    msg.add_attachment(f"氏名,個人番号\n山田,{n}\n".encode(), maintype="text", subtype="csv", filename=name)
    p = tmp_path / "m.eml"
    p.write_bytes(msg.as_bytes())
    for as_json in (False, True):
        out, err = io.StringIO(), io.StringIO()
        assert run([str(p)], as_json=as_json, rules_dir=None, explain=True, out=out, err=err) == 1
        text = out.getvalue() + err.getvalue()
        assert "名簿_" in text and not leaks(text, n) and "\x1b" not in text, text
