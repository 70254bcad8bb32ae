"""`dlpgate serve`: wires store, pipeline, SMTP listener, delivery, housekeeping and metrics.

Start-up order matters for "never lose": recover `delivering` rows and remove spool files that
were never acknowledged before the listener opens. Shutdown (SIGTERM) is the reverse: stop
accepting, let in-flight SMTP transactions and deliveries finish (bounded), then close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
import time
from typing import Any

from . import metrics
from .config import Config, load_config, parse_hostport
from .delivery import Delivery
from .delivery_process import DeliveryProcess, acquire_lock, lock_path
from .errors import ConfigError
from .http import MetricsServer
from .pipeline import Pipeline
from .smtp import GatewaySMTP, Handler, tls_context
from .startup import Summary, log_started, preflight, probe_upstream
from .store import AsyncStore
from .store.engine import open_async_store
from .workers import WorkerInitError

log = logging.getLogger("dlpgate.server")

HOUSEKEEPING_EVERY = 30.0
GAUGE_STATES = ("delayed", "held", "deferred", "delivering", "released")


def _bind_error(key: str, value: str, e: OSError) -> str:
    why = {errno.EADDRINUSE: "is already in use (another dlpgate or mail server listening there?)",
           errno.EACCES: "needs privileges (ports below 1024: root or CAP_NET_BIND_SERVICE)",
           errno.EADDRNOTAVAIL: "is not an address of this host"}.get(e.errno or 0, f"cannot be bound: {e.strerror or e}")
    return f"{key}: {value} {why}"


def _listening(server: asyncio.base_events.Server | None) -> str:
    if server is None or not server.sockets:
        return ""
    host, port = server.sockets[0].getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
        metrics.DECISIONS.store = metrics.store_label(config.store.url, str(config.store_path.resolve()),
                                                      self.hostname)
        self._reload_task: asyncio.Future[bool] | None = None
        self._tls: ssl.SSLContext | None = None
        self._listen_config = config
        self.summary: Summary | None = None
        self._probe: tuple[float, bool | None, str] = (0.0, None, "")  # (when, answered, why not)
        self._probe_task: asyncio.Task[None] | None = None
        self.oldest_deferred_age = 0.0
        self.audit_key: Any = None
        self.witness: Any = None
        self.authority: Any = None
        self.control: Any = None
        self._last_witness = 0.0
        self.web: Any = None  # dlpgate.web.WebServer when [web] listen is set

    async def start(self) -> None:
        """Check, bind, then start. A bad file or a busy port is one ConfigError before anything
        is created or spawned; a failure later stops whatever had started (no orphan children)."""
        cfg = self.config
        await self._bind()  # first: a second gateway on the same ports stops at once
        try:
            self.summary = preflight(cfg)  # creates nothing; names the key or file at fault
            await self._start_parts()
            assert self.server is not None
            # listen() may still find the port taken by a process that bound it meanwhile
            try:
                await self.server.start_serving()
            except OSError as e:
                raise ConfigError(_bind_error("smtp.listen", cfg.smtp.listen, e)) from None
            try:
                if self.metrics_server is not None:
                    await self.metrics_server.serve()
            except OSError as e:
                raise ConfigError(_bind_error("metrics.listen", cfg.metrics.listen, e)) from None
        except BaseException:
            await self.stop(grace=0)
            raise
        metrics.UP.set(1)
        log_started(cfg, self.summary, _listening(self.server),
                    _listening(self.metrics_server.server) if self.metrics_server is not None else "")
        if cfg.relay.probe:
            self._probe_task = asyncio.create_task(self.probe_upstream(), name="upstream-probe")

    async def _bind(self) -> None:
        """Both listening sockets, not yet accepting: a taken port fails here, first."""
        cfg = self._listen_config = self.config
        loop = asyncio.get_running_loop()
        host, port = parse_hostport(cfg.smtp.listen, "smtp.listen")
        try:
            self.server = await loop.create_server(self._smtp_factory, host=host, port=port, reuse_address=True,
                                                   start_serving=False)
        except OSError as e:
            raise ConfigError(_bind_error("smtp.listen", cfg.smtp.listen, e)) from None
        if cfg.metrics.listen:
            mh, mp = parse_hostport(cfg.metrics.listen, "metrics.listen")
            self.metrics_server = MetricsServer(mh, mp, self.health, self.refresh_gauges)
            try:
                await self.metrics_server.start(serving=False)
            except OSError as e:
                self.metrics_server = None
                self.server.close()
                self.server = None
                raise ConfigError(_bind_error("metrics.listen", cfg.metrics.listen, e)) from None
        if cfg.web.listen:  # the console's port, certificate and accounts file, before anything runs
            from .web import WebServer

            try:
                self.web = WebServer(cfg)
            except ConfigError:
                self.server.close()
                self.server = None
                if self.metrics_server is not None:
                    await self.metrics_server.stop()
                    self.metrics_server = None
                raise

    def _smtp_factory(self) -> GatewaySMTP:
        cfg = self._listen_config  # as at start: listener settings are read at start only
        assert self.handler is not None
        kwargs: dict[str, Any] = dict(hostname=self.hostname, data_size_limit=cfg.smtp.max_message_bytes,
                                      enable_SMTPUTF8=True, decode_data=False, timeout=cfg.smtp.timeout,
                                      ident="dlpgate ESMTP")
        if self._tls is not None:
            kwargs.update(tls_context=self._tls, require_starttls=False)
        auth = _authenticator(cfg)
        if auth is not None:
            kwargs.update(authenticator=auth, auth_required=False, auth_require_tls=True)
        return GatewaySMTP(self.handler, **kwargs)

    async def _start_parts(self) -> None:
        cfg = self.config
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
        await self._anchor_audit()  # before anything else appends: an old chain is sealed first
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
        try:
            await self.pipeline.start()
        except WorkerInitError as e:  # the rules parsed in preflight but do not compile
            raise ConfigError(f"policy.rules: the judging workers cannot start: {e}") from None
        await self.delivery.start()
        await self._start_control()
        if self.web is not None:  # the browser console: one more client of the same authority, same loop
            await self.web.start(self.authority)
        self.handler = Handler(cfg, self.pipeline)
        self._tls = tls_context(cfg)
        await self.housekeep_once()  # gauges and health are meaningful from the first scrape
        self._housekeeping = asyncio.create_task(self._housekeep(), name="housekeeping")

    async def _anchor_audit(self) -> None:
        """Seal a chain from before signing, and witness the head the gateway starts from."""
        from . import audit

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

    async def _start_control(self) -> None:
        """The authority (routes, people, admins of this config) and its control socket."""
        from . import audit
        from .control import Authority, ControlServer
        from .identities import Identities

        assert self.store is not None
        cfg = self.config  # binding problems are among the start-up warnings (startup.warnings)
        key, witness_path = self.audit_key, cfg.audit_witness_path
        self.authority = Authority(cfg, self.store, hostname=self.hostname, identities=Identities(cfg),
                                   on_decision=self._after_decision,
                                   verify=lambda s: audit.verify(s, key, witness_path), public_key=key)
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
        return bool(self.health()["status"] != "unhealthy")

    def health(self) -> dict[str, Any]:
        """Each check and the verdict: "unhealthy" when a part of the gateway is down, "degraded"
        when mail cannot leave (upstream unreachable, deferred mail older than the limit)."""
        cfg = self.config
        store_ok = self.store is not None and self.store._thread.is_alive()
        if store_ok and self.store is not None:
            try:
                probe = self.store.root / ".healthz"
                probe.write_bytes(b"ok")
                probe.unlink()
            except OSError:
                store_ok = False
        up_ok, up_reason = self.upstream_state()
        limit = cfg.metrics.max_deferred_age
        age = self.oldest_deferred_age
        upstream: dict[str, Any] = {"ok": up_ok is not False, "address": cfg.relay.upstream}
        if up_reason or up_ok is None:
            upstream["detail"] = up_reason or "not tried yet"
        checks: dict[str, dict[str, Any]] = {
            "smtp": {"ok": self.server is not None and self.server.is_serving(), "listen": cfg.smtp.listen},
            "store": {"ok": store_ok},
            "deliverer": {"ok": self.delivery is not None and bool(self.delivery.alive)},
            "housekeeping": {"ok": time.time() - self.last_housekeeping < HOUSEKEEPING_EVERY * 3},
            # no judging worker can start (a module or the rules went missing): every DATA gets 451
            "judging": {"ok": self.pipeline is not None and self.pipeline.judging_ok},
            "upstream": upstream,
            "deferred": {"ok": age <= limit, "oldest_age_seconds": round(age, 1), "limit_seconds": limit},
        }
        core = ("smtp", "store", "deliverer", "housekeeping", "judging")
        if not all(checks[k]["ok"] for k in core):
            status = "unhealthy"
        elif not (checks["upstream"]["ok"] and checks["deferred"]["ok"]):
            status = "degraded"
        else:
            status = "ok"
        metrics.UP.set(1 if status != "unhealthy" else 0)
        return {"status": status, "checks": checks}

    def upstream_state(self) -> tuple[bool | None, str]:
        """The newest of what the deliverer saw on its last attempt and what the last probe saw."""
        d = self.delivery
        seen = (getattr(d, "upstream_at", 0.0), getattr(d, "upstream_ok", None), getattr(d, "upstream_reason", ""))
        if seen[1] is None or self._probe[0] > seen[0]:
            seen = self._probe
        return seen[1], seen[2]

    async def probe_upstream(self) -> None:
        """Greet the upstream once; say so when it does not answer or answers again."""
        was, _ = self.upstream_state()
        why = await probe_upstream(self.config.relay.upstream)
        self._probe = (time.time(), why is None, why or "")
        metrics.UPSTREAM_UP.set(0 if why else 1)
        if why is not None and was is not False:
            log.warning("upstream %s does not answer (%s): mail waits as deferred until it does",
                        self.config.relay.upstream, why,
                        extra={"event": "upstream_down", "upstream": self.config.relay.upstream, "reason": why})
        elif why is None and was is False:
            log.warning("upstream %s answers again", self.config.relay.upstream,
                        extra={"event": "upstream_up", "upstream": self.config.relay.upstream})

    async def refresh_gauges(self) -> None:
        """Queue gauges and ages from the store now (each scrape, each housekeeping pass)."""
        if self.store is None:
            return
        counts, held, deferred = await self.store.run(
            lambda s: (s.count_in_states(GAUGE_STATES), s.oldest_in_state("held"), s.oldest_in_state("deferred")))
        for st in GAUGE_STATES:
            metrics.QUEUE.labels(state=st).set(counts.get(st, 0))
        now = time.time()
        metrics.OLDEST_HELD.set(0 if held is None else max(0.0, now - held))
        self.oldest_deferred_age = 0.0 if deferred is None else max(0.0, now - deferred)
        metrics.OLDEST_DEFERRED.set(self.oldest_deferred_age)
        up, _ = self.upstream_state()
        metrics.UPSTREAM_UP.set(0 if up is False else 1)

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
        await self.refresh_gauges()
        if (cfg.relay.probe and self.upstream_state()[0] is False
                and (self._probe_task is None or self._probe_task.done())):
            self._probe_task = asyncio.create_task(self.probe_upstream(), name="upstream-probe")  # back yet?
        seen = self._decision_seq
        new, top = await self.store.run(lambda s: s.decision_counts(seen))
        for k, n in new.items():
            metrics.DECISIONS.counts[k] = metrics.DECISIONS.counts.get(k, 0.0) + n
        self._decision_seq = top
        if self.witness is not None and time.time() - self._last_witness >= cfg.audit.witness_every:
            w = self.witness
            await self.store.run(lambda s: w.write(s))
            self._last_witness = time.time()
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
        if self.web is not None:  # sign-in policy and links; the listener itself needs a restart
            self.web.reconfigure(new)
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
        if self.web is not None:
            await self.web.stop()
        if self.authority is not None:
            self.authority.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self._probe_task is not None:
            self._probe_task.cancel()
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
