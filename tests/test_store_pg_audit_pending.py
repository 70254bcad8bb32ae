"""Audit entries chained after their COMMIT (PostgreSQL engine, `defer_audit`): a gateway's
transactions write their entries to `audit_pending` on a stream of their own, and the leader chains
them. The guarantee must be the one a synchronous append gives: an entry edited, removed or forged
before it is chained is refused by the chainer and named by `audit verify`; after chaining, the
chain's hashes and signatures show it as before. A real PostgreSQL server (tests/pg_support.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dlpgate import audit
from dlpgate.auditkey import AuditKey
from dlpgate.store import HELD
from dlpgate.store.postgres import AsyncPgStore, PgStore, _pending_hash
from tests.pg_support import pg_cluster, pg_url  # noqa: F401 - fixtures
from tests.test_store_pg_cluster import msg


@pytest.fixture
def key(tmp_path: Path) -> AuditKey:
    k, _ = AuditKey.load_or_create(tmp_path / "audit.key")
    return k


def writer(url: str, tmp: Path, node: str, key: AuditKey) -> PgStore:
    st = PgStore(url, tmp / node, node=node, signer=key.sign)
    st.defer_audit = True
    return st


def sql(url: str, q: str, args: Any = ()) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(q, args)
        return cur.fetchall() if cur.description else []


def pending(url: str) -> list[Any]:
    return sql(url, "SELECT id, stream, sseq, last FROM audit_pending ORDER BY id")


def test_pending_entries_chain_into_one_signed_chain(pg_url: str, tmp_path: Path, key: AuditKey) -> None:  # noqa: F811
    a, b = writer(pg_url, tmp_path, "a", key), writer(pg_url, tmp_path, "b", key)
    try:
        for s in (a, b, a):
            s.accept(msg(s.root))
        h = msg(a.root, state=HELD)
        a.accept(h)
        a.decide(h.id, "boss@example.jp", "reject", "no", login="boss")
        assert sql(pg_url, "SELECT count(*) FROM audit")[0][0] == 0  # nothing chained by the writers
        # a decision is visible at once, on every node, before it is chained (two-person rule)
        assert [d["decision"] for d in b.decisions(h.id)] == ["reject"]
        n = len(pending(pg_url))
        assert n >= 9 and b.chain_pending() == n and not pending(pg_url)
        assert a.chain_pending() == 0
        rep = audit.verify(a, key)
        assert rep.ok and rep.message.startswith(f"{n} entries"), rep.message
        assert sql(pg_url, "SELECT count(*) FROM audit_streams")[0][0] == 2
        # the streams go on from their chained state
        b.accept(msg(b.root))
        assert a.chain_pending() == 2 and audit.verify(b, key).ok
        events = [e.event for e in a.audit_entries(msg_id=h.id)]
        assert events == ["accepted", "verdict", "held", "rejected"], events
    finally:
        a.close()
        b.close()


def _three_transactions(url: str, tmp: Path, key: AuditKey) -> tuple[PgStore, list[Any]]:
    a = writer(url, tmp, "a", key)
    for _ in range(3):
        a.accept(msg(a.root))  # two entries each: accepted, verdict
    rows = pending(url)
    assert [r[2] for r in rows] == [1, 2, 3, 4, 5, 6] and [r[3] for r in rows] == [False, True] * 3
    return a, rows


def _refused(url: str, a: PgStore, key: AuditKey, why: str) -> None:
    chainer = PgStore(url, a.root.parent / "chainer", node="chainer", signer=key.sign)
    try:
        before = len(pending(url))
        chainer.chain_pending()
        assert any(why in p for p in chainer.chain_problems), chainer.chain_problems
        assert pending(url), "a broken stream is not chained"
        assert len(pending(url)) <= before
        rep = audit.verify(chainer, key)  # with the public key, as an auditor verifies
        assert not rep.ok and why in rep.message, rep.message
        ok, text = chainer.verify_audit()
        assert not ok and why in text, text
    finally:
        chainer.close()


def test_entry_edited_before_chaining_is_refused(pg_url: str, tmp_path: Path, key: AuditKey) -> None:  # noqa: F811
    a, rows = _three_transactions(pg_url, tmp_path, key)
    try:
        sql(pg_url, "UPDATE audit_pending SET actor = 'mallory' WHERE id = %s", (rows[2][0],))
        _refused(pg_url, a, key, "entry 3: content does not match its hash (edited before chaining)")
        # what came before the edit is chained; nothing of the stream after it
        assert sql(pg_url, "SELECT count(*) FROM audit")[0][0] == 2
    finally:
        a.close()


def test_edit_with_rehashed_stream_is_refused(pg_url: str, tmp_path: Path, key: AuditKey) -> None:  # noqa: F811
    """The attacker recomputes the stream's hashes (they are unkeyed): the transaction's signature
    no longer matches."""
    a, rows = _three_transactions(pg_url, tmp_path, key)
    try:
        full = sql(pg_url, "SELECT * FROM audit_pending ORDER BY id")
        stream = full[0][1]
        prev = full[1][9]  # the hash of entry 2, which stays
        for r in full[2:]:
            actor = "mallory" if r[2] == 3 else r[6]
            prev = _pending_hash(prev, stream, r[2], r[3], r[4], r[5], actor, r[7], r[8])
            sql(pg_url, "UPDATE audit_pending SET actor = %s, shash = %s WHERE id = %s", (actor, prev, r[0]))
        _refused(pg_url, a, key, "entry 4: not signed by this gateway's key")
    finally:
        a.close()


def test_transaction_removed_before_chaining_is_refused(pg_url: str, tmp_path: Path, key: AuditKey) -> None:  # noqa: F811
    a, rows = _three_transactions(pg_url, tmp_path, key)
    try:
        sql(pg_url, "DELETE FROM audit_pending WHERE id = ANY(%s)", ([rows[2][0], rows[3][0]],))
        _refused(pg_url, a, key, "entries 3..4 are missing before entry 5 (removed before chaining)")
    finally:
        a.close()


def test_signed_last_entry_removed_is_refused(pg_url: str, tmp_path: Path, key: AuditKey) -> None:  # noqa: F811
    a, rows = _three_transactions(pg_url, tmp_path, key)
    try:
        sql(pg_url, "DELETE FROM audit_pending WHERE id = %s", (rows[5][0],))
        _refused(pg_url, a, key, "1 entries of a transaction whose last entry is missing")
    finally:
        a.close()


def test_forged_entry_is_refused(pg_url: str, tmp_path: Path, key: AuditKey) -> None:  # noqa: F811
    a, rows = _three_transactions(pg_url, tmp_path, key)
    try:
        last = sql(pg_url, "SELECT stream, shash FROM audit_pending WHERE id = %s", (rows[5][0],))[0]
        h = _pending_hash(last[1], last[0], 7, 1.0, "x", "released", "mallory", "mallory", "{}")
        sql(pg_url, "INSERT INTO audit_pending (stream, sseq, ts, msg_id, event, actor, os_user, detail, shash, last,"
                    " mac) VALUES (%s, 7, 1.0, 'x', 'released', 'mallory', 'mallory', '{}', %s, true, 'k:AAAA')",
            (last[0], h))
        _refused(pg_url, a, key, "entry 7: not signed by this gateway's key")
        assert sql(pg_url, "SELECT count(*) FROM audit")[0][0] == 6  # the genuine ones are chained
    finally:
        a.close()


def test_stream_state_moved_over_a_removal_is_refused(pg_url: str, tmp_path: Path, key: AuditKey) -> None:  # noqa: F811
    """`audit_streams` says where each stream's chained part ends: moving it past removed entries
    (with the removed transaction's own signature copied) does not verify."""
    a = writer(pg_url, tmp_path, "a", key)
    try:
        a.accept(msg(a.root))
        assert a.chain_pending() == 2
        a.accept(msg(a.root))
        a.accept(msg(a.root))
        gone = sql(pg_url, "SELECT id, stream, sseq, shash, mac FROM audit_pending WHERE sseq IN (3, 4) ORDER BY sseq")
        sql(pg_url, "DELETE FROM audit_pending WHERE id = ANY(%s)", ([g[0] for g in gone],))
        sql(pg_url, "UPDATE audit_streams SET sseq = 4, shash = %s, mac = %s", (gone[1][3], gone[1][4]))
        _refused(pg_url, a, key, "its chained state is not signed by the key (edited)")
    finally:
        a.close()


def test_edited_after_chaining_is_detected(pg_url: str, tmp_path: Path, key: AuditKey) -> None:  # noqa: F811
    a = writer(pg_url, tmp_path, "a", key)
    try:
        a.accept(msg(a.root))
        a.accept(msg(a.root))
        assert a.chain_pending() == 4
        sql(pg_url, "UPDATE audit SET actor = 'mallory' WHERE seq = 2")
        rep = audit.verify(a, key)
        assert not rep.ok and "entry 2" in rep.message, rep.message
    finally:
        a.close()


def test_failed_commit_starts_a_new_stream(pg_url: str, tmp_path: Path, key: AuditKey) -> None:  # noqa: F811
    """A transaction whose COMMIT may or may not have happened never leaves a number to reuse."""
    a = writer(pg_url, tmp_path, "a", key)
    try:
        a.accept(msg(a.root))
        first = a._stream  # noqa: SLF001
        sql(pg_url, "ALTER TABLE audit_pending ADD CONSTRAINT no_more CHECK (sseq < 3)")
        with pytest.raises(Exception):  # noqa: B017 - StoreError: the append failed at COMMIT
            a.accept(msg(a.root))
        sql(pg_url, "ALTER TABLE audit_pending DROP CONSTRAINT no_more")
        assert a._stream != first  # noqa: SLF001
        a.accept(msg(a.root))
        assert a.chain_pending() == 4 and audit.verify(a, key).ok
    finally:
        a.close()


async def test_gateway_stores_chain_by_themselves(pg_url: str, tmp_path: Path, key: AuditKey) -> None:  # noqa: F811
    """Three gateways' writer stores (one of them leads): every entry is chained shortly after its
    COMMIT, one chain, verified with the key; the one that stops chains its last entries itself."""
    ss = [AsyncPgStore(pg_url, tmp_path / f"c{i}", node=f"c{i}", lead=True, signer=key.sign, defer_audit=True)
          for i in range(3)]
    try:
        jobs = []
        for s in ss:
            for _ in range(40):
                m = msg(s.root)
                jobs.append(s.accept(m, spool=(m.spool,)))
        await asyncio.gather(*jobs)
        deadline = time.monotonic() + 10
        while pending(pg_url):
            assert time.monotonic() < deadline, "entries not chained within 10 s"
            await asyncio.sleep(0.05)
        rep = await ss[0].run(lambda s: audit.verify(s, key))
        assert rep.ok and rep.message.startswith(f"{40 * 3 * 2} entries"), rep.message
        assert sql(pg_url, "SELECT count(DISTINCT stream) FROM audit_streams")[0][0] == 3
        follower = next(s for s in ss if not s.is_leader())
        m = msg(follower.root)
        await follower.accept(m, spool=(m.spool,))
        follower.close()  # chains what it wrote last, leader or not
        assert not pending(pg_url)
    finally:
        for s in ss:
            s.close()
