"""The control socket itself: the kernel names the caller, bad requests get one typed error, and the
socket cannot be hijacked (a second gateway, a directory anyone may write)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from dlpgate.config import load_config
from dlpgate.control import Authority, ControlServer
from dlpgate.control_client import call
from dlpgate.errors import InputError, PermissionDenied
from dlpgate.store import AsyncStore
from tests.test_approval_support import (
    ControlThread,
    config_toml,
    my_login,
    people_with_me,
    put_held,
    signed_store,
)


def _raw(path: Path, payload: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(str(path))
        s.sendall(payload)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf
    finally:
        s.close()


@pytest.fixture
def ctl(tmp_path: Path):  # noqa: ANN201
    cfg = load_config(config_toml(tmp_path, people=people_with_me()))
    st = signed_store(cfg)
    gw = ControlThread(cfg)
    gw.held = put_held(st, cfg, seed=51).id  # type: ignore[attr-defined]
    st.close()
    yield gw
    gw.close()


def test_the_kernel_names_the_caller_not_the_request(ctl: ControlThread) -> None:
    sock = ctl.config.control_socket
    me = call(sock, "whoami", {"login": "kacho-login", "uid": 0})
    assert me["login"] == my_login() and me["via"] == "socket" and me["addresses"] == ["kacho@example.jp"]
    reply = json.loads(_raw(sock, b'{"op": "whoami", "login": "bucho-login", "caller": "bucho-login"}\n'))
    assert reply["ok"] and reply["result"]["login"] == my_login()


def test_bad_requests_get_one_typed_error(ctl: ControlThread) -> None:
    sock = ctl.config.control_socket
    for payload, needle in ((b"not json\n", "not JSON"), (b'["whoami"]\n', "expected"),
                            (b'{"op": "quarantine.purge_all"}\n', "unknown operation"),
                            (b'{"op": "whoami", "args": [1]}\n', "args must be an object")):
        reply = json.loads(_raw(sock, payload))
        assert reply == {"ok": False, "error": {"type": "InputError", "message": reply["error"]["message"]}}
        assert needle in reply["error"]["message"]
    with pytest.raises(InputError, match="unknown state"):
        call(sock, "quarantine.list", {"state": "pending"})
    # a line longer than any request: the connection is closed, the gateway carries on
    assert _raw(sock, b"x" * (1 << 17) + b"\n") == b""
    assert call(sock, "whoami")["login"] == my_login()


def test_refusals_over_the_socket_are_typed(ctl: ControlThread) -> None:
    held = ctl.held  # type: ignore[attr-defined]
    with pytest.raises(PermissionDenied, match="not one of your addresses"):
        call(ctl.config.control_socket, "quarantine.decide", {"id": held, "decision": "release",
                                                               "approver": "bucho@example.jp"})
    rows = call(ctl.config.control_socket, "quarantine.list", {})
    assert [(r["id"], r["state"], r["can_decide"]) for r in rows] == [(held, "held", True)]


async def test_no_second_gateway_and_no_world_writable_directory(tmp_path: Path) -> None:
    cfg = load_config(config_toml(tmp_path, people=people_with_me()))
    store = AsyncStore(cfg.store_path)
    auth = Authority(cfg, store, hostname="gw.test")
    try:
        first = ControlServer(auth, tmp_path / "ctl" / "control.sock")
        await first.start()
        assert oct((tmp_path / "ctl" / "control.sock").stat().st_mode & 0o777) == "0o600"
        with pytest.raises(InputError, match="another gateway is serving"):
            await ControlServer(auth, tmp_path / "ctl" / "control.sock").start()
        assert (await auth.call(auth_caller(), "whoami", {}))["login"] == my_login()
        await first.stop()
        open_dir = tmp_path / "open"
        open_dir.mkdir()
        os.chmod(open_dir, 0o777)
        with pytest.raises(InputError, match="writable by everyone"):
            await ControlServer(auth, open_dir / "control.sock").start()
    finally:
        auth.close()
        store.close()


def auth_caller():  # noqa: ANN201
    from dlpgate.control import Caller

    return Caller(my_login(), os.getuid(), "socket")


def test_config_check_names_a_missing_control_group(tmp_path: Path) -> None:
    from tests.test_approval_support import run_cli

    cfg = config_toml(tmp_path, tail='[control]\ngroup = "no-such-group-dlpgate"\n')
    code, out, err = run_cli(["config", "check", "--no-probe", "--config", str(cfg)])
    assert code == 2 and "control.group: no Unix group 'no-such-group-dlpgate'" in err and err.count("\n") == 1


def test_a_socket_deeper_than_sun_path_still_works(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    cfg = load_config(config_toml(deep, people=people_with_me()))
    assert len(str(cfg.control_socket)) > 108
    gw = ControlThread(cfg)
    try:
        assert cfg.control_socket.exists()
        assert call(cfg.control_socket, "whoami")["login"] == my_login()
    finally:
        gw.close()
    assert not cfg.control_socket.exists()


def test_store_os_user_comes_from_the_uid_not_the_environment(monkeypatch) -> None:  # noqa: ANN001
    """The os_user the store records for the gateway's own entries is the kernel's uid's account."""
    import pwd

    from dlpgate.store import model

    model.os_user.cache_clear()
    monkeypatch.setenv("LOGNAME", "mallory")
    monkeypatch.setenv("USER", "mallory")
    try:
        assert model.os_user() == pwd.getpwuid(os.getuid()).pw_name != "mallory"
    finally:
        model.os_user.cache_clear()
