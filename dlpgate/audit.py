"""The anchored audit chain: verify it, witness its head, export "who sent what, who approved it".

The chain itself is written by the store engines (dlpgate/store), inside each transition's
transaction (so the log never disagrees with the queue), and every append ends with an entry
signed by the gateway's Ed25519 key (auditkey.py). This module checks the chain against the key and the witness file, writes the
witness, and builds the export rows and one-line summaries the CLI prints. Everything it returns
is masked once more on the way out (free text such as reasons or upstream replies might carry a
number someone typed), except the fields that are hashes or ids by construction.

What `verify` proves, and how each attack shows:
- an edited field: that entry's hash no longer matches its content;
- a chain recomputed without the key: the first signed entry at or after the edit fails its
  signature (and a witnessed head no longer matches);
- a deleted middle entry: a gap in seq; a reordered pair: prev_hash does not link;
- a deleted tail: a witnessed head is missing (or the last entries are unsigned);
- another key: every signature names a different key fingerprint;
- decisions: each approvals-table row must match a signed chain entry (the view people see is
  read from the chain itself).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .auditkey import AuditKey, PublicKey, append_witness, read_witness, witness_line
from .errors import NotFound
from .masking import mask_text
from .store import DECISION_EVENTS, GENESIS, AuditEntry, StoreEngine, entry_hash

log = logging.getLogger("dlpgate.audit")

# values that are hashes or ids: masking their digit runs would only corrupt them
_UNMASKED_KEYS = frozenset({"sha256", "original_sha256", "hash", "prev_hash", "msg_id", "id", "for", "dsn_for",
                           "time", "head", "sig", "pem", "fingerprint"})


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    message: str  # "N entries, chain intact" or the first broken entry and why


def verify(store: StoreEngine, key: PublicKey | None = None, witness: Path | None = None) -> VerifyReport:
    """Walk the whole chain; name the first edited, removed, reordered or unsigned entry, or the
    first witnessed head the database no longer holds. Without `key`: the unkeyed chain only."""
    prev, expect, n, last_signed = GENESIS, 1, 0, 0
    signed_any = False
    fps: set[str] = set()
    after = 0
    stopped: dict[str, tuple[int, str]] = {}  # msg_id -> (seq, event) of its last hold/reject/expiry/recall
    while True:
        page = store.audit_chain(after)
        if not page:
            break
        for e in page:
            n += 1
            if e.seq != expect:
                return VerifyReport(False, f"entry {expect} is missing (next is {e.seq})")
            if e.prev_hash != prev:
                return VerifyReport(False, f"entry {e.seq}: does not follow entry {e.seq - 1} (removed or reordered)")
            if entry_hash(e.prev_hash, e.seq, e.ts, e.msg_id, e.event, e.actor, e.os_user, e.detail_json) != e.hash:
                return VerifyReport(False, f"entry {e.seq}: content does not match its hash (edited)")
            if e.sig:
                signed_any = True
                if key is not None:
                    why = key.check_entry(e.seq, e.hash, e.sig)
                    if why:
                        return VerifyReport(False, f"entry {e.seq}: {why} (entries after {last_signed} were"
                                                   " rewritten without the key, or this is not the gateway's key)")
                fps.add(e.sig.rpartition(":")[0])
                last_signed = e.seq
            if e.event in _STOPPED:
                stopped[e.msg_id] = (e.seq, e.event)
            elif e.event in ("released", "purged"):
                stopped.pop(e.msg_id, None)
            prev, expect = e.hash, expect + 1
        after = page[-1].seq
    msg = f"{n} entries, chain intact"
    if key is not None and n:
        msg += f", signed by key {key.fingerprint}"
    elif signed_any:
        msg += f" (unkeyed check only: signatures by key {', '.join(sorted(fps))} not verified)"
    if witness is not None:
        heads, bad = read_witness(witness)
        if bad:
            return VerifyReport(False, bad[0])
        if key is not None and n and not heads:
            return VerifyReport(False, f"no witnessed chain head in {witness}: the log cannot be checked for a cut tail")
        by_seq: dict[int, str] = {}
        for h in heads:
            if key is not None:
                why = key.check_witness(h.seq, h.hash, h.ts, h.sig)
                if why:
                    return VerifyReport(False, f"witness line {h.line}: {why} (forged)")
            by_seq[h.seq] = h.hash
        for h in heads:
            if h.seq == 0:  # the empty chain a gateway started from
                if h.hash != GENESIS:
                    return VerifyReport(False, f"witness line {h.line}: seq 0 must carry the genesis hash (forged)")
                continue
            got = store.audit_chain(h.seq - 1, 1)
            if not got or got[0].seq != h.seq:
                return VerifyReport(False, f"witnessed head seq {h.seq} (hash {short(h.hash)}, {iso(h.ts)}) is missing:"
                                           f" the log was cut after entry {n}")
            if got[0].hash != h.hash:
                return VerifyReport(False, f"entry {h.seq}: differs from the head witnessed at {iso(h.ts)}"
                                           " (rewritten)")
        if heads:
            top = max(heads, key=lambda h: h.seq)
            msg += f", {len(heads)} witnessed heads up to entry {top.seq}"
    if key is not None and n and last_signed != n:
        first = last_signed + 1
        return VerifyReport(False, f"entry {first}: not signed (entries {first}..{n} were added without the key)")
    # decisions people see are read from the chain; the table must not hold one the chain lacks
    problem = _approvals_covered(store) or _sent_without_release(store, stopped)
    if problem:
        return VerifyReport(False, problem)
    return VerifyReport(True, msg)


# chain events after which a message goes nowhere unless a later `released` entry says so
_STOPPED = frozenset({"held", "rejected", "expired", "recalled"})
_ON_ITS_WAY = frozenset({"delayed", "delivering", "deferred", "released", "delivered", "bounced"})


def _sent_without_release(store: StoreEngine, stopped: Mapping[str, tuple[int, str]]) -> str:
    """'' unless a message the chain last left held, rejected, expired or recalled is on its way out
    (or gone out) all the same: a state written into the database without a decision. Only such
    messages are looked up (held and refused mail), not every message of the store."""
    for mid, (seq, event) in sorted(stopped.items(), key=lambda kv: kv[1][0]):
        try:
            state = str(store.get(mid)["state"])
        except NotFound:
            continue
        if state in _ON_ITS_WAY:
            return (f"message {mid} is {state} but the signed chain has no release after it was {event}"
                    f" (entry {seq}): its state was written into the database without a decision (forged)")
    return ""


def short(h: str) -> str:
    """The first 16 hex digits of a hash in groups of four: readable, and never taken for a number."""
    return ":".join(h[i:i + 4] for i in range(0, min(len(h), 16), 4))


def _approvals_covered(store: StoreEngine) -> str:
    """'' when every approvals row is a decision in the chain, else the first one that is not."""
    rows = store.approval_rows()
    if not rows:
        return ""
    chain: dict[str, list[AuditEntry]] = {}
    for mid in {r["msg_id"] for r in rows}:
        chain[mid] = [e for e in store.audit_entries(msg_id=mid) if e.event in DECISION_EVENTS and e.actor != "dlpgate"]
    for r in rows:
        want = "reject" if r["decision"] == "reject" else "release"
        match = [e for e in chain[r["msg_id"]]
                 if e.actor == r["approver"] and ("reject" if e.event == "rejected" else "release") == want
                 and e.os_user == r["os_user"] and abs(e.ts - r["ts"]) < 5]
        if not match:
            return (f"decision by {r['approver']} on message {r['msg_id']} is in the approvals table but not in the"
                    " signed chain (forged)")
        chain[r["msg_id"]].remove(match[0])
    return ""


class Witness:
    """Writes the chain head to the witness file (and the log) when it moved, or when forced."""

    def __init__(self, key: AuditKey, path: Path) -> None:
        self.key = key
        self.path = path
        self.last: tuple[int, str] | None = None

    def write(self, store: StoreEngine, *, force: bool = False) -> tuple[int, str] | None:
        seq, h = store.audit_head()
        # an empty chain is witnessed too (seq 0, the genesis hash) when forced at start: a new
        # gateway's `audit verify` then has a head to check from its first minute on
        if (seq == 0 and not force) or (not force and self.last == (seq, h)):
            return None
        rec = witness_line(self.key, seq, h, time.time())
        append_witness(self.path, rec)
        self.last = (seq, h)
        # the hash travels in its own (unmasked) field: in the message text the log masking would
        # star any long digit run a hex hash happens to hold, and the logged head could not be compared
        log.info("audit chain head witnessed: seq %d", seq, extra={"event": "audit_head", "seq": seq, "hash": h})
        return seq, h


def seal_legacy(store: StoreEngine) -> int:
    """A store from before signed entries: sign its head under a `sealed` entry. Returns how many
    earlier entries the seal covers (0: nothing to do)."""
    if store.audit_signed():
        return 0
    seq, h = store.audit_head()
    if seq == 0:
        return 0
    store.append_audit("", "sealed", "dlpgate", {"entries": seq, "head": h,
                                                 "note": "entries written before audit signing"}, "dlpgate")
    return seq


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


def export(store: StoreEngine, *, since: float | None = None, until: float | None = None,
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
        behalf = f" for {d['on_behalf_of']}" if d.get("on_behalf_of") else ""
        return f"by {r.actor} (os user {r.os_user}){behalf}"
    if e == "refused":
        return f"{d.get('op', '?')} refused for {r.actor}: {d.get('reason', '')}"[:200]
    if e == "sealed":
        return f"{d.get('entries')} earlier entries sealed under head {short(str(d.get('head', '')))}"
    if e == "delivered":
        return f"to {_addrs(d.get('recipients', []))}"
    if e == "bounced":
        return "; ".join(f"{x.get('rcpt')}: {x.get('code')}" for x in d.get("recipients", []))
    if e == "deferred":
        return str(d.get("error", ""))[:120]
    if e == "tampered":
        return (f"due ({d.get('found', '?')}) without a decision in the signed chain: not delivered, back to"
                f" {d.get('restored', '?')}")
    if d.get("reason"):
        return str(d["reason"])[:120]
    return ""

