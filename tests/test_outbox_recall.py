"""Sender recall during the send delay: only the sender's own login (or an administrator acting for
them, recorded as such), only while `delayed`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest

from dlpgate.config import DelayConfig, load_config
from dlpgate.control import Authority, Caller
from dlpgate.errors import NotFound, PermissionDenied, StateError
from dlpgate.store import DELAYED, AsyncStore, NewMessage, RcptOutcome, Store, new_id
from tests.conftest import Sink, make_config, running, send_ok
from tests.test_approval_support import config_toml, my_login, people_with_me, run_cli

SENDER = "suzuki@soumu.example.jp"


def _send(port: int, sender: str, rcpts: list[str], data: bytes) -> str:
    """The queue id from the 250 reply."""
    return send_ok(port, sender, rcpts, data).split("queued as ", 1)[1].split(",")[0].strip()


async def test_recall_within_the_window_over_smtp(tmp_path: Path, sink: Sink) -> None:
    people = {**people_with_me(SENDER), "yamada-login": "yamada@soumu.example.jp"}
    cli_cfg = str(config_toml(tmp_path, upstream_port=sink.port, people=people))
    cfg = make_config(tmp_path, sink.port, delay=DelayConfig(seconds=5), people=load_config(cli_cfg).people)
    async with running(cfg) as gw:
        body = b"From: suzuki@soumu.example.jp\r\nTo: x@example.com\r\nSubject: minutes\r\n\r\nsee you\r\n"
        keep = await asyncio.to_thread(_send, gw.smtp_port, SENDER, ["x@example.com"], body)
        drop = await asyncio.to_thread(_send, gw.smtp_port, SENDER, ["y@example.com"], body)
        other = await asyncio.to_thread(_send, gw.smtp_port, "yamada@soumu.example.jp", ["z@example.com"], body)

        code, out, _ = await asyncio.to_thread(run_cli, ["outbox", "list", "--sender", SENDER, "--json",
                                                         "--config", cli_cfg])
        objs = [json.loads(x) for x in out.splitlines()]
        assert code == 0 and [o["id"] for o in objs] == [keep, drop]
        assert all(0 < o["sends_in_seconds"] <= 5 for o in objs)
        code, out, _ = await asyncio.to_thread(run_cli, ["outbox", "list", "--config", cli_cfg])
        assert code == 0 and keep in out and "SENDS IN" in out.splitlines()[0]
        # another sender sees only their own mail, may not list or recall someone else's
        yamada = Caller("yamada-login", None, "web")
        assert [d["id"] for d in await gw.authority.call(yamada, "outbox.list", {})] == [other]
        with pytest.raises(PermissionDenied, match="not one of your addresses"):
            await gw.authority.call(yamada, "outbox.list", {"sender": SENDER})
        with pytest.raises(PermissionDenied, match="only its sender may recall it"):
            await gw.authority.call(yamada, "outbox.recall", {"id": keep, "sender": "yamada@soumu.example.jp"})
        with pytest.raises(PermissionDenied, match="only its sender may recall it"):
            await gw.authority.call(yamada, "outbox.recall", {"id": keep})

        code, out, err = await asyncio.to_thread(run_cli, ["outbox", "recall", drop, "--sender",
                                                           "yamada@soumu.example.jp", "--config", cli_cfg])
        assert code == 2 and "only its sender may recall it" in err and err.count("\n") == 1
        code, out, err = await asyncio.to_thread(run_cli, ["outbox", "recall", drop, "--sender",
                                                           SENDER.upper(), "--config", cli_cfg])
        assert code == 0 and out.strip() == f"recalled {drop}: it will not be sent"

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (sink.handler.to("x@example.com")
                                                   and sink.handler.to("z@example.com")):
            await asyncio.sleep(0.1)
        assert len(sink.handler.to("x@example.com")) == 1 and len(sink.handler.to("z@example.com")) == 1
        await asyncio.sleep(0.3)
        assert sink.handler.to("y@example.com") == []
        # a delivered message can no longer be recalled
        code, _, err = await asyncio.to_thread(run_cli, ["outbox", "recall", keep, "--sender", SENDER,
                                                         "--config", cli_cfg])
        assert code == 2 and f"message {keep} is delivered" in err
        code, _, err = await asyncio.to_thread(run_cli, ["outbox", "recall", drop, "--sender", SENDER,
                                                         "--config", cli_cfg])
        assert code == 2 and "is recalled" in err
        code, out, _ = await asyncio.to_thread(run_cli, ["audit", "export", "--json", "--id", drop,
                                                         "--config", cli_cfg])
        rec = [json.loads(x) for x in out.splitlines() if json.loads(x)["event"] == "recalled"]
        assert len(rec) == 1 and rec[0]["actor"] == SENDER and rec[0]["os_user"] == my_login()
        assert rec[0]["detail"]["login"] == my_login()
        code, out, _ = await asyncio.to_thread(run_cli, ["audit", "export", "--json", "--id", keep,
                                                         "--config", cli_cfg])
        refused = [json.loads(x) for x in out.splitlines() if json.loads(x)["event"] == "refused"]
        assert [r["actor"] for r in refused] == ["yamada-login", "yamada-login"]


def _delayed(st: Store, sender: str, rcpt: str) -> str:
    raw = b"Subject: x\r\n\r\nbody\r\n"
    mid = new_id()
    rel = st.write_spool(mid, raw)
    now = st.clock()
    st.accept(NewMessage(id=mid, sender=sender, recipients=(rcpt,), spool=rel, size=len(raw),
                         sha256=hashlib.sha256(raw).hexdigest(), arrived=now, state=DELAYED, due_at=now + 300))
    return mid


async def test_delivering_and_held_cannot_be_recalled(tmp_path: Path) -> None:
    people = {"suzuki-login": SENDER, "boss": "boss@example.jp"}
    cfg = load_config(config_toml(tmp_path, people=people, tail='[control]\nadmins = ["boss"]\n'))
    t = [1_800_000_000.0]
    st = Store(tmp_path / "store", clock=lambda: t[0])
    astore = AsyncStore(tmp_path / "store")
    auth = Authority(cfg, astore, hostname="gw.test")
    me = Caller("suzuki-login", None, "web")
    try:
        a = _delayed(st, SENDER, "a@example.com")
        b = _delayed(st, SENDER, "b@example.com")
        c = _delayed(st, SENDER, "c@example.com")
        t[0] += 301
        claimed = st.claim_due(1)
        assert [x.id for x in claimed] == [a]
        with pytest.raises(StateError, match=f"message {a} is delivering"):
            await auth.call(me, "outbox.recall", {"id": a, "sender": SENDER})
        st.finish_attempt(a, [RcptOutcome("a@example.com", 451, "try later")], retry_at=t[0] + 60, give_up=False)
        with pytest.raises(StateError, match="is deferred"):  # already handed to the upstream once
            await auth.call(me, "outbox.recall", {"id": a})
        with pytest.raises(NotFound, match="no message with id"):
            await auth.call(me, "outbox.recall", {"id": "nosuch"})
        assert [d["id"] for d in await auth.call(me, "outbox.list", {})] == [b, c]
        # an administrator may recall for the sender: recorded as acting for them
        res = await auth.call(Caller("boss", None, "web"), "outbox.recall", {"id": c})
        assert res["on_behalf_of"] == SENDER
        entry = [e for e in st.audit_entries(msg_id=c) if e.event == "recalled"][0]
        assert entry.actor == "boss" and entry.detail["on_behalf_of"] == SENDER and entry.os_user == "boss"
    finally:
        auth.close()
        astore.close()
        st.close()
