"""Issue 15 item 1: masking uses the scanner's own candidate finding, so no identifier the scanner
can see escapes it — checked as a property over generated texts, then on every output path of a
real gateway (SMTP in on loopback, a real upstream sink, the CLI on the same store).

All identifiers are synthetic My Numbers with a valid check digit.
"""

from __future__ import annotations

import asyncio
import email
import json
import logging
import re
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from dlpgate import metrics
from dlpgate.masking import mask_number, mask_text
from dlpgate.scan.normalize import RAW_DIGITS, RAW_SEPARATORS, char_class, normalise
from dlpgate.scan.scanner import _RAW_RUN, Scanner
from dlpgate.scan.spans import RAW_RUN_PATTERN
from dlpgate.store import Store
from tests.conftest import Sink
from tests.test_approval_loop import cli, gateway_config, held_id, poke, wait_for
from tests.test_approval_support import my_number, synthetic_numbers

SCANNER = Scanner.load()
FULL = str.maketrans("0123456789", "０１２３４５６７８９")
KEYWORDS = ("個人番号", "マイナンバー", "my number", "ＭＹ　ＮＵＭＢＥＲ", "共通番号")


def leaks(text: str, digits: str) -> bool:
    """Whether `text` holds `digits` in sequence, whatever width or separators sit between them
    (only letters and digits count as breaking the sequence)."""
    folded = "".join(c for c in normalise(text) if c.isalnum())
    folded = "".join(str(int(c)) if c.isdigit() else c for c in folded)
    return digits in folded


def test_spans_use_the_scanners_run_pattern() -> None:
    # one candidate definition: if the scanner's run changes, masking changes with it
    assert RAW_RUN_PATTERN == _RAW_RUN.pattern
    from dlpgate.scan.spans import MASK_RUN_PATTERN

    # masking's run is the scanner's with more room between digits: same digits, every separator
    # the scanner takes among its own (test_mask_runs_cover_the_scanners_runs checks the matches)
    assert MASK_RUN_PATTERN.startswith(char_class(RAW_DIGITS) + "(?:")
    assert all(re.fullmatch(MASK_RUN_PATTERN, f"12{sep}34") for sep in RAW_SEPARATORS)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=RAW_DIGITS[:12] + RAW_SEPARATORS + "ab\t\u200b", max_size=40))
def test_mask_runs_cover_the_scanners_runs(text: str) -> None:
    """Every candidate run the scanner sees lies inside one run masking sees."""
    from dlpgate.scan.spans import _RUN

    mask_runs = [m.span() for m in _RUN.finditer(text)]
    for m in _RAW_RUN.finditer(text):
        assert any(a <= m.start() and m.end() <= b for a, b in mask_runs), (text, m.group())


def test_masking_keeps_a_margin_beyond_the_scanner() -> None:
    n = my_number("12345678901")
    for sep in (" - ", "  ", "\u3000\u3000", " ー ", "--", "．．", "\t", " \u3000"):
        out = mask_text(f"個人番号 {n[:4]}{sep}{n[4:8]}{sep}{n[8:]}")
        assert not leaks(out, n), (sep, out)


def test_issue_subject_is_masked() -> None:
    n = my_number("12345678901")
    for sep in ("\u3000", "–", "—", "―", "‑", "‒", "﹣", "．", "ｰ", " ", "-", "ー", "－", "."):
        subject = f"個人番号 {n[:4]}{sep}{n[4:8]}{sep}{n[8:]}"
        out = mask_text(subject)
        assert not leaks(out, n), (sep, out)
        assert out == f"個人番号 {n[:4]}********"


@st.composite
def identifier_texts(draw: st.DrawFn) -> tuple[str, str]:
    digits = my_number("".join(str(draw(st.integers(0, 9))) for _ in range(11)))
    grouped = draw(st.booleans())
    chars = []
    for i, d in enumerate(digits):
        if grouped and i in (4, 8):
            chars.append(draw(st.sampled_from(RAW_SEPARATORS)))
        chars.append(d.translate(FULL) if draw(st.booleans()) else d)
    number = "".join(chars)
    keyword = draw(st.sampled_from(KEYWORDS))
    gap = draw(st.sampled_from(("", " ", "\u3000", ": ", "：", "は")))
    filler = draw(st.text(alphabet="あいうabc 、。\n", max_size=20))
    text = (f"{filler}{keyword}{gap}{number}{filler}" if draw(st.booleans())
            else f"{filler}{number}{gap}{keyword}{filler}")
    return text, digits


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identifier_texts())
def test_no_identifier_the_scanner_finds_survives_masking(case: tuple[str, str]) -> None:
    text, digits = case
    found = SCANNER.scan("subject", text).findings
    assume(any(f.detector == "my_number" for f in found))
    out = mask_text(text)
    assert not leaks(out, digits), (text, out)
    # masking is stable and keeps only the first four digits
    assert mask_text(out) == out


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_mask_of_any_text_leaves_no_long_run_the_scanner_reads(text: str) -> None:
    out = mask_text(text)
    for m in _RAW_RUN.finditer(out):
        assert sum(c.isdigit() for c in m.group()) < 8, (text, out)


# ----------------------------------------------------------------------------- every output path

SENDER = "tanaka@soumu.example.jp"
PARTNER = "partner@example.com"
BOUNCER = "gone@example.com"


def subject_number(n: str) -> str:
    return f"個人番号 {n[:4]}\u3000{n[4:8]}\u3000{n[8:]}"


def leaky_mail(n: str, m: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = f"{PARTNER}, {BOUNCER}"
    msg["Subject"] = subject_number(n)
    msg.set_content(f"マイナンバー {m[:4]}ー{m[4:8]}ー{m[8:]} をお送りします。\n")
    csv = f"氏名,個人番号\n山田,{n[:4]}―{n[4:8]}―{n[8:]}\n".encode()
    msg.add_attachment(csv, maintype="text", subtype="csv", filename=f"名簿_{n[:4]}–{n[4:8]}–{n[8:]}.csv")
    return msg.as_bytes()


def decoded(raw: bytes) -> str:
    """Every header (decoded) and every text part of a message, as one string."""
    msg = email.message_from_bytes(raw, policy=default_policy)
    out = [f"{k}: {v}" for k, v in msg.items()]
    for part in msg.walk():
        out += [f"{k}: {v}" for k, v in part.items()]
        if part.get_content_type() == "text/rfc822-headers":  # returned headers: decode their words too
            returned = email.message_from_string(part.get_content(), policy=default_policy)
            out += [part.get_content()] + [f"{k}: {v}" for k, v in returned.items()]
        elif part.get_content_maintype() == "text":
            out.append(part.get_content())
        elif part.get_content_type() == "message/delivery-status":
            out.append(part.as_string())
    return "\n".join(out)


async def test_every_output_path_is_masked(tmp_path: Path, sink: Sink, capfd: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="dlpgate")
    n, m = synthetic_numbers(2, seed=1515)
    sink.handler.rcpt_codes[BOUNCER] = "550 5.1.1 no such user " + n  # the upstream echoing a number
    cfg, c = gateway_config(tmp_path, sink)
    from tests.conftest import running
    from tests.conftest import smtp_data as send

    checked: dict[str, str] = {}
    async with running(cfg) as gw:
        code, reply = await asyncio.to_thread(send, gw.smtp_port, SENDER, [PARTNER, BOUNCER], leaky_mail(n, m))
        assert code == 250, reply
        checked["smtp reply"] = reply
        mid = held_id(reply)
        poke(gw)
        h = sink.handler
        await wait_for(lambda: h.to(SENDER) and h.to("kacho@example.jp"))
        checked["notice to sender"] = decoded(h.to(SENDER)[0].data)
        checked["notice to approver"] = decoded(h.to("kacho@example.jp")[0].data)

        st_ = Store(tmp_path / "store")
        try:
            row = st_.get(mid)
        finally:
            st_.close()
        assert row["state"] == "held" and any(f["detector"] == "my_number" for f in row["findings"])
        checked["stored subject"] = row["subject"]
        checked["stored parts, findings, attachments"] = json.dumps(
            [row["parts"], row["findings"], row.get("attachments"), row["reason"]], ensure_ascii=False)

        for argv in (("quarantine", "list"), ("quarantine", "list", "--json"), ("quarantine", "show", mid),
                     ("quarantine", "show", mid, "--json")):
            code, out, err = await cli(*argv, "--config", c)
            assert code == 0, err
            assert "名簿_" in out or "個人番号" in out or mid in out
            checked[" ".join(argv).replace(mid, "ID")] = out + err

        reason = f"ok, checked {n[:4]}\u3000{n[4:8]}\u3000{n[8:]}"
        code, out, err = await cli("quarantine", "release", mid, "--approver", "kacho@example.jp",
                                   "--reason", reason, "--config", c)
        assert code == 0, err
        checked["release output"] = out + err
        poke(gw)
        await wait_for(lambda: h.to(PARTNER) and len(h.to(SENDER)) >= 3)
        sender_mail = [decoded(x.data) for x in h.to(SENDER)]
        dsn = [t for t in sender_mail if "delivery-status" in t]
        assert dsn, "the bounce of BOUNCER reached the sender"
        checked["dsn"] = "\n".join(dsn)
        checked["notice after decision"] = "\n".join(t for t in sender_mail if "delivery-status" not in t)
        # the released original goes out unchanged: that is the approved content, not an output path

        for argv in (("audit", "export"), ("audit", "export", "--json"), ("audit", "export", "--id", mid, "--json"),
                     ("log", "search"), ("log", "search", "--json")):
            code, out, err = await cli(*argv, "--config", c)
            assert code == 0, err
            checked[" ".join(argv)] = out + err
        assert mid in checked["audit export --json"]
    checked["metrics"] = generate_latest(metrics.REGISTRY).decode()
    captured = capfd.readouterr()
    checked["stderr/stdout (all processes)"] = captured.out + captured.err
    checked["log records"] = "\n".join(
        f"{r.getMessage()} {json.dumps({k: str(v) for k, v in r.__dict__.items()}, ensure_ascii=False)}"
        for r in caplog.records)
    for where, text in checked.items():
        for digits in (n, m):
            assert not leaks(text, digits), f"{mask_number(digits)} leaks through {where}"
    # the masked forms are there: the paths were really exercised
    assert mask_number(n) in checked["stored subject"]
    assert mask_number(n) in checked["quarantine show ID"]


def test_log_formatters_mask_what_a_caller_forgot() -> None:
    from dlpgate.logs import JsonFormatter, TextFormatter

    n = synthetic_numbers(1, seed=3)[0]
    spaced = f"{n[:4]}\u3000{n[4:8]}\u3000{n[8:]}"
    try:
        raise ValueError(f"bad part {spaced}")
    except ValueError:
        import sys

        exc = sys.exc_info()
    rec = logging.LogRecord("dlpgate.test", logging.ERROR, __file__, 1, "subject %s", (spaced,), exc)
    rec.detail = f"part {spaced}"
    rec.msg_id = "0123456789abcdef01"
    for fmt in (JsonFormatter(), TextFormatter("%(message)s")):
        out = fmt.format(rec)
        assert not leaks(out, n), out
        assert "0123456789abcdef01" in out  # ids are left alone


async def test_dsn_returns_only_identifying_headers_masked(tmp_path: Path, sink: Sink) -> None:
    """Item 5: a bounce of delivered (clean) mail carries the original's Date/From/To/Cc/Subject/
    Message-ID, masked, and nothing else of it: no other header, no body."""
    from tests.conftest import make_config, running, send_ok

    n = synthetic_numbers(1, seed=77)[0]
    sink.handler.rcpt_codes[BOUNCER] = "550 5.1.1 unknown user"
    raw = (f"From: {SENDER}\r\nTo: {BOUNCER}\r\nSubject: order {n[:4]}\u3000{n[4:8]}\u3000{n[8:]}\r\n"
           f"Message-ID: <dsn-test@example.jp>\r\nX-Internal-Note: secret routing\r\n"
           f"Content-Type: text/plain; charset=utf-8\r\n\r\nbody text that must not come back\r\n").encode()
    async with running(make_config(tmp_path, sink.port)) as gw:
        await asyncio.to_thread(send_ok, gw.smtp_port, SENDER, [BOUNCER], raw)
        await wait_for(lambda: sink.handler.to(SENDER), timeout=30)
    dsn = email.message_from_bytes(sink.handler.to(SENDER)[0].data, policy=default_policy)
    assert dsn.get_content_type() == "multipart/report"
    parts = [p.get_content_type() for p in dsn.iter_parts()]
    assert parts == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    returned = list(dsn.iter_parts())[2].get_payload()
    headers = email.message_from_string(returned, policy=default_policy)
    assert sorted(headers.keys()) == ["From", "Message-ID", "Subject", "To"]
    assert str(headers["Subject"]) == f"order {mask_number(n)}"
    whole = decoded(sink.handler.to(SENDER)[0].data)
    assert "secret routing" not in whole and "must not come back" not in whole and not leaks(whole, n)


async def test_outbox_views_mask_subjects(tmp_path: Path, sink: Sink) -> None:
    """A message in its send delay: `outbox list` (table and JSON) shows its subject masked."""
    from dataclasses import replace

    from dlpgate.config import DelayConfig
    from tests.conftest import running, send_ok

    cfg, c = gateway_config(tmp_path, sink)
    cfg = replace(cfg, delay=DelayConfig(seconds=3600))
    digits = "202401153321"  # an order number: not an identifier, still masked (8+ digits)
    raw = (f"From: {SENDER}\r\nTo: {PARTNER}\r\nSubject: 注文 {digits[:4]}\uff70{digits[4:8]}\uff70{digits[8:]}\r\n"
           "\r\nhello\r\n").encode()
    async with running(cfg) as gw:
        reply = await asyncio.to_thread(send_ok, gw.smtp_port, SENDER, [PARTNER], raw)
        assert "held" not in reply
        for argv in (("outbox", "list"), ("outbox", "list", "--json")):
            code, out, err = await cli(*argv, "--config", c)
            assert code == 0 and "注文" in out, err
            assert not leaks(out, digits) and "2024********" in out, out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(identifier_texts())
def test_no_identifier_survives_in_a_dsn(case: tuple[str, str]) -> None:
    """The DSN builder over generated subjects and upstream replies: whatever the scanner finds
    in them never comes back in sequence."""
    from email.header import Header

    from dlpgate.notices import build_dsn
    from dlpgate.store import RcptOutcome

    text, digits = case
    assume(any(f.detector == "my_number" for f in SCANNER.scan("subject", text).findings))
    one_line = " ".join(text.split())
    raw = (f"From: {SENDER}\r\nTo: {BOUNCER}\r\nSubject: {Header(one_line, 'utf-8').encode()}\r\n"
           f"Cc: team@example.jp\r\n\r\n{text}\r\n").encode()
    dsn = build_dsn(hostname="gw.test", msg_id="0123456789abcdef01", sender=SENDER, arrived=0.0, original=raw,
                    bounced=[RcptOutcome(BOUNCER, 550, f"5.1.1 rejected: {one_line}")])
    assert not leaks(decoded(dsn), digits)
