"""The store contract, run against both engines: the embedded SQLite store and the PostgreSQL
store (a real server, started by tests/pg_support.py). What the pipeline, the deliverer, the
approvals and the CLI rely on must hold on either."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dlpgate.errors import InputError, NotFound, PermissionDenied, StateError
from dlpgate.store import (
    DELAYED,
    DELIVERED,
    DELIVERING,
    EXPIRED,
    HELD,
    REJECTED,
    RELEASED,
    AsyncStore,
    NewMessage,
    RcptOutcome,
    Store,
    write_spool_file,
)
from tests.pg_support import pg_cluster, pg_url  # noqa: F401 - fixtures

T0 = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Engine:
    """Opens stores of one engine on one place (a directory, or a database + directory)."""

    def __init__(self, kind: str, root: Path, url: str = "") -> None:
        self.kind, self.root, self.url = kind, root, url
        self.clock = Clock()

    def open(self, node: str = "a", lease: float = 30.0) -> Any:
        if self.kind == "sqlite":
            return Store(self.root, clock=self.clock)
        from dlpgate.store.postgres import PgStore

        return PgStore(self.url, self.root / node, node=node, lease_seconds=lease, clock=self.clock)

    def open_async(self, node: str = "a") -> AsyncStore:
        if self.kind == "sqlite":
            return AsyncStore(self.root, clock=self.clock)
        from dlpgate.store.postgres import AsyncPgStore

        return AsyncPgStore(self.url, self.root / node, node=node, clock=self.clock)


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if request.param == "sqlite":
        return Engine("sqlite", tmp_path / "store")
    url = request.getfixturevalue("pg_url")
    return Engine("postgres", tmp_path / "local", url)


@pytest.fixture
def store(engine: Engine) -> Iterator[Any]:
    s = engine.open()
    yield s
    s.close()


_n = [0]


def msg(s: Any, *, state: str = DELAYED, due: float | None = T0, rcpts: tuple[str, ...] = ("b@example.com",),
        sender: str = "a@example.jp", data: bytes | None = None, **kw: Any) -> NewMessage:
    _n[0] += 1
    mid = f"{int(T0 * 1000) + _n[0]:011x}{_n[0]:08x}"
    raw = data if data is not None else f"Subject: m{_n[0]}\r\n\r\nbody {_n[0]}\r\n".encode()
    rel = write_spool_file(s.root, mid, raw)
    return NewMessage(id=mid, sender=sender, recipients=rcpts, spool=rel, size=len(raw),
                      sha256=hashlib.sha256(raw).hexdigest(), arrived=T0, state=state,
                      due_at=due if state == DELAYED else None, subject="件名", **kw)


def test_accept_get_list_and_audit(store: Any) -> None:
    m = msg(store, rcpts=("z@example.com", "a@example.org"), verdict="clean", rules=("r1",),
            findings=({"rule": "r1", "detector": "d", "count": 1, "severity": "low", "part": "body"},))
    h = msg(store, state=HELD, expires_at=T0 + 10)
    store.accept(m)
    store.accept(h)
    d = store.get(m.id)
    assert d["state"] == DELAYED and d["sender"] == "a@example.jp" and d["subject"] == "件名"
    assert [r["rcpt"] for r in d["recipients"]] == ["z@example.com", "a@example.org"]  # order kept
    assert d["rules"] == ["r1"] and d["findings"][0]["detector"] == "d" and d["approvals"] == []
    assert [x["id"] for x in store.list(states=(HELD,))] == [h.id]
    assert {x["id"] for x in store.list()} == {m.id, h.id}
    assert store.list(sender="A@EXAMPLE.JP", states=(DELAYED,))[0]["recipients"] == ["z@example.com",
                                                                                      "a@example.org"]
    assert store.read_spool(m.id).startswith(b"Subject: m")
    assert store.count_by_state() == {DELAYED: 1, HELD: 1}
    assert store.oldest_held() == T0
    with pytest.raises(NotFound):
        store.get("nope")
    ok, text = store.verify_audit()
    assert ok, text
    events = [e.event for e in store.audit_entries(msg_id=h.id)]
    assert events == ["accepted", "verdict", "held"]


def test_claim_deliver_once_and_history(engine: Engine, store: Any) -> None:
    big = b"X" * (3 * 1024 * 1024 + 17)  # several chunks on PostgreSQL
    ms = [msg(store), msg(store, due=T0 + 100), msg(store, data=big)]
    for m in ms:
        store.accept(m)
    assert store.next_due() == T0
    got = store.claim_due(10)
    assert sorted(c.id for c in got) == sorted([ms[0].id, ms[2].id])
    assert store.claim_due(10) == []  # claimed once
    by_id = {c.id: c for c in got}
    assert by_id[ms[2].id].read_bytes() == big
    assert by_id[ms[0].id].recipients == ("b@example.com",)
    assert store.get(ms[0].id)["state"] == DELIVERING
    res = store.finish_attempt(ms[0].id, [RcptOutcome("b@example.com", 250, "ok")], retry_at=None, give_up=False)
    assert res.state == DELIVERED
    with pytest.raises(StateError):
        store.finish_attempt(ms[0].id, [RcptOutcome("b@example.com", 250, "ok")], retry_at=None, give_up=False)
    done = store.finish_delivered([(ms[2].id, [RcptOutcome("b@example.com", 250, "ok")])])
    assert done[0].state == DELIVERED
    assert store.get(ms[2].id)["recipients"][0]["state"] == "delivered"
    assert store.count_by_state()[DELIVERED] == 2
    assert {x["id"] for x in store.list(states=(DELIVERED,))} == {ms[0].id, ms[2].id}
    engine.clock.now = T0 + 200
    assert [c.id for c in store.claim_due(10)] == [ms[1].id]
    assert store.verify_audit()[0]


def test_partial_failure_defers_then_bounces(engine: Engine, store: Any) -> None:
    m = msg(store, rcpts=("ok@example.com", "later@example.com", "bad@example.com"))
    store.accept(m)
    [c] = store.claim_due(5)
    res = store.finish_attempt(c.id, [RcptOutcome("ok@example.com", 250, "ok"),
                                      RcptOutcome("later@example.com", 451, "try later"),
                                      RcptOutcome("bad@example.com", 550, "no such user")],
                               retry_at=T0 + 60, give_up=False)
    assert res.state == "deferred" and res.delivered == ("ok@example.com",)
    assert [o.rcpt for o in res.bounced] == ["bad@example.com"]
    assert store.claim_due(5) == []
    engine.clock.now = T0 + 61
    [c] = store.claim_due(5)
    assert c.recipients == ("later@example.com",) and c.attempts == 1
    res = store.finish_attempt(c.id, [RcptOutcome("later@example.com", 451, "still")], retry_at=None, give_up=True)
    assert res.state == DELIVERED  # one recipient got it: delivered, the others bounced
    assert store.get(c.id)["state"] == DELIVERED


def test_decide_two_approvers_reject_and_recall(store: Any) -> None:
    h = msg(store, state=HELD, approvals_required=2)
    r = msg(store, state=HELD)
    d = msg(store, due=T0 + 300)
    for m in (h, r, d):
        store.accept(m)
    assert store.decide(h.id, "boss@example.jp", "release", "ok", login="boss") == HELD
    with pytest.raises(PermissionDenied):  # two approvals are two people
        store.decide(h.id, "dep@example.jp", "release", "again", login="boss")
    assert store.decide(h.id, "dep@example.jp", "release", "ok", login="dep") == RELEASED
    assert store.get(h.id)["due_at"] is not None
    assert store.decide(r.id, "boss@example.jp", "reject", "no") == REJECTED
    with pytest.raises(StateError):
        store.decide(r.id, "boss@example.jp", "release", "late")
    with pytest.raises(StateError):
        store.decide(d.id, "boss@example.jp", "release", "not held")
    with pytest.raises(PermissionDenied):
        store.recall(d.id, "other@example.jp")
    store.recall(d.id, "A@example.jp")
    assert store.get(d.id)["state"] == "recalled"
    with pytest.raises(StateError):
        store.recall(d.id, "a@example.jp")
    counts, top = store.decision_counts(0)
    assert counts == {"released": 1, "rejected": 1, "recalled": 1} and top > 0
    assert [(a["approver"], a["login"]) for a in store.get(h.id)["approvals"]] == [
        ("boss@example.jp", "boss"), ("dep@example.jp", "dep")]
    assert store.resolve_id(h.id[:-2]) == h.id
    with pytest.raises(NotFound):
        store.resolve_id("ffff")
    assert store.verify_audit()[0]


def test_notices_inside_decision(store: Any) -> None:
    h = msg(store, state=HELD)
    store.accept(h)

    def notices(row: Any, state: str) -> list[NewMessage]:
        assert row["id"] == h.id and state == RELEASED
        assert store.get(h.id)["state"] == RELEASED  # the decision is visible inside its transaction
        return [msg(store, sender="", kind="notice", rcpts=("a@example.jp",))]

    store.decide(h.id, "boss@example.jp", "release", "fine", notices=notices)
    kinds = [x["kind"] for x in store.list(kind=None)]
    assert sorted(kinds) == ["mail", "notice"]


def test_expiry_reminders_recover_purge(engine: Engine, store: Any) -> None:
    h1 = msg(store, state=HELD, expires_at=T0 + 10)
    h2 = msg(store, state=HELD, expires_at=T0 + 1000)
    store.accept(h1)
    store.accept(h2)
    assert store.expire_due("reject") == []
    engine.clock.now = T0 + 11
    assert store.expire_due("reject") == [h1.id]
    assert store.get(h1.id)["state"] == EXPIRED
    assert store.expire_due("reject") == []
    assert [r["id"] for r in store.due_reminders(5)] == [h2.id]
    assert store.due_reminders(5) == []
    m = msg(store)
    store.accept(m)
    assert [c.id for c in store.claim_due(5)] == [m.id]
    assert store.recover() == 1
    assert store.get(m.id)["state"] == DELAYED
    [c] = store.claim_due(5)
    store.finish_attempt(c.id, [RcptOutcome("b@example.com", 250, "ok")], retry_at=None, give_up=False)
    engine.clock.now = T0 + 100_000
    assert store.purge(3600, 10**9) >= 2  # the delivered and the expired message
    with pytest.raises(StateError):
        store.read_spool(m.id)
    assert store.get(m.id)["state"] == DELIVERED
    assert store.verify_audit()[0]


def test_sendlog_contacts(store: Any) -> None:
    att = ({"filename": "a.csv", "content_type": "text/csv", "size": 3, "sha256": "AB" * 32},)
    m = msg(store, rcpts=("x@Partner.example",), attachments=att, contact_scopes=("a@example.jp",))
    store.accept(m)
    assert store.known_domains("a@example.jp", ["partner.example", "new.example"]) == {"partner.example"}
    rows = store.sendlog(sender="A@example.jp")
    assert [r["msg_id"] for r in rows] == [m.id] and rows[0]["attachments"][0]["filename"] == "a.csv"
    assert [r["msg_id"] for r in store.sendlog(attachment_hash="ab" * 32)] == []  # stored as given
    assert [r["msg_id"] for r in store.sendlog(since=T0 - 1, until=T0 + 1)] == [m.id]


async def test_group_commit_many_accepts(engine: Engine) -> None:
    st = engine.open_async()
    try:
        probe = engine.open()
        ms = [msg(probe) for _ in range(40)]
        probe.close()
        await asyncio.gather(*(st.accept(m, content=f"m{i}".encode()) for i, m in enumerate(ms)))
        claimed = await st.run(lambda s: s.claim_due(100))
        assert sorted(c.id for c in claimed) == sorted(m.id for m in ms)
        assert {c.read_bytes() for c in claimed} == {f"m{i}".encode() for i in range(40)}
        ok, text = await st.run(lambda s: s.verify_audit())
        assert ok, text
    finally:
        st.close()


def _tamper(engine: Engine, store: Any) -> Callable[[], None]:
    if engine.kind == "sqlite":
        return lambda: store.conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    import psycopg

    def run() -> None:
        with psycopg.connect(engine.url, autocommit=True) as c:
            c.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    return run


def test_signed_appends_verify_with_the_key(engine: Engine, tmp_path: Path) -> None:
    from dlpgate import audit
    from dlpgate.auditkey import AuditKey

    key, _ = AuditKey.load_or_create(tmp_path / "audit.key")
    if engine.kind == "sqlite":
        st: Any = Store(engine.root, clock=engine.clock, signer=key.sign)
    else:
        from dlpgate.store.postgres import PgStore

        st = PgStore(engine.url, engine.root / "k", node="k", clock=engine.clock, signer=key.sign)
    try:
        h = msg(st, state=HELD)
        st.accept(h)
        st.decide(h.id, "boss@example.jp", "reject", "no", login="boss")
        st.append_audit(h.id, "refused", "mallory", {"why": "test"}, "mallory")
        seq, head = st.audit_head()
        assert seq == len(st.audit_chain()) and head == st.audit_chain()[-1].hash
        assert st.audit_signed()
        rep = audit.verify(st, key)
        assert rep.ok, rep.message
        assert [r["msg_id"] for r in st.approval_rows()] == [h.id]
    finally:
        st.close()


def test_audit_tamper_detected(engine: Engine, store: Any) -> None:
    store.accept(msg(store))
    assert store.verify_audit()[0]
    _tamper(engine, store)()
    ok, text = store.verify_audit()
    assert not ok and "entry 2" in text


def test_expiry_release_makes_it_due(engine: Engine, store: Any) -> None:
    h = msg(store, state=HELD, expires_at=T0 + 5)
    store.accept(h)
    engine.clock.now = T0 + 6
    seen: list[str] = []
    assert store.expire_due("release", lambda r, st: seen.append(st) or []) == [h.id]
    assert seen == [RELEASED] and store.get(h.id)["state"] == RELEASED
    assert [c.id for c in store.claim_due(5)] == [h.id]
    assert [e.event for e in store.audit_entries(msg_id=h.id)][-1] == "released"


def test_engines_offer_the_same_interface() -> None:
    """A transition added to one engine and not the other fails here, not in a gateway."""
    from dlpgate.store.postgres import AsyncPgStore, PgStore

    def public(cls: type) -> set[str]:
        return {m for m in dir(cls) if not m.startswith("_") and m != "BUSY_SECONDS"}

    assert public(Store) <= public(PgStore), public(Store) - public(PgStore)
    assert public(AsyncStore) <= public(AsyncPgStore)


def test_counts_for_the_exporter(store: Any) -> None:
    store.accept(msg(store, state=HELD))
    store.accept(msg(store))
    assert store.count_in_states((HELD, DELAYED, "deferred")) == {HELD: 1, DELAYED: 1}
    assert store.oldest_in_state(HELD) == T0 and store.oldest_in_state("deferred") is None


def test_a_prefix_finds_ids_whose_next_letter_comes_after_g(store: Any) -> None:
    """`quarantine release fnf` must find `fnfj...` on both engines: the prefix's upper bound was
    `prefix + "g"`, right for hex ids only (found through test_cli_admin's ambiguous-prefix case)."""
    for mid in ("fnfjbbbbbbbbbbbbbb", "fnfzbbbbbbbbbbbbbb", "fnzbbbbbbbbbbbbbbb"):
        m = msg(store, state=HELD)
        rel = write_spool_file(store.root, mid, b"Subject: x\r\n\r\nx\r\n")
        store.accept(replace(m, id=mid, spool=rel))
    assert store.resolve_id("fnfj") == "fnfjbbbbbbbbbbbbbb"
    assert store.resolve_id("fnfz") == "fnfzbbbbbbbbbbbbbb"
    assert store.resolve_id("fnz") == "fnzbbbbbbbbbbbbbbb"
    with pytest.raises(InputError, match="ambiguous: it starts 2"):
        store.resolve_id("fnf")
    with pytest.raises(NotFound):
        store.resolve_id("fnb")


def test_ids_of_both_formats_resolve_from_a_prefix(store: Any) -> None:
    """Ids are letters since December 2026 (digit-free, so masking never stars one); a store kept
    from before holds hex ids beside them, and a prefix of either finds its message."""
    import dataclasses
    import os

    from dlpgate.errors import InputError
    from dlpgate.store import new_id

    old = msg(store)
    new = [dataclasses.replace(msg(store), id=new_id()) for _ in range(2)]
    for m in (old, *new):
        store.accept(m)
    for m in (old, *new):
        assert store.resolve_id(m.id[:12]) == m.id and store.resolve_id(m.id.upper()) == m.id
    shared = os.path.commonprefix([new[0].id, new[1].id])  # made a moment apart: their time letters
    assert shared
    with pytest.raises(InputError, match="ambiguous"):
        store.resolve_id(shared)
    with pytest.raises(NotFound):
        store.resolve_id("zz%")  # LIKE and range characters are refused before any query


def test_a_state_written_into_the_database_is_not_claimed(store: Any, engine: Engine) -> None:
    """Red team: with write access to the database and not to the signing key (a DBA of a shared
    PostgreSQL store), one UPDATE turns a held message into `released` (or `delayed`) with no
    decision. Before: the next claim handed it to the deliverer and it went out. After: the claim
    reads the message's last halting chain entry and puts it back (held; rejected, expired or
    recalled alike), with a `tampered` entry; a real release, and mail that was never held, go out as before."""
    ph = "?" if engine.kind == "sqlite" else "%s"
    forged = [msg(store, state=HELD, expires_at=T0 + 100) for _ in range(3)]
    released = msg(store, state=HELD, expires_at=T0 + 100)
    clean = msg(store)
    for m in (*forged, released, clean):
        store.accept(m)
    assert store.decide(released.id, "boss@example.jp", "release", "ok", login="boss") == RELEASED
    with store.transaction() as c:
        for m, state in zip(forged, ("released", "delayed", "deferred"), strict=True):
            c.execute(f"UPDATE messages SET state = {ph}, due_at = {ph} WHERE id = {ph}", (state, T0, m.id))
    claimed = {c.id for c in store.claim_due(10)}
    assert claimed == {released.id, clean.id}
    assert [store.get(m.id)["state"] for m in forged] == [HELD, HELD, HELD]
    for m in forged:
        assert "tampered" in [e.event for e in store.audit_entries(msg_id=m.id)]
    assert store.claim_due(10) == []


def test_a_claim_carries_the_sha256_the_signed_chain_recorded(store: Any) -> None:
    """The deliverer sends a claimed message only if its bytes hash to what the `accepted` entry
    recorded (delivery.py): both engines hand that value over with the claim."""
    ms = [msg(store, data=f"Subject: s{i}\r\n\r\n{'x' * (i * 5000)}\r\n".encode()) for i in range(3)]
    for m in ms:
        store.accept(m)
    got = {c.id: c for c in store.claim_due(10)}
    assert set(got) == {m.id for m in ms}
    for m in ms:
        c = got[m.id]
        assert c.sha256 == m.sha256 == hashlib.sha256(c.read_bytes()).hexdigest()
