"""Reading the hash-chained audit log: verify it, and export "who sent what, who approved it".

The chain itself is written by store.py, inside each transition's transaction (so the log never
disagrees with the queue). This module only reads it: the verification an auditor runs, and the
export rows and one-line summaries the CLI prints. Everything it returns is masked once more on
the way out (free text such as reasons or upstream replies might carry a number someone typed),
except the fields that are hashes or ids by construction.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import NotFound
from .masking import mask_text
from .store import AuditEntry, Store

# values that are hashes or ids: masking their digit runs would only corrupt them
_UNMASKED_KEYS = frozenset({"sha256", "original_sha256", "hash", "prev_hash", "msg_id", "id", "for", "dsn_for",
                           "time"})


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    message: str  # "N entries, chain intact" or the first broken entry and why


def verify(store: Store) -> VerifyReport:
    """Walk the whole chain; the first edited, removed or reordered entry is named."""
    ok, message = store.verify_audit()
    return VerifyReport(ok, message)


def masked(value: Any, key: str = "") -> Any:
    """Mask digit runs in every string of a JSON-like value, keys named as ids/hashes excepted."""
    if isinstance(value, str):
        return value if key in _UNMASKED_KEYS else mask_text(value)
    if isinstance(value, Mapping):
        return {k: masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v, key) for v in value]
    return value


def iso(ts: float) -> str:
    """Local time with its offset: what an auditor in the office reads."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(ts))


@dataclass(frozen=True)
class ExportRow:
    """One audit entry, with the message's masked subject so the row can be read on its own."""

    seq: int
    ts: float
    msg_id: str
    event: str
    actor: str
    os_user: str
    subject: str
    detail: dict[str, Any]
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.msg_id, "seq": self.seq, "time": iso(self.ts), "ts": self.ts, "event": self.event,
                "actor": self.actor, "os_user": self.os_user, "subject": self.subject, "detail": self.detail,
                "hash": self.hash}


def export(store: Store, *, since: float | None = None, until: float | None = None,
           msg_id: str | None = None) -> list[ExportRow]:
    """Audit entries in [since, until), oldest first."""
    entries = store.audit_entries(since=since, until=until, msg_id=msg_id)
    subjects: dict[str, str] = {}
    rows = []
    for e in entries:
        if e.msg_id not in subjects:
            try:
                subjects[e.msg_id] = mask_text(str(store.get(e.msg_id)["subject"]))
            except NotFound:
                subjects[e.msg_id] = ""
        rows.append(_row(e, subjects[e.msg_id]))
    return rows


def _row(e: AuditEntry, subject: str) -> ExportRow:
    return ExportRow(e.seq, e.ts, e.msg_id, e.event, mask_text(e.actor), e.os_user, subject,
                     masked(e.detail), e.hash)


def _addrs(v: Any) -> str:
    items = [str(x) for x in v] if isinstance(v, list | tuple) else [str(v)]
    return ", ".join(items[:3]) + (f" (+{len(items) - 3})" if len(items) > 3 else "")


def summary(r: ExportRow) -> str:
    """One human line saying what the entry records."""
    d = r.detail
    e = r.event
    if e == "accepted":
        if d.get("kind") == "notice":
            return f"notice to {_addrs(d.get('recipients', []))} ({d.get('notice', d.get('dsn_for') and 'dsn')})"
        return (f"from {d.get('sender') or '<>'} to {_addrs(d.get('recipients', []))}, {d.get('size', 0)} bytes,"
                f" sha256 {str(d.get('sha256', ''))[:12]}")
    if e == "verdict":
        rules = ", ".join(d.get("rules", [])) or "-"
        rec = f", {d['records']} records" if d.get("records") else ""
        return f"{d.get('verdict', '?')}: {rules}{rec}"
    if e in ("released", "rejected", "approved"):
        extra = f" ({d['approvals']}/{d['required']})" if e == "approved" else ""
        reason = f": {d['reason']}" if d.get("reason") else ""
        return f"by {r.actor} (os user {r.os_user}){extra}{reason}"
    if e == "recalled":
        return f"by {r.actor} (os user {r.os_user})"
    if e == "delivered":
        return f"to {_addrs(d.get('recipients', []))}"
    if e == "bounced":
        return "; ".join(f"{x.get('rcpt')}: {x.get('code')}" for x in d.get("recipients", []))
    if e == "deferred":
        return str(d.get("error", ""))[:120]
    if d.get("reason"):
        return str(d["reason"])[:120]
    return ""

