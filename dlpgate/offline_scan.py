"""`dlpgate scan`: judge files offline with the same scanner and policy the gateway runs.

A message is recognised by its content, not its suffix: an `.eml`, or any file whose bytes are an
RFC 5322 message (a `.txt` saved from a mail client), is judged against its header recipients
(To, Cc, Bcc); any other file as one attachment sent to an external address. Exit 0 when nothing was found, 1 when any file has a
finding, 2 on a usage or input error (a missing or unreadable file, a bad rules directory).
Output never holds a full identifier: samples are masked by the scanner.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import json
import sys
from collections.abc import Sequence
from email.utils import getaddresses
from pathlib import Path
from typing import TextIO

from dlpgate.errors import DlpgateError
from dlpgate.extract.model import Extraction, ExtractLimits
from dlpgate.masking import mask_text
from dlpgate.policy import MessageFacts, Policy
from dlpgate.scan.scanner import Scanner
from dlpgate.terminal import for_terminal

EXTERNAL_PLACEHOLDER = "recipient@external.invalid"


def header_message(raw: bytes) -> email.message.Message:
    """The header block alone, parsed with compat32: the body (50 MB of it, perhaps) is never walked."""
    from dlpgate.extract.mime import header_end

    end = header_end(raw)
    head = raw[:end] if end >= 0 else raw
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head, headersonly=True)


def _header_recipients(raw: bytes) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str]:
    """(to, cc, bcc, from) addr-specs of an .eml's headers."""
    return header_recipients(header_message(raw))


def header_recipients(msg: email.message.Message) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str]:
    """(to, cc, bcc, from) addr-specs of parsed headers."""

    def addrs(name: str) -> tuple[str, ...]:
        values = [str(v) for v in msg.get_all(name, [])]
        return tuple(a for _, a in getaddresses(values) if "@" in a)

    sender = addrs("From")
    return addrs("To"), addrs("Cc"), addrs("Bcc"), sender[0] if sender else ""


def _judge(path: str, scanner: Scanner, policy: Policy) -> tuple[dict[str, object], list[str]]:
    from dlpgate.extract import extract_file  # lazily: extract/ is heavy
    from dlpgate.extract.sniff import sniff

    data = Path(path).read_bytes()
    if path.lower().endswith(".eml") or sniff(data[:8192], Path(path).name) == "eml":
        record, explanation = judge_message(data, _header_recipients(data), scanner, policy, explain=True)
        return {"path": path, **record}, explanation
    extraction = extract_file(Path(path).name, data)
    facts = MessageFacts(sender="", recipients=(EXTERNAL_PLACEHOLDER,), attachments=extraction.attachments)
    record, explanation = _decide(extraction, facts, scanner, policy, explain=True)
    return {"path": path, **record}, explanation


Recipients = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str]  # to, cc, bcc, from


def judge_message(raw: bytes, recipients: Recipients, scanner: Scanner, policy: Policy,
                  limits: ExtractLimits | None = None, explain: bool = False) -> tuple[dict[str, object], list[str]]:
    """One message judged as the gateway judges it, against its header recipients (To, Cc, Bcc:
    `recipients` as header_recipients gives them); {"verdict", "findings", "records"} plus, with
    `explain`, why each rule fired or not. `dlpgate archive` calls this for every message."""
    from dlpgate.extract import DEFAULT_LIMITS, extract_message

    extraction = extract_message(raw, limits or DEFAULT_LIMITS)
    to, cc, bcc, sender = recipients
    envelope = tuple(dict.fromkeys(to + cc + bcc)) or (EXTERNAL_PLACEHOLDER,)
    facts = MessageFacts(
        sender=sender,
        recipients=envelope,
        subject=extraction.subject,
        header_to=extraction.header_to or to,
        header_cc=extraction.header_cc or cc,
        attachments=extraction.attachments,
    )
    return _decide(extraction, facts, scanner, policy, explain)


def _decide(extraction: Extraction, facts: MessageFacts, scanner: Scanner, policy: Policy,
            explain: bool) -> tuple[dict[str, object], list[str]]:
    result = scanner.scan_extraction(extraction)
    verdict = policy.decide(result, facts)
    findings = result.findings + verdict.extra_findings
    record: dict[str, object] = {
        "verdict": verdict.action,
        # part names come from inside the file (attachment and sheet names): masked like the gateway's
        "findings": [{**f.to_json(), "part": mask_text(f.part)} for f in findings],
        "records": result.records,
    }
    explanation: list[str] = []
    if explain:
        explanation = [f"  {'FIRED' if c.matched else 'no   '} {c.rule} [{c.action}]: {c.why}"
                       for c in policy.explain(result, facts)]
        if verdict.reason:
            explanation.append(f"  reason: {verdict.reason}")
    return record, explanation


def _human(record: dict[str, object]) -> str:
    lines = [f"{record['path']}: {record['verdict']} (records: {record['records']})"]
    findings = record["findings"]
    assert isinstance(findings, list)
    for f in findings:
        lines.append(f"  {f['severity']:6s} {f['rule']} x{f['count']} in {f['part']}" + (f" [{f['sample']}]" if f["sample"] else ""))
    return "\n".join(lines)


def run(
    paths: list[str],
    *,
    as_json: bool,
    rules_dir: str | None,
    explain: bool = False,
    internal_domains: Sequence[str] = (),
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out if out is not None else sys.stdout  # looked up per call: callers may redirect stdout
    err = err if err is not None else sys.stderr
    if not paths:
        print("dlpgate scan: no PATH given", file=err)
        return 2
    try:
        scanner = Scanner.load(rules_dir)
        policy = Policy.load(rules_dir, internal_domains)
    except DlpgateError as exc:
        print(f"dlpgate scan: {exc}", file=err)
        return 2
    status = 0
    for path in paths:
        try:
            record, explanation = _judge(path, scanner, policy)
        except OSError as exc:
            print(f"dlpgate scan: {path}: {exc.strerror or exc}", file=err)
            status = 2
            continue
        except DlpgateError as exc:
            print(f"dlpgate scan: {path}: {exc}", file=err)
            status = 2
            continue
        if as_json:
            print(for_terminal(json.dumps(record, ensure_ascii=False)), file=out)
        else:
            print(for_terminal(_human(record)), file=out)
        if explain:
            print(for_terminal(mask_text("\n".join(explanation))), file=err if as_json else out)
        if record["findings"] and status == 0:
            status = 1
    return status
