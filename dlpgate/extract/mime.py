"""MIME: one message -> body parts, attachments (each through files.extract_blob) and decoded headers.

CPython's `email` with policy.default parses; this module decides what is a body and what is an
attachment, names parts (`body`, `body.html`, `名簿.xlsx`, `fwd.eml/body`), decodes every charset
Japanese mailers use (textdecode) and enforces the MIME-part limit. Headers and filenames are decoded
here rather than by `email` when they carry raw 8-bit CP932 or NEC characters `email` would mangle.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import mmap
import quopri
import re
from email._encoded_words import decode_b as _decode_b
from email.errors import MessageDefect
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.policy import default as default_policy
from email.utils import getaddresses

from .budget import Budget, Unreadable
from .files import enter_container, extract_blob, text_parts
from .htmltext import html_to_text
from .model import CORRUPT, ENCRYPTED, LIMIT, Attachment, Extraction, Part
from .sniff import sniff
from .textdecode import decode_text

_ENCRYPTED_TYPES = frozenset(("application/pkcs7-mime", "application/x-pkcs7-mime", "application/pgp-encrypted"))
_SIGNATURE_TYPES = frozenset(("application/pkcs7-signature", "application/x-pkcs7-signature",
                              "application/pgp-signature"))
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"\?=[ \t\r\n]+=\?")


class _MemoHeaderPolicy(EmailPolicy):
    """policy.default, with each parsed header value remembered.

    `email` re-parses a header through its registry every time it is read, and reading one
    Content-Type costs about 40 us: the parser itself asks for it four times per part, and we ask
    for the type, charset and filename again. That was two thirds of judging a small text mail.
    The registry's result depends only on (name, value), so handing back the object parsed before
    changes nothing but the time.
    """

    def header_fetch_parse(self, name, value):  # type: ignore[no-untyped-def]
        if hasattr(value, "name"):
            return value
        return _parsed_header(name, value)


@functools.lru_cache(maxsize=4096)  # mail repeats a few hundred header values
def _parsed_header(name: str, value: str) -> object:
    return default_policy.header_fetch_parse(name, value)


_PARSE_POLICY = _MemoHeaderPolicy()


_ABSENT = object()
_PARAMS_MEMO_CHARS = 512  # longer header values are split every time (the memo stays small)


class _OneHeader:
    """Stands in for a message with one header, so that the parameters are split by `email`'s
    own `Message._get_params_preserve`, not by a copy of it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def get(self, name: str, failobj: object = None) -> str:
        return self.value


def _params_now(value: str) -> tuple[object, ...]:
    return tuple(Message._get_params_preserve(_OneHeader(value), None, "x"))  # type: ignore[attr-defined]


_params_of = functools.lru_cache(maxsize=1024)(_params_now)


class _SinglePartMessage(EmailMessage):
    """A single-part message whose body is kept where it arrived, in the message's bytes.

    `email` holds a body as text decoded with surrogateescape, and `get_payload(decode=True)`
    encodes it straight back: 20 us for a 10 KB Japanese body, a sixth of judging a small mail.
    Here the text is made only if something asks for it (`_payload`), and `payload_bytes`
    takes the bytes as they are when no transfer encoding is to be undone. The body is not even
    copied out of the message (`raw[end:]` is 22 ms of fresh pages for a 50 MB body): a text body
    is decoded straight from the view (`body_buffer`); bytes are made once, on demand, for the
    readers of an attachment (`_raw_body`). The message's bytes and the body's offset are kept,
    not a memoryview: a message is deep-copied now and then (`email`'s generator does), a view cannot be.
    """

    _raw_whole: bytes | mmap.mmap | None = None  # the bytes (or the mapped file) the body lies in ...
    _raw_start = 0  # ... from here ...
    _raw_stop: int | None = None  # ... to here (None: their end)

    def _get_params_preserve(self, failobj, header):  # type: ignore[no-untyped-def]
        # type, charset and filename each re-split a header's parameters (a sixth of judging a
        # small mail); the split depends on the header's value alone, and mail repeats a few
        value = self.get(header, _ABSENT)
        if value is _ABSENT:
            return failobj
        text = str(value)
        return list(_params_of(text) if len(text) <= _PARAMS_MEMO_CHARS else _params_now(text))

    @property
    def _raw_body(self) -> bytes | None:
        """The body's bytes (copied out of the message once, when first asked for), or None once
        the payload has been replaced."""
        body: bytes | None = self.__dict__.get("_raw_bytes")
        if body is None and self._raw_whole is not None:
            body = self.__dict__["_raw_bytes"] = self._raw_whole[self._raw_start:self._raw_stop]
        return body

    def raw_view(self) -> memoryview | None:
        """The body's bytes without a copy, or None once the payload has been replaced."""
        return None if self._raw_whole is None else memoryview(self._raw_whole)[self._raw_start:self._raw_stop]

    @property  # type: ignore[override]
    def _payload(self):  # type: ignore[no-untyped-def]
        text = self.__dict__.get("_payload_text")
        view = self.raw_view() if text is None else None
        if view is not None:
            text = self.__dict__["_payload_text"] = str(view, "ascii", "surrogateescape")
        return text

    @_payload.setter
    def _payload(self, value) -> None:  # type: ignore[no-untyped-def]
        self.__dict__["_payload_text"] = value
        self.__dict__.pop("_raw_bytes", None)
        self._raw_whole = None

    def is_multipart(self) -> bool:
        return False if self._raw_whole is not None else super().is_multipart()


_SINGLE_PART_POLICY = _PARSE_POLICY.clone(message_factory=_SinglePartMessage)
# get_payload(decode=True) undoes these; for any other it hands back the body's own bytes
_TRANSFER_ENCODINGS = frozenset(("quoted-printable", "base64", "x-uuencode", "uuencode", "uue", "x-uue"))


def parse(raw: bytes | mmap.mmap) -> EmailMessage:
    """The message as `email` parses it with policy.default.

    A single-part message (most mail: one text body) is parsed as its header block alone and
    then given the rest as payload, which is what the feed parser ends with too, after walking
    the body line by line in Python: for 10 KB, 60 -> 34 us. Anything else (a multipart or
    message/* type, or a header block the parser does not end where the first empty line is)
    takes the full parse. Property-tested against it (tests/test_extract_header_memo.py).

    `raw` may be a read-only mapping of a message file (`dlpgate scan` of a big one: no copy of
    it in fresh memory): a single-part body is then read where it lies in the mapping, and any
    other message is copied to bytes first, as the other paths need them.
    """
    end = header_end(raw)
    if end >= 0:
        head: _SinglePartMessage = header_block(raw[:end], _SINGLE_PART_POLICY)  # type: ignore[assignment]
        if head.get_content_maintype() not in ("multipart", "message") and head._payload == "":
            head._raw_whole, head._raw_start = raw, end  # the feed parser's payload, as bytes; text on demand
            head.__dict__["_payload_text"] = None
            return head
        if not isinstance(raw, bytes):
            raw = raw[:]  # a mapping: the multipart reader and the full parse take bytes
        if head.get_content_maintype() == "multipart" and (b"\r" not in raw or raw.count(b"\r") == raw.count(b"\r\n")):
            try:
                fast = _multipart(raw, 0)
            except RecursionError:
                fast = None
            if fast is not None:
                return fast  # type: ignore[return-value]  # built with policy.default's EmailMessage
    return BytesParser(policy=_PARSE_POLICY).parsebytes(raw if isinstance(raw, bytes) else raw[:])  # type: ignore[return-value]


# A header line the feed parser takes as a field: a name of printable ASCII but the colon, then the colon.
_FIELD = re.compile(r"[\041-\071\073-\176]+:")


def header_block(block: bytes, policy: EmailPolicy, headersonly: bool = False) -> Message:
    """What `BytesParser(policy=policy).parsebytes(block, headersonly)` makes of a header block
    and its empty line (LF line ends; the body is empty): for a plain block -- every line a field
    or the continuation of one, no From_ line -- the message is built here, the way the feed
    parser's `_parse_headers` builds it (policy.header_source_parse, set_raw) without its line-by-
    line machinery: ~4 us a block instead of ~20, a few per message (issue 19). Any other block,
    and a multipart or message/* one (the parser reads their empty bodies its own way, defects
    and all) unless `headersonly`, goes to the parser. Property-tested against it
    (tests/test_extract_fast_paths.py)."""
    if b"\r" not in block and block.endswith(b"\n\n") and len(block) > 2:
        lines = block[:-2].decode("ascii", "surrogateescape").split("\n")
        fields: list[list[str]] = []
        for line in lines:
            if line[:1] in (" ", "\t"):
                if not fields:
                    break  # a continuation first: a defect the parser notes
                fields[-1].append(line + "\n")
            elif _FIELD.match(line) is None:  # not a field (a From_ line neither: a space before any colon)
                break
            else:
                fields.append([line + "\n"])
        else:
            msg: Message = policy.message_factory(policy=policy)  # type: ignore[misc]
            for source in fields:
                msg.set_raw(*policy.header_source_parse(source))
            if headersonly or msg.get_content_maintype() not in ("multipart", "message"):
                msg.set_payload("")
                return msg
    return BytesParser(policy=policy).parsebytes(block, headersonly=headersonly)  # type: ignore[arg-type]


_NO_CTE_DEFECT = frozenset(("7bit", "8bit", "binary"))
_MAX_FAST_DEPTH = 20


def _leaf(raw: bytes, start: int, stop: int) -> Message | None:
    """The part raw[start:stop], not multipart or message/*, as parse() makes a single-part
    message (its body left where it lies), or None."""
    if raw.startswith((b"\n", b"\r\n"), start, stop):
        return None  # a part without headers: rare, left to the feed parser
    end = header_end(raw, start, stop)
    if end < 0:
        return None
    head: _SinglePartMessage = header_block(raw[start:end], _SINGLE_PART_POLICY)  # type: ignore[assignment]
    if head._payload != "" or head.get_content_maintype() in ("multipart", "message"):
        return None
    head._raw_whole, head._raw_start, head._raw_stop = raw, end, stop
    head.__dict__["_payload_text"] = None
    return head


def _multipart(raw: bytes, depth: int, start: int = 0, stop: int | None = None) -> Message | None:
    """The multipart message raw[start:stop], split at its delimiter lines with bytes.find and a
    regex instead of the feed parser's Python loop over every line (a 1 MB base64 attachment is
    13,000 lines), by offsets into `raw`: no part is copied out of the message (its body is, once,
    when a reader asks for bytes).

    It builds what the feed parser builds -- the same headers, parts, payloads, preamble and
    epilogue -- and returns None (the caller then takes the full parse) whenever the message
    strays from the plain case: a bare CR line end, a missing close delimiter, an empty or
    headerless part, a message/* part, a header block with a non-header line, an encoded
    multipart. Property-tested against the feed parser (tests/test_extract_multipart_fast.py).
    """
    if depth > _MAX_FAST_DEPTH:
        return None
    stop = len(raw) if stop is None else stop
    end = header_end(raw, start, stop)
    if end < 0:
        return None
    msg: Message = header_block(raw[start:end], _PARSE_POLICY, headersonly=True)
    if msg._payload != "" or msg.get_content_maintype() != "multipart":  # type: ignore[attr-defined]
        return None
    boundary = msg.get_boundary()
    if not boundary or str(msg.get("content-transfer-encoding", "8bit")).lower() not in _NO_CTE_DEFECT:
        return None
    marks = _delimiters(raw, b"--" + boundary.encode("utf-8", "surrogateescape"), end, stop)
    if len(marks) < 2 or not marks[-1].group(1) or any(m.group(1) for m in marks[:-1]):
        return None  # no part, or no close delimiter, or text after an early close
    if not marks[-1].group(2) and marks[-1].end() != stop:
        return None
    parts: list[Message] = []
    for m, following in zip(marks, marks[1:], strict=False):
        first, last = m.end(), following.start()  # the part with the line end before the next delimiter
        # the line end before a delimiter belongs to the delimiter (RFC 2046)
        cut = _without_line_end(raw, first, last)
        if cut == first:
            return None  # an empty part or doubled delimiter lines: the feed parser's own rules apply
        part: Message | None
        ctype = _content_maintype(raw, first, cut)
        if ctype == "multipart":
            part = _multipart(raw, depth + 1, first, last)
            if part is not None:  # as the feed parser trims a nested multipart's epilogue
                epilogue = part.epilogue
                if epilogue == "":
                    part.epilogue = None
                elif epilogue is not None:
                    part.epilogue = epilogue[:-2] if epilogue.endswith("\r\n") else epilogue[:-1] if epilogue.endswith("\n") else epilogue
        elif ctype == "message":
            return None
        else:
            part = _leaf(raw, first, cut)
        if part is None:
            return None
        parts.append(part)
    if marks[0].start() > end:
        msg.preamble = raw[end:_without_line_end(raw, end, marks[0].start())].decode("ascii", "surrogateescape")
    close = marks[-1]
    msg.epilogue = raw[close.end():stop].decode("ascii", "surrogateescape") if close.group(2) else ""
    msg._payload = parts  # type: ignore[attr-defined]
    return msg


def _without_line_end(raw: bytes, start: int, stop: int) -> int:
    """Where raw[start:stop] ends without its last CRLF or LF."""
    if raw.endswith(b"\r\n", start, stop):
        return stop - 2
    return stop - 1 if raw.endswith(b"\n", start, stop) else stop


def _delimiters(raw: bytes, sep: bytes, start: int, stop: int) -> list[re.Match[bytes]]:
    """Delimiter lines (`--boundary`, `--boundary--`, trailing blanks allowed) in raw[start:stop],
    found by bytes.find of the boundary after a newline and confirmed by a regex anchored there: a
    multiline `^` regex would be tried at every byte of a megabyte of base64."""
    rest = re.compile(re.escape(sep) + rb"(--)?[ \t]*(\r?\n|\Z)")
    marks: list[re.Match[bytes]] = []
    m = rest.match(raw, start, stop)  # endpos: \Z matches at `stop` as at the end of a slice
    if m is not None:
        marks.append(m)
    needle = b"\n" + sep
    pos = find_dashed(raw, needle, start, stop)
    while pos >= 0:
        m = rest.match(raw, pos + 1, stop)
        if m is not None:
            marks.append(m)
        pos = find_dashed(raw, needle, pos + 1, stop)
    return marks


def find_dashed(raw: bytes, needle: bytes, start: int, stop: int, hops: int = 32, window: int = 1 << 16) -> int:
    """raw.find(needle, start, stop) for a needle whose second byte is "-" (a delimiter line,
    `\n--boundary`), found by memchr from one "-" to the next: base64 holds none, so a megabyte of
    attachment is passed in ~20 us where the search for the whole needle took ~0.5 ms (issue 19:
    ~6% of `dlpgate archive` of business mail). Where dashes are dense (`hops` of them) the next
    `window` bytes are searched for the whole needle, then memchr again."""
    pos = start  # every occurrence starting before pos is ruled out
    seen = 0
    while True:
        i = raw.find(b"-", pos + 1, stop)  # the "-" of an occurrence starting at pos or later
        if i < 0:
            return -1
        if raw.startswith(needle, i - 1, stop):
            return i - 1
        pos = i
        seen += 1
        if seen == hops:
            end = min(stop, i + window)
            found = raw.find(needle, i, end)
            if found >= 0:
                return found
            pos = max(i, end - len(needle) + 1)
            seen = 0


def _content_maintype(raw: bytes, start: int, stop: int) -> str:
    """The main type the header block of the part raw[start:stop] declares, cheaply (the part is
    parsed properly later). A part starts after a delimiter's line end, so `^` matches at `start`."""
    end = header_end(raw, start, stop)
    m = _CTYPE_LINE.search(raw, start, end if end >= 0 else stop)
    if m is None:
        return "text"
    return m.group(1).decode("ascii", "replace").lower()


_CTYPE_LINE = re.compile(rb"(?im)^content-type:[ \t]*(?:\r?\n[ \t]+)?([a-z0-9!#$&^_.+-]+)/")


def header_end(raw: bytes | mmap.mmap, start: int = 0, stop: int | None = None) -> int:
    """Offset just past the empty line that ends the header block of raw[start:stop] (CRLF or
    bare LF, as mail saved to disk by mbox, Maildir and most clients has it), or -1 when there is none."""
    stop = len(raw) if stop is None else stop
    lf = raw.find(b"\n\n", start, stop)
    crlf = raw.find(b"\n\r\n", start, lf + 2 if lf >= 0 else stop)
    if crlf >= 0:
        return crlf + 3
    return lf + 2 if lf >= 0 else -1


def extract_message(raw: bytes | mmap.mmap, budget: Budget) -> Extraction:
    attachments: list[Attachment] = []
    try:
        msg = parse(raw)
    except RecursionError:
        return Extraction(parts=(Part(path="message", kind="eml", unscannable=LIMIT, detail="MIME nested too deeply"),))
    except Exception as exc:
        return Extraction(parts=(Part(path="message", kind="eml", unscannable=CORRUPT,
                                      detail=f"unparseable message ({type(exc).__name__})"),))
    parts = walk_parsed(msg, "", budget, 0, attachments)
    names = file_names(parts, attachments)
    if names:
        parts.append(Part(path="filenames", text=names, kind="header"))
    return Extraction(
        parts=tuple(parts),
        attachments=tuple(attachments),
        subject=header_text(msg, "subject"),
        header_from=", ".join(addresses(msg, "from")),
        header_to=tuple(addresses(msg, "to")),
        header_cc=tuple(addresses(msg, "cc")),
    )


def file_names(parts: list[Part], attachments: list[Attachment]) -> str:
    """Every attachment's name and every name inside one (zip and tar members, sheets), one per
    line, to be scanned like the subject: a file called `山田_<12 digits>.pdf` carries its
    identifier in its name whatever its content (or when its content cannot be read)."""
    seen: dict[str, None] = {}
    for a in attachments:
        seen[a.filename] = None
    for p in parts:
        if p.kind != "header" and "/" in p.path or p.path in seen:
            seen[p.path] = None
    return "\n".join(seen)


def walk_message(raw: bytes, prefix: str, budget: Budget, depth: int,
                 attachments: list[Attachment] | None) -> list[Part]:
    """Parts of an attached or forwarded message, paths under `prefix` (e.g. `fwd.eml/`)."""
    try:
        msg = parse(raw)
    except RecursionError:
        return [Part(path=prefix.rstrip("/"), kind="eml", unscannable=LIMIT, detail="MIME nested too deeply")]
    return walk_parsed(msg, prefix, budget, depth, attachments)


def walk_parsed(msg: Message, prefix: str, budget: Budget, depth: int,
                attachments: list[Attachment] | None) -> list[Part]:
    parts: list[Part] = []
    subject = header_text(msg, "subject")
    if subject:
        parts.append(Part(path=f"{prefix}subject", text=subject, kind="header"))
    names = display_names(msg)
    if names:
        parts.append(Part(path=f"{prefix}names", text=names, kind="header"))
    used: set[str] = set()
    bodies = [0, 0]  # plain, html: `body`, `body.html`, then `body2`, `body2.html`...
    stack: list[Message] = [msg]
    while stack:
        part = stack.pop()
        budget.parts += 1
        if budget.parts > budget.limits.max_parts:
            parts.append(Part(path=prefix + "message", kind="eml", unscannable=LIMIT,
                              detail=f"more than {budget.limits.max_parts} MIME parts"))
            break
        try:
            ctype = part.get_content_type()
            filename = filename_of(part)
            if ctype in ("message/rfc822", "message/global"):
                budget.start_part()
                parts.extend(_attached_message(part, prefix, filename, used, budget, depth, attachments))
                continue
            if part.is_multipart():
                children = part.get_payload()
                if isinstance(children, list):
                    stack.extend(c for c in reversed(children) if isinstance(c, Message))
                continue
            disposition = part.get_content_disposition()
            budget.start_part()
            if ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
                is_html = ctype == "text/html"
                bodies[is_html] += 1
                base = "body" if bodies[is_html] == 1 else f"body{bodies[is_html]}"
                parts.extend(_body(part, body_buffer(part), prefix + base, is_html, budget))
                continue
            payload = payload_bytes(part)
            name = _unique(filename or f"part{budget.parts}", used)
            path = prefix + name
            kind = sniff(payload, name)
            if attachments is not None:
                attachments.append(Attachment(filename=path, content_type=kind, size=len(payload),
                                              sha256=_digest(payload, budget)))
            if ctype in _SIGNATURE_TYPES:
                continue
            if ctype in _ENCRYPTED_TYPES or ctype == "multipart/encrypted":
                parts.append(Part(path=path, kind=kind, unscannable=ENCRYPTED, detail=f"encrypted mail ({ctype})"))
                continue
            parts.extend(extract_blob(path, payload, budget, depth, kind))
        except Unreadable as exc:
            parts.append(Part(path=prefix + f"part{budget.parts}", kind="eml", unscannable=exc.reason, detail=exc.detail))
        except RecursionError:
            parts.append(Part(path=prefix + "message", kind="eml", unscannable=LIMIT, detail="MIME nested too deeply"))
        except Exception as exc:  # a part email cannot even describe: fail closed for that part only
            parts.append(Part(path=prefix + f"part{budget.parts}", kind="eml", unscannable=CORRUPT,
                              detail=f"unreadable MIME part ({type(exc).__name__})"))
    return parts


def _digest(data: bytes, budget: Budget) -> str:
    """An attachment's SHA-256 for the send log, or "" where nothing keeps it (ExtractLimits)."""
    return hashlib.sha256(data).hexdigest() if budget.limits.hash_attachments else ""


def _body(part: Message, payload: bytes | memoryview, path: str, is_html: bool, budget: Budget) -> list[Part]:
    if is_html:
        path += ".html"
    try:
        text = decode_text(payload, part.get_content_charset())
        if is_html:
            text, tables = html_to_text(text, budget, path)
            budget.charge(len(text))
            return [Part(path=path, text=text, tables=tables, kind="html")]
        budget.charge(len(text))
    except Unreadable as exc:
        return [Part(path=path, kind="html" if is_html else "text", unscannable=exc.reason, detail=exc.detail)]
    return text_parts(path, text, "text")


def _attached_message(part: Message, prefix: str, filename: str, used: set[str], budget: Budget, depth: int,
                      attachments: list[Attachment] | None) -> list[Part]:
    name = _unique(filename or f"attached{budget.parts}.eml", used)
    path = prefix + name
    inner = part.get_payload()
    inner_msg = inner[0] if isinstance(inner, list) and inner else None
    if not isinstance(inner_msg, Message):
        return [Part(path=path, kind="eml", unscannable=CORRUPT, detail="empty attached message")]
    if attachments is not None:
        try:
            raw = inner_msg.as_bytes(policy=default_policy)
        except Exception:
            raw = b""
        attachments.append(Attachment(filename=path, content_type="eml", size=len(raw),
                                      sha256=_digest(raw, budget)))
    try:
        enter_container("eml", depth, budget)
    except Exception as exc:
        return [Part(path=path, kind="eml", unscannable=LIMIT, detail=str(exc).split(": ", 1)[-1])]
    return walk_parsed(inner_msg, path + "/", budget, depth + 1, attachments)


def body_buffer(part: Message) -> bytes | memoryview:
    """What payload_bytes gives, for decode_text alone: a body with no transfer encoding to undo is
    handed over as a view into the message's bytes, not copied out of them first."""
    if isinstance(part, _SinglePartMessage):
        view = part.raw_view()
        if view is not None and str(part.get("content-transfer-encoding", "")).lower() not in _TRANSFER_ENCODINGS:
            return view
    return payload_bytes(part)


def payload_bytes(part: Message) -> bytes:
    """The decoded content. `email` already undoes base64/QP; 8-bit bodies come back as their raw bytes."""
    body = part._raw_body if isinstance(part, _SinglePartMessage) else None
    if body is not None:
        cte = str(part.get("content-transfer-encoding", "")).lower()
        if cte not in _TRANSFER_ENCODINGS:
            return body  # what get_payload(decode=True) returns, without decoding and re-encoding it
        if cte == "base64":  # what get_payload(decode=True) does, minus the round trip through str
            value, defects = decode_base64_body(body)
            for defect in defects:  # noted on the part, as get_payload notes them
                part.policy.handle_defect(part, defect)
            return value
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    if isinstance(raw, str):
        cte = str(part.get("content-transfer-encoding", "")).lower()
        blob = raw.encode("ascii", "surrogateescape")
        try:
            if cte == "base64":
                return base64.b64decode(blob + b"===", validate=False)
            if cte == "quoted-printable":
                return quopri.decodestring(blob)
        except (binascii.Error, ValueError):
            pass
        return blob
    return b""


def decode_base64_body(body: bytes) -> tuple[bytes, list[MessageDefect]]:
    """A base64 body decoded as `email` decodes it (`decode_b` of its lines joined): the bytes and
    the defects noted.

    An attachment is almost always canonical base64 -- the alphabet in lines, padding only at the
    end -- and then every decoder gives the same bytes and no defect: the lines are joined with one
    `bytes.replace` and decoded by pybase64 (SIMD) where it is installed. Joining with
    `splitlines()` made a bytes object per 76-character line, and CPython's decoder reads a byte at
    a time: the two were ~8 ms per MB, about a sixth of `dlpgate archive` of business mail
    (issue 19); now ~1 ms. Anything else (a stray character, padding in the middle, a length that
    is no multiple of 4) takes `decode_b` itself, defects and all. Property-tested against it
    (tests/test_extract_fast_paths.py)."""
    joined = body.replace(b"\n", b"") if b"\r" not in body else body.translate(None, b"\r\n")
    if _padded(joined):
        try:
            return _strict_b64decode(joined), []
        except binascii.Error:  # a character outside the alphabet
            pass
    return _decode_b(joined)


def _padded(joined: bytes) -> bool:
    """Whether base64 without line ends is whole quanta with "=" only as their last one or two
    characters: the shape on which any strict decoder gives the same bytes (CPython's strict mode
    also takes `AAAA=`, pybase64 does not)."""
    n = len(joined)
    if n % 4:
        return False
    pad = joined.find(b"=")
    return pad < 0 or pad == n - 1 or (pad == n - 2 and joined[n - 1] == 0x3D)  # 0x3D: "="


def _strict_b64decode_stdlib(data: bytes) -> bytes:
    return binascii.a2b_base64(data, strict_mode=True)


try:
    from pybase64 import b64decode as _pybase64_decode

    def _strict_b64decode(data: bytes) -> bytes:
        """Canonical base64 only: any character outside the alphabet raises binascii.Error."""
        return _pybase64_decode(data, validate=True)
except ImportError:  # pragma: no cover - pybase64 is a dependency; the stdlib gives the same bytes
    _strict_b64decode = _strict_b64decode_stdlib


def _unique(name: str, used: set[str]) -> str:
    name = name.replace("/", "_").replace("\\", "_").strip() or "unnamed"
    candidate = name
    n = 2
    while candidate in used:
        candidate = f"{name} ({n})"
        n += 1
    used.add(candidate)
    return candidate


def filename_of(part: Message) -> str:
    try:
        name = part.get_filename() or ""
    except Exception:
        name = ""
    return fix_header(str(name)) if name else ""


def header_text(msg: Message, name: str) -> str:
    try:
        raw = _raw_header(msg, name)
        if raw is not None:
            return fix_header(decode_words(raw))
        value = msg.get(name)
    except Exception:
        return ""
    return fix_header(str(value)) if value is not None else ""


def addresses(msg: Message, name: str) -> list[str]:
    """addr-specs of an address header; never raises on a malformed header.

    Reads the raw header with `email.utils.getaddresses` rather than through policy.default's
    header registry: only the addr-specs are needed here, and the registry's parser was a fifth of
    the judging time of a small message.
    """
    out: list[str] = []
    try:
        raws = [str(v) for k, v in msg.raw_items() if k.lower() == name]
    except Exception:
        return out
    for raw in raws:
        try:
            out.extend(_addr_specs(raw.replace("\r\n", " ").replace("\n", " ")))
        except Exception:
            continue
    return out


# Of the header block only what people write is read for identifiers: the Subject (its own part)
# and the display names of the address fields. Message-ID, References, In-Reply-To, Received,
# DKIM-Signature, ARC-* and the other trace fields are machine-made ids, never handed to the scanner.
_NAME_FIELDS = ("from", "sender", "reply-to", "to", "cc")


def display_names(msg: Message) -> str:
    """The decoded display names of From, Sender, Reply-To, To and Cc, one per line ("" if none)."""
    out: list[str] = []
    try:
        raws = [str(v) for k, v in msg.raw_items() if k.lower() in _NAME_FIELDS]
    except Exception:
        return ""
    for raw in raws:
        try:
            out.extend(_names_of(raw.replace("\r\n", " ").replace("\n", " ")))
        except Exception:
            continue
    return "\n".join(dict.fromkeys(n for n in out if n))


@functools.lru_cache(maxsize=4096)  # a pure function of the text: senders repeat all day
def _names_of(unfolded: str) -> tuple[str, ...]:
    return tuple(fix_header(decode_words(name)).strip() for name, _addr in getaddresses([unfolded]) if name.strip())


@functools.lru_cache(maxsize=4096)  # a pure function of the text: senders repeat all day
def _addr_specs(unfolded: str) -> tuple[str, ...]:
    return tuple(addr for _, addr in getaddresses([unfolded]) if addr and "@" in addr and addr != "<>")


def _raw_header(msg: Message, name: str) -> str | None:
    for key, value in msg.raw_items():
        if key.lower() == name:
            return str(value)
    return None


def fix_header(text: str) -> str:
    """Undo surrogate-escaped 8-bit header bytes (raw CP932 / UTF-8 names) by decoding them properly."""
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        try:
            return decode_text(text.encode("utf-8", "surrogateescape"))
        except UnicodeError:
            return text.encode("utf-8", "replace").decode("utf-8", "replace")
    return text


def decode_words(raw: str) -> str:
    """RFC 2047 encoded words, adjacent words joined first (mailers split ISO-2022-JP mid-character)."""
    raw = re.sub(r"\r?\n[ \t]", " ", raw).strip()
    raw = _BETWEEN_WORDS.sub("?==?", raw)
    out: list[str] = []
    pos = 0
    pending: list[bytes] = []
    pending_charset = ""
    for m in _ENCODED_WORD.finditer(raw):
        if m.start() > pos:
            if pending:
                out.append(decode_text(b"".join(pending), pending_charset))
                pending = []
            out.append(raw[pos:m.start()])
        charset = m.group(1).split("*", 1)[0]
        data = _word_bytes(m.group(2), m.group(3))
        if pending and charset.lower() != pending_charset.lower():
            out.append(decode_text(b"".join(pending), pending_charset))
            pending = []
        pending.append(data)
        pending_charset = charset
        pos = m.end()
    if pending:
        out.append(decode_text(b"".join(pending), pending_charset))
    out.append(raw[pos:])
    return "".join(out)


def _word_bytes(encoding: str, text: str) -> bytes:
    try:
        if encoding in "bB":
            return base64.b64decode(text + "=" * (-len(text) % 4))
        return quopri.decodestring(text.replace("_", " ").encode("ascii", "surrogateescape"), header=True)
    except (binascii.Error, ValueError, UnicodeError):
        return text.encode("ascii", "replace")
