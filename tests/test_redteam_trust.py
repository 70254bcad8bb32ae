"""Red team, "approvals must not be forgeable": attacks on the trust boundary that the existing
suites (test_control_accounts.py with real OS accounts, test_web_console.py) do not try.

Each runs against a real gateway (SMTP on loopback, the SQLite store in a temp dir) and acts
through the one authority as the console does (`Caller(login, None, "web")`) or the CLI.
"""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest

from dlpgate.config import DelayConfig, QuarantineConfig, load_config
from dlpgate.control import Caller
from dlpgate.errors import PermissionDenied
from tests.conftest import Sink, make_config, running, wait_until
from tests.test_approval_loop import held_id, poke
from tests.test_approval_support import config_toml, mail_with_numbers, synthetic_numbers

# kacho approves the soumu department's mail and also sends as a member of it (README's example)
PEOPLE = {"kacho-login": ["kacho@example.jp", "tanaka@soumu.example.jp"], "bucho-login": "bucho@example.jp"}


def _send(port: int, mail_from: str, raw: bytes) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("client.test")
        code, text = c.mail(mail_from)
        assert code == 250, text
        assert c.rcpt("partner@example.com")[0] == 250
        code, text = c.data(raw)
        assert code == 250, text
        return text.decode()


@pytest.mark.parametrize("mail_from", ["tanaka+x@soumu.example.jp", '"tanaka"@soumu.example.jp',
                                       "TANAKA+Approve.Me@Soumu.Example.JP", '"tanaka+y"@soumu.example.jp'])
async def test_no_self_approval_through_an_address_variant(tmp_path: Path, sink: Sink, mail_from: str) -> None:
    """kacho sends held mail as a spelling of his own address the mail server accepts for him (an
    address extension, a quoted local part: the same mailbox) and approves it himself.
    Before: released (the route *@soumu.example.jp matched, `owns` compared the spelling)."""
    file_cfg = load_config(config_toml(tmp_path, people=PEOPLE))
    cfg = make_config(tmp_path, sink.port, approvers=file_cfg.approvers, people=file_cfg.people,
                      quarantine=QuarantineConfig(language="en"), delay=DelayConfig(seconds=0))
    n = synthetic_numbers(3, seed=41)
    async with running(cfg) as gw:
        reply = await asyncio.to_thread(_send, gw.smtp_port, mail_from,
                                        mail_with_numbers("tanaka@soumu.example.jp", ["partner@example.com"], n))
        mid = held_id(reply)
        kacho = Caller("kacho-login", None, "web")
        for args in ({"id": mid, "decision": "release"},
                     {"id": mid, "decision": "release", "approver": "kacho@example.jp"}):
            with pytest.raises(PermissionDenied, match="self-approval"):
                await gw.authority.call(kacho, "quarantine.decide", args)
        shown = await gw.authority.call(kacho, "quarantine.show", {"id": mid})
        assert shown["state"] == "held" and not shown["can_decide"]
        # his own mail stays his: he sees it as its sender, and someone else still decides on it
        bucho = Caller("bucho-login", None, "web")
        res = await gw.authority.call(bucho, "quarantine.decide", {"id": mid, "decision": "reject", "reason": "no"})
        assert res["state"] == "rejected"
        poke(gw)


@pytest.mark.parametrize("state", ["released", "delayed"])
async def test_a_release_written_into_the_database_is_named_by_verify(tmp_path: Path, sink: Sink,
                                                                      state: str) -> None:
    """Someone who can write the database but not read the signing key (the threat model's case:
    a database administrator of a shared PostgreSQL store, a restored copy) turns a held message
    into `released` (or `delayed`) with one UPDATE, no decision anywhere.
    Before: the deliverer sent it and `audit verify` said the log was intact. After: verify names
    the message (exit 1). The deliverer still sends it: stopping that belongs in the store's claim
    (both engines), left for its owner (see the report of this branch)."""
    import sqlite3
    import time

    from tests.test_approval_loop import cli, gateway_config

    cfg, c = gateway_config(tmp_path, sink)
    n = synthetic_numbers(3, seed=43)
    async with running(cfg) as gw:
        reply = await asyncio.to_thread(_send, gw.smtp_port, "tanaka@soumu.example.jp",
                                        mail_with_numbers("tanaka@soumu.example.jp", ["partner@example.com"], n))
        mid = held_id(reply)
        db = sqlite3.connect(tmp_path / "store" / "dlpgate.db")
        with db:
            db.execute("UPDATE messages SET state = ?, due_at = ? WHERE id = ?", (state, time.time(), mid))
        db.close()
        poke(gw)
        await wait_until(lambda: sink.handler.to("partner@example.com"), timeout=15)
        code, out, err = await cli("audit", "verify", "--config", c)
        assert code == 1, out + err
        assert mid in out + err and "no release after it was held" in out + err
