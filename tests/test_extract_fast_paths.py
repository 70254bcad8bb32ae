"""Extraction's fast paths give what the code they stand in for gives (issue 19):
mime.decode_base64_body what `email` gives (decode_b of the body's lines joined), the same bytes and
the same defects, for canonical base64 (the fast path) and for anything else; mime.find_dashed what
bytes.find gives."""

from __future__ import annotations

import base64
from email._encoded_words import decode_b

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dlpgate.extract.mime import decode_base64_body


def _email_way(body: bytes) -> tuple[bytes, list[str]]:
    value, defects = decode_b(b"".join(body.splitlines()))
    return value, [type(d).__name__ for d in defects]


def _ours(body: bytes) -> tuple[bytes, list[str]]:
    value, defects = decode_base64_body(body)
    return value, [type(d).__name__ for d in defects]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Base64 as mailers write it (76-character lines, LF or CRLF), often damaged: characters
    inserted (outside the alphabet, padding, line ends) or removed."""
    data = draw(st.binary(max_size=300))
    text = bytearray(base64.encodebytes(data))
    if draw(st.booleans()):
        text = bytearray(bytes(text).replace(b"\n", b"\r\n"))
    for _ in range(draw(st.integers(0, 3))):
        if not text:
            break
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text[at:at] = draw(st.sampled_from([b"=", b"==", b"!", b" ", b"\r", b"\n", b"A", b"\xff", b"-", b"_"]))
        else:
            del text[at:at + draw(st.integers(1, 3))]
    return bytes(text)


@settings(max_examples=1500, deadline=None)
@given(bodies())
def test_same_bytes_and_defects_as_email(body: bytes) -> None:
    assert _ours(body) == _email_way(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_at_all(body: bytes) -> None:
    assert _ours(body) == _email_way(body)


def test_canonical_and_damaged_cases() -> None:
    data = bytes(range(256)) * 40
    for body in (base64.encodebytes(data), base64.encodebytes(data).replace(b"\n", b"\r\n"),
                 base64.b64encode(data), b"", b"QQ==\n", b"QUI=\n", b"QUJD\n",
                 b"QQ=\n", b"Q===\n", b"QU=J\n", b"QQ==QQ==\n", b"QU!J\n", b"QUJ\n", b"Q\n", b"QUJDRA\r\n"):
        assert _ours(body) == _email_way(body), body[:20]
    assert _ours(base64.encodebytes(data)) == (data, [])
    assert "InvalidBase64CharactersDefect" in _ours(b"QU!J\n")[1]  # the slow path, defects and all


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"", b"!", b"=", b"\xff", b" ", b"-"]), st.integers(0, 400))
def test_pybase64_and_the_stdlib_agree(data: bytes, junk: bytes, at: int) -> None:
    """The fast path's two decoders (pybase64, or the stdlib's strict mode where it is missing)
    give the same bytes for canonical base64 and both refuse a character outside the alphabet,
    on the inputs that reach them (whole quanta, padding only at the end)."""
    from dlpgate.extract import mime

    text = bytearray(base64.b64encode(data))
    if junk and text:
        text[at % len(text)] = junk[0]  # one character replaced: the length stays whole quanta
    assume(mime._padded(bytes(text)))  # any other shape takes email's own way
    results = []
    for decode in (mime._strict_b64decode, mime._strict_b64decode_stdlib):
        try:
            results.append(decode(bytes(text)))
        except ValueError:  # binascii.Error
            results.append(None)
    assert results[0] == results[1]
    if not junk:
        assert results[0] == data


DELIMITED = st.lists(st.sampled_from([b"-", b"--", b"\n", b"\n--b1", b"\n--b1--", b"x", b"QUJD", b"\n-", b"b1"]),
                     max_size=80).map(b"".join)


@settings(max_examples=3000, deadline=None)
@given(DELIMITED, st.integers(0, 300), st.integers(0, 300), st.integers(1, 5), st.integers(1, 40))
def test_delimiters_found_dash_to_dash_as_by_a_search(raw: bytes, start: int, stop: int, hops: int, window: int) -> None:
    """mime.find_dashed is raw.find(needle, start, stop), whatever the dashes around (tiny hop
    counts and windows put its fallback to the test too)."""
    from dlpgate.extract.mime import find_dashed

    for needle in (b"\n--b1", b"\n-"):
        assert find_dashed(raw, needle, start, stop, hops, window) == raw.find(needle, start, stop)
        assert find_dashed(raw, needle, start, len(raw)) == raw.find(needle, start, len(raw))


def test_attachment_hashes_left_out_only_when_asked() -> None:
    """`dlpgate archive` judges without attachment hashes (ExtractLimits.hash_attachments): the same
    parts and findings, the attachments' SHA-256 "" instead of the digest the gateway's send log keeps."""
    import hashlib

    from dlpgate.extract import DEFAULT_LIMITS, ExtractLimits, extract_message

    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 50
    raw = (b"From: a@example.jp\nTo: b@example.com\nSubject: s\nMIME-Version: 1.0\n"
           b'Content-Type: multipart/mixed; boundary="b1"\n\n--b1\nContent-Type: text/plain; charset=utf-8\n\n'
           b"\xe6\xb0\x8f\xe5\x90\x8d 1234-5678-9012\n--b1\nContent-Type: image/png\n"
           b'Content-Disposition: attachment; filename="p.png"\nContent-Transfer-Encoding: base64\n\n'
           + base64.encodebytes(data) + b"--b1--\n")
    full = extract_message(raw, DEFAULT_LIMITS)
    bare = extract_message(raw, ExtractLimits(hash_attachments=False))
    assert full.parts == bare.parts
    assert [a.sha256 for a in full.attachments] == [hashlib.sha256(data).hexdigest()]
    assert [a.sha256 for a in bare.attachments] == [""]
    assert [(a.filename, a.size) for a in full.attachments] == [(a.filename, a.size) for a in bare.attachments]


HEADER_LINES = st.sampled_from([
    b"Subject: a", b"Subject:", b"To: a@example.jp", b"X-Y:  spaced ", b" folded", b"\tfolded", b"  ",
    b"Content-Type: text/plain; charset=utf-8", b"Content-Type: multipart/mixed; boundary=b1",
    b"Content-Type: message/rfc822", b"Content-Type: message/delivery-status", b"Content-Type: multipart/digest",
    b"From a@b Mon Jan  1 00:00:00 2024", b"From: a@b", b":no name", b"Bad Name: x", b"no colon",
    b"Subject: \xe6\xb0\x8f\xe5\x90\x8d", b"X-\xff: y", b"Subject: a\rb", b"X:\x0bv\x0c", b"X: a:b:c", b"\x7fX: y"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(HEADER_LINES, max_size=8), st.booleans())
def test_header_blocks_built_as_the_feed_parser_builds_them(lines: list[bytes], headersonly: bool) -> None:
    """mime.header_block makes of a header block what BytesParser makes of it: the same class,
    header fields (names and raw values), defects, payload, envelope line and content type."""
    from email.parser import BytesParser

    from dlpgate.extract import mime

    block = b"\n".join(lines) + b"\n\n"
    for policy in (mime._SINGLE_PART_POLICY, mime._PARSE_POLICY):
        ours = mime.header_block(block, policy, headersonly)
        theirs = BytesParser(policy=policy).parsebytes(block, headersonly=headersonly)

        def described(m: object) -> tuple[object, ...]:
            payload = m.get_payload()  # type: ignore[attr-defined]
            if isinstance(payload, list):
                payload = [described(p) for p in payload]
            return (type(m), m._headers, [(type(d), str(d)) for d in m.defects], payload,  # type: ignore[attr-defined]
                    m.get_unixfrom(), m.get_content_type(), m.policy, m.preamble, m.epilogue)  # type: ignore[attr-defined]

        assert described(ours) == described(theirs)
