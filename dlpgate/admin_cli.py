"""Administrative subcommands: outbox, quarantine, audit, log (contract: DESIGN.md "Command line").

    dlpgate outbox list [--sender ADDR] [--json]
    dlpgate outbox recall ID [--sender ADDR]
    dlpgate quarantine list [--sender ADDR] [--approver ADDR] [--state STATE|all] [--json]
    dlpgate quarantine show ID [--json]
    dlpgate quarantine release ID [--approver ADDR] [--reason TEXT]
    dlpgate quarantine reject ID [--approver ADDR] --reason TEXT
    dlpgate audit verify [--public-key FILE [--store DIR] [--witness FILE]]
    dlpgate audit key                      the public key (PEM) and its fingerprint, for auditors
    dlpgate audit export [--since WHEN] [--until WHEN] [--id ID] [--json]
    dlpgate log search [--sender ADDR] [--since WHEN] [--until WHEN] [--attachment-hash SHA256] [--json]

These are thin clients of the running gateway's control API (control.py): the gateway learns who
is calling from the kernel and decides with its own config; `--config` here only says where its
socket is. With the gateway down they print one line and exit 2; nothing here opens the store
for writing. (`audit verify --public-key` is the auditor's offline check: read-only, key public.)
Output is a table for people and, with --json, one object per line with an `id` for scripts.
Nothing printed carries a full identifier: results come masked from the gateway and every free
text value is masked again on the way out. Errors are dlpgate.errors types: one line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from . import audit
from .config import Config
from .control import parse_states
from .control_client import call as control_call
from .control_client import socket_path
from .errors import InputError
from .masking import mask_text
from .scan.model import SEVERITY_RANK
from .store import HELD, STATES
from .terminal import for_terminal
from .terminal import safe_print as print  # every line this module prints is made terminal-safe


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
    p.add_argument("--sender", metavar="ADDR", help="the message's sender (checked; optional)")
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
    p.add_argument("--approver", metavar="ADDR", help="which of your approver addresses (default: your only one)")
    p.add_argument("--reason", metavar="TEXT", default="", help="why (kept in the audit log)")
    p.set_defaults(func=cmd_quarantine_decide, decision="release")
    p = qsub.add_parser("reject", parents=[common], help="reject a held message (the sender is told)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--approver", metavar="ADDR", help="which of your approver addresses (default: your only one)")
    p.add_argument("--reason", metavar="TEXT", required=True, help="why (sent to the sender, kept in the log)")
    p.set_defaults(func=cmd_quarantine_decide, decision="reject")

    a = sub.add_parser("audit", parents=[common], help="the hash-chained audit log")
    asub = a.add_subparsers(dest="audit_command", required=True, parser_class=type(a))
    p = asub.add_parser("verify", parents=[common], help="check signatures, chain and witness; exit 1 if broken")
    p.add_argument("--public-key", metavar="FILE", help="offline: verify a store copy with this public key")
    p.add_argument("--store", metavar="DIR", help="offline: the store directory (default: the config's)")
    p.add_argument("--witness", metavar="FILE", help="offline: the witness file (default: the config's)")
    p.set_defaults(func=cmd_audit_verify)
    p = asub.add_parser("key", parents=[common], help="print the public key auditors verify the chain with")
    p.set_defaults(func=cmd_audit_key)
    p = asub.add_parser("export", parents=[common], help="who sent what, who approved it")
    p.add_argument("--since", metavar="WHEN", help="ISO date/time, epoch seconds, today, yesterday, or an age like 7d / 12h")
    p.add_argument("--until", metavar="WHEN", help="same forms as --since (exclusive)")
    p.add_argument("--id", metavar="ID", help="only this message's entries")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_audit_export)

    lg = sub.add_parser("log", parents=[common], help="the send log (送信ログ) of messages with attachments")
    lsub = lg.add_subparsers(dest="log_command", required=True, parser_class=type(lg))
    p = lsub.add_parser("search", parents=[common], help="find logged messages")
    p.add_argument("--sender", metavar="ADDR")
    p.add_argument("--since", metavar="WHEN", help="ISO date/time, epoch seconds, today, yesterday, or an age like 7d / 12h")
    p.add_argument("--until", metavar="WHEN")
    p.add_argument("--attachment-hash", metavar="SHA256", help="hex SHA-256 of an attachment (or its first 8+ digits)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_log_search)


# ------------------------------------------------------------------------------ one-line outcomes
# The lines people read after acting, in `[quarantine] language` of the config the CLI found (the
# running gateway's, by the default lookup): the same language its notices speak. Tables keep
# their column names and --json its keys: scripts read those.
_SAY: dict[str, dict[str, str]] = {
    "ja": {
        "outbox.none": "送信待ちのメールはありません", "outbox.none_from": "{sender} の送信待ちのメールはありません",
        "recalled": "{id} を取り消しました。送信されません", "recalled.behalf": "（{sender} の代わりに、管理者として）",
        "quarantine.none": "該当するメールはありません（状態: {state}）",
        "partial": "{id} の承認を記録しました（{n}/{required}）。別の承認者の承認を待ちます",
        "released": "{id} を承認しました。今すぐ送信します。送信者に通知します",
        "rejected": "{id} を却下しました。送信されません。送信者に通知します",
        "audit.none": "その期間の監査記録はありません", "log.none": "該当する送信ログはありません",
    },
    "en": {
        "outbox.none": "no messages in their delay window",
        "outbox.none_from": "no messages in their delay window from {sender}",
        "recalled": "recalled {id}: it will not be sent", "recalled.behalf": " (for {sender}, as administrator)",
        "quarantine.none": "no messages in state {state}",
        "partial": "approval recorded for {id} ({n} of {required}); it waits for another approver",
        "released": "released {id}: it is sent now; the sender is notified",
        "rejected": "rejected {id}: it will not be sent; the sender is notified",
        "audit.none": "no audit entries in that range", "log.none": "no logged messages match",
    },
}


def say(config: Config, key: str, **kw: Any) -> str:
    """One outcome line in the configured language (English for anything but "ja")."""
    return _SAY.get(config.quarantine.language, _SAY["en"])[key].format(**kw)


# ------------------------------------------------------------------------------ helpers
def _call(config: Config, op: str, args: dict[str, Any] | None = None) -> Any:
    """One operation on the running gateway of this config (its socket); typed errors pass up."""
    return control_call(socket_path(config), op, {k: v for k, v in (args or {}).items() if v is not None})


_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: float | None = None) -> float:
    """'7d' / '12h' (that long ago), today / yesterday (local midnight), epoch seconds, or an ISO
    date/time (local time if no offset)."""
    s = text.strip()
    now = time.time() if now is None else now
    if s.lower() in ("today", "yesterday", "now"):
        if s.lower() == "now":
            return now
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - timedelta(days=1 if s.lower() == "yesterday" else 0)).timestamp()
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
        raise InputError(f"cannot read time {text!r}: use 2026-04-01, 2026-04-01T09:00, epoch seconds, today,"
                         " yesterday or 7d") from None
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
    cells = [[_clip(" ".join(for_terminal(str(v)).split()), limits.get(h, 60)) for h, v in zip(headers, r, strict=True)]
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



def approvals_cell(d: Mapping[str, Any]) -> str:
    """`n/m` for a message that went through approval (held, or any decision taken on it), else `-`.

    Clean mail carries the store's default `approvals_required = 1` (or 0) although nobody was ever
    asked: `0/1` beside a delivered message would read as "sent without its approval"."""
    if d.get("verdict") != "hold" and not d.get("approvals") and d.get("state") != HELD:
        return "-"
    return f"{len(d.get('approvals') or ())}/{d.get('approvals_required')}"


def _hash_arg(text: str | None) -> str | None:
    if text is None:
        return None
    h = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8,64}", h):
        raise InputError("--attachment-hash: expected 64 hex digits (SHA-256) or a prefix of at least 8")
    return h


# ------------------------------------------------------------------------------ outbox
def cmd_outbox_list(args: argparse.Namespace, config: Config) -> int:
    now = time.time()
    rows = _call(config, "outbox.list", {"sender": args.sender})
    if args.json:
        for d in rows:
            _emit_json(d)
        return 0
    if not rows:
        print(say(config, "outbox.none_from", sender=args.sender) if args.sender else say(config, "outbox.none"))
        return 0
    print(table(("ID", "SENDS IN", "SENDER", "RECIPIENTS", "SUBJECT"),
                [(d["id"], age((d["due_at"] or now) - now), d["sender"], ", ".join(d["recipients"]),
                  mask_text(d["subject"])) for d in rows], {"RECIPIENTS": 40, "SUBJECT": 40}))
    return 0


def cmd_outbox_recall(args: argparse.Namespace, config: Config) -> int:
    res = _call(config, "outbox.recall", {"id": args.id, "sender": args.sender.strip() if args.sender else None})
    behalf = say(config, "recalled.behalf", sender=res["on_behalf_of"]) if res.get("on_behalf_of") else ""
    print(say(config, "recalled", id=res["id"]) + behalf)
    return 0


# ------------------------------------------------------------------------------ quarantine
_LIST_JSON_KEYS = ("id", "state", "arrived", "age_seconds", "sender", "recipients", "subject", "verdict", "rules",
                   "reason", "findings", "records", "approvals", "approvals_required", "approvers", "deputies",
                   "expires_at", "can_decide", "approvals_needed")


def cmd_quarantine_list(args: argparse.Namespace, config: Config) -> int:
    states = parse_states(args.state)
    rows = _call(config, "quarantine.list", {"sender": args.sender, "approver": args.approver, "state": args.state})
    if args.json:
        for d in rows:
            _emit_json({k: d.get(k) for k in _LIST_JSON_KEYS})
        return 0
    if not rows:
        print(say(config, "quarantine.none", state=args.state))
        return 0
    headers = ["ID", "AGE", "SENDER", "RECIPIENTS", "SUBJECT", "TOP FINDING", "RECORDS", "APPROVALS"]
    if states != (HELD,):
        headers.insert(2, "STATE")
    out = []
    for d in rows:
        r: list[Any] = [d["id"], age(d["age_seconds"]), d["sender"] or "<>", ", ".join(d["recipients"]),
                        mask_text(d["subject"]), top_finding(d["findings"]), d["records"], approvals_cell(d)]
        if states != (HELD,):
            r.insert(2, d["state"])
        out.append(r)
    print(table(headers, out, {"RECIPIENTS": 36, "SUBJECT": 36, "TOP FINDING": 36}))
    return 0


def cmd_quarantine_show(args: argparse.Namespace, config: Config) -> int:
    info = _call(config, "quarantine.show", {"id": args.id})
    if args.json:
        _emit_json(info)
        return 0
    m = audit.masked(info)
    held = m["state"] == HELD
    approvals = len({a["login"] or a["os_user"] for a in m["decisions"] if a["decision"] == "release"})
    state = m["state"] + (f" ({approvals} of {m['approvals_required']} approvals)" if held else "")
    lines = [f"id:          {m['id']}", f"state:       {state}", f"arrived:     {audit.iso(m['arrived'])}"]
    if m["expires_at"] and held:
        lines.append(f"expires:     {audit.iso(m['expires_at'])} ({m.get('expire_action', 'reject')})")
    everyone = list(m["approvers"]) + list(m["deputies"])
    lines += [f"sender:      {m['sender'] or '<>'}",
              "recipients:  " + ", ".join(f"{r['rcpt']} ({r['state']})" for r in m["recipients"]),
              f"client:      {m['client'] or '-'} helo {m['helo'] or '-'}",
              f"size:        {m['size']} bytes, sha256 {m['sha256']}",
              f"subject:     {m['subject'] or '-'}",
              f"verdict:     {m['verdict']} {', '.join(m['rules'])}" + (f" - {m['reason']}" if m["reason"] else ""),
              f"records:     {m['records']}",
              f"approvers:   {', '.join(m['approvers']) or '(none configured)'}"
              + (f"; deputies {', '.join(m['deputies'])}" if m["deputies"] else "")]
    if held and len(everyone) < m["approvals_required"]:
        lines.append(f"warning:     only {len(everyone)} approver(s) may act on mail from this sender but"
                     f" {m['approvals_required']} approvals are needed; fix [[approvers]]")
    if held:
        lines.append(f"you:         {'may decide on it' if m.get('can_decide') else 'may not decide on it'}")
    lines += ["", "headers:"] + ([f"  {k}: {v}" for k, v in m["headers"].items()] or
                                 ["  (content no longer kept: retention)"])
    if m["mime_parts"]:
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
        lines += ["", "decisions:", table(("TIME", "APPROVER", "DECISION", "LOGIN", "REASON"),
                                          [(audit.iso(a["ts"]), a["approver"], a["decision"],
                                            a["login"] or a["os_user"], a["reason"] or "-") for a in m["decisions"]])]
    lines += ["", "audit:", table(("SEQ", "TIME", "EVENT", "ACTOR", "SUMMARY"),
                                  [(a["seq"], a["time"], a["event"], a["actor"], a["summary"] or "-")
                                   for a in m["audit"]], {"SUMMARY": 80})]
    print("\n".join(lines))
    return 0


def cmd_quarantine_decide(args: argparse.Namespace, config: Config) -> int:
    res = _call(config, "quarantine.decide", {"id": args.id, "decision": args.decision, "reason": args.reason,
                                              "approver": args.approver})
    if res["state"] == HELD:
        print(say(config, "partial", id=res["id"], n=res["approvals"], required=res["required"]))
    else:
        print(say(config, "released" if args.decision == "release" else "rejected", id=res["id"]))
    return 0


# ------------------------------------------------------------------------------ audit
def cmd_audit_verify(args: argparse.Namespace, config: Config) -> int:
    if args.public_key:
        rep = _verify_offline(args, config)
        ok, message = rep.ok, rep.message
    else:
        if args.store or args.witness:
            raise InputError("--store and --witness go with --public-key (the offline check)")
        res = _call(config, "audit.verify")
        ok, message = bool(res["ok"]), str(res["message"])
    print(("audit log ok: " if ok else "audit log BROKEN: ") + mask_text(message))
    return 0 if ok else 1


def cmd_audit_key(args: argparse.Namespace, config: Config) -> int:
    res = _call(config, "audit.key")
    print(res["pem"], end="" if res["pem"].endswith("\n") else "\n")
    print(f"# fingerprint {res['fingerprint']}")
    return 0


def _verify_offline(args: argparse.Namespace, config: Config) -> audit.VerifyReport:
    """The auditor's check: a copy of the store (opened read-only), the public key, the witness."""
    from .auditkey import PublicKey
    from .store import open_readonly

    key = PublicKey.load(args.public_key)
    root = Path(args.store) if args.store else config.store_path
    witness = Path(args.witness) if args.witness else config.audit_witness_path
    from .store.engine import open_store as open_engine
    from .store.engine import uses_pg

    # the shared PostgreSQL store is read in place (a copy given with --store is a SQLite store)
    st = open_engine(config, migrate_at_start=False) if uses_pg(config) and not args.store else open_readonly(root)
    try:
        return audit.verify(st, key, witness)
    finally:
        st.close()


def cmd_audit_export(args: argparse.Namespace, config: Config) -> int:
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    rows = _call(config, "audit.export", {"since": since, "until": until, "id": args.id})
    if args.json:
        for r in rows:
            _emit_json({k: v for k, v in r.items() if k != "summary"})
        return 0
    if not rows:
        print(say(config, "audit.none"))
        return 0
    print(table(("TIME", "SEQ", "ID", "EVENT", "ACTOR", "OS USER", "SUBJECT", "SUMMARY"),
                [(r["time"], r["seq"], r["id"], r["event"], r["actor"], r["os_user"], r["subject"] or "-",
                  mask_text(r.get("summary") or "-")) for r in rows], {"SUBJECT": 30, "SUMMARY": 70}))
    return 0


# ------------------------------------------------------------------------------ send log
def cmd_log_search(args: argparse.Namespace, config: Config) -> int:
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    h = _hash_arg(args.attachment_hash)
    rows = _call(config, "log.search", {"sender": args.sender, "since": since, "until": until,
                                        "attachment_hash": h})
    if args.json:
        for d in rows:
            _emit_json(d)
        return 0
    if not rows:
        print(say(config, "log.none"))
        return 0
    print(table(("TIME", "ID", "SENDER", "RECIPIENTS", "SUBJECT", "VERDICT", "ATTACHMENTS"),
                [(d["time"], d["id"], d["sender"], ", ".join(d["recipients"]), mask_text(d["subject"]),
                  d["verdict"], "; ".join(f"{mask_text(str(a.get('filename') or '-'))} {a.get('size')}B"
                                          f" {str(a.get('sha256'))[:12]}" for a in d["attachments"]))
                 for d in rows], {"RECIPIENTS": 36, "SUBJECT": 30, "ATTACHMENTS": 70}))
    return 0
