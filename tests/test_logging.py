"""Structured logging: one JSON object per event, state changes carry the message id, and no
identifier, body or subject ever reaches the log."""

from __future__ import annotations

import io
import json
import logging
import re
import smtplib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlpgate import logs
from tests.conftest import Sink
from tests.test_deploy_support import ServeProcess, mail, my_number_mail


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def capture(fmt: str, monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    logs.setup(fmt, "INFO")
    return buf


def test_json_format_is_one_object_per_event_with_its_fields(root_logging: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    buf = capture("json", monkeypatch)
    log = logging.getLogger("dlpgate.test")
    log.info("accepted", extra={"event": "accepted", "msg_id": "abc", "state": "held", "rules": ["r1"]})
    log.debug("not at INFO")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed 保留", extra={"event": "pipeline_error", "msg_id": "def"})
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2, "one line per event, exception included in its line"
    first, second = (json.loads(x) for x in lines)
    assert first["event"] == "accepted" and first["msg_id"] == "abc" and first["state"] == "held"
    assert first["rules"] == ["r1"] and first["level"] == "INFO" and first["logger"] == "dlpgate.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert second["msg"] == "failed 保留" and second["level"] == "ERROR"
    assert "ValueError: boom" in second["exc"]


def test_text_format_appends_fields(root_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = capture("text", monkeypatch)
    logging.getLogger("dlpgate.test").warning("client refused", extra={"event": "client_refused"})
    line = buf.getvalue().strip()
    assert line.endswith("WARNING dlpgate.test: client refused event=client_refused")


def test_aiosmtpd_command_chatter_is_not_logged(root_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = capture("json", monkeypatch)
    logging.getLogger("mail.log").info("RCPT TO:<someone@example.com>")  # aiosmtpd logs every command
    assert buf.getvalue() == ""


def test_served_log_has_every_state_change_and_no_identifiers(tmp_path: Path, sink: Sink) -> None:
    gw = ServeProcess(tmp_path, sink.port)
    gw.start()
    try:
        held, numbers = my_number_mail("a@example.jp", "x@example.com", seed=5)
        clean = mail("a@example.jp", "b@example.com", "会議の件", "明日の会議は10時からです。")
        with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as c:
            c.sendmail("a@example.jp", ["b@example.com"], clean)
            c.sendmail("a@example.jp", ["x@example.com"], held)
        held_id = next(e["msg_id"] for e in gw.wait_for_event("accepted", 2) if e["state"] == "held")
        r = gw.cli("quarantine", "release", held_id, "--approver", "boss@example.jp")
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 20
        while not sink.handler.to("x@example.com") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.handler.to("x@example.com"), gw.log_text()[-2000:]
        time.sleep(0.3)  # the delivery line is written just after the upstream's 250
    finally:
        assert gw.stop() == 0

    events = gw.log_events(strict=True)  # every line a JSON object
    by_id: dict[str, list[str]] = {}
    for e in events:
        if "msg_id" in e:
            by_id.setdefault(e["msg_id"], []).append(f'{e["event"]}:{e.get("state", "")}')
    assert by_id[held_id][0] == "accepted:held"
    assert "delivery:delivered" in by_id[held_id]
    clean_ids = [i for i, seq in by_id.items() if seq[0] == "accepted:delayed"]
    assert len(clean_ids) == 1 and "delivery:delivered" in by_id[clean_ids[0]]
    names = [e["event"] for e in events]  # start-up lines (audit key, control socket) come before "started"
    first_msg = next(i for i, e in enumerate(events) if e.get("msg_id"))
    assert "started" in names[:first_msg] and events[-1]["event"] in ("stopping", "delivery", "audit_head")
    assert all(e["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") for e in events)

    text = gw.log_text()
    assert not any(n in text for n in numbers)
    for msg_id in by_id:  # hex ids may hold a run of decimal digits by chance
        text = text.replace(msg_id, "<id>")
    text = re.sub(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])", "<hash>", text)  # audit heads, SHA-256 values
    assert not re.search(r"(?<!\d)\d{12}(?!\d)", text), "a 12-digit number in the log"
    for secret in ("名簿", "個人番号一覧", "会議の件", "明日の会議"):
        assert secret not in text, "subject or body text in the log"
