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
"""


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
    cfg = load_config(write_config(tmp_path, sink, 'listen = "127.0.0.1:0"\ntrusted_proxies = ["127.0.0.2/32"]'))
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
