"""A process pool driven straight from the event loop.

Each worker process sits on its own pipe; the loop writes a request and watches the pipe with
`add_reader`, so a judgement costs no helper-thread hand-offs (concurrent.futures' pool adds a
feeder and a manager thread per call, which under load cost more than the judging itself). A
worker that overruns its budget or dies is killed and replaced alone; the others keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, field
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
            conn.send(("exc", f"{type(e).__name__}: {e}"))
            continue
        if req is None:
            return
        fn, args = req
        try:
            res = ("ok", fn(*args))
        except Exception as e:  # noqa: BLE001
            res = ("exc", f"{type(e).__name__}: {e}")
        conn.send(res)


@dataclass(eq=False)
class _Slot:
    proc: BaseProcess
    conn: Connection
    fut: asyncio.Future[Any] | None = None
    dead: bool = False
    ready: asyncio.Future[None] | None = field(default=None)


class WorkerPool:
    def __init__(self, size: int, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
        self.size = size
        self.initializer = initializer
        self.initargs = initargs
        self.ctx = multiprocessing.get_context("forkserver")
        self._idle: asyncio.Queue[_Slot] = asyncio.Queue()
        self._slots: set[_Slot] = set()
        self._closing = False
        self.busy = 0

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
            self._idle.put_nowait(s)

    async def _replace(self, slot: _Slot) -> None:
        self._kill(slot)
        if self._closing:
            return
        new = self._spawn()
        try:
            await self._await_ready(new)
        except WorkerInitError:
            return  # the pool shrinks rather than loop on a broken initialiser
        self._idle.put_nowait(new)

    def _kill(self, slot: _Slot) -> None:
        slot.dead = True
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
        """Stop taking work; idle workers exit now, busy ones after their current request."""
        self._closing = True
        while not self._idle.empty():
            s = self._idle.get_nowait()
            with contextlib.suppress(Exception):
                s.conn.send(None)
            await asyncio.get_running_loop().run_in_executor(None, s.proc.join, 5)
            self._kill(s)
        if not self._slots:
            return
        for _ in range(200):  # busy ones: bounded wait; others (starting up) go at once
            for s in [s for s in self._slots if s.fut is None or s.fut.done()]:
                self._kill(s)
            if not self._slots:
                return
            await asyncio.sleep(0.05)
        for s in list(self._slots):
            self._kill(s)

    # ---------------------------------------------------------------- calls
    def _readable(self, slot: _Slot) -> None:
        fut, slot.fut = slot.fut, None
        try:
            msg = slot.conn.recv()
        except (EOFError, OSError):
            slot.dead = True
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(slot.conn.fileno())
            if fut is not None and not fut.done():
                fut.set_exception(WorkerCrashed("worker process died"))
            return
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def call(self, fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """Run fn(*args) in a worker. TimeoutError or WorkerCrashed: that worker is replaced."""
        if self._closing:
            raise WorkerCrashed("pool is closing")
        slot = await self._idle.get()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        slot.fut = fut
        self.busy += 1
        # a timer that fails the future, not wait_for: wait_for wraps every call in another
        # future with its own callbacks, a measurable share of a small message's hand-off
        timer = loop.call_later(timeout, _expire, fut)
        try:
            slot.conn.send((fn, args))
            kind, val = await fut
        except (TimeoutError, WorkerCrashed, OSError, asyncio.CancelledError) as e:
            slot.dead = True
            asyncio.ensure_future(self._replace(slot))
            if isinstance(e, OSError) and not isinstance(e, TimeoutError):  # TimeoutError is an OSError
                raise WorkerCrashed(str(e)) from None
            raise
        finally:
            timer.cancel()
            self.busy -= 1
        if self._closing:
            with contextlib.suppress(Exception):
                slot.conn.send(None)
            self._kill(slot)
        else:
            self._idle.put_nowait(slot)
        if kind == "exc":
            raise RuntimeError(val)
        return val


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("worker did not answer in time"))
