"""SIGHUP against a real `dlpgate serve` process: a good rule file takes effect without dropping an
open SMTP session; a broken one keeps the previous rules running and logs one clear error."""

from __future__ import annotations

import shutil
import signal
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Sink
from tests.test_deploy_support import REPO, ServeProcess, mail

MARKER = "社外秘テスト案件"  # a subject keyword no shipped rule knows
NEW_RULE = f"""
[[rule]]
id = "reload_test_subject"
action = "hold"
reason = "test rule added by a reload"
when = {{ subject_keywords = ["{MARKER}"] }}
"""


@pytest.fixture
def served(tmp_path: Path, sink: Sink) -> Iterator[ServeProcess]:
    rules = tmp_path / "rules"
    shutil.copytree(REPO / "rules", rules)
    gw = ServeProcess(tmp_path, sink.port, rules=rules)
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def transact(c: smtplib.SMTP, subject: str) -> str:
    c.mail("a@example.jp")
    c.rcpt("b@example.com")
    code, reply = c.data(mail("a@example.jp", "b@example.com", subject, "本文です。"))
    assert code == 250, (code, reply)
    return reply.decode()


def policy_file(gw: ServeProcess) -> Path:
    return Path(gw.config.read_text().split('rules = "')[1].split('"')[0]) / "policy.toml"


def test_sighup_applies_good_rules_and_keeps_old_ones_on_a_broken_file(served: ServeProcess, sink: Sink) -> None:
    gw = served
    policy = policy_file(gw)
    good = policy.read_text(encoding="utf-8") + NEW_RULE

    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as c:  # stays open across every reload
        c.ehlo("client.test")
        assert "held" not in transact(c, f"{MARKER} before")

        policy.write_text(good, encoding="utf-8")
        assert gw.cli("rules", "check", str(policy.parent)).returncode == 0
        gw.signal(signal.SIGHUP)
        assert len(gw.wait_for_event("reloaded", 1, strict=False)) == 1, gw.log_text()[-2000:]
        assert "held for approval" in transact(c, f"{MARKER} after the good reload")

        # a typo in a rule: `rules check` names it, and SIGHUP keeps the previous rules
        policy.write_text(good.replace("subject_keywords =", "subject_keyword ="), encoding="utf-8")
        check = gw.cli("rules", "check", str(policy.parent))
        assert check.returncode == 2 and "subject_keyword" in check.stderr, check.stdout + check.stderr
        gw.signal(signal.SIGHUP)
        failed = gw.wait_for_event("reload_failed", 1, strict=False)
        assert len(failed) == 1, gw.log_text()[-2000:]
        assert failed[0]["level"] == "ERROR"
        assert "held for approval" in transact(c, f"{MARKER} after the broken reload")
        assert "held" not in transact(c, "an ordinary subject")

        # an unparsable file the same way
        policy.write_text(good + "\n[[rule]\n", encoding="utf-8")
        gw.signal(signal.SIGHUP)
        assert len(gw.wait_for_event("reload_failed", 2, strict=False)) == 2, gw.log_text()[-2000:]
        assert "held for approval" in transact(c, f"{MARKER} after the unparsable reload")

        # fixed again: the next SIGHUP takes it
        policy.write_text(good.replace(MARKER, MARKER + "2"), encoding="utf-8")
        gw.signal(signal.SIGHUP)
        assert len(gw.wait_for_event("reloaded", 2, strict=False)) == 2, gw.log_text()[-2000:]
        assert "held" not in transact(c, f"{MARKER} no longer a keyword")
        c.noop()

    # the three clean messages were delivered (besides the held-mail notices to sender and approver)
    deadline = time.monotonic() + 15
    while len(sink.handler.to("b@example.com")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sink.handler.to("b@example.com")) == 3
    # the gateway survived every bad reload
    assert gw.proc is not None and gw.proc.poll() is None


def test_broken_reload_logs_one_clear_json_error(served: ServeProcess) -> None:
    """The error names the file and the key, in one JSON line; no worker traceback on stderr."""
    gw = served
    policy = policy_file(gw)
    policy.write_text(policy.read_text(encoding="utf-8") + NEW_RULE.replace("subject_keywords", "subject_keyword"),
                      encoding="utf-8")
    gw.signal(signal.SIGHUP)
    failed = gw.wait_for_event("reload_failed", 1, strict=False)
    assert len(failed) == 1
    assert "policy.toml" in failed[0]["msg"] and "subject_keyword" in failed[0]["msg"], failed[0]["msg"]
    assert "exc" not in failed[0], "one clear line, not a traceback"
    assert gw.non_json_lines() == []
