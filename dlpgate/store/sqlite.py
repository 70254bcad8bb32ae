"""The SQLite engine (the embedded default): one row per message in exactly one named state, spool
files beside it (dlpgate.store.spool), the values it takes and gives in dlpgate.store.model.

Modelled on Postfix's queue: every move between states is one SQLite transaction (WAL,
synchronous=FULL) that also appends its hash-chained audit entry, so a crash leaves each message
where it was and the audit log never disagrees with the queue. Only this module touches SQLite
and the spool directory; its interface is a handful of transitions so that another backend
(PostgreSQL for several gateways) can sit beside it.

`AsyncStore` runs the transitions on one writer thread and commits whatever arrives together in
one transaction (group commit): 250 is still only sent after the commit that holds the message.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InputError, NotFound, PermissionDenied, StateError, StoreError
from . import spool as _spool  # SEGMENT_MAX_* read through the module, so one setting governs
from .model import (
    BOUNCED,
    DEFERRED,
    DELAYED,
    DELIVERED,
    DELIVERING,
    EXPIRED,
    GENESIS,
    HALTING_EVENTS,
    HELD,
    ID_CHARS,
    QUEUED,
    RECALLED,
    REJECTED,
    RELEASED,
    AttemptResult,
    AuditEntry,
    Claimed,
    NewMessage,
    RcptOutcome,
    Signer,
    _dumps,
    _entry_hash,
    accept_audit,
    accepted_detail_sql,
    accepted_sha256,
    id_prefix_bound,
    last_halt_sql,
    new_id,
    os_user,
)
from .spool import (
    _UNSYNCED,
    _UNSYNCED_LOCK,
    _create_spool_file,
    _write_all,
    erase_spans,
    read_spool_bytes,
    spans_by_segment,
    spool_span,
    start_writeback,
    write_spool_file,
)

T = TypeVar("T")

log = logging.getLogger("dlpgate.store")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  prev_state TEXT,
  kind TEXT NOT NULL DEFAULT 'mail',
  sender TEXT NOT NULL,
  client TEXT NOT NULL DEFAULT '',
  helo TEXT NOT NULL DEFAULT '',
  arrived REAL NOT NULL,
  due_at REAL,
  size INTEGER NOT NULL DEFAULT 0,
  sha256 TEXT NOT NULL DEFAULT '',
  spool TEXT,
  subject TEXT NOT NULL DEFAULT '',
  verdict TEXT NOT NULL DEFAULT 'clean',
  rules TEXT NOT NULL DEFAULT '[]',
  reason TEXT NOT NULL DEFAULT '',
  findings TEXT NOT NULL DEFAULT '[]',
  records INTEGER NOT NULL DEFAULT 0,
  parts TEXT NOT NULL DEFAULT '[]',
  approvals_required INTEGER NOT NULL DEFAULT 1,
  attempts INTEGER NOT NULL DEFAULT 0,
  first_attempt REAL,
  last_error TEXT NOT NULL DEFAULT '',
  expires_at REAL,
  reminded_at REAL,
  updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_due ON messages(due_at) WHERE state IN ('delayed','deferred','released');
CREATE INDEX IF NOT EXISTS messages_state ON messages(state, arrived);
-- senders are looked up case-blind (outbox, recall): an index on sender itself was never used
DROP INDEX IF EXISTS messages_sender;
CREATE INDEX IF NOT EXISTS messages_sender_ci ON messages(lower(sender));
CREATE TABLE IF NOT EXISTS recipients (
  msg_id TEXT NOT NULL,
  rcpt TEXT NOT NULL,
  state TEXT NOT NULL DEFAULT 'pending',
  code INTEGER,
  response TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (msg_id, rcpt)
);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY,
  ts REAL NOT NULL,
  msg_id TEXT NOT NULL,
  event TEXT NOT NULL,
  actor TEXT NOT NULL,
  os_user TEXT NOT NULL,
  detail TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_msg ON audit(msg_id);
CREATE TABLE IF NOT EXISTS approvals (
  msg_id TEXT NOT NULL,
  approver TEXT NOT NULL,
  decision TEXT NOT NULL,
  reason TEXT NOT NULL,
  os_user TEXT NOT NULL,
  ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_msg ON approvals(msg_id);
CREATE TABLE IF NOT EXISTS sendlog (
  msg_id TEXT PRIMARY KEY,
  ts REAL NOT NULL,
  sender TEXT NOT NULL,
  recipients TEXT NOT NULL,
  subject TEXT NOT NULL,
  attachments TEXT NOT NULL,
  verdict TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sendlog_ts ON sendlog(ts);
DROP INDEX IF EXISTS sendlog_sender;
CREATE INDEX IF NOT EXISTS sendlog_sender_ci ON sendlog(lower(sender));
CREATE TABLE IF NOT EXISTS attachment_hashes (
  sha256 TEXT NOT NULL,
  msg_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attachment_hashes_h ON attachment_hashes(sha256);
CREATE TABLE IF NOT EXISTS segments (
  path TEXT PRIMARY KEY,
  live INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS contacts (
  scope TEXT NOT NULL,
  domain TEXT NOT NULL,
  count INTEGER NOT NULL,
  first_seen REAL NOT NULL,
  PRIMARY KEY (scope, domain)
);
"""


def _where(*conds: tuple[str, Any]) -> tuple[str, list[Any]]:
    """A WHERE clause from (sql-with-one-?, value) pairs, skipping those whose value is None."""
    used = [(sql, v) for sql, v in conds if v is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(sql for sql, _ in used), [v for _, v in used]

_MAX_VARIABLES = 32766  # SQLite's default SQLITE_MAX_VARIABLE_NUMBER (3.32 and later)


def _values_per_statement() -> int:
    """Bound parameters one statement may take: half of SQLite's limit (999 before 3.32)."""
    return (_MAX_VARIABLES if sqlite3.sqlite_version_info >= (3, 32, 0) else 999) // 2


def _insert_rows(c: sqlite3.Connection, head: str, width: int, flat: list[Any], *, row_sql: str = "",
                 tail: str = "") -> None:
    """`head` + many VALUES rows + `tail`, in as few statements as the variable limit allows:
    an INSERT, or an UPDATE ... FROM (VALUES ...). `flat`: the rows' values in order, `width` each."""
    if not flat:
        return
    row_sql = row_sql or "(" + ",".join("?" * width) + ")"
    per = max(1, _values_per_statement() // width)
    n = len(flat) // width
    for i in range(0, n, per):
        k = min(per, n - i)
        c.execute(head + ",".join([row_sql] * k) + tail, flat[i * width:(i + k) * width])


def _select_in(c: sqlite3.Connection, sql: str, ids: Sequence[str], *, first: tuple[Any, ...] = ()) -> list[Any]:
    """`sql` with its one `IN ({})` filled for `ids` (in chunks inside SQLite's variable limit)."""
    limit = _values_per_statement() - len(first)
    out: list[Any] = []
    for i in range(0, len(ids), limit):
        part = ids[i:i + limit]
        out += c.execute(sql.format(",".join("?" * len(part))), [*first, *part]).fetchall()
    return out



class Store:
    """Synchronous store. One instance per thread; every public transition is one transaction."""

    def __init__(self, root: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
                 signer: Signer | None = None, readonly: bool = False) -> None:
        self.root = Path(root)
        self._root_str = str(self.root)
        self.clock = clock
        self.signer = signer  # signs the last audit entry of every append (None: entries stay unsigned)
        self.spool_dir = self.root / "spool"
        try:
            if readonly:  # an auditor's copy: nothing is created, migrated or written
                db = self.root / "dlpgate.db"
                if not db.is_file():
                    raise InputError(f"no message store at {self.root}")
                uri = db.resolve().as_uri()
                self.conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)
                try:
                    self.conn.execute("SELECT 1 FROM audit LIMIT 1").fetchall()
                except sqlite3.OperationalError:  # a copy without its -shm on a read-only disk: read it as is
                    self.conn.close()
                    self.conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False)
                    self.conn.execute("SELECT 1 FROM audit LIMIT 1").fetchall()  # not a store: StoreError below
                self.conn.row_factory = sqlite3.Row
            else:
                self._open()
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open store at {self.root}: {e}") from e
        self._init_state()

    def _open(self) -> None:
        """Create or open the database (WAL, synchronous=FULL) and migrate its schema."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.spool_dir.mkdir(exist_ok=True, mode=0o700)
        db = self.root / "dlpgate.db"
        created = not db.exists()
        self.conn = sqlite3.connect(db, isolation_level=None, timeout=30.0, check_same_thread=False)
        if created:
            os.chmod(db, 0o600)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        had_segments = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'segments'").fetchone()
        self.conn.executescript(_SCHEMA)
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(audit)")}
        if "sig" not in cols:  # a store from before signed entries (issue 14): sealed at first start
            self.conn.execute("ALTER TABLE audit ADD COLUMN sig TEXT NOT NULL DEFAULT ''")
        if not had_segments:  # a store from before the table: count what its rows name
            self.conn.execute("INSERT OR REPLACE INTO segments(path, live) SELECT substr(spool, 1,"
                              " instr(spool, '#') - 1), count(*) FROM messages WHERE spool LIKE 'spool/%#%'"
                              " GROUP BY 1")

    def _init_state(self) -> None:
        self._depth = 0
        self._chain: tuple[int, str] | None = None  # audit head, cached within one transaction
        self._dir_fds: dict[str, int] = {}
        self._pending_files: list[int] = []  # spool fds to fsync before this batch commits
        self._pending_dirs: set[str] = set()
        # the spool segment this store appends small messages to (only the gateway's writer does)
        self._seg_fd: int | None = None
        self._seg_rel = ""
        self._seg_off = 0
        self._seg_born = 0.0
        self._seg_unsynced = False  # appends since its last fsync
        self._seg_dir: str | None = None  # its directory, until fsync'd once after it was created
        self._seg_retired: list[int] = []  # earlier segments with appends not yet fsync'd

    def close(self) -> None:
        self._retire_segment()
        for fd in self._seg_retired:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._seg_retired = []
        for fd in self._dir_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._dir_fds.clear()
        self.conn.close()

    # ---------------------------------------------------------------- transactions
    BUSY_SECONDS = 30.0

    def _begin_immediate(self, c: sqlite3.Connection) -> None:
        """Take the write lock, retrying every few hundred microseconds while another writer has it.

        The gateway and the delivery process both write, each holding the lock for ~1-2 ms per
        group commit. SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25... ms between tries:
        measured under load, BEGIN then waited 4 ms at p90 and 35 ms at p99 for a lock that was
        free again within 2 ms. Retrying finely here keeps the wait close to the holder's commit.
        """
        c.execute("PRAGMA busy_timeout = 0")
        try:
            delay, deadline = 0.00025, 0.0
            while True:
                try:
                    c.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as e:
                    if getattr(e, "sqlite_errorcode", 5) & 0xFF != 5:  # not SQLITE_BUSY
                        raise
                    now = time.monotonic()
                    if not deadline:
                        deadline = now + self.BUSY_SECONDS
                    elif now > deadline:
                        raise
                time.sleep(delay)
                delay = min(delay * 2, 0.001)
        finally:
            c.execute(f"PRAGMA busy_timeout = {int(self.BUSY_SECONDS * 1000)}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic step. Nested calls become savepoints of the enclosing batch."""
        c = self.conn
        if self._depth:
            name = f"sp{self._depth}"
            c.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield c
            except BaseException:
                self._chain = None
                c.execute(f"ROLLBACK TO {name}")
                c.execute(f"RELEASE {name}")
                raise
            else:
                c.execute(f"RELEASE {name}")
            finally:
                self._depth -= 1
            return
        try:
            self._begin_immediate(c)
        except sqlite3.Error as e:
            raise StoreError(f"store busy or unwritable: {e}") from e
        self._depth = 1
        self._chain = None
        try:
            yield c
            if self.spool_unsynced:
                self._flush_spool()  # spool files durable before the rows that name them
        except BaseException:
            self._depth = 0
            self._chain = None
            self._drop_pending_spool()
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            raise
        try:
            c.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            raise StoreError(f"commit failed: {e}") from e
        finally:
            self._depth = 0
            self._chain = None

    def run_batch(self, jobs: Sequence[Callable[[Store], Any]],
                  more: Callable[[], Sequence[Callable[[Store], Any]]] | None = None) -> list[tuple[bool, Any]]:
        """Run jobs in one transaction (each in its own savepoint); one fsync for all of them.

        `more` is asked for further jobs once the write lock is held: whatever queued up while
        this batch waited for the other writer joins it instead of waiting for the next commit.
        The accepts among them (`AcceptJob`) are written together (`accept_many`), and so are the
        deliveries (`DeliveredJob`, `finish_delivered`); if that fails, they run one by one like
        the other jobs, so one bad message never costs the others.
        """
        with self.transaction():  # its end fsyncs the spool files the jobs registered: if that
            if more is not None:  # fails, the whole batch rolls back and nobody gets a 250
                jobs = [*jobs, *more()]
            results: list[tuple[bool, Any] | None] = [None] * len(jobs)
            for kind in (AcceptJob, DeliveredJob):
                group: dict[int, Any] = {i: j for i, j in enumerate(jobs) if type(j) is kind and j.groupable}
                if len(group) < 2:
                    continue
                try:
                    with self.transaction():
                        values: list[Any] = kind.run_group(self, list(group.values()))
                    for i, v in zip(group, values, strict=True):
                        results[i] = (True, v)
                except Exception:  # noqa: BLE001 - rolled back; each is tried alone below
                    pass
            for i, job in enumerate(jobs):
                if results[i] is not None:
                    continue
                try:
                    with self.transaction():  # a savepoint: a failing job leaves no trace
                        results[i] = (True, job(self))
                except Exception as e:  # noqa: BLE001 - handed back to the job's caller
                    results[i] = (False, e)
        done = [r for r in results if r is not None]
        assert len(done) == len(jobs), "every job has its result"
        return done

    # ---------------------------------------------------------------- spool
    def spool_path(self, rel: str) -> Path:
        return self.root / rel

    def write_spool(self, msg_id: str, data: bytes) -> str:
        """Write the bytes durably (fsync file and directory, mode 0600); return the relative path."""
        return write_spool_file(self.root, msg_id, data)

    def sync_spool(self, rels: Sequence[str]) -> None:
        """Make spool files written with sync=False durable, with their directories, before the
        commit. Inside a transaction the fsyncs are deferred to its end, right before COMMIT."""
        root = self._root_str
        for rel in rels:
            p = os.path.join(root, rel)
            with _UNSYNCED_LOCK:
                fd = _UNSYNCED.pop(p, None)
            if fd is None:
                fd = os.open(p, os.O_RDONLY)
            self._pending_files.append(fd)
            self._pending_dirs.add(os.path.dirname(p))
        if not self._depth:
            self._flush_spool()

    def _flush_spool(self) -> None:
        """fsync every spool file and directory the batch's jobs registered (raises on failure).

        Writeback of all the files is started first (sync_file_range), then each is fsync'd:
        the disk works on the whole batch at once. Measured here for 20 files of 10 KB: 1.7 ms
        instead of 3.9 ms one after the other. Directories are fsync'd once per batch, and the
        spool is sharded by arrival time, so a batch usually shares one directory.
        """
        files, dirs = self._pending_files, self._pending_dirs
        self._pending_files, self._pending_dirs = [], set()
        retired, self._seg_retired = self._seg_retired, []
        active = self._seg_fd if self._seg_unsynced else None
        synced = [*files, *retired] + ([active] if active is not None else [])
        try:
            if len(synced) > 1:
                for fd in synced:
                    start_writeback(fd)
            for fd in synced:
                os.fsync(fd)
        except BaseException:
            if active is not None:  # after a failed fsync the page cache cannot be trusted: no more appends
                self._retire_segment(drop=True)
            raise
        finally:
            for fd in (*files, *retired):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._seg_unsynced = False
        if self._seg_dir is not None:
            dirs.add(self._seg_dir)
        for d in dirs:
            dfd = self._dir_fds.get(d)
            if dfd is None:  # directory fds stay open: no open() per fsync
                dfd = self._dir_fds[d] = os.open(d, os.O_RDONLY)
            os.fsync(dfd)
        self._seg_dir = None

    @property
    def spool_unsynced(self) -> bool:
        """Spool bytes written for this batch that are not durable yet."""
        return bool(self._pending_files or self._pending_dirs or self._seg_unsynced or self._seg_retired
                    or self._seg_dir)

    def flush_spool(self) -> None:
        """Make every spool write registered so far durable now (outside a transaction)."""
        if self.spool_unsynced:
            self._flush_spool()

    def append_segment(self, data: bytes) -> str:
        """Append a message to the open spool segment and return its `spool` reference.

        Not durable yet: the batch's flush fsyncs the segment before the COMMIT that names it
        (or call `flush_spool`). A write that fails (a full disk) is cut off the segment's end,
        and the segment takes no more appends: the next message starts a new one.
        """
        now = time.monotonic()
        if (self._seg_fd is None or now - self._seg_born > _spool.SEGMENT_MAX_AGE
                or (self._seg_off and self._seg_off + len(data) > _spool.SEGMENT_MAX_BYTES)):
            self._new_segment(now)
        fd = self._seg_fd
        assert fd is not None
        try:
            _write_all(fd, data)
        except BaseException:
            with contextlib.suppress(OSError):  # what got written of it belongs to nobody
                os.ftruncate(fd, self._seg_off)
            self._retire_segment()
            raise
        ref = f"{self._seg_rel}#{self._seg_off}+{len(data)}"
        self._seg_off += len(data)
        self._seg_unsynced = True
        return ref

    def _new_segment(self, now: float) -> None:
        self._retire_segment()
        rel, path, fd = _create_spool_file(self._root_str, new_id(), ".seg")
        self._seg_fd, self._seg_rel, self._seg_off, self._seg_born = fd, rel, 0, now
        self._seg_dir = os.path.dirname(path)

    def _retire_segment(self, *, drop: bool = False) -> None:
        """Stop appending to the open segment; its unsynced appends are fsync'd by the next flush
        (or, with `drop`, after a failed fsync, never: the batch naming them rolled back)."""
        fd, self._seg_fd = self._seg_fd, None
        if fd is None:
            return
        if self._seg_unsynced and not drop:
            self._seg_retired.append(fd)
        else:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._seg_unsynced = False

    def active_segment(self) -> str:
        return self._seg_rel if self._seg_fd is not None else ""

    def unreferenced_segments(self) -> list[Path]:
        """Segment files no committed row names: an append whose commit never happened (a crash
        in between), or a segment whose messages were all purged and whose deletion a crash cut
        short. Each segment's committed references are counted in `segments` as rows name it."""
        live = {r[0] for r in self.conn.execute("SELECT path FROM segments WHERE live > 0")}
        active = self.active_segment()
        out = []
        for p in self.spool_dir.glob("*/*.seg"):
            rel = str(p.relative_to(self.root))
            if rel not in live and rel != active:
                out.append(p)
        return out

    def _drop_pending_spool(self) -> None:
        for fd in self._pending_files:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pending_files, self._pending_dirs = [], set()

    def discard_spool(self, rel: str) -> None:
        if spool_span(rel) is not None:  # a span of a segment: the segment goes when no row names it
            return
        with contextlib.suppress(OSError):
            (self.root / rel).unlink()

    def read_spool(self, msg_id: str) -> bytes:
        row = self._row(msg_id)
        if not row["spool"]:
            raise StateError(f"message {msg_id}: its content is no longer kept (retention)")
        return read_spool_bytes(self.root, row["spool"])

    # ---------------------------------------------------------------- audit
    def _audit(self, c: sqlite3.Connection, msg_id: str, event: str, actor: str = "dlpgate",
               detail: dict[str, Any] | None = None, user: str | None = None) -> None:
        self._audit_many(c, [(msg_id, event, actor, detail or {})], user=user)

    def _audit_many(self, c: sqlite3.Connection, entries: Sequence[tuple[str, str, str, dict[str, Any]]],
                    user: str | None = None) -> None:
        """Append entries (msg_id, event, actor, detail) to the hash chain in order, with one
        statement. The chain head is read once per transaction."""
        if not entries:
            return
        if self._chain is None:  # first entry of this transaction: read the head once
            last = c.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            self._chain = (last["seq"], last["hash"]) if last else (0, GENESIS)
        seq, prev = self._chain
        user = user if user is not None else os_user()
        rows: list[Any] = []
        for msg_id, event, actor, detail in entries:
            seq += 1
            ts = self.clock()
            dj = _dumps(detail)
            h = _entry_hash(prev, seq, ts, msg_id, event, actor, user, dj)
            rows += (seq, ts, msg_id, event, actor, user, dj, prev, h, "")
            prev = h
        # one signature per append: it covers this entry and, through the chain, every one before it
        if self.signer is not None:
            rows[-1] = self.signer(seq, prev)
        _insert_rows(c, "INSERT INTO audit(seq, ts, msg_id, event, actor, os_user, detail, prev_hash, hash, sig)"
                        " VALUES ", 10, rows)
        self._chain = (seq, prev)

    def audit_entries(self, *, since: float | None = None, until: float | None = None,
                      msg_id: str | None = None) -> list[AuditEntry]:
        where, args = _where(("ts >= ?", since), ("ts < ?", until), ("msg_id = ?", msg_id))
        q = "SELECT * FROM audit" + where
        rows = self.conn.execute(q + " ORDER BY seq", args).fetchall()
        return [_audit_entry(r) for r in rows]

    def audit_chain(self, after_seq: int = 0, limit: int = 10_000) -> list[AuditEntry]:
        """Raw chain entries after `after_seq`, in seq order, for verification (a page at a time)."""
        rows = self.conn.execute("SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
        return [_audit_entry(r) for r in rows]

    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry; (0, GENESIS) for an empty log."""
        r = self.conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(r["seq"]), str(r["hash"])) if r else (0, GENESIS)

    def audit_signed(self) -> bool:
        """Whether any entry carries a signature (False: a store from before signing, or a new one)."""
        return self.conn.execute("SELECT 1 FROM audit WHERE sig != '' LIMIT 1").fetchone() is not None

    def append_audit(self, msg_id: str, event: str, actor: str, detail: dict[str, Any], user: str) -> None:
        """One entry of its own (a refusal, the seal of an old chain): signed like every append."""
        with self.transaction() as c:
            self._audit(c, msg_id, event, actor=actor, detail=detail, user=user)

    def approval_rows(self) -> builtins.list[dict[str, Any]]:
        """The approvals table as stored (audit verify checks each row against the chain)."""
        return [dict(r) for r in self.conn.execute(
            "SELECT rowid, msg_id, approver, decision, reason, os_user, ts FROM approvals ORDER BY rowid")]

    def decisions(self, msg_id: str, c: sqlite3.Connection | None = None) -> builtins.list[dict[str, Any]]:
        """People's decisions on one message, read from the audit chain (the signed record)."""
        rows = (c or self.conn).execute(
            "SELECT * FROM audit WHERE msg_id = ? AND event IN ('approved','released','rejected')"
            " AND actor != 'dlpgate' ORDER BY seq", (msg_id,)).fetchall()
        out = []
        for r in rows:
            d = json.loads(r["detail"])
            out.append({"approver": r["actor"], "decision": "reject" if r["event"] == "rejected" else "release",
                        "reason": d.get("reason", ""), "os_user": r["os_user"],
                        "login": d.get("login", r["os_user"]), "ts": r["ts"], "seq": r["seq"]})
        return out

    def resolve_id(self, prefix: str) -> str:
        """A full message id from a unique prefix (NotFound / InputError for none or several)."""
        p = prefix.strip().lower()
        if not p or any(ch not in ID_CHARS for ch in p):
            raise NotFound(f"no message with id {prefix!r}")
        rows = self.conn.execute("SELECT id FROM messages WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                                 (p, id_prefix_bound(p))).fetchall()
        if not rows:
            raise NotFound(f"no message with id {prefix!r}")
        if len(rows) > 1 and rows[0]["id"] != p:
            n = self.conn.execute("SELECT count(*) FROM messages WHERE id >= ? AND id < ?", (p, id_prefix_bound(p))).fetchone()[0]
            raise InputError(f"id {prefix!r} is ambiguous: it starts {n} message ids; give more characters")
        return str(rows[0]["id"])

    def verify_audit(self) -> tuple[bool, str]:
        """Walk the chain: (True, summary) or (False, the first broken entry and why)."""
        prev, expect_seq, n = GENESIS, 1, 0
        for r in self.conn.execute("SELECT * FROM audit ORDER BY seq"):
            n += 1
            if r["seq"] != expect_seq:
                return False, f"entry {expect_seq} is missing (next is {r['seq']})"
            if r["prev_hash"] != prev:
                return False, f"entry {r['seq']}: does not follow entry {r['seq'] - 1} (removed or reordered)"
            h = _entry_hash(r["prev_hash"], r["seq"], r["ts"], r["msg_id"], r["event"], r["actor"],
                            r["os_user"], r["detail"])
            if h != r["hash"]:
                return False, f"entry {r['seq']}: content does not match its hash (edited)"
            prev, expect_seq = r["hash"], expect_seq + 1
        return True, f"{n} entries, chain intact"

    # ---------------------------------------------------------------- transitions
    def accept(self, m: NewMessage, notices: Sequence[NewMessage] = (), *, spool: str | None = None) -> None:
        """Commit a judged message (delayed / held / rejected) with its audit trail. `spool`, when
        given, is where its bytes are (instead of `m.spool`: a span appended by the writer)."""
        with self.transaction():
            self.accept_many((m,), None if spool is None else (spool,))
            for n in notices:
                self.accept(n)

    def accept_many(self, ms: Sequence[NewMessage], spools: Sequence[str | None] | None = None) -> None:
        """Commit judged messages (no notices) as `accept` would one after the other, with one
        multi-row statement per table.

        Why: the writer thread releases the GIL for every SQLite statement and, while the event
        loop runs Python, waits for it back. Seven statements per message, each waiting its turn,
        cost more than the SQL; a batch of messages in five statements does not.
        """
        if not ms:
            return
        now = self.clock()
        msg_rows: list[Any] = []
        rcpt_rows: list[Any] = []
        audit_rows: list[tuple[str, str, str, dict[str, Any]]] = []  # msg_id, event, actor, detail
        sendlog_rows: list[Any] = []
        hash_rows: list[Any] = []
        contact_rows: list[Any] = []
        segment_refs: dict[str, int] = {}
        for k, m in enumerate(ms):
            given = spools[k] if spools is not None else None
            spool = m.spool if given is None else given
            if "#" in spool:
                seg = spool.partition("#")[0]
                segment_refs[seg] = segment_refs.get(seg, 0) + 1
            msg_rows += (m.id, m.state, m.kind, m.sender, m.client, m.helo, m.arrived, m.due_at, m.size, m.sha256,
                         spool, m.subject, m.verdict, _dumps(list(m.rules)), m.reason, _dumps(list(m.findings)),
                         m.records, _dumps(list(m.parts)), m.approvals_required, m.expires_at, now)
            for r in dict.fromkeys(m.recipients):  # INSERT OR IGNORE kept the first of a repeated address
                rcpt_rows += (m.id, r)
            audit_rows += accept_audit(m)
            if m.attachments:
                sendlog_rows.append((m.id, m.arrived, m.sender, _dumps(list(m.recipients)), m.subject,
                                     _dumps(list(m.attachments)), m.verdict))
                hash_rows += [(a["sha256"], m.id) for a in m.attachments]
            if m.contact_scopes:
                doms = {r.rpartition("@")[2].lower() for r in m.recipients}
                for scope in m.contact_scopes:
                    for d in doms:
                        contact_rows += (scope, d, now)
        with self.transaction() as c:
            _insert_rows(c, "INSERT INTO messages(id, state, kind, sender, client, helo, arrived, due_at, size,"
                            " sha256, spool, subject, verdict, rules, reason, findings, records, parts,"
                            " approvals_required, expires_at, updated) VALUES ", 21, msg_rows)
            _insert_rows(c, "INSERT OR IGNORE INTO recipients(msg_id, rcpt) VALUES ", 2, rcpt_rows)
            for seg, n in segment_refs.items():  # a segment goes when its count is back to 0 (purge)
                c.execute("INSERT INTO segments(path, live) VALUES (?, ?)"
                          " ON CONFLICT(path) DO UPDATE SET live = live + excluded.live", (seg, n))
            self._audit_many(c, audit_rows)
            for row in sendlog_rows:
                c.execute("INSERT OR REPLACE INTO sendlog(msg_id, ts, sender, recipients, subject, attachments,"
                          " verdict) VALUES (?,?,?,?,?,?,?)", row)
            if hash_rows:
                c.executemany("INSERT INTO attachment_hashes(sha256, msg_id) VALUES (?,?)", hash_rows)
            # rows in one statement are applied in order: a (scope, domain) twice counts twice
            _insert_rows(c, "INSERT INTO contacts(scope, domain, count, first_seen) VALUES ", 3, contact_rows,
                         row_sql="(?,?,1,?)", tail=" ON CONFLICT(scope, domain) DO UPDATE SET count = count + 1")

    def known_domains(self, scope: str, domains: Sequence[str]) -> set[str]:
        if not domains:
            return set()
        qs = ",".join("?" * len(domains))
        rows = self.conn.execute(f"SELECT domain FROM contacts WHERE scope = ? AND domain IN ({qs})",
                                 [scope, *domains]).fetchall()
        return {r["domain"] for r in rows}

    def next_due(self) -> float | None:
        r = self.conn.execute("SELECT min(due_at) AS d FROM messages INDEXED BY messages_due"
                              " WHERE state IN ('delayed','deferred','released')").fetchone()
        return None if r["d"] is None else float(r["d"])

    def claim_due_next(self, limit: int) -> tuple[list[Claimed], float | None]:
        """Claim what is due and, when that was less than `limit`, when the next message falls due
        (the deliverer's one store visit per claim; the PostgreSQL engine does it in one statement)."""
        claimed = self.claim_due(limit)
        return claimed, (self.next_due() if len(claimed) < limit else None)

    def claim_due(self, limit: int) -> list[Claimed]:
        """Move up to `limit` due messages to delivering, earliest first."""
        now = self.clock()
        out: list[Claimed] = []
        with self.transaction() as c:
            # INDEXED BY: the partial index on due_at keeps this O(batch) with 100k rows queued;
            # only the columns a delivery needs (not the findings and parts JSON)
            rows = c.execute("SELECT id, state, sender, spool, client, helo, arrived, attempts, first_attempt, kind, "
                             + last_halt_sql("messages.id") + " AS last_halt, "
                             + accepted_detail_sql("messages.id") + " AS accepted"
                             " FROM messages INDEXED BY messages_due WHERE state IN ('delayed','deferred',"
                             "'released') AND due_at <= ? ORDER BY due_at LIMIT ?", (now, limit)).fetchall()
            if not rows:
                return out
            rows = self._refuse_forged(c, rows, now)
            if not rows:
                return out
            pending: dict[str, list[str]] = {r["id"]: [] for r in rows}
            for x in _select_in(c, "SELECT msg_id, rcpt FROM recipients WHERE msg_id IN ({}) AND state = 'pending'"
                                   " ORDER BY rowid", list(pending)):
                pending[x["msg_id"]].append(x["rcpt"])
            updates = []
            for r in rows:
                first = r["first_attempt"] if r["first_attempt"] is not None else now
                updates.append((r["state"], first, now, r["id"]))
                rel = r["spool"]
                span = spool_span(rel) if "#" in rel else None
                out.append(Claimed(r["id"], r["sender"], tuple(pending[r["id"]]),
                                   self.root / (span[0] if span else rel), r["client"], r["helo"], r["arrived"],
                                   r["attempts"], first, r["kind"], span[1:] if span else None,
                                   accepted_sha256(r["accepted"])))
            c.executemany("UPDATE messages SET state='delivering', prev_state=?, first_attempt=?, updated=?"
                          " WHERE id=?", updates)
        return out

    def _refuse_forged(self, c: sqlite3.Connection, rows: list[sqlite3.Row], now: float) -> list[sqlite3.Row]:
        """Due rows whose chain last left them held, rejected, expired or recalled go back to that
        state (with a `tampered` entry and an error in the log) instead of out: their state was
        written into the database without a decision."""
        forged = [r for r in rows if r["last_halt"] in HALTING_EVENTS]
        for r in forged:
            c.execute("UPDATE messages SET state=?, due_at=NULL, updated=? WHERE id=?", (r["last_halt"], now, r["id"]))
            self._audit(c, r["id"], "tampered", detail={"found": r["state"], "restored": r["last_halt"]})
            log.error("message %s was %s without a decision in the signed chain (last: %s): not delivered,"
                      " back to %s", r["id"], r["state"], r["last_halt"], r["last_halt"],
                      extra={"event": "tampered", "msg_id": r["id"]})
        return [r for r in rows if r["last_halt"] not in HALTING_EVENTS] if forged else rows

    def finish_attempt(self, msg_id: str, outcomes: Sequence[RcptOutcome], *, retry_at: float | None,
                       give_up: bool, notices: Sequence[NewMessage] = ()) -> AttemptResult:
        """Record one delivery attempt's per-recipient outcomes and move the message on.

        2xx -> delivered, 5xx -> bounced, anything else stays pending: deferred until `retry_at`,
        or bounced when `give_up` (the retry window is over).
        """
        now = self.clock()
        with self.transaction() as c:
            r = c.execute("SELECT state FROM messages WHERE id=?", (msg_id,)).fetchone()
            if r is None:
                raise NotFound(f"no message with id {msg_id!r}")
            if r["state"] != DELIVERING:
                raise StateError(f"message {msg_id} is {r['state']}, not delivering")
            delivered, bounced = [], []
            for o in outcomes:
                if 200 <= o.code < 300:
                    st = "delivered"
                    delivered.append(o.rcpt)
                elif 500 <= o.code < 600 or give_up:
                    st = "bounced"
                    bounced.append(o)
                else:
                    st = "pending"
                c.execute("UPDATE recipients SET state=?, code=?, response=? WHERE msg_id=? AND rcpt=?",
                          (st, o.code, o.response[:500], msg_id, o.rcpt))
            counts = {x["state"]: x["n"] for x in c.execute(
                "SELECT state, count(*) AS n FROM recipients WHERE msg_id=? GROUP BY state", (msg_id,))}
            errors = "; ".join(f"{o.code} {o.response}"[:200] for o in outcomes if not 200 <= o.code < 300)
            if counts.get("pending"):
                state, due = DEFERRED, retry_at
            elif counts.get("delivered"):
                state, due = DELIVERED, None
            else:
                state, due = BOUNCED, None
            c.execute("UPDATE messages SET state=?, prev_state=NULL, due_at=?, attempts=attempts+1, last_error=?,"
                      " updated=? WHERE id=?", (state, due, errors[:1000], now, msg_id))
            if delivered:
                self._audit(c, msg_id, "delivered", detail={"recipients": delivered})
            if bounced:
                self._audit(c, msg_id, "bounced", detail={
                    "recipients": [{"rcpt": o.rcpt, "code": o.code, "response": o.response[:200]}
                                   for o in bounced]})
            if state == DEFERRED:
                self._audit(c, msg_id, "deferred", detail={"error": errors[:300], "retry_at": retry_at})
            for n in notices:
                self.accept(n)
        return AttemptResult(state, tuple(bounced), tuple(delivered))

    def finish_delivered(self, items: Sequence[tuple[str, Sequence[RcptOutcome]]]) -> list[AttemptResult]:
        """`finish_attempt` for attempts that every recipient accepted (2xx), several messages at a
        time in a handful of statements (see `accept_many` for why). Raises, leaving the caller to
        record them one by one, if any message is not delivering or would keep a pending recipient.
        """
        if not items:
            return []
        now = self.clock()
        ids = [mid for mid, _ in items]
        with self.transaction() as c:
            states = {r["id"]: r["state"] for r in _select_in(c, "SELECT id, state FROM messages WHERE id IN ({})", ids)}
            for mid in ids:
                if states.get(mid) != DELIVERING:
                    raise StateError(f"message {mid} is {states.get(mid)}, not delivering")
            if len(set(ids)) != len(ids):
                raise StateError("a message appears twice in one batch")
            rows: list[Any] = []
            for mid, outcomes in items:
                for o in outcomes:
                    if not 200 <= o.code < 300:
                        raise StateError("finish_delivered takes delivered attempts only")
                    rows += (o.code, o.response[:500], mid, o.rcpt)
            if sqlite3.sqlite_version_info >= (3, 33, 0):  # UPDATE ... FROM
                _insert_rows(c, "UPDATE recipients SET state='delivered', code=v.column1, response=v.column2"
                                " FROM (VALUES ", 4, rows,
                             tail=") AS v WHERE recipients.msg_id = v.column3 AND recipients.rcpt = v.column4")
            else:
                c.executemany("UPDATE recipients SET state='delivered', code=?, response=? WHERE msg_id=? AND rcpt=?",
                              [tuple(rows[i:i + 4]) for i in range(0, len(rows), 4)])
            if _select_in(c, "SELECT 1 FROM recipients WHERE state='pending' AND msg_id IN ({}) LIMIT 1", ids):
                raise StateError("a recipient would stay pending")
            _select_in(c, "UPDATE messages SET state='delivered', prev_state=NULL, due_at=NULL,"
                          " attempts=attempts+1, last_error='', updated=? WHERE id IN ({})", ids, first=(now,))
            self._audit_many(c, [(mid, "delivered", "dlpgate", {"recipients": [o.rcpt for o in outcomes]})
                                 for mid, outcomes in items])
        return [AttemptResult(DELIVERED, (), tuple(o.rcpt for o in outcomes)) for _, outcomes in items]

    def recover(self) -> int:
        """After a crash: every delivering row goes back to the state it was claimed from."""
        now = self.clock()
        with self.transaction() as c:
            rows = c.execute("SELECT id, prev_state FROM messages WHERE state='delivering'").fetchall()
            for r in rows:
                back = r["prev_state"] if r["prev_state"] in QUEUED else DEFERRED
                c.execute("UPDATE messages SET state=?, prev_state=NULL, due_at=min(coalesce(due_at, ?), ?),"
                          " updated=? WHERE id=?", (back, now, now, now, r["id"]))
                self._audit(c, r["id"], "recovered", detail={"state": back})
        return len(rows)

    def orphan_spool_files(self) -> list[Path]:
        """Spool files with no row: written, but never acknowledged (crash before commit). Also
        the segments no row names (start-up: nobody is appending to them)."""
        known = {r[0] for r in self.conn.execute("SELECT spool FROM messages WHERE spool IS NOT NULL")}
        out = []
        for p in self.spool_dir.glob("*/*.eml"):
            if str(p.relative_to(self.root)) not in known:
                out.append(p)
        return out + self.unreferenced_segments()

    def recall(self, msg_id: str, sender: str, *, login: str | None = None, admin: bool = False) -> None:
        """Cancel a delayed message. `login`: the caller the control API verified; `admin`: an
        administrator acting for the sender (recorded as such: actor = the admin's login)."""
        with self.transaction() as c:
            r = self._row(msg_id, c)
            if r["sender"].lower() != sender.lower() or r["kind"] != "mail":
                raise PermissionDenied(f"message {msg_id}: only its sender may recall it")
            if r["state"] != DELAYED:
                raise StateError(f"message {msg_id} is {r['state']}: only a delayed message can be recalled")
            c.execute("UPDATE messages SET state='recalled', due_at=NULL, updated=? WHERE id=?",
                      (self.clock(), msg_id))
            user = login if login is not None else None
            detail: dict[str, Any] = {} if login is None else {"login": login}
            if admin:
                detail["on_behalf_of"] = r["sender"]
            self._audit(c, msg_id, "recalled", actor=(login or sender) if admin else sender, detail=detail, user=user)

    def decide(self, msg_id: str, approver: str, decision: str, reason: str,
               notices: Callable[[sqlite3.Row, str], Sequence[NewMessage]] | None = None, *,
               login: str | None = None, via: str = "") -> str:
        """Record a supervisor's release/reject of a held message; return the new state.

        Two approvals are two people: a release counts distinct logins (the kernel-verified
        caller, read back from the signed chain), not addresses; the message is released only when
        their number reaches approvals_required. Permission checks (routing, bindings, no
        self-approval) are the control API's (approvals.py); the state check, the count and the
        write are here, in one transaction.
        """
        now = self.clock()
        who = login if login is not None else os_user()
        with self.transaction() as c:
            r = self._row(msg_id, c)
            if r["state"] != HELD:
                raise StateError(f"message {msg_id} is {r['state']}: already decided" if r["state"] != DELAYED
                                 else f"message {msg_id} is not held")
            prior = {x["login"] for x in self.decisions(msg_id, c) if x["decision"] == "release"}
            if decision == "release" and who in prior:
                raise PermissionDenied(f"message {msg_id}: {who} has already approved it; a second person"
                                       " is needed")
            c.execute("INSERT INTO approvals(msg_id, approver, decision, reason, os_user, ts) VALUES (?,?,?,?,?,?)",
                      (msg_id, approver, decision, reason, who, now))
            base = {"reason": reason, "login": who, **({"via": via} if via else {})}
            if decision == "reject":
                state = REJECTED
                c.execute("UPDATE messages SET state=?, due_at=NULL, updated=? WHERE id=?", (state, now, msg_id))
                self._audit(c, msg_id, "rejected", actor=approver, detail=base, user=who)
            else:
                have = len(prior) + 1
                if have >= r["approvals_required"]:
                    state = RELEASED
                    c.execute("UPDATE messages SET state=?, due_at=?, updated=? WHERE id=?",
                              (state, now, now, msg_id))
                    self._audit(c, msg_id, "released", actor=approver, detail={**base, "approvals": have},
                                user=who)
                else:
                    state = HELD
                    self._audit(c, msg_id, "approved", actor=approver, detail={
                        **base, "approvals": have, "required": r["approvals_required"]}, user=who)
            if notices is not None:
                for n in notices(r, state):
                    self.accept(n)
        return state

    def expire_due(self, action: str, make_notices: Callable[[sqlite3.Row, str], Sequence[NewMessage]]
                   | None = None, may_release: Callable[[sqlite3.Row], bool] | None = None) -> list[str]:
        """Held messages past expires_at end as expired (or released when action == 'release' and
        `may_release` allows it for that row)."""
        now = self.clock()
        done = []
        with self.transaction() as c:
            rows = c.execute("SELECT * FROM messages WHERE state='held' AND expires_at IS NOT NULL"
                             " AND expires_at <= ?", (now,)).fetchall()
            for r in rows:
                if action == "release" and (may_release is None or may_release(r)):
                    state = RELEASED
                    c.execute("UPDATE messages SET state=?, due_at=?, updated=? WHERE id=?",
                              (state, now, now, r["id"]))
                    self._audit(c, r["id"], "released", detail={"reason": "expired: auto-release"})
                else:
                    state = EXPIRED
                    c.execute("UPDATE messages SET state=?, due_at=NULL, updated=? WHERE id=?",
                              (state, now, r["id"]))
                    self._audit(c, r["id"], "expired")
                if make_notices is not None:
                    for n in make_notices(r, state):
                        self.accept(n)
                done.append(r["id"])
        return done

    def due_reminders(self, every: float) -> list[sqlite3.Row]:
        """Held messages whose approvers should be reminded now; marks them reminded."""
        now = self.clock()
        with self.transaction() as c:
            rows = c.execute("SELECT * FROM messages WHERE state='held' AND coalesce(reminded_at, arrived) <= ?",
                             (now - every,)).fetchall()
            for r in rows:
                c.execute("UPDATE messages SET reminded_at=? WHERE id=?", (now, r["id"]))
        return rows

    def purge(self, retention_seconds: float, sendlog_retention_seconds: float) -> int:
        """Remove spool files of finished messages past retention; rows and audit stay."""
        now = self.clock()
        states = ",".join(f"'{s}'" for s in (DELIVERED, BOUNCED, REJECTED, EXPIRED, RECALLED))
        with self.transaction() as c:
            rows = c.execute(f"SELECT id, spool FROM messages WHERE state IN ({states}) AND spool IS NOT NULL"
                             " AND updated <= ?", (now - retention_seconds,)).fetchall()
            for r in rows:
                c.execute("UPDATE messages SET spool=NULL WHERE id=?", (r["id"],))
                self._audit(c, r["id"], "purged")
            spans = spans_by_segment(r["spool"] for r in rows)
            for seg, lst in spans.items():
                c.execute("UPDATE segments SET live = live - ? WHERE path = ?", (len(lst), seg))
            dead = {r[0] for r in _select_in(c, "SELECT path FROM segments WHERE path IN ({}) AND live <= 0",
                                              list(spans))}
            if dead:
                _select_in(c, "DELETE FROM segments WHERE path IN ({})", sorted(dead))
            c.execute("DELETE FROM attachment_hashes WHERE msg_id IN (SELECT msg_id FROM sendlog WHERE ts <= ?)",
                      (now - sendlog_retention_seconds,))
            c.execute("DELETE FROM sendlog WHERE ts <= ?", (now - sendlog_retention_seconds,))
        for r in rows:
            self.discard_spool(r["spool"])
        # a segment nobody needs goes whole; in one still needed (a held message, a retry), the
        # purged messages' bytes are destroyed in place: retention holds for every message
        for seg, lst in spans.items():
            with contextlib.suppress(OSError):
                if seg in dead:
                    os.unlink(os.path.join(self._root_str, seg))
                else:
                    erase_spans(os.path.join(self._root_str, seg), lst)
        return len(rows)

    # ---------------------------------------------------------------- reads
    def _row(self, msg_id: str, c: sqlite3.Connection | None = None) -> sqlite3.Row:
        r = (c or self.conn).execute("SELECT * FROM messages WHERE id=?", (msg_id,)).fetchone()
        if r is None:
            raise NotFound(f"no message with id {msg_id!r}")
        return r

    def get(self, msg_id: str) -> dict[str, Any]:
        r = self._row(msg_id)
        d = dict(r)
        for k in ("rules", "findings", "parts"):
            d[k] = json.loads(d[k])
        d["recipients"] = [dict(x) for x in self.conn.execute(
            "SELECT rcpt, state, code, response FROM recipients WHERE msg_id=? ORDER BY rowid", (msg_id,))]
        d["approvals"] = self.decisions(msg_id)  # from the signed chain, not the unsigned table
        return d

    def list(self, *, states: Sequence[str] = (), sender: str | None = None, kind: str | None = "mail",
             limit: int = 10_000) -> list[dict[str, Any]]:
        where, args = _where(("lower(sender) = lower(?)", sender), ("kind = ?", kind))
        if states:
            where += (" AND " if where else " WHERE ") + f"state IN ({','.join('?' * len(states))})"
            args += builtins.list(states)
        q = "SELECT * FROM messages" + where + " ORDER BY arrived LIMIT ?"
        args.append(limit)
        out = []
        for r in self.conn.execute(q, args).fetchall():
            d = dict(r)
            for k in ("rules", "findings", "parts"):
                d[k] = json.loads(d[k])
            d["recipients"] = [x[0] for x in self.conn.execute(
                "SELECT rcpt FROM recipients WHERE msg_id=? ORDER BY rowid", (r["id"],))]
            out.append(d)
        return out

    def count_by_state(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self.conn.execute(
            "SELECT state, count(*) AS n FROM messages GROUP BY state")}

    def decision_counts(self, after_seq: int) -> tuple[dict[str, int], int]:
        """Decisions recorded in the audit log after `after_seq`, and the last seq seen."""
        rows = self.conn.execute("SELECT event, count(*) AS n, max(seq) AS m FROM audit WHERE seq > ? AND event IN"
                                 " ('released','rejected','expired','recalled') GROUP BY event",
                                 (after_seq,)).fetchall()
        top = self.conn.execute("SELECT max(seq) AS m FROM audit").fetchone()["m"] or after_seq
        return {r["event"]: r["n"] for r in rows}, int(top)

    def count_in_states(self, states: Sequence[str]) -> dict[str, int]:
        """Counts of the given states only: an index range each, never a walk over every finished row
        (the exporter asks at every scrape)."""
        marks = ",".join("?" * len(states))
        return {r["state"]: r["n"] for r in self.conn.execute(
            f"SELECT state, count(*) AS n FROM messages WHERE state IN ({marks}) GROUP BY state", tuple(states))}

    def oldest_in_state(self, state: str) -> float | None:
        r = self.conn.execute("SELECT min(arrived) AS a FROM messages WHERE state = ?", (state,)).fetchone()
        return None if r["a"] is None else float(r["a"])

    def oldest_held(self) -> float | None:
        r = self.conn.execute("SELECT min(arrived) AS a FROM messages WHERE state='held'").fetchone()
        return None if r["a"] is None else float(r["a"])

    def sendlog(self, *, sender: str | None = None, since: float | None = None, until: float | None = None,
                attachment_hash: str | None = None) -> builtins.list[dict[str, Any]]:
        where, args = _where(
            ("lower(s.sender) = lower(?)", sender or None), ("s.ts >= ?", since), ("s.ts < ?", until),
            ("s.msg_id IN (SELECT msg_id FROM attachment_hashes WHERE sha256 = ?)",
             attachment_hash.lower() if attachment_hash and len(attachment_hash) == 64 else None))
        if attachment_hash and len(attachment_hash) < 64:  # a prefix: a range on the index ("g" > hex)
            h = attachment_hash.lower()
            where += (" AND " if where else " WHERE ") + ("s.msg_id IN (SELECT msg_id FROM attachment_hashes"
                                                          " WHERE sha256 >= ? AND sha256 < ?)")
            args += [h, h + "g"]
        q = "SELECT s.* FROM sendlog s" + where
        out = []
        for r in self.conn.execute(q + " ORDER BY s.ts", args):
            d = dict(r)
            d["recipients"] = json.loads(d["recipients"])
            d["attachments"] = json.loads(d["attachments"])
            out.append(d)
        return out


def _audit_entry(r: sqlite3.Row) -> AuditEntry:
    sig = r["sig"] if len(r) > 9 else ""  # a copy of a store from before signing has no column
    return AuditEntry(r["seq"], r["ts"], r["msg_id"], r["event"], r["actor"], r["os_user"], json.loads(r["detail"]),
                      r["prev_hash"], r["hash"], sig, r["detail"])


def open_readonly(root: str | os.PathLike[str]) -> Store:
    """A store opened only to read (the auditor's offline `audit verify`)."""
    return Store(root, readonly=True)


class AsyncStore:
    """Runs store transitions on one writer thread, committing concurrent ones together.

    Every caller still gets its own result (or exception) only after the commit that holds its
    change: group commit keeps "250 only after durable" while paying one WAL fsync per batch.
    """

    MAX_BATCH = 256
    # seconds the writer waits, when a batch starts with a finished delivery, for others to join it
    # (no client waits for that record; the PostgreSQL engine's deliverer sets it: every
    # transaction there queues on the cluster's one audit chain head)
    linger = 0.0

    def __init__(self, root: str | os.PathLike[str], *, clock: Callable[[], float] = time.time,
                 signer: Signer | None = None) -> None:
        self.root = Path(root)
        self._clock = clock
        self._signer = signer
        self._q: queue.SimpleQueue[tuple[Callable[[Store], Any], asyncio.Future[Any], asyncio.AbstractEventLoop,
                                         tuple[str, ...]] | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop_seen = False
        self.store: Store | None = None
        self._thread = threading.Thread(target=self._run, name="dlpgate-store", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _open(self) -> Store:
        """The engine the writer thread runs the jobs on (the PostgreSQL engine overrides it)."""
        return Store(self.root, clock=self._clock, signer=self._signer)

    def is_leader(self) -> bool:
        """Whether this gateway does the cluster's housekeeping: always, for the embedded engine."""
        return True

    def on_due(self, callback: Callable[[float], None]) -> None:
        """Wake-ups from other gateways: none for the embedded engine (the pipeline pokes directly)."""

    def holds(self, claimed: Callable[[], Collection[str]]) -> None:
        """The deliverer's claimed messages, for lease renewal: the embedded engine has no leases
        (one gateway; its start recovers everything left `delivering`)."""

    def open_reader(self) -> Store:
        """A read-only store beside the writer (the control API's lists, exports, verify)."""
        return Store(self.root, readonly=True)

    def _run(self) -> None:
        try:
            self.store = self._open()
        except BaseException as e:  # noqa: BLE001
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        st = self.store
        while True:
            item = self._q.get()
            if item is None:
                break
            batch = [item]
            self._stop_seen = False
            if self.linger and type(item[0]) is DeliveredJob:
                self._gather(batch)
            try:
                # spool files first, outside the write lock: the lock is then held for the SQL and
                # the COMMIT only, and the deliverer's transactions are not starved meanwhile
                self._drain(batch)
                for it in batch:
                    if type(it[0]) is AcceptJob:
                        it[0].place(st)  # small messages: appended to the spool segment
                rels = [rel for it in batch for rel in it[3]]
                if rels:
                    st.sync_spool(rels)  # no transaction open: fsync'd now (the segment too)
                else:
                    st.flush_spool()
                results = st.run_batch([it[0] for it in batch], lambda b=batch: self._drain(b))  # type: ignore[misc]
                _erase_refused(st, batch, results)
            except BaseException as e:  # noqa: BLE001 - commit failed: every job in the batch fails
                # (their appended bytes stay until the segment goes: a COMMIT that reported an
                # error may still be on the disk, and its rows must then find their bytes)
                err = e if isinstance(e, StoreError) else StoreError(str(e))
                results = [(False, err)] * len(batch)
            # one wake-up per event loop per batch, not one per job (each is a syscall pair)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
            for (_, fut, loop, _), (ok, val) in zip(batch, results, strict=True):
                by_loop.setdefault(loop, []).append((fut, ok, val))
            for loop, settled in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(_settle_all, settled)
            if self._stop_seen:
                break
        st.close()

    def _gather(self, batch: list[Any]) -> None:
        """Wait up to `linger` for more finished deliveries to join the batch; anything else
        (a claim: the deliverer waits for it) ends the wait at once."""
        end = time.monotonic() + self.linger
        while len(batch) < self.MAX_BATCH:
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                nxt = self._q.get(timeout=left)
            except queue.Empty:
                return
            if nxt is None:
                self._stop_seen = True
                return
            batch.append(nxt)
            if type(nxt[0]) is not DeliveredJob:
                return

    def _drain(self, batch: list[Any]) -> list[Callable[[Store], Any]]:
        """Move queued jobs into `batch` (called with the write lock held); notes a queued stop."""
        extra: list[Callable[[Store], Any]] = []
        while len(batch) < self.MAX_BATCH:
            try:
                nxt = self._q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._stop_seen = True
                break
            batch.append(nxt)
            job = nxt[0]
            if nxt[3] and isinstance(job, AcceptJob):
                job.sync = tuple(nxt[3])
            elif nxt[3]:
                job = _spool_synced_first(job, nxt[3])
            extra.append(job)
        return extra

    async def run(self, job: Callable[[Store], T], *, spool: Sequence[str] = ()) -> T:
        """Run `job` in the next group commit. `spool`: files written with sync=False that the
        job commits rows for; they are durable before its COMMIT (fsync'd before the batch takes
        the write lock, or, for a job that joined once the lock was held, right before COMMIT)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._q.put((job, fut, loop, tuple(spool)))
        return await fut

    async def accept(self, m: NewMessage, notices: Sequence[NewMessage] = (), *, spool: Sequence[str] = (),
                     content: bytes | None = None) -> str:
        """`Store.accept` in the next group commit, written together with the batch's other accepts.

        `content`: the message bytes, when they have no spool file yet (`m.spool` is then
        ignored): the writer appends them to the spool segment and fsyncs it once for the whole
        batch, before the COMMIT. Returns the message's `spool` reference."""
        job = AcceptJob(m, notices, content)
        await self.run(job, spool=spool)
        return job.spool or m.spool

    INLINE_WRITE = 1024 * 1024

    async def write_spool(self, msg_id: str, data: bytes) -> str:
        """Write the spool file WITHOUT fsync; the commit job must call `Store.sync_spool` first.

        The fsyncs then happen on the writer thread, in the batch, right before the commit that
        holds the row: durability is unchanged ("250 only after durable") and the event loop
        does not hop through a thread pool per message. Big messages are written off the loop.
        """
        if len(data) <= self.INLINE_WRITE:
            return write_spool_file(self.root, msg_id, data, sync=False)
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: write_spool_file(self.root, msg_id, data, sync=False))

    def spool_path(self, rel: str) -> Path:
        return self.root / rel

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)


class AcceptJob:
    """The store job committing one judged message (`Store.accept`); marked so that the writer
    can commit a batch's accepts together."""

    __slots__ = ("message", "notices", "sync", "content", "error", "spool")

    def __init__(self, message: NewMessage, notices: Sequence[NewMessage] = (), content: bytes | None = None) -> None:
        self.message = message
        self.notices = tuple(notices)
        self.sync: tuple[str, ...] = ()  # spool files to make durable before COMMIT (late joiner)
        self.content = content  # bytes still to append to the spool segment
        self.error: StoreError | None = None
        self.spool: str | None = None  # where `content` went (the message's `spool` column)

    @property
    def groupable(self) -> bool:
        return not self.notices

    def place(self, s: Store) -> None:
        """Append the content to the segment (once); a failure is this job's alone."""
        if self.content is None or self.error is not None:
            return
        try:
            ref = s.append_segment(self.content)
        except OSError as e:
            self.error = StoreError(f"spool write failed: {e.strerror or e}")
            return
        self.spool = ref  # not dataclasses.replace: copying 28 fields cost more than the append
        self.content = None

    def register_spool(self, s: Store) -> None:
        self.place(s)  # a late joiner: its append is fsync'd with the batch, before COMMIT
        if self.error is not None:
            raise self.error
        if self.sync:
            s.sync_spool(self.sync)
            self.sync = ()

    def __call__(self, s: Store) -> None:
        self.register_spool(s)
        s.accept(self.message, self.notices, spool=self.spool)

    @staticmethod
    def run_group(s: Store, jobs: Sequence[AcceptJob]) -> list[None]:
        for j in jobs:
            j.register_spool(s)
        s.accept_many([j.message for j in jobs], [j.spool for j in jobs])
        return [None] * len(jobs)


class ClaimJob:
    """The deliverer's claim (`claim_due_next`): marked `standalone`, so that a writer whose batch
    holds nothing else may run it outside a transaction (the PostgreSQL engine claims in one
    atomic statement: no BEGIN or COMMIT of its own)."""

    __slots__ = ("limit",)
    standalone = True

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, s: Store) -> tuple[list[Claimed], float | None]:
        return s.claim_due_next(self.limit)


class DeliveredJob:
    """The store job recording a delivery attempt every recipient of which got a 2xx
    (`Store.finish_attempt`); marked so that the writer can record a batch's together."""

    __slots__ = ("msg_id", "outcomes", "retry_at")
    groupable = True

    def __init__(self, msg_id: str, outcomes: Sequence[RcptOutcome], retry_at: float | None) -> None:
        if not outcomes or not all(200 <= o.code < 300 for o in outcomes):
            raise ValueError("DeliveredJob is for attempts delivered to every recipient")
        self.msg_id = msg_id
        self.outcomes = tuple(outcomes)
        self.retry_at = retry_at  # only used if a recipient the attempt did not cover is still pending

    def __call__(self, s: Store) -> AttemptResult:
        return s.finish_attempt(self.msg_id, self.outcomes, retry_at=self.retry_at, give_up=False)

    @staticmethod
    def run_group(s: Store, jobs: Sequence[DeliveredJob]) -> list[AttemptResult]:
        return s.finish_delivered([(j.msg_id, j.outcomes) for j in jobs])


def _erase_refused(st: Store, batch: Sequence[Any], results: Sequence[tuple[bool, Any]]) -> None:
    """A message appended to a segment whose own job then failed inside a committed batch (a
    constraint, say: the client gets 451) has no row; its bytes do not stay on the disk either,
    as a file of its own would not."""
    spans = spans_by_segment(it[0].spool for it, (ok, _) in zip(batch, results, strict=True)
                             if not ok and type(it[0]) is AcceptJob and it[0].spool)
    for seg, lst in spans.items():
        try:
            erase_spans(os.path.join(st._root_str, seg), lst)  # noqa: SLF001 - the writer's own store
        except OSError:  # the batch is committed; the bytes stay until the segment goes
            pass


def _spool_synced_first(job: Callable[[Store], T], rels: Sequence[str]) -> Callable[[Store], T]:
    """`job`, registering its spool files first: inside the batch they are fsync'd before COMMIT."""
    def run(s: Store) -> T:
        s.sync_spool(rels)
        return job(s)
    return run


def _settle_all(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, val in settled:
        _settle(fut, ok, val)


def _settle(fut: asyncio.Future[Any], ok: bool, val: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(val)
    else:
        fut.set_exception(val)
