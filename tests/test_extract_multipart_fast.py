"""extract/mime.py splits plain multipart messages itself (bytes.find and a regex, not the feed
parser's loop over every line). It must build exactly what the feed parser builds, or step aside:
random MIME and real fixtures are parsed both ways and every part compared."""

from __future__ import annotations

import sys
from email.message import Message
from email.parser import BytesParser
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
sys.path.insert(0, str(Path(__file__).parent))
import make_fixtures as fx  # noqa: E402
from test_extract_fuzz import CHUNKS  # noqa: E402

from dlpgate.extract import extract_message, mime  # noqa: E402


def shape(msg: Message) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for part in msg.walk():
        payload: object
        if part.is_multipart():
            payload = len(part.get_payload())
        else:
            payload = mime.payload_bytes(part)
        out.append((part.get_content_type(), list(part.raw_items()), payload, part.preamble, part.epilogue,
                    [type(d).__name__ for d in part.defects]))
    return out


def full(raw: bytes) -> Message:
    return BytesParser(policy=mime._PARSE_POLICY).parsebytes(raw)


def both_ways(raw: bytes) -> None:
    fast = mime.parse(raw)
    assert shape(fast) == shape(full(raw))


def nested(lf: bool) -> bytes:
    rows = [fx.HEADER, *fx.resident_rows(5)]
    inner = fx.email_bytes("内側", attachments=[("a.csv", fx.csv_bytes(rows))], html="<p>x</p>")
    raw = fx.email_bytes("本文です", attachments=[("名簿.xlsx", fx.xlsx_bytes({"s": rows})), ("b.bin", b"\x00" * 300),
                                                   ("inner.txt", inner)], html="<p>本文</p>")
    return raw.replace(b"\r\n", b"\n") if lf else raw.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")


def test_fixtures_take_the_fast_path_and_read_the_same(monkeypatch) -> None:  # noqa: ANN001
    for lf in (True, False):
        raw = nested(lf)
        assert mime._multipart(raw, 0) is not None  # the plain case is the fast case
        both_ways(raw)
        fast = extract_message(raw)
        monkeypatch.setattr(mime, "_multipart", lambda raw, depth: None)
        slow = extract_message(raw)
        monkeypatch.undo()
        assert fast == slow


def test_preamble_epilogue_and_nesting() -> None:
    raw = (b"Content-Type: multipart/mixed; boundary=B\n\npreamble line\n\n--B\nContent-Type: multipart/alternative;"
           b" boundary=C\n\n--C\nContent-Type: text/plain\n\none\n--C\nContent-Type: text/html\n\n<p>two</p>\n--C--\n"
           b"inner epilogue\n\n--B\nContent-Type: text/plain\n\nthree\n\n--B--  \nouter epilogue\n")
    assert mime._multipart(raw, 0) is not None
    both_ways(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHUNKS, max_size=40), st.booleans())
def test_random_mime_same_as_feed_parser(chunks: list[bytes], lf: bool) -> None:
    raw = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + b"".join(chunks)
    if lf:
        raw = raw.replace(b"\r\n", b"\n")
    both_ways(raw)


PLAIN_PARTS = st.lists(st.tuples(st.sampled_from(["text/plain", "application/octet-stream", "text/html"]),
                                 st.binary(min_size=1, max_size=60).filter(lambda b: b"--B" not in b and b"\r" not in b)),
                       min_size=1, max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PLAIN_PARTS, st.binary(max_size=20).filter(lambda b: b"--B" not in b and b"\r" not in b),
       st.binary(max_size=20).filter(lambda b: b"\r" not in b))
def test_well_formed_multiparts_same_as_feed_parser(parts: list[tuple[str, bytes]], preamble: bytes,
                                                    epilogue: bytes) -> None:
    body = b"".join(b"--B\nContent-Type: " + ctype.encode() + b"\n\n" + data + b"\n" for ctype, data in parts)
    raw = b"Subject: x\nContent-Type: multipart/mixed; boundary=B\n\n" + preamble + b"\n" + body + b"--B--\n" + epilogue
    assert mime._multipart(raw, 0) is not None or b"--B" in epilogue  # these are the fast path's to read
    both_ways(raw)


def test_parts_are_read_where_they_lie_in_the_message() -> None:
    """The fast split works by offsets: a text part's body handed to decode_text is a view into
    the very bytes of the message (no copy of the body, of the part or of each part), and an
    attachment's readers still get its bytes."""
    raw = nested(lf=True)
    msg = mime.parse(raw)
    leaves = [p for p in msg.walk() if not p.is_multipart()]
    assert leaves and all(isinstance(p, mime._SinglePartMessage) for p in leaves)
    assert {type(mime.body_buffer(p)) for p in leaves} == {memoryview, bytes}  # 8bit text, base64 files
    for part in leaves:
        view = mime.body_buffer(part)
        if part.get("content-transfer-encoding", "").lower() in ("base64", "quoted-printable"):
            assert isinstance(view, bytes)  # decoded: a new buffer anyway
        else:
            assert isinstance(view, memoryview) and view.obj is raw
        assert view == mime.payload_bytes(part) == full_part(raw, part)


def full_part(raw: bytes, part: Message) -> bytes:
    """The same part's decoded payload as the feed parser gives it (matched by its header items)."""
    for p in full(raw).walk():
        if list(p.raw_items()) == list(part.raw_items()) and not p.is_multipart():
            return p.get_payload(decode=True)  # type: ignore[no-any-return]
    raise AssertionError("no such part in the full parse")
