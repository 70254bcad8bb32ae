"""The worker pool: a stuck or dying worker is replaced alone; the gateway fails closed on it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from dlpgate import workers as workers_mod
from dlpgate.pipeline import Envelope
from dlpgate.server import Gateway
from dlpgate.workers import WorkerCrashed, WorkerInitError, WorkerPool


def _noop() -> None:
    pass


@contextlib.asynccontextmanager
async def started_pool(size: int, initializer: Callable[..., None], initargs: tuple) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(size, initializer, initargs)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


def _bad_init() -> None:
    raise ValueError("rules/policy.toml: rule[1].when.min_severty: unknown key")


def pid() -> int:
    return os.getpid()


def sleepy(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def wait_for_file(path: str, limit: float = 60.0) -> int:
    """Hold the worker until `path` exists (the test says when), bounded."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def die() -> None:
    os._exit(3)


def boom() -> None:
    raise KeyError("x")


async def test_timeout_replaces_only_that_worker() -> None:
    async with started_pool(2, _noop, ()) as pool:
        with pytest.raises(TimeoutError):
            await pool.call(sleepy, 30, timeout=0.5)
        pids = {await pool.call(pid, timeout=10) for _ in range(6)}
        assert len(pids) >= 1
        assert await pool.call(sleepy, 0, timeout=10) in pids | {await pool.call(pid, timeout=10)}


async def test_crash_is_reported_and_pool_recovers() -> None:
    async with started_pool(1, _noop, ()) as pool:
        first = await pool.call(pid, timeout=10)
        with pytest.raises(WorkerCrashed):
            await pool.call(die, timeout=10)
        second = await pool.call(pid, timeout=30)
        assert second != first
        with pytest.raises(RuntimeError, match="KeyError"):
            await pool.call(boom, timeout=10)
        assert await pool.call(pid, timeout=10) == second  # an exception does not cost the worker


async def _busy_then_queue(pool: WorkerPool, calls: list[tuple]) -> tuple[list[asyncio.Future], int]:
    """Occupy the only worker, queue `calls` (fn, args, timeout, batchable) behind it, free it:
    the size of the batch the freed worker was given.

    Read from what was framed for the worker's pipe, not from the slot after the blocker returns:
    on a loaded machine the batch may already be answered (and the next call sent) by then."""
    sent: list[int] = []
    real_frame = workers_mod.frame

    def counting_frame(obj: object) -> bytes:
        if isinstance(obj, list):
            sent.append(len(obj))
        return real_frame(obj)

    workers_mod.frame = counting_frame  # type: ignore[assignment]
    try:
        gate = Path(tempfile.mkdtemp()) / "go"
        blocker = asyncio.ensure_future(pool.call(wait_for_file, str(gate), timeout=60))
        futs = [asyncio.ensure_future(pool.call(fn, *args, timeout=timeout, batchable=b))
                for fn, args, timeout, b in calls]
        for _ in range(600):  # every call queued behind the blocker (bounded: 30 s)
            if len(pool._waiting) == len(calls):  # noqa: SLF001
                break
            await asyncio.sleep(0.05)
        assert len(pool._waiting) == len(calls)  # noqa: SLF001 - all queued behind the blocker
        gate.touch()  # the worker is free only now, whatever the machine's load
        await blocker
        gate.unlink()
        gate.parent.rmdir()
        await asyncio.gather(*futs, return_exceptions=True)
    finally:
        workers_mod.frame = real_frame  # type: ignore[assignment]
    assert sent[0] == 1  # the blocker went alone
    return futs, sent[1]


async def test_queued_small_calls_share_the_next_free_worker() -> None:
    async with started_pool(1, _noop, ()) as pool:
        futs, first_batch = await _busy_then_queue(pool, [(pid, (), 10, True)] * 5 + [(pid, (), 10, False)])
        assert first_batch == 5  # the five batchable ones together; the last one goes alone after
        results = await asyncio.gather(*futs)
        assert len(set(results)) == 1  # one worker served them all, none was lost or replaced


async def test_a_batch_member_that_kills_the_worker_fails_alone() -> None:
    async with started_pool(1, _noop, ()) as pool:
        futs, size = await _busy_then_queue(pool, [(pid, (), 10, True), (die, (), 10, True), (pid, (), 10, True)])
        assert size == 3
        first, crashed, third = await asyncio.gather(*futs, return_exceptions=True)
        assert isinstance(crashed, WorkerCrashed)  # tried again alone, it kills its worker again
        assert isinstance(first, int) and isinstance(third, int)  # the others were answered, each alone


async def test_a_batch_member_that_hangs_times_out_alone_with_its_own_budget(monkeypatch) -> None:  # noqa: ANN001
    import dlpgate.workers as workers

    monkeypatch.setattr(workers, "BATCH_SECONDS", 0.5)
    async with started_pool(1, _noop, ()) as pool:
        t0 = time.monotonic()
        futs, size = await _busy_then_queue(pool, [(pid, (), 10, True), (sleepy, (30,), 1.5, True),
                                                   (boom, (), 10, True)])
        assert size == 3
        ok, hung, raised = await asyncio.gather(*futs, return_exceptions=True)
        assert isinstance(ok, int)
        assert isinstance(hung, TimeoutError)
        assert isinstance(raised, RuntimeError) and "KeyError" in str(raised)  # its own answer, not the batch's
        assert time.monotonic() - t0 < 0.4 + 0.5 + 1.5 + 5  # the batch's short budget, then its own


async def test_a_cancelled_call_does_not_cost_the_others() -> None:
    async with started_pool(1, _noop, ()) as pool:
        blocker = asyncio.ensure_future(pool.call(sleepy, 0.3, timeout=10))
        await asyncio.sleep(0.05)
        a = asyncio.ensure_future(pool.call(pid, timeout=10, batchable=True))
        b = asyncio.ensure_future(pool.call(pid, timeout=10, batchable=True))
        await asyncio.sleep(0.05)
        a.cancel()
        assert isinstance(await b, int) and isinstance(await blocker, int)
        assert a.cancelled()
        assert await pool.call(pid, timeout=10) == await b  # the same worker, still serving


async def test_init_error_names_the_problem() -> None:
    pool = WorkerPool(1, _bad_init, ())
    with pytest.raises(WorkerInitError, match="min_severty"):
        await pool.start()


@pytest.mark.parametrize("exc", [TimeoutError(), WorkerCrashed("died"), RuntimeError("KeyError: x")])
async def test_pipeline_fails_closed(gateway: Gateway, tmp_path: Path, exc: Exception) -> None:
    assert gateway.pipeline is not None and gateway.pipeline._pool is not None

    async def broken(*a: object, **k: object) -> object:
        raise exc

    gateway.pipeline._pool.call = broken  # type: ignore[method-assign]
    spool = tmp_path / "m.eml"
    spool.write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    j = await gateway.pipeline.judge(spool, Envelope("a@example.jp", ("b@example.com",)))
    assert j.verdict == "hold" and j.findings[0]["detector"] == "unscannable"


def hog(mb: int) -> int:
    block = bytearray(mb * 1024 * 1024)
    return len(block)


async def test_worker_memory_is_capped() -> None:
    from dataclasses import asdict

    from dlpgate.config import Config, ExtractConfig
    from dlpgate.pipeline import _init_worker

    cfg = Config(extract=ExtractConfig(worker_memory_mb=1024))
    async with started_pool(1, _init_worker, (str(cfg.rules_path), (), asdict(cfg.extract))) as pool:
        with pytest.raises(RuntimeError, match="MemoryError"):
            await pool.call(hog, 4096, timeout=30)
        assert await pool.call(hog, 16, timeout=30) == 16 * 1024 * 1024  # the worker lives on
