"""What keeps a cluster's cost per message flat as nodes are added (real PostgreSQL): a due
message is claimed first by the node that accepted it and by the others only after the grace; a
claim says in the same statement when to look again; wake-ups say who sent them, a stream of
accepts NOTIFYs once per grace, and a release wakes everyone at once; a batch runs without
savepoints but still costs a failing job only itself; a failed nested step never commits."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dlpgate.errors import StateError, StoreError
from dlpgate.store import DELAYED, HELD, AcceptJob, DeliveredJob, NewMessage, RcptOutcome, write_spool_file
from dlpgate.store.postgres import CHANNEL, FOREIGN_GRACE, AsyncPgStore, PgStore
from tests.pg_support import pg_cluster, pg_url  # noqa: F401 - fixtures

T0 = 2_000_000.0
_n = [0]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def msg(root: Path, *, state: str = DELAYED, due: float | None = T0,
        rcpts: tuple[str, ...] = ("b@example.com",)) -> NewMessage:
    _n[0] += 1
    mid = f"{int(time.time() * 1000):011x}{_n[0]:08x}"
    raw = f"Subject: {mid}\r\n\r\nbody\r\n".encode()
    rel = write_spool_file(root, mid, raw)
    return NewMessage(id=mid, sender="a@example.jp", recipients=rcpts, spool=rel, size=len(raw),
                      sha256=hashlib.sha256(raw).hexdigest(), arrived=T0, state=state,
                      due_at=due if state == DELAYED else None)


def two(url: str, tmp_path: Path, clock: Clock) -> tuple[PgStore, PgStore]:
    return (PgStore(url, tmp_path / "a", node="a", clock=clock),
            PgStore(url, tmp_path / "b", node="b", clock=clock))


def test_a_due_message_is_its_nodes_first(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    clock = Clock()
    a, b = two(pg_url, tmp_path, clock)
    try:
        mine, theirs = msg(a.root), msg(b.root)
        a.accept(mine)
        b.accept(theirs)
        got, nd = b.claim_due_next(10)  # b takes its own at once, not a's yet
        assert [c.id for c in got] == [theirs.id]
        assert nd == pytest.approx(T0 + FOREIGN_GRACE)  # and knows when a's becomes its to take
        clock.now = T0 + FOREIGN_GRACE / 2
        assert b.claim_due(10) == []
        clock.now = T0 + FOREIGN_GRACE + 0.01  # a did not take it in time (dead, or busy): b does
        [c] = b.claim_due(10)
        assert c.id == mine.id and c.read_bytes().startswith(b"Subject:")
        assert a.claim_due(10) == []
    finally:
        a.close()
        b.close()


def test_the_accepting_node_claims_at_once_and_deferred_mail_stays_with_its_node(
        pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    clock = Clock()
    a, b = two(pg_url, tmp_path, clock)
    try:
        m = msg(a.root)
        a.accept(m)
        assert [c.id for c in a.claim_due(10)] == [m.id]
        r = a.finish_attempt(m.id, [RcptOutcome("b@example.com", 451, "later")], retry_at=T0 + 60, give_up=False)
        assert r.state == "deferred"
        clock.now = T0 + 60
        assert b.claim_due(10) == []  # a retries it first
        assert [c.id for c in a.claim_due(10)] == [m.id]
    finally:
        a.close()
        b.close()


def test_released_mail_is_anyones_at_once(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    clock = Clock()
    a, b = two(pg_url, tmp_path, clock)
    try:
        m = msg(a.root, state=HELD)
        a.accept(m)
        a.decide(m.id, "boss@example.jp", "release", "ok")
        assert [c.id for c in b.claim_due(10)] == [m.id]  # no grace: a release may be taken by any node
    finally:
        a.close()
        b.close()


def test_claim_budget_and_next_due_in_one_statement(pg_url: str, tmp_path: Path,  # noqa: F811
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import dlpgate.store.postgres as spg

    clock = Clock()
    (a,) = (PgStore(pg_url, tmp_path / "a", node="a", clock=clock),)
    try:
        now = [msg(a.root) for _ in range(3)]
        later = msg(a.root, due=T0 + 30)
        with a.transaction():
            a.accept_many([*now, later])
        monkeypatch.setattr(spg, "CLAIM_BYTES", 1)  # one message per claim: the rest is due now
        first, nd = a.claim_due_next(10)
        assert len(first) == 1 and nd is not None and nd <= T0
        monkeypatch.setattr(spg, "CLAIM_BYTES", 64 * 1024 * 1024)
        rest, nd = a.claim_due_next(10)
        assert len(rest) == 2 and nd == T0 + 30  # the later one: when to look again
        assert sorted(c.id for c in first + rest) == sorted(m.id for m in now)
    finally:
        a.close()


def notifies(conn: psycopg.Connection[Any], wait: float = 0.5) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=wait, stop_after=100)]


def test_wake_ups_say_who_and_what(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    clock = Clock()
    a, cli = two(pg_url, tmp_path, clock)
    a.self_wakes = True  # a gateway's store: its pipeline pokes its own deliverer
    try:
        import dlpgate.store.postgres as spg

        grace, spg.FOREIGN_GRACE = spg.FOREIGN_GRACE, 30.0  # "within the grace", however slow this machine is
        with psycopg.connect(pg_url, autocommit=True) as listen:
            listen.execute(f"LISTEN {CHANNEL}")
            a.accept(msg(a.root))
            a.accept(msg(a.root, due=T0 - 5))  # within the grace: no second NOTIFY for a stream
            assert notifies(listen) == [f"{T0!r} a a"]
            held = msg(cli.root, state=HELD)
            cli.accept(msg(cli.root))  # a CLI pokes no deliverer: its NOTIFY is for everyone
            cli.accept(held)
            cli.decide(held.id, "boss@example.jp", "release", "ok")
            assert notifies(listen) == [f"{T0!r} b n", f"{T0!r} b n"]
    finally:
        spg.FOREIGN_GRACE = grace
        a.close()
        cli.close()
    node = AsyncPgStore.__new__(AsyncPgStore)
    node.node = "a"
    assert node.wake_at(f"{T0!r} a a") is None  # its own accept: its pipeline poked it already
    assert node.wake_at(f"{T0!r} b a") == T0 + FOREIGN_GRACE  # another's: after that node's turn
    assert node.wake_at(f"{T0!r} b n") == T0  # a release: at once
    assert node.wake_at("garbage") == 0.0


def test_one_bad_job_in_a_batch_costs_only_itself(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    clock = Clock()
    a, _b = two(pg_url, tmp_path, clock)
    _b.close()
    try:
        ms = [msg(a.root) for _ in range(4)]
        a.accept(ms[1])
        res = a.run_batch([AcceptJob(m) for m in ms])  # the second is there already
        assert [ok for ok, _ in res] == [True, False, True, True]
        claimed = a.claim_due(10)
        assert sorted(c.id for c in claimed) == sorted(m.id for m in ms)
        a.recover()
        a.claim_due(10)
        with a.transaction() as c:  # one of them is no longer this node's
            c.execute("UPDATE messages SET lease_node = 'z' WHERE id = %s", (ms[2].id,))
        res = a.run_batch([DeliveredJob(m.id, [RcptOutcome("b@example.com", 250, "ok")], None) for m in ms])
        assert [ok for ok, _ in res] == [True, True, False, True]
        assert isinstance(res[2][1], StateError) and "claimed by node z" in str(res[2][1])
        [alone] = a.run_batch([DeliveredJob(ms[2].id, [RcptOutcome("b@example.com", 250, "ok")], None)])
        assert not alone[0] and isinstance(alone[1], StateError)
        assert {r["state"] for r in a.list(states=("delivered",))} == {"delivered"}
        assert len(a.list(states=("delivered",))) == 3
        assert a.verify_audit()[0]
    finally:
        a.close()


def test_a_lone_delivery_leaving_a_recipient_pending_is_recorded_as_an_attempt(
        pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    clock = Clock()
    a, _b = two(pg_url, tmp_path, clock)
    _b.close()
    try:
        m = msg(a.root, rcpts=("b@example.com", "c@example.com"))
        a.accept(m)
        a.claim_due(10)
        [(ok, r)] = a.run_batch([DeliveredJob(m.id, [RcptOutcome("b@example.com", 250, "ok")], retry_at=T0 + 9)])
        assert ok and r.state == "deferred"
        assert a.get(m.id)["due_at"] == T0 + 9
    finally:
        a.close()


def test_a_failed_nested_step_never_commits(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    clock = Clock()
    a, _b = two(pg_url, tmp_path, clock)
    _b.close()
    try:
        first, dup = msg(a.root), msg(a.root)
        a.accept(dup)
        with pytest.raises(StoreError, match="nothing of it was committed"):
            with a.transaction():
                a.accept(first)
                try:
                    a.accept(dup)  # fails inside: caught, but the transaction is spoilt
                except StoreError:
                    pass
        assert [r["id"] for r in a.list()] == [dup.id]
        assert a.verify_audit()[0]
    finally:
        a.close()
