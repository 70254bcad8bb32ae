"""The PostgreSQL engine: several gateways, one queue, one quarantine and one audit chain.

`PgStore` has the interface of `store.Store` that the pipeline, the deliverer, the approvals and
the CLI use (the same transitions, the same rows); `AsyncPgStore` is `store.AsyncStore` with this
engine under its writer thread, so a node still commits whatever arrives together in one
transaction (group commit) and sends 250 only after that COMMIT (synchronous_commit stays on).

What differs from SQLite, and why:
- Message bytes live in the database (`message_chunks`, 1 MiB per row), not in a local spool:
  any node can deliver or release any message. The local directory (`[store] path`) only holds
  spool files between the SMTP DATA and the commit (big messages, notices).
- Claims take due rows with `FOR UPDATE SKIP LOCKED` and stamp a lease (node, deadline). A node
  renews its leases while it lives; a node killed -9 stops renewing, and any node's next claim
  puts the expired rows back in the queue (`recovered`, with the dead node named). Delivery stays
  at-least-once: only a message caught mid-delivery can go out twice.
- The hot table `messages` holds only unfinished messages: a finished one moves to
  `messages_history` in the transaction that finishes it, so claims (a partial index on due rows)
  scan what is queued, not the millions of messages ever sent.
- One audit chain for the cluster: each transaction's entries are hashed and appended at its end,
  under a row lock on `audit_head`, taken last so it is held only for the insert and the COMMIT
  (and no transaction ever waits for a message row while holding it: no deadlock).
- LISTEN/NOTIFY (`dlpgate_due`) wakes every node's deliverer when something becomes due (a new
  message, a release through another node's CLI); housekeeping (expiry, reminders, retention) runs
  on the node holding an advisory lock, and passes to another when that node's session ends.
- Versioned migrations (`schema_migrations`), applied by `dlpgate store migrate` and at start
  while every pending migration is marked online-safe.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, NotFound, PermissionDenied, StateError, StoreError
from .model import (
    BOUNCED,
    DEFERRED,
    DELAYED,
    DELIVERED,
    DELIVERING,
    EXPIRED,
    FINAL,
    GENESIS,
    HALTING_EVENTS,
    HELD,
    ID_CHARS,
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
    os_user,
)
from .spool import _UNSYNCED, _UNSYNCED_LOCK
from .sqlite import AcceptJob, AsyncStore, DeliveredJob

log = logging.getLogger("dlpgate.store.postgres")

CHUNK = 1024 * 1024  # bytes per message_chunks row: big messages never need one giant bytea
FOREIGN_GRACE = 0.3  # seconds a due message waits for the node it belongs to before others claim it
DELIVERED_LINGER = 0.005  # seconds a deliverer's writer gathers finished deliveries into one transaction
CLAIM_BYTES = 64 * 1024 * 1024  # message bytes one claim brings into memory (at least one message)
CHANNEL = "dlpgate_due"
LEADER_KEY = 0x646C7067  # advisory lock: housekeeping leadership ("dlpg")
MIGRATE_KEY = 0x646C706D  # advisory lock: one node migrates at a time ("dlpm")

_COLUMNS = ("id, state, prev_state, kind, sender, client, helo, arrived, due_at, size, sha256, spool, subject,"
            " verdict, rules, reason, findings, records, parts, approvals_required, attempts, first_attempt,"
            " last_error, expires_at, reminded_at, updated, lease_node, lease_until")

_V1 = """
CREATE TABLE messages (
  id text PRIMARY KEY,
  state text NOT NULL,
  prev_state text,
  kind text NOT NULL DEFAULT 'mail',
  sender text NOT NULL,
  client text NOT NULL DEFAULT '',
  helo text NOT NULL DEFAULT '',
  arrived double precision NOT NULL,
  due_at double precision,
  size bigint NOT NULL DEFAULT 0,
  sha256 text NOT NULL DEFAULT '',
  spool text,
  subject text NOT NULL DEFAULT '',
  verdict text NOT NULL DEFAULT 'clean',
  rules text NOT NULL DEFAULT '[]',
  reason text NOT NULL DEFAULT '',
  findings text NOT NULL DEFAULT '[]',
  records integer NOT NULL DEFAULT 0,
  parts text NOT NULL DEFAULT '[]',
  approvals_required integer NOT NULL DEFAULT 1,
  attempts integer NOT NULL DEFAULT 0,
  first_attempt double precision,
  last_error text NOT NULL DEFAULT '',
  expires_at double precision,
  reminded_at double precision,
  updated double precision NOT NULL,
  lease_node text,
  lease_until double precision
) WITH (fillfactor = 70,
  -- every message passes through this table once: vacuum it after a thousand dead rows, not after
  -- a fifth of the table, so the claims' index never fills with dead entries (queue bloat)
  autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000,
  autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 1000,
  autovacuum_vacuum_cost_delay = 0);
-- claims scan due rows only; leases and holds have their own small partial indexes
CREATE INDEX messages_due ON messages (due_at) WHERE state IN ('delayed', 'deferred', 'released');
CREATE INDEX messages_leases ON messages (lease_until) WHERE state = 'delivering';
CREATE INDEX messages_held ON messages (expires_at) WHERE state = 'held';
CREATE INDEX messages_sender_ci ON messages (lower(sender));
-- finished messages: same columns, never scanned by a claim
CREATE TABLE messages_history (LIKE messages INCLUDING DEFAULTS);
ALTER TABLE messages_history SET (fillfactor = 100);
ALTER TABLE messages_history ADD PRIMARY KEY (id);
CREATE INDEX messages_history_updated ON messages_history (updated) WHERE spool IS NOT NULL;
CREATE INDEX messages_history_sender_ci ON messages_history (lower(sender));
CREATE INDEX messages_history_arrived ON messages_history (arrived);
CREATE VIEW messages_all AS SELECT * FROM messages UNION ALL SELECT * FROM messages_history;
CREATE TABLE message_chunks (
  msg_id text NOT NULL,
  n integer NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (msg_id, n)
);
CREATE TABLE recipients (
  msg_id text NOT NULL,
  rcpt text NOT NULL,
  pos integer NOT NULL,
  state text NOT NULL DEFAULT 'pending',
  code integer,
  response text NOT NULL DEFAULT '',
  PRIMARY KEY (msg_id, rcpt)
);
CREATE TABLE audit (
  seq bigint PRIMARY KEY,
  ts double precision NOT NULL,
  msg_id text NOT NULL,
  event text NOT NULL,
  actor text NOT NULL,
  os_user text NOT NULL,
  detail text NOT NULL,
  prev_hash text NOT NULL,
  hash text NOT NULL,
  sig text NOT NULL DEFAULT ''
);
CREATE INDEX audit_msg ON audit (msg_id);
CREATE INDEX audit_ts ON audit (ts);
CREATE TABLE audit_head (
  id integer PRIMARY KEY CHECK (id = 1),
  seq bigint NOT NULL,
  hash text NOT NULL
);
INSERT INTO audit_head VALUES (1, 0, '""" + GENESIS + """');
CREATE TABLE approvals (
  id bigserial PRIMARY KEY,
  msg_id text NOT NULL,
  approver text NOT NULL,
  decision text NOT NULL,
  reason text NOT NULL,
  os_user text NOT NULL,
  ts double precision NOT NULL
);
CREATE INDEX approvals_msg ON approvals (msg_id);
CREATE TABLE sendlog (
  msg_id text PRIMARY KEY,
  ts double precision NOT NULL,
  sender text NOT NULL,
  recipients text NOT NULL,
  subject text NOT NULL,
  attachments text NOT NULL,
  verdict text NOT NULL
);
CREATE INDEX sendlog_ts ON sendlog (ts);
CREATE INDEX sendlog_sender_ci ON sendlog (lower(sender));
CREATE TABLE attachment_hashes (
  sha256 text NOT NULL,
  msg_id text NOT NULL
);
CREATE INDEX attachment_hashes_h ON attachment_hashes (sha256);
CREATE INDEX attachment_hashes_m ON attachment_hashes (msg_id);
CREATE TABLE contacts (
  scope text NOT NULL,
  domain text NOT NULL,
  count integer NOT NULL,
  first_seen double precision NOT NULL,
  PRIMARY KEY (scope, domain)
);
CREATE TABLE nodes (
  node text PRIMARY KEY,
  started double precision NOT NULL,
  heartbeat double precision NOT NULL
);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str
    online: bool = True  # safe to apply at start while other nodes run the previous version


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema: hot and history tables, chunks, leases, one audit chain", _V1),
)
LATEST = MIGRATIONS[-1].version


def is_pg_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def default_node() -> str:
    return socket.gethostname() or "node"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise StoreError("the PostgreSQL engine needs psycopg 3 (pip install 'psycopg[binary]')") from e
    return psycopg


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, cred = head.partition("://")
    return f"{scheme}://{cred.partition(':')[0]}@{tail}"


def _scalar(row: Any) -> Any:
    """The first column of a row, whichever row factory the connection has."""
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def schema_version(conn: Any) -> int:
    if not _scalar(conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()):
        return 0
    return int(_scalar(conn.execute("SELECT max(version) FROM schema_migrations").fetchone()) or 0)


def migrate(conn: Any, *, only_online: bool = False) -> list[int]:
    """Apply the pending migrations in order (one transaction each, one node at a time).
    `only_online`: stop before the first migration not marked safe while other nodes run
    (start-up); `dlpgate store migrate` applies them all. Returns the versions applied."""
    done: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_KEY,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                     " description text NOT NULL, applied double precision NOT NULL)")
        have = schema_version(conn)
        if have > LATEST:
            raise StoreError(f"the database's schema is version {have}, newer than this dlpgate knows"
                             f" ({LATEST}): upgrade dlpgate on this node")
        for m in MIGRATIONS:
            if m.version <= have:
                continue
            if only_online and not m.online:
                break
            conn.execute(m.sql)
            conn.execute("INSERT INTO schema_migrations(version, description, applied) VALUES (%s, %s, %s)",
                         (m.version, m.description, time.time()))
            done.append(m.version)
    return done


def migrate_url(url: str) -> tuple[int, list[int]]:
    """`dlpgate store migrate`: (version now, versions applied)."""
    psycopg = _psycopg()
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            applied = migrate(conn)
            return schema_version(conn), applied
    except psycopg.Error as e:
        raise StoreError(f"cannot migrate {_safe_url(url)}: {_one_line(e)}") from e


def _configure(conn: Any) -> None:
    """Every session of the store: a COMMIT returns only once its WAL is on disk, whatever the
    server's default says (250 only after a durable commit)."""
    conn.execute("SET synchronous_commit = on")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def _begin(c: Any) -> None:
    """BEGIN in the simple protocol, as psycopg's own transaction blocks send it (and as
    pg_stat_statements counts it: the benchmark's statement figures rely on that)."""
    res = c.pgconn.exec_(b"BEGIN")
    if res.status != _psycopg().pq.ExecStatus.COMMAND_OK:
        raise _psycopg().OperationalError(f"BEGIN failed: {res.error_message.decode(errors='replace').strip()}")


def _one(job: Callable[[Any], Any], store: Any) -> list[Any]:
    return [job(store)]


class _Isolate(Exception):
    """A job of a batch run without savepoints failed: roll the batch back and isolate its jobs."""


@dataclass(frozen=True)
class PgClaimed(Claimed):
    """A claimed message whose bytes came from the database with the claim."""

    data: bytes = b""

    def read_bytes(self) -> bytes:
        return self.data


class PgStore:
    """Synchronous PostgreSQL store: `store.Store`'s transitions on a connection pool.

    One instance per thread (the writer thread, or the CLI). Every public transition is one
    transaction; nested calls become savepoints of the enclosing one, as with SQLite.
    """

    def __init__(self, url: str, root: str | os.PathLike[str], *, node: str = "", lease_seconds: float = 30.0,
                 clock: Callable[[], float] = time.time, pool_size: int = 2, connect_timeout: float = 5.0,
                 migrate_at_start: bool = True, signer: Signer | None = None) -> None:
        psycopg = _psycopg()
        self.signer = signer  # signs the last audit entry of every transaction (None: unsigned)
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.url = url
        self.root = Path(root)
        self._root_str = str(self.root)
        self.spool_dir = self.root / "spool"
        self.node = node or default_node()
        self.lease_seconds = float(lease_seconds)
        self.clock = clock
        self._psycopg = psycopg
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.spool_dir.mkdir(exist_ok=True, mode=0o700)
        except OSError as e:
            raise StoreError(f"cannot create the local spool at {self.root}: {e}") from e
        self._used: dict[int, float] = {}  # id(connection) -> when it last finished a transaction
        self.pool = ConnectionPool(url, min_size=1, max_size=max(1, pool_size), open=False, timeout=connect_timeout,
                                   kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 10},
                                   check=self._check_idle, configure=_configure, name=f"dlpgate-{self.node}",
                                   reconnect_timeout=3600 * 24 * 365)
        try:
            self.pool.open(wait=True, timeout=max(connect_timeout, 10.0))
        except Exception as e:  # noqa: BLE001 - PoolTimeout, OperationalError
            self.pool.close()
            raise StoreError(f"cannot reach the store database {_safe_url(url)}: {_one_line(e)}") from e
        try:
            with self.pool.connection() as c:
                have = schema_version(c)
                if have < LATEST and migrate_at_start:
                    migrate(c, only_online=True)
                    have = schema_version(c)
                if have < LATEST:
                    raise StoreError(f"the store database is at schema version {have}, this dlpgate needs"
                                     f" {LATEST}: run `dlpgate store migrate`")
                if have > LATEST:
                    raise StoreError(f"the store database's schema ({have}) is newer than this dlpgate ({LATEST})")
        except psycopg.Error as e:
            self.pool.close()
            raise StoreError(f"cannot open the store database: {_one_line(e)}") from e
        except BaseException:
            self.pool.close()
            raise
        self._conn: Any = None  # the connection of the open transaction
        self._depth = 0
        self._doomed = False  # a nested step failed: the open transaction must not commit
        self._audit_rows: list[tuple[float, str, str, str, str, str]] = []  # ts, msg, event, actor, user, detail
        self._notify: set[str] = set()
        # whether this process wakes its own deliverer for what it accepts (the gateway's pipeline
        # pokes it directly): its accept NOTIFYs then say so, and its own deliverer ignores them
        self.self_wakes = False
        self._in_batch = False  # run_batch keeps the "mem:N" bytes across its attempts
        self._accept_notified = 0.0  # when an accept last NOTIFYed the other nodes (monotonic)
        # statements that write rows every node's transactions share (first-contact counts): run
        # after the audit head's lock, which serialises those transactions anyway, so that their
        # row locks are not held while waiting for it (one queue of waiters, not two)
        self._late: list[tuple[str, list[Any]]] = []
        self._mem: dict[str, bytes] = {}  # "mem:N" -> bytes appended by the writer (AcceptJob.place)
        self._mem_n = 0
        self._local_done: list[str] = []  # local spool files whose bytes the open transaction stores

    def close(self) -> None:
        self.pool.close()

    IDLE_CHECK = 2.0  # a pooled connection idle longer than this is probed before use

    def _check_idle(self, conn: Any) -> None:
        """The pool's check: a connection used within the last seconds is trusted (saves a round
        trip per transaction under load); an idle one is probed, so after a database restart a
        dead one is replaced before it fails a batch."""
        from psycopg_pool import ConnectionPool

        if time.monotonic() - self._used.get(id(conn), 0.0) > self.IDLE_CHECK:
            ConnectionPool.check_connection(conn)

    # ---------------------------------------------------------------- transactions
    def _wrap(self, e: BaseException) -> StoreError:
        return StoreError(f"store database error: {_one_line(e)}")

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        """A connection for a read: the open transaction's, or one from the pool."""
        if self._conn is not None:
            yield self._conn
            return
        try:
            with self.pool.connection() as c:
                yield c
                self._used[id(c)] = time.monotonic()
        except self._psycopg.Error as e:
            raise self._wrap(e) from e
        except Exception as e:
            if type(e).__name__ == "PoolTimeout":
                raise StoreError(f"store database unreachable: {_one_line(e)}") from e
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """One atomic step. The audit entries the step wrote are chained and inserted right
        before COMMIT, under the chain head's row lock.

        A nested call joins the enclosing transaction without a savepoint (two statements saved
        per step): if it fails, the enclosing transaction can no longer commit (it raises at its
        end even if the failure was caught), so a half-done step never becomes durable. Where a
        failure must stay one step's alone (a batch's jobs), `savepoint()` isolates it."""
        if self._depth:
            self._depth += 1
            try:
                yield self._conn
            except BaseException as e:
                self._doomed = True
                if isinstance(e, self._psycopg.Error):
                    raise self._wrap(e) from e
                raise
            finally:
                self._depth -= 1
            return
        psycopg = self._psycopg
        try:
            cm = self.pool.connection()
            c = cm.__enter__()
        except Exception as e:  # noqa: BLE001 - PoolTimeout: the database is unreachable
            raise StoreError(f"store database unreachable: {_one_line(e)}") from e
        self._conn, self._depth, self._doomed = c, 1, False
        self._audit_rows, self._notify, self._local_done, self._late = [], set(), [], []
        ok = False
        try:
            try:
                # BEGIN and COMMIT by hand: the COMMIT goes in one round trip with the audit append
                # (pipeline), so the chain head's lock is held for one round trip less
                _begin(c)
                try:
                    yield c
                    if self._doomed:
                        raise StoreError("a step inside this transaction failed: nothing of it was committed")
                    self._flush_audit(c)
                except BaseException:
                    with contextlib.suppress(Exception):
                        c.execute("ROLLBACK")
                    raise
                ok = True
                self._used[id(c)] = time.monotonic()
            except psycopg.Error as e:
                raise self._wrap(e) from e
        finally:
            self._conn, self._depth = None, 0
            self._audit_rows, self._notify, self._late = [], set(), []
            if not self._in_batch:
                self._mem.clear()
            stored, self._local_done = self._local_done, []
            with contextlib.suppress(Exception):
                cm.__exit__(None, None, None)
            if ok:  # the bytes are in the database now: the local copies go
                for rel in stored:
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self._root_str, rel))

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[Any]:
        """A step inside the open transaction whose failure rolls back that step only."""
        c = self._conn
        mark = len(self._audit_rows)
        notify = set(self._notify)
        local = len(self._local_done)
        late = len(self._late)
        doomed = self._doomed
        try:
            with c.transaction():
                yield c
                if self._doomed and not doomed:
                    raise StoreError("a step inside this savepoint failed")
        except BaseException as e:
            del self._audit_rows[mark:]
            self._notify = notify
            del self._local_done[local:]
            del self._late[late:]
            self._doomed = doomed
            if isinstance(e, self._psycopg.Error):
                raise self._wrap(e) from e
            raise

    def run_batch(self, jobs: Sequence[Callable[[Any], Any]],
                  more: Callable[[], Sequence[Callable[[Any], Any]]] | None = None) -> list[tuple[bool, Any]]:
        """As `Store.run_batch`: the jobs in one transaction, the accepts and the deliveries among
        them written together when there are several.

        Savepoints cost two statements each (SAVEPOINT, RELEASE) and a batch nearly always
        succeeds: so the batch runs first without them, and only if one of its jobs fails is it
        rolled back and run again with each job (each group) in a savepoint of its own, as before.
        A lone job marked `standalone` (a claim: one statement) runs in no transaction at all."""
        if more is not None:
            jobs = [*jobs, *more()]
        self._in_batch = True
        try:
            if len(jobs) == 1 and getattr(jobs[0], "standalone", False):
                try:
                    return [(True, jobs[0](self))]
                except Exception as e:  # noqa: BLE001 - handed back to the job's caller
                    return [(False, e)]
            units: list[tuple[list[int], Callable[[], list[Any]]]] = []
            grouped: set[int] = set()
            for kind in (AcceptJob, DeliveredJob):
                group: dict[int, Any] = {i: j for i, j in enumerate(jobs) if type(j) is kind and j.groupable}
                # a lone delivery too: finish_delivered is one statement, finish_attempt five
                if len(group) >= (1 if kind is DeliveredJob else 2):
                    units.append((list(group), functools.partial(kind.run_group, self, list(group.values()))))  # type: ignore[arg-type]
                    grouped |= set(group)
            for i, job in enumerate(jobs):
                if i not in grouped:
                    units.append(([i], functools.partial(_one, job, self)))
            results: list[tuple[bool, Any] | None] = [None] * len(jobs)
            try:
                with self.transaction():
                    for idx, unit in units:
                        try:
                            values = unit()
                        except Exception as e:  # noqa: BLE001 - roll back, then isolate (below)
                            raise _Isolate() from e
                        for i, v in zip(idx, values, strict=True):
                            results[i] = (True, v)
                    if self._doomed:  # a job caught a failed step of its own: isolate, as for a raise
                        raise _Isolate() from StoreError("a step inside this transaction failed")
                return [r for r in results if r is not None]
            except _Isolate as e:
                if len(units) == 1 and not grouped:  # one plain job: its own error is the answer
                    return [(False, e.__cause__)]
            return self._run_isolated(jobs)
        finally:
            self._in_batch = False
            self._mem.clear()

    def _run_isolated(self, jobs: Sequence[Callable[[Any], Any]]) -> list[tuple[bool, Any]]:
        """The batch again, each group and each job in a savepoint: one failure is its job's alone."""
        with self.transaction():
            results: list[tuple[bool, Any] | None] = [None] * len(jobs)
            for kind in (AcceptJob, DeliveredJob):
                group: dict[int, Any] = {i: j for i, j in enumerate(jobs) if type(j) is kind and j.groupable}
                if len(group) < 2:
                    continue
                try:
                    with self.savepoint():
                        values: list[Any] = kind.run_group(self, list(group.values()))  # type: ignore[arg-type]
                    for i, v in zip(group, values, strict=True):
                        results[i] = (True, v)
                except Exception:  # noqa: BLE001 - rolled back; each is tried alone below
                    pass
            for i, job in enumerate(jobs):
                if results[i] is not None:
                    continue
                try:
                    with self.savepoint():
                        results[i] = (True, job(self))
                except Exception as e:  # noqa: BLE001 - handed back to the job's caller
                    results[i] = (False, e)
        return [r for r in results if r is not None]

    # ---------------------------------------------------------------- local spool (before commit only)
    def spool_path(self, rel: str) -> Path:
        return self.root / rel

    def write_spool(self, msg_id: str, data: bytes) -> str:
        from .spool import write_spool_file

        return write_spool_file(self.root, msg_id, data, sync=False)

    def sync_spool(self, rels: Sequence[str]) -> None:
        """Local spool files are read into the database at accept: no fsync needed, only the
        descriptors kept open for one are closed."""
        for rel in rels:
            with _UNSYNCED_LOCK:
                fd = _UNSYNCED.pop(os.path.join(self._root_str, rel), None)
            if fd is not None:
                os.close(fd)

    def flush_spool(self) -> None:
        return None

    @property
    def spool_unsynced(self) -> bool:
        return False

    def append_segment(self, data: bytes) -> str:
        """Keep the bytes for the accept of the same batch; a "mem:N" reference to them."""
        self._mem_n += 1
        ref = f"mem:{self._mem_n}"
        self._mem[ref] = data
        return ref

    def active_segment(self) -> str:
        return ""

    def discard_spool(self, rel: str) -> None:
        return None

    def orphan_spool_files(self) -> list[Path]:
        """Every local spool file at start is an orphan: committed messages live in the database."""
        return [p for p in self.spool_dir.glob("*/*") if p.is_file()]

    def unreferenced_segments(self) -> list[Path]:
        return []

    def _content(self, ref: str) -> bytes:
        if ref.startswith("mem:"):
            try:
                return self._mem[ref]
            except KeyError:
                raise StoreError("message bytes lost before commit") from None
        try:
            with open(os.path.join(self._root_str, ref), "rb") as f:
                data = f.read()
        except OSError as e:
            raise StoreError(f"spool read failed: {e.strerror or e}") from e
        self._local_done.append(ref)
        return data

    def read_spool(self, msg_id: str) -> bytes:
        with self._read() as c:
            row = c.execute("SELECT spool FROM messages_all WHERE id=%s", (msg_id,)).fetchone()
            if row is None:
                raise NotFound(f"no message with id {msg_id!r}")
            if not row["spool"]:
                raise StateError(f"message {msg_id}: its content is no longer kept (retention)")
            parts = [bytes(r["data"]) for r in c.execute(
                "SELECT data FROM message_chunks WHERE msg_id=%s ORDER BY n", (msg_id,))]
        return b"".join(parts)

    # ---------------------------------------------------------------- wake-ups
    def _wake(self, due: float, *, anyone: bool) -> None:
        """NOTIFY the deliverers at COMMIT that something falls due at `due` (one per transaction
        and kind: the earliest). The payload is "due node kind": kind "a" for messages this node
        accepted (they are this node's to claim first, and when `self_wakes` its own deliverer was
        poked directly: it ignores the NOTIFY), "n" for messages anyone may claim now (a release,
        a recovery)."""
        kind = "n" if anyone or not self.self_wakes else "a"
        if kind == "a":
            # every NOTIFY costs each listening node a transaction: under a stream of batches one
            # per grace period is enough, since the others track this node's due rows from the
            # `next_due` of their own claims once woken, and a node that goes idle hears the next
            if time.monotonic() - self._accept_notified < FOREIGN_GRACE:
                return
            self._accept_notified = time.monotonic()
        for p in builtins.list(self._notify):
            if p.endswith(f" {self.node} {kind}"):
                if float(p.split(" ", 1)[0]) <= due:
                    return
                self._notify.discard(p)
        self._notify.add(f"{due!r} {self.node} {kind}")

    # ---------------------------------------------------------------- audit
    def _audit(self, c: Any, msg_id: str, event: str, actor: str = "dlpgate",
               detail: dict[str, Any] | None = None, user: str | None = None) -> None:
        self._audit_many(c, [(msg_id, event, actor, detail or {})], user=user)

    def _audit_many(self, c: Any, entries: Sequence[tuple[str, str, str, dict[str, Any]]],
                    user: str | None = None) -> None:
        user = user if user is not None else os_user()
        for msg_id, event, actor, detail in entries:
            self._audit_rows.append((self.clock(), msg_id, event, actor, user, _dumps(detail)))

    def _flush_audit(self, c: Any) -> None:
        """Chain this transaction's entries onto the cluster's one chain (row lock on its head,
        held until COMMIT: appends from all nodes are serialised, each transaction's together),
        and send its wake-ups (NOTIFY is delivered at COMMIT, never for a rolled-back change);
        then COMMIT. Two round trips whatever the number of entries: the head's lock, then one
        statement that inserts the entries, moves the head and notifies, sent with the COMMIT."""
        notify = sorted(self._notify)
        late, self._late = self._late, []
        if not self._audit_rows:
            with c.pipeline():
                for q, args in late:
                    c.execute(q, args)
                if notify:
                    c.execute("SELECT pg_notify(%s, x) FROM unnest(%s::text[]) x", (CHANNEL, notify))
                c.execute("COMMIT")
            return
        head = c.execute("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE").fetchone()
        seq, prev = int(head["seq"]), head["hash"]
        cols: list[list[Any]] = [[] for _ in range(10)]
        for ts, msg_id, event, actor, user, dj in self._audit_rows:
            seq += 1
            h = _entry_hash(prev, seq, ts, msg_id, event, actor, user, dj)
            for k, v in enumerate((seq, ts, msg_id, event, actor, user, dj, prev, h, "")):
                cols[k].append(v)
            prev = h
        # one signature per append: it covers this entry and, through the chain, every one before it
        if self.signer is not None:
            cols[9][-1] = self.signer(seq, prev)
        with c.pipeline():  # the append and the COMMIT in one round trip
            c.execute("WITH a AS (INSERT INTO audit (seq, ts, msg_id, event, actor, os_user, detail, prev_hash, hash,"
                      " sig) SELECT * FROM unnest(%s::bigint[], %s::float8[], %s::text[], %s::text[], %s::text[],"
                      " %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])),"
                      " h AS (UPDATE audit_head SET seq = %s, hash = %s WHERE id = 1)"
                      + "".join(f", l{i} AS ({q})" for i, (q, _) in enumerate(late))
                      + " SELECT pg_notify(%s, x) FROM unnest(%s::text[]) x",
                      (*cols, seq, prev, *(a for _, args in late for a in args), CHANNEL, notify))
            c.execute("COMMIT")
        self._audit_rows = []

    def audit_entries(self, *, since: float | None = None, until: float | None = None,
                      msg_id: str | None = None) -> list[AuditEntry]:
        conds, args = _conds(("ts >= %s", since), ("ts < %s", until), ("msg_id = %s", msg_id))
        with self._read() as c:
            rows = c.execute("SELECT * FROM audit" + conds + " ORDER BY seq", args).fetchall()
        return [_audit_entry(r) for r in rows]

    def audit_chain(self, after_seq: int = 0, limit: int = 10_000) -> builtins.list[AuditEntry]:
        """Raw chain entries after `after_seq`, in seq order, for verification (a page at a time)."""
        with self._read() as c:
            rows = c.execute("SELECT * FROM audit WHERE seq > %s ORDER BY seq LIMIT %s", (after_seq, limit)).fetchall()
        return [_audit_entry(r) for r in rows]

    def audit_head(self) -> tuple[int, str]:
        """(seq, hash) of the cluster's last entry; (0, GENESIS) for an empty log."""
        with self._read() as c:
            r = c.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(r["seq"]), str(r["hash"])) if r else (0, GENESIS)

    def audit_signed(self) -> bool:
        with self._read() as c:
            return c.execute("SELECT 1 FROM audit WHERE sig <> '' LIMIT 1").fetchone() is not None

    def append_audit(self, msg_id: str, event: str, actor: str, detail: dict[str, Any], user: str) -> None:
        """One entry of its own (a refusal, the seal of an old chain): signed like every append."""
        with self.transaction() as c:
            self._audit(c, msg_id, event, actor=actor, detail=detail, user=user)

    def approval_rows(self) -> builtins.list[dict[str, Any]]:
        with self._read() as c:
            return [dict(r) for r in c.execute(
                "SELECT id AS rowid, msg_id, approver, decision, reason, os_user, ts FROM approvals ORDER BY id")]

    def decisions(self, msg_id: str, c: Any = None) -> builtins.list[dict[str, Any]]:
        """People's decisions on one message, read from the audit chain (the signed record); in a
        transaction, its own entries not yet appended count too."""
        with (contextlib.nullcontext(c) if c is not None else self._read()) as conn:
            rows = [dict(r) for r in conn.execute(
                "SELECT seq, ts, actor, os_user, event, detail FROM audit WHERE msg_id = %s AND event IN"
                " ('approved','released','rejected') AND actor <> 'dlpgate' ORDER BY seq", (msg_id,))]
        if self._conn is not None:  # this transaction's entries, chained at its COMMIT
            rows += [{"seq": 0, "ts": ts, "actor": actor, "os_user": user, "event": event, "detail": dj}
                     for ts, mid, event, actor, user, dj in self._audit_rows
                     if mid == msg_id and event in ("approved", "released", "rejected") and actor != "dlpgate"]
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
        with self._read() as c:
            rows = c.execute("SELECT id FROM messages_all WHERE id >= %s AND id < %s ORDER BY id LIMIT 2",
                             (p, id_prefix_bound(p))).fetchall()
            if not rows:
                raise NotFound(f"no message with id {prefix!r}")
            if len(rows) > 1 and rows[0]["id"] != p:
                n = _scalar(c.execute("SELECT count(*) FROM messages_all WHERE id >= %s AND id < %s",
                                      (p, id_prefix_bound(p))).fetchone())
                raise InputError(f"id {prefix!r} is ambiguous: it starts {n} message ids; give more characters")
        return str(rows[0]["id"])

    def verify_audit(self) -> tuple[bool, str]:
        prev, expect_seq, n = GENESIS, 1, 0
        with self._read() as c, c.cursor(name="audit_walk") if self._conn is not None else c.cursor() as cur:
            cur.execute("SELECT * FROM audit ORDER BY seq")
            for r in cur:
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
            head = c.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        if head is not None and (int(head["seq"]) != n or head["hash"] != prev):
            return False, f"the chain head names entry {head['seq']}, the log ends at {n} (entries removed)"
        return True, f"{n} entries, chain intact"

    # ---------------------------------------------------------------- transitions
    def accept(self, m: NewMessage, notices: Sequence[NewMessage] = (), *, spool: str | None = None) -> None:
        with self.transaction():
            self.accept_many((m,), None if spool is None else (spool,))
            for n in notices:
                self.accept(n)

    def accept_many(self, ms: Sequence[NewMessage], spools: Sequence[str | None] | None = None) -> None:
        """Commit judged messages with their bytes (chunks), recipients, audit trail, send log
        and first-contact counts: a handful of pipelined statements for the whole batch."""
        if not ms:
            return
        now = self.clock()
        hot: list[Any] = []
        done: list[Any] = []
        chunks: list[Any] = []
        rcpts: list[Any] = []
        audit_rows: list[tuple[str, str, str, dict[str, Any]]] = []
        sendlog_rows: list[Any] = []
        hash_rows: list[Any] = []
        contacts: dict[tuple[str, str], int] = {}
        first_due: float | None = None
        for k, m in enumerate(ms):
            given = spools[k] if spools is not None else None
            ref = m.spool if given is None else given
            data = self._content(ref)
            for i in range(0, max(1, len(data)), CHUNK):
                chunks.append((m.id, i // CHUNK, data[i:i + CHUNK]))
            row = (m.id, m.state, m.kind, m.sender, m.client, m.helo, m.arrived, m.due_at, m.size, m.sha256,
                   "db", m.subject, m.verdict, _dumps(list(m.rules)), m.reason, _dumps(list(m.findings)),
                   m.records, _dumps(list(m.parts)), m.approvals_required, m.expires_at, now,
                   None if m.state in FINAL else self.node)  # a due row's lease_node: the node to claim it first
            (done if m.state in FINAL else hot).append(row)
            if m.state == DELAYED and m.due_at is not None:
                first_due = m.due_at if first_due is None else min(first_due, m.due_at)
            for pos, r in enumerate(dict.fromkeys(m.recipients)):
                rcpts.append((m.id, r, pos))
            audit_rows += accept_audit(m)
            if m.attachments:
                sendlog_rows.append((m.id, m.arrived, m.sender, _dumps(list(m.recipients)), m.subject,
                                     _dumps(list(m.attachments)), m.verdict))
                hash_rows += [(a["sha256"], m.id) for a in m.attachments]
            if m.contact_scopes:
                doms = {r.rpartition("@")[2].lower() for r in m.recipients}
                for scope in m.contact_scopes:
                    for d in doms:
                        contacts[(scope, d)] = contacts.get((scope, d), 0) + 1
        # one statement for the whole batch: every table's rows as arrays (unnest), so a batch of
        # any size costs the same round trips; the bytes go as one binary bytea[] parameter
        cols = ("id, state, kind, sender, client, helo, arrived, due_at, size, sha256, spool, subject, verdict,"
                " rules, reason, findings, records, parts, approvals_required, expires_at, updated, lease_node")
        types = ("text", "text", "text", "text", "text", "text", "float8", "float8", "bigint", "text", "text", "text",
                 "text", "text", "text", "text", "int", "text", "int", "float8", "float8", "text")
        ctes: list[str] = []
        args: list[Any] = []

        def unnest(rows: Sequence[Sequence[Any]], kinds: Sequence[str]) -> str:
            args.extend([r[k] for r in rows] for k in range(len(kinds)))
            return "SELECT * FROM unnest(" + ", ".join(f"%s::{t}[]" for t in kinds) + ")"

        for table, rows in (("messages", hot), ("messages_history", done)):
            if rows:
                ctes.append(f"INSERT INTO {table} ({cols}) " + unnest(rows, types))
        if rcpts:
            ctes.append("INSERT INTO recipients (msg_id, rcpt, pos) " + unnest(rcpts, ("text", "text", "int"))
                        + " ON CONFLICT DO NOTHING")
        if sendlog_rows:
            ctes.append("INSERT INTO sendlog (msg_id, ts, sender, recipients, subject, attachments, verdict) "
                        + unnest(sendlog_rows, ("text", "float8", "text", "text", "text", "text", "text"))
                        + " ON CONFLICT (msg_id) DO UPDATE SET ts = excluded.ts, sender = excluded.sender,"
                        " recipients = excluded.recipients, subject = excluded.subject,"
                        " attachments = excluded.attachments, verdict = excluded.verdict")
        if hash_rows:
            ctes.append("INSERT INTO attachment_hashes (sha256, msg_id) " + unnest(hash_rows, ("text", "text")))
        if contacts:
            flat = [(sc, d, n, now) for (sc, d), n in sorted(contacts.items())]
            self._late.append(("INSERT INTO contacts (scope, domain, count, first_seen) SELECT * FROM unnest("
                               "%s::text[], %s::text[], %s::int[], %s::float8[]) ON CONFLICT (scope, domain)"
                               " DO UPDATE SET count = contacts.count + excluded.count",
                               [[r[k] for r in flat] for k in range(4)]))
        sql = ("WITH " + ", ".join(f"w{i} AS ({q})" for i, q in enumerate(ctes)) + " " if ctes else "")
        sql += "INSERT INTO message_chunks (msg_id, n, data) SELECT * FROM unnest(%s::text[], %s::int[], %b::bytea[])"
        args += [[r[0] for r in chunks], [r[1] for r in chunks], [r[2] for r in chunks]]
        with self.transaction() as c:
            c.execute(sql, args)
            self._audit_many(c, audit_rows)
            if first_due is not None:
                self._wake(first_due, anyone=False)

    def known_domains(self, scope: str, domains: Sequence[str]) -> set[str]:
        if not domains:
            return set()
        with self._read() as c:
            rows = c.execute("SELECT domain FROM contacts WHERE scope = %s AND domain = ANY(%s)",
                             (scope, list(domains))).fetchall()
        return {r["domain"] for r in rows}

    def next_due(self) -> float | None:
        """When this node should look for due messages next (another node's messages after their
        grace, another node's leases as they end)."""
        with self._read() as c:
            r = c.execute(
                "SELECT (SELECT min(CASE WHEN lease_node IS NULL OR lease_node = %(node)s THEN due_at"
                " ELSE due_at + %(grace)s END) FROM (SELECT due_at, lease_node FROM messages"
                " WHERE state IN ('delayed','deferred','released') ORDER BY due_at LIMIT 8) f) AS d,"
                " (SELECT min(lease_until) FROM messages WHERE state = 'delivering' AND lease_node <> %(node)s) AS l",
                {"node": self.node, "grace": FOREIGN_GRACE}).fetchone()
        due = None if r["d"] is None else float(r["d"])
        if r["l"] is not None:  # another node's lease: its message is due again if that node dies
            due = float(r["l"]) if due is None else min(due, float(r["l"]))
        return due

    def reclaim_expired(self, c: Any, now: float) -> int:
        """Messages claimed by a node whose lease ran out (it died, or lost the database) go back
        to the queue, due now; audited `recovered` with the node named."""
        rows = c.execute(
            "WITH x AS (SELECT id, lease_node FROM messages WHERE state = 'delivering' AND lease_until < %s"
            " FOR UPDATE SKIP LOCKED)"
            " UPDATE messages m SET state = CASE WHEN m.prev_state IN ('delayed','deferred','released')"
            " THEN m.prev_state ELSE 'deferred' END, prev_state = NULL, due_at = least(coalesce(m.due_at, %s), %s),"
            " lease_node = NULL, lease_until = NULL, updated = %s FROM x WHERE m.id = x.id"
            " RETURNING m.id, m.state, x.lease_node", (now, now, now, now)).fetchall()
        for r in rows:
            self._audit(c, r["id"], "recovered", detail={"state": r["state"], "node": r["lease_node"],
                                                         "reason": "lease expired"})
        return len(rows)

    _CLAIM = (
        "WITH cand AS (SELECT id, size, due_at FROM messages WHERE state IN ('delayed','deferred','released')"
        " AND due_at <= %(now)s AND (lease_node IS NULL OR lease_node = %(node)s OR due_at <= %(late)s)"
        " ORDER BY due_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
        # the bytes come with the claim: a few big messages fill one claim (at least one message)
        " take AS (SELECT id FROM (SELECT id, sum(size) OVER w AS run, row_number() OVER w AS k FROM cand"
        " WINDOW w AS (ORDER BY due_at, id)) x WHERE k = 1 OR run <= %(budget)s),"
        " upd AS (UPDATE messages m SET state = 'delivering', prev_state = m.state,"
        " first_attempt = coalesce(m.first_attempt, %(now)s), updated = %(now)s, lease_node = %(node)s,"
        " lease_until = %(until)s FROM take WHERE m.id = take.id RETURNING m.id, m.sender, m.client, m.helo,"
        " m.arrived, m.attempts, m.first_attempt, m.kind, m.due_at),"
        # when to look again: the next due rows after these (another node's only after its grace),
        # and the leases: another node's ends when it dies; an expired one is to be reclaimed
        " nxt AS (SELECT min(CASE WHEN lease_node IS NULL OR lease_node = %(node)s THEN due_at"
        " ELSE due_at + %(grace)s END) AS due FROM (SELECT due_at, lease_node FROM messages"
        " WHERE state IN ('delayed','deferred','released') AND NOT id = ANY(ARRAY(SELECT id FROM take))"
        " ORDER BY due_at LIMIT 8) f),"
        " lease AS (SELECT min(lease_until) AS any, min(lease_until) FILTER (WHERE lease_node <> %(node)s)"
        " AS other FROM messages WHERE state = 'delivering')"
        " SELECT nxt.due AS next_due, lease.any AS lease_any, lease.other AS lease_other, u.*,"
        " ARRAY(SELECT rcpt FROM recipients r WHERE r.msg_id = u.id AND r.state = 'pending' ORDER BY pos) AS rcpts,"
        " (SELECT string_agg(data, ''::bytea ORDER BY n) FROM message_chunks ch WHERE ch.msg_id = u.id) AS data,"
        " " + last_halt_sql("u.id") + " AS last_halt,"
        " " + accepted_detail_sql("u.id") + " AS accepted"
        " FROM nxt CROSS JOIN lease LEFT JOIN upd u ON true")

    def claim_due(self, limit: int) -> list[Claimed]:
        """Take up to `limit` due messages (earliest first) that no other node holds, with a lease."""
        return self.claim_due_next(limit)[0]

    def claim_due_next(self, limit: int) -> tuple[list[Claimed], float | None]:
        """Claim and, in the same statement, when to look again: one statement, one round trip,
        no transaction of its own when it runs alone (a single statement is atomic).

        A due message waits FOREIGN_GRACE seconds for the node it belongs to (the one that
        accepted it, or last tried it: `lease_node` of a due row) before other nodes take it: the
        node that accepted a batch delivers it, the others do not race for it (a claim by each of
        N nodes for every batch), yet take it over within the grace when that node is gone or
        saturated. A message released, recovered or expired-and-released belongs to nobody."""
        now = self.clock()
        params = {"now": now, "node": self.node, "late": now - FOREIGN_GRACE, "limit": max(1, limit),
                  "budget": CLAIM_BYTES, "until": now + self.lease_seconds, "grace": FOREIGN_GRACE}
        with self._read() as c:
            rows = c.execute(self._CLAIM, params).fetchall()
        head = rows[0]
        if head["lease_any"] is not None and head["lease_any"] < now:  # a node died with claims: back to the queue
            with self.transaction() as c:
                self.reclaim_expired(c, now)
            more, nd = self.claim_due_next(limit - sum(1 for r in rows if r["id"] is not None))
            return self._claimed(self._refuse_forged(rows, now)) + more, nd
        nd = head["next_due"]
        if head["lease_other"] is not None:  # another node's lease: its message is due again if that node dies
            nd = head["lease_other"] if nd is None else min(nd, head["lease_other"])
        return self._claimed(self._refuse_forged(rows, now)), (None if nd is None else float(nd))

    def _refuse_forged(self, rows: Sequence[Any], now: float) -> Sequence[Any]:
        """Claimed rows whose chain last left them held, rejected, expired or recalled go back to
        that state (with a `tampered` entry and an error in the log) instead of out: their state
        was written into the database without a decision. The check rides in the claim statement
        (one index probe a row); only such rows cost a transaction."""
        forged = [r for r in rows if r["id"] is not None and r["last_halt"] in HALTING_EVENTS]
        if not forged:
            return rows
        with self.transaction() as c:
            for r in forged:
                c.execute("UPDATE messages SET state = %s, due_at = NULL, lease_node = NULL, lease_until = NULL,"
                          " updated = %s WHERE id = %s AND state = 'delivering'", (r["last_halt"], now, r["id"]))
                self._audit(c, r["id"], "tampered", detail={"found": "due", "restored": r["last_halt"]})
                log.error("message %s was due without a decision in the signed chain (last: %s): not delivered,"
                          " back to %s", r["id"], r["last_halt"], r["last_halt"],
                          extra={"event": "tampered", "msg_id": r["id"]})
        return [r for r in rows if not (r["id"] is not None and r["last_halt"] in HALTING_EVENTS)]

    def _claimed(self, rows: Sequence[Any]) -> list[Claimed]:
        got = sorted((r for r in rows if r["id"] is not None), key=lambda r: (r["due_at"] or 0.0, r["id"]))
        out: list[Claimed] = []
        for r in got:
            body = bytes(r["data"] or b"")
            out.append(PgClaimed(r["id"], r["sender"], tuple(r["rcpts"]), Path(self._root_str), r["client"],
                                 r["helo"], r["arrived"], r["attempts"], r["first_attempt"], r["kind"],
                                 (0, len(body)), accepted_sha256(r["accepted"]), data=body))
        return out

    def _retire(self, c: Any, ids: Sequence[str]) -> None:
        """Move finished messages out of the hot table (same transaction as their last move)."""
        if ids:
            c.execute(f"WITH moved AS (DELETE FROM messages WHERE id = ANY(%s) AND state = ANY(%s) RETURNING *)"
                      f" INSERT INTO messages_history ({_COLUMNS}) SELECT {_COLUMNS} FROM moved",
                      (list(ids), list(FINAL)))

    def _delivering(self, c: Any, ids: Sequence[str]) -> dict[str, Any]:
        rows = c.execute("SELECT id, state, lease_node FROM messages WHERE id = ANY(%s) FOR UPDATE",
                         (list(ids),)).fetchall()
        return {r["id"]: r for r in rows}

    def finish_attempt(self, msg_id: str, outcomes: Sequence[RcptOutcome], *, retry_at: float | None,
                       give_up: bool, notices: Sequence[NewMessage] = ()) -> AttemptResult:
        now = self.clock()
        with self.transaction() as c:
            r = self._delivering(c, [msg_id]).get(msg_id)
            if r is None:
                r = c.execute("SELECT state FROM messages_history WHERE id=%s", (msg_id,)).fetchone()
                if r is None:
                    raise NotFound(f"no message with id {msg_id!r}")
            if r["state"] != DELIVERING:
                raise StateError(f"message {msg_id} is {r['state']}, not delivering")
            if r["lease_node"] != self.node:  # our lease ran out and another node took it
                raise StateError(f"message {msg_id} is claimed by node {r['lease_node']}, not {self.node}")
            delivered, bounced, updates = [], [], []
            for o in outcomes:
                if 200 <= o.code < 300:
                    st = "delivered"
                    delivered.append(o.rcpt)
                elif 500 <= o.code < 600 or give_up:
                    st = "bounced"
                    bounced.append(o)
                else:
                    st = "pending"
                updates.append((st, o.code, o.response[:500], msg_id, o.rcpt))
            if updates:
                c.execute("UPDATE recipients r SET state = v.st, code = v.code, response = v.resp FROM unnest(%s::text[],"
                          " %s::int[], %s::text[], %s::text[], %s::text[]) v(st, code, resp, msg_id, rcpt)"
                          " WHERE r.msg_id = v.msg_id AND r.rcpt = v.rcpt", [list(x) for x in zip(*updates, strict=True)])
            counts = {x["state"]: x["n"] for x in c.execute(
                "SELECT state, count(*) AS n FROM recipients WHERE msg_id=%s GROUP BY state", (msg_id,))}
            errors = "; ".join(f"{o.code} {o.response}"[:200] for o in outcomes if not 200 <= o.code < 300)
            if counts.get("pending"):
                state, due = DEFERRED, retry_at
            elif counts.get("delivered"):
                state, due = DELIVERED, None
            else:
                state, due = BOUNCED, None
            # a deferred message stays this node's to retry first (lease_node without lease_until)
            c.execute("UPDATE messages SET state=%s, prev_state=NULL, due_at=%s, attempts=attempts+1, last_error=%s,"
                      " updated=%s, lease_node=%s, lease_until=NULL WHERE id=%s",
                      (state, due, errors[:1000], now, self.node if state == DEFERRED else None, msg_id))
            if delivered:
                self._audit(c, msg_id, "delivered", detail={"recipients": delivered})
            if bounced:
                self._audit(c, msg_id, "bounced", detail={
                    "recipients": [{"rcpt": o.rcpt, "code": o.code, "response": o.response[:200]}
                                   for o in bounced]})
            if state == DEFERRED:
                self._audit(c, msg_id, "deferred", detail={"error": errors[:300], "retry_at": retry_at})
            else:
                self._retire(c, [msg_id])
            for n in notices:
                self.accept(n)
        return AttemptResult(state, tuple(bounced), tuple(delivered))

    def finish_delivered(self, items: Sequence[tuple[str, Sequence[RcptOutcome]]]) -> list[AttemptResult]:
        if not items:
            return []
        now = self.clock()
        ids = [mid for mid, _ in items]
        if len(set(ids)) != len(ids):
            raise StateError("a message appears twice in one batch")
        rc: list[list[Any]] = [[], [], [], []]
        for mid, outcomes in items:
            for o in outcomes:
                if not 200 <= o.code < 300:
                    raise StateError("finish_delivered takes delivered attempts only")
                for k, v in enumerate((mid, o.rcpt, o.code, o.response[:500])):
                    rc[k].append(v)
        # one statement: the recipients, and the messages straight from the hot table into history
        # as delivered (only those this node holds the lease of); then checked, rolled back if wrong
        moved_cols = ", ".join(
            {"state": "'delivered'", "prev_state": "NULL", "due_at": "NULL", "attempts": "attempts + 1",
             "last_error": "''", "updated": "%(now)s", "lease_node": "NULL", "lease_until": "NULL"}.get(col, col)
            for col in _COLUMNS.split(", "))
        with self.transaction() as c:
            r = c.execute(
                "WITH v AS (SELECT * FROM unnest(%(m)s::text[], %(r)s::text[], %(c)s::int[], %(t)s::text[])"
                " v(msg_id, rcpt, code, resp)),"
                " rc AS (UPDATE recipients r SET state = 'delivered', code = v.code, response = v.resp FROM v"
                " WHERE r.msg_id = v.msg_id AND r.rcpt = v.rcpt),"
                " moved AS (DELETE FROM messages WHERE id = ANY(%(ids)s) AND state = 'delivering'"
                " AND lease_node = %(node)s RETURNING *),"
                f" ins AS (INSERT INTO messages_history ({_COLUMNS}) SELECT {moved_cols} FROM moved RETURNING id)"
                " SELECT (SELECT count(*) FROM ins) AS moved, EXISTS (SELECT 1 FROM recipients r WHERE"
                " r.msg_id = ANY(%(ids)s) AND r.state = 'pending' AND NOT EXISTS (SELECT 1 FROM v"
                " WHERE v.msg_id = r.msg_id AND v.rcpt = r.rcpt)) AS pending",
                {"m": rc[0], "r": rc[1], "c": rc[2], "t": rc[3], "ids": ids, "node": self.node, "now": now}).fetchone()
            if r["moved"] != len(ids):  # not (or no longer) ours: say which, and roll it all back
                states = {x["id"]: x for x in c.execute(
                    "SELECT id, state, lease_node FROM messages_all WHERE id = ANY(%s)", (ids,))}
                for mid in ids:
                    st = states.get(mid)
                    if st is not None and st["state"] == DELIVERING and st["lease_node"] != self.node:
                        raise StateError(f"message {mid} is claimed by node {st['lease_node']}, not {self.node}")
                    if st is None or st["state"] != DELIVERING:
                        raise StateError(f"message {mid} is {st['state'] if st else None}, not delivering")
                raise StateError("a message of the batch is not delivering")
            if r["pending"]:
                raise StateError("a recipient would stay pending")
            self._audit_many(c, [(mid, "delivered", "dlpgate", {"recipients": [o.rcpt for o in outcomes]})
                                 for mid, outcomes in items])
        return [AttemptResult(DELIVERED, (), tuple(o.rcpt for o in outcomes)) for _, outcomes in items]

    def recover(self) -> int:
        """At this node's start (its old deliverer is gone): its own in-flight messages go back to
        the state they were claimed from. Other nodes' leases are theirs until they expire."""
        now = self.clock()
        with self.transaction() as c:
            rows = c.execute(
                "UPDATE messages SET state = CASE WHEN prev_state IN ('delayed','deferred','released')"
                " THEN prev_state ELSE 'deferred' END, prev_state = NULL, due_at = least(coalesce(due_at, %s), %s),"
                " lease_node = NULL, lease_until = NULL, updated = %s WHERE state = 'delivering' AND lease_node = %s"
                " RETURNING id, state", (now, now, now, self.node)).fetchall()
            for r in rows:
                self._audit(c, r["id"], "recovered", detail={"state": r["state"]})
            if rows:
                self._wake(now, anyone=True)
        return len(rows)

    def _row(self, msg_id: str, c: Any = None, *, lock: bool = False) -> Any:
        c = c or self._conn
        if lock:
            r = c.execute("SELECT * FROM messages WHERE id=%s FOR UPDATE", (msg_id,)).fetchone()
            if r is not None:
                return r
        r = c.execute("SELECT * FROM messages_all WHERE id=%s", (msg_id,)).fetchone()
        if r is None:
            raise NotFound(f"no message with id {msg_id!r}")
        return r

    def recall(self, msg_id: str, sender: str, *, login: str | None = None, admin: bool = False) -> None:
        """Cancel a delayed message (`login`: the caller the control API verified; `admin`: an
        administrator acting for the sender, recorded as such)."""
        with self.transaction() as c:
            r = self._row(msg_id, c, lock=True)
            if r["sender"].lower() != sender.lower() or r["kind"] != "mail":
                raise PermissionDenied(f"message {msg_id}: only its sender may recall it")
            if r["state"] != DELAYED:
                raise StateError(f"message {msg_id} is {r['state']}: only a delayed message can be recalled")
            c.execute("UPDATE messages SET state='recalled', due_at=NULL, updated=%s WHERE id=%s",
                      (self.clock(), msg_id))
            detail: dict[str, Any] = {} if login is None else {"login": login}
            if admin:
                detail["on_behalf_of"] = r["sender"]
            self._audit(c, msg_id, "recalled", actor=(login or sender) if admin else sender, detail=detail,
                        user=login)
            self._retire(c, [msg_id])

    def decide(self, msg_id: str, approver: str, decision: str, reason: str,
               notices: Callable[[Any, str], Sequence[NewMessage]] | None = None, *,
               login: str | None = None, via: str = "") -> str:
        """As `Store.decide`: two approvals are two logins (read back from the chain)."""
        now = self.clock()
        who = login if login is not None else os_user()
        with self.transaction() as c:
            r = self._row(msg_id, c, lock=True)  # a decision on another node waits here, then sees ours
            if r["state"] != HELD:
                raise StateError(f"message {msg_id} is {r['state']}: already decided" if r["state"] != DELAYED
                                 else f"message {msg_id} is not held")
            prior = {x["login"] for x in self.decisions(msg_id, c) if x["decision"] == "release"}
            if decision == "release" and who in prior:
                raise PermissionDenied(f"message {msg_id}: {who} has already approved it; a second person"
                                       " is needed")
            c.execute("INSERT INTO approvals (msg_id, approver, decision, reason, os_user, ts)"
                      " VALUES (%s,%s,%s,%s,%s,%s)", (msg_id, approver, decision, reason, who, now))
            base = {"reason": reason, "login": who, **({"via": via} if via else {})}
            if decision == "reject":
                state = REJECTED
                c.execute("UPDATE messages SET state=%s, due_at=NULL, updated=%s WHERE id=%s", (state, now, msg_id))
                self._audit(c, msg_id, "rejected", actor=approver, detail=base, user=who)
            else:
                have = len(prior) + 1
                if have >= r["approvals_required"]:
                    state = RELEASED
                    c.execute("UPDATE messages SET state=%s, due_at=%s, updated=%s, lease_node=NULL WHERE id=%s",
                              (state, now, now, msg_id))
                    self._audit(c, msg_id, "released", actor=approver, detail={**base, "approvals": have},
                                user=who)
                    self._wake(now, anyone=True)
                else:
                    state = HELD
                    self._audit(c, msg_id, "approved", actor=approver, detail={
                        **base, "approvals": have, "required": r["approvals_required"]}, user=who)
            if notices is not None:
                for n in notices(r, state):
                    self.accept(n)
            self._retire(c, [msg_id])
        return state

    def expire_due(self, action: str, make_notices: Callable[[Any, str], Sequence[NewMessage]] | None = None,
                   may_release: Callable[[Any], bool] | None = None) -> list[str]:
        """Held messages past expires_at end as expired (or released). Rows another node is
        deciding or expiring right now are skipped, never done twice."""
        now = self.clock()
        done = []
        with self.transaction() as c:
            rows = c.execute("SELECT * FROM messages WHERE state='held' AND expires_at IS NOT NULL"
                             " AND expires_at <= %s ORDER BY expires_at FOR UPDATE SKIP LOCKED", (now,)).fetchall()
            for r in rows:
                if action == "release" and (may_release is None or may_release(r)):
                    state = RELEASED
                    c.execute("UPDATE messages SET state=%s, due_at=%s, updated=%s, lease_node=NULL WHERE id=%s",
                              (state, now, now, r["id"]))
                    self._audit(c, r["id"], "released", detail={"reason": "expired: auto-release"})
                    self._wake(now, anyone=True)
                else:
                    state = EXPIRED
                    c.execute("UPDATE messages SET state=%s, due_at=NULL, updated=%s WHERE id=%s",
                              (state, now, r["id"]))
                    self._audit(c, r["id"], "expired")
                if make_notices is not None:
                    for n in make_notices(r, state):
                        self.accept(n)
                done.append(r["id"])
            self._retire(c, done)
        return done

    def due_reminders(self, every: float) -> list[Any]:
        now = self.clock()
        with self.transaction() as c:
            rows = c.execute("SELECT * FROM messages WHERE state='held' AND coalesce(reminded_at, arrived) <= %s"
                             " FOR UPDATE SKIP LOCKED", (now - every,)).fetchall()
            if rows:
                c.execute("UPDATE messages SET reminded_at=%s WHERE id = ANY(%s)", (now, [r["id"] for r in rows]))
        return rows

    def purge(self, retention_seconds: float, sendlog_retention_seconds: float) -> int:
        """Drop the bytes of finished messages past retention (rows and audit stay)."""
        now = self.clock()
        with self.transaction() as c:
            rows = c.execute("UPDATE messages_history SET spool = NULL WHERE spool IS NOT NULL AND updated <= %s"
                             " RETURNING id", (now - retention_seconds,)).fetchall()
            ids = [r["id"] for r in rows]
            if ids:
                c.execute("DELETE FROM message_chunks WHERE msg_id = ANY(%s)", (ids,))
                self._audit_many(c, [(i, "purged", "dlpgate", {}) for i in ids])
            c.execute("DELETE FROM attachment_hashes WHERE msg_id IN (SELECT msg_id FROM sendlog WHERE ts <= %s)",
                      (now - sendlog_retention_seconds,))
            c.execute("DELETE FROM sendlog WHERE ts <= %s", (now - sendlog_retention_seconds,))
        return len(ids)

    # ---------------------------------------------------------------- reads
    def get(self, msg_id: str) -> dict[str, Any]:
        with self._read() as c:
            d = dict(self._row(msg_id, c))
            d["recipients"] = [dict(x) for x in c.execute(
                "SELECT rcpt, state, code, response FROM recipients WHERE msg_id=%s ORDER BY pos", (msg_id,))]
            d["approvals"] = self.decisions(msg_id, c)  # from the signed chain, not the unsigned table
        for k in ("rules", "findings", "parts"):
            d[k] = json.loads(d[k])
        for k in ("lease_node", "lease_until"):
            d.pop(k, None)
        return d

    def list(self, *, states: Sequence[str] = (), sender: str | None = None, kind: str | None = "mail",
             limit: int = 10_000) -> builtins.list[dict[str, Any]]:
        conds, args = _conds(("lower(sender) = lower(%s)", sender), ("kind = %s", kind))
        if states:
            conds += (" AND " if conds else " WHERE ") + "state = ANY(%s)"
            args.append(builtins.list(states))
        # unfinished states only: the hot table alone answers (the usual case: outbox, quarantine)
        table = "messages" if states and not set(states) & set(FINAL) else "messages_all"
        with self._read() as c:
            rows = c.execute(f"SELECT * FROM {table}" + conds + " ORDER BY arrived, id LIMIT %s",
                             [*args, limit]).fetchall()
            rc: dict[str, builtins.list[str]] = {r["id"]: [] for r in rows}
            if rc:
                for x in c.execute("SELECT msg_id, rcpt FROM recipients WHERE msg_id = ANY(%s) ORDER BY msg_id, pos",
                                   (builtins.list(rc),)):
                    rc[x["msg_id"]].append(x["rcpt"])
        out = []
        for r in rows:
            d = dict(r)
            for k in ("rules", "findings", "parts"):
                d[k] = json.loads(d[k])
            d.pop("lease_node", None)
            d.pop("lease_until", None)
            d["recipients"] = rc[r["id"]]
            out.append(d)
        return out

    def count_by_state(self) -> dict[str, int]:
        with self._read() as c:
            out = {r["state"]: int(r["n"]) for r in c.execute(
                "SELECT state, count(*) AS n FROM messages GROUP BY state")}
            for r in c.execute("SELECT state, count(*) AS n FROM messages_history GROUP BY state"):
                out[r["state"]] = out.get(r["state"], 0) + int(r["n"])
        return out

    def decision_counts(self, after_seq: int) -> tuple[dict[str, int], int]:
        with self._read() as c:
            rows = c.execute("SELECT event, count(*) AS n FROM audit WHERE seq > %s AND event IN"
                             " ('released','rejected','expired','recalled') GROUP BY event", (after_seq,)).fetchall()
            top = c.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()
        return {r["event"]: int(r["n"]) for r in rows}, int(top["seq"] if top else 0) or after_seq

    def count_in_states(self, states: Sequence[str]) -> dict[str, int]:
        """Counts of unfinished states (the exporter asks at every scrape): the hot table only,
        unless a finished state is asked for."""
        table = "messages" if not set(states) & set(FINAL) else "messages_all"
        with self._read() as c:
            return {r["state"]: int(r["n"]) for r in c.execute(
                f"SELECT state, count(*) AS n FROM {table} WHERE state = ANY(%s) GROUP BY state", (list(states),))}

    def oldest_in_state(self, state: str) -> float | None:
        table = "messages" if state not in FINAL else "messages_history"
        with self._read() as c:
            r = c.execute(f"SELECT min(arrived) AS a FROM {table} WHERE state = %s", (state,)).fetchone()
        return None if r["a"] is None else float(r["a"])

    def oldest_held(self) -> float | None:
        with self._read() as c:
            r = c.execute("SELECT min(arrived) AS a FROM messages WHERE state='held'").fetchone()
        return None if r["a"] is None else float(r["a"])

    def sendlog(self, *, sender: str | None = None, since: float | None = None, until: float | None = None,
                attachment_hash: str | None = None) -> builtins.list[dict[str, Any]]:
        conds, args = _conds(
            ("lower(s.sender) = lower(%s)", sender or None), ("s.ts >= %s", since), ("s.ts < %s", until),
            ("s.msg_id IN (SELECT msg_id FROM attachment_hashes WHERE sha256 = %s)",
             attachment_hash.lower() if attachment_hash and len(attachment_hash) == 64 else None))
        if attachment_hash and len(attachment_hash) < 64:  # a prefix: a range on the index ("g" > hex)
            h = attachment_hash.lower()
            conds += (" AND " if conds else " WHERE ") + ("s.msg_id IN (SELECT msg_id FROM attachment_hashes"
                                                          " WHERE sha256 >= %s AND sha256 < %s)")
            args += [h, h + "g"]
        with self._read() as c:
            rows = c.execute("SELECT s.* FROM sendlog s" + conds + " ORDER BY s.ts", args).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["recipients"] = json.loads(d["recipients"])
            d["attachments"] = json.loads(d["attachments"])
            out.append(d)
        return out


def _audit_entry(r: Any) -> AuditEntry:
    return AuditEntry(r["seq"], r["ts"], r["msg_id"], r["event"], r["actor"], r["os_user"], json.loads(r["detail"]),
                      r["prev_hash"], r["hash"], r.get("sig", ""), r["detail"])


def _conds(*conds: tuple[str, Any]) -> tuple[str, builtins.list[Any]]:
    used = [(sql, v) for sql, v in conds if v is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(sql for sql, _ in used), [v for _, v in used]


class AsyncPgStore(AsyncStore):
    """`AsyncStore` (one writer thread, group commit) on a `PgStore`, plus one watcher thread on
    a session of its own: LISTEN for due messages (wakes `on_due` callbacks, e.g. the deliverer),
    lease renewal for this node, and the housekeeping leadership (an advisory lock held by the
    session: when the node dies its session ends and another node takes over)."""

    WATCH_EVERY = 1.0

    def __init__(self, url: str, root: str | os.PathLike[str], *, node: str = "", lease_seconds: float = 30.0,
                 clock: Callable[[], float] = time.time, pool_size: int = 2, lead: bool = False,
                 signer: Signer | None = None) -> None:
        self.url = url
        self.node = node or default_node()
        self.lease_seconds = lease_seconds
        self._pool_size = pool_size
        self._want_lead = lead
        if not lead:  # a deliverer's store: its finished deliveries are recorded in bigger batches
            self.linger = DELIVERED_LINGER
        self._leader = False
        self._on_due: list[tuple[Any, Callable[[float], None]]] = []
        self._claimed: Callable[[], Collection[str]] | None = None  # the deliverer's claims (`holds`)
        self._watch_stop = threading.Event()
        super().__init__(root, clock=clock, signer=signer)
        self._watcher = threading.Thread(target=self._watch, name="dlpgate-store-watch", daemon=True)
        self._watcher.start()

    def _open(self) -> Any:
        st = PgStore(self.url, self.root, node=self.node, lease_seconds=self.lease_seconds, clock=self._clock,
                     pool_size=self._pool_size, signer=self._signer)
        st.self_wakes = True  # the gateway's pipeline and the deliverer poke their own deliverer
        return st

    def open_reader(self) -> Any:
        """A store for reads beside the writer (the control API's lists and exports)."""
        return PgStore(self.url, self.root, node=self.node, lease_seconds=self.lease_seconds, clock=self._clock,
                       pool_size=1, migrate_at_start=False)

    def on_due(self, callback: Callable[[float], None]) -> None:
        """Call `callback(due_at)` on the caller's event loop when any node makes a message due."""
        import asyncio

        self._on_due.append((asyncio.get_running_loop(), callback))

    def holds(self, claimed: Callable[[], Collection[str]]) -> None:
        """Renew the leases of exactly what `claimed()` names (the deliverer's queued and in-flight
        messages), not of every row leased to this node: a claim can commit and its answer be lost
        (the database stopping between its commit and its reply). Such rows are leased to this node
        yet held by nobody; renewing them by node name kept them `delivering` for as long as the node
        lived. Unrenewed, their lease ends and any node claims them again (audited `recovered`).
        Called on the event loop; `claimed()` is read from the watcher thread, so it returns a
        snapshot (a tuple of a set is taken whole under the GIL)."""
        self._claimed = claimed

    def is_leader(self) -> bool:
        return self._leader if self._want_lead else True

    def wake_at(self, payload: str) -> float | None:
        """When a NOTIFY (see `PgStore._wake`) should wake this node's deliverer: never for what
        this node accepted (it was poked directly), after the grace for what another node
        accepted (that node claims it first; waking every node at once for every batch was a
        claim per node per batch), at once for what anyone may claim (releases, recoveries)."""
        head, _, rest = payload.partition(" ")
        try:
            due = float(head)
        except ValueError:
            return 0.0
        node, _, kind = rest.rpartition(" ")
        if kind == "a":
            return None if node == self.node else due + FOREIGN_GRACE
        return due
    def _watch(self) -> None:
        psycopg = _psycopg()
        conn = None
        listening = False
        last_renew = 0.0
        while not self._watch_stop.is_set():
            try:
                if conn is None or conn.closed:
                    self._leader = False
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                    listening = False
                if self._on_due and not listening:
                    # only a process with a deliverer listens: every NOTIFY costs each listening
                    # session a transaction of its own to read it
                    conn.execute(f"LISTEN {CHANNEL}")
                    listening = True
                    for loop, cb in builtins.list(self._on_due):  # something may have become due meanwhile
                        with contextlib.suppress(RuntimeError):
                            loop.call_soon_threadsafe(cb, 0.0)
                if self._want_lead and not self._leader:
                    self._leader = bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_KEY,)).fetchone()[0])
                    if self._leader:
                        log.info("this node leads housekeeping", extra={"event": "store_leader", "node": self.node})
                now = time.monotonic()
                if now - last_renew >= self.lease_seconds / 3:
                    last_renew = now
                    t = self._clock()
                    held = list(self._claimed()) if self._claimed is not None else []
                    if held:  # a process without a deliverer holds no claims
                        conn.execute("UPDATE messages SET lease_until = %s WHERE state = 'delivering'"
                                     " AND lease_node = %s AND id = ANY(%s)", (t + self.lease_seconds, self.node, held))
                    conn.execute("INSERT INTO nodes (node, started, heartbeat) VALUES (%s, %s, %s) ON CONFLICT (node)"
                                 " DO UPDATE SET heartbeat = excluded.heartbeat", (self.node, t, t))
                for n in conn.notifies(timeout=self.WATCH_EVERY):
                    due = self.wake_at(n.payload)
                    if due is None:
                        continue
                    for loop, cb in builtins.list(self._on_due):
                        with contextlib.suppress(RuntimeError):
                            loop.call_soon_threadsafe(cb, due)
            except Exception as e:  # noqa: BLE001 - the database went away: reconnect
                self._leader = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                log.warning("store watcher lost the database, reconnecting: %s", _one_line(e),
                            extra={"event": "store_reconnect"})
                self._watch_stop.wait(1.0)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        self._watch_stop.set()
        super().close()
        self._watcher.join(timeout=10)

