"""The console's accounts file, TOTP, throttling, sessions and config checks (no browser needed)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pyotp
import pytest

from dlpgate.config import load_config
from dlpgate.errors import ConfigError, InputError
from dlpgate.web.accounts import AccountFile, parse_accounts, set_account, totp_matches
from dlpgate.web.guard import Sessions, Throttle, csrf_ok


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_cli_creates_account_prints_uri_once_never_the_password(tmp_path: Path) -> None:
    f = tmp_path / "web-users"
    password = "correct horse battery staple"
    p = subprocess.run([sys.executable, "-m", "dlpgate.cli", "web-user", "add", str(f), "Tanaka",
                        "--password-stdin"], input=password + "\n", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert password not in p.stdout + p.stderr
    assert "otpauth://totp/dlpgate:tanaka?secret=" in p.stdout
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    text = f.read_text()
    assert password not in text and text.startswith("tanaka:$scrypt$")
    acc = AccountFile(f)
    assert acc.check_password("TANAKA", password) is not None
    assert acc.check_password("tanaka", "wrong password") is None
    assert acc.check_password("nobody", password) is None
    secret = acc.get("tanaka").totp_secret  # type: ignore[union-attr]
    assert secret and secret in p.stdout
    listed = subprocess.run([sys.executable, "-m", "dlpgate.cli", "web-user", "list", str(f)],
                            capture_output=True, text=True, timeout=60)
    assert listed.stdout.strip() == "tanaka\ttotp" and secret not in listed.stdout
    # a password change keeps the enrolled phone with --keep-totp and shows no URI
    p = subprocess.run([sys.executable, "-m", "dlpgate.cli", "web-user", "add", str(f), "tanaka", "--password-stdin",
                        "--keep-totp"], input="another password\n", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "otpauth" not in p.stdout
    assert AccountFile(f).get("tanaka").totp_secret == secret  # type: ignore[union-attr]


def test_cli_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    f = tmp_path / "web-users"
    p = subprocess.run([sys.executable, "-m", "dlpgate.cli", "web-user", "add", str(f), "a:b", "--password-stdin"],
                       input="long enough password\n", capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    p = subprocess.run([sys.executable, "-m", "dlpgate.cli", "web-user", "add", str(f), "a", "--password-stdin"],
                       input="short\n", capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "at least 8" in p.stderr
    f.write_text("tanaka:not-a-hash:\n")
    p = subprocess.run([sys.executable, "-m", "dlpgate.cli", "web-user", "list", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and ":1:" in p.stderr


def test_broken_file_lets_nobody_in(tmp_path: Path) -> None:
    f = tmp_path / "web-users"
    set_account(f, "tanaka", "a good password")
    f.write_text(f.read_text() + "garbage line\n")
    assert AccountFile(f).check_password("tanaka", "a good password") is None
    with pytest.raises(ConfigError):
        parse_accounts(f.read_text(), "x")
    with pytest.raises(InputError):
        set_account(tmp_path / "other", "has space", "a good password")


def test_totp_window_and_no_replay() -> None:
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    now = 1_800_000_000.0
    code = totp.at(now)
    step = totp_matches(secret, code, 0, now)
    assert step == int(now // 30)
    assert totp_matches(secret, code, step, now) is None  # the same code twice: refused
    assert totp_matches(secret, totp.at(now - 30), 0, now) == step - 1  # clock skew of one step
    assert totp_matches(secret, totp.at(now - 90), 0, now) is None
    assert totp_matches(secret, "12345", 0, now) is None
    assert totp_matches("", code, 0, now) is None


def test_throttle_locks_and_unlocks() -> None:
    clock = Clock()
    t = Throttle(3, 900, clock)
    assert not t.fail("a") and not t.fail("a")
    assert t.fail("a") and t.locked("a")
    assert not t.locked("b")
    clock.t += 899
    assert t.locked("a")
    clock.t += 2
    assert not t.locked("a") and not t.fail("a")


def test_sessions_idle_timeout_and_csrf() -> None:
    clock = Clock()
    s = Sessions(900, clock)
    a = s.new("tanaka", "ja")
    assert s.get(a.token) is a
    clock.t += 600
    assert s.get(a.token) is a  # activity renews
    clock.t += 901
    assert s.get(a.token) is None
    b = s.new("tanaka", "ja")
    assert csrf_ok(b, b.csrf) and not csrf_ok(b, "") and not csrf_ok(b, b.csrf + "x") and not csrf_ok(None, b.csrf)
    assert "tanaka" not in b.token and len(b.token) >= 40
    s.end(b.token)
    assert s.get(b.token) is None


@pytest.mark.parametrize("web, message", [
    ('listen = "0.0.0.0:8080"\nusers_file = "u"', "plain HTTP is allowed only on a loopback"),
    ('listen = "127.0.0.1:8080"', "nobody could sign in"),
    ('listen = "127.0.0.1:8080"\nusers_file = "u"\ntls_cert = "c"', "must be set together"),
    ('trusted_proxies = ["not a net"]', "web.trusted_proxies[0]"),
    ('base_url = "javascript:alert(1)"', "web.base_url"),
    ('notify_delayed = true', "web.notify_delayed"),
    ('require_totp = "sometimes"', "web.require_totp"),
])
def test_config_refuses_unsafe_web_settings(tmp_path: Path, web: str, message: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(f"[web]\n{web}\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(p)


def test_config_accepts_tls_or_loopback(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[web]\nlisten = "0.0.0.0:8443"\ntls_cert = "c.pem"\ntls_key = "k.pem"\nusers_file = "u"\n')
    assert load_config(p).web.listen == "0.0.0.0:8443"
    p.write_text('[web]\nlisten = "[::1]:8080"\ntrusted_proxies = ["::1/128"]\nproxy_users = ["0"]\n')
    assert load_config(p).web.trusted_proxies == ("::1/128",)
    assert load_config(None).web.listen == ""


def test_a_flood_of_sign_in_pages_does_not_sign_anyone_out() -> None:
    from dlpgate.web import guard

    clock = Clock()
    s = Sessions(900, clock)
    kept = s.new("tanaka", "ja")
    for _ in range(guard.MAX_SESSIONS + 50):
        clock.t += 0.001
        s.new("", "ja")
    assert s.get(kept.token) is kept
