"""The human loop end to end: real SMTP in, a held message, notices at the sink, decisions taken
with the CLI on the same store, delivery (or not) of the original bytes, and the audit chain.

Most tests fix the verdict with a stand-in judge (`hold`, optionally needing two approvers) so
they exercise the approval loop whatever the rule set says; `test_planted_my_numbers_are_held`
runs the real extract + scan + policy path.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dlpgate.config import Config, DelayConfig, QuarantineConfig
from dlpgate.control import Caller
from dlpgate.errors import DlpgateError
from dlpgate.masking import mask_number
from dlpgate.pipeline import Envelope, Judgement
from dlpgate.server import Gateway
from tests.conftest import Sink, make_config, running
from tests.conftest import smtp_data as send
from tests.test_approval_support import (
    assert_no_identifier,
    config_toml,
    load,
    mail_with_numbers,
    people_with_me,
    run_cli,
    synthetic_numbers,
)

SENDER = "tanaka@soumu.example.jp"
PARTNER = "partner@example.com"




def gateway_config(tmp_path: Path, sink: Sink, **quarantine: Any) -> tuple[Config, str]:
    """The gateway's config (this process's login is kacho@example.jp: the CLI acts as kacho) and a
    config file for the CLI that only says where the socket is."""
    cli_cfg = config_toml(tmp_path, upstream_port=sink.port, people=people_with_me())
    file_cfg = load(tmp_path, people=people_with_me())
    q = replace(QuarantineConfig(language="en"), **quarantine)
    cfg = make_config(tmp_path, sink.port, approvers=file_cfg.approvers, people=file_cfg.people, quarantine=q,
                      delay=DelayConfig(seconds=0))
    return cfg, str(cli_cfg)


async def as_person(gw: Gateway, login: str, op: str, **args: Any) -> tuple[int, str, str]:
    """Another person acting through the gateway's authority (as the web console does):
    (0, result, "") or (2, "", error line), like the CLI."""
    try:
        res = await gw.authority.call(Caller(login, None, "web"), op, args)
    except DlpgateError as e:
        return 2, "", f"dlpgate: {e}\n"
    return 0, json.dumps(res), ""


def hold_judge(required_for: dict[str, int] | None = None) -> Any:
    """A judge that holds every message (two approvers for the listed recipients)."""
    async def judge(spool: Path, env: Envelope, first_contact: Any = (), data: bytes | None = None) -> Judgement:
        need = max([(required_for or {}).get(r, 1) for r in env.recipients] or [1])
        return Judgement(verdict="hold", rules=("my_number",), reason="My Number with keyword",
                         findings=({"rule": "my_number", "detector": "my_number", "count": 3, "severity": "high",
                                    "part": "meibo.csv", "sample": mask_number("621498320257")},),
                         records=3 if need == 1 else 150, subject="名簿の送付", approvals_required=need)
    return judge


@pytest.fixture
async def loop_env(tmp_path: Path, sink: Sink) -> AsyncIterator[dict[str, Any]]:
    cfg, cli_cfg = gateway_config(tmp_path, sink)
    async with running(cfg) as gw:
        assert gw.pipeline is not None
        gw.pipeline.judge = hold_judge({"bulk@example.com": 2})  # type: ignore[method-assign]
        yield {"gw": gw, "cli": cli_cfg, "sink": sink, "db": tmp_path / "store" / "dlpgate.db"}


async def wait_for(pred: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def poke(gw: Gateway) -> None:
    assert gw.delivery is not None
    gw.delivery.poke(time.time())


async def cli(*argv: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(run_cli, list(argv))


def held_id(reply: str) -> str:
    # "2.0.0 Ok: queued as <id>, held for approval"
    assert "held for approval" in reply, reply
    return reply.split("queued as ", 1)[1].split(",", 1)[0]


async def test_held_notified_refused_then_released_once(loop_env: dict[str, Any]) -> None:
    gw, sink, c = loop_env["gw"], loop_env["sink"], loop_env["cli"]
    numbers = synthetic_numbers(3, seed=21)
    raw = mail_with_numbers(SENDER, [PARTNER], numbers)
    code, reply = await asyncio.to_thread(send, gw.smtp_port, SENDER, [PARTNER], raw)
    assert code == 250
    mid = held_id(reply)
    poke(gw)  # notices are due at once (the pipeline does not wake the scheduler for them yet)
    h = sink.handler
    await wait_for(lambda: h.to(SENDER) and h.to("kacho@example.jp"))
    assert h.to(PARTNER) == []
    sender_notice = h.to(SENDER)[0]
    assert sender_notice.mail_from in ("", "<>") and mid.encode() in sender_notice.data
    assert h.to("kacho@example.jp")[0].rcpt_tos == ["kacho@example.jp", "bucho@example.jp", "dairi@example.jp"]

    code, out, err = await cli("quarantine", "list", "--approver", "kacho@example.jp", "--config", c)
    assert code == 0 and mid in out
    for who, msg in (("somebody@example.jp", "not one of your addresses"), (SENDER, "not one of your addresses"),
                     ("bucho@example.jp", "not one of your addresses")):
        code, out, err = await cli("quarantine", "release", mid, "--approver", who, "--config", c)
        assert code == 2 and msg in err and err.count("\n") == 1, err
    # the sender, acting as themself, may not approve their own mail
    code, _, err = await as_person(gw, "tanaka-login", "quarantine.decide", id=mid, decision="release",
                                   approver=SENDER, reason="")
    assert code == 2 and "self-approval" in err
    code, out, err = await cli("quarantine", "show", mid, "--config", c)
    assert code == 0 and "meibo.csv" in out
    assert_no_identifier(out, numbers)

    pokes: list[float] = []
    real_poke = gw.delivery.poke
    gw.delivery.poke = lambda due: (pokes.append(due), real_poke(due))  # type: ignore[method-assign]
    code, out, err = await cli("quarantine", "release", mid, "--approver", "kacho@example.jp", "--reason", "ok",
                               "--config", c)
    assert code == 0, err
    assert pokes, "the decision must wake the deliverer (no polling)"
    # ...and its chain head is witnessed outside the store, signed
    witness = gw.config.audit_witness_path
    released_seq = next(e.seq for e in _audit(loop_env["db"], mid) if e.event == "released")

    def witnessed() -> list[dict[str, Any]]:
        lines = witness.read_text(encoding="ascii").splitlines() if witness.exists() else []
        return [json.loads(x) for x in lines if json.loads(x)["seq"] >= released_seq]

    head = (await wait_for(witnessed))[0]
    assert gw.audit_key.check_witness(head["seq"], head["hash"], head["ts"], head["sig"]) == ""
    # no poke: the decision wakes the deliverer itself
    got = await wait_for(lambda: h.to(PARTNER), timeout=15)
    assert len(got) == 1 and got[0].mail_from == SENDER
    assert got[0].data.endswith(raw)  # the original bytes, behind our Received: line
    await wait_for(lambda: any(b"released" in m.data for m in h.to(SENDER)))
    await asyncio.sleep(0.5)
    assert len(h.to(PARTNER)) == 1
    for m in h.messages:
        if PARTNER not in m.rcpt_tos:
            assert_no_identifier(m.data, numbers)  # no notice carries the content

    code, out, _ = await cli("audit", "verify", "--config", c)
    assert code == 0 and "chain intact" in out
    trail = _audit(loop_env["db"], mid)
    assert [e.event for e in trail] == ["accepted", "verdict", "held", *["refused"] * 4, "released", "delivered"]
    refused = [e for e in trail if e.event == "refused"]
    assert [e.actor for e in refused] == [refused[0].actor] * 3 + ["tanaka-login"]  # the kernel's login, not a claim
    assert refused[0].detail["approver"] == "somebody@example.jp" and refused[0].detail["op"] == "quarantine.decide"
    # tamper with one row: verify fails naming it
    con = sqlite3.connect(loop_env["db"])
    con.execute("UPDATE audit SET actor='somebody@example.jp' WHERE msg_id=? AND event='released'", (mid,))
    con.commit()
    seq = con.execute("SELECT seq FROM audit WHERE msg_id=? AND event='released'", (mid,)).fetchone()[0]
    con.close()
    code, out, _ = await cli("audit", "verify", "--config", c)
    assert code == 1 and f"entry {seq}: content does not match its hash" in out


def _audit(db: Path, mid: str) -> list[Any]:
    from dlpgate.store import Store

    st = Store(db.parent)
    try:
        return st.audit_entries(msg_id=mid)
    finally:
        st.close()


async def test_two_approvers_and_reject(loop_env: dict[str, Any]) -> None:
    gw, sink, c = loop_env["gw"], loop_env["sink"], loop_env["cli"]
    h = sink.handler
    numbers = synthetic_numbers(5, seed=22)
    raw_bulk = mail_with_numbers(SENDER, ["bulk@example.com"], numbers)
    raw_other = mail_with_numbers(SENDER, ["other@example.com"], numbers)
    bulk = held_id((await asyncio.to_thread(send, gw.smtp_port, SENDER, ["bulk@example.com"], raw_bulk))[1])
    other = held_id((await asyncio.to_thread(send, gw.smtp_port, SENDER, ["other@example.com"], raw_other))[1])

    code, out, _ = await cli("quarantine", "release", bulk, "--approver", "kacho@example.jp", "--config", c)
    assert code == 0 and "1 of 2" in out
    code, out, err = await cli("quarantine", "release", bulk, "--approver", "kacho@example.jp", "--config", c)
    assert code == 2 and "already approved" in err
    code, out, err = await as_person(gw, "dairi-login", "quarantine.decide", id=other, decision="reject",
                                     reason="use the file transfer service")
    assert code == 0, err
    poke(gw)
    await wait_for(lambda: any(b"rejected" in m.data for m in h.to(SENDER)))
    await asyncio.sleep(0.5)
    assert h.to("bulk@example.com") == [] and h.to("other@example.com") == []

    code, out, err = await as_person(gw, "dairi-login", "quarantine.decide", id=bulk[:12], decision="release",
                                     reason="")
    assert code == 0 and json.loads(out)["state"] == "released", err
    poke(gw)
    got = await wait_for(lambda: h.to("bulk@example.com"))
    assert len(got) == 1 and got[0].data.endswith(raw_bulk)
    await asyncio.sleep(0.3)
    assert h.to("other@example.com") == []
    code, out, _ = await cli("quarantine", "list", "--state", "all", "--json", "--config", c)
    assert code == 0
    for m in h.messages:
        if not ({"bulk@example.com"} & set(m.rcpt_tos)):
            assert_no_identifier(m.data, numbers)


async def test_expiry_in_the_running_gateway(tmp_path: Path, sink: Sink) -> None:
    cfg, c = gateway_config(tmp_path, sink, expire_after=1.0, remind_every=0.0)
    async with running(cfg) as gw:
        assert gw.pipeline is not None
        gw.pipeline.judge = hold_judge()  # type: ignore[method-assign]
        raw = mail_with_numbers(SENDER, [PARTNER], synthetic_numbers(3, seed=23))
        mid = held_id((await asyncio.to_thread(send, gw.smtp_port, SENDER, [PARTNER], raw))[1])
        await gw.housekeep_once()
        code, out, _ = await cli("quarantine", "list", "--json", "--config", c)
        assert mid in out
        await asyncio.sleep(1.1)
        await gw.housekeep_once()  # housekeeping wakes the scheduler for the expiry notice itself
        await wait_for(lambda: any(b"expired" in m.data for m in sink.handler.to(SENDER)))
        code, out, _ = await cli("quarantine", "list", "--state", "expired", "--json", "--config", c)
        assert mid in out
        code, out, err = await cli("quarantine", "release", mid, "--approver", "kacho@example.jp", "--config", c)
        assert code == 2 and "already decided" in err
        assert sink.handler.to(PARTNER) == []


async def test_planted_my_numbers_are_held(tmp_path: Path, sink: Sink) -> None:
    """The real path: extract + scan + policy hold three valid My Numbers next to 個人番号."""
    cfg, c = gateway_config(tmp_path, sink)
    async with running(cfg) as gw:
        numbers = synthetic_numbers(3, seed=24)
        raw = mail_with_numbers(SENDER, [PARTNER], numbers)
        code, reply = await asyncio.to_thread(send, gw.smtp_port, SENDER, [PARTNER], raw)
        assert code == 250, reply
        mid = held_id(reply)
        code, out, _ = await cli("quarantine", "show", mid, "--json", "--config", c)
        assert code == 0 and '"state": "held"' in out and "my_number" in out
        assert_no_identifier(out, numbers)
        poke(gw)
        await wait_for(lambda: sink.handler.to(SENDER))
        await asyncio.sleep(0.3)
        assert sink.handler.to(PARTNER) == []

        # a list of >= 100 records to an external address needs two approvers (rules/policy.toml)
        many = synthetic_numbers(120, seed=25)
        raw_list = mail_with_numbers(SENDER, ["list@example.com"], many)
        code, reply = await asyncio.to_thread(send, gw.smtp_port, SENDER, ["list@example.com"], raw_list)
        big = held_id(reply)
        code, out, _ = await cli("quarantine", "list", "--json", "--config", c)
        row = next(json.loads(x) for x in out.splitlines() if json.loads(x)["id"] == big)
        assert row["approvals_required"] == 2 and row["records"] == 120
        assert_no_identifier(out, many)
        code, out, _ = await cli("quarantine", "release", big, "--config", c)  # my only approver address
        assert code == 0 and "1 of 2" in out
        poke(gw)
        await asyncio.sleep(0.5)
        assert sink.handler.to("list@example.com") == []
        code, _, err = await cli("quarantine", "release", big, "--approver", "kacho@example.jp", "--config", c)
        assert code == 2 and "a second person is needed" in err
        code, out, err = await as_person(gw, "bucho-login", "quarantine.decide", id=big, decision="release",
                                         reason="")
        assert code == 0 and json.loads(out)["state"] == "released", err
        poke(gw)
        got = await wait_for(lambda: sink.handler.to("list@example.com"))
        assert len(got) == 1 and got[0].data.endswith(raw_list)
