"""Accepts and deliveries committed together (`Store.accept_many`, `Store.finish_delivered`, their
jobs in a group commit) write exactly what `accept` / `finish_attempt` one message at a time
write, and one bad message never costs the others."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from dlpgate.errors import StateError
from dlpgate.store import (
    DELAYED,
    HELD,
    REJECTED,
    AcceptJob,
    AsyncStore,
    DeliveredJob,
    NewMessage,
    RcptOutcome,
    Store,
    new_id,
    write_spool_file,
)

RAW = b"From: a@example.jp\r\nTo: b@example.com\r\nSubject: x\r\n\r\nbody\r\n"


def message(i: int, **kw: Any) -> NewMessage:
    state = (DELAYED, HELD, REJECTED)[i % 3]
    base: dict[str, Any] = dict(
        id=f"{i:011x}{i:08x}", sender=f"s{i % 4}@example.jp",
        recipients=(f"r{i}@example.com", f"x{i % 2}@example.org", f"r{i}@example.com")[: 1 + i % 3],
        spool=f"spool/00/{i}.eml", size=100 + i, sha256=hashlib.sha256(str(i).encode()).hexdigest(),
        arrived=1000.0 + i, state=state, due_at=2000.0 + i if state == DELAYED else None, client="192.0.2.1",
        helo="h", subject=f"件名 {i}", verdict=("clean", "hold", "reject")[i % 3], rules=("r1",) * (i % 2),
        reason="理由" if i % 3 else "", findings=({"rule": "r1", "detector": "my_number", "count": 1,
                                                    "severity": "high", "part": "body", "sample": "1234****"},)
        * (i % 2), records=i % 5, parts=({"path": "body", "chars": 10},),
        attachments=({"filename": f"f{i}.csv", "content_type": "csv", "size": 3,
                      "sha256": "ab" * 32},) * (i % 2),
        contact_scopes=(f"s{i % 4}@example.jp", "*"), audit_detail={"logged_rules": ["l"]} if i % 4 == 0 else {})
    base.update(kw)
    return NewMessage(**base)


def dump(root: Path) -> dict[str, Any]:
    """Everything accept writes, timestamps left out (each accept reads the clock itself)."""
    s = Store(root)
    try:
        q = lambda sql: [tuple(r) for r in s.conn.execute(sql)]  # noqa: E731
        return {
            "messages": q("SELECT id, state, kind, sender, client, helo, arrived, due_at, size, sha256, spool,"
                          " subject, verdict, rules, reason, findings, records, parts, approvals_required,"
                          " expires_at FROM messages ORDER BY id"),
            "recipients": q("SELECT msg_id, rcpt, state FROM recipients ORDER BY rowid"),
            "audit": q("SELECT seq, msg_id, event, actor, detail FROM audit ORDER BY seq"),
            "sendlog": q("SELECT msg_id, ts, sender, recipients, subject, attachments, verdict FROM sendlog"
                         " ORDER BY msg_id"),
            "hashes": q("SELECT sha256, msg_id FROM attachment_hashes ORDER BY rowid"),
            "contacts": q("SELECT scope, domain, count FROM contacts ORDER BY scope, domain"),
            "verify": s.verify_audit()[0],
        }
    finally:
        s.close()


@pytest.mark.parametrize("n", [1, 7, 40])
def test_accept_many_writes_what_accept_writes(tmp_path: Path, n: int) -> None:
    ms = [message(i) for i in range(n)]
    one, many = Store(tmp_path / "one"), Store(tmp_path / "many")
    for m in ms:
        one.accept(m)
    many.accept_many(ms)
    one.close()
    many.close()
    a, b = dump(tmp_path / "one"), dump(tmp_path / "many")
    assert a == b
    assert a["verify"] is True and len(a["messages"]) == n
    assert json.loads(a["audit"][0][4])["sender"] == "s0@example.jp"


def test_more_rows_than_one_statement_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlpgate.store import sqlite as store_mod

    monkeypatch.setattr(store_mod, "_MAX_VARIABLES", 200)  # as if SQLite allowed 200 values a statement
    ms = [message(i, recipients=tuple(f"u{k}@d{i % 7}.example" for k in range(30))) for i in range(40)]
    s = Store(tmp_path / "s")
    statements: list[str] = []
    s.conn.set_trace_callback(statements.append)
    s.accept_many(ms)
    s.conn.set_trace_callback(None)
    inserts = [x for x in statements if x.startswith("INSERT OR IGNORE INTO recipients")]
    assert len(inserts) == 1200 // 50  # 1,200 rows, 50 a statement (half the limit, two values a row)
    assert s.conn.execute("SELECT count(*) FROM recipients").fetchone()[0] == 1200
    assert s.conn.execute("SELECT sum(count) FROM contacts").fetchone()[0] == 40 * 2  # one domain each, two scopes
    assert s.verify_audit()[0]
    s.close()


def test_one_bad_accept_in_a_batch_costs_only_itself(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    s.accept(message(1))
    batch = [AcceptJob(message(i)) for i in (0, 1, 2, 3)]  # message 1 is already there
    res = s.run_batch(batch)
    assert [ok for ok, _ in res] == [True, False, True, True]
    assert "UNIQUE" in str(res[1][1])
    assert sorted(r[0] for r in s.conn.execute("SELECT id FROM messages")) == sorted(
        message(i).id for i in (0, 1, 2, 3))
    assert s.verify_audit()[0]
    s.close()


def test_group_commit_of_concurrent_accepts(tmp_path: Path) -> None:
    async def go() -> None:
        st = AsyncStore(tmp_path / "s")
        try:
            ms = []
            for _ in range(60):
                mid = new_id()
                rel = write_spool_file(st.root, mid, RAW, sync=False)
                ms.append(NewMessage(id=mid, sender="a@example.jp", recipients=("b@example.com",), spool=rel,
                                     size=len(RAW), sha256=hashlib.sha256(RAW).hexdigest(), arrived=time.time(),
                                     state=DELAYED, due_at=time.time(), contact_scopes=("a@example.jp", "*")))
            await asyncio.gather(*(st.accept(m, spool=(m.spool,)) for m in ms))
            rows = await st.run(lambda s: s.conn.execute("SELECT count(*) FROM messages").fetchone()[0])
            assert rows == 60
            counts = await st.run(lambda s: dict(s.conn.execute("SELECT scope, count FROM contacts").fetchall()))
            assert counts == {"a@example.jp": 60, "*": 60}
            assert (await st.run(lambda s: s.verify_audit()))[0]
        finally:
            st.close()

    asyncio.run(go())


def _claimed_store(root: Path, n: int) -> Store:
    s = Store(root)
    s.accept_many([message(3 * i, due_at=0.0, recipients=(f"r{i}@example.com", f"q{i}@example.org"))
                   for i in range(n)])  # 3*i: all delayed, and due
    assert len(s.claim_due(n)) == n
    return s


def finish_dump(root: Path) -> dict[str, Any]:
    s = Store(root)
    try:
        q = lambda sql: [tuple(r) for r in s.conn.execute(sql)]  # noqa: E731
        return {"messages": q("SELECT id, state, prev_state, due_at, attempts, last_error FROM messages ORDER BY id"),
                "recipients": q("SELECT msg_id, rcpt, state, code, response FROM recipients ORDER BY rowid"),
                "audit": q("SELECT seq, msg_id, event, detail FROM audit ORDER BY seq"),
                "verify": s.verify_audit()[0]}
    finally:
        s.close()


def outcomes_for(s: Store, mid: str) -> list[RcptOutcome]:
    rcpts = [r[0] for r in s.conn.execute("SELECT rcpt FROM recipients WHERE msg_id=? ORDER BY rowid", (mid,))]
    return [RcptOutcome(r, 250, f"2.0.0 ok {k}") for k, r in enumerate(rcpts)]


def test_finish_delivered_writes_what_finish_attempt_writes(tmp_path: Path) -> None:
    one, many = _claimed_store(tmp_path / "one", 12), _claimed_store(tmp_path / "many", 12)
    ids = [r[0] for r in one.conn.execute("SELECT id FROM messages ORDER BY id")]
    items = [(mid, outcomes_for(one, mid)) for mid in ids]
    singles = [one.finish_attempt(mid, o, retry_at=None, give_up=False) for mid, o in items]
    batched = many.finish_delivered(items)
    one.close()
    many.close()
    assert singles == batched and all(r.state == "delivered" for r in batched)
    assert finish_dump(tmp_path / "one") == finish_dump(tmp_path / "many")


def test_delivered_jobs_in_a_batch_one_not_delivering(tmp_path: Path) -> None:
    s = _claimed_store(tmp_path / "s", 4)
    ids = [r[0] for r in s.conn.execute("SELECT id FROM messages ORDER BY id")]
    s.recover()  # the third goes back to the queue below: it is no longer delivering
    s.claim_due(4)
    s.conn.execute("UPDATE messages SET state='delayed' WHERE id=?", (ids[2],))
    jobs = [DeliveredJob(mid, outcomes_for(s, mid), retry_at=None) for mid in ids]
    res = s.run_batch(jobs)
    assert [ok for ok, _ in res] == [True, True, False, True]
    assert isinstance(res[2][1], StateError)
    assert [r[0] for r in s.conn.execute("SELECT state FROM messages ORDER BY id")] == \
        ["delivered", "delivered", "delayed", "delivered"]
    assert s.verify_audit()[0]
    s.close()


def test_delivered_job_that_leaves_a_recipient_pending_is_recorded_as_finish_attempt_would(tmp_path: Path) -> None:
    s = _claimed_store(tmp_path / "s", 3)
    ids = [r[0] for r in s.conn.execute("SELECT id FROM messages ORDER BY id")]
    partial = outcomes_for(s, ids[2])[:1]  # two recipients; only one reported
    jobs = [DeliveredJob(ids[0], outcomes_for(s, ids[0]), None), DeliveredJob(ids[1], outcomes_for(s, ids[1]), None),
            DeliveredJob(ids[2], partial, retry_at=123.0)]
    res = s.run_batch(jobs)
    assert [r.state for _, r in res] == ["delivered", "delivered", "deferred"]
    assert s.conn.execute("SELECT due_at FROM messages WHERE id=?", (ids[2],)).fetchone()[0] == 123.0
    s.close()


def test_delivered_job_is_for_delivered_attempts_only() -> None:
    with pytest.raises(ValueError):
        DeliveredJob("x", [RcptOutcome("a@example.com", 451, "later")], None)
    with pytest.raises(ValueError):
        DeliveredJob("x", [], None)


def test_lookups_by_sender_use_an_index(tmp_path: Path) -> None:
    """`outbox` and `sendlog --sender` match the sender case-blind; the indexes are on lower(sender)."""
    s = Store(tmp_path / "s")
    s.accept_many([message(i) for i in range(30)])
    plans = [" ".join(str(r[3]) for r in s.conn.execute("EXPLAIN QUERY PLAN " + q, ("S1@EXAMPLE.JP",)))
             for q in ("SELECT * FROM messages WHERE lower(sender) = lower(?)",
                       "SELECT s.* FROM sendlog s WHERE lower(s.sender) = lower(?)")]
    assert "USING INDEX messages_sender_ci" in plans[0]
    assert "USING INDEX sendlog_sender_ci" in plans[1]
    assert {m["sender"] for m in s.list(sender="S1@Example.JP")} == {"s1@example.jp"}
    assert {r["sender"] for r in s.sendlog(sender="S1@EXAMPLE.JP")} == {"s1@example.jp"}
    s.close()
