"""The console's listener without a browser: trusted-proxy sign-in, HTTPS cookies, forged proxy headers,
and a taken port. An in-process gateway (the same `Gateway.start` as `serve`) on loopback."""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
from pathlib import Path

import pytest

from dlpgate.config import load_config
from dlpgate.errors import ConfigError
from dlpgate.web.accounts import set_account

from .conftest import Sink, running
from .test_hardening_support import make_tls

PEOPLE = """
[[approvers]]
senders = ["*@soumu.example.jp"]
approvers = ["kacho@example.jp"]
[[people]]
login = "kacho"
addresses = ["kacho@example.jp"]
[[people]]
login = "tanaka"
addresses = ["tanaka@soumu.example.jp"]
"""


def _me() -> str:
    import os
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


# the proxy is this test process: a loopback proxy is believed only from its account (web.proxy_users)
PROXY_USER = f'proxy_users = ["{_me()}"]'


def write_config(tmp: Path, sink: Sink, web: str) -> Path:
    p = tmp / "dlpgate.toml"
    p.write_text(f"""
[smtp]
listen = "127.0.0.1:0"
hostname = "gw.test"
[relay]
upstream = "127.0.0.1:{sink.port}"
tls = "off"
[store]
path = "{(tmp / 'store').as_posix()}"
[metrics]
listen = ""
[control]
socket = "{(tmp / 'c.sock').as_posix()}"
[web]
{web}
{PEOPLE}""", encoding="utf-8")
    return p


def get(port: int, path: str, *, source: str = "127.0.0.1", headers: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None, method: str = "GET", body: str | None = None) -> http.client.HTTPResponse:
    if tls is not None:
        c: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls,
                                                                    source_address=(source, 0))
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    hdrs = dict(headers or {})
    if body is not None:
        hdrs["content-type"] = "application/x-www-form-urlencoded"
    c.request(method, path, body=body, headers=hdrs)
    r = c.getresponse()
    r.body = r.read()  # type: ignore[attr-defined]
    c.close()
    return r


async def test_trusted_proxy_passes_the_login_only_from_its_address(tmp_path: Path, sink: Sink) -> None:
    cfg = load_config(write_config(tmp_path, sink, 'listen = "127.0.0.1:0"\ntrusted_proxies = ["127.0.0.2/32"]\n' + PROXY_USER))
    async with running(cfg) as gw:
        port = gw.web.port
        # the proxy (127.0.0.2) says who signed in at the directory: the page is theirs
        r = await asyncio.to_thread(get, port, "/approvals", source="127.0.0.2", headers={"X-Remote-User": "kacho"})
        assert r.status == 200, r.body  # type: ignore[attr-defined]
        assert "kacho としてサインイン中" in r.body.decode()  # type: ignore[attr-defined]
        cookie = r.getheader("set-cookie") or ""
        assert cookie.startswith("dlpgate_session=") and "kacho" not in cookie and "HttpOnly" in cookie
        # anyone else sending the same header is not believed
        r = await asyncio.to_thread(get, port, "/approvals", source="127.0.0.1", headers={"X-Remote-User": "kacho"})
        assert r.status == 303 and r.getheader("location", "").startswith("/signin")
        # the proxy without a header: nobody is signed in, and there is no local sign-in to fall back on
        r = await asyncio.to_thread(get, port, "/approvals", source="127.0.0.2")
        assert r.status == 303
        r = await asyncio.to_thread(get, port, "/signin", source="127.0.0.1")
        assert "認証プロキシ" in r.body.decode()  # type: ignore[attr-defined]
        # a login the gateway does not know gets nothing
        r = await asyncio.to_thread(get, port, "/approvals", source="127.0.0.2", headers={"X-Remote-User": "mallory"})
        assert r.status == 403


async def test_https_console_sets_secure_cookies_and_hsts(tmp_path: Path, sink: Sink) -> None:
    tls = make_tls(tmp_path / "tls")
    users = tmp_path / "web-users"
    set_account(users, "kacho", "a long password")
    web = (f'listen = "127.0.0.1:0"\ntls_cert = "{tls.cert_file}"\ntls_key = "{tls.key_file}"\n'
           f'users_file = "{users}"')
    async with running(load_config(write_config(tmp_path, sink, web))) as gw:
        port = gw.web.port
        assert gw.web.url.startswith("https://")
        r = await asyncio.to_thread(get, port, "/signin", tls=tls.client_context())
        assert r.status == 200
        cookie = r.getheader("set-cookie") or ""
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert r.getheader("strict-transport-security")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)):
            await asyncio.to_thread(get, port, "/signin")  # plain HTTP on the TLS port: no page


async def test_a_taken_port_is_a_config_error(tmp_path: Path, sink: Sink) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        users = tmp_path / "web-users"
        set_account(users, "kacho", "a long password")
        web = f'listen = "127.0.0.1:{taken.getsockname()[1]}"\nusers_file = "{users}"'
        with pytest.raises(ConfigError, match="web.listen"):
            async with running(load_config(write_config(tmp_path, sink, web))):
                pass


def _cookie(r: http.client.HTTPResponse, name: str) -> str:
    for h in r.headers.get_all("set-cookie") or []:
        if h.startswith(name + "="):
            return h.split(";")[0]
    return ""


async def test_sign_in_idle_timeout_and_sign_out_without_a_browser(tmp_path: Path, sink: Sink) -> None:
    import re

    import pyotp

    users = tmp_path / "web-users"
    secret = set_account(users, "kacho", "a long password")
    set_account(users, "tanaka", "another password", totp=False)
    web = f'listen = "127.0.0.1:0"\nusers_file = "{users}"'
    async with running(load_config(write_config(tmp_path, sink, web))) as gw:
        port = gw.web.port
        r = await asyncio.to_thread(get, port, "/signin")
        pre = _cookie(r, "dlpgate_pre")
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.body.decode()).group(1)  # type: ignore[union-attr,attr-defined]
        form = f"csrf={csrf}&login=kacho&password=a+long+password&next=/approvals&totp={pyotp.TOTP(secret).now()}"
        r = await asyncio.to_thread(get, port, "/signin", method="POST", body=form, headers={"cookie": pre})
        assert r.status == 303 and r.getheader("location") == "/approvals", r.body  # type: ignore[attr-defined]
        session = _cookie(r, "dlpgate_session")
        assert session and session.split("=", 1)[1] != pre.split("=", 1)[1]  # a new token after sign-in
        r = await asyncio.to_thread(get, port, "/approvals", headers={"cookie": session})
        assert r.status == 200
        # the same code again (a replay, e.g. from a proxy log) is refused even with the password
        r = await asyncio.to_thread(get, port, "/signin", method="POST", body=form, headers={"cookie": pre})
        assert r.status in (401, 403)
        # idle past [web] session_idle: signed out, told why
        gw.web.console.sessions.idle = 0.2
        await asyncio.sleep(1.0)
        r = await asyncio.to_thread(get, port, "/approvals", headers={"cookie": session})
        assert r.status == 303 and "expired=1" in r.getheader("location", "")
        # sign-out ends the session on the server: the old cookie replayed gets nothing
        gw.web.console.sessions.idle = 900
        # (tanaka sends mail but approves nothing: a password alone under require_totp = "approvers")
        r = await asyncio.to_thread(get, port, "/signin")
        pre = _cookie(r, "dlpgate_pre")
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.body.decode()).group(1)  # type: ignore[union-attr,attr-defined]
        form = f"csrf={csrf}&login=tanaka&password=another+password&next=/"
        r = await asyncio.to_thread(get, port, "/signin", method="POST", body=form, headers={"cookie": pre})
        session = _cookie(r, "dlpgate_session")
        r = await asyncio.to_thread(get, port, "/mine", headers={"cookie": session})
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.body.decode()).group(1)  # type: ignore[union-attr,attr-defined]
        r = await asyncio.to_thread(get, port, "/signout", method="POST", body=f"csrf={csrf}",
                                    headers={"cookie": session})
        assert r.status == 200 and "サインアウトしました" in r.body.decode()  # type: ignore[attr-defined]
        r = await asyncio.to_thread(get, port, "/mine", headers={"cookie": session})
        assert r.status == 303


async def test_approver_without_totp_is_refused(tmp_path: Path, sink: Sink) -> None:
    import re

    users = tmp_path / "web-users"
    set_account(users, "kacho", "a long password", totp=False)
    web = f'listen = "127.0.0.1:0"\nusers_file = "{users}"'
    async with running(load_config(write_config(tmp_path, sink, web))) as gw:
        port = gw.web.port
        r = await asyncio.to_thread(get, port, "/signin")
        pre = _cookie(r, "dlpgate_pre")
        csrf = re.search(r'name="csrf" value="([^"]+)"', r.body.decode()).group(1)  # type: ignore[union-attr,attr-defined]
        form = f"csrf={csrf}&login=kacho&password=a+long+password&next=/"
        r = await asyncio.to_thread(get, port, "/signin", method="POST", body=form, headers={"cookie": pre})
        assert r.status == 403 and "二要素認証" in r.body.decode()  # type: ignore[attr-defined]
        assert not _cookie(r, "dlpgate_session")


async def test_a_person_with_two_approver_addresses_chooses_one(tmp_path: Path, sink: Sink) -> None:
    import re
    import urllib.parse

    from .conftest import send_ok, wait_until
    from .test_web_support import held_mail

    p = write_config(tmp_path, sink, 'listen = "127.0.0.1:0"\ntrusted_proxies = ["127.0.0.2/32"]\n' + PROXY_USER)
    text = p.read_text().replace('addresses = ["kacho@example.jp"]', 'addresses = ["kacho@example.jp", "kacho2@example.jp"]')
    text = text.replace('approvers = ["kacho@example.jp"]', 'approvers = ["kacho@example.jp", "kacho2@example.jp"]')
    p.write_text(text)
    async with running(load_config(p)) as gw:
        port = gw.web.port
        raw, _ = held_mail("tanaka@soumu.example.jp", "二つのアドレス")
        await asyncio.to_thread(send_ok, gw.smtp_port, "tanaka@soumu.example.jp", ["partner@example.com"], raw)
        rows = await gw.authority.call(_root(), "quarantine.list", {"state": "held"})
        mid = [r for r in rows if r["subject"] == "二つのアドレス"][0]["id"]
        proxy = {"source": "127.0.0.2", "headers": {"X-Remote-User": "kacho"}}
        r = await asyncio.to_thread(get, port, f"/m/{mid}", **proxy)  # type: ignore[arg-type]
        page = r.body.decode()  # type: ignore[attr-defined]
        assert r.status == 200 and '<select name="approver">' in page
        cookie = _cookie(r, "dlpgate_session")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        hdrs = {"X-Remote-User": "kacho", "cookie": cookie}
        body = urllib.parse.urlencode({"csrf": csrf, "decision": "release", "approver": "kacho2@example.jp"})
        r = await asyncio.to_thread(get, port, f"/m/{mid}/decide", method="POST", body=body, source="127.0.0.2",
                                    headers=hdrs)
        nonce = re.search(r'name="nonce" value="([^"]+)"', r.body.decode()).group(1)  # type: ignore[union-attr,attr-defined]
        body = urllib.parse.urlencode({"csrf": csrf, "nonce": nonce})
        r = await asyncio.to_thread(get, port, "/confirm", method="POST", body=body, source="127.0.0.2", headers=hdrs)
        assert r.status == 200 and "承認しました" in r.body.decode()  # type: ignore[attr-defined]
        d = await gw.authority.call(_root(), "quarantine.show", {"id": mid})
        assert [a["approver"] for a in d["decisions"]] == ["kacho2@example.jp"]
        # the nonce is spent: posting it again does nothing
        r = await asyncio.to_thread(get, port, "/confirm", method="POST", body=body, source="127.0.0.2", headers=hdrs)
        assert r.status == 403
        await wait_until(lambda: any("partner@example.com" in m.rcpt_tos for m in sink.handler.messages), timeout=30)


def _root():  # noqa: ANN202 - the test as the service account: an administrator of the authority
    import os

    from dlpgate.control import Caller

    return Caller("root", os.getuid(), "socket")


async def test_oversized_or_unsized_posts_are_refused_unread(tmp_path: Path, sink: Sink) -> None:
    users = tmp_path / "web-users"
    set_account(users, "kacho", "a long password")
    async with running(load_config(write_config(tmp_path, sink, f'listen = "127.0.0.1:0"\nusers_file = "{users}"'))) as gw:
        port = gw.web.port
        r = await asyncio.to_thread(get, port, "/signin", method="POST", body="x=" + "a" * 70_000)
        assert r.status == 413
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /signin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      b"Content-Type: application/x-www-form-urlencoded\r\n\r\n5\r\nx=abc\r\n")
            reply = await asyncio.to_thread(s.recv, 200)
        assert reply.startswith(b"HTTP/1.1 411")


async def test_start_up_names_accounts_that_cannot_sign_in(tmp_path: Path, sink: Sink,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    users = tmp_path / "web-users"
    set_account(users, "kacho", "a long password", totp=False)  # an approver without TOTP
    set_account(users, "nobody", "a long password")  # not a person of the gateway
    set_account(users, "tanaka", "a long password", totp=False)  # a sender: fine without TOTP
    caplog.set_level("WARNING", logger="dlpgate.web")
    async with running(load_config(write_config(tmp_path, sink, f'listen = "127.0.0.1:0"\nusers_file = "{users}"'))):
        events = {(r.__dict__.get("event"), r.__dict__.get("login")) for r in caplog.records}
    assert ("web_account_no_totp", "kacho") in events
    assert ("web_account_unbound", "nobody") in events
    assert not any(login == "tanaka" for _, login in events)
