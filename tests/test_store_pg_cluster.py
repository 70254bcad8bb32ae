"""Several nodes on one PostgreSQL store (real server): claims never overlap, a dead node's
leases pass to another, expiry happens once, one node leads housekeeping at a time, a release
wakes every node, concurrent appends keep one intact audit chain, migrations are versioned."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dlpgate.cli import main as cli_main
from dlpgate.errors import StateError
from dlpgate.store import DELAYED, HELD, NewMessage, RcptOutcome, write_spool_file
from dlpgate.store.postgres import LATEST, AsyncPgStore, PgStore, migrate_url
from tests.pg_support import pg_cluster, pg_url  # noqa: F401 - fixtures

_n = [0]


def msg(root: Path, *, state: str = DELAYED, due: float | None = 0.0, **kw: Any) -> NewMessage:
    _n[0] += 1
    mid = f"{int(time.time() * 1000):011x}{_n[0]:08x}"
    raw = f"Subject: {mid}\r\n\r\nbody\r\n".encode()
    rel = write_spool_file(root, mid, raw)
    return NewMessage(id=mid, sender="a@example.jp", recipients=("b@example.com",), spool=rel, size=len(raw),
                      sha256=hashlib.sha256(raw).hexdigest(), arrived=time.time(), state=state,
                      due_at=due if state == DELAYED else None, **kw)


def nodes(url: str, tmp_path: Path, n: int = 3, lease: float = 30.0) -> list[PgStore]:
    return [PgStore(url, tmp_path / f"n{i}", node=f"n{i}", lease_seconds=lease) for i in range(n)]


def test_concurrent_claims_are_disjoint(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    st = nodes(pg_url, tmp_path)
    try:
        ms = [msg(st[0].root) for _ in range(300)]
        with st[0].transaction():
            st[0].accept_many(ms)
        got: dict[str, list[str]] = {s.node: [] for s in st}
        errors: list[BaseException] = []

        def worker(s: PgStore) -> None:
            try:
                while True:
                    c = s.claim_due(7)
                    if not c:
                        return
                    got[s.node] += [x.id for x in c]
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        ts = [threading.Thread(target=worker, args=(s,)) for s in st]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        assert not errors
        every = [i for lst in got.values() for i in lst]
        assert len(every) == len(set(every)) == 300  # each message claimed exactly once
        assert sorted(every) == sorted(m.id for m in ms)
    finally:
        for s in st:
            s.close()


def test_dead_nodes_lease_passes_to_another(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    a, b = nodes(pg_url, tmp_path, 2, lease=1.0)
    try:
        m = msg(a.root)
        a.accept(m)
        assert [c.id for c in a.claim_due(5)] == [m.id]
        assert b.claim_due(5) == []  # a holds it while its lease runs
        assert b.next_due() is not None  # b knows when to look again
        time.sleep(1.3)  # a "died": its lease is not renewed
        [c] = b.claim_due(5)
        assert c.id == m.id and c.read_bytes().startswith(b"Subject:")
        with pytest.raises(StateError, match="claimed by node n1"):  # a's late finish cannot close b's claim
            a.finish_attempt(m.id, [RcptOutcome("b@example.com", 250, "ok")], retry_at=None, give_up=False)
        with pytest.raises(StateError):
            a.finish_delivered([(m.id, [RcptOutcome("b@example.com", 250, "ok")])])
        b.finish_attempt(m.id, [RcptOutcome("b@example.com", 250, "ok")], retry_at=None, give_up=False)
        rec = [e for e in b.audit_entries(msg_id=m.id) if e.event == "recovered"]
        assert rec and rec[0].detail["node"] == "n0"
        assert a.recover() == 0  # nothing of a's left to recover: b took it
        assert b.verify_audit()[0]
    finally:
        a.close()
        b.close()


def test_expiry_once_across_nodes(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    st = nodes(pg_url, tmp_path)
    try:
        held = [msg(st[0].root, state=HELD, expires_at=time.time() - 1) for _ in range(60)]
        with st[0].transaction():
            st[0].accept_many(held)
        out: dict[str, list[str]] = {}
        barrier = threading.Barrier(3)

        def run(s: PgStore) -> None:
            barrier.wait()
            out[s.node] = s.expire_due("reject")

        ts = [threading.Thread(target=run, args=(s,)) for s in st]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        every = [i for lst in out.values() for i in lst]
        assert sorted(every) == sorted(m.id for m in held)  # each once, none missed
        expired = [e for e in st[1].audit_entries() if e.event == "expired"]
        assert len(expired) == 60
        assert st[2].verify_audit()[0]
    finally:
        for s in st:
            s.close()


async def _wait(pred: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_one_leader_and_takeover(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    ss = [AsyncPgStore(pg_url, tmp_path / f"l{i}", node=f"l{i}", lead=True) for i in range(3)]
    try:
        await _wait(lambda: sum(s.is_leader() for s in ss) == 1)
        await asyncio.sleep(1.5)  # and it stays one
        assert sum(s.is_leader() for s in ss) == 1
        leader = next(s for s in ss if s.is_leader())
        leader.close()
        rest = [s for s in ss if s is not leader]
        await _wait(lambda: sum(s.is_leader() for s in rest) == 1)
    finally:
        for s in ss:
            s.close()


async def test_release_wakes_every_node(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    a = AsyncPgStore(pg_url, tmp_path / "a", node="a")
    b = PgStore(pg_url, tmp_path / "b", node="b")
    try:
        woke: list[float] = []
        a.on_due(woke.append)
        m = msg(b.root, state=HELD)
        b.accept(m)
        await asyncio.sleep(0.5)
        woke.clear()
        b.decide(m.id, "boss@example.jp", "release", "ok")
        await _wait(lambda: woke, timeout=10)
        claimed = await a.run(lambda s: s.claim_due(5))
        assert [c.id for c in claimed] == [m.id]
    finally:
        a.close()
        b.close()


async def test_a_claim_whose_answer_was_lost_is_not_kept_alive(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    """A claim can commit and its answer be lost (PostgreSQL stopped between its commit and its
    reply): its rows are leased to this node, which does not hold them. The node's lease renewal
    must renew only what its deliverer holds, so those rows expire and are claimed again; renewing
    every row leased to the node kept them `delivering` for as long as it lived (a message
    acknowledged and never delivered after a database restart)."""
    lost = PgStore(pg_url, tmp_path / "x", node="a", lease_seconds=3.0)  # the claim whose answer nobody read
    a = AsyncPgStore(pg_url, tmp_path / "a", node="a", lease_seconds=3.0)
    held: set[str] = set()
    a.holds(lambda: tuple(held))
    try:
        orphan, kept = msg(lost.root), msg(lost.root)
        lost.accept(orphan)
        lost.accept(kept)
        assert sorted(c.id for c in lost.claim_due(5)) == sorted([orphan.id, kept.id])
        held.add(kept.id)  # the deliverer knows only this one
        await asyncio.sleep(4.5)  # past the lease, with renewals (every second) on the way
        claimed = await a.run(lambda s: s.claim_due(5))
        assert [c.id for c in claimed] == [orphan.id]  # expired, recovered, claimed again
        r = PgStore(pg_url, tmp_path / "r", node="a")
        try:
            rec = [e for e in r.audit_entries(msg_id=orphan.id) if e.event == "recovered"]
            assert rec and rec[0].detail == {"state": "delayed", "node": "a", "reason": "lease expired"}
            with psycopg.connect(pg_url) as c:
                state, until = c.execute("SELECT state, lease_until FROM messages WHERE id = %s",
                                         (kept.id,)).fetchone()  # type: ignore[misc]
            assert state == "delivering" and until > time.time()  # held: its lease was renewed
            for mid in (orphan.id, kept.id):  # both still this node's to finish
                r.finish_attempt(mid, [RcptOutcome("b@example.com", 250, "ok")], retry_at=None, give_up=False)
            assert r.verify_audit()[0]
        finally:
            r.close()
    finally:
        a.close()
        lost.close()


async def test_concurrent_appends_one_chain(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    ss = [AsyncPgStore(pg_url, tmp_path / f"c{i}", node=f"c{i}") for i in range(3)]
    try:
        jobs = []
        for s in ss:
            for _ in range(40):
                m = msg(s.root)
                jobs.append(s.accept(m, spool=(m.spool,)))
        await asyncio.gather(*jobs)
        ok, text = await ss[0].run(lambda s: s.verify_audit())
        assert ok and text.startswith(f"{40 * 3 * 2} entries"), text
    finally:
        for s in ss:
            s.close()


def test_migrations_versioned(pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert migrate_url(pg_url) == (LATEST, [1])
    assert migrate_url(pg_url) == (LATEST, [])
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\npath = "{tmp_path / "s"}"\nurl = "{pg_url}"\n')
    assert cli_main(["store", "migrate", "--config", str(cfg)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    assert cli_main(["store", "migrate", "--config", str(cfg)]) == 2  # one plain line, no traceback
    err = capsys.readouterr().err
    assert "newer than this dlpgate" in err and "Traceback" not in err


def test_unreachable_database_is_a_plain_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import free_port

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\npath = "{tmp_path / "s"}"\nurl = "postgresql://nobody:secret@127.0.0.1:{free_port()}/x"\n')
    assert cli_main(["quarantine", "list", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlpgate: ") and "secret" not in err and "Traceback" not in err


def test_claim_bytes_bounded(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import dlpgate.store.postgres as spg

    monkeypatch.setattr(spg, "CLAIM_BYTES", 100)
    (a,) = nodes(pg_url, tmp_path, 1)
    try:
        ms = [msg(a.root) for _ in range(5)]  # ~40 bytes each
        with a.transaction():
            a.accept_many(ms)
        sizes = [len(a.claim_due(10)) for _ in range(4)]
        assert sizes[0] in (2, 3) and sum(sizes) == 5  # a claim stops at the byte budget, the rest follow
    finally:
        a.close()


def test_store_status_and_offline_verify(pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    from dlpgate.auditkey import AuditKey

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\npath = "{tmp_path / "s"}"\nurl = "{pg_url}"\nnode = "n1"\n'
                   f'[audit]\nkey = "{tmp_path / "audit.key"}"\nwitness = "{tmp_path / "audit.witness"}"\n')
    assert cli_main(["store", "status", "--config", str(cfg)]) == 0
    assert "run `dlpgate store migrate`" in capsys.readouterr().out  # a fresh database: no schema yet
    key, _ = AuditKey.load_or_create(tmp_path / "audit.key")
    st = AsyncPgStore(pg_url, tmp_path / "s", node="n1", signer=key.sign)
    try:
        s = PgStore(pg_url, tmp_path / "s", node="n1", signer=key.sign)
        s.accept(msg(s.root, state=HELD))
        from dlpgate import audit

        audit.Witness(key, tmp_path / "audit.witness").write(s, force=True)
        s.close()
        deadline = time.monotonic() + 10
        while cli_main(["store", "status", "--config", str(cfg)]) == 0 and "node n1" not in (
                out := capsys.readouterr().out):
            assert time.monotonic() < deadline, out
            time.sleep(0.2)
        rc = cli_main(["audit", "verify", "--public-key", str(tmp_path / "audit.key.pub"), "--config", str(cfg)])
        out = capsys.readouterr().out
        assert rc == 0 and "audit log ok" in out and "signed by key" in out, out
    finally:
        st.close()


def test_sessions_commit_synchronously(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    with psycopg.connect(pg_url, autocommit=True) as c:  # a server whose default is off
        c.execute("ALTER DATABASE " + c.info.dbname + " SET synchronous_commit = off")
    (a,) = nodes(pg_url, tmp_path, 1)
    try:
        with a.transaction() as c:
            assert c.execute("SHOW synchronous_commit").fetchone()["synchronous_commit"] == "on"
    finally:
        a.close()
