"""Group commit and the spool: every file and directory of a batch is fsync'd before its COMMIT,
directories once per batch, and a failed fsync leaves no row (so no 250) for anyone in the batch."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from dlpgate.store import DELAYED, NewMessage, Store, new_id, spool_shard, write_spool_file
from dlpgate.store import spool as spool_mod

RAW = b"From: a@example.jp\r\nTo: b@example.com\r\nSubject: x\r\n\r\nbody\r\n"


def _job(root: Path, mid: str):  # noqa: ANN202
    rel = write_spool_file(root, mid, RAW, sync=False)
    m = NewMessage(id=mid, sender="a@example.jp", recipients=("b@example.com",), spool=rel, size=len(RAW),
                   sha256=hashlib.sha256(RAW).hexdigest(), arrived=time.time(), state=DELAYED, due_at=time.time())

    def job(s: Store) -> None:
        s.sync_spool([rel])
        s.accept(m)
    return job


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_messages_arriving_together_share_a_spool_directory() -> None:
    ids = [new_id() for _ in range(50)]
    assert len({spool_shard(i) for i in ids}) <= 2  # within ~256 ms of each other
    assert all(len(spool_shard(i)) == 2 for i in ids)
    assert spool_shard("abc") == "bc"  # an id of another shape still gets a two-character shard
    t = int(time.time() * 1000)
    apart = [f"{t + k * 256:011x}{'0' * 8}" for k in range(256)]
    assert len({spool_shard(i) for i in apart}) == 256  # and the 256 directories are all used


def test_batch_fsyncs_every_file_and_each_directory_once(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    st = Store(tmp_path)
    base = int(time.time() * 1000)
    ids = [f"{base:011x}{k:08x}" for k in range(5)]  # same arrival window: one directory
    jobs = [_job(tmp_path, i) for i in ids]
    synced: list[str] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    results = st.run_batch(jobs)
    assert all(ok for ok, _ in results)
    files = [p for p in synced if p.endswith(".eml")]
    dirs = [p for p in synced if not p.endswith(".eml")]
    assert sorted(Path(p).name for p in files) == sorted(f"{i}.eml" for i in ids)
    assert dirs == [str(tmp_path / "spool" / spool_shard(ids[0]))]
    assert {m["id"] for m in st.list()} == set(ids)
    st.close()


def test_a_failed_fsync_rolls_back_the_whole_batch(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    st = Store(tmp_path)
    before = _open_fds()
    jobs = [_job(tmp_path, new_id()) for _ in range(3)]
    calls = 0
    real = os.fsync

    def flaky(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", flaky)
    with pytest.raises(OSError):
        st.run_batch(jobs)
    monkeypatch.undo()
    assert st.list() == []  # no row: nobody in the batch may be told 250
    assert _open_fds() <= before  # the fds kept for the fsync were closed
    assert not spool_mod._UNSYNCED
    # the next batch starts clean
    assert all(ok for ok, _ in st.run_batch([_job(tmp_path, new_id())]))
    assert len(st.list()) == 1
    st.close()


def test_sync_outside_a_batch_is_immediate(tmp_path: Path) -> None:
    st = Store(tmp_path)
    rel = write_spool_file(tmp_path, new_id(), RAW, sync=False)
    st.sync_spool([rel])
    assert not st._pending_files and not st._pending_dirs
    st.close()


async def test_group_commit_fsyncs_spool_files_before_taking_the_write_lock(tmp_path: Path,
                                                                             monkeypatch) -> None:  # noqa: ANN001
    """The deliverer shares the SQLite write lock: holding it through a batch's fsyncs starved it
    under load. The files named in `run(..., spool=...)` are fsync'd while the lock is free."""
    import sqlite3

    from dlpgate.store import AsyncStore

    st = AsyncStore(tmp_path)
    other = sqlite3.connect(tmp_path / "dlpgate.db", timeout=0, isolation_level=None, check_same_thread=False)
    lock_free_during_fsync: list[bool] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".eml"):
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                lock_free_during_fsync.append(True)
            except sqlite3.OperationalError:
                lock_free_during_fsync.append(False)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    mid = new_id()
    rel = write_spool_file(tmp_path, mid, RAW, sync=False)
    m = NewMessage(id=mid, sender="a@example.jp", recipients=("b@example.com",), spool=rel, size=len(RAW),
                   sha256=hashlib.sha256(RAW).hexdigest(), arrived=time.time(), state=DELAYED, due_at=time.time())

    await st.run(lambda s: s.accept(m), spool=(rel,))
    monkeypatch.undo()
    assert lock_free_during_fsync == [True]
    assert [x["id"] for x in Store(tmp_path).list()] == [mid]
    other.close()
    st.close()


async def test_a_job_that_joins_once_the_lock_is_held_still_gets_its_spool_fsynced(tmp_path: Path,
                                                                                   monkeypatch) -> None:  # noqa: ANN001
    """While the writer waits for the lock, new jobs queue; they join the batch after the lock
    is taken, past the early fsync, and their spool files must still be durable before COMMIT."""
    import asyncio
    import sqlite3

    from dlpgate.store import AsyncStore

    st = AsyncStore(tmp_path)
    holder = sqlite3.connect(tmp_path / "dlpgate.db", isolation_level=None, check_same_thread=False)
    synced: list[str] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))

    def message() -> tuple[NewMessage, str]:
        mid = new_id()
        rel = write_spool_file(tmp_path, mid, RAW, sync=False)
        return NewMessage(id=mid, sender="a@example.jp", recipients=("b@example.com",), spool=rel, size=len(RAW),
                          sha256=hashlib.sha256(RAW).hexdigest(), arrived=time.time(), state=DELAYED,
                          due_at=time.time()), rel

    (m1, rel1), (m2, rel2) = message(), message()
    holder.execute("BEGIN IMMEDIATE")  # the other writer (the deliverer) has the lock
    first = asyncio.ensure_future(st.run(lambda s: s.accept(m1), spool=(rel1,)))
    await asyncio.sleep(0.2)  # the writer fsync'd rel1 and now waits for the lock
    assert any(p.endswith(f"{m1.id}.eml") for p in synced)
    second = asyncio.ensure_future(st.run(lambda s: s.accept(m2), spool=(rel2,)))
    await asyncio.sleep(0.05)
    holder.execute("ROLLBACK")
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    monkeypatch.undo()
    assert any(p.endswith(f"{m2.id}.eml") for p in synced)
    assert {x["id"] for x in Store(tmp_path).list()} == {m1.id, m2.id}
    holder.close()
    st.close()


def test_settings_tests_patch_live_only_in_the_module_that_reads_them() -> None:
    """The store is a package: a monkeypatch of `dlpgate.store.SEGMENT_MAX_BYTES` would change a copy
    nobody reads. Such names are kept off the package, so a patch aimed there raises instead."""
    import dlpgate.store as pkg
    from dlpgate.store import sqlite as sqlite_mod

    for name in ("SEGMENT_MAX_BYTES", "SEGMENT_MAX_AGE", "_fallocate", "_sync_file_range", "_UNSYNCED"):
        assert hasattr(spool_mod, name) and not hasattr(pkg, name), name
    assert hasattr(sqlite_mod, "_MAX_VARIABLES") and not hasattr(pkg, "_MAX_VARIABLES")
    with pytest.raises(AttributeError):
        pytest.MonkeyPatch().setattr(pkg, "SEGMENT_MAX_BYTES", 1)
