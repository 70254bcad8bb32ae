"""Spool segments: small messages appended to one file per group commit.

What must hold: a message's bytes come back exactly (its span), they are fsync'd before the COMMIT
that names them (early in the batch, or before COMMIT for a job that joined late), a failed
write or fsync costs only what it must (no row, no 250) and the next message starts a fresh
segment, and a segment is removed only once no row names it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlpgate.store import (
    DELAYED,
    DELIVERED,
    AcceptJob,
    AsyncStore,
    NewMessage,
    RcptOutcome,
    Store,
    new_id,
    read_spool_bytes,
    spool_span,
)
from dlpgate.store import spool as spool_mod
from dlpgate.store import sqlite as sqlite_mod


def _msg(raw: bytes, mid: str | None = None) -> NewMessage:
    return NewMessage(id=mid or new_id(), sender="a@example.jp", recipients=("b@example.com",), spool="",
                      size=len(raw), sha256=hashlib.sha256(raw).hexdigest(), arrived=time.time(), state=DELAYED,
                      due_at=time.time())


def _raw(n: int, tag: int = 0) -> bytes:
    head = f"From: a@example.jp\r\nTo: b@example.com\r\nSubject: {tag}\r\n\r\n".encode()
    return head + bytes((tag + i) % 251 for i in range(n))


def _seg_fsyncs(monkeypatch, out: list[str]) -> None:  # noqa: ANN001
    real = os.fsync

    def fsync(fd: int) -> None:
        out.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_a_batch_appends_to_one_segment_and_fsyncs_it_once(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    s = Store(tmp_path)
    raws = [_raw(100 * k + 1, k) for k in range(6)]
    jobs = [AcceptJob(_msg(r), content=r) for r in raws]
    synced: list[str] = []
    _seg_fsyncs(monkeypatch, synced)
    assert all(ok for ok, _ in s.run_batch(jobs))
    monkeypatch.undo()
    segs = [p for p in synced if p.endswith(".seg")]
    assert len(segs) == 1  # one file, one fsync for the whole batch
    assert len([p for p in synced if not p.endswith(".seg")]) == 1  # its new directory entry, once
    spans = [spool_span(s.get(j.message.id)["spool"]) for j in jobs]
    assert len({sp[0] for sp in spans if sp}) == 1
    for j, r in zip(jobs, raws, strict=True):
        assert s.read_spool(j.message.id) == r
    assert [sp[1] for sp in spans if sp] == sorted(sp[1] for sp in spans if sp)  # appended in order
    assert (tmp_path / spans[0][0]).stat().st_mode & 0o777 == 0o600
    # the next batch appends to the same segment, and does not fsync its directory again
    synced.clear()
    _seg_fsyncs(monkeypatch, synced)
    more = AcceptJob(_msg(raws[0]), content=raws[0])
    assert s.run_batch([more]) == [(True, None)]
    monkeypatch.undo()
    assert [p.endswith(".seg") for p in synced] == [True]
    assert spool_span(more.spool)[0] == spans[0][0]
    s.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=40), batch=st.integers(1, 7))
def test_every_message_reads_back_exactly_across_segment_rotations(tmp_path_factory, sizes: list[int],
                                                                   batch: int, monkeypatch) -> None:  # noqa: ANN001
    root = tmp_path_factory.mktemp("seg")
    monkeypatch.setattr(spool_mod, "SEGMENT_MAX_BYTES", 4096)  # rotate every few messages
    s = Store(root)
    raws = [_raw(n, k) for k, n in enumerate(sizes)]
    jobs = [AcceptJob(_msg(r), content=r) for r in raws]
    for i in range(0, len(jobs), batch):
        assert all(ok for ok, _ in s.run_batch(jobs[i:i + batch]))
    for j, r in zip(jobs, raws, strict=True):
        assert read_spool_bytes(root, s.get(j.message.id)["spool"]) == r
    for seg in (root / "spool").glob("*/*.seg"):  # rotation kept each segment near its bound
        assert seg.stat().st_size <= 4096 + max(len(r) for r in raws)
    assert s.unreferenced_segments() == []
    s.close()


def test_a_segment_is_rotated_after_its_age(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    s = Store(tmp_path)
    a = AcceptJob(_msg(_raw(10)), content=_raw(10))
    s.run_batch([a])
    now = time.monotonic()
    monkeypatch.setattr(sqlite_mod.time, "monotonic", lambda: now + spool_mod.SEGMENT_MAX_AGE + 1)
    b = AcceptJob(_msg(_raw(10)), content=_raw(10))
    s.run_batch([b])
    assert spool_span(a.spool)[0] != spool_span(b.spool)[0]
    s.close()


def test_a_failed_append_fails_that_message_alone_and_the_next_starts_a_new_segment(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    s = Store(tmp_path)
    first = AcceptJob(_msg(_raw(50, 1)), content=_raw(50, 1))
    s.run_batch([first])
    real_write = os.write
    calls = 0

    def write(fd: int, data) -> int:  # noqa: ANN001
        nonlocal calls
        calls += 1
        if calls == 2:  # the second message of the batch: half written, then the disk is full
            real_write(fd, bytes(data)[:7])
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    jobs = [AcceptJob(_msg(_raw(40, k)), content=_raw(40, k)) for k in (2, 3, 4)]
    results = s.run_batch(jobs)
    monkeypatch.undo()
    assert [ok for ok, _ in results] == [True, False, True]
    assert "spool write failed" in str(results[1][1])
    assert {m["id"] for m in s.list()} == {first.message.id, jobs[0].message.id, jobs[2].message.id}
    # the segment's end was unknown after the failed write: the message after it went to a new one
    assert spool_span(jobs[0].spool)[0] == spool_span(first.spool)[0]
    assert spool_span(jobs[2].spool)[0] != spool_span(first.spool)[0]
    for j in (first, jobs[0], jobs[2]):
        assert hashlib.sha256(s.read_spool(j.message.id)).hexdigest() == j.message.sha256
    # the half-written bytes were cut off the end of the old segment
    old = tmp_path / spool_span(first.spool)[0]
    assert old.stat().st_size == len(_raw(50, 1)) + len(_raw(40, 2))
    s.close()


def test_a_failed_segment_fsync_rolls_back_the_batch_and_abandons_the_segment(
        tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    s = Store(tmp_path)
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    jobs = [AcceptJob(_msg(_raw(30, k)), content=_raw(30, k)) for k in range(3)]
    with pytest.raises(OSError):
        s.run_batch(jobs)
    monkeypatch.undo()
    assert s.list() == []  # nobody in the batch gets a row, so nobody gets a 250
    bad = spool_span(jobs[0].spool)[0]
    ok = AcceptJob(_msg(_raw(30, 9)), content=_raw(30, 9))
    assert s.run_batch([ok]) == [(True, None)]
    assert spool_span(ok.spool)[0] != bad  # no more appends to a file whose fsync failed
    assert s.read_spool(ok.message.id) == _raw(30, 9)
    s.close()


async def test_the_writer_fsyncs_the_segment_before_taking_the_write_lock(tmp_path: Path,
                                                                          monkeypatch) -> None:  # noqa: ANN001
    st = AsyncStore(tmp_path)
    other = sqlite3.connect(tmp_path / "dlpgate.db", timeout=0, isolation_level=None, check_same_thread=False)
    lock_free: list[bool] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                lock_free.append(True)
            except sqlite3.OperationalError:
                lock_free.append(False)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    raw = _raw(200)
    ref = await st.accept(_msg(raw), content=raw)
    monkeypatch.undo()
    assert lock_free == [True]
    assert spool_span(ref) is not None and read_spool_bytes(tmp_path, ref) == raw
    other.close()
    st.close()


async def test_a_late_joiner_is_fsynced_before_commit(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Jobs that queue while the writer waits for the lock join the batch after its early fsync:
    their appends must still be durable before the COMMIT that names them."""
    st = AsyncStore(tmp_path)
    other = sqlite3.connect(tmp_path / "dlpgate.db", timeout=30, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the other writer holds the lock
    order: list[str] = []
    real_fsync = os.fsync
    assert st.store is not None
    real_commit = st.store.conn

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
            order.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    real_commit.set_trace_callback(lambda sql: order.append("commit") if sql == "COMMIT" else None)
    raws = [_raw(80, k) for k in range(4)]
    first = asyncio.ensure_future(st.accept(_msg(raws[0]), content=raws[0]))
    await asyncio.sleep(0.2)  # the writer has fsync'd the first and now waits for the lock
    late = [asyncio.ensure_future(st.accept(_msg(r), content=r)) for r in raws[1:]]
    await asyncio.sleep(0.2)
    other.execute("ROLLBACK")
    refs = [await first] + [await f for f in late]
    monkeypatch.undo()
    real_commit.set_trace_callback(None)
    assert order[:3] == ["fsync", "fsync", "commit"], order  # early fsync, late joiners' fsync, then COMMIT
    assert [read_spool_bytes(tmp_path, r) for r in refs] == raws
    other.close()
    st.close()


def test_start_up_removes_unreferenced_segments_and_keeps_the_rest(tmp_path: Path) -> None:
    s = Store(tmp_path)
    kept = AcceptJob(_msg(_raw(10)), content=_raw(10))
    s.run_batch([kept])
    s.close()
    s = Store(tmp_path)  # a crash after an append, before its commit: a segment nobody names
    s.append_segment(_raw(10, 5))
    s.flush_spool()
    s.close()
    s = Store(tmp_path)
    orphans = s.orphan_spool_files()
    assert [p.suffix for p in orphans] == [".seg"]
    assert str(orphans[0].relative_to(tmp_path)) != spool_span(kept.spool)[0]
    for p in orphans:
        p.unlink()
    assert s.read_spool(kept.message.id) == _raw(10)
    s.close()


def _live(root: Path) -> dict[str, int]:
    db = sqlite3.connect(root / "dlpgate.db")
    try:
        return dict(db.execute("SELECT path, live FROM segments").fetchall())
    finally:
        db.close()


def test_retention_erases_purged_spans_and_removes_a_segment_nobody_needs(tmp_path: Path) -> None:
    clock = [time.time()]
    s = Store(tmp_path, clock=lambda: clock[0])
    raws = [f"Subject: {k}\r\n\r\n".encode() + f"resident-record-{k};".encode() * 300 for k in range(3)]
    jobs = [AcceptJob(_msg(r), content=r) for r in raws]
    s.run_batch(jobs)
    seg_rel = spool_span(jobs[0].spool)[0]
    seg = tmp_path / seg_rel
    assert _live(tmp_path) == {seg_rel: 3}
    clock[0] = time.time() + 1  # all three are due
    # two of the three are delivered; the third is deferred (still queued: it needs the segment)
    for c in s.claim_due(10):
        code = 250 if c.id != jobs[2].message.id else 451
        s.finish_attempt(c.id, [RcptOutcome("b@example.com", code, "x")], retry_at=clock[0] + 60, give_up=False)
    states = {m["id"]: m["state"] for m in s.list()}
    assert [states[j.message.id] for j in jobs] == [DELIVERED, DELIVERED, "deferred"]
    clock[0] += 40 * 86400
    assert s.purge(30 * 86400, 400 * 86400) == 2
    assert seg.exists() and _live(tmp_path) == {seg_rel: 1}
    data = seg.read_bytes()
    for j, r in zip(jobs[:2], raws[:2], strict=True):  # the purged messages' bytes are gone from the disk
        _, off, n = spool_span(j.spool)
        assert data[off:off + n] == bytes(n) and r[20:60] not in data
    assert s.read_spool(jobs[2].message.id) == raws[2]  # the one still queued is intact
    assert [c.id for c in s.claim_due(10)] == [jobs[2].message.id]
    s.finish_attempt(jobs[2].message.id, [RcptOutcome("b@example.com", 250, "ok")], retry_at=None, give_up=False)
    clock[0] += 40 * 86400
    assert s.purge(30 * 86400, 400 * 86400) == 1
    assert not seg.exists() and _live(tmp_path) == {}  # nobody names it any more
    s.close()


def test_erasing_without_hole_punching_writes_zeros(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(spool_mod, "_fallocate", None)  # a file system that cannot punch holes
    p = tmp_path / "x.seg"
    p.write_bytes(b"a" * 100 + b"secret" * 1000 + b"b" * 100)
    spool_mod.erase_spans(str(p), [(100, 6000)])
    assert p.read_bytes() == b"a" * 100 + bytes(6000) + b"b" * 100


def test_a_rolled_back_accept_does_not_count_as_a_reference(tmp_path: Path) -> None:
    s = Store(tmp_path)
    ok = AcceptJob(_msg(_raw(10, 1)), content=_raw(10, 1))
    dup = AcceptJob(_msg(_raw(10, 2), mid=ok.message.id), content=_raw(10, 2))  # same id: its INSERT fails
    results = s.run_batch([ok, dup])
    assert [r[0] for r in results] == [True, False]
    assert _live(tmp_path) == {spool_span(ok.spool)[0]: 1}
    s.close()


async def test_a_refused_message_leaves_no_bytes_in_its_segment(tmp_path: Path) -> None:
    """Through the writer: a job that fails alone in a committed batch gets an error (451 for its
    client) and its appended bytes are destroyed; the others' are intact."""
    st = AsyncStore(tmp_path)
    first_raw, dup_raw = _raw(3000, 1), b"Subject: x\r\n\r\n" + b"refused-content;" * 300
    first = _msg(first_raw)
    ref = await st.accept(first, content=first_raw)
    with pytest.raises(Exception, match="UNIQUE|constraint|failed"):
        await st.accept(_msg(dup_raw, mid=first.id), content=dup_raw)  # same id: its INSERT fails
    st.close()
    data = (tmp_path / spool_span(ref)[0]).read_bytes()
    assert b"refused-content" not in data
    assert read_spool_bytes(tmp_path, ref) == first_raw


def test_a_store_from_before_the_counts_gets_them(tmp_path: Path) -> None:
    s = Store(tmp_path)
    jobs = [AcceptJob(_msg(_raw(10, k)), content=_raw(10, k)) for k in range(3)]
    s.run_batch(jobs)
    s.conn.execute("DROP TABLE segments")  # as written by a version without the table
    s.close()
    s = Store(tmp_path)
    assert _live(tmp_path) == {spool_span(jobs[0].spool)[0]: 3}
    assert s.orphan_spool_files() == []  # nothing is taken for an orphan
    s.close()
