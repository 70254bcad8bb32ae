"""Issue 15 item 6: an SMTP AUTH login sends only as the addresses it is bound to.

Real gateway on loopback, STARTTLS, AUTH against a real users file. `[sender_logins]` binds
logins to addresses; a login that is an address may always send as itself."""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import replace
from pathlib import Path

import pytest

from dlpgate import auth
from dlpgate import smtp as smtp_mod
from dlpgate.config import ConfigError, load_config
from tests.conftest import Sink, running
from tests.test_hardening_auth import connect, starttls, tls_config
from tests.test_hardening_support import TlsFiles, make_tls, message

BOT_PW = "another synthetic secret"
ALICE_PW = "correct horse battery staple 7"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path / "tls")


@pytest.fixture(autouse=True)
def quick_tarpit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smtp_mod, "AUTH_FAILURE_DELAY", 0.05)


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    auth.set_user(path, "Alice@Example.JP", ALICE_PW)
    auth.set_user(path, "relay-bot", BOT_PW)
    auth.set_user(path, "scanner", BOT_PW)
    return path


def mail_codes(port: int, tls: TlsFiles, login: str, password: str, senders: list[str]) -> dict[str, int]:
    out = {}
    with connect(port, tls) as c:
        starttls(c, tls)
        c.login(login, password)
        for s in senders:
            code, _ = c.mail(s)
            out[s] = code
            c.rset()
    return out


async def test_logins_are_bound_to_their_senders(tmp_path: Path, sink: Sink, tls: TlsFiles, users: Path) -> None:
    cfg = tls_config(tmp_path, sink, tls, users)
    cfg = replace(cfg, sender_logins=(("relay-bot", ("system@example.jp", "*@notify.example.jp", "<>")),
                                      ("alice@example.jp", ("team@example.jp",))))
    async with running(cfg) as gw:
        bot = await asyncio.to_thread(mail_codes, gw.smtp_port, tls, "relay-bot", BOT_PW,
                                      ["system@example.jp", "a@notify.example.jp", "", "kacho@example.jp",
                                       "system@example.jp.evil.example", "x@sub.notify.example.jp"])
        assert bot == {"system@example.jp": 250, "a@notify.example.jp": 250, "": 250, "kacho@example.jp": 553,
                       "system@example.jp.evil.example": 553, "x@sub.notify.example.jp": 553}
        # a login with no entry may send as nobody
        scanner = await asyncio.to_thread(mail_codes, gw.smtp_port, tls, "scanner", BOT_PW,
                                          ["scanner@example.jp", "system@example.jp", ""])
        assert set(scanner.values()) == {553}
        # an address login: itself (any case) and what it is given, nobody else
        alice = await asyncio.to_thread(mail_codes, gw.smtp_port, tls, "alice@example.jp", ALICE_PW,
                                        ["Alice@Example.JP", "team@example.jp", "bob@example.jp", ""])
        assert alice == {"Alice@Example.JP": 250, "team@example.jp": 250, "bob@example.jp": 553, "": 553}

        def send_as_other() -> None:
            with connect(gw.smtp_port, tls) as c:
                starttls(c, tls)
                c.login("relay-bot", BOT_PW)
                c.sendmail("kacho@example.jp", ["b@example.com"], message(1))

        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            await asyncio.to_thread(send_as_other)
        assert e.value.smtp_code == 553 and b"5.7.1" in e.value.smtp_error
    assert sink.handler.messages == []


def test_sender_logins_config(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[sender_logins]\n"Relay-Bot" = ["System@Example.JP", "*@notify.example.jp", "<>"]\n')
    assert load_config(p).sender_logins == (("relay-bot", ("system@example.jp", "*@notify.example.jp", "<>")),)
    p.write_text('[sender_logins]\nbot = ["not an address"]\n')
    with pytest.raises(ConfigError, match="sender_logins.bot"):
        load_config(p)
