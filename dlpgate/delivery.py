"""The delay scheduler and upstream delivery.

One scheduler task sleeps until the earliest `due_at` in the store (woken early by new arrivals)
and claims due messages in batches; a fixed number of delivery workers, each holding one reused
aiosmtplib connection, send them. Nothing is per message: 100k queued messages are rows, not tasks.
A message is marked delivered for a recipient only after the upstream's 250 for DATA.

STARTTLS to the upstream is negotiated here, not inside aiosmtplib's connect, so that a TLS
failure is told apart from other faults: with `[relay] tls = "required"` it (or an upstream that
does not offer STARTTLS) defers the message, never sends it in clear; with "opportunistic" it
falls back to a clear connection, as RFC 7435 opportunistic security does.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence

import aiosmtplib

from . import metrics
from .config import Config, parse_hostport
from .errors import StoreError
from .masking import mask_text
from .notices import queue_dsn
from .store import AsyncStore, Claimed, ClaimJob, DeliveredJob, NewMessage, RcptOutcome, Store
from .upstream import send_message

log = logging.getLogger("dlpgate.delivery")

class UpstreamTLSError(aiosmtplib.SMTPException):
    """TLS was required and could not be had; the attempt is deferred."""


IDLE_POLL = 5.0
STORE_RETRY = 0.5  # seconds before a claim or a record is tried again when the store is unreachable
RECORD_FOR = 120.0  # how long an attempt's outcome is retried before it is left to recovery
COALESCE = 0.005  # seconds the scheduler waits after a wake-up before claiming
RECHECK = 0.01  # the next message is due already but was not claimable (another node's claim holds it)


def _count(result: str, latency: float | None) -> None:
    metrics.DELIVERIES.labels(result=result).inc()
    if latency is not None:
        metrics.DELIVERY_LATENCY.observe(latency)


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """Seconds before retry number `attempts` (1-based): initial doubling up to maximum."""
    return float(min(maximum, initial * (2 ** max(0, attempts - 1))))


def _header_safe(value: str) -> str:
    """One header token: no line break or control character can ride into the Received: line
    (the SMTP side validates HELO and addresses; rows stored before that are cleaned here)."""
    return "".join(c if c.isprintable() and not c.isspace() else "?" for c in value)[:255]


def received_header(c: Claimed, hostname: str) -> bytes:
    helo = _header_safe(c.helo) or "unknown"
    client = _header_safe(c.client) or "unknown"
    line = (f"Received: from {helo} ({client} [{client}])\r\n\tby {_header_safe(hostname)} (dlpgate)"
            f" with ESMTP id {_header_safe(c.id)}")
    if len(c.recipients) == 1:
        line += f"\r\n\tfor <{_header_safe(c.recipients[0])}>"
    line += f"; {_date(int(c.arrived))}\r\n"
    return line.encode("utf-8", "replace")


@functools.lru_cache(maxsize=64)
def _date(second: int) -> str:
    """RFC 5322 date of a whole second; messages arriving together share it (formatdate is slow)."""
    return email.utils.formatdate(second, localtime=True)


class Delivery:
    def __init__(self, config: Config, store: AsyncStore, hostname: str,
                 on_result: Callable[[str, float | None], None] | None = None) -> None:
        self.config = config
        self.store = store
        self.hostname = hostname
        self.host, self.port = parse_hostport(config.relay.upstream, "relay.upstream")
        self.concurrency = config.relay.concurrency
        self.queue: asyncio.Queue[Claimed] = asyncio.Queue()
        self.inflight = 0
        # every message claimed and not yet recorded (queued or in flight): the store renews the
        # leases of these and no others, so a claim whose answer was lost expires and is retaken
        self.held: set[str] = set()
        self._wake = asyncio.Event()
        self._sleep_until = 0.0
        self._timer: asyncio.TimerHandle | None = None  # a wake-up set for a future due time
        self._timer_at = 0.0
        # the last claim filled every free slot (or there was none): more may be due, so a worker
        # that finishes wakes the scheduler; otherwise nothing is due until a poke or `next_due`
        self._backlog = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.alive = False
        # per-recipient result ("delivered" | "deferred" | "bounced") and, for a delivery, its latency;
        # the delivery process forwards these to the gateway's metrics
        self.on_result = on_result or _count
        # whether the upstream answered the last attempt (None: not tried yet); the gateway shows
        # it in /healthz and dlpgate_upstream_up, and says it in the log when it changes
        self.upstream_ok: bool | None = None
        self.upstream_reason = ""
        self.upstream_at = 0.0  # when it was last seen (time.time())

    def _upstream_seen(self, ok: bool, reason: str = "") -> None:
        if ok and self.upstream_ok is False:
            log.warning("upstream %s answers again", self.config.relay.upstream,
                        extra={"event": "upstream_up", "upstream": self.config.relay.upstream})
        elif not ok and self.upstream_ok is not False:
            log.warning("upstream %s unreachable: %s", self.config.relay.upstream, reason,
                        extra={"event": "upstream_down", "upstream": self.config.relay.upstream, "reason": reason})
        self.upstream_ok, self.upstream_reason, self.upstream_at = ok, ("" if ok else reason), time.time()

    # -------------------------------------------------------------- scheduling
    def poke(self, due_at: float) -> None:
        """A message became due at `due_at`: wake the scheduler if it sleeps past that; a due time
        still ahead sets a timer for it (the earliest of those asked for) instead of a claim now
        that would find nothing."""
        now = time.time()
        if due_at <= now:
            if due_at < self._sleep_until or self._sleep_until == 0.0:
                self._wake.set()
            return
        if self._sleep_until != 0.0 and due_at >= self._sleep_until:
            return  # the scheduler looks by then anyway
        if self._timer is not None and self._timer_at <= due_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due_at
        self._timer = asyncio.get_running_loop().call_later(due_at - now, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._wake.set()

    async def start(self) -> None:
        self.store.on_due(self.poke)  # another gateway on the same database made a message due
        self.store.holds(lambda: tuple(self.held))
        self._tasks.append(asyncio.create_task(self._scheduler(), name="scheduler"))
        for i in range(self.concurrency):
            self._tasks.append(asyncio.create_task(self._worker(i), name=f"delivery-{i}"))

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._timer is not None:
            self._timer.cancel()
        sched = self._tasks[0] if self._tasks else None
        if sched is not None:
            sched.cancel()
        # let in-flight deliveries finish (bounded); unfinished ones stay `delivering` -> recovered
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # claimed but not started: hand them back so they do not sit in `delivering`
        left = []
        while not self.queue.empty():
            left.append(self.queue.get_nowait().id)
        if left:
            await self.store.run(lambda s: s.recover())

    async def _scheduler(self) -> None:
        self.alive = True
        try:
            while not self._stopping:
                # cleared BEFORE looking at the store: a poke that lands while the claim runs
                # keeps the event set, so the wait below returns at once (no lost wake-up)
                self._wake.clear()
                free = self.concurrency * 2 - self.inflight - self.queue.qsize()
                if free > 0:
                    try:
                        claimed, nd = await self.store.run(ClaimJob(free))
                    except StoreError as e:  # the database is away (a restart): try again shortly
                        log.warning("claim failed, retrying: %s", e, extra={"event": "store_error"})
                        await asyncio.sleep(STORE_RETRY)
                        continue
                    for c in claimed:
                        self.held.add(c.id)
                        self.queue.put_nowait(c)
                    self._backlog = len(claimed) == free
                    if self._backlog:
                        await asyncio.sleep(0)
                        continue
                    # due already but not claimed: held by another node's claim right now, or
                    # beyond this claim's byte budget: look again shortly, not in a busy loop
                    wait = IDLE_POLL if nd is None else min(IDLE_POLL, max(RECHECK, nd - time.time()))
                else:
                    self._backlog = True
                    wait = IDLE_POLL  # a worker finishing wakes us
                self._sleep_until = time.time() + wait
                if wait > 0:
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout=wait)
                        # woken by an arrival or a finished delivery: let a few more gather, so
                        # one claim serves a burst instead of one store round trip per event
                        await asyncio.sleep(COALESCE)
                    except TimeoutError:
                        pass
                self._sleep_until = 0.0
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduler failed", extra={"event": "scheduler_error"})
            self.alive = False
            raise

    # -------------------------------------------------------------- delivery
    def _client(self) -> aiosmtplib.SMTP:
        r = self.config.relay
        return aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=r.timeout,
                               local_hostname=self.hostname, start_tls=False,
                               validate_certs=(r.tls == "required" and r.tls_verify),
                               cert_bundle=r.tls_ca_file or None)

    async def _connect(self) -> aiosmtplib.SMTP:
        """A connected client, upgraded with STARTTLS as `[relay] tls` says."""
        mode = self.config.relay.tls
        client = self._client()
        await client.connect()
        if mode == "off":
            return client
        try:
            await client.ehlo()
            if not client.supports_extension("starttls"):
                raise UpstreamTLSError("upstream does not offer STARTTLS")
            await client.starttls()
            return client
        except (ssl.SSLError, aiosmtplib.SMTPException, OSError, TimeoutError) as e:
            client.close()
            if mode == "required":
                if isinstance(e, UpstreamTLSError):
                    raise
                raise UpstreamTLSError(f"STARTTLS failed: {type(e).__name__}: {e}"[:200]) from e
            if not isinstance(e, UpstreamTLSError):
                log.warning("STARTTLS to upstream failed, sending in clear (tls = opportunistic)",
                            extra={"event": "upstream_tls_fallback"})
        client = self._client()
        await client.connect()
        return client

    async def _worker(self, n: int) -> None:
        client: aiosmtplib.SMTP | None = None
        while True:
            try:
                # get_nowait first: under load the queue is rarely empty, and wait_for wraps the
                # get in a new task with its own timer every time
                c = self.queue.get_nowait() if not self.queue.empty() else \
                    await asyncio.wait_for(self.queue.get(), timeout=30.0)
            except TimeoutError:
                if client is not None:  # idle: let the upstream free the connection
                    await _quit(client)
                    client = None
                continue
            self.inflight += 1
            try:
                client, outcomes = await self._attempt(client, c)
                await self._finish(c, outcomes)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery bookkeeping failed", extra={"event": "delivery_error", "msg_id": c.id})
            finally:
                self.inflight -= 1
                self.held.discard(c.id)
                if self._backlog:  # a free slot matters only if something is left to claim
                    self._wake.set()

    async def _attempt(self, client: aiosmtplib.SMTP | None,
                       c: Claimed) -> tuple[aiosmtplib.SMTP | None, list[RcptOutcome]]:
        try:
            if c.span is not None:  # a small message, in a spool segment: one page-cache pread
                data = c.read_bytes()
            else:
                with open(c.spool, "rb") as f:
                    if os.fstat(f.fileno()).st_size <= 1024 * 1024:  # page-cache read: cheaper than a thread hop
                        data = f.read()
                    else:
                        data = await asyncio.get_running_loop().run_in_executor(None, f.read)
        except OSError as e:
            return client, [RcptOutcome(r, 0, f"local spool unreadable: {e.strerror}") for r in c.recipients]
        if c.sha256 is None or (c.sha256 and hashlib.sha256(data).hexdigest() != c.sha256):
            # not what was accepted (and judged, and perhaps approved): someone who can write the
            # spool or the database swapped the bytes, or inserted the row with no `accepted` entry
            # in the signed chain. Never sent; the bounce is audited.
            why = "not in the signed chain" if c.sha256 is None else "content changed after it was accepted"
            log.error("message %s: %s (SHA-256 against the signed chain's `accepted` entry): not sent", c.id, why,
                      extra={"event": "tampered", "msg_id": c.id})
            return client, [RcptOutcome(r, 554, f"5.7.1 {why}: not sent") for r in c.recipients]
        data = received_header(c, self.hostname) + data
        for fresh_try in (False, True):
            try:
                if client is None or not client.is_connected:
                    client = await self._connect()
                errors = await send_message(client, c.sender, list(c.recipients), data)
                self._upstream_seen(True)
                return client, [RcptOutcome(r, errors[r].code, errors[r].message) if r in errors
                                else RcptOutcome(r, 250, "ok") for r in c.recipients]
            except aiosmtplib.SMTPRecipientsRefused as e:
                self._upstream_seen(True)
                refused = {x.recipient: x for x in e.recipients}
                await _reset(client)
                return client, [RcptOutcome(r, refused[r].code, refused[r].message) if r in refused
                                else RcptOutcome(r, 451, "not attempted") for r in c.recipients]
            except aiosmtplib.SMTPResponseException as e:
                # sender refused, DATA refused, 421...: the same answer for every recipient
                if isinstance(e, aiosmtplib.SMTPServerDisconnected) and not fresh_try and client is not None:
                    client = None  # a reused connection the upstream had closed: one fresh try
                    continue
                self._upstream_seen(True)  # it answered, even if with a refusal
                await _reset(client)
                if e.code == 421 or not 400 <= e.code < 600:
                    await _drop(client)
                    client = None
                return client, [RcptOutcome(r, e.code, e.message) for r in c.recipients]
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
                await _drop(client)
                client = None
                if not fresh_try and isinstance(e, aiosmtplib.SMTPServerDisconnected):
                    continue
                reason = f"upstream unavailable: {_why(e)}"[:300]
                self._upstream_seen(False, reason)
                return None, [RcptOutcome(r, 0, reason) for r in c.recipients]
        return client, [RcptOutcome(r, 0, "upstream unavailable") for r in c.recipients]

    async def _record(self, job: Callable[[Store], object]) -> object:
        """Run the attempt's store job, retrying while the store is unreachable (a database
        restart): the message stays claimed meanwhile, so the outcome is not lost to a retry."""
        deadline = time.monotonic() + RECORD_FOR
        delay = STORE_RETRY
        while True:
            try:
                return await self.store.run(job)
            except StoreError as e:
                if time.monotonic() > deadline or self._stopping:
                    raise
                log.warning("recording a delivery failed, retrying: %s", e, extra={"event": "store_error"})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _finish(self, c: Claimed, outcomes: Sequence[RcptOutcome]) -> None:
        r = self.config.relay
        now = time.time()
        attempts = c.attempts + 1
        give_up = now - c.first_attempt >= r.give_up_after
        retry_at = now + backoff(attempts, r.retry_initial, r.retry_max)
        hard = [o for o in outcomes if 500 <= o.code < 600 or (give_up and not 200 <= o.code < 300)]
        hostname = self.hostname

        def job(s: Store) -> object:
            notices: list[NewMessage] = []
            if hard and c.sender and c.kind == "mail":
                original = c.read_bytes()
                notices.append(queue_dsn(s, hostname=hostname, msg_id=c.id, sender=c.sender,
                                         arrived=c.arrived, original=original, bounced=hard))
            return s.finish_attempt(c.id, outcomes, retry_at=retry_at, give_up=give_up, notices=notices)

        delivered = bool(outcomes) and all(200 <= o.code < 300 for o in outcomes)
        # the common case is recorded together with the batch's other deliveries (one statement each)
        res = await self._record(DeliveredJob(c.id, outcomes, retry_at) if delivered else job)
        timed = False  # one latency sample per message, on its first delivered recipient
        for o in outcomes:
            ok = 200 <= o.code < 300
            self.on_result("delivered" if ok else "bounced" if o in hard else "deferred",
                           now - c.arrived if ok and not timed else None)
            timed = timed or ok
        if hard and c.sender:
            self.poke(now)
        if not delivered and getattr(res, "state", "") == "deferred":
            self.poke(retry_at)  # its retry: a timer, so the scheduler need not look after every attempt
        # a failed attempt is a WARNING naming the reason (a dead upstream must be visible); a
        # delivery is INFO. Code 0 means no SMTP reply at all: the reason says why.
        level = logging.INFO if delivered else logging.WARNING
        if log.isEnabledFor(level):  # masking every reply is work even when INFO is off
            replies = sorted({mask_text(f"{o.code} {o.response}" if o.code else o.response)[:120]
                              for o in outcomes})
            state = res.state  # type: ignore[attr-defined]
            extra = {"event": "delivery", "msg_id": c.id, "state": state, "attempt": attempts, "replies": replies}
            if delivered:
                log.info("delivery attempt %d: %s", attempts, state, extra=extra)
            else:
                log.warning("delivery attempt %d: %s: %s", attempts, state, "; ".join(replies), extra=extra)


def _why(e: BaseException) -> str:
    """A connection failure in a few words: the OS's reason where there is one ("Connection
    refused", "No route to host"), not the wrapper's repr."""
    seen: BaseException | None = e
    for _ in range(4):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno:
            return f"{type(e).__name__}: {os.strerror(seen.errno)}"
        seen = seen.__cause__ or seen.__context__
    return f"{type(e).__name__}: {e}"


async def _reset(client: aiosmtplib.SMTP | None) -> None:
    if client is not None and client.is_connected:
        try:
            await client.rset()
        except Exception:  # noqa: BLE001
            await _drop(client)


async def _drop(client: aiosmtplib.SMTP | None) -> None:
    if client is not None:
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass
    return None


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await asyncio.wait_for(client.quit(), timeout=5)
    except Exception:  # noqa: BLE001
        client.close()
