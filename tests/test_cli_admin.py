"""The admin CLI against the gateway's control socket over a real store: tables, --json lines,
filters, one-line errors with exit 2. The CLI runs as this process's own login (bound to
kacho@example.jp and made an administrator here); other people act through the authority."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dlpgate.errors import PermissionDenied, StateError
from dlpgate.store import Store
from tests.test_approval_support import (
    ControlThread,
    assert_no_identifier,
    config_toml,
    csv_bytes,
    load_config,
    my_login,
    notices_in,
    people_with_me,
    put_held,
    run_cli,
    signed_store,
)


@pytest.fixture
def env(tmp_path: Path):  # noqa: ANN201
    cfg_path = config_toml(tmp_path, people=people_with_me(), tail=f'[control]\nadmins = ["{my_login()}"]\n')
    cfg = load_config(cfg_path)
    st = signed_store(cfg)
    a = put_held(st, cfg, sender="tanaka@soumu.example.jp", seed=1)
    b = put_held(st, cfg, sender="kacho@example.jp", rcpts=("x@example.com", "y@example.com"), n=120,
                 required=2, seed=2)
    c = put_held(st, cfg, sender="sato@zeimu.example.jp", seed=3)
    gw = ControlThread(cfg)
    yield {"cfg": str(cfg_path), "store": st, "a": a, "b": b, "c": c, "gw": gw,
           "numbers": a.numbers + b.numbers + c.numbers}
    gw.close()
    st.close()


def test_list_table_and_json(env) -> None:  # noqa: ANN001
    code, out, err = run_cli(["quarantine", "list", "--config", env["cfg"]])
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "AGE", "SENDER", "RECIPIENTS", "SUBJECT", "TOP", "FINDING", "RECORDS",
                                "APPROVALS"]
    assert len(lines) == 4
    row_b = next(ln for ln in lines if env["b"].id in ln)
    assert "kacho@example.jp" in row_b and "my_number x120 (high)" in row_b and "0/2" in row_b
    assert "名簿の送付" in row_b
    assert_no_identifier(out, env["numbers"])

    code, out, _ = run_cli(["quarantine", "list", "--json", "--config", env["cfg"]])
    objs = [json.loads(x) for x in out.splitlines()]
    assert [o["id"] for o in objs] == [env["a"].id, env["b"].id, env["c"].id]
    assert objs[1]["approvals_required"] == 2 and objs[1]["approvers"] == ["bucho@example.jp"]
    assert objs[0]["findings"][0]["sample"].endswith("********")
    assert_no_identifier(out, env["numbers"])


def test_list_filters(env) -> None:  # noqa: ANN001
    def ids(*args: str) -> list[str]:
        code, out, err = run_cli(["quarantine", "list", "--json", *args, "--config", env["cfg"]])
        assert code == 0, err
        return [json.loads(x)["id"] for x in out.splitlines()]

    assert ids("--sender", "TANAKA@soumu.example.jp") == [env["a"].id]
    # kacho approves soumu's mail but not his own; bucho approves both; nobody routes zeimu
    assert ids("--approver", "kacho@example.jp") == [env["a"].id]
    assert ids("--approver", "bucho@example.jp") == [env["a"].id, env["b"].id]
    assert ids("--approver", "dairi@example.jp") == [env["a"].id]
    assert ids("--state", "rejected") == []
    code, _, _ = run_cli(["quarantine", "reject", env["c"].id, "--approver", "bucho@example.jp", "--reason", "x",
                          "--config", env["cfg"]])
    assert code == 2  # bucho is not routed for zeimu
    code, _, _ = run_cli(["quarantine", "reject", env["a"].id, "--approver", "kacho@example.jp", "--reason",
                          "not to partners", "--config", env["cfg"]])
    assert code == 0
    assert ids("--state", "rejected") == [env["a"].id]
    assert ids("--state", "all") == [env["a"].id, env["b"].id, env["c"].id]
    assert ids("--state", "held,rejected", "--approver", "bucho@example.jp") == [env["a"].id, env["b"].id]
    code, out, _ = run_cli(["quarantine", "list", "--state", "all", "--config", env["cfg"]])
    assert "STATE" in out.splitlines()[0] and "rejected" in out
    code, _, err = run_cli(["quarantine", "list", "--state", "pending", "--config", env["cfg"]])
    assert code == 2 and err.count("\n") == 1 and "unknown state pending" in err
    # people who are not administrators see their own mail and the mail routed to them, nothing else
    gw = env["gw"]

    def seen(login: str, **args: str) -> list[str]:
        return [d["id"] for d in gw.as_person(login, "quarantine.list", state="all", **args)]

    assert seen("sato-login") == [env["c"].id]
    assert seen("bucho-login") == [env["a"].id, env["b"].id]
    assert seen("dairi-login") == [env["a"].id]
    with pytest.raises(PermissionDenied, match="not one of your addresses"):
        gw.as_person("sato-login", "quarantine.list", sender="tanaka@soumu.example.jp")
    with pytest.raises(PermissionDenied, match="neither yours nor routed to you"):
        gw.as_person("sato-login", "quarantine.show", id=env["a"].id)
    with pytest.raises(PermissionDenied, match="not an administrator"):
        gw.as_person("sato-login", "audit.export")
    with pytest.raises(PermissionDenied, match="not known to the gateway"):
        gw.as_person("stranger", "quarantine.list")
    rows = gw.as_person("bucho-login", "quarantine.list")
    assert [(d["id"], d["can_decide"], d["approvals_needed"]) for d in rows] == [(env["b"].id, True, 2)]


def test_show_has_envelope_headers_parts_and_masked_findings(env) -> None:  # noqa: ANN001
    a = env["a"]
    code, out, err = run_cli(["quarantine", "show", a.id, "--config", env["cfg"]])
    assert code == 0, err
    assert f"id:          {a.id}" in out
    assert "state:       held (0 of 1 approvals)" in out
    assert "Subject: 名簿の送付" in out and "From: tanaka@soumu.example.jp" in out
    csv_hash = hashlib.sha256(csv_bytes(a.numbers)).hexdigest()
    assert csv_hash in out and "meibo.csv" in out and "text/csv" in out
    assert "approvers:   kacho@example.jp, bucho@example.jp; deputies dairi@example.jp" in out
    assert "my_number" in out and "********" in out
    assert_no_identifier(out, env["numbers"])

    code, out, _ = run_cli(["quarantine", "show", a.id, "--json", "--config", env["cfg"]])
    d = json.loads(out)
    assert d["id"] == a.id and d["content_kept"] is True
    assert [p["content_type"] for p in d["mime_parts"]] == ["text/plain", "text/csv"]
    assert d["mime_parts"][1]["sha256"] == csv_hash
    assert d["recipients"] == [{"rcpt": "partner@example.com", "state": "pending", "code": None}]
    assert [x["event"] for x in d["audit"]] == ["accepted", "verdict", "held"]
    assert_no_identifier(out, env["numbers"])


def test_release_and_errors_are_one_line_exit_2(env) -> None:  # noqa: ANN001
    cfg, a, b = env["cfg"], env["a"], env["b"]
    cases = [
        (["quarantine", "release", "nosuchid", "--approver", "kacho@example.jp"], "no message with id"),
        (["quarantine", "release", a.id, "--approver", "somebody@example.jp"], "not one of your addresses"),
        (["quarantine", "release", a.id, "--approver", "tanaka@soumu.example.jp"], "not one of your addresses"),
        (["quarantine", "release", a.id, "--approver", "bucho@example.jp"], "not one of your addresses"),
        (["quarantine", "release", b.id, "--approver", "kacho@example.jp"], "self-approval"),
        (["quarantine", "release", b.id], "self-approval"),
        (["quarantine", "release", a.id[:3]], "ambiguous"),
        (["quarantine", "show", "nosuchid"], "no message with id"),
    ]
    for argv, msg in cases:
        code, out, err = run_cli([*argv, "--config", cfg])
        assert code == 2, argv
        assert out == "" and err.startswith("dlpgate: ") and err.count("\n") == 1 and msg in err, (argv, err)
    gw = env["gw"]
    with pytest.raises(PermissionDenied, match="self-approval"):
        gw.as_person("tanaka-login", "quarantine.decide", id=a.id, decision="release",
                     approver="tanaka@soumu.example.jp")
    code, out, err = run_cli(["quarantine", "release", a.id[:16], "--approver", "kacho@example.jp", "--reason",
                              "checked with 部長", "--config", cfg])
    assert (code, err) == (0, "")
    assert out.strip() == f"released {a.id}: it is sent now; the sender is notified"
    with pytest.raises(StateError, match="already decided"):
        gw.as_person("bucho-login", "quarantine.decide", id=a.id, decision="release")
    res = gw.as_person("bucho-login", "quarantine.decide", id=b.id, decision="release")
    assert (res["state"], res["approvals"], res["required"]) == ("held", 1, 2)
    code, out, _ = run_cli(["quarantine", "show", b.id, "--config", cfg])
    assert "warning:     only 1 approver(s) may act" in out  # kacho cannot approve his own mail
    # reject needs --reason: argparse usage error, exit 2
    code, _, err = run_cli(["quarantine", "reject", b.id, "--approver", "bucho@example.jp", "--config", cfg])
    assert code == 2 and "--reason" in err
    st: Store = env["store"]
    d = st.get(a.id)
    assert d["state"] == "released" and d["approvals"][0]["reason"] == "checked with 部長"
    assert d["approvals"][0]["os_user"] == my_login()  # who ran the command, as the kernel said
    released = [n for n in notices_in(st) if "released" in str(n["subject"])]
    assert [n["to"] for n in released] == [["tanaka@soumu.example.jp"]]


def test_gateway_down_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    cfg = config_toml(tmp_path)
    for argv in (["quarantine", "list"], ["quarantine", "release", "0123456789abcdef"], ["outbox", "recall", "0123"],
                 ["audit", "verify"], ["audit", "export"], ["log", "search"]):
        code, out, err = run_cli([*argv, "--config", str(cfg)])
        assert code == 2 and out == "" and err.count("\n") == 1, (argv, err)
        assert "the gateway is not running" in err and "nothing was changed" in err
    assert not (tmp_path / "store").exists()


def test_log_search(env) -> None:  # noqa: ANN001
    cfg = env["cfg"]
    code, out, _ = run_cli(["log", "search", "--json", "--config", cfg])
    objs = [json.loads(x) for x in out.splitlines()]
    assert [o["id"] for o in objs] == [env["a"].id, env["b"].id, env["c"].id]
    h = hashlib.sha256(csv_bytes(env["b"].numbers)).hexdigest()
    assert objs[1]["attachments"] == [{"filename": "meibo.csv", "content_type": "text/csv",
                                       "size": len(csv_bytes(env["b"].numbers)), "sha256": h}]
    code, out, _ = run_cli(["log", "search", "--attachment-hash", h.upper(), "--json", "--config", cfg])
    assert [json.loads(x)["id"] for x in out.splitlines()] == [env["b"].id]
    code, out, _ = run_cli(["log", "search", "--sender", "sato@zeimu.example.jp", "--since", "1h", "--config", cfg])
    assert code == 0 and env["c"].id in out and env["a"].id not in out and "meibo.csv" in out
    code, out, _ = run_cli(["log", "search", "--until", "2000-01-01", "--config", cfg])
    assert code == 0 and out.strip() == "no logged messages match"
    code, _, err = run_cli(["log", "search", "--attachment-hash", "abc", "--config", cfg])
    assert code == 2 and "64 hex digits" in err
    code, out, _ = run_cli(["log", "search", "--attachment-hash", h[:10], "--json", "--config", cfg])
    assert [json.loads(x)["id"] for x in out.splitlines()] == [env["b"].id]
    code, out, _ = run_cli(["log", "search", "--since", "today", "--sender", "sato@zeimu.example.jp", "--config", cfg])
    assert code == 0 and env["c"].id in out
    code, _, err = run_cli(["log", "search", "--since", "last tuesday", "--config", cfg])
    assert code == 2 and "cannot read time" in err


def test_installed_entry_point_config_after_arguments(env) -> None:  # noqa: ANN001
    exe = Path(sys.executable).with_name("dlpgate")
    proc = subprocess.run([str(exe), "quarantine", "list", "--json", "--approver", "bucho@example.jp",
                           "--config", env["cfg"]], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["id"] for x in proc.stdout.splitlines()] == [env["a"].id, env["b"].id]


def test_approver_logins_migrate_and_unbound_approvers_fail_closed(tmp_path: Path) -> None:
    from dlpgate.identities import Identities, binding_problems

    # the old table still binds: read as [[people]], with a line saying so
    cfg_path = config_toml(tmp_path, people={}, tail='[approver_logins]\n"kacho@example.jp" = ["kacho-login"]\n')
    cfg = load_config(cfg_path)
    ids = Identities(cfg)
    assert ids.logins_for("kacho@example.jp") == ("kacho-login",)
    assert ids.unbound_approvers() == ("bucho@example.jp", "dairi@example.jp")
    problems = binding_problems(cfg)
    assert any("[approver_logins] is read as [[people]]" in p for p in problems)
    assert any("cannot approve: bucho@example.jp, dairi@example.jp" in p for p in problems)
    # approvers and no bindings at all: nobody can approve, and `rules check` says so in one line
    cfg_path = config_toml(tmp_path, people={})
    code, out, err = run_cli(["rules", "check", "--config", str(cfg_path)])
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if "nobody can approve" in ln]
    assert len(lines) == 1 and "fail closed" in lines[0]
    code, out, err = run_cli(["config", "check", "--no-probe", "--config", str(cfg_path)])
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if "nobody can approve" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: ")
