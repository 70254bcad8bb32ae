"""The message store: one interface, two engines.

- `model`: the values both engines share (states, NewMessage, Claimed, RcptOutcome, AuditEntry...).
- `spool`: spool files and segments, the message bytes beside the embedded database.
- `sqlite`: the SQLite engine (`Store`, `AsyncStore`), the embedded default.
- `postgres`: the PostgreSQL engine (`PgStore`, `AsyncPgStore`) for several gateways; imported on
  demand only, since it needs psycopg.
- `interface`: `StoreEngine`, the interface both engines have, as a typing.Protocol (mypy-checked).
- `engine`: the one place that chooses between them from a Config (`open_store`, `open_async_store`).

The pipeline, deliverer, control API and CLI import from here (`from .store import Store`). Tests
that patch module-level settings (`SEGMENT_MAX_BYTES`, `_fallocate`, `_MAX_VARIABLES`...) must patch
the submodule that reads them; those names are deliberately not re-exported here, so a patch aimed
at the package fails loudly instead of silently missing.
"""

from __future__ import annotations

from .interface import StoreEngine
from .model import (
    BOUNCED,
    DECISION_EVENTS,
    DEFERRED,
    DELAYED,
    DELIVERED,
    DELIVERING,
    EXPIRED,
    FINAL,
    GENESIS,
    HELD,
    QUEUED,
    RECALLED,
    REJECTED,
    RELEASED,
    STATES,
    AttemptResult,
    AuditEntry,
    Claimed,
    NewMessage,
    RcptOutcome,
    Signer,
    entry_hash,
    new_id,
    os_user,
)
from .spool import (
    erase_spans,
    forget_unsynced,
    read_spool_bytes,
    spans_by_segment,
    spool_shard,
    spool_span,
    start_writeback,
    write_spool_file,
)
from .sqlite import AcceptJob, AsyncStore, ClaimJob, DeliveredJob, Store, open_readonly

__all__ = [
    "BOUNCED", "DECISION_EVENTS", "DEFERRED", "DELAYED", "DELIVERED", "DELIVERING", "EXPIRED", "FINAL",
    "GENESIS", "HELD", "QUEUED", "RECALLED", "REJECTED", "RELEASED", "STATES",
    "AcceptJob", "AsyncStore", "AttemptResult", "AuditEntry", "ClaimJob", "Claimed", "DeliveredJob", "NewMessage",
    "RcptOutcome", "Signer", "Store", "StoreEngine",
    "entry_hash", "erase_spans", "forget_unsynced", "new_id", "open_readonly", "os_user", "read_spool_bytes",
    "spans_by_segment", "spool_shard", "spool_span", "start_writeback", "write_spool_file",
]
