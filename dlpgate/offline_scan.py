"""`dlpgate scan`: judge files offline with the same scanner and policy the gateway runs.

A message is recognised by its content, not its suffix: an `.eml`, or any file whose bytes are an
RFC 5322 message (a `.txt` saved from a mail client), an Outlook `.msg`, and each message of an
mbox or a `.pst` (one result per message, located as `dlpgate archive` locates it) are judged
against their header recipients (To, Cc, Bcc); any other file as one attachment sent to an
external address. Exit 0 when nothing was found, 1 when any message has a finding or could not be
read, 2 on a usage or input error (a missing or unreadable file, a bad rules directory).
Output never holds a full identifier: samples are masked by the scanner.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import json
import mmap
import os
import sys
from collections.abc import Iterator, Sequence
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from dlpgate.errors import DlpgateError
from dlpgate.extract.model import Extraction, ExtractLimits
from dlpgate.masking import mask_location, mask_text
from dlpgate.policy import MessageFacts, Policy
from dlpgate.scan.scanner import Scanner
from dlpgate.terminal import for_terminal

if TYPE_CHECKING:
    from dlpgate.archive.readers import Item

EXTERNAL_PLACEHOLDER = "recipient@external.invalid"


def header_message(raw: bytes | mmap.mmap) -> email.message.Message:
    """The header block alone, parsed with compat32: the body (50 MB of it, perhaps) is never walked."""
    from dlpgate.extract.mime import header_end

    end = header_end(raw)
    head = raw[:end] if end >= 0 else raw[:]
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head, headersonly=True)


def _header_recipients(raw: bytes | mmap.mmap) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str]:
    """(to, cc, bcc, from) addr-specs of an .eml's headers."""
    return header_recipients(header_message(raw))


def header_recipients(msg: email.message.Message) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str]:
    """(to, cc, bcc, from) addr-specs of parsed headers."""

    def addrs(name: str) -> tuple[str, ...]:
        values = [str(v) for v in msg.get_all(name, [])]
        return tuple(a for _, a in getaddresses(values) if "@" in a)

    sender = addrs("From")
    return addrs("To"), addrs("Cc"), addrs("Bcc"), sender[0] if sender else ""


def _judge(path: str, scanner: Scanner, policy: Policy) -> Iterator[tuple[dict[str, object], list[str]]]:
    """One (record, explanation) per message PATH holds, recognised by its content, not its name: an
    mbox (a From_ line first, or named .mbox) gives one record per message at `path@offset`, as
    `dlpgate archive` locates it; an Outlook .msg or .pst is judged as the message(s) it holds
    (recipients from its own headers, not a stand-in); an RFC 5322 message under any name (.eml,
    .txt, no suffix) as a message; anything else as an attachment to an outside address."""
    from dlpgate.archive.readers import CFB_MAGIC, PST_MAGIC, looks_like_mbox

    with open(path, "rb") as f:
        head = f.read(8192)
    if head.startswith(PST_MAGIC) or looks_like_mbox(head, Path(path).name):
        from dlpgate.archive.readers import open_archive

        for item in open_archive(path).items():
            yield from _judge_item(item, scanner, policy)
        return
    if not head.startswith(CFB_MAGIC):
        mapped = _mapped(path)
        if mapped is not None:
            if _is_message(path, head):
                try:
                    record, explanation = judge_message(mapped, _header_recipients(mapped), scanner, policy,
                                                        explain=True)
                finally:
                    _unmap(mapped)
                yield {"path": path, **record}, explanation
                return
            mapped.close()  # another kind of file: its readers take bytes
    data = Path(path).read_bytes()
    if head.startswith(CFB_MAGIC):
        from dlpgate.extract.msgfile import MsgError, is_msg, msg_to_email

        if is_msg(data):
            try:
                raw = msg_to_email(data)
            except MsgError as exc:
                yield _unreadable(path, str(exc)), []
                return
            record, explanation = judge_message(raw, _header_recipients(raw), scanner, policy, explain=True)
            yield {"path": path, **record}, explanation
            return
    yield _judge_bytes(path, data, scanner, policy)


# A message file this large is mapped, not read (see _mapped).
_MAP_MIN = 1 << 20


def _is_message(path: str, head: bytes) -> bool:
    """Whether the file whose first 8 KB are `head` is judged as one RFC 5322 message."""
    from dlpgate.extract.sniff import sniff

    return path.lower().endswith(".eml") or sniff(head[:8192], Path(path).name) == "eml"


def _mapped(path: str) -> mmap.mmap | None:
    """A read-only mapping of a big message file, or None (small, not a regular file, or not
    mappable): read it instead.

    `read_bytes` copies the file into fresh memory, a page fault every 4 KB (about 2 us each on
    a VM): for 50 MB, ~30 ms before a byte is read. A mapping of the page cache faults 16 pages
    at a time and nothing is copied: the header is parsed from a slice and a single-part body
    decoded where it lies (mime.parse). The mapping is closed when the last view of it goes.
    A file cut short while it is being judged would fault (SIGBUS) where a read would have
    seen it whole: `dlpgate scan` judges mail saved to disk, not a spool being written.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _MAP_MIN:
                return None
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # not a regular file, a file system without mmap
        return None


def _unmap(mapped: mmap.mmap) -> None:
    """Close a judged message's mapping now (and its file descriptor: a mapping holds one), not
    when a parsed message that points at it is collected; should a view of it still be alive,
    the mapping goes with the last one."""
    try:
        mapped.close()
    except BufferError:
        pass


def _judge_bytes(path: str, data: bytes, scanner: Scanner, policy: Policy) -> tuple[dict[str, object], list[str]]:
    from dlpgate.extract import extract_file  # lazily: extract/ is heavy

    if _is_message(path, data[:8192]):
        record, explanation = judge_message(data, _header_recipients(data), scanner, policy, explain=True)
        return {"path": path, **record}, explanation
    extraction = extract_file(Path(path).name, data)
    facts = MessageFacts(sender="", recipients=(EXTERNAL_PLACEHOLDER,), attachments=extraction.attachments)
    record, explanation = _decide(extraction, facts, scanner, policy, explain=True)
    return {"path": path, **record}, explanation


def _judge_item(item: Item, scanner: Scanner, policy: Policy) -> Iterator[tuple[dict[str, object], list[str]]]:
    """One message of an mbox or a PST (or its damaged block), read as `dlpgate archive` reads it;
    a failure in its own words (the exception's text), the record in `dlpgate scan`'s shape."""
    from dlpgate.archive.readers import load_item

    raw, error = load_item(item, str, (OSError, ValueError))  # MsgError is a ValueError
    if raw is None:
        if error:  # blank lines before the first From_ line are nothing, not damage
            yield _unreadable(item.location, error), []
        return
    record, explanation = judge_message(raw, _header_recipients(raw), scanner, policy, explain=True)
    yield {"path": item.location, **record}, explanation


def _unreadable(path: str, error: str) -> dict[str, object]:
    """A message that could not be read: reported (masked: the error may quote the file), not judged clean."""
    return {"path": path, "verdict": "unreadable", "error": mask_text(error), "findings": [], "records": 0}


Recipients = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str]  # to, cc, bcc, from


def judge_message(raw: bytes | mmap.mmap, recipients: Recipients, scanner: Scanner, policy: Policy,
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
    if record["verdict"] == "unreadable":
        return f"{record['path']}: unreadable: {record.get('error', '')}"
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
            for record, explanation in _judge(path, scanner, policy):
                # a file may be named after its content, as `dlpgate archive` says of its locations
                record = {**record, "path": mask_location(str(record["path"]))}
                if as_json:
                    print(for_terminal(json.dumps(record, ensure_ascii=False)), file=out)
                else:
                    print(for_terminal(_human(record)), file=out)
                if explain:
                    print(for_terminal(mask_text("\n".join(explanation))), file=err if as_json else out)
                if (record["findings"] or record["verdict"] == "unreadable") and status == 0:
                    status = 1
        except OSError as exc:
            print(for_terminal(f"dlpgate scan: {mask_location(path)}: {mask_text(exc.strerror or str(exc))}"), file=err)
            status = 2
            continue
        except DlpgateError as exc:
            print(for_terminal(f"dlpgate scan: {mask_location(path)}: {mask_text(str(exc))}"), file=err)
            status = 2
            continue
    return status
