"""Forging approvals with real OS accounts against a real `dlpgate serve` (issue 14).

Each attack from the issue runs as its own Unix account (created here with useradd, removed
afterwards) through the real CLI, against a gateway subprocess serving its control socket. Every
one must be refused, leave the message `held` (or `delayed`), and leave a `refused` audit entry
naming the login the kernel reported.

The CLI runs under the account with `runuser -u NAME --` when that account can execute this
interpreter; when it cannot (an interpreter under root's 0700 home, as with pyenv), a forked child
drops to the account's uid, gid and groups before running the same CLI code: either way the
kernel hands the gateway that account's uid (SO_PEERCRED), which is the point under test.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from dlpgate.config import load_config
from dlpgate.store import DELAYED, NewMessage, new_id
from tests.test_approval_support import people_toml, put_held, signed_store

ROLES = ("appr", "two", "send", "send2", "mal", "strange", "out")


def _need_root() -> None:
    if os.geteuid() == 0 and shutil.which("useradd") and shutil.which("runuser"):
        return
    if os.environ.get("CI"):
        pytest.fail("CI must run as root with useradd/runuser (Debian passwd, util-linux): these tests need real"
                    " OS accounts")
    pytest.skip("needs root, useradd and runuser (real OS accounts)")


def _sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True, timeout=60)


class Accounts:
    """Unique accounts and one group for this run; removed however the run ends."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.group = f"dltg{tag}"
        self.names = {r: f"dlt{tag}{r}" for r in ROLES}
        self.made: list[str] = []
        _sh("groupadd", self.group)
        try:
            for role, name in self.names.items():
                extra = [] if role == "out" else ["-G", self.group]
                _sh("useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", *extra, name)
                self.made.append(name)
        except BaseException:
            self.remove()
            raise

    def __getitem__(self, role: str) -> str:
        return self.names[role]

    def remove(self) -> None:
        for name in self.made:
            subprocess.run(["userdel", name], capture_output=True, timeout=60)
        subprocess.run(["groupdel", self.group], capture_output=True, timeout=60)


_RUNUSER_OK: dict[str, bool] = {}


def _runuser_works(user: str) -> bool:
    if user not in _RUNUSER_OK:
        p = subprocess.run(["runuser", "-u", user, "--", sys.executable, "-c", "import dlpgate.cli"],
                           capture_output=True, timeout=120, cwd="/")
        _RUNUSER_OK[user] = p.returncode == 0
    return _RUNUSER_OK[user]


def run_as(user: str, argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The real `dlpgate` CLI as the OS account `user`: (exit code, stdout, stderr)."""
    pw = pwd.getpwnam(user)
    base = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/", "LOGNAME": user, "USER": user, "LANG": "C.UTF-8"}
    base.update(env or {})
    if _runuser_works(user):
        p = subprocess.run(["runuser", "-u", user, "--", "env", "-i", *[f"{k}={v}" for k, v in base.items()],
                            sys.executable, "-m", "dlpgate.cli", *argv], capture_output=True, text=True,
                           timeout=120, cwd="/")
        return p.returncode, p.stdout, p.stderr
    groups = os.getgrouplist(user, pw.pw_gid)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 99
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                os.setgroups(groups)
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
                os.chdir("/")
                os.environ.clear()
                os.environ.update(base)
                sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
                from dlpgate.cli import main

                try:
                    code = main(list(argv))
                except SystemExit as e:
                    code = int(e.code or 0)
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        out.seek(0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _need_root()
    acc = Accounts()
    # where the accounts may reach (socket, configs): /tmp itself, whatever TMPDIR says
    pub = Path(tempfile.mkdtemp(prefix="dlpgate-ctl-", dir="/tmp" if os.path.isdir("/tmp") else None))
    os.chmod(pub, 0o755)
    tmp = tmp_path_factory.mktemp("accounts")
    proc: subprocess.Popen[bytes] | None = None
    try:
        people = {acc["appr"]: "kacho@example.jp", acc["two"]: ["dairi@example.jp", "fuku@example.jp"],
                  acc["send"]: "tanaka@soumu.example.jp", acc["send2"]: "suzuki@soumu.example.jp",
                  acc["mal"]: "mallory@example.jp", acc["out"]: "outsider@example.jp"}
        cfg_path = pub / "gateway.toml"
        cfg_path.write_text(f"""
[smtp]
listen = "127.0.0.1:0"
hostname = "gw.test"
[relay]
upstream = "127.0.0.1:9"
tls = "off"
[store]
path = "{(tmp / 'store').as_posix()}"
[metrics]
listen = ""
[delay]
seconds = 3600
[quarantine]
language = "en"
[control]
socket = "{(pub / 'control.sock').as_posix()}"
group = "{acc.group}"
[[approvers]]
senders = ["*@soumu.example.jp"]
approvers = ["kacho@example.jp", "mukou@example.jp"]
deputies = ["dairi@example.jp", "fuku@example.jp"]

{people_toml(people)}
""", encoding="utf-8")
        os.chmod(cfg_path, 0o644)
        cfg = load_config(cfg_path)
        st = signed_store(cfg)  # the key the gateway will use (created now, 0600)
        h1 = put_held(st, cfg, seed=41)
        h2 = put_held(st, cfg, seed=42, required=2)
        h3 = put_held(st, cfg, seed=43)
        raw = b"Subject: minutes\r\n\r\nsee you\r\n"
        d1 = new_id()
        rel = st.write_spool(d1, raw)
        now = st.clock()
        st.accept(NewMessage(id=d1, sender="tanaka@soumu.example.jp", recipients=("x@example.com",), spool=rel,
                             size=len(raw), sha256="0" * 64, arrived=now, state=DELAYED, due_at=now + 3600))
        st.close()
        log = open(tmp / "serve.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "dlpgate.cli", "serve", "--config", str(cfg_path)],
                                stdout=log, stderr=subprocess.STDOUT)
        sock = pub / "control.sock"
        deadline = time.monotonic() + 120
        while not sock.exists():
            assert proc.poll() is None, (tmp / "serve.log").read_text()
            assert time.monotonic() < deadline, "gateway did not open its control socket"
            time.sleep(0.1)
        yield {"acc": acc, "cfg": str(cfg_path), "pub": pub, "h1": h1.id, "h2": h2.id, "h3": h3.id, "d1": d1,
               "log": tmp / "serve.log", "numbers": h1.numbers + h2.numbers + h3.numbers, "proc": proc}
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        acc.remove()
        shutil.rmtree(pub, ignore_errors=True)


def admin(gw: dict[str, Any], *argv: str) -> Any:
    """The gateway's administrator (root here: trusted, as the service account) reading state."""
    p = subprocess.run([sys.executable, "-m", "dlpgate.cli", *argv, "--config", gw["cfg"]], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout


def state(gw: dict[str, Any], mid: str) -> str:
    return str(json.loads(admin(gw, "quarantine", "show", mid, "--json"))["state"])


def refusals(gw: dict[str, Any], mid: str) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in admin(gw, "audit", "export", "--json", "--id", mid).splitlines()]
    return [r for r in rows if r["event"] == "refused"]


def refused_once_more(gw: dict[str, Any], mid: str, before: int, login: str) -> dict[str, Any]:
    now = refusals(gw, mid)
    assert len(now) == before + 1, now
    assert now[-1]["actor"] == login and now[-1]["os_user"] == login
    return now[-1]


def test_logname_and_user_spoof_is_refused(gw: dict[str, Any]) -> None:
    acc, h1 = gw["acc"], gw["h1"]
    n = len(refusals(gw, h1))
    code, out, err = run_as(acc["mal"], ["quarantine", "release", h1, "--approver", "kacho@example.jp",
                                         "--config", gw["cfg"]],
                            env={"LOGNAME": acc["appr"], "USER": acc["appr"], "SUDO_USER": acc["appr"]})
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "not one of your addresses" in err and acc["mal"] in err
    assert state(gw, h1) == "held"
    r = refused_once_more(gw, h1, n, acc["mal"])
    assert r["detail"]["approver"] == "kacho@example.jp" and r["detail"]["via"] == "socket"


def test_foreign_config_with_its_own_routes_is_refused(gw: dict[str, Any]) -> None:
    acc, h1, pub = gw["acc"], gw["h1"], gw["pub"]
    evil = pub / "evil.toml"
    evil.write_text(f"""
[store]
path = "/nonexistent"
[control]
socket = "{(pub / 'control.sock').as_posix()}"
admins = ["{acc['mal']}"]
[[approvers]]
senders = ["*"]
approvers = ["mallory@example.jp"]
[[people]]
login = "{acc['mal']}"
addresses = ["mallory@example.jp", "kacho@example.jp"]
""", encoding="utf-8")
    os.chmod(evil, 0o644)
    n = len(refusals(gw, h1))
    for approver in ("mallory@example.jp", "kacho@example.jp"):
        code, out, err = run_as(acc["mal"], ["quarantine", "release", h1, "--approver", approver,
                                             "--config", str(evil)])
        assert code == 2 and err.count("\n") == 1, err
        assert "not an approver" in err or "not one of your addresses" in err
    assert state(gw, h1) == "held"
    assert len(refusals(gw, h1)) == n + 2
    # the foreign config's admins line makes nobody an administrator either
    code, _, err = run_as(acc["mal"], ["audit", "export", "--config", str(evil)])
    assert code == 2 and "not an administrator" in err


def test_one_login_with_two_approver_addresses_is_one_person(gw: dict[str, Any]) -> None:
    acc, h2 = gw["acc"], gw["h2"]
    code, out, err = run_as(acc["two"], ["quarantine", "release", h2, "--config", gw["cfg"]])
    assert code == 2 and "choose one with --approver" in err  # two addresses may act: the CLI must say which
    code, out, err = run_as(acc["two"], ["quarantine", "release", h2, "--approver", "dairi@example.jp",
                                         "--reason", "checked", "--config", gw["cfg"]])
    assert code == 0 and "1 of 2" in out, err
    n = len(refusals(gw, h2))
    code, out, err = run_as(acc["two"], ["quarantine", "release", h2, "--approver", "fuku@example.jp",
                                         "--config", gw["cfg"]])
    assert code == 2 and "a second person is needed" in err, err
    assert state(gw, h2) == "held"
    refused_once_more(gw, h2, n, acc["two"])
    # a second person completes it: the real accounts work, not only refuse
    code, out, err = run_as(acc["appr"], ["quarantine", "release", h2[:14], "--config", gw["cfg"]])
    assert code == 0 and out.startswith(f"released {h2}"), err
    show = json.loads(admin(gw, "quarantine", "show", h2, "--json"))
    assert [(d["approver"], d["login"]) for d in show["decisions"]] == [("dairi@example.jp", acc["two"]),
                                                                        ("kacho@example.jp", acc["appr"])]


def test_sender_recalling_anothers_mail_is_refused(gw: dict[str, Any]) -> None:
    acc, d1 = gw["acc"], gw["d1"]
    n = len(refusals(gw, d1))
    code, out, err = run_as(acc["send2"], ["outbox", "recall", d1, "--config", gw["cfg"]])
    assert code == 2 and "only its sender may recall it" in err
    code, out, err = run_as(acc["send2"], ["outbox", "recall", d1, "--sender", "tanaka@soumu.example.jp",
                                           "--config", gw["cfg"]], env={"LOGNAME": acc["send"]})
    assert code == 2 and "only its sender may recall it" in err
    assert state(gw, d1) == "delayed"
    assert len(refusals(gw, d1)) == n + 2
    # the other sender does not even see it
    code, out, err = run_as(acc["send2"], ["outbox", "list", "--json", "--config", gw["cfg"]])
    assert code == 0 and out == ""
    code, out, err = run_as(acc["send"], ["outbox", "list", "--json", "--config", gw["cfg"]])
    assert code == 0 and [json.loads(x)["id"] for x in out.splitlines()] == [d1]


def test_unbound_approver_is_refused_and_announced(gw: dict[str, Any]) -> None:
    acc, h1 = gw["acc"], gw["h1"]
    n = len(refusals(gw, h1))
    # mukou@ is a configured approver nobody is bound to: no account may act as it
    for who in ("mal", "send2"):
        code, out, err = run_as(acc[who], ["quarantine", "release", h1, "--approver", "mukou@example.jp",
                                           "--config", gw["cfg"]])
        assert code == 2 and "not one of your addresses" in err
    assert state(gw, h1) == "held"
    assert len(refusals(gw, h1)) == n + 2
    log = gw["log"].read_text(encoding="utf-8", errors="replace")
    assert "approver addresses without a login in [[people]] cannot approve: mukou@example.jp" in log


def test_unknown_login_and_outsider_are_refused(gw: dict[str, Any]) -> None:
    acc, h1 = gw["acc"], gw["h1"]
    n = len(refusals(gw, h1))
    code, out, err = run_as(acc["strange"], ["quarantine", "release", h1, "--approver", "kacho@example.jp",
                                             "--config", gw["cfg"]])
    assert code == 2 and "not known to the gateway" in err
    code, out, err = run_as(acc["strange"], ["quarantine", "list", "--config", gw["cfg"]])
    assert code == 2 and "not known to the gateway" in err
    assert state(gw, h1) == "held"
    refused_once_more(gw, h1, n, acc["strange"])
    # not in the socket's group: the kernel does not even let it connect
    code, out, err = run_as(acc["out"], ["quarantine", "release", h1, "--config", gw["cfg"]])
    assert code == 2 and err.count("\n") == 1 and "may not connect" in err
    assert state(gw, h1) == "held"


def test_self_approval_and_routed_views(gw: dict[str, Any]) -> None:
    acc, h3 = gw["acc"], gw["h3"]
    code, out, err = run_as(acc["send"], ["quarantine", "list", "--json", "--config", gw["cfg"]])
    rows = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and h3 in [r["id"] for r in rows] and not any(r["can_decide"] for r in rows)
    code, out, err = run_as(acc["send"], ["quarantine", "reject", h3, "--reason", "mine", "--config", gw["cfg"]])
    assert code == 2 and "self-approval" in err
    code, out, err = run_as(acc["mal"], ["quarantine", "show", h3, "--config", gw["cfg"]])
    assert code == 2 and "neither yours nor routed to you" in err
    assert state(gw, h3) == "held"
    out = admin(gw, "audit", "export", "--json")
    for n in gw["numbers"]:
        assert n not in out
    assert "audit log ok" in admin(gw, "audit", "verify")
