"""A process pool driven straight from the event loop.

Each worker process sits on its own pipe; the loop writes a request and watches the pipe with
`add_reader`, so a judgement costs no helper-thread hand-offs (concurrent.futures' pool adds a
feeder and a manager thread per call, which under load cost more than the judging itself). A
worker that overruns its budget or dies is killed and replaced alone; the others keep working.

Calls that queue while every worker is busy go to the next free worker together (up to
MAX_BATCH, only calls marked `batchable`: small messages): one pipe message each way and one
wake-up for all of them, and the worker judges them with its caches warm. Under the benchmark's
load three calls in four found every worker busy. A batch that overruns BATCH_SECONDS or kills its
worker is not charged to its members: each is tried again alone, with its own full budget, so only
the message that is really at fault fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from .prctl import set_process_name


class WorkerCrashed(Exception):
    """The worker process died while handling a request."""


class WorkerInitError(Exception):
    """The worker could not initialise (e.g. the rules do not compile)."""


def _worker_main(conn: Connection, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
    set_process_name("dlpgate-worker")
    try:
        initializer(*initargs)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which refuses to start
        conn.send(("init-error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as e:  # noqa: BLE001 - a request that does not unpickle
            conn.send([("exc", f"{type(e).__name__}: {e}")])
            continue
        if req is None:
            return
        results = []
        for fn, args in req:  # a batch: one or more calls, answered together, in order
            try:
                results.append(("ok", fn(*args)))
            except Exception as e:  # noqa: BLE001
                results.append(("exc", f"{type(e).__name__}: {e}"))
        conn.send(results)


MAX_BATCH = 8
BATCH_SECONDS = 5.0  # a batch of small messages taking longer has one at fault: each goes again alone


@dataclass(eq=False)
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    fut: asyncio.Future[Any]
    timeout: float
    batchable: bool


@dataclass(eq=False)
class _Slot:
    proc: BaseProcess
    conn: Connection
    fut: asyncio.Future[Any] | None = None  # the start-up handshake
    batch: list[_Call] | None = None  # the calls it is working on
    timer: asyncio.TimerHandle | None = None


class WorkerPool:
    def __init__(self, size: int, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
        self.size = size
        self.initializer = initializer
        self.initargs = initargs
        self.ctx = multiprocessing.get_context("forkserver")
        self._idle: deque[_Slot] = deque()
        self._waiting: deque[_Call] = deque()
        self._slots: set[_Slot] = set()
        self._closing = False
        self.busy = 0  # workers working

    # ---------------------------------------------------------------- lifecycle
    def _spawn(self) -> _Slot:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=_worker_main, args=(child, self.initializer, self.initargs), daemon=True)
        proc.start()
        child.close()
        slot = _Slot(proc, parent)
        self._slots.add(slot)
        return slot

    async def _await_ready(self, slot: _Slot, timeout: float = 120.0) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        slot.fut = fut
        # watched for the worker's whole life: one epoll registration, not two syscalls per call
        loop.add_reader(slot.conn.fileno(), self._readable, slot)
        try:
            kind, val = await asyncio.wait_for(fut, timeout)
        except (TimeoutError, WorkerCrashed) as e:
            self._kill(slot)
            raise WorkerInitError(f"worker did not start: {e or 'timeout'}") from None
        if kind != "ready":
            self._kill(slot)
            raise WorkerInitError(str(val))

    async def start(self) -> None:
        slots = [self._spawn() for _ in range(self.size)]
        try:
            await asyncio.gather(*(self._await_ready(s) for s in slots))
        except BaseException:
            await self.close()
            raise
        for s in slots:
            self._idle.append(s)
        self._dispatch()

    async def _replace(self, slot: _Slot) -> None:
        self._kill(slot)
        if self._closing:
            return
        new = self._spawn()
        try:
            await self._await_ready(new)
        except WorkerInitError:
            return  # the pool shrinks rather than loop on a broken initialiser
        self._idle.append(new)
        self._dispatch()

    def _kill(self, slot: _Slot) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(slot.conn.fileno())
        with contextlib.suppress(Exception):
            slot.proc.kill()
        with contextlib.suppress(Exception):
            slot.proc.join(timeout=5)
        with contextlib.suppress(Exception):
            slot.conn.close()
        self._slots.discard(slot)

    async def close(self) -> None:
        """Stop taking calls; those already taken finish (bounded), then the workers exit."""
        self._closing = True
        for _ in range(200):  # calls waiting or in flight: bounded wait while they are served
            if not self._waiting and not any(s.batch for s in self._slots):
                break
            await asyncio.sleep(0.05)
        while self._waiting:
            c = self._waiting.popleft()
            if not c.fut.done():
                c.fut.set_exception(WorkerCrashed("pool is closing"))
        while self._idle:
            s = self._idle.popleft()
            with contextlib.suppress(Exception):
                s.conn.send(None)
            await asyncio.get_running_loop().run_in_executor(None, s.proc.join, 5)
            self._kill(s)
        for s in list(self._slots):
            self._fail(s, WorkerCrashed("pool is closing"))
            self._kill(s)

    # ---------------------------------------------------------------- calls
    def _readable(self, slot: _Slot) -> None:
        try:
            msg = slot.conn.recv()
        except (EOFError, OSError):
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(slot.conn.fileno())
            fut, slot.fut = slot.fut, None
            if fut is not None and not fut.done():  # still starting up
                fut.set_exception(WorkerCrashed("worker process died"))
            if slot.batch is not None:
                self._lost(slot, WorkerCrashed("worker process died"))
            return
        if slot.batch is None:  # the start-up handshake
            fut, slot.fut = slot.fut, None
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        batch, slot.batch = slot.batch, None
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        self.busy -= 1
        for i, c in enumerate(batch):
            if not c.fut.done():  # a request that did not unpickle is answered once for all
                c.fut.set_result(msg[i] if i < len(msg) else msg[0])
        self._idle.append(slot)
        self._dispatch()

    def _dispatch(self) -> None:
        """Give waiting calls to idle workers: the oldest first, with the batchable ones behind it."""
        while self._idle and self._waiting:
            first = self._waiting.popleft()
            if first.fut.done():  # its caller went away
                continue
            batch = [first]
            while (first.batchable and len(batch) < MAX_BATCH and self._waiting
                   and self._waiting[0].batchable):
                c = self._waiting.popleft()
                if not c.fut.done():
                    batch.append(c)
            slot = self._idle.popleft()
            slot.batch = batch
            self.busy += 1
            budget = batch[0].timeout if len(batch) == 1 else min(BATCH_SECONDS, *(c.timeout for c in batch))
            # a timer, not wait_for: wait_for wraps every call in another future with its own
            # callbacks, a measurable share of a small message's hand-off
            slot.timer = asyncio.get_running_loop().call_later(budget, self._overrun, slot)
            try:
                slot.conn.send([(c.fn, c.args) for c in batch])
            except OSError as e:
                self._lost(slot, WorkerCrashed(str(e)))

    def _overrun(self, slot: _Slot) -> None:
        if slot.batch is not None:
            self._lost(slot, TimeoutError("worker did not answer in time"))

    def _lost(self, slot: _Slot, error: Exception) -> None:
        """The worker overran or died: replace it. A lone call fails with `error`; the members of
        a batch go back to the front of the queue, each to be tried alone."""
        batch, slot.batch = slot.batch or [], None
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        self.busy -= 1
        if len(batch) == 1:
            if not batch[0].fut.done():
                batch[0].fut.set_exception(error)
        else:
            for c in reversed(batch):
                c.batchable = False
                self._waiting.appendleft(c)
        asyncio.ensure_future(self._replace(slot))
        self._dispatch()

    def _fail(self, slot: _Slot, error: Exception) -> None:
        for c in slot.batch or []:
            if not c.fut.done():
                c.fut.set_exception(error)
        slot.batch = None

    async def call(self, fn: Callable[..., Any], *args: Any, timeout: float, batchable: bool = False) -> Any:
        """Run fn(*args) in a worker. TimeoutError or WorkerCrashed: that worker is replaced.

        `batchable`: the call is quick (a small message) and may share a worker's turn with other
        such calls that queued meanwhile."""
        if self._closing:
            raise WorkerCrashed("pool is closing")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Call(fn, args, fut, timeout, batchable))
        self._dispatch()
        try:
            kind, val = await fut
        except asyncio.CancelledError:
            fut.cancel()  # a batch it was in finishes for the others; its answer is dropped
            raise
        if kind == "exc":
            raise RuntimeError(val)
        return val
