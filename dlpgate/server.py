"""`dlpgate serve`: wires store, pipeline, SMTP listener, delivery, housekeeping and metrics.

Start-up order matters for "never lose": recover `delivering` rows and remove spool files that
were never acknowledged before the listener opens. Shutdown (SIGTERM) is the reverse: stop
accepting, let in-flight SMTP transactions and deliveries finish (bounded), then close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from typing import Any

from . import metrics
from .config import Config, load_config, parse_hostport
from .delivery import Delivery
from .delivery_process import DeliveryProcess, acquire_lock, lock_path
from .http import MetricsServer
from .pipeline import Pipeline
from .smtp import GatewaySMTP, Handler, tls_context
from .store import AsyncStore
from .store_engine import open_async_store

log = logging.getLogger("dlpgate.server")

HOUSEKEEPING_EVERY = 30.0


class Gateway:
    def __init__(self, config: Config, *, workers: int | None = None, delivery_process: bool = True) -> None:
        self.config = config
        self.hostname = config.smtp.hostname or socket.getfqdn() or "localhost"
        self.store: AsyncStore | None = None
        self.pipeline: Pipeline | None = None
        self.delivery: Delivery | DeliveryProcess | None = None
        self.handler: Handler | None = None
        self.server: asyncio.base_events.Server | None = None
        self.metrics_server: MetricsServer | None = None
        self.workers = workers
        self.delivery_process = delivery_process
        self.approvals: Any = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.last_housekeeping = 0.0
        self._decision_seq = 0  # audit entries already folded into dlpgate_decisions_total
        self._reload_task: asyncio.Future[bool] | None = None
        self.audit_key: Any = None
        self.witness: Any = None
        self.authority: Any = None
        self.control: Any = None
        self._last_witness = 0.0

    async def start(self) -> None:
        cfg = self.config
        if cfg.smtp.auth_users_file:  # a broken users file stops start-up naming the line, not locks all out
            from .auth import FileAuthenticator

            FileAuthenticator(cfg.smtp.auth_users_file).users()
        from .auditkey import AuditKey

        self.audit_key, created = AuditKey.load_or_create(cfg.audit_key_path)
        if created:
            log.info("created the audit signing key %s (public key %s.pub, fingerprint %s)", cfg.audit_key_path,
                     cfg.audit_key_path, self.audit_key.fingerprint, extra={"event": "audit_key_created"})
        sign = self.audit_key.sign
        self.store = await asyncio.get_running_loop().run_in_executor(
            None, lambda: open_async_store(cfg, lead=True, signer=sign))
        loop = asyncio.get_running_loop()
        # a deliverer left from a killed gateway must be gone before its rows go back to the queue
        lock_fd = await loop.run_in_executor(None, lambda: acquire_lock(lock_path(cfg), 15.0, evict=True))
        try:
            recovered = await self.store.run(lambda s: s.recover())
        finally:
            os.close(lock_fd)
        orphans = await self.store.run(lambda s: s.orphan_spool_files())
        for p in orphans:
            p.unlink(missing_ok=True)
        if recovered or orphans:
            log.info("recovered %d in-flight messages, removed %d unacknowledged spool files", recovered,
                     len(orphans), extra={"event": "recovery"})
        try:
            from .approvals import Notices
        except ImportError:  # pragma: no cover - approvals not built into this tree
            Notices = None  # type: ignore[assignment,misc]
        self.delivery = (DeliveryProcess(cfg, self.hostname) if self.delivery_process
                         else Delivery(cfg, self.store, self.hostname))
        notices = Notices(cfg, self.hostname) if Notices is not None else None
        self.approvals = notices
        self.pipeline = Pipeline(cfg, self.store, workers=self.workers, notices=notices,
                                 on_new_due=self.delivery.poke)
        await self.pipeline.start()
        await self.delivery.start()
        await self._start_control()
        self.handler = Handler(cfg, self.pipeline)
        host, port = parse_hostport(cfg.smtp.listen, "smtp.listen")
        tls = tls_context(cfg)
        handler = self.handler

        def factory() -> GatewaySMTP:
            kwargs: dict[str, Any] = dict(hostname=self.hostname, data_size_limit=cfg.smtp.max_message_bytes,
                                          enable_SMTPUTF8=True, decode_data=False, timeout=cfg.smtp.timeout,
                                          ident="dlpgate ESMTP")
            if tls is not None:
                kwargs.update(tls_context=tls, require_starttls=False)
            auth = _authenticator(cfg)
            if auth is not None:
                kwargs.update(authenticator=auth, auth_required=False, auth_require_tls=True)
            return GatewaySMTP(handler, **kwargs)

        self.server = await loop.create_server(factory, host=host, port=port, reuse_address=True)
        if cfg.metrics.listen:
            mh, mp = parse_hostport(cfg.metrics.listen, "metrics.listen")
            self.metrics_server = MetricsServer(mh, mp, self.healthy)
            await self.metrics_server.start()
        await self.housekeep_once()  # gauges and health are meaningful from the first scrape
        self._housekeeping = asyncio.create_task(self._housekeep(), name="housekeeping")
        metrics.UP.set(1)
        log.info("listening on %s", cfg.smtp.listen, extra={"event": "started"})

    async def _start_control(self) -> None:
        """The anchored audit chain (seal an old store, witness the head) and the control socket."""
        from . import audit
        from .control import Authority, ControlServer
        from .identities import Identities, log_binding_problems

        assert self.store is not None
        cfg = self.config
        with contextlib.suppress(OSError):  # only the gateway reads or writes its store
            os.chmod(cfg.store_path, 0o700)
        sealed = await self.store.run(audit.seal_legacy)
        self.witness = audit.Witness(self.audit_key, cfg.audit_witness_path)
        head = await self.store.run(lambda s: self.witness.write(s, force=True))
        if sealed:
            log.warning("sealed %d audit entries written before signing under the first witnessed head %s",
                        sealed, head, extra={"event": "audit_sealed", "entries": sealed})
        log_binding_problems(cfg)
        key, witness_path = self.audit_key, cfg.audit_witness_path
        self.authority = Authority(cfg, self.store, hostname=self.hostname, identities=Identities(cfg),
                                   on_decision=self._after_decision,
                                   verify=lambda s: audit.verify(s, key, witness_path))
        self.control = ControlServer(self.authority, cfg.control_socket, cfg.control.group)
        await self.control.start()
        sock_dir = cfg.control_socket.parent.resolve()
        if cfg.control.group and (sock_dir == cfg.store_path.resolve()):
            log.warning("control.socket %s is inside the store directory (0700): only the service account can"
                        " connect; set [control] socket outside it", cfg.control_socket,
                        extra={"event": "control_socket_private"})

    def _after_decision(self, msg_id: str) -> None:
        """A decision or recall: the deliverer hears at once, and the chain head is witnessed."""
        if self.delivery is not None:
            self.delivery.poke(time.time())
        if self.store is not None and self.witness is not None:
            w = self.witness
            task = asyncio.ensure_future(self.store.run(lambda s: w.write(s, force=True)))
            task.add_done_callback(_log_failure)

    @property
    def smtp_port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def healthy(self) -> bool:
        ok = (self.server is not None and self.server.is_serving() and self.delivery is not None
              and self.delivery.alive and self.store is not None and self.store._thread.is_alive()
              and time.time() - self.last_housekeeping < HOUSEKEEPING_EVERY * 3)
        if ok and self.store is not None:
            try:
                probe = self.store.root / ".healthz"
                probe.write_bytes(b"ok")
                probe.unlink()
            except OSError:
                ok = False
        metrics.UP.set(1 if ok else 0)
        return ok

    async def _housekeep(self) -> None:
        assert self.store is not None
        while True:
            try:
                await self.housekeep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("housekeeping failed", extra={"event": "housekeeping_error"})
            await asyncio.sleep(HOUSEKEEPING_EVERY)

    async def housekeep_once(self) -> None:
        """Expiry, reminders, retention, gauges. Safe to call any time (tests call it directly)."""
        assert self.store is not None
        cfg = self.config
        # expiry, reminders and retention: one gateway of those sharing a store at a time
        lead = self.store.is_leader()
        if self.approvals is not None and lead:
            expired, reminded = await self.approvals.housekeep(self.store, self.delivery)
            if expired and self.witness is not None:
                w = self.witness
                await self.store.run(lambda s: w.write(s, force=True))
            for mid in expired:
                log.info("held message expired", extra={"event": "expired", "msg_id": mid,
                                                        "action": cfg.quarantine.expire_action})
            if reminded:
                log.info("approvers reminded", extra={"event": "reminded", "count": len(reminded)})
        if lead:
            await self.store.run(lambda s: s.purge(cfg.store.retention_days * 86400,
                                                   cfg.store.sendlog_retention_days * 86400))
        counts = await self.store.run(lambda s: s.count_by_state())
        for st in ("delayed", "held", "deferred", "delivering", "released"):
            metrics.QUEUE.labels(state=st).set(counts.get(st, 0))
        seen = self._decision_seq
        new, top = await self.store.run(lambda s: s.decision_counts(seen))
        for k, n in new.items():
            metrics.DECISIONS.counts[k] = metrics.DECISIONS.counts.get(k, 0.0) + n
        self._decision_seq = top
        if self.witness is not None and time.time() - self._last_witness >= cfg.audit.witness_every:
            w = self.witness
            await self.store.run(lambda s: w.write(s))
            self._last_witness = time.time()
        oldest = await self.store.run(lambda s: s.oldest_held())
        metrics.OLDEST_HELD.set(0 if oldest is None else max(0.0, time.time() - oldest))
        self.last_housekeeping = time.time()

    def reload(self) -> None:
        """SIGHUP handler: reload in a task (compiling rules in fresh workers takes a moment)."""
        self._reload_task = asyncio.ensure_future(self.reload_now())

    async def reload_now(self) -> bool:
        """Re-read config and rules; a broken file keeps the old ones running. True on success."""
        if self.pipeline is None:
            return False
        try:
            new = load_config(self.config.source) if self.config.source else self.config
            await self.pipeline.reload(new)
        except Exception as e:  # noqa: BLE001
            log.error("reload failed, keeping the previous rules: %s", e, extra={"event": "reload_failed"})
            return False
        self.config = new
        if self.handler is not None:
            self.handler.reconfigure(new)
        if self.approvals is not None:
            self.approvals.config = new
        if self.authority is not None:
            self.authority.reconfigure(new)
            from .identities import log_binding_problems

            log_binding_problems(new)
        log.info("rules and approvers reloaded", extra={"event": "reloaded"})
        return True

    async def stop(self, grace: float = 10.0) -> None:
        metrics.UP.set(0)
        if self.handler is not None:
            self.handler.accepting = False
        if self.server is not None:
            self.server.close()
            # in-flight SMTP transactions may still finish their DATA (bounded)
            deadline = time.monotonic() + grace
            while self.handler is not None and self.handler.total and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        if self.control is not None:
            await self.control.stop()
        if self.authority is not None:
            self.authority.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self.delivery is not None:
            await self.delivery.stop(timeout=grace)
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.pipeline is not None:
            await self.pipeline.stop()
        if self.store is not None:
            if self.witness is not None:  # the last head, so a cut tail after a restart shows
                w = self.witness
                with contextlib.suppress(Exception):
                    await self.store.run(lambda s: w.write(s))
            self.store.close()
        self._stopped.set()


def _log_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("witnessing the audit chain head failed: %s", fut.exception(), extra={"event": "audit_witness_error"})


def _authenticator(cfg: Config) -> Any:
    if not cfg.smtp.auth_users_file:
        return None
    from .auth import FileAuthenticator

    return FileAuthenticator(cfg.smtp.auth_users_file)


async def serve(config: Config) -> int:
    gw = Gateway(config)
    await gw.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gw.reload)
    await stop.wait()
    log.info("stopping", extra={"event": "stopping"})
    await gw.stop()
    return 0
