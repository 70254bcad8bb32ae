"""Logging set-up: plain text or one JSON object per event. Never identifiers or bodies.

Callers log no content; as a last line of defence both formatters also mask digit runs (the
scanner's candidates, `dlpgate.masking`) in the message, the extra fields and any traceback,
except in fields that hold ids or hashes.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from .masking import mask_text

# extra fields that are ids or hashes: masking their digit runs would only corrupt them
_UNMASKED = frozenset({"msg_id", "id", "sha256", "hash"})
_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
             "level": record.levelname, "logger": record.name, "msg": mask_text(record.getMessage())}
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                d[k] = v if k in _UNMASKED else _masked(v)
        if record.exc_info:
            d["exc"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(d, ensure_ascii=False, default=str)


def _masked(v: object) -> object:
    """An extra field's value, masked whatever its type: text, lists, tuples and sets item by item,
    dicts value by value, numbers and booleans as they are (counts, not text), anything else by
    its str (what json.dumps would print)."""
    if isinstance(v, str):
        return mask_text(v)
    if v is None or isinstance(v, bool | int | float):
        return v
    if isinstance(v, dict):
        return {k: _masked(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [_masked(x) for x in v]
    return mask_text(str(v))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        masked = logging.makeLogRecord(record.__dict__)  # the time stamp is not masked, the text is
        masked.msg, masked.args = mask_text(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            masked.exc_text = mask_text(self.formatException(record.exc_info))
        elif record.exc_text:
            masked.exc_text = mask_text(record.exc_text)
        masked.exc_info = None
        base = super().format(masked)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STD and not k.startswith("_")}
        if extra:
            base += " " + " ".join(f"{k}={v if k in _UNMASKED else mask_text(str(v))}" for k, v in extra.items())
        return base


def setup(fmt: str = "text", level: str = "INFO") -> None:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [h]
    root.setLevel(level.upper())
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command line
