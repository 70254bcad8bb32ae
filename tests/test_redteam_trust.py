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
from tests.conftest import Sink, make_config, running, states, wait_until
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


async def _held(port: int, seed: int) -> str:
    """The id of a message tanaka sends to the partner with three synthetic My Numbers (held)."""
    raw = mail_with_numbers("tanaka@soumu.example.jp", ["partner@example.com"], synthetic_numbers(3, seed=seed))
    return held_id(await asyncio.to_thread(_send, port, "tanaka@soumu.example.jp", raw))


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
async def test_a_release_written_into_the_database_is_refused_and_named(tmp_path: Path, sink: Sink,
                                                                      state: str) -> None:
    """Someone who can write the database but not read the signing key (the threat model's case:
    a database administrator of a shared PostgreSQL store, a restored copy) turns a held message
    into `released` (or `delayed`) with one UPDATE, no decision anywhere.
    Before: the deliverer sent it and `audit verify` said the log was intact. After: the claim
    puts it back to held (a `tampered` entry, an error in the log) and nothing goes out; a verify
    run before the claim (or on a copy) names the message."""
    import sqlite3
    import time

    from tests.test_approval_loop import cli, gateway_config

    cfg, c = gateway_config(tmp_path, sink)
    async with running(cfg) as gw:
        mid = await _held(gw.smtp_port, 43)
        db = sqlite3.connect(tmp_path / "store" / "dlpgate.db")
        with db:
            db.execute("UPDATE messages SET state = ?, due_at = ? WHERE id = ?", (state, time.time() + 3600, mid))
        db.close()
        # found before the deliverer gets to it (due in an hour): verify names it
        code, out, err = await cli("audit", "verify", "--config", c)
        assert code == 1, out + err
        assert mid in out + err and "no release after it was held" in out + err
        # due now: the claim refuses it
        db = sqlite3.connect(tmp_path / "store" / "dlpgate.db")
        with db:
            db.execute("UPDATE messages SET due_at = ? WHERE id = ?", (time.time(), mid))
        db.close()
        poke(gw)
        await wait_until(lambda: states(tmp_path / "store") == ["held"] and _events(tmp_path, mid)[-1] == "tampered")
        await asyncio.sleep(1)
        assert not sink.handler.to("partner@example.com"), "a release nobody decided was delivered"
        code, out, err = await cli("audit", "verify", "--config", c)
        assert code == 0, out + err
        code, out, err = await cli("quarantine", "show", mid, "--config", c)
        assert "without a decision in the signed chain" in out, out


async def test_bytes_swapped_under_an_approved_id_are_never_sent(tmp_path: Path, sink: Sink) -> None:
    """Someone who can write the store swaps a held message's bytes (same length, other content)
    and waits for a supervisor to release what he saw. Before: the swapped bytes went out under the
    approval. After: the deliverer compares them with the SHA-256 the signed chain's `accepted`
    entry recorded, sends nothing, bounces the message (audited) and logs an error."""
    import sqlite3

    from dlpgate.store import spool_span
    from tests.test_approval_loop import cli, gateway_config

    cfg, c = gateway_config(tmp_path, sink)
    async with running(cfg) as gw:
        mid = await _held(gw.smtp_port, 47)
        db = sqlite3.connect(tmp_path / "store" / "dlpgate.db")
        (rel,) = db.execute("SELECT spool FROM messages WHERE id = ?", (mid,)).fetchone()
        db.close()
        span = spool_span(rel)
        path, off, size = (span[0], span[1], span[2]) if span else (rel, 0, None)
        f = tmp_path / "store" / path
        raw = bytearray(f.read_bytes())
        end = off + (size if size is not None else len(raw) - off)
        raw[end - 12:end - 2] = b"SWAPPED!!!"  # the body's last bytes, the length kept
        f.write_bytes(bytes(raw))
        code, out, err = await cli("quarantine", "release", mid, "--approver", "kacho@example.jp", "--reason",
                                   "checked", "--config", c)
        assert code == 0, out + err
        poke(gw)

        def state() -> str:
            db = sqlite3.connect(tmp_path / "store" / "dlpgate.db")
            try:
                return str(db.execute("SELECT state FROM messages WHERE id = ?", (mid,)).fetchone()[0])
            finally:
                db.close()

        await wait_until(lambda: state() == "bounced")
        await asyncio.sleep(0.5)
        assert not sink.handler.to("partner@example.com"), "swapped bytes were delivered under the approval"
        db = sqlite3.connect(tmp_path / "store" / "dlpgate.db")
        details = [d for (d,) in db.execute("SELECT detail FROM audit WHERE msg_id = ? ORDER BY seq", (mid,))]
        db.close()
        assert any("content changed after it was accepted" in d for d in details), details
        # and the untouched mail of the same sender still goes out: the check refuses only a mismatch
        good = await _held(gw.smtp_port, 48)
        code, out, err = await cli("quarantine", "release", good, "--approver", "kacho@example.jp",
                                   "--reason", "checked", "--config", c)
        assert code == 0, out + err
        poke(gw)
        await wait_until(lambda: len(sink.handler.to("partner@example.com")) == 1)
        # a row inserted whole (that message's copy under a new id, due now): no `accepted` entry in
        # the signed chain, so it is not sent either
        import time

        from dlpgate.store import new_id

        clone = new_id()
        db = sqlite3.connect(tmp_path / "store" / "dlpgate.db")
        with db:
            db.execute("CREATE TEMP TABLE m AS SELECT * FROM messages WHERE id = ?", (good,))
            db.execute("UPDATE m SET id = ?, state = 'delayed', due_at = ?", (clone, time.time()))
            db.execute("INSERT INTO messages SELECT * FROM m")
            db.execute("CREATE TEMP TABLE r AS SELECT * FROM recipients WHERE msg_id = ?", (good,))
            db.execute("UPDATE r SET msg_id = ?, state = 'pending'", (clone,))
            db.execute("INSERT INTO recipients SELECT * FROM r")
        db.close()
        poke(gw)
        await wait_until(lambda: _events(tmp_path, clone)[-1:] == ["bounced"])
        await asyncio.sleep(0.5)
        assert len(sink.handler.to("partner@example.com")) == 1, "a row nobody accepted was delivered"


# ------------------------------------------------------------- the console's trusted proxy, locally

def _get_as(uid: int | None, port: int, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """An HTTP GET from this host, from a process running as `uid` (a forked child drops to it; None:
    this process): (status, location or body)."""
    import http.client
    import json
    import os

    def once() -> tuple[int, str]:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        body = r.read().decode("utf-8", "replace")
        c.close()
        return r.status, r.getheader("location") or body

    if uid is None:
        return once()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the account, ask, report through the pipe
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            out = json.dumps(once())
        except BaseException as e:  # noqa: BLE001
            out = json.dumps([0, repr(e)])
        os.write(wfd, out.encode())
        os._exit(0)
    os.close(wfd)
    data = b""
    while chunk := os.read(rfd, 65536):
        data += chunk
    os.close(rfd)
    os.waitpid(pid, 0)
    status, text = json.loads(data)
    return int(status), str(text)


def _web_config(tmp_path: Path, sink: Sink, web: str) -> Path:
    from tests.test_web_proxy_tls import write_config

    return write_config(tmp_path, sink, web)


async def test_a_local_user_cannot_pose_as_the_local_proxy(tmp_path: Path, sink: Sink) -> None:
    """`trusted_proxies = ["127.0.0.1/32"]` (the deploy sample's line for a proxy on the same host):
    every local account can connect from 127.0.0.1 and send `X-Remote-User: kacho`.
    Before: any local user was signed in as kacho (and could release his mail). After: a loopback
    proxy needs `web.proxy_users` (a config error without it), and the header is believed only from
    a connection whose socket belongs to one of those accounts (the kernel's socket table)."""
    import os

    from dlpgate.errors import ConfigError

    if os.geteuid() != 0:
        pytest.skip("needs root: a child process drops to the proxy's account")
    with pytest.raises(ConfigError, match="web.proxy_users"):
        load_config(_web_config(tmp_path, sink, 'listen = "127.0.0.1:0"\ntrusted_proxies = ["127.0.0.1/32"]'))
    with pytest.raises(ConfigError, match=r"web.proxy_users\[0\]"):
        load_config(_web_config(tmp_path, sink, 'listen = "127.0.0.1:0"\ntrusted_proxies = ["127.0.0.1/32"]\n'
                                                'proxy_users = ["no-such-account-dlpgate"]'))
    cfg = load_config(_web_config(tmp_path, sink, 'listen = "127.0.0.1:0"\ntrusted_proxies = ["127.0.0.0/8"]\n'
                                                  'proxy_users = ["nobody"]'))
    nobody = 65534
    async with running(cfg) as gw:
        port = gw.web.port
        forged = {"X-Remote-User": "kacho"}
        # root (any local account but the proxy's) sends the header: not believed
        status, where = await asyncio.to_thread(_get_as, None, port, "/approvals", forged)
        assert status == 303 and where.startswith("/signin"), (status, where)
        # the proxy's own account is
        status, page = await asyncio.to_thread(_get_as, nobody, port, "/approvals", forged)
        assert status == 200 and "kacho" in page, (status, page[:300])


def test_a_sender_writing_his_address_with_an_extension_is_not_his_own_approver() -> None:
    """The routes drop the sender from the approvers of his own mail by mailbox, not by spelling:
    kacho+x@ gets no approval request for his own mail, and the notice can say how many others
    there are (with the spelling compared, he counted as one of them)."""
    from dlpgate.approvals import Router
    from dlpgate.config import ApproverRoute

    r = Router([ApproverRoute(senders=("example.jp",), approvers=("kacho@example.jp", "bucho@example.jp"),
                              deputies=("kacho@example.jp",))])
    who = r.for_sender("Kacho+x@Example.JP")
    assert who.approvers == ("bucho@example.jp",) and who.deputies == ()
    with pytest.raises(PermissionDenied, match="self-approval"):
        r.check("m", "kacho@example.jp", "kacho+x@example.jp")


def _events(tmp_path: Path, mid: str) -> list[str]:
    import sqlite3

    db = sqlite3.connect(tmp_path / "store" / "dlpgate.db")
    try:
        return [r[0] for r in db.execute("SELECT event FROM audit WHERE msg_id = ? ORDER BY seq", (mid,))]
    finally:
        db.close()
