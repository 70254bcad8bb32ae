"""The one authority over held and delayed mail, and its Unix-socket front door (issue 14).

Only the running gateway decides. People reach it through `Authority.call(caller, op, args)`:
the CLI over a Unix socket whose peer the kernel names (SO_PEERCRED uid -> login from the passwd
database), the web console in-process with the login of its own sign-in. Nothing a client sends
names the caller, and the gateway's own config is the only source of routes, bindings and
admins: a client's `--config` only tells the CLI where the socket is.

Rules (identities.py, approvals.py hold the details):
- an approver address acts only through a login bound to it; `approver` must be one of the
  caller's addresses (omitted: the caller's only approver address for that message);
- two approvals are two people (distinct logins);
- recall: the sender's own login, or an administrator acting for them (recorded as such);
- non-admins see only their own mail and mail routed to them; admins see all and export the log;
- every refusal is an audit entry (masked), like every decision.

Contract (COMMON.md / DESIGN.md): request `{"op", "args"}` -> `{"ok": true, "result"}` or
`{"ok": false, "error": {"type", "message"}}`, one JSON line each way. Results are masked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email
import email.policy
import grp
import hashlib
import json
import logging
import os
import pwd
import socket
import stat
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import audit
from .approvals import Router, decide
from .config import Config
from .control_client import reachable
from .errors import DlpgateError, InputError, PermissionDenied, StateError
from .identities import Identities, Identity
from .masking import mask_text
from .store import DELAYED, HELD, STATES, AsyncStore, Store

log = logging.getLogger("dlpgate.control")
T = TypeVar("T")

MAX_REQUEST = 64 * 1024  # one request line; anything longer is not a request
IDLE_TIMEOUT = 60.0
MAX_CLIENTS = 64
ERROR_TYPES = ("PermissionDenied", "NotFound", "InputError", "StateError", "StoreError", "DlpgateError")


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the kernel (socket) or the web console's sign-in (web) says."""

    login: str
    uid: int | None
    via: str  # "socket" | "web"


# ------------------------------------------------------------------------------ shaping results
def _findings_json(findings: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    keys = ("rule", "detector", "count", "severity", "part", "sample")
    return [{k: f.get(k) for k in keys} for f in findings]


def mime_parts(raw: bytes) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The headers people need to recognise a message, and every leaf part with size and SHA-256.

    Sizes and hashes are of the decoded part: the same SHA-256 the send log keeps for attachments,
    so `log search --attachment-hash` finds other messages carrying the same file.
    """
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    headers = {}
    for h in ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID"):
        try:
            v = msg.get(h)
        except Exception:  # noqa: BLE001 - a malformed header must not hide the rest
            v = "(unreadable)"
        if v is not None:
            headers[h] = mask_text(" ".join(str(v).split()))
    parts = []
    for i, part in enumerate(msg.walk()):
        if part.is_multipart():
            continue
        try:
            payload = part.get_payload(decode=True)
        except Exception:  # noqa: BLE001
            payload = None
        data = payload if isinstance(payload, bytes) else b""
        try:
            name = part.get_filename() or ""
        except Exception:  # noqa: BLE001
            name = "(unreadable)"
        parts.append({"index": i, "content_type": part.get_content_type(), "filename": mask_text(name),
                      "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return headers, parts


def parse_states(arg: Any) -> tuple[str, ...]:
    """`--state`: held (default), all (= no filter), or a comma list of states."""
    text = str(arg if arg is not None else HELD)
    if text.strip().lower() == "all":
        return ()
    out = tuple(s.strip().lower() for s in text.split(",") if s.strip())
    bad = [s for s in out if s not in STATES]
    if bad or not out:
        named = ", ".join(bad) if bad else repr(text)
        raise InputError(f"--state: unknown state {named}; use all or one of {', '.join(STATES)}")
    return out


def _opt_str(args: Mapping[str, Any], key: str) -> str | None:
    v = args.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise InputError(f"{key}: expected a string")
    return v.strip()


def _opt_time(args: Mapping[str, Any], key: str) -> float | None:
    v = args.get(key)
    if v is None or v == "":
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InputError(f"{key}: expected epoch seconds")
    return float(v)


def _approved(decisions: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({a["approver"] for a in decisions if a["decision"] == "release"})


def _approved_logins(decisions: Sequence[Mapping[str, Any]]) -> set[str]:
    return {str(a.get("login") or a.get("os_user")) for a in decisions if a["decision"] == "release"}


# ------------------------------------------------------------------------------ the authority
class Authority:
    """Every people-facing operation, checked against the gateway's own config.

    `store` is the gateway's AsyncStore (its writer thread: the one writer in this process);
    `on_decision` is called after a decision or recall with the message id (the server wakes the
    deliverer and witnesses the chain head).
    """

    def __init__(self, config: Config, store: AsyncStore, *, hostname: str, identities: Identities | None = None,
                 on_decision: Callable[[str], Any] | None = None,
                 verify: Callable[[Store], audit.VerifyReport] | None = None, public_key: Any = None) -> None:
        self.config = config
        self.store = store
        self.hostname = hostname
        self.identities = identities if identities is not None else Identities(config)
        self.on_decision = on_decision
        self._verify = verify
        self._public_key = public_key  # auditkey.PublicKey of the chain's signing key
        # reads (lists, exports, verify) run on a read-only connection of their own, one at a time:
        # a long export or a verify of the whole chain never holds up the writer thread (SMTP accepts)
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dlpgate-control-read")
        self._read_store: Store | None = None

    async def _read(self, job: Callable[[Store], T]) -> T:
        def run() -> T:
            if self._read_store is None:
                self._read_store = self.store.open_reader()  # SQLite read-only, or a PostgreSQL session
            return job(self._read_store)

        return await asyncio.get_running_loop().run_in_executor(self._reader, run)

    def close(self) -> None:
        def shut() -> None:
            if self._read_store is not None:
                self._read_store.close()
                self._read_store = None

        with contextlib.suppress(RuntimeError):
            self._reader.submit(shut).result(30)
        self._reader.shutdown(wait=True)

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: new routes, people and admins apply from the next call on."""
        self.config = config
        self.identities = Identities(config, service_uid=self.identities.service_uid)

    # ---- entry point
    async def call(self, caller: Caller, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Run one operation for `caller`; raises dlpgate.errors types. Refusals are audited."""
        args = dict(args or {})
        handler = _OPS.get(op)
        if handler is None:
            raise InputError(f"unknown operation {op!r}")
        me = self.identities.identity(caller.login, caller.uid)
        try:
            if op != "whoami" and not me.known:
                raise PermissionDenied(f"{caller.login} is not known to the gateway: no [[people]] entry and not"
                                       " an administrator")
            result = await handler(self, caller, me, args)
        except PermissionDenied as e:
            await self._refused(caller, op, args, e)
            raise
        return audit.masked(result)

    async def _refused(self, caller: Caller, op: str, args: Mapping[str, Any], err: PermissionDenied) -> None:
        ident = str(args.get("id") or "")
        claimed = args.get("approver") if isinstance(args.get("approver"), str) else None

        def job(s: Store) -> None:
            try:
                mid = s.resolve_id(ident) if ident else ""
            except DlpgateError:
                mid = ""
            detail: dict[str, Any] = {"op": op, "reason": mask_text(str(err))[:300], "via": caller.via,
                                      "login": caller.login}
            if caller.uid is not None:
                detail["uid"] = caller.uid
            if claimed:
                detail["approver"] = mask_text(claimed)[:200]
            if ident and not mid:
                detail["id_given"] = mask_text(ident)[:64]
            s.append_audit(mid, "refused", caller.login, detail, caller.login)

        try:
            await self.store.run(job)
        except Exception:  # noqa: BLE001 - the refusal stands even if its entry cannot be written
            log.exception("could not audit a refusal", extra={"event": "audit_error"})
        log.warning("refused %s for %s: %s", op, caller.login, mask_text(str(err)),
                    extra={"event": "refused", "login": caller.login, "op": op})

    # ---- visibility
    def _router(self) -> Router:
        return Router(self.config.approvers)

    def _routed_to(self, me: Identity, sender: str, router: Router) -> list[str]:
        who = router.for_sender(sender)
        return [a for a in me.addresses if a in who]

    def _visible(self, me: Identity, sender: str, router: Router) -> bool:
        return me.admin or me.owns(sender) or bool(self._routed_to(me, sender, router))

    def _check_visible(self, me: Identity, msg_id: str, sender: str, router: Router) -> None:
        if not self._visible(me, sender, router):
            raise PermissionDenied(f"message {msg_id} is neither yours nor routed to you")

    def _sender_filter(self, me: Identity, sender: str | None) -> str | None:
        if sender is not None and not me.admin and not me.owns(sender):
            raise PermissionDenied(f"{sender} is not one of your addresses ({me.login})")
        return sender

    # ---- ops
    async def _whoami(self, caller: Caller, me: Identity, args: Mapping[str, Any]) -> dict[str, Any]:
        approver_addrs = [a for a in me.addresses if a in self.identities.approver_addresses()]
        roles = []
        if me.admin:
            roles.append("admin")
        if any(a in r.approvers for r in self.config.approvers for a in me.addresses):
            roles.append("approver")
        if any(a in r.deputies for r in self.config.approvers for a in me.addresses):
            roles.append("deputy")
        if me.addresses:
            roles.append("sender")
        return {"login": me.login, "name": me.name, "addresses": list(me.addresses), "roles": roles,
                "approver_addresses": approver_addrs, "known": me.known, "via": caller.via}

    async def _outbox_list(self, caller: Caller, me: Identity, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        sender = self._sender_filter(me, _opt_str(args, "sender"))
        rows = await self._read(lambda s: s.list(states=(DELAYED,), sender=sender))
        now = time.time()
        out = []
        for d in rows:
            if not (me.admin or me.owns(d["sender"])):
                continue
            out.append({"id": d["id"], "state": d["state"], "sender": d["sender"], "recipients": d["recipients"],
                        "subject": d["subject"], "arrived": d["arrived"], "due_at": d["due_at"],
                        "sends_in_seconds": max(0.0, (d["due_at"] or now) - now), "size": d["size"]})
        return out

    async def _outbox_recall(self, caller: Caller, me: Identity, args: Mapping[str, Any]) -> dict[str, Any]:
        ident = _opt_str(args, "id")
        if not ident:
            raise InputError("recall: an id is required")
        claimed = _opt_str(args, "sender")
        mid = await self.store.run(lambda s: s.resolve_id(ident))
        row = await self.store.run(lambda s: s.get(mid))
        sender = str(row["sender"])
        if row["kind"] != "mail":
            raise StateError(f"message {mid} is a gateway notice")
        if claimed is not None and claimed.lower() != sender.lower():
            raise PermissionDenied(f"message {mid}: only its sender may recall it")
        own = me.owns(sender)
        if not own and not me.admin:
            raise PermissionDenied(f"message {mid}: only its sender may recall it (or an administrator)")
        admin = not own
        await self.store.run(lambda s: s.recall(mid, sender, login=me.login, admin=admin))
        if admin:
            log.info("recalled by an administrator for its sender", extra={
                "event": "recalled", "msg_id": mid, "login": me.login})
        self._decided(mid)
        return {"id": mid, "state": "recalled", "on_behalf_of": sender if admin else None}

    async def _quarantine_list(self, caller: Caller, me: Identity, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        states = parse_states(args.get("state"))
        sender = self._sender_filter(me, _opt_str(args, "sender")) if not me.admin else _opt_str(args, "sender")
        approver = _opt_str(args, "approver")
        approver = approver.lower() if approver else None
        if approver is not None and not me.admin and not me.owns(approver):
            raise PermissionDenied(f"{approver} is not one of your addresses ({me.login})")
        router = self._router()

        def job(s: Store) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
            rows = s.list(states=states, sender=sender)
            return [(d, s.decisions(d["id"])) for d in rows]

        now = time.time()
        out = []
        for d, decisions in await self._read(job):
            if not self._visible(me, d["sender"], router):
                # even a non-admin may filter by a sender that is theirs; routed mail shows too
                continue
            who = router.for_sender(d["sender"])
            if approver is not None and approver not in who:
                continue
            logins = _approved_logins(decisions)
            mine = self._routed_to(me, d["sender"], router)
            can = (d["state"] == HELD and bool(mine) and not me.owns(d["sender"]) and me.login not in logins
                   and any(me.login in self.identities.logins_for(a) for a in mine))
            out.append({"id": d["id"], "state": d["state"], "arrived": d["arrived"],
                        "age_seconds": now - d["arrived"], "sender": d["sender"], "recipients": d["recipients"],
                        "subject": d["subject"], "verdict": d["verdict"], "rules": d["rules"],
                        "reason": d["reason"], "findings": _findings_json(d["findings"]), "records": d["records"],
                        "approvals": _approved(decisions), "approvals_required": d["approvals_required"],
                        "approvers": list(who.approvers), "deputies": list(who.deputies),
                        "expires_at": d["expires_at"], "can_decide": can,
                        "approvals_needed": max(0, int(d["approvals_required"]) - len(logins))
                        if d["state"] == HELD else 0})
        return out

    async def _quarantine_show(self, caller: Caller, me: Identity, args: Mapping[str, Any]) -> dict[str, Any]:
        ident = _opt_str(args, "id")
        if not ident:
            raise InputError("show: an id is required")
        router = self._router()

        def job(s: Store) -> tuple[dict[str, Any], bytes | None, list[audit.ExportRow]]:
            mid = s.resolve_id(ident)
            d = s.get(mid)
            self._check_visible(me, mid, d["sender"], router)
            try:
                raw: bytes | None = s.read_spool(mid)
            except (StateError, OSError):
                raw = None
            return d, raw, audit.export(s, msg_id=mid)

        d, raw, trail = await self._read(job)
        headers, parts = mime_parts(raw) if raw is not None else ({}, [])
        who = router.for_sender(d["sender"])
        logins = _approved_logins(d["approvals"])
        mine = self._routed_to(me, d["sender"], router)
        return {
            "id": d["id"], "state": d["state"], "kind": d["kind"], "arrived": d["arrived"],
            "expires_at": d["expires_at"], "sender": d["sender"], "client": d["client"], "helo": d["helo"],
            "recipients": [{"rcpt": r["rcpt"], "state": r["state"], "code": r["code"]} for r in d["recipients"]],
            "size": d["size"], "sha256": d["sha256"], "subject": d["subject"], "verdict": d["verdict"],
            "rules": d["rules"], "reason": d["reason"], "records": d["records"],
            "findings": _findings_json(d["findings"]), "extracted_parts": d["parts"], "headers": headers,
            "mime_parts": parts, "content_kept": raw is not None,
            "approvers": list(who.approvers), "deputies": list(who.deputies),
            "approvals_required": d["approvals_required"],
            "approvals_needed": max(0, int(d["approvals_required"]) - len(logins)) if d["state"] == HELD else 0,
            "can_decide": (d["state"] == HELD and bool(mine) and not me.owns(d["sender"])
                           and me.login not in logins),
            "expire_action": self.config.quarantine.expire_action,
            "decisions": [{k: a.get(k) for k in ("approver", "decision", "reason", "os_user", "login", "ts")}
                          for a in d["approvals"]],
            "audit": [{"seq": r.seq, "time": audit.iso(r.ts), "event": r.event, "actor": r.actor,
                       "os_user": r.os_user, "summary": audit.summary(r)} for r in trail],
        }

    async def _quarantine_decide(self, caller: Caller, me: Identity, args: Mapping[str, Any]) -> dict[str, Any]:
        ident = _opt_str(args, "id")
        decision = _opt_str(args, "decision")
        if not ident:
            raise InputError("decide: an id is required")
        if decision not in ("release", "reject"):
            raise InputError("decision must be release or reject")
        reason = args.get("reason") or ""
        if not isinstance(reason, str):
            raise InputError("reason: expected text")
        claimed = _opt_str(args, "approver")
        router = self._router()
        mid = await self.store.run(lambda s: s.resolve_id(ident))
        row = await self.store.run(lambda s: s.get(mid))
        sender = str(row["sender"])
        if claimed is not None:
            approver = claimed.lower()
            if not me.owns(approver):
                raise PermissionDenied(f"message {mid}: {approver} is not one of your addresses ({me.login})")
        else:
            mine = self._routed_to(me, sender, router)
            if me.owns(sender):
                raise PermissionDenied(f"message {mid}: {me.login} sent it and may not approve or reject it"
                                       " (no self-approval)")
            if not mine:
                raise PermissionDenied(f"message {mid}: none of your addresses ({me.login}) is an approver for"
                                       f" mail from {sender or '<>'}")
            if len(mine) > 1:
                raise InputError(f"message {mid}: you may act as {', '.join(mine)}; choose one with --approver")
            approver = mine[0]
        cfg, ids, hostname = self.config, self.identities, self.hostname
        res = await self.store.run(lambda s: decide(s, cfg, hostname, mid, approver, decision, reason,
                                                    login=me.login, via=caller.via, identities=ids))
        log.info("decision", extra={"event": res.state if res.state != HELD else "approved", "msg_id": mid,
                                    "login": me.login, "approver": approver})
        self._decided(mid)
        return {"id": res.msg_id, "state": res.state, "approvals": res.approvals, "required": res.required,
                "approver": approver}

    async def _audit_export(self, caller: Caller, me: Identity, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        since, until = _opt_time(args, "since"), _opt_time(args, "until")
        ident = _opt_str(args, "id")
        router = self._router()

        def job(s: Store) -> list[audit.ExportRow]:
            mid = s.resolve_id(ident) if ident else None
            if not me.admin:
                if mid is None:
                    raise PermissionDenied(f"{me.login} is not an administrator: export one message's entries"
                                           " with --id")
                self._check_visible(me, mid, s.get(mid)["sender"], router)
            return audit.export(s, since=since, until=until, msg_id=mid)

        rows = await self._read(job)
        return [r.to_json() | {"summary": audit.summary(r)} for r in rows]

    async def _audit_verify(self, caller: Caller, me: Identity, args: Mapping[str, Any]) -> dict[str, Any]:
        verify = self._verify or audit.verify
        rep = await self._read(verify)
        return {"ok": rep.ok, "message": rep.message}

    async def _audit_key(self, caller: Caller, me: Identity, args: Mapping[str, Any]) -> dict[str, Any]:
        """The public key auditors verify with (offline: `audit verify --public-key FILE`)."""
        if self._public_key is None:
            raise InputError("this gateway has no audit signing key")
        return {"fingerprint": self._public_key.fingerprint, "pem": self._public_key.pem().decode("ascii")}

    async def _log_search(self, caller: Caller, me: Identity, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        since, until = _opt_time(args, "since"), _opt_time(args, "until")
        sender = _opt_str(args, "sender")
        if sender is not None and not me.admin:
            self._sender_filter(me, sender)
        h = _opt_str(args, "attachment_hash")
        if h is not None and not (8 <= len(h) <= 64 and all(c in "0123456789abcdefABCDEF" for c in h)):
            raise InputError("--attachment-hash: expected 64 hex digits (SHA-256) or a prefix of at least 8")
        router = self._router()
        rows = await self._read(lambda s: s.sendlog(sender=sender, since=since, until=until, attachment_hash=h))
        out = []
        for d in rows:
            if not self._visible(me, d["sender"], router):
                continue
            out.append({"id": d["msg_id"], "time": audit.iso(d["ts"]), "ts": d["ts"], "sender": d["sender"],
                        "recipients": d["recipients"], "subject": d["subject"], "verdict": d["verdict"],
                        "attachments": [{k: a.get(k) for k in ("filename", "content_type", "size", "sha256")}
                                        for a in d["attachments"]]})
        return out

    def _decided(self, msg_id: str) -> None:
        if self.on_decision is not None:
            try:
                self.on_decision(msg_id)
            except Exception:  # noqa: BLE001 - the decision is committed; waking is best effort
                log.exception("after-decision hook failed", extra={"event": "control_error"})


_OPS: dict[str, Callable[..., Any]] = {
    "whoami": Authority._whoami,
    "outbox.list": Authority._outbox_list,
    "outbox.recall": Authority._outbox_recall,
    "quarantine.list": Authority._quarantine_list,
    "quarantine.show": Authority._quarantine_show,
    "quarantine.decide": Authority._quarantine_decide,
    "audit.export": Authority._audit_export,
    "audit.verify": Authority._audit_verify,
    "audit.key": Authority._audit_key,
    "log.search": Authority._log_search,
}


# ------------------------------------------------------------------------------ the socket
def preflight(cfg: Config) -> None:
    """What `serve` needs for the control socket and the audit key, checked creating nothing
    (startup.preflight runs it with the other checks): ConfigError naming the key."""
    from .errors import ConfigError

    sock = cfg.control_socket
    if cfg.control.group:
        try:
            grp.getgrnam(cfg.control.group)
        except KeyError:
            raise ConfigError(f"control.group: no Unix group {cfg.control.group!r} (groupadd it, and add the"
                              " service account and the people who approve)") from None
    # (the store directory itself is made 0700 at start, before the socket is bound in it)
    if sock.parent.is_dir() and sock.parent.stat().st_mode & 0o002 and sock.parent.resolve() != cfg.store_path.resolve():
        raise ConfigError(f"control.socket: its directory {sock.parent} is writable by everyone; use one only the"
                          " service account writes (e.g. /run/dlpgate)")
    key = cfg.audit_key_path
    if key.exists():
        if not os.access(key, os.R_OK):
            raise ConfigError(f"audit.key: {key} is not readable by uid {os.getuid()}")
        if key.stat().st_mode & 0o077:
            raise ConfigError(f"audit.key: {key} is readable by others; chmod 600 it")


def peer_caller(sock: socket.socket) -> Caller:
    """The connecting process's uid from the kernel, and its login from the passwd database."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    try:
        login = pwd.getpwuid(uid).pw_name
    except KeyError:
        login = f"uid:{uid}"  # no passwd entry: known to nobody
    return Caller(login, uid, "socket")


def _listening(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        with reachable(path) as name:
            s.connect(name)
    except OSError:
        return False
    finally:
        s.close()
    return True


def _error_reply(e: BaseException) -> dict[str, Any]:
    name = type(e).__name__
    for t in type(e).__mro__:
        if t.__name__ in ERROR_TYPES:
            name = t.__name__
            break
    return {"ok": False, "error": {"type": name, "message": mask_text(str(e))}}


class ControlServer:
    """JSON lines on a Unix socket; one Authority call per request line."""

    def __init__(self, authority: Authority, path: Path, group: str = "") -> None:
        self.authority = authority
        self.path = path
        self.group = group
        self.server: asyncio.AbstractServer | None = None
        self._clients = 0

    async def start(self) -> None:
        p = self.path
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        d = p.parent.stat()
        if d.st_mode & 0o002:  # anyone could swap the socket for their own between our bind and a client's connect
            raise InputError(f"control.socket: its directory {p.parent} is writable by everyone; use one only the"
                             " service account writes (e.g. /run/dlpgate)")
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(p.lstat().st_mode):
                raise InputError(f"control.socket: {p} exists and is not a socket")
            if _listening(p):
                raise InputError(f"control.socket: another gateway is serving on {p}")
            p.unlink()  # a socket left by a killed gateway
        gid = -1
        if self.group:
            try:
                gid = grp.getgrnam(self.group).gr_gid
            except KeyError:
                raise InputError(f"control.group: no Unix group {self.group!r}") from None
        old = os.umask(0o177)  # created 0600: nobody else connects before the mode below is set
        try:
            with reachable(p) as name:
                self.server = await asyncio.start_unix_server(self._client, path=name, limit=MAX_REQUEST)
        except OSError as e:
            raise InputError(f"control.socket: cannot listen on {p}: {e.strerror or e}") from None
        finally:
            os.umask(old)
        if gid >= 0:
            try:
                if p.stat().st_gid != gid:
                    os.chown(p, -1, gid)  # the service account must be a member of the group
                os.chmod(p, 0o660)
            except OSError as e:
                await self.stop()
                raise InputError(f"control.group: cannot hand the socket {p} to group {self.group!r}: {e.strerror}"
                                 " (the service account must be a member of it)") from None
        log.info("control socket %s%s", p, f" (group {self.group})" if self.group else " (service account only)",
                 extra={"event": "control_listening"})

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
            self.server = None
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if self._clients >= MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            try:
                caller = peer_caller(sock)
            except OSError:
                return
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except (TimeoutError, asyncio.LimitOverrunError, ValueError, ConnectionError):
                    return
                if not line:
                    return
                reply = await self._one(caller, line)
                writer.write((json.dumps(reply, ensure_ascii=False) + "\n").encode("utf-8"))
                try:
                    await writer.drain()
                except ConnectionError:
                    return
        finally:
            self._clients -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def _one(self, caller: Caller, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            if not isinstance(req, dict) or not isinstance(req.get("op"), str):
                raise InputError("request: expected {\"op\": ..., \"args\": {...}}")
            args = req.get("args") or {}
            if not isinstance(args, dict):
                raise InputError("request: args must be an object")
            return {"ok": True, "result": await self.authority.call(caller, req["op"], args)}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error_reply(InputError("request: not JSON"))
        except DlpgateError as e:
            return _error_reply(e)
        except Exception as e:  # noqa: BLE001 - one line to the client; the trace to the log
            log.exception("control request failed", extra={"event": "control_error"})
            return {"ok": False, "error": {"type": "DlpgateError",
                                           "message": f"internal error ({type(e).__name__}); see the gateway log"}}
