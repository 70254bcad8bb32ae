"""The worker side of `dlpgate archive`: Items -> result records, judged as the gateway judges.

Each worker process compiles the rules once (`init`), then judges batches of Items: it reads the
message bytes itself (readers.load), judges them with offline_scan.judge_message (the extraction,
scanner and policy of `dlpgate scan` and the gateway; recipients from To, Cc and Bcc) and returns
plain dicts. Everything in a result is masked: findings by the scanner, subject and sender by
masking.mask_text; recipients are reduced to their domains.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from dlpgate.masking import mask_location, mask_text

from .readers import Item, load_item


@dataclass(frozen=True)
class Settings:
    rules_dir: str | None
    internal_domains: tuple[str, ...]
    since: datetime | None = None
    until: datetime | None = None


_STATE: dict[str, Any] = {}


def init(settings: Settings, in_pool: bool = True) -> None:
    """Once per worker: Ctrl-C belongs to the parent (it stops the run and writes the checkpoint),
    so a worker ignores SIGINT and is ended by the parent."""
    if in_pool:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    from dlpgate.policy import Policy
    from dlpgate.scan.scanner import Scanner

    _STATE["scanner"] = Scanner.load(settings.rules_dir)
    _STATE["policy"] = Policy.load(settings.rules_dir, settings.internal_domains)
    _STATE["settings"] = settings


def judge_batch(items: Sequence[Item]) -> list[dict[str, Any] | None]:
    """One result per Item (None for a checkpoint-only marker)."""
    return [judge_item(item) for item in items]


def judge_item(item: Item) -> dict[str, Any] | None:
    # any exception: OSError, MsgError, anything a damaged file makes a reader raise
    raw, error = load_item(item, _reason)
    if raw is None:
        return damaged(item.location, error, item.size) if error else None
    return judge_raw(item.location, raw, item.size)


def judge_raw(location: str, raw: bytes, size: int) -> dict[str, Any]:
    from dlpgate.offline_scan import judge_message

    from .headers import read_headers

    settings: Settings = _STATE["settings"]
    try:
        h = read_headers(raw)
    except Exception as exc:
        return damaged(location, f"unreadable header block ({type(exc).__name__})", size)
    if not h.fields:
        return damaged(location, "not a message (no header fields)", size)
    when = _date(h.date)
    if when is not None and ((settings.since and when < settings.since) or (settings.until and when >= settings.until)):
        return {"location": mask_location(location), "skipped": "date", "bytes": size}
    record, _ = judge_message(raw, (h.to, h.cc, h.bcc, h.sender), _STATE["scanner"], _STATE["policy"])
    domains = sorted({a.rpartition("@")[2].lower().strip(">") for a in (*h.to, *h.cc, *h.bcc)} - {""})
    return {
        "location": mask_location(location),
        "message_id": mask_text(h.message_id),
        "date": when.isoformat() if when is not None else "",
        "sender": mask_text(h.sender),
        "recipient_domains": [mask_text(d) for d in domains],
        "subject": mask_text(h.subject)[:200],
        **record,
        "bytes": size,
    }


def damaged(location: str, error: str, size: int) -> dict[str, Any]:
    return {"location": mask_location(location), "message_id": "", "date": "", "verdict": "unreadable", "error": mask_text(error),
            "findings": [], "records": 0, "bytes": size}


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"cannot read: {exc.strerror or type(exc).__name__}"
    return str(exc) or type(exc).__name__


def _date(value: object) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def addresses(value: str) -> list[str]:
    return [a for _, a in getaddresses([value]) if "@" in a]
