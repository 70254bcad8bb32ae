"""Configuration: every key optional, every mistake named; the CLI's one-line errors."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from dlpgate.cli import main as cli_main
from dlpgate.config import load_config
from dlpgate.errors import ConfigError


def write(tmp: Path, text: str) -> Path:
    p = tmp / "c.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_without_a_file() -> None:
    c = load_config(None)
    assert c.smtp.listen == "127.0.0.1:10025" and c.delay.seconds == 300 and c.store.path == "quarantine"
    assert c.relay.upstream == "127.0.0.1:10026" and c.metrics.listen == "127.0.0.1:9325"
    assert (c.rules_path / "policy.toml").exists()


@pytest.mark.parametrize("text,key", [
    ("[smtp]\nlisten = 25\n", "smtp.listen"),
    ("[smtp]\nlistn = '1:2'\n", "smtp.listn"),
    ("[relay]\ntls = 'maybe'\n", "relay.tls"),
    ("[delay]\nseconds = -1\n", "delay.seconds"),
    ("[smtp]\nallowed_clients = ['10.0.0.0/33']\n", "smtp.allowed_clients[0]"),
    ("[[approvers]]\nsenders = ['*@a.jp']\n", "approvers[0].approvers"),
    ("[nonsense]\n", "nonsense"),
    ("[smtp]\nauth_users_file = 'users'\n", "smtp.auth_users_file"),
    ("[smtp\n", "invalid TOML"),
])
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, text))


def test_cli_turns_errors_into_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, "[delay]\nsecond = 5\n")
    assert cli_main(["outbox", "list", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "delay.second" in err[0]


def test_auth_users_tool_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    users = tmp_path / "users"
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret-pass\n"))
    assert cli_main(["auth", "add", str(users), "clerk@example.jp", "--password-stdin"]) == 0
    assert capsys.readouterr().out.startswith("added clerk@example.jp in ")
    assert users.stat().st_mode & 0o777 == 0o600
    assert "s3cret-pass" not in users.read_text()
    assert cli_main(["auth", "list", str(users)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "clerk@example.jp"
    assert cli_main(["auth", "remove", str(users), "nobody@example.jp"]) == 2  # an input error, said in one line
    assert capsys.readouterr().err == f"dlpgate: nobody@example.jp: no such login in {users}\n"
