"""Helpers for the web console tests (no tests here): a real `dlpgate serve` with the console on,
an SMTP sink as its upstream, web accounts with TOTP, and a headless Debian chromium.

The gateway runs as its own process exactly as systemd would start it; the test reads state only
through the control socket (as root, the test process is an administrator there), never the store.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

import pyotp

from dlpgate import control_client
from dlpgate.web.accounts import set_account

from .conftest import Sink, free_port, send_ok
from .test_approval_support import csv_bytes, synthetic_numbers

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
PASSWORD = "pw-for-{login}-1234"
SHOTS = Path(os.environ.get("DLPGATE_SCREENSHOTS", "/tmp/dlpgate-web-shots"))

# people: two approvers of 総務 (soumu), a sender there, a supervisor of 人事 (jinji) only, an admin
PEOPLE = {
    "kacho": "kacho@example.jp",
    "bucho": "bucho@example.jp",
    "tanaka": "tanaka@soumu.example.jp",
    "sato": "sato@soumu.example.jp",
    "jinji": "jinjikacho@example.jp",
    "kanri": "kanri@example.jp",
}


def config_text(tmp: Path, smtp_port: int, sink_port: int, web_port: int, *, web_extra: str = "") -> str:
    people = "".join(f'[[people]]\nlogin = "{login}"\naddresses = ["{addr}"]\n\n' for login, addr in PEOPLE.items())
    return f"""
[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "gw.test"
[relay]
upstream = "127.0.0.1:{sink_port}"
tls = "off"
retry_initial = 0.5
retry_max = 2.0
[delay]
seconds = 300
[store]
path = "{(tmp / 'store').as_posix()}"
[metrics]
listen = ""
[control]
socket = "{(tmp / 'control.sock').as_posix()}"
admins = ["kanri"]
[policy]
internal_domains = ["example.jp"]
[quarantine]
language = "ja"
[web]
listen = "127.0.0.1:{web_port}"
base_url = "http://127.0.0.1:{web_port}"
users_file = "{(tmp / 'web-users').as_posix()}"
notify_delayed = true
lockout_after = 3
{web_extra}

[[approvers]]
senders = ["*@soumu.example.jp"]
approvers = ["kacho@example.jp", "bucho@example.jp"]

[[approvers]]
senders = ["*@jinji.example.jp"]
approvers = ["jinjikacho@example.jp"]

{people}"""


@dataclass
class WebGateway:
    """`dlpgate serve --config FILE` with the console on, and the accounts of PEOPLE."""

    tmp: Path
    sink: Sink
    smtp_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    secrets: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def socket(self) -> Path:
        return self.tmp / "control.sock"

    @property
    def log(self) -> Path:
        return self.tmp / "gateway.log"

    def start(self, timeout: float = 60.0) -> None:
        cfg = self.tmp / "dlpgate.toml"
        cfg.write_text(config_text(self.tmp, self.smtp_port, self.sink.port, self.web_port), encoding="utf-8")
        for login in PEOPLE:
            # approvers enrol TOTP; tanaka (a sender only) shows that senders may sign in without it
            self.secrets[login] = set_account(self.tmp / "web-users", login, PASSWORD.format(login=login),
                                              totp=login != "tanaka")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DLPGATE")}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "dlpgate.cli", "serve", "--config", str(cfg)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.tmp)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dlpgate serve exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(self.url + "/signin", timeout=2) as r:
                    assert r.status == 200
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=2) as s:
                    if s.recv(100).startswith(b"220") and self.socket.exists():
                        return
            time.sleep(0.1)
        raise AssertionError(f"console not up in {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def totp(self, login: str) -> str:
        """The current code; waits for the next 30 s step if this one was used already (no replay)."""
        return pyotp.TOTP(self.secrets[login]).now()

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """The control API as root (an administrator): the test's view of the gateway's state."""
        return control_client.call(self.socket, op, args or {}, timeout=60)

    def message(self, subject: str, state: str = "all") -> dict[str, Any]:
        rows = [r for r in self.call("quarantine.list", {"state": state}) if r["subject"] == subject]
        assert len(rows) == 1, (subject, rows)
        return rows[0]

    def state_of(self, msg_id: str) -> str:
        return str(self.call("quarantine.show", {"id": msg_id})["state"])

    def send(self, sender: str, rcpts: Sequence[str], raw: bytes) -> str:
        return send_ok(self.smtp_port, sender, list(rcpts), raw)


def held_mail(sender: str, subject: str, *, n: int = 3, seed: int = 11, filename: str = "meibo.csv",
              to: str = "partner@example.com") -> tuple[bytes, list[str]]:
    """A message whose body and CSV carry synthetic My Numbers next to 個人番号: held for approval."""
    numbers = synthetic_numbers(n, seed)
    m = EmailMessage(policy=SMTP_POLICY)
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = f"<{abs(hash((subject, seed)))}@client.test>"
    m.set_content("お世話になっております。\n" + "\n".join(f"個人番号: {x}" for x in numbers[:5]) + "\n",
                  charset="utf-8")
    m.add_attachment(csv_bytes(numbers), maintype="text", subtype="csv", filename=filename)
    return m.as_bytes(), numbers


def clean_mail(sender: str, subject: str, to: str = "partner@example.com") -> bytes:
    m = EmailMessage(policy=SMTP_POLICY)
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = f"<{abs(hash(subject))}@client.test>"
    m.set_content("来週の打ち合わせの件、よろしくお願いいたします。\n", charset="utf-8")
    return m.as_bytes()


def wait_for(pred: Any, timeout: float = 60.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every)


def delivered(sink: Sink, subject: str) -> list[Any]:
    """Copies of a message in the sink, by its (decoded) Subject."""
    out = []
    for m in list(sink.handler.messages):
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        if str(msg.get("Subject", "")) == subject:
            out.append(m)
    return out


def notices_to(sink: Sink, rcpt: str) -> list[tuple[str, str]]:
    """(subject, text) of the gateway's notices that reached `rcpt`."""
    out = []
    for m in list(sink.handler.messages):
        if rcpt not in m.rcpt_tos or m.mail_from not in ("", "<>"):
            continue
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        body = msg.get_body(("plain",))
        out.append((str(msg["Subject"]), body.get_content() if body is not None else ""))
    return out


def link_in(text: str, base: str) -> str:
    m = re.search(re.escape(base) + r"(/[A-Za-z0-9/_-]*)", text)
    assert m, f"no console link in notice: {text[:500]}"
    return base + m.group(1)


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """Headless Debian chromium through Playwright (no browser download, ever)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()
