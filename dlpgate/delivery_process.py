"""Delivery in a process of its own.

Accepting (aiosmtpd, judging hand-offs, the group commit) and delivering (the scheduler and the
aiosmtplib connections) each keep a Python event loop busy; in one process they shared one core
and one GIL, and accept latency paid for every delivery. Here the delivery loop runs in a child
process with its own store connection (SQLite's locking serialises the two writers), and the
gateway talks to it over a pipe: pokes in, metrics and liveness out.

Only one deliverer may ever work on a store: the child holds an exclusive lock file for its whole
life, and the gateway takes the same lock before it recovers `delivering` rows at start-up. A
deliverer left over from a killed gateway therefore finishes (or is stopped) before its messages
are handed back to the queue, so nothing is delivered twice by our own choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from . import eventloop, metrics
from .config import Config
from .prctl import die_with_parent, set_process_name

log = logging.getLogger("dlpgate.delivery")

LOCK_NAME = "delivery.lock"
FLUSH_EVERY = 0.2  # seconds between metric reports from the child


def lock_path(config: Config) -> Path:
    return config.store_path / LOCK_NAME


def acquire_lock(path: Path, timeout: float, *, evict: bool = False) -> int:
    """Exclusive flock on `path` (blocking up to timeout); returns the fd to keep open.

    With `evict`, a holder still there after the timeout (a deliverer orphaned by a killed
    gateway and stuck, e.g. on a full log pipe) is killed by the pid it wrote, then waited for:
    its in-flight messages are recovered and delivered at least once, never lost.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    evicted = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                if evict and not evicted:
                    _evict(path)
                    evicted, deadline = True, time.monotonic() + 10
                    continue
                os.close(fd)
                raise TimeoutError(f"another deliverer still holds {path}") from None
            time.sleep(0.05)


def _evict(path: Path) -> None:
    try:
        pid = int(path.read_text().strip() or "0")
    except (OSError, ValueError):
        return
    if pid > 1 and pid != os.getpid():
        log.error("killing deliverer %d that still holds %s", pid, path, extra={"event": "deliverer_evicted"})
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------ child side
def _child_main(config: Config, hostname: str, conn: Connection) -> None:
    die_with_parent()  # SIGTERM when the gateway dies, even by SIGKILL (EOF on the pipe is the backstop)
    set_process_name("dlpgate-deliver")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when we stop
    from . import logs

    logs.setup(config.log.format, config.log.level)
    try:
        lock_fd = acquire_lock(lock_path(config), timeout=60)
    except TimeoutError as e:
        conn.send(("error", str(e)))
        return
    try:
        eventloop.run(_child(config, hostname, conn))
    finally:
        os.close(lock_fd)


async def _child(config: Config, hostname: str, conn: Connection) -> None:
    from .auditkey import signer_for
    from .delivery import Delivery
    from .store.engine import open_async_store

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    grace = [10.0]
    pending: dict[str, float] = {}
    latencies: list[float] = []

    def on_result(result: str, latency: float | None) -> None:
        pending[result] = pending.get(result, 0.0) + 1
        if latency is not None:
            latencies.append(latency)

    store = open_async_store(config, signer=signer_for(config))  # its audit entries are signed too
    delivery = Delivery(config, store, hostname, on_result=on_result)

    def on_ctl() -> None:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the gateway is gone
            loop.remove_reader(conn.fileno())
            stop.set()
            return
        if msg[0] == "poke":
            delivery.poke(msg[1])
        elif msg[0] == "stop":
            grace[0] = float(msg[1])
            stop.set()

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(conn.fileno(), on_ctl)
    await delivery.start()
    conn.send(("ready", os.getpid()))

    async def report() -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            if pending or latencies:
                counts, lats = dict(pending), list(latencies)
                pending.clear()
                latencies.clear()
            else:
                counts, lats = {}, []
            with contextlib.suppress(OSError):
                conn.send(("report", counts, lats, delivery.alive, delivery.upstream_ok, delivery.upstream_reason,
                                   delivery.upstream_at))

    reporter = asyncio.create_task(report())
    await stop.wait()
    await delivery.stop(timeout=grace[0])
    reporter.cancel()
    with contextlib.suppress(OSError):
        conn.send(("report", dict(pending), list(latencies), False, delivery.upstream_ok, delivery.upstream_reason,
                   delivery.upstream_at))
        conn.send(("stopped",))
    store.close()


# ------------------------------------------------------------------------------ gateway side
class DeliveryProcess:
    """What the gateway holds instead of a Delivery: start / stop / poke / alive."""

    def __init__(self, config: Config, hostname: str) -> None:
        self.config = config
        self.hostname = hostname
        self.ctx = multiprocessing.get_context("forkserver")
        self.proc: Any = None
        self.conn: Connection | None = None
        self._ready: asyncio.Future[Any] | None = None
        self._child_alive = False
        self._last_report = 0.0
        self._stopping = False
        self._poke_at: float | None = None
        self._watch: asyncio.Task[None] | None = None
        self.upstream_ok: bool | None = None  # as the child last saw it (None: no attempt yet)
        self.upstream_reason = ""
        self.upstream_at = 0.0

    @property
    def alive(self) -> bool:
        return (self.proc is not None and self.proc.is_alive() and self._child_alive
                and time.monotonic() - self._last_report < 10 * FLUSH_EVERY + 5)

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.create_task(self._supervise(), name="delivery-supervisor")

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        parent, child = self.ctx.Pipe(duplex=True)
        self.proc = self.ctx.Process(target=_child_main, args=(self.config, self.hostname, child),
                                     name="dlpgate-delivery", daemon=False)
        self.proc.start()
        child.close()
        self.conn = parent
        self._ready = loop.create_future()
        loop.add_reader(parent.fileno(), self._on_msg, parent)
        try:
            await asyncio.wait_for(self._ready, timeout=90)
        except TimeoutError:
            self.proc.kill()
            raise RuntimeError("the delivery process did not start") from None
        self._child_alive = True
        self._last_report = time.monotonic()

    def _on_msg(self, conn: Connection) -> None:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            self._child_alive = False
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(RuntimeError("the delivery process exited"))
            return
        kind = msg[0]
        if kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(msg[1])
        elif kind == "report":
            _, counts, lats, alive, self.upstream_ok, self.upstream_reason, self.upstream_at = msg
            for result, n in counts.items():
                metrics.DELIVERIES.labels(result=result).inc(n)
            for x in lats:
                metrics.DELIVERY_LATENCY.observe(x)
            self._child_alive = bool(alive) or self._stopping
            self._last_report = time.monotonic()
        elif kind == "error" and self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError(str(msg[1])))

    async def _supervise(self) -> None:
        """A deliverer that died unexpectedly is replaced (after its rows are handed back)."""
        while not self._stopping:
            await asyncio.sleep(1.0)
            if self._stopping or self.proc is None or self.proc.is_alive():
                continue
            log.error("delivery process exited (code %s); restarting it", self.proc.exitcode,
                      extra={"event": "delivery_restart"})
            await self._recover_and_respawn()

    async def _recover_and_respawn(self) -> None:
        from .auditkey import signer_for
        from .store.engine import open_store

        def recover() -> int:
            fd = acquire_lock(lock_path(self.config), timeout=15, evict=True)
            try:
                st = open_store(self.config, signer=signer_for(self.config))
                try:
                    return st.recover()
                finally:
                    st.close()
            finally:
                os.close(fd)

        try:
            await asyncio.get_running_loop().run_in_executor(None, recover)
            await self._spawn()
        except Exception:  # noqa: BLE001 - try again on the next supervision tick
            log.exception("delivery restart failed", extra={"event": "delivery_restart_failed"})

    def poke(self, due_at: float) -> None:
        """Coalesced: at most one message to the child per loop iteration."""
        if self._poke_at is None:
            self._poke_at = due_at
            asyncio.get_running_loop().call_soon(self._send_poke)
        else:
            self._poke_at = min(self._poke_at, due_at)

    def _send_poke(self) -> None:
        due, self._poke_at = self._poke_at, None
        if self.conn is not None and due is not None:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(("poke", due))

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        if self.proc is None:
            return
        if self.conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(("stop", timeout))
        await asyncio.get_running_loop().run_in_executor(None, self.proc.join, timeout + 10)
        if self.proc.is_alive():
            self.proc.kill()
            await asyncio.get_running_loop().run_in_executor(None, self.proc.join, 5)
        if self.conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.conn.close()
            self.conn = None
