"""Stored message -> extract -> scan -> policy -> next state.

The judging runs in worker processes (a pool sized to the cores): extraction and scanning are
CPU-heavy and parse hostile files with C libraries, so they stay out of the SMTP process's event
loop and address space. Each worker compiles the rules once (`Engine`), at start-up and on reload.

`Pipeline.receive` is the whole accept path the SMTP handler calls: spool durably, judge, commit
the message in its first state with its audit trail, and only then answer 250.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import metrics
from .config import Config
from .errors import StoreError
from .masking import mask_text
from .store import DELAYED, HELD, REJECTED, AsyncStore, NewMessage, forget_unsynced, new_id
from .workers import WorkerCrashed, WorkerInitError, WorkerPool

log = logging.getLogger("dlpgate.pipeline")


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    client: str = ""
    helo: str = ""


@dataclass(frozen=True)
class Judgement:
    """What the worker decided about one message. Plain values only: it crosses a process boundary."""

    verdict: str = "clean"  # clean | hold | reject
    rules: tuple[str, ...] = ()
    reason: str = ""
    findings: tuple[dict[str, Any], ...] = ()  # Finding.to_json(), samples masked
    records: int = 0
    parts: tuple[dict[str, Any], ...] = ()  # path, chars, unscannable: for `quarantine show`
    attachments: tuple[dict[str, Any], ...] = ()
    subject: str = ""
    approvals_required: int = 1
    logged: tuple[str, ...] = ()
    recipient_classes: tuple[str, ...] = ()
    rewritten: bytes | None = None  # new message bytes when a rule rewrote headers (issue 8)
    rewrite_note: str = ""
    scan_seconds: float = 0.0
    extract_seconds: dict[str, float] = field(default_factory=dict)
    bytes_scanned: int = 0


@dataclass(frozen=True)
class Reply:
    code: int
    text: str
    msg_id: str = ""

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


# ------------------------------------------------------------------------------ worker side
# Everything judging needs. A worker that cannot import one of them refuses to start (and with
# it `serve`): a gateway that cannot judge must not pass mail as clean. The scanner's gate uses
# hyperscan when it imports and falls back to pyahocorasick + `re` (same findings) otherwise.
REQUIRED_MODULES = (
    "ahocorasick",
    "dlpgate.scan.scanner",
    "dlpgate.policy",
    "dlpgate.extract",
    "dlpgate.rewrite",
    "python_calamine",
    "pypdfium2",
    "pdfminer.pdfparser",
    "charset_normalizer",
    "openpyxl",
    "docx",
    "defusedxml",
    "olefile",
    "py7zr",
    "tnefparse",
)
OPTIONAL_MODULES = ("hyperscan",)


def check_judging_modules() -> None:
    """Import every module judging needs; ImportError names the first one missing."""
    import importlib

    for name in REQUIRED_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"judging cannot load {name!r} ({e}); refusing to run without it") from None


class Engine:
    """Compiled scanner + policy + extraction limits. Built once per worker process.

    Fails closed: a missing judging module raises here (the worker reports it and `serve`
    refuses to start) instead of judging everything clean.
    """

    def __init__(self, rules_dir: str, internal_domains: Sequence[str], limits: dict[str, Any]) -> None:
        check_judging_modules()
        from .extract.model import ExtractLimits
        from .policy import Policy
        from .scan.scanner import Scanner

        known = {f.name for f in fields(ExtractLimits)} - {"hash_attachments"}  # the send log needs them
        self.limits = ExtractLimits(**{k: v for k, v in limits.items() if k in known})
        self.scanner = Scanner.load(rules_dir)
        self.policy = Policy.load(rules_dir, internal_domains)

    def recipient_class(self, rcpt: str) -> str:
        return str(self.policy.recipient_class(rcpt))

    def judge(self, raw: bytes, env: Envelope, first_contact_domains: Sequence[str] = ()) -> Judgement:
        from .extract import extract_message
        from .policy import MessageFacts

        classes = tuple(sorted({self.recipient_class(r) for r in env.recipients}))
        t0 = time.perf_counter()
        ex = extract_message(raw, self.limits)
        t1 = time.perf_counter()
        # names come from the sender (file names, archive members): masked before they are stored
        parts = tuple({"path": mask_text(p.path), "chars": len(p.text), "tables": len(p.tables),
                       "unscannable": p.unscannable or "", "detail": mask_text(p.detail)} for p in ex.parts)
        attachments = tuple({**asdict(a), "filename": mask_text(a.filename)} for a in ex.attachments)
        subject = mask_text(ex.subject)
        scanned = sum(len(p.text) for p in ex.parts)
        result = self.scanner.scan_extraction(ex)
        facts = MessageFacts(sender=env.sender, recipients=env.recipients, subject=ex.subject,
                             header_to=ex.header_to, header_cc=ex.header_cc, attachments=ex.attachments,
                             first_contact_domains=tuple(first_contact_domains))
        v = self.policy.decide(result, facts)
        t2 = time.perf_counter()
        findings = tuple(_masked_finding(f.to_json()) for f in (*result.findings, *getattr(v, "extra_findings", ())))
        rewritten = None
        note = ""
        if getattr(v, "rewrite_recipients", False):
            from .rewrite import hide_recipients

            rewritten, note = hide_recipients(raw, self.recipient_class)
        return Judgement(
            verdict=v.action, rules=tuple(v.rules), reason=mask_text(v.reason), findings=findings,
            records=result.records, parts=parts, attachments=attachments, subject=subject,
            approvals_required=int(getattr(v, "approvals_required", 1)), logged=tuple(getattr(v, "logged", ())),
            recipient_classes=classes, rewritten=rewritten, rewrite_note=mask_text(note),
            scan_seconds=t2 - t1, extract_seconds={"message": t1 - t0}, bytes_scanned=scanned)


def _masked_finding(f: dict[str, Any]) -> dict[str, Any]:
    """A finding's part names a file (sender-chosen) and its sample may quote a column header."""
    return {**f, "part": mask_text(str(f.get("part", ""))), "sample": mask_text(str(f.get("sample", "")))}


_ENGINE: Engine | None = None


def _init_worker(rules_dir: str, internal_domains: Sequence[str], limits: dict[str, Any]) -> None:
    """Runs once in each judging process: cap its memory, then compile the rules."""
    global _ENGINE
    limits = dict(limits)
    cap_mb = int(limits.pop("worker_memory_mb", 0) or 0)
    if cap_mb:
        import resource

        cap = cap_mb * 1024 * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        # a hostile attachment that balloons hits MemoryError (held as unscannable) or kills only
        # this worker (replaced; the message is held), never the SMTP process or the machine
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    _ENGINE = Engine(rules_dir, internal_domains, limits)


def _judge_in_worker(message: bytes | str, env: Envelope, first_contact: Sequence[str]) -> Judgement:
    """`message`: the bytes themselves (small messages: they travel in the request, which costs
    less than the worker opening and reading the spool file) or the spool file's path."""
    assert _ENGINE is not None
    raw = message if isinstance(message, bytes) else Path(message).read_bytes()
    return _ENGINE.judge(raw, env, first_contact)


INLINE_JUDGE_BYTES = 256 * 1024  # up to this size a message is sent to the worker, not re-read
BATCH_JUDGE_BYTES = 64 * 1024  # up to this size judging is quick: queued ones share a worker's turn


# ------------------------------------------------------------------------------ server side
class Pipeline:
    def __init__(self, config: Config, store: AsyncStore, *, workers: int | None = None,
                 notices: Any = None, on_new_due: Any = None) -> None:
        self.config = config
        self.store = store
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.notices = notices  # approvals.Notices or None
        self.on_new_due = on_new_due  # callback(due_at) that wakes the scheduler
        self._pool: WorkerPool | None = None
        self.hostname = ""
        self._known: OrderedDict[str, set[str]] = OrderedDict()  # first-contact cache: scope -> domains

    # ---- pool
    def _pool_args_for(self, config: Config) -> tuple[Any, ...]:
        return (str(config.rules_path), tuple(config.policy.internal_domains), asdict(config.extract))

    async def start(self) -> None:
        """Start the workers; a rule file that does not compile fails here (WorkerInitError)."""
        self._pool = WorkerPool(self.workers, _init_worker, self._pool_args_for(self.config))
        await self._pool.start()

    async def reload(self, config: Config) -> None:
        """Swap in workers compiled from new rules; the old ones finish their in-flight work."""
        pool = WorkerPool(self.workers, _init_worker, self._pool_args_for(config))
        await pool.start()  # raises on broken rules: the old pool keeps running
        old, self._pool, self.config = self._pool, pool, config
        if old is not None:
            await old.close()

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def judging_ok(self) -> bool:
        """False once no judging worker can start (every DATA is then answered 451)."""
        pool = self._pool
        return pool is not None and not (pool.broken and not pool._slots)  # noqa: SLF001

    @property
    def busy(self) -> int:
        return self._pool.busy if self._pool is not None else 0

    async def judge(self, spool: Path | None, env: Envelope, first_contact: Sequence[str] = (),
                    data: bytes | None = None) -> Judgement:
        """Judge in a worker; over budget or a crashed worker fails closed (held as unscannable).
        `data`: the message's bytes, when the caller has them at hand; `spool`: its file, needed
        for a message bigger than INLINE_JUDGE_BYTES."""
        assert self._pool is not None, "pipeline not started"
        pool = self._pool
        metrics.WORKERS_BUSY.set(pool.busy + 1)
        if data is not None and (len(data) <= INLINE_JUDGE_BYTES or spool is None):
            message: bytes | str = data
        else:
            assert spool is not None, "judge needs the bytes or the spool file"
            message = str(spool)
        try:
            j: Judgement = await pool.call(_judge_in_worker, message, env, tuple(first_contact),
                                           timeout=self.config.smtp.scan_timeout,
                                           batchable=isinstance(message, bytes) and len(message) <= BATCH_JUDGE_BYTES)
            return j
        except TimeoutError:
            log.error("scan budget exceeded; worker replaced", extra={"event": "scan_timeout"})
            return _fail_closed("limit", "scan time budget exceeded")
        except WorkerCrashed:
            log.error("scan worker died; worker replaced", extra={"event": "worker_crash"})
            return _fail_closed("corrupt", "scan worker crashed on this message")
        except RuntimeError as e:  # the judging code raised: fail closed for this message, keep serving
            log.error("judging raised %s; message held as unscannable", str(e).split(":")[0],
                      extra={"event": "judge_error"})
            return _fail_closed("corrupt", "the scanner could not read this message")
        finally:
            metrics.WORKERS_BUSY.set(pool.busy)

    def delay_for(self, classes: Sequence[str]) -> float:
        d = self.config.delay
        if not classes:
            return d.seconds
        return max(d.for_class(c) for c in classes)

    async def _first_contact(self, env: Envelope) -> tuple[str, ...]:
        """Recipient domains this scope never mailed. A bounded in-memory cache of what the store
        already knows saves a store round trip per message for regular correspondents."""
        domains = sorted({r.rpartition("@")[2].lower() for r in env.recipients})
        scope = self._contact_scope(env)
        cached = self._known.get(scope)
        if cached is not None:
            self._known.move_to_end(scope)
        unknown = [d for d in domains if cached is None or d not in cached]
        if not unknown:
            return ()
        known = await self.store.run(lambda s: s.known_domains(scope, unknown))
        self._remember(scope, known)
        return tuple(d for d in unknown if d not in known)

    def _remember(self, scope: str, domains: Iterable[str]) -> None:
        got = self._known.setdefault(scope, set())
        got.update(domains)
        self._known.move_to_end(scope)
        while len(self._known) > 10_000:
            self._known.popitem(last=False)

    def _contact_scope(self, env: Envelope) -> str:
        if self.config.policy.first_contact_scope == "organisation":
            return "*"
        return env.sender.lower()

    # ---- the accept path
    async def receive(self, env: Envelope, data: bytes) -> Reply:
        t0 = time.perf_counter()
        msg_id = new_id()
        # a small message travels to the judging worker in the request and reaches the disk in the
        # group commit, appended to the spool segment with the batch's others (one fsync for all);
        # a big one is spooled to a file of its own first, which the worker reads
        spool: Path | None = None
        rel = ""
        if len(data) > INLINE_JUDGE_BYTES:
            try:
                rel = await self.store.write_spool(msg_id, data)
            except OSError as e:
                log.error("spool write failed: %s", e, extra={"event": "store_error", "msg_id": msg_id})
                metrics.RECEIVED.labels(result="store_error").inc()
                return Reply(451, "4.3.0 Temporary storage failure, try again later")
            spool = self.store.spool_path(rel)
        try:
            first_contact = await self._first_contact(env) if env.sender else ()
            j = await self.judge(spool, env, first_contact, data)
            if j.rewritten is not None and spool is not None:
                await asyncio.get_running_loop().run_in_executor(None, _replace_file, spool, j.rewritten)
            m = self._new_message(msg_id, rel, env, data, j)
            notices: Sequence[NewMessage] = ()
            if self.notices is not None and (m.state == HELD or self.notices.wants_delayed(m)):
                # notice spool files fsync: off the loop
                notices = await asyncio.get_running_loop().run_in_executor(None, self.notices.for_accept, m)
            # spool bytes (file and directory, or segment) fsync'd before the row commits: durable before 250
            if spool is not None:
                await self.store.accept(m, notices, spool=(rel,))
            else:
                await self.store.accept(m, notices, content=j.rewritten if j.rewritten is not None else data)
            self._remember(self._contact_scope(env), (r.rpartition("@")[2].lower() for r in env.recipients))
        except WorkerInitError as e:  # nothing can judge: the client keeps the message and retries
            log.error("%s", e, extra={"event": "judging_unavailable", "msg_id": msg_id})
            if spool is not None:
                await asyncio.get_running_loop().run_in_executor(None, _unlink, spool)
            metrics.RECEIVED.labels(result="error").inc()
            return Reply(451, "4.3.0 Content scanner unavailable, try again later")
        except (StoreError, OSError) as e:
            log.error("store commit failed: %s", e, extra={"event": "store_error", "msg_id": msg_id})
            if spool is not None:
                await asyncio.get_running_loop().run_in_executor(None, _unlink, spool)
            metrics.RECEIVED.labels(result="store_error").inc()
            return Reply(451, "4.3.0 Temporary storage failure, try again later")
        except Exception:
            log.exception("judging failed", extra={"event": "pipeline_error", "msg_id": msg_id})
            if spool is not None:
                await asyncio.get_running_loop().run_in_executor(None, _unlink, spool)
            metrics.RECEIVED.labels(result="error").inc()
            return Reply(451, "4.3.0 Temporary local problem, try again later")
        elapsed = time.perf_counter() - t0
        self._observe(m, j, elapsed, len(data))
        log.info("accepted", extra={"event": "accepted", "msg_id": msg_id, "state": m.state,
                                    "verdict": j.verdict, "rules": list(j.rules), "size": len(data)})
        if self.on_new_due is not None:
            if m.state == DELAYED and m.due_at is not None:
                self.on_new_due(m.due_at)
            if notices:
                self.on_new_due(time.time())
        if m.state == REJECTED:
            return Reply(550, f"5.7.1 Message refused by data-loss policy ({', '.join(j.rules)}): "
                              f"{_ascii_reason(j.reason)} [id {msg_id}]", msg_id)
        if m.state == HELD:
            return Reply(250, f"2.0.0 Ok: queued as {msg_id}, held for approval", msg_id)
        return Reply(250, f"2.0.0 Ok: queued as {msg_id}", msg_id)

    def _new_message(self, msg_id: str, rel: str, env: Envelope, data: bytes, j: Judgement) -> NewMessage:
        now = time.time()
        if j.verdict == "reject":
            state, due, expires = REJECTED, None, None
        elif j.verdict == "hold":
            state, due = HELD, None
            expires = now + self.config.quarantine.expire_after
        else:
            state, due, expires = DELAYED, now + self.delay_for(j.recipient_classes), None
        content = j.rewritten if j.rewritten is not None else data
        scope = self._contact_scope(env)
        audit: dict[str, Any] = {}
        if j.logged:
            audit["logged_rules"] = list(j.logged)
        if j.rewritten is not None:
            audit["rewrite"] = j.rewrite_note
            audit["original_sha256"] = hashlib.sha256(data).hexdigest()
        return NewMessage(
            id=msg_id, sender=env.sender, recipients=env.recipients, spool=rel, size=len(content),
            sha256=hashlib.sha256(content).hexdigest(), arrived=now, state=state, due_at=due,
            client=env.client, helo=env.helo, subject=j.subject, verdict=j.verdict, rules=j.rules,
            reason=j.reason, findings=j.findings, records=j.records, parts=j.parts,
            approvals_required=j.approvals_required, expires_at=expires, attachments=j.attachments,
            contact_scopes=(scope, "*") if scope != "*" else ("*",), audit_detail=audit)

    def _observe(self, m: NewMessage, j: Judgement, elapsed: float, size: int) -> None:
        _child(metrics.RECEIVED, "accepted" if m.state != REJECTED else "rejected").inc()
        metrics.BYTES_RECEIVED.inc(size)
        metrics.BYTES_SCANNED.inc(j.bytes_scanned)
        _child(metrics.VERDICTS, j.verdict).inc()
        if j.logged:
            metrics.VERDICTS.labels(verdict="log").inc()
        for f in j.findings:
            metrics.FINDINGS.labels(detector=str(f.get("detector")), severity=str(f.get("severity"))).inc()
            if f.get("detector") == "unscannable":
                reason = str(f.get("sample") or "corrupt").split(":")[0]
                metrics.EXTRACT_FAILURES.labels(reason=reason if reason in metrics.FAILURE_REASONS else "other").inc()
        metrics.SCAN_SECONDS.observe(j.scan_seconds)
        for fmt, sec in j.extract_seconds.items():
            _child(metrics.EXTRACT_SECONDS, fmt).observe(sec)
        metrics.ACCEPT_LATENCY.observe(elapsed)


@functools.lru_cache(maxsize=256)
def _child(metric: Any, value: str) -> Any:
    """`metric.labels(value)`, remembered: the label values seen per message are a handful."""
    return metric.labels(value)


def _ascii_reason(reason: str) -> str:
    """SMTP replies are ASCII: rule reasons read "日本語 / English", so take the English half."""
    text = reason.rsplit(" / ", 1)[-1] if reason else "rule matched"
    return text.encode("ascii", "replace").decode("ascii").replace("\r", " ").replace("\n", " ")[:300]


def _fail_closed(reason: str, detail: str) -> Judgement:
    f = {"rule": "unscannable", "detector": "unscannable", "count": 1, "severity": "medium",
         "part": "message", "sample": reason}
    return Judgement(verdict="hold", rules=("unscannable",), reason=detail, findings=(f,),
                     parts=({"path": "message", "chars": 0, "tables": 0, "unscannable": reason, "detail": detail},))


def _unlink(p: Path) -> None:
    forget_unsynced(p)
    try:
        p.unlink()
    except OSError:
        pass


def _replace_file(p: Path, data: bytes) -> None:
    tmp = p.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    # the spool file's own fsync may already have run on the old inode: make the rename durable here
    dfd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
