"""Administrative subcommands: outbox, quarantine, audit, log (contract: DESIGN.md "Command line").

    dlpgate outbox list [--sender ADDR] [--json]
    dlpgate outbox recall ID --sender ADDR
    dlpgate quarantine list [--sender ADDR] [--approver ADDR] [--state STATE|all] [--json]
    dlpgate quarantine show ID [--json]
    dlpgate quarantine release ID --approver ADDR [--reason TEXT]
    dlpgate quarantine reject ID --approver ADDR --reason TEXT
    dlpgate audit verify
    dlpgate audit export [--since WHEN] [--until WHEN] [--id ID] [--json]
    dlpgate log search [--sender ADDR] [--since WHEN] [--until WHEN] [--attachment-hash SHA256] [--json]

The CLI is a second process on the server's store (SQLite in WAL mode lets both work at once): a
release here is picked up by the running gateway's scheduler within a few seconds. Output is a
table for people and, with --json, one object per line with an `id` for scripts. Nothing printed
carries a full identifier: the stored findings are masked already and every free-text value is
masked again on the way out. Errors are dlpgate.errors types: cli.main prints one line, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import hashlib
import json
import re
import socket
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from . import audit
from .approvals import Router, decide
from .config import Config
from .errors import InputError, StateError
from .masking import mask_text
from .scan.model import SEVERITY_RANK
from .store import DELAYED, HELD, STATES, Store


# ------------------------------------------------------------------------------ registration
def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add outbox / quarantine / audit / log to the `dlpgate` parser (called by cli.build_parser)."""
    outbox = sub.add_parser("outbox", parents=[common], help="messages in their send delay; sender recall")
    osub = outbox.add_subparsers(dest="outbox_command", required=True, parser_class=type(outbox))
    p = osub.add_parser("list", parents=[common], help="messages waiting out their delay")
    p.add_argument("--sender", metavar="ADDR", help="only this sender's messages")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_outbox_list)
    p = osub.add_parser("recall", parents=[common], help="cancel a message within its delay (its sender only)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--sender", metavar="ADDR", required=True, help="the message's sender (you)")
    p.set_defaults(func=cmd_outbox_recall)

    q = sub.add_parser("quarantine", parents=[common], help="held messages: list, show, release, reject")
    qsub = q.add_subparsers(dest="quarantine_command", required=True, parser_class=type(q))
    p = qsub.add_parser("list", parents=[common], help="held messages (or another --state)")
    p.add_argument("--sender", metavar="ADDR", help="only this sender's messages")
    p.add_argument("--approver", metavar="ADDR", help="only messages this approver may decide on")
    p.add_argument("--state", metavar="STATE", default=HELD,
                   help=f"held (default), all, or a comma list of: {', '.join(STATES)}")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_quarantine_list)
    p = qsub.add_parser("show", parents=[common], help="envelope, headers, parts, masked findings")
    p.add_argument("id", metavar="ID")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_quarantine_show)
    p = qsub.add_parser("release", parents=[common], help="approve a held message (sent at once)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--approver", metavar="ADDR", required=True, help="your address, as configured")
    p.add_argument("--reason", metavar="TEXT", default="", help="why (kept in the audit log)")
    p.set_defaults(func=cmd_quarantine_decide, decision="release")
    p = qsub.add_parser("reject", parents=[common], help="reject a held message (the sender is told)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--approver", metavar="ADDR", required=True, help="your address, as configured")
    p.add_argument("--reason", metavar="TEXT", required=True, help="why (sent to the sender, kept in the log)")
    p.set_defaults(func=cmd_quarantine_decide, decision="reject")

    a = sub.add_parser("audit", parents=[common], help="the hash-chained audit log")
    asub = a.add_subparsers(dest="audit_command", required=True, parser_class=type(a))
    p = asub.add_parser("verify", parents=[common], help="walk the hash chain; exit 1 if broken")
    p.set_defaults(func=cmd_audit_verify)
    p = asub.add_parser("export", parents=[common], help="who sent what, who approved it")
    p.add_argument("--since", metavar="WHEN", help="ISO date/time, epoch seconds, or an age like 7d / 12h")
    p.add_argument("--until", metavar="WHEN", help="same forms as --since (exclusive)")
    p.add_argument("--id", metavar="ID", help="only this message's entries")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_audit_export)

    lg = sub.add_parser("log", parents=[common], help="the send log (送信ログ) of messages with attachments")
    lsub = lg.add_subparsers(dest="log_command", required=True, parser_class=type(lg))
    p = lsub.add_parser("search", parents=[common], help="find logged messages")
    p.add_argument("--sender", metavar="ADDR")
    p.add_argument("--since", metavar="WHEN", help="ISO date/time, epoch seconds, or an age like 7d / 12h")
    p.add_argument("--until", metavar="WHEN")
    p.add_argument("--attachment-hash", metavar="SHA256", help="hex SHA-256 of an attachment")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_log_search)


# ------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def open_store(config: Config) -> Iterator[Store]:
    """The server's store; refuse to create an empty one (a wrong --config is the usual cause)."""
    from .store_engine import open_store as open_engine
    from .store_engine import uses_pg

    root = config.store_path
    if not uses_pg(config) and not (root / "dlpgate.db").exists():
        raise InputError(f"no message store at {root} (check --config and [store] path)")
    st = open_engine(config, migrate_at_start=False)
    try:
        yield st
    finally:
        st.close()


_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: float | None = None) -> float:
    """'7d' / '12h' (that long ago), epoch seconds, or an ISO date/time (local time if no offset)."""
    s = text.strip()
    now = time.time() if now is None else now
    m = _AGE.match(s)
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        return float(s)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise InputError(f"cannot read time {text!r}: use 2026-04-01, 2026-04-01T09:00, epoch seconds or 7d") from None
    return dt.timestamp()  # naive -> local time


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _clip(s: str, limit: int) -> str:
    if _width(s) <= limit:
        return s
    out, w = [], 0
    for c in s:
        cw = 2 if unicodedata.east_asian_width(c) in "WF" else 1
        if w + cw > limit - 1:
            break
        out.append(c)
        w += cw
    return "".join(out) + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], limits: Mapping[str, int] | None = None) -> str:
    """A plain aligned table; CJK characters count double so Japanese subjects line up."""
    limits = limits or {}
    cells = [[_clip(" ".join(str(v).split()), limits.get(h, 60)) for h, v in zip(headers, r, strict=True)]
             for r in rows]
    widths = [max([_width(h)] + [_width(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = []
    for r in [list(headers), *cells]:
        lines.append("  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _emit_json(obj: Mapping[str, Any]) -> None:
    print(json.dumps(audit.masked(obj), ensure_ascii=False, sort_keys=False))


def top_finding(findings: Sequence[Mapping[str, Any]]) -> str:
    if not findings:
        return "-"
    f = max(findings, key=lambda x: (SEVERITY_RANK.get(str(x.get("severity")), 0), int(x.get("count") or 0)))
    more = f" +{len(findings) - 1}" if len(findings) > 1 else ""
    return f"{f.get('rule')} x{f.get('count')} ({f.get('severity')}){more}"


def _findings_json(findings: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    keys = ("rule", "detector", "count", "severity", "part", "sample")
    return [{k: f.get(k) for k in keys} for f in findings]


def _approved(d: Mapping[str, Any]) -> list[str]:
    return sorted({a["approver"] for a in d.get("approvals", ()) if a["decision"] == "release"})


def _hostname(config: Config) -> str:
    return config.smtp.hostname or socket.getfqdn() or "localhost"


# ------------------------------------------------------------------------------ outbox
def cmd_outbox_list(args: argparse.Namespace, config: Config) -> int:
    now = time.time()
    with open_store(config) as st:
        rows = st.list(states=(DELAYED,), sender=args.sender)
    if args.json:
        for d in rows:
            _emit_json({"id": d["id"], "state": d["state"], "sender": d["sender"], "recipients": d["recipients"],
                        "subject": d["subject"], "arrived": d["arrived"], "due_at": d["due_at"],
                        "sends_in_seconds": max(0.0, (d["due_at"] or now) - now), "size": d["size"]})
        return 0
    if not rows:
        print("no messages in their delay window" + (f" from {args.sender}" if args.sender else ""))
        return 0
    print(table(("ID", "SENDS IN", "SENDER", "RECIPIENTS", "SUBJECT"),
                [(d["id"], age((d["due_at"] or now) - now), d["sender"], ", ".join(d["recipients"]),
                  mask_text(d["subject"])) for d in rows], {"RECIPIENTS": 40, "SUBJECT": 40}))
    return 0


def cmd_outbox_recall(args: argparse.Namespace, config: Config) -> int:
    with open_store(config) as st:
        st.recall(args.id, args.sender.strip())
    print(f"recalled {args.id}: it will not be sent")
    return 0


# ------------------------------------------------------------------------------ quarantine
def _states(arg: str) -> tuple[str, ...]:
    if arg.strip().lower() == "all":
        return ()
    out = tuple(s.strip().lower() for s in arg.split(",") if s.strip())
    bad = [s for s in out if s not in STATES]
    if bad or not out:
        named = ", ".join(bad) if bad else repr(arg)
        raise InputError(f"--state: unknown state {named}; use all or one of {', '.join(STATES)}")
    return out


def cmd_quarantine_list(args: argparse.Namespace, config: Config) -> int:
    states = _states(args.state)
    router = Router(config.approvers)
    approver = args.approver.strip().lower() if args.approver else None
    now = time.time()
    with open_store(config) as st:
        rows = st.list(states=states, sender=args.sender)
        if approver is not None:
            rows = [d for d in rows if approver in router.for_sender(d["sender"])]
        details = [st.get(d["id"]) for d in rows]
    if args.json:
        for d, full in zip(rows, details, strict=True):
            who = router.for_sender(d["sender"])
            _emit_json({"id": d["id"], "state": d["state"], "arrived": d["arrived"], "age_seconds": now - d["arrived"],
                        "sender": d["sender"], "recipients": d["recipients"], "subject": d["subject"],
                        "verdict": d["verdict"], "rules": d["rules"], "reason": d["reason"],
                        "findings": _findings_json(d["findings"]), "records": d["records"],
                        "approvals": _approved(full), "approvals_required": d["approvals_required"],
                        "approvers": list(who.approvers), "deputies": list(who.deputies),
                        "expires_at": d["expires_at"]})
        return 0
    if not rows:
        print("no messages" + (f" in state {args.state}" if args.state else ""))
        return 0
    headers = ["ID", "AGE", "SENDER", "RECIPIENTS", "SUBJECT", "TOP FINDING", "RECORDS", "APPROVALS"]
    if states != (HELD,):
        headers.insert(2, "STATE")
    out = []
    for d, full in zip(rows, details, strict=True):
        r: list[Any] = [d["id"], age(now - d["arrived"]), d["sender"] or "<>", ", ".join(d["recipients"]),
                        mask_text(d["subject"]), top_finding(d["findings"]), d["records"],
                        f"{len(_approved(full))}/{d['approvals_required']}"]
        if states != (HELD,):
            r.insert(2, d["state"])
        out.append(r)
    print(table(headers, out, {"RECIPIENTS": 36, "SUBJECT": 36, "TOP FINDING": 36}))
    return 0


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


def cmd_quarantine_show(args: argparse.Namespace, config: Config) -> int:
    with open_store(config) as st:
        d = st.get(args.id)
        try:
            raw: bytes | None = st.read_spool(args.id)
        except (StateError, OSError):
            raw = None
        trail = audit.export(st, msg_id=args.id)
    headers, parts = mime_parts(raw) if raw is not None else ({}, [])
    who = Router(config.approvers).for_sender(d["sender"])
    info = {
        "id": d["id"], "state": d["state"], "kind": d["kind"], "arrived": d["arrived"],
        "expires_at": d["expires_at"], "sender": d["sender"], "client": d["client"], "helo": d["helo"],
        "recipients": [{"rcpt": r["rcpt"], "state": r["state"], "code": r["code"]} for r in d["recipients"]],
        "size": d["size"], "sha256": d["sha256"], "subject": d["subject"], "verdict": d["verdict"],
        "rules": d["rules"], "reason": d["reason"], "records": d["records"],
        "findings": _findings_json(d["findings"]), "extracted_parts": d["parts"], "headers": headers,
        "mime_parts": parts, "content_kept": raw is not None,
        "approvers": list(who.approvers), "deputies": list(who.deputies),
        "approvals_required": d["approvals_required"],
        "decisions": [{k: a[k] for k in ("approver", "decision", "reason", "os_user", "ts")}
                      for a in d["approvals"]],
        "audit": [{"seq": r.seq, "time": audit.iso(r.ts), "event": r.event, "actor": r.actor,
                   "os_user": r.os_user, "summary": audit.summary(r)} for r in trail],
    }
    if args.json:
        _emit_json(info)
        return 0
    m = audit.masked(info)
    state = m["state"]
    if state == HELD:
        state += f" ({len(_approved(d))} of {m['approvals_required']} approvals)"
    lines = [f"id:          {m['id']}", f"state:       {state}", f"arrived:     {audit.iso(m['arrived'])}"]
    if m["expires_at"] and d["state"] == HELD:
        lines.append(f"expires:     {audit.iso(m['expires_at'])} ({config.quarantine.expire_action})")
    lines += [f"sender:      {m['sender'] or '<>'}",
              "recipients:  " + ", ".join(f"{r['rcpt']} ({r['state']})" for r in m["recipients"]),
              f"client:      {m['client'] or '-'} helo {m['helo'] or '-'}",
              f"size:        {m['size']} bytes, sha256 {m['sha256']}",
              f"subject:     {m['subject'] or '-'}",
              f"verdict:     {m['verdict']} {', '.join(m['rules'])}" + (f" - {m['reason']}" if m["reason"] else ""),
              f"records:     {m['records']}",
              f"approvers:   {', '.join(who.approvers) or '(none configured)'}"
              + (f"; deputies {', '.join(who.deputies)}" if who.deputies else "")]
    if d["state"] == HELD and len(who.everyone) < d["approvals_required"]:
        lines.append(f"warning:     only {len(who.everyone)} approver(s) may act on mail from this sender but"
                     f" {d['approvals_required']} approvals are needed; fix [[approvers]]")
    lines += ["", "headers:"] + ([f"  {k}: {v}" for k, v in m["headers"].items()] or
                                 ["  (content no longer kept: retention)"])
    if parts:
        lines += ["", "parts:", table(("#", "TYPE", "SIZE", "SHA256", "FILENAME"),
                                      [(p["index"], p["content_type"], p["size"], p["sha256"], p["filename"] or "-")
                                       for p in m["mime_parts"]], {"SHA256": 64, "FILENAME": 50})]
    if m["extracted_parts"]:
        lines += ["", "extracted:", table(("PART", "CHARS", "TABLES", "UNSCANNABLE"),
                                          [(p.get("path"), p.get("chars"), p.get("tables"),
                                            (p.get("unscannable") or "-") + (f": {p['detail']}" if p.get("detail")
                                                                              else ""))
                                           for p in m["extracted_parts"]], {"PART": 50, "UNSCANNABLE": 60})]
    lines += ["", "findings:"]
    if m["findings"]:
        lines.append(table(("RULE", "DETECTOR", "COUNT", "SEVERITY", "PART", "SAMPLE"),
                           [(f["rule"], f["detector"], f["count"], f["severity"], f["part"], f["sample"] or "-")
                            for f in m["findings"]], {"PART": 40}))
    else:
        lines.append("  none")
    if m["decisions"]:
        lines += ["", "decisions:", table(("TIME", "APPROVER", "DECISION", "OS USER", "REASON"),
                                          [(audit.iso(a["ts"]), a["approver"], a["decision"], a["os_user"],
                                            a["reason"] or "-") for a in m["decisions"]])]
    lines += ["", "audit:", table(("SEQ", "TIME", "EVENT", "ACTOR", "SUMMARY"),
                                  [(a["seq"], a["time"], a["event"], a["actor"], a["summary"] or "-")
                                   for a in m["audit"]], {"SUMMARY": 80})]
    print("\n".join(lines))
    return 0


def cmd_quarantine_decide(args: argparse.Namespace, config: Config) -> int:
    with open_store(config) as st:
        res = decide(st, config, _hostname(config), args.id, args.approver, args.decision, args.reason)
    if res.state == HELD:
        print(f"approval recorded for {res.msg_id} ({res.approvals} of {res.required});"
              " it waits for another approver")
    elif args.decision == "release":
        print(f"released {res.msg_id}: it is sent now; the sender is notified")
    else:
        print(f"rejected {res.msg_id}: it will not be sent; the sender is notified")
    return 0


# ------------------------------------------------------------------------------ audit
def cmd_audit_verify(args: argparse.Namespace, config: Config) -> int:
    with open_store(config) as st:
        rep = audit.verify(st)
    print(("audit log ok: " if rep.ok else "audit log BROKEN: ") + rep.message)
    return 0 if rep.ok else 1


def cmd_audit_export(args: argparse.Namespace, config: Config) -> int:
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    with open_store(config) as st:
        rows = audit.export(st, since=since, until=until, msg_id=args.id)
    if args.json:
        for r in rows:
            _emit_json(r.to_json())
        return 0
    if not rows:
        print("no audit entries in that range")
        return 0
    print(table(("TIME", "SEQ", "ID", "EVENT", "ACTOR", "OS USER", "SUBJECT", "SUMMARY"),
                [(audit.iso(r.ts), r.seq, r.msg_id, r.event, r.actor, r.os_user, r.subject or "-",
                  audit.summary(r) or "-") for r in rows], {"SUBJECT": 30, "SUMMARY": 70}))
    return 0


# ------------------------------------------------------------------------------ send log
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def cmd_log_search(args: argparse.Namespace, config: Config) -> int:
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    h = args.attachment_hash.strip() if args.attachment_hash else None
    if h is not None and not _HEX64.match(h):
        raise InputError("--attachment-hash: expected 64 hex digits (SHA-256)")
    with open_store(config) as st:
        # cast: store.py's `Store.list` method shadows the builtin in its later annotations
        rows = cast(list[dict[str, Any]],
                    st.sendlog(sender=args.sender, since=since, until=until, attachment_hash=h))
    if args.json:
        for d in rows:
            _emit_json({"id": d["msg_id"], "time": audit.iso(d["ts"]), "ts": d["ts"], "sender": d["sender"],
                        "recipients": d["recipients"], "subject": d["subject"], "verdict": d["verdict"],
                        "attachments": [{k: a.get(k) for k in ("filename", "content_type", "size", "sha256")}
                                        for a in d["attachments"]]})
        return 0
    if not rows:
        print("no logged messages match")
        return 0
    print(table(("TIME", "ID", "SENDER", "RECIPIENTS", "SUBJECT", "VERDICT", "ATTACHMENTS"),
                [(audit.iso(d["ts"]), d["msg_id"], d["sender"], ", ".join(d["recipients"]), mask_text(d["subject"]),
                  d["verdict"], "; ".join(f"{mask_text(str(a.get('filename') or '-'))} {a.get('size')}B"
                                          f" {str(a.get('sha256'))[:12]}" for a in d["attachments"]))
                 for d in rows], {"RECIPIENTS": 36, "SUBJECT": 30, "ATTACHMENTS": 70}))
    return 0
