"""Issue 18, the supervisor's small things, end to end over real SMTP and the control socket:

- a clean delivered message shows no `APPROVALS 0/1` in `quarantine list --state all` (`-`);
- deputies (代理承認者) receive the approval request itself, not only the reminders;
- the commands in the approver notice run as printed, from a shell, with no --config of their own
  knowledge and no $DLPGATE_CONFIG;
- the CLI's one-line outcomes speak `[quarantine] language` ("ja" here), --json stays as it was.
"""

from __future__ import annotations

import asyncio
import email
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from dlpgate import approvals
from dlpgate.admin_cli import _LIST_JSON_KEYS
from dlpgate.config import DelayConfig, load_config
from dlpgate.store import DELAYED, NewMessage, Store, new_id
from tests.conftest import Sink, running
from tests.conftest import smtp_data as send
from tests.test_approval_loop import held_id, hold_judge, poke, wait_for
from tests.test_approval_support import (
    ControlThread,
    assert_no_identifier,
    config_toml,
    mail_with_numbers,
    my_login,
    people_with_me,
    put_held,
    run_cli,
    signed_store,
    synthetic_numbers,
)

SENDER = "tanaka@soumu.example.jp"
PARTNER = "partner@example.com"
CLEAN = b"From: tanaka@soumu.example.jp\r\nTo: friend@example.com\r\nSubject: lunch\r\n\r\nsee you at noon\r\n"


async def cli(*argv: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(run_cli, list(argv))


def _cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


async def test_clean_delivered_mail_shows_no_approvals(tmp_path: Path, sink: Sink) -> None:
    """The real pipeline: clean mail is delivered, planted numbers are held, then released."""
    cfg_path = config_toml(tmp_path, upstream_port=sink.port, people=people_with_me())
    cfg = replace(load_config(cfg_path), delay=DelayConfig(seconds=0))
    c = str(cfg_path)
    async with running(cfg) as gw:
        code, reply = await asyncio.to_thread(send, gw.smtp_port, SENDER, ["friend@example.com"], CLEAN)
        assert code == 250 and "held" not in reply, reply
        clean = reply.split("queued as ", 1)[1].split(",")[0].split()[0].strip()
        numbers = synthetic_numbers(3, seed=31)
        code, reply = await asyncio.to_thread(send, gw.smtp_port, SENDER, [PARTNER],
                                              mail_with_numbers(SENDER, [PARTNER], numbers))
        held = held_id(reply)
        code, out, err = await cli("quarantine", "release", held, "--config", c)
        assert code == 0, err
        poke(gw)
        await wait_for(lambda: sink.handler.to("friend@example.com") and sink.handler.to(PARTNER))

        async def listed() -> dict[str, list[str]]:
            code, out, err = await cli("quarantine", "list", "--state", "all", "--config", c)
            assert code == 0, err
            lines = out.splitlines()
            assert _cells(lines[0])[-1] == "APPROVALS" and "STATE" in _cells(lines[0])
            return {_cells(ln)[0]: _cells(ln) for ln in lines[1:]}

        deadline = time.monotonic() + 30
        rows = await listed()
        while time.monotonic() < deadline and not (rows[clean][2] == rows[held][2] == "delivered"):
            await asyncio.sleep(0.1)
            rows = await listed()
        assert rows[clean][2] == "delivered" and rows[clean][-1] == "-", rows[clean]
        assert rows[held][2] == "delivered" and rows[held][-1] == "1/1", rows[held]
        assert not any(cells[-1] in ("0/1", "0/0") for cells in rows.values()), rows
        assert_no_identifier("\n".join(" ".join(r) for r in rows.values()), numbers)

        # --json keeps its contract: the same keys for every row, nothing added for the table's sake
        code, out, _ = await cli("quarantine", "list", "--state", "all", "--json", "--config", c)
        objs = {o["id"]: o for o in map(json.loads, out.splitlines())}
        assert all(tuple(o) == _LIST_JSON_KEYS for o in objs.values())
        assert objs[clean]["verdict"] != "hold" and objs[clean]["approvals"] == []
        assert objs[clean]["can_decide"] is False and objs[clean]["approvals_needed"] == 0
        assert objs[held]["approvals"] == ["kacho@example.jp"]


def _dlpgate_on_path(tmp_path: Path) -> str:
    """A PATH with `dlpgate` on it: the installed entry point next to this interpreter, else a
    wrapper doing what it does (`python -m dlpgate.cli`)."""
    here = Path(sys.executable).parent
    if (here / "dlpgate").exists():
        return f"{here}{os.pathsep}{os.environ.get('PATH', '')}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    w = bin_dir / "dlpgate"
    w.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m dlpgate.cli "$@"\n', encoding="utf-8")
    w.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def _text(notice: bytes) -> str:
    """A notice's text as its reader sees it (Japanese bodies travel base64-encoded)."""
    return email.message_from_bytes(notice, policy=default_policy).get_body().get_content()  # type: ignore[union-attr]


def _commands(notice: bytes) -> list[str]:
    """The command lines under 操作 / Commands: in an approver notice, as a person would copy them."""
    lines = _text(notice).splitlines()
    start = next(i for i, ln in enumerate(lines) if ln in ("操作:", "Commands:"))
    out = []
    for ln in lines[start + 1:]:
        if not ln.startswith("  dlpgate "):
            break
        out.append(ln.strip())
    return out


def _run_as_printed(line: str, path: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DLPGATE_CONFIG"}
    env["PATH"] = path
    return subprocess.run(["/bin/sh", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


async def test_deputy_is_asked_and_the_printed_commands_run(tmp_path: Path, sink: Sink) -> None:
    """The gateway's config is a file in a place the default lookup does not know: the notice names
    it. Its language is Japanese (the default), so the CLI answers in Japanese too."""
    cfg_path = config_toml(tmp_path, language="ja", upstream_port=sink.port, people=people_with_me())
    cfg = replace(load_config(cfg_path), delay=DelayConfig(seconds=0))
    path = _dlpgate_on_path(tmp_path)
    elsewhere = tmp_path / "elsewhere"  # a fresh working directory: nothing to find by accident
    elsewhere.mkdir()
    async with running(cfg) as gw:
        assert gw.pipeline is not None
        gw.pipeline.judge = hold_judge()  # type: ignore[method-assign]
        ids = []
        for seed, rcpt in ((32, PARTNER), (33, "other@example.com")):
            raw = mail_with_numbers(SENDER, [rcpt], synthetic_numbers(3, seed=seed))
            ids.append(held_id((await asyncio.to_thread(send, gw.smtp_port, SENDER, [rcpt], raw))[1]))
        poke(gw)
        h = sink.handler

        def requests() -> list[Any]:
            return [m for m in h.to("dairi@example.jp") if any(i in _text(m.data) for i in ids)]

        got = await wait_for(lambda: len(requests()) == 2 and requests())
        # the deputy is on the approval request itself, with the approvers
        assert all(sorted(m.rcpt_tos) == ["bucho@example.jp", "dairi@example.jp", "kacho@example.jp"] for m in got)
        assert all("承認待ち" in str(email.message_from_bytes(m.data, policy=default_policy)["Subject"]) for m in got)

        by_id = {i: next(m for m in got if i in _text(m.data)) for i in ids}
        first, second = (_commands(by_id[i].data) for i in ids)
        assert first[0] == f"dlpgate --config {shlex.quote(str(cfg_path.resolve()))} quarantine show {ids[0]}"
        assert len(first) == 3 and not any("[" in ln or "TEXT" in ln for ln in first + second)

        show = await asyncio.to_thread(_run_as_printed, first[0], path, elsewhere)
        assert show.returncode == 0 and ids[0] in show.stdout and "meibo.csv" in show.stdout, show.stderr
        release = await asyncio.to_thread(_run_as_printed, first[1], path, elsewhere)
        assert release.returncode == 0, release.stderr
        assert release.stdout.strip() == f"{ids[0]} を承認しました。今すぐ送信します。送信者に通知します"
        reject = await asyncio.to_thread(_run_as_printed, second[2], path, elsewhere)
        assert reject.returncode == 0, reject.stderr
        assert reject.stdout.strip() == f"{ids[1]} を却下しました。送信されません。送信者に通知します"

        await wait_for(lambda: h.to(PARTNER))
        await asyncio.sleep(0.3)
        assert h.to("other@example.com") == []
        assert not (elsewhere / "store").exists() and list(elsewhere.iterdir()) == []
        code, out, _ = await cli("quarantine", "show", ids[1], "--json", "--config", str(cfg_path))
        assert json.loads(out)["state"] == "rejected"


def test_notice_names_no_config_when_the_default_lookup_finds_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_path = config_toml(tmp_path)
    cfg = load_config(cfg_path)
    assert approvals.config_flag(cfg) == f" --config {shlex.quote(str(cfg_path.resolve()))}"
    monkeypatch.setattr(approvals, "DEFAULT_CONFIG_PATH", str(cfg_path))
    assert approvals.config_flag(cfg) == ""
    assert approvals.config_flag(replace(cfg, source="")) == ""  # the embedded defaults: nothing to name


@pytest.fixture
def ja_env(tmp_path: Path):  # noqa: ANN201
    people = {**people_with_me("kacho@example.jp"), "suzuki-login": "suzuki@soumu.example.jp"}
    cfg_path = config_toml(tmp_path, language="ja", people=people,
                           tail=f'[control]\nadmins = ["{my_login()}"]\n')
    cfg = load_config(cfg_path)
    st = signed_store(cfg)
    gw = ControlThread(cfg)
    yield {"cfg": str(cfg_path), "config": cfg, "store": st, "gw": gw}
    gw.close()
    st.close()


def _delayed(st: Store, sender: str) -> str:
    mid = new_id()
    raw = f"From: {sender}\r\nTo: x@example.com\r\nSubject: hi\r\n\r\nhello\r\n".encode()
    rel = st.write_spool(mid, raw)
    now = st.clock()
    st.accept(NewMessage(id=mid, sender=sender, recipients=("x@example.com",), spool=rel, size=len(raw),
                         sha256="0" * 64, arrived=now, state=DELAYED, due_at=now + 3600, subject="hi"))
    return mid


def test_outcome_lines_in_japanese_json_unchanged(ja_env) -> None:  # noqa: ANN001
    c, st = ja_env["cfg"], ja_env["store"]

    def ok(*argv: str) -> str:
        code, out, err = run_cli([*argv, "--config", c])
        assert code == 0 and err == "", err
        return out.strip()

    assert ok("quarantine", "list") == "該当するメールはありません（状態: held）"
    assert ok("quarantine", "list", "--state", "rejected") == "該当するメールはありません（状態: rejected）"
    assert ok("quarantine", "list", "--json") == ""
    assert ok("outbox", "list") == "送信待ちのメールはありません"
    assert ok("outbox", "list", "--sender", "suzuki@soumu.example.jp") == \
        "suzuki@soumu.example.jp の送信待ちのメールはありません"
    assert ok("audit", "export", "--until", "2001-01-01") == "その期間の監査記録はありません"
    assert ok("log", "search", "--sender", "nobody@example.jp") == "該当する送信ログはありません"

    a = put_held(st, ja_env["config"], seed=41)
    b = put_held(st, ja_env["config"], sender="sato@soumu.example.jp", n=120, required=2, seed=42)
    r = put_held(st, ja_env["config"], seed=43)
    assert ok("quarantine", "release", a.id) == f"{a.id} を承認しました。今すぐ送信します。送信者に通知します"
    assert ok("quarantine", "release", b.id) == f"{b.id} の承認を記録しました（1/2）。別の承認者の承認を待ちます"
    assert ok("quarantine", "reject", r.id, "--reason", "宛先違い") == \
        f"{r.id} を却下しました。送信されません。送信者に通知します"
    # an administrator recalling someone else's mail is told so, in the same language
    d = _delayed(st, "suzuki@soumu.example.jp")
    assert ok("outbox", "recall", d) == f"{d} を取り消しました。送信されません（suzuki@soumu.example.jp の代わりに、管理者として）"
    # --json is for scripts: the same keys and values whatever the language
    objs = [json.loads(x) for x in ok("quarantine", "list", "--state", "all", "--json").splitlines()]
    assert {o["id"] for o in objs} >= {a.id, b.id, r.id} and all(tuple(o) == _LIST_JSON_KEYS for o in objs)
    assert next(o for o in objs if o["id"] == b.id)["state"] == "held"
    for o in objs:
        assert_no_identifier(json.dumps(o, ensure_ascii=False), a.numbers + b.numbers + r.numbers)
