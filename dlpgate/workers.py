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

The parent's end of each pipe is non-blocking under both loops (uvloop's `add_reader` makes it so
anyway): a request or reply bigger than the socket buffer must never meet EAGAIN half-way, which
`Connection.send`/`recv` turn into a dead worker. So the parent frames messages itself, in the
same format `Connection` uses (the worker keeps its blocking `Connection`): writes go out as far
as the socket takes them and the rest when the loop says it is writable; reads gather bytes until
a whole frame is in.

Closing a pool (shutdown, a rules reload) takes no new calls and waits for those taken: each is
bounded by its own budget (its timer kills an overrunning worker), so there is no second, shorter
deadline that could cut a judgement short.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any

from .errors import DlpgateError
from .prctl import set_process_name


class WorkerCrashed(Exception):
    """The worker process died while handling a request."""


class WorkerInitError(DlpgateError):
    """The worker could not initialise (the rules do not compile, a judging module is missing):
    `serve` refuses to start with this one line."""


def frame(obj: Any) -> bytes:
    """`obj` as one message in `multiprocessing.connection.Connection`'s wire format."""
    data = bytes(ForkingPickler.dumps(obj))
    n = len(data)
    header = struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!i", -1) + struct.pack("!Q", n)
    return header + data


class FrameReader:
    """Whole messages out of the bytes read so far (the `Connection` wire format)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = struct.unpack_from("!i", self.buf)
            start = 4
            if n == -1:
                if len(self.buf) < 12:
                    break
                (n,) = struct.unpack_from("!Q", self.buf, 4)
                start = 12
            if len(self.buf) < start + n:
                break
            out.append(pickle.loads(self.buf[start:start + n]))
            del self.buf[:start + n]
        return out


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
    reader: FrameReader = field(default_factory=FrameReader)
    out: bytearray = field(default_factory=bytearray)  # request bytes the socket has not taken yet
    dead: bool = False


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
        self.broken = ""  # why a replacement worker could not start ("" while all is well)

    # ---------------------------------------------------------------- lifecycle
    def _spawn(self) -> _Slot:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(target=_worker_main, args=(child, self.initializer, self.initargs), daemon=True)
        proc.start()
        child.close()
        os.set_blocking(parent.fileno(), False)  # as uvloop leaves it; the same under both loops
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
        except WorkerInitError as e:
            # the pool shrinks rather than loop on a broken initialiser; with no worker left,
            # calls fail at once (the SMTP side answers 451) instead of waiting for nobody
            self.broken = str(e)
            if not self._slots:
                self._fail_waiting(WorkerInitError(f"no judging worker can start: {e}"))
            return
        self._idle.append(new)
        self._dispatch()

    def _kill(self, slot: _Slot) -> None:
        slot.dead = True
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(slot.conn.fileno())
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_writer(slot.conn.fileno())
        with contextlib.suppress(Exception):
            slot.proc.kill()
        with contextlib.suppress(Exception):
            slot.proc.join(timeout=5)
        with contextlib.suppress(Exception):
            slot.conn.close()
        self._slots.discard(slot)

    async def close(self) -> None:
        """Stop taking calls; those already taken finish, each within its own budget (an
        overrunning worker is killed by its timer), then the workers exit."""
        self._closing = True
        while self._waiting or any(sl.batch for sl in self._slots):
            if not self._slots:  # nobody left to serve what waits
                break
            await asyncio.sleep(0.05)
        self._fail_waiting(WorkerCrashed("pool is closing"))
        while self._idle:
            sl = self._idle.popleft()
            with contextlib.suppress(Exception):
                self._write(sl, frame(None))
            await asyncio.get_running_loop().run_in_executor(None, sl.proc.join, 5)
            self._kill(sl)
        for sl in list(self._slots):
            self._fail(sl, WorkerCrashed("pool is closing"))
            self._kill(sl)

    def _fail_waiting(self, error: Exception) -> None:
        while self._waiting:
            c = self._waiting.popleft()
            if not c.fut.done():
                c.fut.set_exception(error)

    # ---------------------------------------------------------------- calls
    def _readable(self, slot: _Slot) -> None:
        """Read what the socket holds; act on every whole message in it."""
        msgs: list[Any] = []
        gone = False
        fd = slot.conn.fileno()
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:
                gone = True
                break
            if not chunk:
                gone = True
                break
            try:
                msgs += slot.reader.feed(chunk)
            except Exception:  # noqa: BLE001 - a garbled reply: treat the worker as lost
                gone = True
                break
        for msg in msgs:
            if slot.dead:
                return
            self._message(slot, msg)
        if gone and not slot.dead:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            fut, slot.fut = slot.fut, None
            if fut is not None and not fut.done():  # still starting up
                fut.set_exception(WorkerCrashed("worker process died"))
            if slot.batch is not None:
                self._lost(slot, WorkerCrashed("worker process died"))
            elif slot in self._idle:  # died idle: replace it now, not when a call finds it dead
                self._idle.remove(slot)
                asyncio.ensure_future(self._replace(slot))

    def _message(self, slot: _Slot, msg: Any) -> None:
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

    def _write(self, slot: _Slot, data: bytes) -> None:
        """Send `data` after anything still pending; the rest goes when the socket drains."""
        if slot.out:
            slot.out += data
            return
        fd = slot.conn.fileno()
        sent = 0
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            slot.out += data[sent:]
            asyncio.get_running_loop().add_writer(fd, self._writable, slot)

    def _writable(self, slot: _Slot) -> None:
        fd = slot.conn.fileno()
        try:
            sent = os.write(fd, slot.out)
        except BlockingIOError:
            return
        except OSError as e:
            slot.out.clear()
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_writer(fd)
            if slot.batch is not None:
                self._lost(slot, WorkerCrashed(str(e)))
            return
        del slot.out[:sent]
        if not slot.out:
            asyncio.get_running_loop().remove_writer(fd)

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
                self._write(slot, frame([(c.fn, c.args) for c in batch]))
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
        if not self._slots and self.broken:
            raise WorkerInitError(f"no judging worker can start: {self.broken}")
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
