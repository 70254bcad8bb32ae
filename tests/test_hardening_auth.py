"""STARTTLS on the listener and SMTP AUTH (PLAIN/LOGIN only after STARTTLS, scrypt users file),
over real loopback SMTP with a certificate made at test time; and the users-file tool."""

from __future__ import annotations

import asyncio
import base64
import io
import smtplib
import ssl
from dataclasses import replace
from pathlib import Path

import pytest

import dlpgate.smtp as smtp_mod
from dlpgate import auth
from dlpgate.config import Config
from dlpgate.errors import ConfigError
from dlpgate.store import Store
from tests.conftest import Sink, make_config, running
from tests.test_hardening_support import TlsFiles, make_tls, message

PASSWORD = "correct horse battery staple 7"  # synthetic


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls(tmp_path / "tls")


def tls_config(tmp_path: Path, sink: Sink, tls: TlsFiles, users: Path | None = None) -> Config:
    cfg = make_config(tmp_path, sink.port)
    return replace(cfg, smtp=replace(cfg.smtp, tls_cert=str(tls.cert_file), tls_key=str(tls.key_file),
                                     auth_users_file=str(users) if users else ""))


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    auth.set_user(path, "Alice@Example.JP", PASSWORD)
    auth.set_user(path, "relay-bot", "another synthetic secret")
    return path


@pytest.fixture(autouse=True)
def quick_tarpit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smtp_mod, "AUTH_FAILURE_DELAY", 0.05)


def connect(port: int, tls: TlsFiles) -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", port, timeout=10)
    c.ehlo("client.example.jp")
    return c


def starttls(c: smtplib.SMTP, tls: TlsFiles) -> None:
    code, _ = c.starttls(context=tls.client_context())
    assert code == 220
    c.ehlo("client.example.jp")


async def test_starttls_on_the_listener(tmp_path: Path, sink: Sink, tls: TlsFiles) -> None:
    async with running(tls_config(tmp_path, sink, tls)) as gw:
        def go() -> tuple[bool, str | None, dict]:
            with connect(gw.smtp_port, tls) as c:
                offered = c.has_extn("starttls")
                starttls(c, tls)  # verifies the certificate against the test CA
                version = c.sock.version() if isinstance(c.sock, ssl.SSLSocket) else None
                return offered, version, c.sendmail("a@example.jp", ["b@example.com"], message(1))

        offered, version, refused = await asyncio.to_thread(go)
        assert offered and version in ("TLSv1.2", "TLSv1.3") and refused == {}
        assert len(await asyncio.to_thread(sink.handler.wait_for, 1, 10)) == 1


async def test_auth_only_after_starttls_and_required_for_mail(tmp_path: Path, sink: Sink, tls: TlsFiles,
                                                              users: Path) -> None:
    async with running(tls_config(tmp_path, sink, tls, users)) as gw:
        def go() -> dict[str, object]:
            out: dict[str, object] = {}
            with connect(gw.smtp_port, tls) as c:
                out["auth_in_clear"] = c.has_extn("auth")
                plain = base64.b64encode(f"\0alice@example.jp\0{PASSWORD}".encode()).decode()
                out["auth_clear_reply"] = c.docmd("AUTH", f"PLAIN {plain}")[0]
                out["mail_clear"] = c.mail("alice@example.jp")[0]
                c.rset()
                starttls(c, tls)
                out["auth_after_tls"] = c.esmtp_features.get("auth", "")
                out["mail_unauthenticated"] = c.mail("alice@example.jp")[0]
                c.rset()
                try:
                    c.login("alice@example.jp", "wrong password")
                except smtplib.SMTPAuthenticationError as e:
                    out["wrong"] = e.smtp_code
                c.login("ALICE@example.jp", PASSWORD)  # logins are case-insensitive
                out["other_sender"] = c.mail("bob@example.jp")[0]
                c.rset()
                out["null_sender"] = c.mail("<>")[0]
                c.rset()
                out["send"] = c.sendmail("Alice@Example.jp", ["b@example.com"], message(1))
            return out

        out = await asyncio.to_thread(go)
        assert out["auth_in_clear"] is False and out["auth_clear_reply"] == 538
        assert out["mail_clear"] == 530 and out["mail_unauthenticated"] == 530
        assert "PLAIN" in str(out["auth_after_tls"]) and "LOGIN" in str(out["auth_after_tls"])
        assert out["wrong"] == 535
        assert out["other_sender"] == 553 and out["null_sender"] == 553
        assert out["send"] == {}
        assert len(await asyncio.to_thread(sink.handler.wait_for, 1, 10)) == 1


async def test_auth_login_mechanism_and_a_login_without_address(tmp_path: Path, sink: Sink, tls: TlsFiles,
                                                               users: Path) -> None:
    cfg = replace(tls_config(tmp_path, sink, tls, users), sender_logins=(("relay-bot", ("system@example.jp",)),))
    async with running(cfg) as gw:
        def go() -> dict:
            with connect(gw.smtp_port, tls) as c:
                starttls(c, tls)
                c.user, c.password = "relay-bot", "another synthetic secret"
                code, _ = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
                assert code == 235
                # a login that is not an address sends as the addresses [sender_logins] binds it to
                return c.sendmail("system@example.jp", ["b@example.com"], message(2))

        assert await asyncio.to_thread(go) == {}


async def test_repeated_auth_failures_close_the_session(tmp_path: Path, sink: Sink, tls: TlsFiles,
                                                        users: Path) -> None:
    async with running(tls_config(tmp_path, sink, tls, users)) as gw:
        def go() -> list[int]:
            codes = []
            with connect(gw.smtp_port, tls) as c:
                starttls(c, tls)
                for guess in ("a", "b", "c"):
                    blob = base64.b64encode(f"\0alice@example.jp\0{guess}".encode()).decode()
                    codes.append(c.docmd("AUTH", f"PLAIN {blob}")[0])
                try:
                    codes.append(c.noop()[0])
                except smtplib.SMTPServerDisconnected:
                    codes.append(-1)
            return codes

        assert await asyncio.to_thread(go) == [535, 535, 421, -1]
        assert Store(tmp_path / "store").list() == []


async def test_users_file_edit_applies_without_restart(tmp_path: Path, sink: Sink, tls: TlsFiles,
                                                       users: Path) -> None:
    async with running(tls_config(tmp_path, sink, tls, users)) as gw:
        def login(user: str, pw: str) -> int:
            with connect(gw.smtp_port, tls) as c:
                starttls(c, tls)
                try:
                    return c.login(user, pw)[0]
                except smtplib.SMTPAuthenticationError as e:
                    return e.smtp_code

        assert await asyncio.to_thread(login, "carol@example.jp", "synthetic-pw-1") == 535
        auth.set_user(users, "carol@example.jp", "synthetic-pw-1")
        assert await asyncio.to_thread(login, "carol@example.jp", "synthetic-pw-1") == 235
        auth.remove_user(users, "carol@example.jp")
        assert await asyncio.to_thread(login, "carol@example.jp", "synthetic-pw-1") == 535


# ------------------------------------------------------------------------------ the users file
def test_users_file_holds_salted_hashes_only(tmp_path: Path, users: Path) -> None:
    text = users.read_text()
    assert PASSWORD not in text and "synthetic secret" not in text
    assert users.stat().st_mode & 0o777 == 0o600
    h1, h2 = auth.hash_password(PASSWORD), auth.hash_password(PASSWORD)
    assert h1 != h2  # per-user (per-hash) salt
    parsed = auth.ScryptHash.decode(h1)
    assert parsed.n == auth.DEFAULT_N and len(parsed.salt) == auth.SALT_BYTES and parsed.matches(PASSWORD.encode())
    a = auth.FileAuthenticator(users)
    assert a.verify(b"alice@example.jp", PASSWORD.encode()) == "alice@example.jp"
    assert a.verify(b"alice@example.jp", PASSWORD.encode() + b"x") is None
    assert a.verify(b"nobody@example.jp", PASSWORD.encode()) is None
    assert a.verify(b"\xff\xfe", b"x") is None


def test_broken_users_file_names_the_line_and_lets_nobody_in(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("# comment\nalice@example.jp:plaintext-password\n")
    with pytest.raises(ConfigError, match=r"users:2: expected \$scrypt\$") as ei:
        auth.FileAuthenticator(path).users()
    assert "plaintext-password" not in str(ei.value)
    assert auth.FileAuthenticator(path).verify(b"alice@example.jp", b"plaintext-password") is None
    path.write_text(f"alice@example.jp:$scrypt$n={2**30},r=8,p=1$c2FsdHNhbHQ=$" + "A" * 44 + "\n")
    with pytest.raises(ConfigError, match="out of range"):  # a hostile cost never reaches scrypt
        auth.FileAuthenticator(path).users()


def test_tool_add_list_remove(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "users"
    monkeypatch.setattr("sys.stdin", io.StringIO("synthetic-pw-2\n"))
    assert auth.main(["add", str(path), "Dave@example.jp", "--password-stdin"]) == 0
    assert capsys.readouterr().out == f"added dave@example.jp in {path}\n"
    assert auth.main(["list", str(path)]) == 0
    assert capsys.readouterr().out == "dave@example.jp\n"
    assert auth.FileAuthenticator(path).verify("dave@example.jp", b"synthetic-pw-2") == "dave@example.jp"
    assert auth.main(["remove", str(path), "dave@example.jp"]) == 0
    assert auth.main(["remove", str(path), "dave@example.jp"]) == 2  # unknown login: an input error
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert auth.main(["add", str(path), "eve@example.jp", "--password-stdin"]) == 2  # empty password
    assert auth.main(["add", str(path), "bad:name", "--password-stdin"]) == 2


def test_starttls_auth_and_relay_on_the_serve_event_loop(tmp_path: Path, sink: Sink, tls: TlsFiles,
                                                          users: Path) -> None:
    """`serve` runs on uvloop where installed; aiosmtpd's STARTTLS drives asyncio's SSLProtocol
    over the loop's own transport, so the whole TLS + AUTH + accept + delivery path runs on it."""
    from dlpgate import eventloop

    seen: dict[str, object] = {}

    async def scenario() -> None:
        seen["loop"] = type(asyncio.get_running_loop()).__module__
        async with running(tls_config(tmp_path, sink, tls, users)) as gw:
            def go() -> dict:
                with connect(gw.smtp_port, tls) as c:
                    starttls(c, tls)
                    c.login("alice@example.jp", PASSWORD)
                    return c.sendmail("alice@example.jp", ["b@example.com"], message(7))

            seen["refused"] = await asyncio.to_thread(go)
            await asyncio.to_thread(sink.handler.wait_for, 1, 10)

    eventloop.run(scenario())
    assert seen["refused"] == {}
    assert str(seen["loop"]).startswith("uvloop" if eventloop.loop_name() == "uvloop" else "asyncio")
    assert len(sink.handler.wait_for(1, 1)) == 1
