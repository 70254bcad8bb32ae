"""Helpers for the operations tests (no tests here): synthetic My Numbers, a real `dlpgate serve`
subprocess on a TOML file, and HTTP scrapes of its exporter."""

from __future__ import annotations

import json
import os
import pwd
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent


def my_number(rng: random.Random) -> str:
    """A synthetic, check-digit-valid 12-digit My Number (weights per the MIC ordinance)."""
    d = "".join(str(rng.randrange(10)) for _ in range(11))
    s = sum(int(d[11 - n]) * (n + 1 if n <= 6 else n - 5) for n in range(1, 12))
    return d + str(0 if s % 11 <= 1 else 11 - s % 11)


def mail(sender: str, to: str, subject: str, body: str) -> bytes:
    m = EmailMessage(policy=SMTP_POLICY)
    m["From"], m["To"], m["Subject"] = sender, to, subject
    m.set_content(body, charset="utf-8")
    return m.as_bytes()


def my_number_mail(sender: str, to: str, seed: int) -> tuple[bytes, list[str]]:
    """A message with three valid synthetic My Numbers next to 個人番号: the default rules hold it."""
    rng = random.Random(seed)
    nums = [my_number(rng) for _ in range(3)]
    body = "職員の個人番号一覧です。\n" + "\n".join(f"職員{i} 個人番号 {n}" for i, n in enumerate(nums))
    return mail(sender, to, "名簿", body), nums


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")


class ServeProcess:
    """`dlpgate serve --config FILE` as its own process, the way systemd runs it.

    stderr (the log) goes to a file the test can read while the process runs.
    """

    def __init__(self, workdir: Path, upstream_port: int, *, extra: str = "", delay: float = 0,
                 rules: Path | None = None) -> None:
        self.workdir = workdir
        self.smtp_port = free_port()
        self.metrics_port = free_port()
        self.config = workdir / "dlpgate.toml"
        self.log = workdir / "dlpgate.log"
        rules_line = f'rules = "{rules}"\n' if rules is not None else ""
        self.config.write_text(
            f'[smtp]\nlisten = "127.0.0.1:{self.smtp_port}"\nhostname = "gw.test"\n'
            f'[relay]\nupstream = "127.0.0.1:{upstream_port}"\ntls = "off"\nretry_initial = 1\nretry_max = 2\n'
            f'[delay]\nseconds = {delay}\n'
            f'[store]\npath = "{workdir / "store"}"\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n'
            f'[policy]\ninternal_domains = ["example.jp"]\n{rules_line}'
            f'[log]\nformat = "json"\n'
            f'[[approvers]]\nsenders = ["*@example.jp"]\napprovers = ["boss@example.jp"]\n{extra}\n'
            # this test process's own login is the approver: its CLI acts as boss@ through the socket
            f'[[people]]\nlogin = "{pwd.getpwuid(os.getuid()).pw_name}"\naddresses = ["boss@example.jp"]\n',
            encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "dlpgate.cli", "serve", "--config", str(self.config)],
                                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"dlpgate serve exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if http_get(self.metrics_port, "/healthz", 1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"dlpgate serve not healthy in {timeout}s: {self.log.read_text()[-2000:]}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("dlpgate serve ignored SIGTERM") from None

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dlpgate.cli", *args, "--config", str(self.config)],
                              cwd=REPO, capture_output=True, text=True, timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def log_events(self, strict: bool = True) -> list[dict[str, Any]]:
        """The JSON log, parsed. strict: a line that is not a JSON object fails; else it is skipped."""
        text = self.log_text()
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            lines.pop()  # being written right now
        out = []
        for line in lines:
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                if strict:
                    raise AssertionError(f"not a JSON log line: {line[:200]!r}") from None
        return out

    def non_json_lines(self) -> list[str]:
        out = []
        for line in self.log_text().splitlines():
            try:
                json.loads(line)
            except ValueError:
                out.append(line)
        return out

    def wait_for_event(self, event: str, count: int = 1, timeout: float = 30.0,
                       strict: bool = True) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.log_events(strict) if e.get("event") == event]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)
