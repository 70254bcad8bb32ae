"""Shared fixtures: a real aiosmtpd sink on loopback and an in-process gateway on a temp store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import smtplib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from hypothesis import settings

from dlpgate.config import (
    Config,
    DelayConfig,
    MetricsConfig,
    PolicyConfig,
    RelayConfig,
    SmtpConfig,
    StoreConfig,
)
from dlpgate.server import Gateway

# In CI the property tests replay a fixed sequence of examples (a red CI then always reproduces);
# on a developer's machine they explore new random examples on every run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class SinkHandler:
    """Records what it receives. `rcpt_codes` maps an address to a reply for RCPT ("550 ...")."""

    messages: list[Received] = field(default_factory=list)
    rcpt_codes: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    event: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001
        if address in self.rcpt_codes:
            return self.rcpt_codes[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
        if self.data_reply:
            return self.data_reply
        with self.event:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            self.event.notify_all()
        return "250 OK sink"

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.event:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.event.wait(left)
            return list(self.messages)

    def to(self, rcpt: str) -> list[Received]:
        return [m for m in self.messages if rcpt in m.rcpt_tos]


class Sink:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.handler = SinkHandler()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=True)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    s.start()
    yield s
    s.stop()


def smtp_data(port: int, sender: str, rcpts: list[str], data: bytes, *, source: str = "127.0.0.1",
              timeout: float = 30.0) -> tuple[int, str]:
    """One SMTP transaction over loopback (MAIL and every RCPT must be accepted); the DATA reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout, source_address=(source, 0)) as c:
        c.ehlo("client.test")
        assert c.mail(sender)[0] == 250
        for r in rcpts:
            assert c.rcpt(r)[0] == 250
        code, text = c.data(data)
        return code, text.decode()


def send_ok(port: int, sender: str, rcpts: list[str], data: bytes, source: str = "127.0.0.1",
            timeout: float = 30.0) -> str:
    """smtp_data that must end in 250; its reply text."""
    code, text = smtp_data(port, sender, rcpts, data, source=source, timeout=timeout)
    assert code == 250, (code, text)
    return text


def make_config(tmp_path: Path, upstream_port: int, **overrides: object) -> Config:
    cfg = Config(
        smtp=SmtpConfig(listen="127.0.0.1:0", hostname="gw.test"),
        relay=RelayConfig(upstream=f"127.0.0.1:{upstream_port}", tls="off", retry_initial=0.5, retry_max=2.0,
                          timeout=10.0),
        delay=DelayConfig(seconds=0),
        store=StoreConfig(path=str(tmp_path / "store")),
        metrics=MetricsConfig(listen=""),
        policy=PolicyConfig(internal_domains=("example.jp",)),
    )
    return replace(cfg, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def gateway(tmp_path: Path, sink: Sink) -> AsyncIterator[Gateway]:
    async with running(make_config(tmp_path, sink.port)) as gw:
        yield gw


@contextlib.asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[Gateway]:
    """An in-process gateway (one judging worker) for the block; stopped however the block ends."""
    gw = Gateway(cfg, workers=1)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop(grace=2)


async def wait_until(pred: Callable[[], object], timeout: float = 10.0, every: float = 0.05) -> object:
    """Poll `pred` until it returns something truthy (bounded); return that value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)


def states(store_path: Path, kind: str | None = "mail") -> list[str]:
    from dlpgate.store import Store

    st = Store(store_path)
    try:
        return [r["state"] for r in st.list(kind=kind)]
    finally:
        st.close()


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]  # noqa: ANN001
    """A skipped Postfix end-to-end test is said loudly at the end, with how to run it: a quiet
    "s" among hundreds of dots would let a newcomer think the relay was tested against Postfix."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "test_postfix_e2e" in r.nodeid]
    if not skipped:
        return
    longrepr = skipped[0].longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    terminalreporter.write_sep("!", "the Postfix end-to-end test was SKIPPED", red=True, bold=True)
    terminalreporter.write_line(f"  why: {reason}")
    terminalreporter.write_line("  to run it: apt-get install postfix (Debian/Ubuntu), then `make test` as root."
                                " With CI=true it never skips (.ci/run installs Postfix).")
